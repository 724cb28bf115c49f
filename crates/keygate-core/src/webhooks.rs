//! Webhooks (API.md §15): the event catalogue, the message a change becomes, how a message is
//! signed (the Standard Webhooks specification), when a failed delivery is tried again, and which
//! addresses a delivery must never reach.
//!
//! No HTTP and no SQL here: the store writes a delivery in the transaction of the change that
//! causes it, and the server sends it. A message never holds a secret: its `data` is made of ids,
//! names and reasons only, never of a credential, a hash or a signing secret.

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;
use serde_json::{Map, Value};

use crate::Timestamp;
use crate::id::{TenantId, WebhookId};
use crate::jwt::{KeyError, KeySealer, Sealing, corrupt};
use crate::model::AuditEvent;

/// Every event type a webhook may ask for (API.md §15).
pub const EVENT_TYPES: [&str; 15] = [
    "token.created",
    "token.deleted",
    "token.rolled",
    "token.expiring",
    "account_key.created",
    "account_key.deleted",
    "ip_restriction.updated",
    "user.created",
    "user.deleted",
    "tenant.created",
    "tenant.suspended",
    "oauth_client.created",
    "oauth_client.deleted",
    "credential.leaked",
    "quota.threshold",
];

/// The event type an audit action becomes, if it is one webhooks are told of.
pub fn event_type_of(event: &AuditEvent) -> Option<&'static str> {
    Some(match event.action {
        "token.create" => "token.created",
        "token.delete" => "token.deleted",
        "token.roll" => "token.rolled",
        "account_key.create" => "account_key.created",
        "account_key.delete" => "account_key.deleted",
        "ip_restriction.update" => "ip_restriction.updated",
        "user.create" => "user.created",
        "user.delete" => "user.deleted",
        "tenant.create" => "tenant.created",
        "tenant.suspend" => "tenant.suspended",
        "oauth_client.create" => "oauth_client.created",
        "oauth_client.delete" => "oauth_client.deleted",
        "credential.leaked" => "credential.leaked",
        _ => return None,
    })
}

/// Which events a webhook receives: all of them, or the types listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSelection {
    All,
    Only(Vec<String>),
}

impl EventSelection {
    /// Checks a request's list: `["*"]`, or known types, at least one. The error is the message
    /// for the field.
    /// The selection `types` name; refused with the index of the entry at fault, if one is,
    /// and why.
    pub fn parse(types: &[String]) -> Result<Self, (Option<usize>, String)> {
        if types.is_empty() {
            return Err((
                None,
                "name at least one event type, or `*` for all of them".into(),
            ));
        }
        if let Some(at) = types.iter().position(|t| t == "*") {
            return if types.len() == 1 {
                Ok(Self::All)
            } else {
                Err((
                    Some(at),
                    "`*` already means every event type: give it alone".into(),
                ))
            };
        }
        let mut only: Vec<String> = Vec::with_capacity(types.len());
        for (at, name) in types.iter().enumerate() {
            if !EVENT_TYPES.contains(&name.as_str()) {
                // An audit action (`token.create`) for the event it announces (`token.created`).
                let meant = EVENT_TYPES
                    .iter()
                    .find(|known| !name.is_empty() && known.starts_with(name.as_str()))
                    .map(|known| format!(" (did you mean `{known}`?)"))
                    .unwrap_or_default();
                return Err((
                    Some(at),
                    format!(
                        "`{name}` is not an event type{meant}; known: {}",
                        EVENT_TYPES.join(", ")
                    ),
                ));
            }
            if !only.contains(name) {
                only.push(name.clone());
            }
        }
        Ok(Self::Only(only))
    }

    /// As the store keeps it: `*`, or the types between commas (`,token.created,user.deleted,`),
    /// so that one `LIKE '%,type,%'` tells whether a webhook wants a type.
    pub fn to_column(&self) -> String {
        match self {
            Self::All => "*".into(),
            Self::Only(types) => format!(",{},", types.join(",")),
        }
    }

    pub fn from_column(column: &str) -> Self {
        if column == "*" {
            return Self::All;
        }
        Self::Only(
            column
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    /// As the API shows it: `["*"]` or the types.
    pub fn names(&self) -> Vec<String> {
        match self {
            Self::All => vec!["*".into()],
            Self::Only(types) => types.clone(),
        }
    }

    pub fn wants(&self, event_type: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(types) => types.iter().any(|t| t == event_type),
        }
    }
}

/// A webhook endpoint as reads show it; its secret is never part of it.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: WebhookId,
    pub tenant_id: TenantId,
    pub url: String,
    pub events: EventSelection,
    pub description: Option<String>,
    pub enabled: bool,
    pub created_at: Timestamp,
}

/// A signing secret as the store keeps it: sealed with the operator's key-encryption secret when
/// one is configured (`sealing` then says how), else as it is.
#[derive(Clone)]
pub struct StoredSecret {
    pub bytes: Vec<u8>,
    pub sealing: Option<String>,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredSecret(…)")
    }
}

/// The secret a webhook's messages are signed with. Its `Debug` never shows it.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(…)")
    }
}

/// The prefix of a signing secret's text (Standard Webhooks).
pub const SECRET_PREFIX: &str = "whsec_";

impl SigningSecret {
    /// 32 random bytes: the HMAC-SHA256 key size.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = vec![0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// `whsec_<base64>`, shown once, when the webhook is created.
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The `webhook-signature` header of message `id`, sent at `timestamp`, with `body`:
    /// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut context = hmac::Context::with_key(&key);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body.as_bytes());
        format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
    }
}

/// How a sealed signing secret is marked in the store: the scheme, then the salt and nonce.
const SEALED_WITH: &str = "sealed";

impl SigningSecret {
    /// The secret as the store keeps it: sealed for webhook `id` when the operator configured a
    /// key-encryption secret, else as it is (the README says so).
    pub fn seal(
        &self,
        id: &WebhookId,
        sealer: Option<&KeySealer>,
    ) -> Result<StoredSecret, KeyError> {
        let Some(sealer) = sealer else {
            return Ok(StoredSecret {
                bytes: self.0.clone(),
                sealing: None,
            });
        };
        let (bytes, sealing) = sealer.seal(id.as_str(), &self.0)?;
        Ok(StoredSecret {
            bytes,
            sealing: Some(format!(
                "{SEALED_WITH}:{}:{}",
                STANDARD.encode(&sealing.salt),
                STANDARD.encode(&sealing.nonce)
            )),
        })
    }

    /// Opens what [`Self::seal`] stored for webhook `id`.
    pub fn open(
        stored: &StoredSecret,
        id: &str,
        sealer: Option<&KeySealer>,
    ) -> Result<Self, KeyError> {
        let Some(sealing) = &stored.sealing else {
            return Ok(Self(stored.bytes.clone()));
        };
        let sealer = sealer.ok_or_else(|| KeyError::NoSecret(id.to_owned()))?;
        let mut parts = sealing.split(':');
        let (Some(SEALED_WITH), Some(salt), Some(nonce), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(corrupt(id, "unknown sealing"));
        };
        let sealing = Sealing {
            salt: STANDARD.decode(salt).map_err(|e| corrupt(id, e))?,
            nonce: STANDARD.decode(nonce).map_err(|e| corrupt(id, e))?,
        };
        sealer.open(id, &stored.bytes, &sealing).map(Self)
    }
}

/// A message's body, as signed and sent: `{"type", "timestamp", "data"}`.
pub fn message_body(event_type: &str, time: Timestamp, data: Map<String, Value>) -> String {
    let mut body = Map::new();
    body.insert("type".into(), event_type.into());
    body.insert("timestamp".into(), time.to_string().into());
    body.insert("data".into(), Value::Object(data));
    Value::Object(body).to_string()
}

/// The message an audited change becomes, if webhooks are told of it: its type and its body.
/// `data` holds the tenant, who did it, what it was done to, and the event's own details (a name,
/// a reason, a source URL), as the change recorded them.
pub fn message_for(event: &AuditEvent) -> Option<(&'static str, String)> {
    let event_type = event_type_of(event)?;
    let mut data = Map::new();
    let tenant = event.acting_tenant_id.as_ref().unwrap_or(&event.tenant_id);
    data.insert("tenant_id".into(), tenant.as_str().into());
    if let Some(target) = &event.target {
        data.insert("object".into(), target.kind.into());
        data.insert("id".into(), target.id.clone().into());
    }
    let mut actor = Map::new();
    actor.insert("type".into(), event.actor.kind.into());
    actor.insert("id".into(), event.actor.id.clone().into());
    data.insert("actor".into(), Value::Object(actor));
    for (key, value) in &event.detail {
        data.insert((*key).into(), value.clone());
    }
    if let Some(request_id) = &event.request_id {
        data.insert("request_id".into(), request_id.clone().into());
    }
    data.insert("audit_event_id".into(), event.id.as_str().into());
    Some((event_type, message_body(event_type, event.time, data)))
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Not answered with a 2xx yet; tried again at `next_attempt_at`.
    Pending,
    Delivered,
    /// Every attempt failed; only a retry by hand sends it again.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One attempt at sending a delivery, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    pub time: Timestamp,
    /// The receiver's status, if it answered.
    pub status: Option<u16>,
    pub duration_ms: u64,
    /// Why it failed without an answer (refused address, timeout, connection refused), or why an
    /// answer was not a success.
    pub error: Option<String>,
    /// The start of the receiver's answer, at most [`RESPONSE_BODY_LIMIT`] bytes.
    pub response_body: Option<String>,
}

/// How much of a receiver's answer an attempt keeps.
pub const RESPONSE_BODY_LIMIT: usize = 1024;

/// A delivery as reads show it, with its attempts, oldest first.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: crate::id::DeliveryId,
    pub webhook_id: WebhookId,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub created_at: Timestamp,
    pub next_attempt_at: Option<Timestamp>,
    pub delivered_at: Option<Timestamp>,
    pub attempts: Vec<Attempt>,
}

/// A delivery a node has claimed, with what sending it needs.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: crate::id::DeliveryId,
    pub webhook_id: WebhookId,
    pub url: String,
    pub secret: StoredSecret,
    pub body: String,
    /// Attempts already made; this one is `attempts + 1`.
    pub attempts: u32,
    pub created_at: Timestamp,
}

/// The pauses after each failed attempt, growing: the first retry after 5 seconds, the last about
/// 24 hours after the first attempt. After the last attempt fails the delivery is failed.
pub const RETRY_PAUSES_SECONDS: [u64; 8] = [5, 60, 300, 1_800, 7_200, 18_000, 28_800, 30_000];

/// When the attempt after `attempts` failed ones is due, or `None` when none is left.
pub fn next_attempt_after(attempts: u32, now: Timestamp) -> Option<Timestamp> {
    let index = usize::try_from(attempts).ok()?.checked_sub(1)?;
    let pause = RETRY_PAUSES_SECONDS.get(index)?;
    Some(Timestamp::from_unix(
        now.unix().saturating_add_unsigned(*pause),
    ))
}

/// How long a node's claim on a delivery lasts: longer than an attempt may take (10 s to answer),
/// so a live node never loses a claim mid-attempt; short, so a dead node's claims lapse soon.
pub const CLAIM_SECONDS: u64 = 30;

/// How long a receiver has to answer (API.md §15: "a 2xx within 10 seconds").
pub const ANSWER_WITHIN_SECONDS: u64 = 10;

/// Whether a delivery may reach `ip` without the operator's say-so: not a private, loopback,
/// link-local, multicast, shared, documentation, benchmarking, reserved or unspecified address,
/// IPv4-mapped and IPv4-compatible IPv6 addresses judged as the IPv4 address they carry.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96) carry an IPv4
            // address a resolver may hand out to reach a private host.
            if segments[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_loopback() && !v6.is_unspecified()
                || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
            {
                let [a, b] = segments[6].to_be_bytes();
                let [c, d] = segments[7].to_be_bytes();
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00
                || (segments[0] & 0xffc0) == 0xfe80
                || (segments[0] & 0xffc0) == 0xfec0
                || (segments[0] == 0x2001 && segments[1] == 0x0db8)
                || (segments[0] == 0x0100 && segments[1..4] == [0, 0, 0]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Actor, RequestMeta, Target};

    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        // The example of the Standard Webhooks specification's reference implementations.
        let secret =
            SigningSecret::from_bytes(STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap());
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(secret.to_text().starts_with("whsec_"));
        assert_eq!(format!("{secret:?}"), "SigningSecret(…)");
    }

    #[test]
    fn selections_parse_store_and_match() {
        let all = EventSelection::parse(&["*".into()]).unwrap();
        assert!(all.wants("credential.leaked"));
        assert_eq!(EventSelection::from_column(&all.to_column()), all);
        let some =
            EventSelection::parse(&["token.created".into(), "token.created".into()]).unwrap();
        assert_eq!(some.to_column(), ",token.created,");
        assert_eq!(EventSelection::from_column(",token.created,"), some);
        assert!(some.wants("token.created") && !some.wants("token.deleted"));
        assert!(EventSelection::parse(&[]).is_err());
        assert!(EventSelection::parse(&["*".into(), "token.created".into()]).is_err());
        assert!(EventSelection::parse(&["token.made".into()]).is_err());
    }

    #[test]
    fn retries_grow_and_stop_after_about_a_day() {
        let start = Timestamp::from_unix(1_000_000);
        let mut now = start;
        let mut attempts = 1;
        let mut pauses = Vec::new();
        while let Some(next) = next_attempt_after(attempts, now) {
            pauses.push(next.unix() - now.unix());
            now = next;
            attempts += 1;
        }
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
        let span = now.unix() - start.unix();
        assert!((23 * 3600..=25 * 3600).contains(&span), "{span}");
        assert_eq!(attempts, 9);
        assert_eq!(next_attempt_after(0, start), None);
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for text in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(text.parse().unwrap()), "{text}");
        }
        for text in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(text.parse().unwrap()), "{text}");
        }
    }

    #[test]
    fn a_message_holds_ids_and_details_never_more() {
        let event = AuditEvent::new(
            TenantId::generate(Timestamp::from_unix(1)).unwrap(),
            Actor {
                kind: "user",
                id: "usr_1".into(),
            },
            None,
            "token.create",
            Some(Target {
                kind: "token",
                id: "tok_1".into(),
            }),
            Timestamp::from_unix(1_795_000_000),
            &RequestMeta::default(),
        )
        .unwrap()
        .with_detail("name", "deploy");
        let (kind, body) = message_for(&event).unwrap();
        assert_eq!(kind, "token.created");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["type"], "token.created");
        assert_eq!(body["timestamp"], "2026-11-18T11:06:40Z");
        assert_eq!(body["data"]["id"], "tok_1");
        assert_eq!(body["data"]["name"], "deploy");
        assert_eq!(body["data"]["actor"]["id"], "usr_1");
    }
}
