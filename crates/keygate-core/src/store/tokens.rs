//! Personal and service tokens, and the sessions signing in makes.

use async_trait::async_trait;

use super::{Page, Paged, StoreError};
use crate::Timestamp;
use crate::access::{Grant, Scope, perm};
use crate::credential::CredentialKind;
use crate::id::{CredentialId, UserId};
use crate::model::{AuditEvent, Credential};

/// Which tokens a list shows.
#[derive(Debug, Clone, Default)]
pub struct TokenFilter {
    pub kinds: Vec<CredentialKind>,
    /// `active`, `expired`, `revoked`.
    pub statuses: Vec<String>,
    pub user_ids: Vec<UserId>,
    /// Which users' personal tokens the caller may see.
    pub personal: PersonalTokens,
    /// Only tokens not used since then, or never: the stale-credential report.
    pub unused_since: Option<Timestamp>,
}

/// Whose personal tokens a list may show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PersonalTokens {
    #[default]
    All,
    /// Only this user's (the caller's own).
    OfUser(UserId),
    /// None: the caller is not a user and may not see users' tokens.
    Hidden,
}

#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    async fn create_token(
        &self,
        grant: &Grant<perm::TokensWrite>,
        token: &Credential,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Stores a session made by signing in.
    async fn create_session(
        &self,
        session: &Credential,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// Personal and service tokens of the scope's tenant, filtered; statuses are judged at `now`.
    async fn list_tokens(
        &self,
        scope: &Scope<perm::TokensRead>,
        filter: &TokenFilter,
        page: &Page,
        now: Timestamp,
    ) -> Result<Paged<Credential>, StoreError>;

    async fn get_token(
        &self,
        scope: &Scope<perm::TokensRead>,
        id: &CredentialId,
    ) -> Result<Option<Credential>, StoreError>;

    /// Revokes these tokens of the grant's tenant in one transaction, one event each (events
    /// pair with ids by position). Returns the ids that were active and are now revoked.
    async fn revoke_tokens(
        &self,
        grant: &Grant<perm::TokensWrite>,
        ids: &[CredentialId],
        at: Timestamp,
        events: &[AuditEvent],
    ) -> Result<Vec<CredentialId>, StoreError>;

    /// Rolls the grant's active token `previous` (API.md §14): stores `successor` (which names
    /// it in `rolled_from`) and makes `previous` expire at `previous_expires_at`, naming its
    /// successor, in one transaction with `event`. `None` (and nothing changed) if the tenant has
    /// no such active personal or service token, or it was rolled already (by a roll that raced
    /// this one).
    async fn roll_token(
        &self,
        grant: &Grant<perm::TokensWrite>,
        previous: &CredentialId,
        previous_expires_at: Timestamp,
        successor: &Credential,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError>;

    /// Takes note that `session` sent the console form `form` (the one-time value each page
    /// with a creating form gives it). `false` if that was the session's last form already: a
    /// reload of the page the post answered, or a second click, is then not acted on again.
    /// Only a session's last form is remembered, and it goes with the session.
    async fn note_form(&self, session: &CredentialId, form: &str) -> Result<bool, StoreError>;

    /// Ends a session (signing out). `None` if it was not an active session.
    async fn end_session(
        &self,
        id: &CredentialId,
        at: Timestamp,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError>;
}
