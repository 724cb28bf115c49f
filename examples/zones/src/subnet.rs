//! Reading a subnet as a customer writes it and putting it in the one canonical form the store
//! keeps, so that the same network always has the same text and uniqueness is a string compare.
//!
//! It must never guess: an address with host bits set after its mask (`10.0.0.5/24`) is refused
//! with the network it probably meant, not silently truncated, since protecting a different set of
//! addresses than the customer wrote is worse than asking again.

use std::net::IpAddr;

use ipnet::IpNet;

/// `text` as a network: an IPv4 or IPv6 address with an optional `/mask` (0–32 or 0–128; without
/// one, the single address: /32 or /128). An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) stays
/// IPv6. The error says what is wrong, for a client to show.
pub(crate) fn canonical_subnet(text: &str) -> Result<IpNet, String> {
    let (address, mask) = match text.split_once('/') {
        Some((address, mask)) => (address, Some(mask)),
        None => (text, None),
    };
    let address: IpAddr = address
        .parse()
        .map_err(|_| format!("{text:?} is not an IPv4 or IPv6 address with an optional /mask"))?;
    let Some(mask) = mask else {
        return Ok(IpNet::from(address));
    };
    let longest = if address.is_ipv4() { 32 } else { 128 };
    // Digits only: `u8::from_str` would also take `+24`.
    let prefix = Some(mask)
        .filter(|mask| !mask.is_empty() && mask.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|mask| mask.parse::<u8>().ok())
        .filter(|prefix| *prefix <= longest)
        .ok_or_else(|| format!("the mask of {text:?} must be a number from 0 to {longest}"))?;
    let network = IpNet::new(address, prefix)
        .map_err(|_| format!("the mask of {text:?} must be a number from 0 to {longest}"))?;
    let truncated = network.trunc();
    if truncated.addr() != address {
        return Err(format!(
            "{text} has host bits set after the /{prefix} mask; the network is {truncated}"
        ));
    }
    Ok(truncated)
}

#[cfg(test)]
mod tests {
    use super::canonical_subnet;

    fn canonical(text: &str) -> String {
        canonical_subnet(text).map_or_else(|error| format!("error: {error}"), |net| net.to_string())
    }

    #[test]
    fn a_bare_address_is_a_single_host() {
        assert_eq!(canonical("192.0.2.1"), "192.0.2.1/32");
        assert_eq!(canonical("2001:DB8:0:0::1"), "2001:db8::1/128");
        assert_eq!(canonical("::ffff:192.0.2.1"), "::ffff:192.0.2.1/128");
    }

    #[test]
    fn a_network_keeps_its_mask_in_canonical_text() {
        assert_eq!(canonical("192.0.2.0/24"), "192.0.2.0/24");
        assert_eq!(canonical("0.0.0.0/0"), "0.0.0.0/0");
        assert_eq!(canonical("2001:0db8:0000::/32"), "2001:db8::/32");
        assert_eq!(canonical("10.0.0.1/32"), "10.0.0.1/32");
    }

    #[test]
    fn host_bits_after_the_mask_are_refused_with_the_network() {
        assert_eq!(
            canonical("10.0.0.5/24"),
            "error: 10.0.0.5/24 has host bits set after the /24 mask; the network is 10.0.0.0/24"
        );
        assert!(canonical("2001:db8::1/64").ends_with("the network is 2001:db8::/64"));
    }

    #[test]
    fn bad_addresses_and_masks_are_refused() {
        for text in [
            "",
            "192.0.2",
            "192.0.2.256",
            "010.0.0.1",
            "fe80::1%eth0",
            " 192.0.2.1",
            "example.com",
        ] {
            assert!(
                canonical(text).contains("is not an IPv4 or IPv6 address"),
                "{text}"
            );
        }
        for text in [
            "192.0.2.0/33",
            "192.0.2.0/",
            "192.0.2.0/+24",
            "2001:db8::/129",
            "192.0.2.0/24/8",
        ] {
            assert!(
                canonical(text).contains("must be a number from 0 to"),
                "{text}"
            );
        }
    }
}
