//! The token endpoint's grants (RFC 6749 §4.4 and §6): a new grant for an authenticated client,
//! the exchange of a refresh token for a new pair, and what introspection may say of a refresh
//! token. The server reads the form and writes the answer; what is issued, refused and recorded is
//! decided here.
//!
//! A refresh token is good for one exchange. Presenting a spent one revokes every token of its
//! grant (its family), in the store's transaction with the event that records it, so a stolen
//! token and its thief's successors stop together.

use std::sync::Arc;

use crate::Timestamp;
use crate::access::{Grant, perm};
use crate::credential::{CredentialFormat, CredentialHash, CredentialKind};
use crate::jwt::KeyError;
use crate::keyring::KeyRing;
use crate::model::{AuditEvent, Outcome, RequestMeta};
use crate::oauth::{
    self, AuthenticatedClient, Lifetimes, OauthError, Parties, REFRESH_NOT_KNOWN, RefreshToken,
    RefreshVerdict, Rotation, client_target,
};
use crate::permission::{Catalog, PermissionSet};
use crate::store::{Store, StoreError};
use crate::verified::Verified;

/// What a grant hands the client (RFC 6749 §5.1).
pub struct Granted {
    pub access_token: String,
    pub refresh_token: String,
    pub lifetimes: Lifetimes,
    /// The access token's permissions, space-separated.
    pub scope: String,
}

/// Why a grant was refused.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// To be recorded as a refused grant by the caller.
    #[error("{}", .0.description)]
    Refused(OauthError),
    /// Recorded already, with the change it made (a refresh token's family revoked).
    #[error("{}", .0.description)]
    Recorded(OauthError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("could not draw randomness: {0}")]
    Random(#[from] getrandom::Error),
}

impl From<OauthError> for GrantError {
    fn from(error: OauthError) -> Self {
        GrantError::Refused(error)
    }
}

/// A request for tokens, past client authentication.
pub struct GrantRequest<'a> {
    /// Space-separated permissions asked for, if any.
    pub scope: Option<&'a str>,
    /// RFC 8707 `resource`s: the audiences asked for.
    pub resources: &'a [&'a str],
}

/// A live refresh token as introspection shows it: the token, its client as verification sees it
/// now, and the scope an exchange would get.
pub struct RefreshView {
    pub token: RefreshToken,
    pub client: Arc<Verified>,
    pub scope: PermissionSet,
}

/// Who asks introspection about a refresh token: the client it was issued to, or a credential
/// holding `credentials:verify` (tokens of its tenant and below).
pub enum RefreshAsker<'a> {
    Client(&'a AuthenticatedClient),
    Within(&'a Grant<perm::CredentialsVerify>),
}

/// What grants need: the store, the signing keys, the credential format, the catalog, and how
/// long tokens live.
pub struct Grants<'a> {
    pub store: &'a dyn Store,
    pub keys: &'a KeyRing,
    pub format: &'a CredentialFormat,
    pub catalog: &'a Catalog,
    pub lifetimes: Lifetimes,
}

impl Grants<'_> {
    /// A new grant: an access token with the scope asked for (or all the client holds) and the
    /// first refresh token of a new family.
    pub async fn client_credentials(
        &self,
        client: &AuthenticatedClient,
        request: &GrantRequest<'_>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<Granted, GrantError> {
        let scope = oauth::grant_scope(&client.verified().permissions, request.scope)?;
        let (granted, refresh) = self.issue(client, &scope, request, None, now).await?;
        let event = granted_event(client, now, meta)?;
        self.store
            .issue_refresh_token(client, &refresh, &event)
            .await?;
        Ok(granted)
    }

    /// Exchanges the client's refresh token `presented` (its text) for a new pair, or, if it was
    /// spent already, revokes its family.
    pub async fn refresh(
        &self,
        client: &AuthenticatedClient,
        presented: &str,
        request: &GrantRequest<'_>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<Granted, GrantError> {
        let unknown = || OauthError::invalid_grant(REFRESH_NOT_KNOWN);
        if self.format.parse(presented) != Ok(CredentialKind::Refresh) {
            return Err(unknown().into());
        }
        let presented = self
            .store
            .find_refresh_token(client, &CredentialHash::of(presented))
            .await?
            .ok_or_else(unknown)?;
        let reused = || {
            OauthError::invalid_grant(
                "the refresh token was already used: every token of its grant is now revoked",
            )
        };
        let denied = client.event(
            "oauth.token",
            Outcome::Denied,
            400,
            Some(client_target(client.id())),
            now,
            meta,
        )?;
        match oauth::judge_refresh(&presented, client, now) {
            RefreshVerdict::Refuse(why) => return Err(OauthError::invalid_grant(why).into()),
            RefreshVerdict::RevokeFamily(family) => {
                // Recorded with the revocation, in its transaction: not refused a second time.
                self.store
                    .revoke_refresh_family(client, &family, now, &denied)
                    .await?;
                return Err(GrantError::Recorded(reused()));
            }
            RefreshVerdict::Redeem => {}
        }
        let scope = oauth::refresh_scope(&presented, client, self.catalog, request.scope)?;
        let (granted, replacement) = self
            .issue(client, &scope, request, Some(&presented), now)
            .await?;
        let rotation = self
            .store
            .rotate_refresh_token(
                client,
                &presented.credential.id,
                &replacement,
                &denied,
                &granted_event(client, now, meta)?,
            )
            .await?;
        match rotation {
            Rotation::Rotated => Ok(granted),
            Rotation::Reused => Err(GrantError::Recorded(reused())),
        }
    }

    /// The refresh token with this text, if `asker` may see it, it is alive, and its client may
    /// still use it: what introspection may show. Only a token the asker may see is read.
    pub async fn live_refresh_token(
        &self,
        asker: RefreshAsker<'_>,
        text: &str,
        now: Timestamp,
    ) -> Result<Option<RefreshView>, StoreError> {
        if self.format.parse(text) != Ok(CredentialKind::Refresh) {
            return Ok(None);
        }
        let hash = CredentialHash::of(text);
        // With the token comes its client as verification sees it.
        let found = match asker {
            RefreshAsker::Client(client) => self
                .store
                .find_refresh_token(client, &hash)
                .await?
                .map(|token| (token, Arc::clone(client.verified()))),
            RefreshAsker::Within(grant) => self
                .store
                .find_refresh_token_within(grant, &hash)
                .await?
                .map(|(token, client)| (token, Arc::new(Verified::resolve(&client, self.catalog)))),
        };
        let Some((token, client)) = found else {
            return Ok(None);
        };
        if !token.is_alive(now) || !client.is_usable(now) {
            return Ok(None);
        }
        let Ok(authenticated) = AuthenticatedClient::new(Arc::clone(&client), None) else {
            return Ok(None);
        };
        let Ok(scope) = oauth::refresh_scope(&token, &authenticated, self.catalog, None) else {
            return Ok(None);
        };
        Ok(Some(RefreshView {
            token,
            client,
            scope,
        }))
    }

    /// Signs an access token for the audience the request's `resource`s pick, and plans the
    /// refresh token to store with it. A refresh asks for its audience again: any client may have
    /// a token for any configured audience by a new grant, so tying it to the first grant would
    /// protect nothing.
    async fn issue(
        &self,
        client: &AuthenticatedClient,
        scope: &PermissionSet,
        request: &GrantRequest<'_>,
        previous: Option<&RefreshToken>,
        now: Timestamp,
    ) -> Result<(Granted, RefreshToken), GrantError> {
        let policy = self.keys.policy();
        let audience = oauth::grant_audience(&policy.audiences, request.resources)?;
        self.keys.prepare(self.store, now).await?;
        let issued = oauth::issue(
            client,
            scope,
            previous,
            self.format,
            Parties {
                issuer: &policy.issuer,
                audience,
            },
            self.lifetimes,
            now,
        )?;
        let access_token = self.keys.sign(&issued.claims)?;
        let granted = Granted {
            access_token,
            refresh_token: issued.refresh_secret.into_exposed(),
            lifetimes: self.lifetimes,
            scope: issued.claims.scope,
        };
        Ok((granted, issued.refresh))
    }
}

/// The event of a grant: a refresh token stored (and, on refresh, one spent).
fn granted_event(
    client: &AuthenticatedClient,
    now: Timestamp,
    meta: &RequestMeta,
) -> Result<AuditEvent, getrandom::Error> {
    client.event(
        "oauth.token",
        Outcome::Success,
        200,
        Some(client_target(client.id())),
        now,
        meta,
    )
}
