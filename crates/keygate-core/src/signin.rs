//! Signing in and out (API.md §2): from an email and a password to a session, a credential of kind
//! `session` that is verified like any other.
//!
//! A wrong email and a wrong password are one and the same refusal, and take the same time: an
//! unknown email is checked against a dummy hash. Attempts are reserved with the throttle before
//! argon2 runs, so guesses sent at once are not all checked. Only once the password is known to be
//! right does a refusal say why (disabled, suspended, wrong address): it tells the caller nothing
//! they could not learn by signing in.

use std::net::IpAddr;
use std::time::Duration;

use crate::Timestamp;
use crate::access::Caller;
use crate::credential::{CredentialFormat, CredentialKind, Secret};
use crate::id::{CredentialId, TenantId};
use crate::model::{Actor, AuditEvent, Credential, Outcome, RequestMeta, Target, User, UserStatus};
use crate::password::Hasher;
use crate::store::{Store, StoreError};
use crate::throttle::LoginThrottle;

/// How many accounts of one address a sign-in without `organization` tries, oldest first: each
/// costs an argon2 check, so a tenant that makes many accounts with someone's address cannot make
/// that person's sign-in expensive. Past them, the person names the organization.
pub const ACCOUNTS_TRIED: u32 = 8;

/// What a person typed.
pub struct SignIn {
    pub email: String,
    pub password: String,
    /// The slug of the tenant to sign in to, when the address has accounts in several.
    pub organization: Option<String>,
    /// The address the request came from, for the tenant's allowlist.
    pub client: Option<IpAddr>,
}

/// A new session: its user, its secret (set as a cookie, never stored) and when it ends.
pub struct SignedIn {
    pub user: User,
    pub secret: Secret,
    pub expires_at: Timestamp,
}

/// Why a sign-in was refused. Each message is safe to show the person.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("too many failed sign-ins; wait before trying again")]
    Throttled {
        retry_after_seconds: u64,
        /// The failures its window allows (per email, or per address).
        limit: u32,
    },
    #[error("wrong email or password")]
    WrongCredentials,
    #[error(
        "this email and password belong to accounts in several organizations: repeat the sign-in \
         with `organization`, the slug of the one to sign in to"
    )]
    OrganizationRequired,
    #[error("this user is disabled")]
    UserDisabled,
    #[error("the account is suspended")]
    TenantSuspended,
    #[error("signing in from {0} is not allowed for this account")]
    AddressNotAllowed(IpAddr),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not draw randomness: {0}")]
    Random(#[from] getrandom::Error),
}

/// Why a sign-out was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignOutError {
    #[error("only a session signs out; revoke tokens with DELETE /v1/tokens/{{id}}")]
    NotASession,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not draw randomness: {0}")]
    Random(#[from] getrandom::Error),
}

/// Where refused sign-ins are noted for the audit log (API.md §8: every refused authentication
/// is recorded), in the tenant of each account whose password was tried. The server batches them,
/// as it does every refusal, so that guessing does not make a write per guess.
pub trait RefusalSink: Send + Sync {
    fn refused(&self, event: AuditEvent);
}

/// What signing in and out needs: the store, the throttle, where argon2 runs, the credential
/// format sessions are made in, how long they last, and where refusals are noted.
pub struct Sessions<'a> {
    pub store: &'a dyn Store,
    pub throttle: &'a LoginThrottle,
    pub hasher: &'a dyn Hasher,
    pub format: &'a CredentialFormat,
    pub lifetime: Duration,
    pub refusals: &'a dyn RefusalSink,
}

impl Sessions<'_> {
    /// Checks the password against the accounts of `request.email` and, if exactly one matches
    /// and may sign in from where the request came, stores a session for it.
    pub async fn sign_in(
        &self,
        request: SignIn,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<SignedIn, SignInError> {
        let address = meta.ip.as_deref();
        self.throttle
            .reserve(&request.email, address, now)
            .map_err(|held| SignInError::Throttled {
                retry_after_seconds: held.wait_seconds,
                limit: held.limit,
            })?;
        let organization = request
            .organization
            .as_deref()
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_lowercase);
        let mut logins = self
            .store
            .find_logins(&request.email, organization.as_deref(), ACCOUNTS_TRIED + 1)
            .await?;
        let more_than_tried = logins.len() > ACCOUNTS_TRIED as usize;
        let stored = logins
            .iter()
            .take(ACCOUNTS_TRIED as usize)
            .map(|l| l.password_hash.clone())
            .collect();
        let matches = self.hasher.verify_each(request.password, stored).await;
        // `zip` stops at the accounts tried.
        let mut matched: Vec<usize> = matches
            .into_iter()
            .enumerate()
            .filter_map(|(at, matches)| matches.then_some(at))
            .collect();
        let login = match (matched.len(), more_than_tried) {
            (0, _) => {
                // An unknown email tells no tenant anything; a known one tells each tenant whose
                // account it names that someone tried a password for it.
                for login in logins.iter().take(ACCOUNTS_TRIED as usize) {
                    self.note_refused(&login.user, "wrong password", 401, now, meta);
                }
                return Err(SignInError::WrongCredentials);
            }
            (1, false) => logins.swap_remove(matched.swap_remove(0)),
            // Right for several accounts, or for one of more than were tried: the caller knows
            // the password, so saying so tells them nothing new.
            _ => {
                self.throttle.succeeded(&request.email, address);
                return Err(SignInError::OrganizationRequired);
            }
        };
        if login.user.status != UserStatus::Active {
            self.note_refused(&login.user, "user disabled", 401, now, meta);
            return Err(SignInError::UserDisabled);
        }
        if !login.tenant_active {
            self.note_refused(&login.user, "tenant suspended", 401, now, meta);
            return Err(SignInError::TenantSuspended);
        }
        if let (Some(list), Some(ip)) = (&login.tenant_allowlist, request.client)
            && !list.covers(ip)
        {
            self.note_refused(&login.user, "address not allowed", 403, now, meta);
            return Err(SignInError::AddressNotAllowed(ip));
        }
        self.throttle.succeeded(&request.email, address);

        let user = login.user;
        let expires_at = now.saturating_add(self.lifetime);
        let (mut session, secret) = Credential::issue(
            self.format,
            CredentialKind::Session,
            user.tenant_id.clone(),
            "session".to_owned(),
            Some(user.id.to_string()),
            now,
        )?;
        session.description = meta.user_agent.clone();
        session.user_id = Some(user.id.clone());
        session.expires_at = Some(expires_at);
        let event = session_event(
            &user.tenant_id,
            user.id.to_string(),
            &session.id,
            "session.create",
            now,
            meta,
        )?;
        self.store.create_session(&session, &event).await?;
        Ok(SignedIn {
            // As the store now has it: this sign-in is the last.
            user: User {
                last_sign_in_at: Some(now),
                ..user
            },
            secret,
            expires_at,
        })
    }

    /// Notes a refused sign-in to `user`'s account, in its tenant's audit log.
    fn note_refused(
        &self,
        user: &User,
        reason: &'static str,
        status: u16,
        now: Timestamp,
        meta: &RequestMeta,
    ) {
        let actor = Actor {
            kind: "user",
            id: user.id.to_string(),
        };
        let target = Target {
            kind: "user",
            id: user.id.to_string(),
        };
        let event = AuditEvent::new(
            user.tenant_id.clone(),
            actor,
            None,
            "auth.denied",
            Some(target),
            now,
            meta,
        );
        if let Ok(event) = event {
            let event = event
                .with_outcome(Outcome::Denied)
                .with_status(status)
                .with_detail("reason", format!("sign-in refused: {reason}"));
            self.refusals.refused(event);
        }
    }

    /// Ends the session `caller` signed in with.
    pub async fn sign_out(
        &self,
        caller: &Caller,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<(), SignOutError> {
        let verified = caller.verified();
        if verified.kind() != CredentialKind::Session {
            return Err(SignOutError::NotASession);
        }
        let session = verified.id();
        let event = session_event(
            &verified.tenant().id,
            verified.principal().id.to_owned(),
            session,
            "session.delete",
            now,
            meta,
        )?
        .with_status(204);
        self.store.end_session(session, now, &event).await?;
        Ok(())
    }
}

/// A session's event, by the user it belongs to.
fn session_event(
    tenant_id: &TenantId,
    user_id: String,
    session: &CredentialId,
    action: &'static str,
    now: Timestamp,
    meta: &RequestMeta,
) -> Result<AuditEvent, getrandom::Error> {
    let actor = Actor {
        kind: "user",
        id: user_id,
    };
    let target = Target {
        kind: "session",
        id: session.to_string(),
    };
    AuditEvent::new(
        tenant_id.clone(),
        actor,
        Some(session.clone()),
        action,
        Some(target),
        now,
        meta,
    )
}
