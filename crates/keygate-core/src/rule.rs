//! Why a management request breaks a rule. The server maps each variant to its problem code.

use crate::access::{Escalation, Forbidden};
use crate::validate::Invalid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// 400 `invalid-request`, naming each field.
    #[error("invalid fields")]
    Invalid(Vec<Invalid>),
    /// 403 `privilege-escalation`.
    #[error(transparent)]
    Escalation(#[from] Escalation),
    /// 403 `forbidden`: a missing permission, or an action this kind of credential cannot take.
    #[error("{detail}")]
    Forbidden {
        detail: String,
        missing: Vec<String>,
    },
    /// 404 `not-found`: something named does not exist in the caller's scope.
    #[error("{0}")]
    NotFound(String),
    /// 409, with the rule the request ran into.
    #[error("{detail}")]
    Conflict { conflict: Conflict, detail: String },
    #[error("could not draw randomness or hash: {0}")]
    Internal(String),
}

/// The rules a request can conflict with (each its own 409 problem code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// A role that users, usable tokens or OAuth clients still hold.
    RoleInUse,
    /// Built-in roles cannot be changed or deleted.
    BuiltinRole,
    /// Deleting the account key that authenticates the request.
    CannotDeleteCurrentKey,
    /// An allowlist that would not cover the caller's own address.
    WouldLockOutCaller,
    /// Rolling a token that was already rolled: its successor is the one to roll.
    AlreadyRolled,
    /// Demoting, disabling or deleting the tenant's last active owner.
    LastOwner,
}

impl RuleError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        RuleError::Invalid(vec![Invalid::new(field, message)])
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        RuleError::Forbidden {
            detail: detail.into(),
            missing: Vec::new(),
        }
    }
}

impl From<Vec<Invalid>> for RuleError {
    fn from(errors: Vec<Invalid>) -> Self {
        RuleError::Invalid(errors)
    }
}

impl From<Invalid> for RuleError {
    fn from(error: Invalid) -> Self {
        RuleError::Invalid(vec![error])
    }
}

impl From<Forbidden> for RuleError {
    fn from(forbidden: Forbidden) -> Self {
        RuleError::Forbidden {
            detail: forbidden.to_string(),
            missing: forbidden.missing,
        }
    }
}

impl From<getrandom::Error> for RuleError {
    fn from(error: getrandom::Error) -> Self {
        RuleError::Internal(error.to_string())
    }
}

impl From<crate::password::PasswordError> for RuleError {
    fn from(error: crate::password::PasswordError) -> Self {
        use crate::password::PasswordError::*;
        match error {
            TooShort | TooLong => RuleError::invalid("password", error.to_string()),
            Hashing(_) | Random(_) => RuleError::Internal(error.to_string()),
        }
    }
}
