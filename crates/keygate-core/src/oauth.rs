//! The token endpoint's rules (RFC 6749 §4.4, §5, §6): who is asking, what scope it gets, and
//! what presenting a refresh token does.
//!
//! Refresh tokens rotate: each is good for one use, and is replaced by a new one of the same
//! *family* (every token descended from one grant). Presenting a token that was already used means
//! two parties hold it, one of them not the client: the whole family is revoked, so neither can go
//! on refreshing. Errors are RFC 6749 §5.2 errors, not problems: OAuth clients expect that shape.

use std::sync::Arc;
use std::time::Duration;

use crate::Timestamp;
use crate::access::RequestMeta;
use crate::credential::{CredentialFormat, CredentialKind, Secret};
use crate::id::{CredentialId, TenantId};
use crate::jwt::{AccessClaims, Audience};
use crate::model::{Actor, AuditEvent, Credential, Outcome, Target};
use crate::permission::{Catalog, PermissionSet};
use crate::verified::Verified;

/// The error codes of RFC 6749 §5.2 and RFC 7009 §2.2.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    UnsupportedTokenType,
    /// RFC 8707 §2: a `resource` this server does not issue tokens for.
    InvalidTarget,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::UnsupportedTokenType => "unsupported_token_type",
            ErrorCode::InvalidTarget => "invalid_target",
        }
    }

    /// The HTTP status: 401 for a client that failed to authenticate, 400 for everything else.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidClient => 401,
            _ => 400,
        }
    }
}

/// A refused token request: the code, and a description a developer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct OauthError {
    pub code: ErrorCode,
    pub description: String,
}

impl OauthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidClient, description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidGrant, description)
    }
}

/// Why a token-endpoint client was not authenticated.
#[derive(Debug)]
pub enum ClientAuthError {
    /// Not the client's fault: the store could not answer.
    Store(crate::store::StoreError),
    /// Refused, as RFC 6749 says (`invalid_client`).
    Refused(OauthError),
}

/// A client that proved it holds its secret: what the token endpoint's store operations demand,
/// as other writes demand a [`Grant`](crate::access::Grant). It scopes them to the client.
#[derive(Debug, Clone)]
pub struct AuthenticatedClient {
    verified: Arc<Verified>,
}

impl AuthenticatedClient {
    /// The client a verified secret belongs to. `claimed` is the `client_id` the request named,
    /// which must be that client's.
    pub(crate) fn new(verified: Arc<Verified>, claimed: Option<&str>) -> Result<Self, OauthError> {
        if verified.kind() != CredentialKind::OauthSecret {
            return Err(OauthError::invalid_client("that is not a client secret"));
        }
        if claimed.is_some_and(|id| id != verified.id().as_str()) {
            return Err(OauthError::invalid_client(
                "the client secret does not belong to that client_id",
            ));
        }
        Ok(Self { verified })
    }

    pub fn id(&self) -> &CredentialId {
        self.verified.id()
    }

    pub fn tenant_id(&self) -> &TenantId {
        &self.verified.tenant().id
    }

    pub fn verified(&self) -> &Arc<Verified> {
        &self.verified
    }

    /// An audit event of this client's, to be written with what it records.
    pub fn event(
        &self,
        action: &'static str,
        outcome: Outcome,
        status: u16,
        target: Option<Target>,
        time: Timestamp,
        meta: &RequestMeta,
    ) -> Result<AuditEvent, getrandom::Error> {
        let actor = Actor {
            kind: self.verified.principal().kind.as_str(),
            id: self.verified.principal().id.to_owned(),
        };
        let event = AuditEvent::new(
            self.tenant_id().clone(),
            actor,
            Some(self.id().clone()),
            action,
            target,
            time,
            meta,
        )?;
        Ok(event.with_outcome(outcome).with_status(status))
    }
}

/// A refresh token as the store keeps it: a credential of kind `refresh` (its scope in
/// `permissions`), the client it was issued to, and its family.
#[derive(Debug, Clone)]
pub struct RefreshToken {
    pub credential: Credential,
    pub client_id: CredentialId,
    /// The id of the first refresh token of the grant this one descends from.
    pub family_id: CredentialId,
    /// When it was exchanged for its successor.
    pub spent_at: Option<Timestamp>,
}

impl RefreshToken {
    /// Whether it can still be exchanged at `now`: not spent, not revoked, not expired.
    pub fn is_alive(&self, now: Timestamp) -> bool {
        self.spent_at.is_none()
            && self.credential.revoked_at.is_none()
            && self.credential.expires_at.is_none_or(|at| at > now)
    }

    /// The scope it was granted with, as permissions of this catalog.
    pub fn scope(&self, catalog: &Catalog) -> PermissionSet {
        catalog.expand(self.credential.permissions.as_deref().unwrap_or_default())
    }
}

/// How long what the token endpoint issues lives.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub access: Duration,
    pub refresh: Duration,
}

/// The scope a request gets: what it asks for (space-separated, RFC 6749 §3.3), or everything
/// `available` if it asks for nothing. Asking for anything beyond `available` is `invalid_scope`,
/// naming what.
pub fn grant_scope(
    available: &PermissionSet,
    requested: Option<&str>,
) -> Result<PermissionSet, OauthError> {
    let items: Vec<&str> = requested
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return Ok(available.clone());
    }
    let beyond: Vec<&str> = available.missing(&items);
    if !beyond.is_empty() {
        return Err(OauthError::new(
            ErrorCode::InvalidScope,
            format!("beyond what this grant allows: {}", beyond.join(" ")),
        ));
    }
    Ok(available.only(&items))
}

/// The scope an exchange of `presented` gets: the grant's scope, less whatever the client has
/// lost since, narrowed to what is `requested` (RFC 6749 §6: never beyond the grant).
pub fn refresh_scope(
    presented: &RefreshToken,
    client: &AuthenticatedClient,
    catalog: &Catalog,
    requested: Option<&str>,
) -> Result<PermissionSet, OauthError> {
    let ceiling = presented
        .scope(catalog)
        .intersect(&client.verified().permissions);
    grant_scope(&ceiling, requested)
}

/// The audience a token request gets (RFC 8707 §2): the `resource`s it names, in order, each one
/// of the `configured` audiences; or the first configured one if it names none. A resource keygate
/// does not issue for is `invalid_target`, naming it.
pub fn grant_audience(configured: &[String], requested: &[&str]) -> Result<Audience, OauthError> {
    let mut members: Vec<String> = Vec::with_capacity(requested.len());
    for &resource in requested {
        if !configured.iter().any(|c| c == resource) {
            return Err(OauthError::new(
                ErrorCode::InvalidTarget,
                format!(
                    "keygate does not issue tokens for the resource `{}`",
                    resource.chars().take(200).collect::<String>()
                ),
            ));
        }
        if !members.iter().any(|m| m == resource) {
            members.push(resource.to_owned());
        }
    }
    if members.is_empty() {
        members.extend(configured.first().cloned());
    }
    Audience::new(members).ok_or_else(|| {
        OauthError::new(
            ErrorCode::InvalidTarget,
            "keygate is configured with no audience to issue tokens for",
        )
    })
}

/// Who an access token is from (`iss`) and for (`aud`).
#[derive(Debug, Clone)]
pub struct Parties<'a> {
    pub issuer: &'a str,
    pub audience: Audience,
}

/// A scope as the wire writes it.
pub fn scope_text(scope: &PermissionSet) -> String {
    scope
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a grant hands out: the access token's claims, and a refresh token with its secret.
pub struct Issued {
    pub claims: AccessClaims,
    pub refresh: RefreshToken,
    pub refresh_secret: Secret,
}

/// Plans the tokens of a grant: a new family for `client_credentials`, the same family as
/// `previous` when a refresh token is exchanged (whose scope the new refresh token keeps, RFC 6749
/// §6, while the access token may be narrower).
pub fn issue(
    client: &AuthenticatedClient,
    access_scope: &PermissionSet,
    previous: Option<&RefreshToken>,
    format: &CredentialFormat,
    parties: Parties<'_>,
    lifetimes: Lifetimes,
    now: Timestamp,
) -> Result<Issued, getrandom::Error> {
    let (mut credential, secret) = Credential::issue(
        format,
        CredentialKind::Refresh,
        client.tenant_id().clone(),
        client.verified().name().to_string(),
        Some(client.id().to_string()),
        now,
    )?;
    credential.permissions = match previous {
        Some(previous) => previous.credential.permissions.clone(),
        None => Some(access_scope.iter().map(|p| p.as_str().to_owned()).collect()),
    };
    credential.expires_at = Some(now.saturating_add(lifetimes.refresh));
    let refresh = RefreshToken {
        family_id: previous.map_or_else(|| credential.id.clone(), |p| p.family_id.clone()),
        credential,
        client_id: client.id().clone(),
        spent_at: None,
    };
    // The access token names its grant, so that burning the family (a spent refresh token
    // presented again, or one revoked) ends it too.
    let grant = Some(refresh.family_id.to_string());
    let claims = AccessClaims {
        iss: parties.issuer.to_owned(),
        aud: parties.audience,
        sub: client.id().to_string(),
        client_id: client.id().to_string(),
        tenant: client.tenant_id().to_string(),
        scope: scope_text(access_scope),
        iat: now.unix(),
        exp: now.saturating_add(lifetimes.access).unix(),
        jti: CredentialId::generate_for(CredentialKind::AccessToken, now)?.to_string(),
        grant,
    };
    Ok(Issued {
        claims,
        refresh,
        refresh_secret: secret,
    })
}

/// The refusal of a refresh token that is not this client's: unknown, or another client's.
pub const REFRESH_NOT_KNOWN: &str = "the refresh token is not known";

/// What presenting a refresh token leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshVerdict {
    /// Exchange it for a new pair.
    Redeem,
    /// It was used before: revoke its family, and refuse.
    RevokeFamily(CredentialId),
    /// Refuse, changing nothing.
    Refuse(&'static str),
}

/// Judges a refresh token presented by `client` at `now`.
pub fn judge_refresh(
    token: &RefreshToken,
    client: &AuthenticatedClient,
    now: Timestamp,
) -> RefreshVerdict {
    if token.client_id != *client.id() {
        // Not this client's to spend, nor to burn: the family belongs to its own client. Answered
        // as an unknown token, so that a client learns nothing of another's tokens.
        return RefreshVerdict::Refuse(REFRESH_NOT_KNOWN);
    }
    if token.credential.revoked_at.is_some() {
        return RefreshVerdict::Refuse("the refresh token has been revoked");
    }
    if token.spent_at.is_some() {
        return RefreshVerdict::RevokeFamily(token.family_id.clone());
    }
    if token.credential.expires_at.is_some_and(|at| at <= now) {
        return RefreshVerdict::Refuse("the refresh token has expired");
    }
    RefreshVerdict::Redeem
}

/// What the store did with a refresh token it was asked to exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Spent, and its successor stored.
    Rotated,
    /// It had been spent (or revoked) meanwhile, by a concurrent request: its family is revoked.
    Reused,
}

/// The event target naming a client.
pub fn client_target(id: &CredentialId) -> Target {
    Target {
        kind: "oauth_client",
        id: id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permission::BuiltinRole;
    use crate::testing::{NOW, caller, catalog, format};

    const LIFETIMES: Lifetimes = Lifetimes {
        access: Duration::from_secs(900),
        refresh: Duration::from_secs(86_400),
    };

    fn client(narrowing: Option<&[&str]>) -> AuthenticatedClient {
        let caller = caller(CredentialKind::OauthSecret, BuiltinRole::Viewer, narrowing);
        AuthenticatedClient::new(caller.verified_shared().clone(), None).unwrap()
    }

    fn names(set: &PermissionSet) -> Vec<&str> {
        set.iter().map(|p| p.as_str()).collect()
    }

    fn issue_for(
        client: &AuthenticatedClient,
        scope: &[&str],
        previous: Option<&RefreshToken>,
    ) -> Issued {
        let scope = catalog().expand(scope);
        issue(
            client,
            &scope,
            previous,
            &format(),
            Parties {
                issuer: "https://kg",
                audience: Audience::new(vec!["https://api.example.com".into()]).unwrap(),
            },
            LIFETIMES,
            NOW,
        )
        .unwrap()
    }

    #[test]
    fn scope_narrows_and_never_widens() {
        let available = catalog().expand(&["tokens:read", "zones:read", "users:read"]);
        assert_eq!(grant_scope(&available, None).unwrap(), available);
        assert_eq!(grant_scope(&available, Some("  ")).unwrap(), available);
        let narrowed = grant_scope(&available, Some("zones:read  tokens:read zones:read")).unwrap();
        assert_eq!(names(&narrowed), ["tokens:read", "zones:read"]);
        let refused = grant_scope(&available, Some("zones:read zones:write bogus")).unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidScope);
        assert!(
            refused.description.contains("zones:write bogus"),
            "{refused}"
        );
        assert_eq!(scope_text(&narrowed), "tokens:read zones:read");
    }

    #[test]
    fn the_audience_is_the_default_or_the_configured_resources_asked_for() {
        let configured = [
            "https://kg".to_owned(),
            "https://api.example.com".to_owned(),
        ];
        let members = |requested: &[&str]| {
            grant_audience(&configured, requested)
                .map(|a| a.members().to_vec())
                .map_err(|e| e.code)
        };
        assert_eq!(members(&[]), Ok(vec!["https://kg".to_owned()]));
        assert_eq!(
            members(&[
                "https://api.example.com",
                "https://kg",
                "https://api.example.com"
            ]),
            Ok(vec![
                "https://api.example.com".to_owned(),
                "https://kg".to_owned()
            ])
        );
        assert_eq!(
            members(&["https://kg", "https://elsewhere.example"]),
            Err(ErrorCode::InvalidTarget)
        );
        assert_eq!(ErrorCode::InvalidTarget.as_str(), "invalid_target");
        assert_eq!(ErrorCode::InvalidTarget.status(), 400);
        assert!(
            grant_audience(&[], &[]).is_err(),
            "a token is always for someone"
        );
    }

    #[test]
    fn a_client_secret_must_match_the_named_client() {
        let secret = caller(CredentialKind::OauthSecret, BuiltinRole::Viewer, None);
        let verified = secret.verified_shared().clone();
        let id = verified.id().to_string();
        assert!(AuthenticatedClient::new(verified.clone(), Some(&id)).is_ok());
        let other = AuthenticatedClient::new(verified, Some("cli_other")).unwrap_err();
        assert_eq!(other.code, ErrorCode::InvalidClient);
        let token = caller(CredentialKind::Service, BuiltinRole::Viewer, None);
        let not_a_client = AuthenticatedClient::new(token.verified_shared().clone(), None);
        assert_eq!(not_a_client.unwrap_err().code, ErrorCode::InvalidClient);
    }

    #[test]
    fn refresh_tokens_carry_their_family_and_keep_their_scope() {
        let client = client(None);
        let first = issue_for(&client, &["tokens:read", "zones:read"], None);
        assert!(
            first
                .refresh_secret
                .expose()
                .starts_with("kg_refresh_live_")
        );
        assert_eq!(first.refresh.family_id, first.refresh.credential.id);
        assert_eq!(first.refresh.client_id, *client.id());
        assert_eq!(first.claims.scope, "tokens:read zones:read");
        assert_eq!(first.claims.exp - first.claims.iat, 900);
        assert!(first.claims.jti.starts_with("atk_"));
        assert_eq!(first.claims.sub, client.id().as_str());
        assert_eq!(first.claims.aud.members(), ["https://api.example.com"]);

        let second = issue_for(&client, &["zones:read"], Some(&first.refresh));
        assert_eq!(second.refresh.family_id, first.refresh.credential.id);
        assert_ne!(second.refresh.credential.id, first.refresh.credential.id);
        assert_eq!(second.claims.scope, "zones:read");
        assert_eq!(
            names(&second.refresh.scope(&catalog())),
            ["tokens:read", "zones:read"],
            "the refresh token keeps the scope of the grant"
        );
    }

    #[test]
    fn a_refresh_never_widens_the_grant_and_follows_what_the_client_lost() {
        let wide = client(None);
        let grant = issue_for(&wide, &["tokens:read", "users:read"], None).refresh;
        let all = refresh_scope(&grant, &wide, &catalog(), None).unwrap();
        assert_eq!(names(&all), ["tokens:read", "users:read"]);
        let narrowed = refresh_scope(&grant, &wide, &catalog(), Some("users:read")).unwrap();
        assert_eq!(names(&narrowed), ["users:read"]);
        let beyond = refresh_scope(&grant, &wide, &catalog(), Some("zones:read"));
        assert_eq!(beyond.unwrap_err().code, ErrorCode::InvalidScope);
        // The same grant presented by a client since narrowed to tokens:read.
        let narrow = client(Some(&["tokens:*"]));
        let left = refresh_scope(&grant, &narrow, &catalog(), None).unwrap();
        assert_eq!(names(&left), ["tokens:read"]);
    }

    #[test]
    fn a_spent_token_burns_its_family_and_nothing_else_does() {
        let client = client(None);
        let fresh = issue_for(&client, &["zones:read"], None).refresh;
        assert_eq!(judge_refresh(&fresh, &client, NOW), RefreshVerdict::Redeem);

        let spent = RefreshToken {
            spent_at: Some(NOW),
            ..fresh.clone()
        };
        assert_eq!(
            judge_refresh(&spent, &client, NOW),
            RefreshVerdict::RevokeFamily(fresh.family_id.clone())
        );
        // Already revoked: the family went with it, or it was revoked alone; nothing more to do.
        let mut revoked = spent.clone();
        revoked.credential.revoked_at = Some(NOW);
        assert!(matches!(
            judge_refresh(&revoked, &client, NOW),
            RefreshVerdict::Refuse(_)
        ));
        let later = NOW.saturating_add(LIFETIMES.refresh);
        assert_eq!(
            judge_refresh(&fresh, &client, later),
            RefreshVerdict::Refuse("the refresh token has expired")
        );
        // Another client holding this client's token cannot burn the family, nor spend it.
        let stranger = self::client(None);
        assert_eq!(
            judge_refresh(&spent, &stranger, NOW),
            RefreshVerdict::Refuse(REFRESH_NOT_KNOWN)
        );
    }
}
