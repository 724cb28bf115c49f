//! Permissions, the catalog, wildcard patterns and the built-in roles (API.md §2).
//!
//! A permission is `resource:action`. Roles hold *patterns* (`*`, `tokens:*`, `tokens:read`), which
//! are expanded against the catalog when a credential is verified; what a verified credential
//! carries is the concrete, sorted [`PermissionSet`], so a check is a binary search.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The permissions keygate itself defines.
pub const BUILTIN: [&str; 17] = [
    "tenants:read",
    "tenants:write",
    "tenants:impersonate",
    "users:read",
    "users:write",
    "roles:read",
    "roles:write",
    "tokens:read",
    "tokens:write",
    "keys:read",
    "keys:write",
    "ip_restriction:read",
    "ip_restriction:write",
    "oauth_clients:read",
    "oauth_clients:write",
    "audit:read",
    "credentials:verify",
];

const MAX_PART_LEN: usize = 64;

fn valid_part(part: &str) -> bool {
    let mut bytes = part.bytes();
    (1..=MAX_PART_LEN).contains(&part.len())
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Why a permission or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    #[error(
        "`{0}` is not a permission: use `resource:action` in lowercase letters, digits, `_` or `-`"
    )]
    Invalid(String),
    #[error("`{0}` is not a known permission")]
    Unknown(String),
}

/// A single `resource:action` permission, validated.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Permission(String);

impl Permission {
    pub fn parse(text: &str) -> Result<Self, PermissionError> {
        match text.split_once(':') {
            Some((resource, action)) if valid_part(resource) && valid_part(action) => {
                Ok(Self(text.to_owned()))
            }
            _ => Err(PermissionError::Invalid(text.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn resource(&self) -> &str {
        self.0.split_once(':').map_or("", |(resource, _)| resource)
    }

    fn action(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, action)| action)
    }
}

impl TryFrom<String> for Permission {
    type Error = PermissionError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Permission::parse(&text)
    }
}

impl From<Permission> for String {
    fn from(permission: Permission) -> String {
        permission.0
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a role grants: everything, everything on one resource, or one permission.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Pattern {
    All,
    Resource(String),
    Exact(Permission),
}

impl Pattern {
    /// Parses `*`, `resource:*` or `resource:action`; the catalog check is separate
    /// ([`Catalog::check_pattern`]).
    pub fn parse(text: &str) -> Result<Self, PermissionError> {
        if text == "*" {
            return Ok(Pattern::All);
        }
        if let Some(resource) = text.strip_suffix(":*") {
            if valid_part(resource) {
                return Ok(Pattern::Resource(resource.to_owned()));
            }
            return Err(PermissionError::Invalid(text.to_owned()));
        }
        Permission::parse(text).map(Pattern::Exact)
    }

    pub fn matches(&self, permission: &Permission) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Resource(resource) => permission.resource() == resource,
            Pattern::Exact(exact) => exact == permission,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::All => f.write_str("*"),
            Pattern::Resource(resource) => write!(f, "{resource}:*"),
            Pattern::Exact(permission) => f.write_str(permission.as_str()),
        }
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Every permission this deployment knows: keygate's own and those the operator declared for the
/// APIs keygate protects.
#[derive(Debug, Clone)]
pub struct Catalog {
    permissions: Vec<Permission>,
}

impl Catalog {
    pub fn new<S: AsRef<str>>(declared: &[S]) -> Result<Self, PermissionError> {
        let mut permissions = BUILTIN
            .iter()
            .map(|p| Permission::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        for extra in declared {
            permissions.push(Permission::parse(extra.as_ref())?);
        }
        permissions.sort();
        permissions.dedup();
        Ok(Self { permissions })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Permission> {
        self.permissions.iter()
    }

    pub fn contains(&self, permission: &str) -> bool {
        self.permissions
            .binary_search_by(|p| p.as_str().cmp(permission))
            .is_ok()
    }

    /// Parses a pattern and refuses exact permissions and resources the catalog does not know, so
    /// a typo in a role is an error instead of a silently useless grant.
    pub fn check_pattern(&self, text: &str) -> Result<Pattern, PermissionError> {
        let pattern = Pattern::parse(text)?;
        let known = match &pattern {
            Pattern::All => true,
            Pattern::Resource(resource) => self.iter().any(|p| p.resource() == resource),
            Pattern::Exact(permission) => self.contains(permission.as_str()),
        };
        if known {
            Ok(pattern)
        } else {
            Err(PermissionError::Unknown(text.to_owned()))
        }
    }

    /// The concrete permissions a set of patterns grants. Unknown or invalid patterns grant nothing:
    /// they may be left over from a permission the operator no longer declares.
    pub fn expand<S: AsRef<str>>(&self, patterns: &[S]) -> PermissionSet {
        let patterns: Vec<Pattern> = patterns
            .iter()
            .filter_map(|p| Pattern::parse(p.as_ref()).ok())
            .collect();
        PermissionSet(
            self.permissions
                .iter()
                .filter(|permission| patterns.iter().any(|pattern| pattern.matches(permission)))
                .cloned()
                .collect(),
        )
    }

    /// What a built-in role grants in this catalog.
    pub fn builtin_role(&self, role: BuiltinRole) -> PermissionSet {
        let grants = |p: &Permission| match role {
            BuiltinRole::Owner => true,
            BuiltinRole::Admin => p.as_str() != "tenants:write",
            BuiltinRole::Member => p.action() == "read" || p.as_str() == "tokens:write",
            BuiltinRole::Viewer => p.action() == "read",
        };
        PermissionSet(
            self.permissions
                .iter()
                .filter(|p| grants(p))
                .cloned()
                .collect(),
        )
    }
}

/// The four roles every tenant has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuiltinRole {
    Owner,
    Admin,
    Member,
    Viewer,
}

impl BuiltinRole {
    pub const ALL: [BuiltinRole; 4] = [
        BuiltinRole::Owner,
        BuiltinRole::Admin,
        BuiltinRole::Member,
        BuiltinRole::Viewer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BuiltinRole::Owner => "owner",
            BuiltinRole::Admin => "admin",
            BuiltinRole::Member => "member",
            BuiltinRole::Viewer => "viewer",
        }
    }

    /// Built-in roles have fixed ids, the same in every deployment.
    pub fn id(self) -> crate::id::RoleId {
        crate::id::RoleId::from_trusted(format!("rol_{}", self.name()))
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.name() == name)
    }

    pub fn from_id(id: &crate::id::RoleId) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.id() == *id)
    }
}

/// A concrete, sorted set of permissions.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PermissionSet(Vec<Permission>);

impl PermissionSet {
    pub fn contains(&self, permission: &str) -> bool {
        self.0
            .binary_search_by(|p| p.as_str().cmp(permission))
            .is_ok()
    }

    /// The permissions both sets hold: a role narrowed by a token's own list.
    pub fn intersect(&self, other: &PermissionSet) -> PermissionSet {
        PermissionSet(
            self.0
                .iter()
                .filter(|p| other.contains(p.as_str()))
                .cloned()
                .collect(),
        )
    }

    /// Those of `required` this set lacks, in the order given.
    pub fn missing<'a, S: AsRef<str>>(&self, required: &'a [S]) -> Vec<&'a str> {
        required
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| !self.contains(p))
            .collect()
    }

    /// Those of this set named in `names`.
    pub fn only<S: AsRef<str>>(&self, names: &[S]) -> PermissionSet {
        PermissionSet(
            self.0
                .iter()
                .filter(|p| names.iter().any(|n| n.as_ref() == p.as_str()))
                .cloned()
                .collect(),
        )
    }

    pub fn is_subset_of(&self, other: &PermissionSet) -> bool {
        self.0.iter().all(|p| other.contains(p.as_str()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Permission> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(set: &PermissionSet) -> Vec<&str> {
        set.iter().map(Permission::as_str).collect()
    }

    #[test]
    fn permissions_must_be_resource_and_action() {
        assert!(Permission::parse("zones:read").is_ok());
        assert!(Permission::parse("ip_restriction:write").is_ok());
        for bad in [
            "zones",
            "zones:",
            ":read",
            "Zones:read",
            "zones:read:x",
            "zones:*",
            "1a:b",
            "",
        ] {
            assert!(Permission::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcards_match_what_they_say() {
        let tokens_read = Permission::parse("tokens:read").unwrap();
        let keys_read = Permission::parse("keys:read").unwrap();
        assert!(Pattern::parse("*").unwrap().matches(&tokens_read));
        assert!(Pattern::parse("tokens:*").unwrap().matches(&tokens_read));
        assert!(!Pattern::parse("tokens:*").unwrap().matches(&keys_read));
        assert!(!Pattern::parse("token:*").unwrap().matches(&tokens_read));
        assert!(Pattern::parse("*:read").is_err());
        assert!(Pattern::parse("tokens:**").is_err());
    }

    #[test]
    fn catalog_includes_declared_permissions_and_refuses_unknown_patterns() {
        let catalog = Catalog::new(&["zones:read", "zones:write", "zones:read"]).unwrap();
        assert_eq!(catalog.iter().count(), BUILTIN.len() + 2);
        assert!(catalog.contains("zones:write"));
        assert!(catalog.check_pattern("zones:*").is_ok());
        assert_eq!(
            catalog.check_pattern("zone:*"),
            Err(PermissionError::Unknown("zone:*".into()))
        );
        assert_eq!(
            catalog.check_pattern("tokens:destroy"),
            Err(PermissionError::Unknown("tokens:destroy".into()))
        );
        assert!(Catalog::new(&["not a permission"]).is_err());
    }

    #[test]
    fn builtin_roles_follow_the_contract() {
        let catalog = Catalog::new(&["zones:read", "zones:write"]).unwrap();
        let owner = catalog.builtin_role(BuiltinRole::Owner);
        let admin = catalog.builtin_role(BuiltinRole::Admin);
        let member = catalog.builtin_role(BuiltinRole::Member);
        let viewer = catalog.builtin_role(BuiltinRole::Viewer);
        assert_eq!(owner.len(), catalog.iter().count());
        assert!(!admin.contains("tenants:write"));
        assert_eq!(admin.len(), owner.len() - 1);
        assert!(admin.contains("zones:write"));
        assert!(member.contains("tokens:write") && member.contains("zones:read"));
        assert!(!member.contains("users:write") && !member.contains("credentials:verify"));
        assert!(viewer.iter().all(|p| p.as_str().ends_with(":read")));
        assert_eq!(member.len(), viewer.len() + 1);
        assert!(viewer.is_subset_of(&member) && member.is_subset_of(&admin));
        assert_eq!(
            BuiltinRole::from_id(&BuiltinRole::Admin.id()),
            Some(BuiltinRole::Admin)
        );
    }

    #[test]
    fn expansion_intersection_and_missing() {
        let catalog = Catalog::new::<&str>(&[]).unwrap();
        let role = catalog.expand(&["tokens:*", "keys:read", "bogus", "gone:read"]);
        assert_eq!(names(&role), ["keys:read", "tokens:read", "tokens:write"]);
        let narrowed = role.intersect(&catalog.expand(&["tokens:read", "users:read"]));
        assert_eq!(names(&narrowed), ["tokens:read"]);
        assert_eq!(
            narrowed.missing(&["tokens:read", "tokens:write"]),
            ["tokens:write"]
        );
    }
}
