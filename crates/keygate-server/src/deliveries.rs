//! Sends webhook deliveries (API.md §15), at least once.
//!
//! Every node runs one [`Deliverer`]: it claims due deliveries in the store (one node per
//! delivery at a time, see the store's `claim_deliveries`), sends each with at most
//! `webhooks.max_in_flight` in flight, records the attempt, and schedules the next one after a
//! failure. A node that dies mid-attempt leaves its claim to lapse; another node, or this one
//! restarted, sends the delivery then. So a receiver may see a message twice, never zero times:
//! `webhook-id` is the same on every attempt, for it to drop repeats.
//!
//! A delivery never reaches an address the operator did not allow: the target's name is resolved
//! here and every address checked ([`Guard`]), and the connection goes to a checked address, so a
//! name that resolves elsewhere between the check and the connection (DNS rebinding) gains
//! nothing. Redirects are not followed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keygate_core::id::DeliveryId;
use keygate_core::store::AttemptOutcome;
use keygate_core::webhooks::{
    ANSWER_WITHIN_SECONDS, Attempt, ClaimedDelivery, RESPONSE_BODY_LIMIT, SigningSecret,
    next_attempt_after,
};
use keygate_core::{Clock, SystemClock};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::sync::Semaphore;

use crate::config::WebhooksConfig;
use crate::state::AppState;

/// How often a node looks for due deliveries when there were none.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// How often tokens about to expire are looked for (`token.expiring`), in keygate's clock.
const EXPIRY_NOTICES_EVERY: i64 = 60;

/// How long a target's name may take to resolve.
const RESOLVE_WITHIN: Duration = Duration::from_secs(3);

/// Why a target may not be reached; the message is what the attempt records, and what the API
/// answers at creation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "`{0}` is not a public address; list it in webhooks.allowed_private_targets to allow it"
    )]
    Private(IpAddr),
    #[error(
        "`{0}` resolves to no public address; list its network in webhooks.allowed_private_targets to allow it"
    )]
    PrivateName(String),
    #[error("`{0}` could not be resolved")]
    Unresolved(String),
}

/// Resolves a target's name and keeps only the addresses the configuration lets deliveries reach.
#[derive(Clone)]
pub struct Guard {
    config: Arc<WebhooksConfig>,
}

impl Guard {
    pub fn new(config: &WebhooksConfig) -> Self {
        Self {
            config: Arc::new(config.clone()),
        }
    }

    /// The addresses of `host` a delivery may use; an error if there are none.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, TargetError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return if self.config.may_reach(ip) {
                Ok(vec![SocketAddr::new(ip, port)])
            } else {
                Err(TargetError::Private(ip))
            };
        }
        // A resolver that does not answer is a name that does not resolve, not a hung request.
        let found: Vec<SocketAddr> =
            tokio::time::timeout(RESOLVE_WITHIN, tokio::net::lookup_host((bare, port)))
                .await
                .map_err(|_| TargetError::Unresolved(bare.to_owned()))?
                .map_err(|_| TargetError::Unresolved(bare.to_owned()))?
                .collect();
        if found.is_empty() {
            return Err(TargetError::Unresolved(bare.to_owned()));
        }
        let allowed: Vec<SocketAddr> = found
            .into_iter()
            .filter(|a| self.config.may_reach(a.ip()))
            .collect();
        if allowed.is_empty() {
            return Err(TargetError::PrivateName(bare.to_owned()));
        }
        Ok(allowed)
    }
}

impl Resolve for Guard {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.clone();
        Box::pin(async move {
            // reqwest puts the URL's port on the addresses it is given back.
            let addresses = guard.resolve(name.as_str(), 0).await?;
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client deliveries are sent with: the guarded resolver, no redirects, no proxy from
/// the environment, and bounded waits.
pub fn client(guard: Guard) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(guard))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(ANSWER_WITHIN_SECONDS))
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("keygate-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// One node's sender of deliveries.
pub struct Deliverer {
    state: AppState,
    client: reqwest::Client,
    guard: Guard,
    /// Who this node is in the store's claims: random, new at each start.
    claimer: String,
    in_flight: Arc<Semaphore>,
    /// Opened signing secrets by webhook id: opening a sealed one derives a key, which is slow.
    secrets: Mutex<HashMap<String, (Vec<u8>, SigningSecret)>>,
}

impl Deliverer {
    pub fn new(state: AppState) -> reqwest::Result<Arc<Self>> {
        let guard = Guard::new(&state.config().webhooks);
        let in_flight = Arc::new(Semaphore::new(
            usize::try_from(state.config().webhooks.max_in_flight).unwrap_or(16),
        ));
        // An id's random digits, new at each start.
        let claimer = DeliveryId::generate(state.clock().now())
            .map(|id| id.to_string().replacen("msg_", "node_", 1))
            .unwrap_or_else(|_| "node".to_owned());
        Ok(Arc::new(Self {
            client: client(guard.clone())?,
            guard,
            state,
            claimer,
            in_flight,
            secrets: Mutex::default(),
        }))
    }

    /// Claims and sends due deliveries until the task is aborted; publishes expiry notices.
    pub async fn run(self: Arc<Self>) {
        let mut last_notices: Option<i64> = None;
        loop {
            let now = self.state.clock().now().unix();
            if last_notices.is_none_or(|at| now - at >= EXPIRY_NOTICES_EVERY) {
                last_notices = Some(now);
                match self
                    .state
                    .store()
                    .notice_expiring_tokens(self.state.clock().now())
                    .await
                {
                    Ok(0) => {}
                    Ok(noticed) => {
                        tracing::info!(noticed, "told webhooks of tokens about to expire")
                    }
                    Err(error) => tracing::warn!(%error, "could not look for expiring tokens"),
                }
            }
            let claimed = self.claim_some().await;
            if claimed == 0 {
                tokio::time::sleep(POLL_EVERY).await;
            }
        }
    }

    /// Claims as many due deliveries as there is room in flight for, and starts sending them;
    /// how many it claimed.
    pub async fn claim_some(self: &Arc<Self>) -> usize {
        // Wait for room: claiming what cannot be sent yet would hold it from other nodes.
        let Ok(first) = self.in_flight.clone().acquire_owned().await else {
            return 0;
        };
        let room = self.in_flight.available_permits() + 1;
        let now = self.state.clock().now();
        let batch = match self
            .state
            .store()
            .claim_deliveries(&self.claimer, now, u32::try_from(room).unwrap_or(1))
            .await
        {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "could not claim webhook deliveries; will retry");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return 0;
            }
        };
        let claimed = batch.len();
        let mut first = Some(first);
        for delivery in batch {
            let permit = match first.take() {
                Some(permit) => permit,
                None => match self.in_flight.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return claimed,
                },
            };
            let this = self.clone();
            tokio::spawn(async move {
                this.send(delivery).await;
                drop(permit);
            });
        }
        claimed
    }

    fn secret_of(&self, delivery: &ClaimedDelivery) -> Result<SigningSecret, String> {
        let mut secrets = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((stored, secret)) = secrets.get(delivery.webhook_id.as_str())
            && *stored == delivery.secret.bytes
        {
            return Ok(secret.clone());
        }
        let secret = SigningSecret::open(
            &delivery.secret,
            delivery.webhook_id.as_str(),
            self.state.sealer(),
        )
        .map_err(|e| e.to_string())?;
        secrets.insert(
            delivery.webhook_id.to_string(),
            (delivery.secret.bytes.clone(), secret.clone()),
        );
        Ok(secret)
    }

    /// One attempt at `delivery`, recorded with what follows it.
    async fn send(&self, delivery: ClaimedDelivery) {
        let number = delivery.attempts.saturating_add(1);
        let time = self.state.clock().now();
        let started = Instant::now();
        let (status, error, response_body) = match self.secret_of(&delivery) {
            Ok(secret) => self.post(&delivery, &secret).await,
            Err(why) => (
                None,
                Some(format!("the signing secret cannot be opened: {why}")),
                None,
            ),
        };
        let attempt = Attempt {
            number,
            time,
            status,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            error,
            response_body,
        };
        let delivered = status.is_some_and(|s| (200..300).contains(&s));
        let outcome = if delivered {
            AttemptOutcome::Delivered
        } else {
            match next_attempt_after(number, self.state.clock().now()) {
                Some(at) => AttemptOutcome::RetryAt(at),
                None => AttemptOutcome::Failed,
            }
        };
        self.state.metrics().webhook_attempt(delivered);
        tracing::info!(
            delivery = %delivery.id,
            webhook = %delivery.webhook_id,
            attempt = number,
            status = status.map(i64::from).unwrap_or(-1),
            error = attempt.error.as_deref().unwrap_or(""),
            ms = attempt.duration_ms,
            "webhook attempt"
        );
        if let Err(error) = self.record(&delivery.id, &attempt, outcome).await {
            tracing::warn!(delivery = %delivery.id, %error, "could not record a webhook attempt; it will be sent again");
        }
    }

    async fn record(
        &self,
        delivery: &DeliveryId,
        attempt: &Attempt,
        outcome: AttemptOutcome,
    ) -> Result<(), keygate_core::store::StoreError> {
        let recorded = self
            .state
            .store()
            .record_attempt(&self.claimer, delivery, attempt, outcome)
            .await?;
        if !recorded {
            tracing::warn!(%delivery, "the claim on a webhook delivery lapsed before its attempt was recorded");
        }
        Ok(())
    }

    /// POSTs the signed message: the receiver's status, or why there is none, and the start of
    /// its answer.
    async fn post(
        &self,
        delivery: &ClaimedDelivery,
        secret: &SigningSecret,
    ) -> (Option<u16>, Option<String>, Option<String>) {
        let url = match reqwest::Url::parse(&delivery.url) {
            Ok(url) => url,
            Err(error) => return (None, Some(format!("the URL is not valid: {error}")), None),
        };
        // A literal address is never resolved, so the resolver never sees it: check it here.
        if let Some(host) = url.host_str()
            && let Err(error) = self.guard.resolve(host, 0).await
        {
            return (None, Some(error.to_string()), None);
        }
        // The receiver checks the timestamp against its own clock, so it is the wall clock's,
        // whatever clock keygate schedules by.
        let timestamp = SystemClock.now().unix();
        let signature = secret.sign(delivery.id.as_str(), timestamp, &delivery.body);
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", delivery.id.as_str())
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.body.clone())
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => return (None, Some(describe(&error)), None),
        };
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while body.len() < RESPONSE_BODY_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        body.truncate(RESPONSE_BODY_LIMIT);
        let text = String::from_utf8_lossy(&body).into_owned();
        let error = (!(200..300).contains(&status))
            .then(|| format!("the receiver answered {status}, not a 2xx"));
        (Some(status), error, Some(text).filter(|t| !t.is_empty()))
    }
}

/// What went wrong with a request, in words for the attempt's record, without the URL's query.
fn describe(error: &reqwest::Error) -> String {
    let mut why = if error.is_timeout() {
        format!("no answer within {ANSWER_WITHIN_SECONDS} seconds")
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else if error.is_redirect() {
        "redirects are not followed".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        if let Some(target) = inner.downcast_ref::<TargetError>() {
            why = target.to_string();
            break;
        }
        source = inner.source();
    }
    why
}
