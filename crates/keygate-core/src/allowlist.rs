//! IP allowlists (API.md §6): a tenant's, and a token's own `allowed_ips`.
//!
//! Entries are IPv4 or IPv6 networks; a bare address means just that address (/32 or /128); an
//! entry with host bits set (`10.0.0.1/8`) is kept as its network, with a warning so the caller
//! knows what was stored. Addresses are compared in canonical form, so an IPv4 client reaching an
//! IPv6 socket (`::ffff:203.0.113.7`) is matched against IPv4 entries.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::validate::{Errors, Invalid};

/// The most entries one allowlist holds.
pub const MAX_ENTRIES: usize = 256;

/// A parsed, normalised allowlist: sorted, without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpAllowlist(Vec<IpNet>);

/// A remark on an entry that was accepted in a different form than given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    pub field: String,
    pub given: String,
    pub stored: IpNet,
}

impl IpAllowlist {
    pub fn new(mut networks: Vec<IpNet>) -> Self {
        networks.sort();
        networks.dedup();
        Self(networks)
    }

    /// Parses entries named `field[i]`; every bad entry is an error, every entry stored in
    /// another form than given is a [`Normalised`] remark.
    pub fn parse(entries: &[String], field: &str) -> Result<(Self, Vec<Normalised>), Vec<Invalid>> {
        let mut errors = Errors::default();
        if entries.len() > MAX_ENTRIES {
            errors.push(field, format!("holds at most {MAX_ENTRIES} entries"));
        }
        let mut networks = Vec::with_capacity(entries.len());
        let mut remarks = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let text = entry.trim();
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(network) => {
                    let stored = network.trunc();
                    if stored != network {
                        remarks.push(Normalised {
                            field: format!("{field}[{i}]"),
                            given: text.to_owned(),
                            stored,
                        });
                    }
                    networks.push(stored);
                }
                Err(_) => errors.push(
                    format!("{field}[{i}]"),
                    format!("`{text}` is not an IPv4 or IPv6 address or network"),
                ),
            }
        }
        errors.into_result()?;
        Ok((Self::new(networks), remarks))
    }

    /// Whether `ip` is inside one of the networks.
    pub fn covers(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|network| network.contains(&ip))
    }

    pub fn into_networks(self) -> Vec<IpNet> {
        self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries as the API shows them (`203.0.113.7/32`).
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

/// The client address behind trusted proxies (API.md §6): the TCP peer, unless the peer is a
/// trusted proxy; then the right-most address of `X-Forwarded-For` (all such headers, in order),
/// or else of `Forwarded`, that is not itself a trusted proxy. A client that is not a trusted
/// proxy cannot move its address with these headers.
pub fn client_address<'a>(
    peer: IpAddr,
    trusted: &IpAllowlist,
    forwarded_for: impl Iterator<Item = &'a str>,
    forwarded: impl Iterator<Item = &'a str>,
) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.covers(peer) {
        return peer;
    }
    let mut hops: Vec<Option<IpAddr>> = forwarded_for
        .flat_map(|value| value.split(','))
        .map(|hop| parse_hop(hop.trim()))
        .collect();
    if hops.is_empty() {
        hops = forwarded
            .flat_map(|value| value.split(','))
            .filter_map(|element| {
                element.split(';').map(str::trim).find_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    key.trim()
                        .eq_ignore_ascii_case("for")
                        .then_some(value.trim())
                })
            })
            .map(|value| parse_hop(value.trim_matches('"')))
            .collect();
    }
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        match hop {
            // Every hop to the right so far was a trusted proxy: this one is what they saw.
            Some(ip) => {
                client = ip.to_canonical();
                if !trusted.covers(client) {
                    return client;
                }
            }
            // An entry we cannot read ("unknown", "_hidden", garbage): we cannot see past it;
            // the nearest address we could read stands.
            None => return client,
        }
    }
    client
}

/// One hop of `X-Forwarded-For` or `Forwarded`: `203.0.113.7`, `203.0.113.7:4711`,
/// `2001:db8::1`, `[2001:db8::1]:4711`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    text.rsplit_once(':')
        .filter(|(host, _)| !host.contains(':'))
        .and_then(|(host, _)| host.parse().ok())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn list(entries: &[&str]) -> IpAllowlist {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        IpAllowlist::parse(&entries, "allowlist").unwrap().0
    }

    #[test]
    fn bare_addresses_host_bits_and_bad_entries() {
        let entries: Vec<String> = ["203.0.113.7", "10.0.0.1/8", "2001:db8::1", "10.0.0.0/8"]
            .iter()
            .map(|e| e.to_string())
            .collect();
        let (parsed, remarks) = IpAllowlist::parse(&entries, "allowlist").unwrap();
        assert_eq!(
            parsed.to_strings(),
            ["10.0.0.0/8", "203.0.113.7/32", "2001:db8::1/128"]
        );
        assert_eq!(remarks.len(), 1);
        assert_eq!(remarks[0].field, "allowlist[1]");
        assert_eq!(remarks[0].stored.to_string(), "10.0.0.0/8");

        let bad: Vec<String> = ["10.0.0.0/8", "nope", "10.0.0.0/33", "::1/129"]
            .iter()
            .map(|e| e.to_string())
            .collect();
        let errors = IpAllowlist::parse(&bad, "allowlist").unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["allowlist[1]", "allowlist[2]", "allowlist[3]"]);
        let many = vec!["10.0.0.1".to_owned(); MAX_ENTRIES + 1];
        assert!(IpAllowlist::parse(&many, "allowlist").is_err());
    }

    #[test]
    fn mapped_ipv4_is_matched_as_ipv4() {
        let allow = list(&["203.0.113.0/24"]);
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap();
        assert!(allow.covers(mapped));
        assert!(!allow.covers("::1".parse().unwrap()));
        assert!(list(&["::1"]).covers("::1".parse().unwrap()));
    }

    fn client(peer: &str, trusted: &[&str], xff: &[&str], forwarded: &[&str]) -> String {
        client_address(
            peer.parse().unwrap(),
            &list(trusted),
            xff.iter().copied(),
            forwarded.iter().copied(),
        )
        .to_string()
    }

    #[test]
    fn the_client_behind_trusted_proxies() {
        // An untrusted peer's headers are ignored.
        assert_eq!(
            client("198.51.100.1", &[], &["203.0.113.7"], &[]),
            "198.51.100.1"
        );
        // A trusted peer: the right-most untrusted hop.
        let proxies = ["10.0.0.0/8"];
        assert_eq!(
            client("10.0.0.1", &proxies, &["203.0.113.7"], &[]),
            "203.0.113.7"
        );
        assert_eq!(
            client(
                "10.0.0.1",
                &proxies,
                &["6.6.6.6, 203.0.113.7, 10.0.0.2"],
                &[]
            ),
            "203.0.113.7",
            "a spoofed left-most entry is not believed"
        );
        assert_eq!(
            client("10.0.0.1", &proxies, &["6.6.6.6", "203.0.113.7"], &[]),
            "203.0.113.7"
        );
        assert_eq!(
            client("10.0.0.1", &proxies, &["10.0.0.3, 10.0.0.2"], &[]),
            "10.0.0.3"
        );
        assert_eq!(client("10.0.0.1", &proxies, &[], &[]), "10.0.0.1");
        assert_eq!(
            client("10.0.0.1", &proxies, &["garbage, 10.0.0.2"], &[]),
            "10.0.0.2"
        );
        assert_eq!(
            client("10.0.0.1", &proxies, &["203.0.113.7:4711"], &[]),
            "203.0.113.7"
        );
        assert_eq!(
            client("10.0.0.1", &proxies, &["[2001:db8::7]:4711"], &[]),
            "2001:db8::7"
        );
        // RFC 7239 Forwarded, when there is no X-Forwarded-For.
        assert_eq!(
            client(
                "10.0.0.1",
                &proxies,
                &[],
                &["for=6.6.6.6, for=\"[2001:db8::7]:80\";proto=https"]
            ),
            "2001:db8::7"
        );
        assert_eq!(
            client("10.0.0.1", &proxies, &[], &["for=unknown"]),
            "10.0.0.1"
        );
        // A peer on an IPv6 socket carrying an IPv4 address.
        assert_eq!(
            client("::ffff:10.0.0.1", &proxies, &["203.0.113.7"], &[]),
            "203.0.113.7"
        );
    }

    /// Whether `ip` is in `network`, bit by bit, the slow obvious way.
    fn naive_contains(network: &IpNet, ip: &IpAddr) -> bool {
        let bits = |ip: &IpAddr| -> Vec<bool> {
            let bytes = match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            bytes
                .iter()
                .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1 == 1))
                .collect()
        };
        if network.addr().is_ipv4() != ip.is_ipv4() {
            return false;
        }
        let (net, addr) = (bits(&network.addr()), bits(ip));
        (0..usize::from(network.prefix_len())).all(|i| net[i] == addr[i])
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
            any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
        ]
    }

    fn any_network() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u32>(), 0u8..=32).prop_map(|(v, p)| IpNet::new(
                IpAddr::V4(Ipv4Addr::from(v)),
                p
            )
            .unwrap()),
            (any::<u128>(), 0u8..=128).prop_map(|(v, p)| IpNet::new(
                IpAddr::V6(Ipv6Addr::from(v)),
                p
            )
            .unwrap()),
        ]
    }

    proptest! {
        #[test]
        fn parsing_round_trips(networks in proptest::collection::vec(any_network(), 0..20)) {
            let entries: Vec<String> = networks.iter().map(ToString::to_string).collect();
            let (parsed, _) = IpAllowlist::parse(&entries, "allowlist").unwrap();
            let (again, remarks) = IpAllowlist::parse(&parsed.to_strings(), "allowlist").unwrap();
            prop_assert_eq!(&parsed, &again);
            prop_assert!(remarks.is_empty(), "a stored list is already normal");
        }

        #[test]
        fn covers_agrees_with_a_bitwise_check(
            networks in proptest::collection::vec(any_network(), 1..8),
            ip in any_ip(),
        ) {
            let allow = IpAllowlist::new(networks.iter().map(IpNet::trunc).collect());
            let naive = networks.iter().any(|n| naive_contains(n, &ip.to_canonical()));
            prop_assert_eq!(allow.covers(ip), naive);
        }

        // What a request body sends as an allowlist: any text, and near-valid entries (an
        // address with any prefix, spaces, brackets, a port). Parsing never panics; an error
        // names exactly the entries that are not networks (by their index in the list), and
        // what is stored is the network of what was sent.
        #[test]
        fn any_entries_parse_to_networks_or_name_the_bad_ones(
            entries in proptest::collection::vec(
                prop_oneof![
                    any::<String>(),
                    (any_ip(), any::<u8>()).prop_map(|(ip, p)| format!("{ip}/{p}")),
                    (any_ip(), "[ /:\\[\\]0-9a-f.]{0,6}").prop_map(|(ip, junk)| format!(" {ip}{junk} ")),
                    any_ip().prop_map(|ip| format!("[{ip}]:80")),
                ],
                0..12,
            ),
        ) {
            let readable = |entry: &String| {
                let text = entry.trim();
                text.parse::<IpNet>().is_ok() || text.parse::<IpAddr>().is_ok()
            };
            match IpAllowlist::parse(&entries, "allowlist") {
                Ok((list, remarks)) => {
                    prop_assert!(entries.iter().all(readable));
                    prop_assert!(list.0.iter().all(|n| *n == n.trunc()));
                    prop_assert!(list.0.len() <= entries.len());
                    for remark in remarks {
                        prop_assert!(remark.field.starts_with("allowlist["));
                        prop_assert_eq!(remark.stored, remark.stored.trunc());
                    }
                }
                Err(errors) => {
                    let named: Vec<String> = errors.iter().map(|e| e.field.clone()).collect();
                    let bad: Vec<String> = entries
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| !readable(e))
                        .map(|(i, _)| format!("allowlist[{i}]"))
                        .collect();
                    prop_assert_eq!(named, bad);
                }
            }
        }

        // What a proxy (or a client pretending to be one) sends in `X-Forwarded-For` and
        // `Forwarded`. Never a panic; an untrusted peer's own address always stands; otherwise
        // the answer is the peer or an address one of the headers holds.
        #[test]
        fn forwarding_headers_never_move_an_untrusted_peer_nor_invent_an_address(
            peer in any_ip(),
            trust_peer in any::<bool>(),
            forwarded_for in proptest::collection::vec(
                prop_oneof![
                    any::<String>(),
                    proptest::collection::vec(
                        prop_oneof![
                            any_ip().prop_map(|ip| ip.to_string()),
                            any_ip().prop_map(|ip| format!("[{ip}]:4711")),
                            Just("unknown".to_owned()),
                            "[ ,;:=\"\\[\\]0-9a-f.]{0,8}",
                        ],
                        0..4,
                    ).prop_map(|hops| hops.join(", ")),
                ],
                0..3,
            ),
            forwarded in proptest::collection::vec(
                prop_oneof![
                    any::<String>(),
                    (any_ip(), any::<bool>()).prop_map(|(ip, v6)| if v6 {
                        format!("for=\"[{ip}]:80\";proto=https, FOR={ip}")
                    } else {
                        format!("by=10.0.0.1;for={ip}")
                    }),
                ],
                0..3,
            ),
        ) {
            let trusted = if trust_peer {
                IpAllowlist::new(vec![IpNet::from(peer.to_canonical()), "10.0.0.0/8".parse().unwrap()])
            } else {
                IpAllowlist::default()
            };
            let client = client_address(
                peer,
                &trusted,
                forwarded_for.iter().map(String::as_str),
                forwarded.iter().map(String::as_str),
            );
            if !trust_peer {
                prop_assert_eq!(client, peer.to_canonical());
            } else if client != peer.to_canonical() {
                let sent = forwarded_for.iter().chain(&forwarded).flat_map(|v| v.split([',', ';', '=', '"']));
                let held = sent
                    .filter_map(|part| parse_hop(part.trim().trim_matches('"')))
                    .any(|ip| ip.to_canonical() == client);
                prop_assert!(held, "{} is in no header", client);
            }
        }

        #[test]
        fn an_address_is_covered_by_its_own_networks(ip in any_ip(), prefix in 0u8..=32) {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let network = IpNet::new(ip, prefix.min(max)).unwrap().trunc();
            prop_assert!(IpAllowlist::new(vec![network]).covers(ip));
        }
    }
}
