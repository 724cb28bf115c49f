//! The admission decision: may this presented credential make this request? Every path that admits
//! a request asks [`Gate::admit`] — the management API's extractor, forward-auth, `/v1/verify` (for
//! the credential it is asked about) and the gateway — so that a rule written once holds on all of
//! them. The server only reads headers into a [`Presented`] and renders what comes back.
//!
//! The checks run in one order, and a refused request stops at the first that fails:
//!
//! 1. **The credential**: its format (no store access for a malformed one), then the cache or the
//!    store: unknown, revoked, its tenant or an ancestor suspended, its user disabled, expired.
//! 2. **Where it was presented**: a Basic username must be the slug of the credential's tenant.
//! 3. **Acting for a sub-customer** (`as-tenant`): `tenants:impersonate`, and a strict descendant.
//! 4. **`Realm`**: the credential's tenant or the one acted for.
//! 5. **The client's address**: inside the tenant's enabled allowlist and the credential's own
//!    networks. An address that is not known (`/v1/verify` asked without `ip`) passes only for a
//!    credential restricted by neither: refused rather than guessed.
//! 6. **The rate limit**: every request that got this far counts, admitted or not by what follows.
//! 7. **The permissions the path requires** (forward-auth's `X-Keygate-Require`, verify's
//!    `permissions`); the management API checks its handler's own after admission, which is the
//!    same place in this order.
//! 8. **The quotas** (API.md §13): the request's cost is spent from the credential's own quota
//!    and from each tenant pool above it, last, so that a request refused for anything else costs
//!    nothing. If one cannot pay, what the others gave is put back. The management API spends
//!    none: a quota counts calls to the provider's API, not to keygate's own.
//!
//! What a refusal costs: steps 1–5 count nothing (the credential did not get to make a request);
//! from step 6 on the request is counted against the rate limit; only an admitted request spends
//! from a quota. Every admitted request is noted
//! as the credential's last use. A refusal from step 2 on, and one for the credential's state in
//! step 1, carries the credential it was about ([`Denied::known`]), for the audit log.
//!
//! This module must never admit a request whose credential it has not verified, nor decide
//! anything from the store without the scope the credential grants.

use std::net::IpAddr;
use std::sync::Arc;

use crate::Timestamp;
use crate::access::{Caller, Forbidden, perm};
use crate::id::TenantId;
use crate::model::RateLimit;
use crate::quota::QuotaStatus;
use crate::ratelimit::{RateLimitStatus, RateLimiter};
use crate::reserve::{Credits, SpendError};
use crate::store::{DynStore, StoreError, UsageOutcome};
use crate::usage::UsageRecorder;
use crate::verified::{TenantSummary, Verified};
use crate::verify::{Refusal, Verifier};

/// A credential as a request presented it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    pub credential: &'a str,
    /// The username of `Basic`, which must be the credential's tenant slug.
    pub basic_username: Option<&'a str>,
    /// The `Realm` header: the credential's tenant, or the one acted for.
    pub realm: Option<&'a str>,
    /// The `as-tenant` header: a tenant (id or slug) below the credential's own to act in.
    pub as_tenant: Option<&'a str>,
}

/// What else decides a request's admission besides the credential.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The client's address, when known.
    pub client: Option<IpAddr>,
    /// Permissions this path requires before anything else (empty for the management API, whose
    /// handlers require their own).
    pub required: &'a [String],
    /// Only credentials of this tenant and its descendants exist for the asker (`/v1/verify`): any
    /// other is [`Refusal::NotFound`], whatever its state.
    pub within: Option<&'a TenantId>,
    /// The time, read once for the whole request.
    pub now_millis: i64,
    /// Whether this request counts in the credential's usage (API.md §12): every request does,
    /// except the asking service's own call to `/v1/verify`, where the credential asked about is
    /// the one counted.
    pub counted: bool,
    /// What the request spends from quotas (at most [`crate::reserve::MAX_COST`]); `None` for the management
    /// API, which spends none.
    pub cost: Option<u64>,
}

/// An admitted request: who it acts as, and its rate-limit status for the answer's headers.
#[derive(Debug)]
pub struct Admission {
    pub caller: Caller,
    pub rate_limit: Option<RateLimitStatus>,
    /// The tightest quota the request spent from, if one applied.
    pub quota: Option<QuotaStatus>,
}

/// Why a request was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum Denial {
    /// Step 1: the credential itself (its message is safe to show).
    #[error(transparent)]
    Credential(Refusal),
    /// Step 2.
    #[error("the Basic username must be the slug of the credential's tenant (its realm)")]
    BasicUsername,
    /// Step 3: `as-tenant` that is not a tenant id or slug.
    #[error("the as-tenant header must be a tenant id or slug")]
    ActingAsInvalid,
    /// Step 3: without `tenants:impersonate`.
    #[error(transparent)]
    ActingAsForbidden(Forbidden),
    /// Step 3: unknown, not below the credential's tenant, or its own.
    #[error("there is no tenant `{0}` below yours")]
    ActingAsUnknown(String),
    /// Step 4.
    #[error("the Realm header names a different tenant than the credential's")]
    Realm,
    /// Step 5; `None` when the address was not given for a restricted credential.
    #[error("{}", match .0 {
        Some(ip) => format!("requests from {ip} are not allowed for this credential"),
        None => "the credential is restricted to some networks and the client's address was not given".to_owned(),
    })]
    IpNotAllowed(Option<IpAddr>),
    /// Step 6.
    #[error("this credential may make {} requests in its window; retry in {} s", .0.limit, .0.retry_after_seconds.unwrap_or(1))]
    RateLimited(RateLimitStatus),
    /// Step 7.
    #[error(transparent)]
    Forbidden(Forbidden),
    /// Step 8: a quota that cannot pay for the request.
    #[error("{}", quota_spent(.pool, .limit, .left, .retry_after))]
    QuotaExceeded {
        /// Whether it is a tenant's pool rather than the credential's own quota.
        pool: bool,
        limit: u64,
        /// What is left of it (less than the request's cost).
        left: u64,
        /// Seconds until it refills; `None` for a `total` quota.
        retry_after: Option<u64>,
    },
    /// The store could not answer (not the client's fault).
    #[error(transparent)]
    Store(StoreError),
}

impl Denial {
    /// What the refused request counts as in the credential's usage; `None` when keygate, not
    /// the request, failed (the store).
    pub fn outcome(&self) -> Option<UsageOutcome> {
        Some(match self {
            Denial::Credential(Refusal::Expired) => UsageOutcome::Expired,
            Denial::Credential(Refusal::Revoked) => UsageOutcome::Revoked,
            Denial::IpNotAllowed(_) => UsageOutcome::IpNotAllowed,
            Denial::RateLimited(_) => UsageOutcome::RateLimited,
            Denial::QuotaExceeded { .. } => UsageOutcome::QuotaExceeded,
            Denial::Store(_) | Denial::Credential(Refusal::Store(_)) => return None,
            // A suspended tenant or a disabled user, a credential presented in the wrong place or
            // for a tenant it may not act in, or without the permission the path requires.
            _ => UsageOutcome::Forbidden,
        })
    }
}

fn quota_spent(pool: &bool, limit: &u64, left: &u64, retry_after: &Option<u64>) -> String {
    let whose = if *pool {
        "the organization's pool"
    } else {
        "this credential's quota"
    };
    // With something left, the request cost more than that: a cheaper one would still pass.
    let state = match left {
        0 => "is spent".to_owned(),
        left => format!("has {left} left, less than this request costs"),
    };
    match retry_after {
        Some(seconds) => format!("{whose} of {limit} requests {state}; it refills in {seconds} s"),
        None => format!("{whose} of {limit} requests {state}, and it does not refill"),
    }
}

/// A refusal, with what was learnt on the way for the answer and the audit log.
#[derive(Debug)]
pub struct Denied {
    pub denial: Denial,
    /// The credential the refusal was about, when it was known (for the audit log).
    pub known: Option<Arc<Verified>>,
    /// The tenant the request acted for, when it got that far.
    pub acting: Option<TenantId>,
    /// Set when the request was counted against the rate limit.
    pub rate_limit: Option<RateLimitStatus>,
}

impl Denied {
    fn new(denial: Denial) -> Self {
        Self {
            denial,
            known: None,
            acting: None,
            rate_limit: None,
        }
    }

    fn about(caller: &Caller, denial: Denial) -> Self {
        Self {
            denial,
            known: Some(Arc::clone(caller.verified_shared())),
            acting: caller.acting_as().map(|t| t.id.clone()),
            rate_limit: None,
        }
    }
}

impl From<Refusal> for Denial {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Store(error) => Denial::Store(error),
            other => Denial::Credential(other),
        }
    }
}

/// The one place requests are admitted.
pub struct Gate {
    verifier: Verifier,
    store: DynStore,
    limiter: RateLimiter,
    default_limit: Option<RateLimit>,
    usage: UsageRecorder,
    credits: Arc<Credits>,
    /// Whether other nodes share the store, so that rate limits are counted in it too.
    shared: bool,
}

impl Gate {
    pub fn new(verifier: Verifier, store: DynStore, default_limit: Option<RateLimit>) -> Self {
        Self {
            verifier,
            limiter: RateLimiter::new(),
            default_limit,
            usage: UsageRecorder::default(),
            credits: Arc::default(),
            shared: store.shared_by_nodes(),
            store,
        }
    }

    /// Spends quotas from `credits`, which the store's change listeners also hold (so that a
    /// changed quota's reserve is given back).
    pub fn with_credits(mut self, credits: Arc<Credits>) -> Self {
        self.credits = credits;
        self
    }

    /// This node's reserves of quota credits: to be told of changes, and given back.
    pub fn credits(&self) -> &Arc<Credits> {
        &self.credits
    }

    /// Gives back what an admitted request spent from its quotas (`cost`, in the windows of `now`,
    /// when it was admitted) because it was not served after all: the gateway's upstream refused
    /// it or did not answer. Like a refused request, it costs nothing (API.md §1, §13).
    pub fn refund(&self, verified: &Verified, cost: u64, now: Timestamp) {
        for on in verified.quotas() {
            self.credits.refund(on, now, cost);
        }
    }

    /// Gives back the credits of reserves left idle since the last call (the flush loop's).
    pub async fn give_back_idle_credits(&self) -> u64 {
        self.credits.give_back_idle(&*self.store).await
    }

    /// Gives back every credit this node holds (at shutdown).
    pub async fn give_back_all_credits(&self) -> u64 {
        self.credits.give_back_all(&*self.store).await
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The uses noted since the last write, for the batch that writes `last_used_at`.
    pub fn usage(&self) -> &UsageRecorder {
        &self.usage
    }

    /// Decides whether `presented` may make `request` (the order is the module's), and counts the
    /// request in the usage of the credential it was about, when that credential is known.
    pub async fn admit(
        &self,
        presented: Presented<'_>,
        request: Request<'_>,
    ) -> Result<Admission, Denied> {
        let decided = self.decide(presented, request).await;
        if request.counted {
            let now = Timestamp::from_unix(request.now_millis.div_euclid(1000));
            match &decided {
                Ok(admission) => {
                    self.usage
                        .record(admission.caller.verified_shared(), now, request.client)
                }
                Err(denied) => self.count_refused(denied, now),
            }
        }
        decided
    }

    /// Counts a refusal in the usage of the credential it was about, when that credential is
    /// known: for a path that counts its admitted requests itself, once it knows how they ended
    /// (the management API, whose handlers check their own permissions).
    pub fn count_refused(&self, denied: &Denied, now: Timestamp) {
        if let (Some(known), Some(outcome)) = (&denied.known, denied.denial.outcome()) {
            self.usage.refused(known, now, outcome);
        }
    }

    async fn decide(
        &self,
        presented: Presented<'_>,
        request: Request<'_>,
    ) -> Result<Admission, Denied> {
        let now = Timestamp::from_unix(request.now_millis.div_euclid(1000));
        // 1. The credential.
        let verified = match request.within {
            Some(scope) => {
                self.verifier
                    .verify_within(presented.credential, scope, now)
                    .await
            }
            None => self.verifier.verify_at(presented.credential, now).await,
        };
        let verified = verified.map_err(|refusal| self.refused(presented.credential, refusal))?;
        let mut caller = Caller::new(verified);
        // 2. Basic's username.
        if presented
            .basic_username
            .is_some_and(|username| username != caller.verified().tenant().slug)
        {
            return Err(Denied::about(&caller, Denial::BasicUsername));
        }
        // 3. Acting for a sub-customer.
        if let Some(target) = presented.as_tenant {
            caller = self.act_for(caller, target).await?;
        }
        // 4. The realm.
        let own = caller.verified().tenant().slug.as_str();
        let acting = caller.acting_as().map(|t| t.slug.as_str());
        if presented
            .realm
            .is_some_and(|realm| realm != own && Some(realm) != acting)
        {
            return Err(Denied::about(&caller, Denial::Realm));
        }
        // 5. The address.
        let verified = caller.verified();
        let allowed = match request.client {
            Some(ip) => verified.allows_address(ip),
            None => verified.allowed_ips().is_none() && verified.tenant_allowlist().is_none(),
        };
        if !allowed {
            return Err(Denied::about(&caller, Denial::IpNotAllowed(request.client)));
        }
        // 6. The rate limit.
        let rate_limit = self.meter(verified, request.now_millis).await;
        if let Some(status) = rate_limit.filter(|s| !s.allowed()) {
            let mut denied = Denied::about(&caller, Denial::RateLimited(status));
            denied.rate_limit = rate_limit;
            return Err(denied);
        }
        // 7. What the path requires.
        if let Err(forbidden) = caller.require_all(request.required) {
            let mut denied = Denied::about(&caller, Denial::Forbidden(forbidden));
            denied.rate_limit = rate_limit;
            return Err(denied);
        }
        // 8. The quotas.
        let quota = match request.cost {
            Some(_) if caller.verified().quotas().is_empty() => None,
            Some(cost) => match self.spend(caller.verified(), cost, now).await {
                Ok(status) => status,
                Err(denial) => {
                    let mut denied = Denied::about(&caller, denial);
                    denied.rate_limit = rate_limit;
                    return Err(denied);
                }
            },
            None => None,
        };
        Ok(Admission {
            caller,
            rate_limit,
            quota,
        })
    }

    /// Spends `cost` from each of the credential's quotas, all or none: the status of the one
    /// with the least left, or why one could not pay (then what the others gave is put back).
    async fn spend(
        &self,
        verified: &Verified,
        cost: u64,
        now: Timestamp,
    ) -> Result<Option<QuotaStatus>, Denial> {
        let mut tightest: Option<QuotaStatus> = None;
        // At most one quota per tenant of the line and the credential's own: fits in the bits.
        let mut paid = 0_u32;
        for (i, on) in verified.quotas().iter().enumerate() {
            // Boxed: the store's half is taken once per reserve, and its future should not make
            // every request's larger.
            let spent = match self.credits.spend_now(on, now, cost) {
                Some(spent) => Ok(Some(spent)),
                None => Box::pin(self.credits.spend(&*self.store, on, now, cost)).await,
            };
            let denial = match spent {
                Ok(Some(spent)) => {
                    paid |= 1 << i;
                    let remaining = spent.left.min(on.quota.limit);
                    if tightest.is_none_or(|t| remaining < t.remaining) {
                        tightest = Some(QuotaStatus {
                            limit: on.quota.limit,
                            used: on.quota.limit - remaining,
                            remaining,
                            resets_at: spent.resets_at,
                        });
                    }
                    continue;
                }
                // Removed since this verification was cached: nothing to spend.
                Ok(None) => continue,
                Err(SpendError::Exhausted { retry_after, left }) => Denial::QuotaExceeded {
                    pool: on.subject != verified.owner_id().as_str(),
                    limit: on.quota.limit,
                    left: left.min(on.quota.limit),
                    retry_after,
                },
                Err(SpendError::Store(error)) => Denial::Store(error),
            };
            for (j, prior) in verified.quotas().iter().enumerate().take(i) {
                if paid & (1 << j) != 0 {
                    self.credits.refund(prior, now, cost);
                }
            }
            return Err(denial);
        }
        Ok(tightest)
    }

    /// Counts a request of an already verified credential against its rate limit, and in its
    /// usage (`valid`, or `rate_limited` when over): for a path that verifies in a way of its own
    /// (the OAuth token endpoint's client secret). `Err` when over the limit.
    pub async fn meter_and_note(
        &self,
        verified: &Arc<Verified>,
        now_millis: i64,
        client: Option<IpAddr>,
    ) -> Result<Option<RateLimitStatus>, RateLimitStatus> {
        let status = self.meter(verified, now_millis).await;
        let now = Timestamp::from_unix(now_millis.div_euclid(1000));
        if let Some(over) = status.filter(|s| !s.allowed()) {
            self.usage.refused(verified, now, UsageOutcome::RateLimited);
            return Err(over);
        }
        self.usage.record(verified, now, client);
        Ok(status)
    }

    /// The credential's own limit, else the configured default; `None` when unlimited. On one
    /// node the limiter alone decides (exactly). On a store several nodes share, a request the
    /// limiter admits also spends from the limit's schedule kept in the store, so the nodes
    /// together admit what one would, plus at most a reserve each ([`Credits::spend_rate`]);
    /// should the store fail, the node's own limiter decides.
    async fn meter(&self, verified: &Verified, now_millis: i64) -> Option<RateLimitStatus> {
        let limit = verified.rate_limit().or(self.default_limit)?;
        let status = self.limiter.check(verified.owner_id(), limit, now_millis);
        if !self.shared || !status.allowed() {
            return Some(status);
        }
        let spent = self
            .credits
            .spend_rate(
                &*self.store,
                verified.owner_id().as_str(),
                crate::ratelimit::cell(limit),
                now_millis,
            )
            .await;
        Some(match spent {
            Ok(left) => RateLimitStatus {
                remaining: status
                    .remaining
                    .min(u32::try_from(left).unwrap_or(u32::MAX)),
                ..status
            },
            Err(SpendError::Exhausted { retry_after, .. }) => {
                let wait = retry_after.unwrap_or(1);
                RateLimitStatus {
                    remaining: 0,
                    reset_seconds: status.reset_seconds.max(wait),
                    retry_after_seconds: Some(wait),
                    ..status
                }
            }
            Err(SpendError::Store(_)) => status,
        })
    }

    /// A refused credential; for one refused for its state, who it belongs to (from the cache,
    /// never a reason to admit), for the audit log.
    fn refused(&self, text: &str, refusal: Refusal) -> Denied {
        let known = matches!(
            refusal,
            Refusal::Expired | Refusal::Revoked | Refusal::TenantSuspended | Refusal::UserDisabled
        )
        .then(|| self.verifier.known(text))
        .flatten();
        Denied {
            known,
            ..Denied::new(refusal.into())
        }
    }

    /// `as-tenant: <id or slug>`: a strict descendant of the credential's own tenant. Without
    /// `tenants:impersonate` a 403; a target that is unknown, not below, or the caller's own
    /// tenant is unknown (whether it exists elsewhere is not the caller's business).
    async fn act_for(&self, caller: Caller, target: &str) -> Result<Caller, Denied> {
        if let Err(forbidden) =
            caller.require_all(&[<perm::TenantsImpersonate as perm::Required>::NAME])
        {
            return Err(Denied::about(&caller, Denial::ActingAsForbidden(forbidden)));
        }
        let key = target.trim();
        if key.is_empty() || key.len() > 64 {
            return Err(Denied::about(&caller, Denial::ActingAsInvalid));
        }
        let found = match self.store.get_tenant(&caller.home_scope(), key).await {
            Ok(found) => found,
            Err(error) => return Err(Denied::about(&caller, Denial::Store(error))),
        };
        let Some(tenant) = found.filter(|t| t.id != caller.verified().tenant().id) else {
            return Err(Denied::about(
                &caller,
                Denial::ActingAsUnknown(key.to_owned()),
            ));
        };
        // Cannot fail: the permission was checked above, where the caller could still be named.
        caller
            .acting_for(TenantSummary::from(&tenant))
            .map_err(|forbidden| Denied::new(Denial::ActingAsForbidden(forbidden)))
    }
}
