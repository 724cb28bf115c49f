//! Permissions, the catalog, wildcard patterns and the built-in roles (API.md §2).
//!
//! A permission is `resource:action`. Roles hold *patterns* (`*`, `tokens:*`, `tokens:read`), which
//! are expanded against the catalog when a credential is verified; what a verified credential
//! carries is the concrete, sorted [`PermissionSet`], so a check is a binary search.
//!
//! A set also remembers the wildcards behind it ([`Wildcards`]): a wildcard grants tomorrow's
//! permissions too (the operator declares `zones:write` after a role got `zones:*`), so granting one
//! is granting more than today's expansion, and only a holder of the same wildcard, or a wider
//! one, may do it.

use std::any::Any;
use std::collections::BTreeSet;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::share::{Derived, Interner};

/// The permissions keygate itself defines.
pub const BUILTIN: [&str; 20] = [
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
    "usage:read",
    "credentials:verify",
    "webhooks:read",
    "webhooks:write",
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
    /// The built-in roles' sets, made once.
    builtins: [PermissionSet; BuiltinRole::ALL.len()],
    /// Sets handed out by [`Catalog::share`].
    shared: Arc<Interner<Grant>>,
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
        let shared = Arc::new(Interner::default());
        let builtins = BuiltinRole::ALL
            .map(|role| PermissionSet(shared.share(builtin_set(&permissions, role).0)));
        Ok(Self {
            permissions,
            builtins,
            shared,
        })
    }

    /// One set for all sets equal to `set` (see [`crate::share`]).
    pub fn share(&self, set: PermissionSet) -> PermissionSet {
        PermissionSet(self.shared.share(set.0))
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
        PermissionSet::new(
            self.permissions
                .iter()
                .filter(|permission| patterns.iter().any(|pattern| pattern.matches(permission)))
                .cloned()
                .collect(),
            Wildcards::of(&patterns),
        )
    }

    /// What a built-in role grants in this catalog.
    pub fn builtin_role(&self, role: BuiltinRole) -> PermissionSet {
        let index = BuiltinRole::ALL
            .iter()
            .position(|r| *r == role)
            .unwrap_or(0);
        self.builtins[index].clone()
    }
}

fn builtin_set(permissions: &[Permission], role: BuiltinRole) -> PermissionSet {
    let grants = |p: &Permission| match role {
        BuiltinRole::Owner => true,
        BuiltinRole::Admin => p.as_str() != "tenants:write",
        BuiltinRole::Member => p.action() == "read" || p.as_str() == "tokens:write",
        BuiltinRole::Viewer => p.action() == "read",
    };
    PermissionSet::new(
        permissions.iter().filter(|p| grants(p)).cloned().collect(),
        Wildcards::of_builtin(role),
    )
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

/// The wildcards a grant holds for good: the resources on which it holds every permission the
/// catalog declares, today's and any declared later.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Wildcards {
    /// Every resource but these (`*` itself when none is excepted).
    AllBut(BTreeSet<String>),
    /// These resources only.
    Only(BTreeSet<String>),
}

impl Default for Wildcards {
    fn default() -> Self {
        Wildcards::Only(BTreeSet::new())
    }
}

impl Wildcards {
    fn everything() -> Self {
        Wildcards::AllBut(BTreeSet::new())
    }

    /// The wildcards among `patterns` (exact permissions are none).
    fn of(patterns: &[Pattern]) -> Self {
        let mut resources = BTreeSet::new();
        for pattern in patterns {
            match pattern {
                Pattern::All => return Self::everything(),
                Pattern::Resource(resource) => {
                    resources.insert(resource.clone());
                }
                Pattern::Exact(_) => {}
            }
        }
        Wildcards::Only(resources)
    }

    /// What a built-in role holds for good: the owner everything, the admin everything but the
    /// tenants' resource (it lacks `tenants:write`); member and viewer hold single actions only.
    fn of_builtin(role: BuiltinRole) -> Self {
        match role {
            BuiltinRole::Owner => Self::everything(),
            BuiltinRole::Admin => Wildcards::AllBut(BTreeSet::from(["tenants".to_owned()])),
            BuiltinRole::Member | BuiltinRole::Viewer => Self::default(),
        }
    }

    fn intersect(&self, other: &Wildcards) -> Wildcards {
        use Wildcards::{AllBut, Only};
        match (self, other) {
            (AllBut(a), AllBut(b)) => AllBut(a.union(b).cloned().collect()),
            (AllBut(except), Only(only)) | (Only(only), AllBut(except)) => {
                Only(only.difference(except).cloned().collect())
            }
            (Only(a), Only(b)) => Only(a.intersection(b).cloned().collect()),
        }
    }

    /// Whether these wildcards include `pattern`'s (an exact permission is never a wildcard).
    pub fn covers(&self, pattern: &Pattern) -> bool {
        match (self, pattern) {
            (_, Pattern::Exact(_)) => false,
            (Wildcards::AllBut(except), Pattern::All) => except.is_empty(),
            (Wildcards::Only(_), Pattern::All) => false,
            (Wildcards::AllBut(except), Pattern::Resource(r)) => !except.contains(r),
            (Wildcards::Only(only), Pattern::Resource(r)) => only.contains(r),
        }
    }

    /// The wildcard patterns these name, as they are written (`*`, `zones:*`); an `AllBut` with
    /// exceptions is not one pattern and names none.
    fn patterns(&self) -> Vec<Pattern> {
        match self {
            Wildcards::AllBut(except) if except.is_empty() => vec![Pattern::All],
            Wildcards::AllBut(_) => Vec::new(),
            Wildcards::Only(only) => only.iter().cloned().map(Pattern::Resource).collect(),
        }
    }
}

/// A concrete, sorted set of permissions, and the wildcards it was granted through.
///
/// Shared, not copied: a clone is a reference count, and [`Catalog::share`] hands out one set
/// for equal ones, so the thousands of cached credentials of one role hold one set between them.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct PermissionSet(Arc<Grant>);

/// The permissions, the wildcards, and what a front end derives from them (forward-auth's
/// permission list header), made once for every credential holding the set.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Grant(Vec<Permission>, Wildcards, Derived);

impl PermissionSet {
    fn new(permissions: Vec<Permission>, wildcards: Wildcards) -> Self {
        Self(Arc::new(Grant(permissions, wildcards, Derived::default())))
    }

    /// What `make` derives from the set, made on the first call and kept with it, so with
    /// every credential sharing it. One type per program: `None` if another was kept first.
    pub fn rendered<T: Any + Send + Sync>(&self, make: impl FnOnce(&Self) -> T) -> Option<&T> {
        self.0.2.get_or_init(|| make(self))
    }

    pub fn wildcards(&self) -> &Wildcards {
        &self.0.1
    }

    /// What of `granted` this set does not hold: permissions, and wildcards it holds only as
    /// today's expansion. Nothing may be granted beyond its grantor.
    pub fn lacks(&self, granted: &PermissionSet) -> Vec<String> {
        let mut beyond: Vec<String> = granted
            .iter()
            .filter(|p| !self.contains(p.as_str()))
            .map(|p| p.as_str().to_owned())
            .collect();
        beyond.extend(
            granted
                .wildcards()
                .patterns()
                .into_iter()
                .filter(|pattern| !self.0.1.covers(pattern))
                .map(|pattern| pattern.to_string()),
        );
        if let Wildcards::AllBut(except) = &granted.0.1
            && !except.is_empty()
        {
            // A wildcard on every resource but some: held only by as wide a grant.
            let held = match &self.0.1 {
                Wildcards::AllBut(mine) => mine.is_subset(except),
                Wildcards::Only(_) => false,
            };
            if !held {
                // Named as the patterns it is made of: a wildcard on each resource it covers
                // that this set does not hold as one, or `*` when this set holds each of today's
                // (what it lacks is then the resources declared later).
                let wanting: BTreeSet<&str> = granted
                    .iter()
                    .map(Permission::resource)
                    .filter(|resource| !except.contains(*resource))
                    .filter(|resource| !self.0.1.covers(&Pattern::Resource((*resource).to_owned())))
                    .collect();
                if wanting.is_empty() {
                    beyond.push(Pattern::All.to_string());
                } else {
                    beyond.extend(wanting.into_iter().map(|resource| format!("{resource}:*")));
                }
            }
        }
        beyond
    }

    /// Those of `patterns` (a credential's own narrowing list) this set does not hold: an exact
    /// permission it lacks, or a wildcard it does not hold as a wildcard.
    pub fn lacks_patterns<S: AsRef<str>>(&self, patterns: &[S]) -> Vec<String> {
        patterns
            .iter()
            .map(AsRef::as_ref)
            .filter(|text| match Pattern::parse(text) {
                Ok(Pattern::Exact(permission)) => !self.contains(permission.as_str()),
                Ok(wildcard) => !self.0.1.covers(&wildcard),
                Err(_) => true,
            })
            .map(str::to_owned)
            .collect()
    }

    pub fn contains(&self, permission: &str) -> bool {
        self.0
            .0
            .binary_search_by(|p| p.as_str().cmp(permission))
            .is_ok()
    }

    /// The permissions both sets hold: a role narrowed by a token's own list.
    pub fn intersect(&self, other: &PermissionSet) -> PermissionSet {
        PermissionSet::new(
            self.0
                .0
                .iter()
                .filter(|p| other.contains(p.as_str()))
                .cloned()
                .collect(),
            self.0.1.intersect(&other.0.1),
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

    /// Those of this set named in `names` (exact names: no wildcard survives).
    pub fn only<S: AsRef<str>>(&self, names: &[S]) -> PermissionSet {
        PermissionSet::new(
            self.0
                .0
                .iter()
                .filter(|p| names.iter().any(|n| n.as_ref() == p.as_str()))
                .cloned()
                .collect(),
            Wildcards::default(),
        )
    }

    pub fn is_subset_of(&self, other: &PermissionSet) -> bool {
        self.0.0.iter().all(|p| other.contains(p.as_str()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Permission> {
        self.0.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.0.is_empty()
    }
}

impl fmt::Debug for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.0.iter()).finish()
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
    fn equal_sets_are_one_shared_set() {
        let catalog = Catalog::new(&["zones:read", "zones:write"]).unwrap();
        let same = |a: &PermissionSet, b: &PermissionSet| Arc::ptr_eq(&a.0, &b.0);
        let admin = catalog.builtin_role(BuiltinRole::Admin);
        assert!(same(&admin, &catalog.builtin_role(BuiltinRole::Admin)));
        // A custom role equal to a built-in one is the built-in's set.
        let custom = catalog.expand(&["*"]).intersect(&admin);
        assert!(!same(&custom, &admin) && custom == admin);
        assert!(same(&catalog.share(custom), &admin));
        let zones = catalog.share(catalog.expand(&["zones:*"]));
        assert!(same(&catalog.share(catalog.expand(&["zones:*"])), &zones));
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
        for role in [&owner, &admin, &member, &viewer] {
            assert!(
                role.contains("usage:read"),
                "every built-in role reads usage"
            );
        }
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

    #[test]
    fn a_wildcard_is_held_only_through_a_wildcard_as_wide() {
        let today = Catalog::new(&["zones:read"]).unwrap();
        let manager = today.expand(&["roles:*", "zones:read"]);
        let zones_all = today.expand(&["zones:*"]);
        // The same permissions today, but the wildcard is more.
        assert_eq!(names(&zones_all), names(&today.expand(&["zones:read"])));
        assert_eq!(manager.lacks(&zones_all), ["zones:*"]);
        assert!(manager.lacks(&today.expand(&["zones:read"])).is_empty());
        assert!(manager.lacks(&today.expand(&["roles:*"])).is_empty());

        let owner = today.builtin_role(BuiltinRole::Owner);
        let admin = today.builtin_role(BuiltinRole::Admin);
        let member = today.builtin_role(BuiltinRole::Member);
        assert!(owner.lacks(&today.expand(&["*"])).is_empty());
        assert!(owner.lacks(&admin).is_empty());
        assert!(admin.lacks(&zones_all).is_empty());
        assert_eq!(admin.lacks(&today.expand(&["*"])), ["tenants:write", "*"]);
        assert_eq!(
            admin.lacks(&today.expand(&["tenants:*"])),
            ["tenants:write", "tenants:*"]
        );
        // A member holds tokens:read and tokens:write, not `tokens:*`.
        assert_eq!(member.lacks(&today.expand(&["tokens:*"])), ["tokens:*"]);
        // Only a grant as wide as the admin's hands out the admin role.
        let everything_listed = today.expand(&[
            "audit:*",
            "credentials:*",
            "ip_restriction:*",
            "keys:*",
            "oauth_clients:*",
            "roles:*",
            "tokens:*",
            "users:*",
            "zones:*",
            "tenants:read",
            "tenants:impersonate",
        ]);
        // What is lacking is named as patterns a client can read (it was a phrase): the
        // wildcards of the resources not listed, and `*` once every resource of today is.
        let lacking = everything_listed.lacks(&admin);
        assert!(lacking.contains(&"webhooks:*".to_owned()), "{lacking:?}");
        assert!(
            lacking.iter().all(|b| Pattern::parse(b).is_ok()),
            "{lacking:?}"
        );
        let mut every_resource: Vec<String> = names(&admin)
            .iter()
            .map(|p| p.split_once(':').unwrap().0)
            .filter(|resource| *resource != "tenants")
            .map(|resource| format!("{resource}:*"))
            .collect();
        every_resource.dedup();
        every_resource.extend(["tenants:read".to_owned(), "tenants:impersonate".to_owned()]);
        assert_eq!(today.expand(&every_resource).lacks(&admin), ["*"]);

        // Narrowing keeps the wildcards both sides hold.
        let narrowed = admin.intersect(&today.expand(&["zones:*", "tokens:read"]));
        assert!(
            narrowed
                .wildcards()
                .covers(&Pattern::Resource("zones".into()))
        );
        assert!(
            !narrowed
                .wildcards()
                .covers(&Pattern::Resource("tokens".into()))
        );
        assert_eq!(
            member.lacks_patterns(&["tokens:read", "tokens:*", "users:write"]),
            ["tokens:*", "users:write"]
        );
    }
}
