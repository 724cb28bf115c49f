//! What several resources' SQL uses: mapping rows to values, inserting tenants, users,
//! credentials and audit events, reading a credential as verification needs it, and paging.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use keygate_core::Timestamp;
use keygate_core::access::Scope;
use keygate_core::allowlist::IpAllowlist;
use keygate_core::credential::{CredentialHash, CredentialKind};
use keygate_core::id::{CredentialId, DeliveryId, RoleId, TenantId, UserId};
use keygate_core::model::{
    AuditEvent, Credential, IpRestriction, PreviousSecret, RateLimit, Role, Slug, Tenant,
    TenantPath, TenantStatus, User, UserStatus, email_key,
};
use keygate_core::password::PasswordHashString;
use keygate_core::quota::{Quota, QuotaPeriod, StoredQuota};
use keygate_core::store::{
    Change, CredentialContext, CredentialRecord, LeakPolicy, MOST_HASHES_AT_ONCE, Page, Paged,
    StoreError,
};
use sqlx::{QueryBuilder, Row, Transaction};

use super::{Db, DbRow, SqlStore, store_error};

/// Deletes `tenant`'s credential `id` of `kind` for good, recording `event`, and drops it
/// from every node's cache; `None` if the tenant has no such credential.
pub(super) async fn delete_credential(
    store: &SqlStore,
    tenant: &TenantId,
    id: &CredentialId,
    kind: CredentialKind,
    event: &AuditEvent,
) -> Result<Option<()>, StoreError> {
    let tx = store.begin_write().await?;
    delete_credential_in(store, tx, tenant, id, kind, event).await
}

/// [`delete_credential`] in a transaction already under way, which it commits (or, with nothing
/// to delete, drops).
pub(super) async fn delete_credential_in(
    store: &SqlStore,
    mut tx: Transaction<'static, Db>,
    tenant: &TenantId,
    id: &CredentialId,
    kind: CredentialKind,
    event: &AuditEvent,
) -> Result<Option<()>, StoreError> {
    let deleted =
        sqlx::query("DELETE FROM credentials WHERE id = $1 AND tenant_id = $2 AND kind = $3")
            .bind(id.as_str())
            .bind(tenant.as_str())
            .bind(kind.as_str())
            .execute(&mut *tx)
            .await
            .map_err(store_error)?
            .rows_affected();
    if deleted == 0 {
        return Ok(None);
    }
    sqlx::query("DELETE FROM quotas WHERE subject_id = $1")
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
    insert_event(&mut tx, event).await?;
    store.commit(tx, &[Change::Credential(id.clone())]).await?;
    Ok(Some(()))
}

/// Which credential [`credential_record`] reads.
#[derive(Clone, Copy)]
pub(super) enum RecordOf<'a> {
    /// The credential whose secret, or whose previous secret, hashes to this.
    Hash(&'a CredentialHash),
    /// The OAuth client with this id.
    Client(&'a CredentialId),
    /// The OAuth client with this id, and whether it revoked the access token `jti`, or the
    /// grant it descends from (a part `revoked` if it did).
    AccessToken {
        client: &'a CredentialId,
        jti: &'a CredentialId,
        grant: Option<&'a CredentialId>,
    },
}

/// The columns of each part of [`credential_record`]'s statement: what `credential_from_row`,
/// `tenant_from_row`, `user_from_row` and `role_from_row` read, under their own names.
const CREDENTIAL_COLUMNS: &[&str] = &[
    "id",
    "tenant_id",
    "kind",
    "secret_hash",
    "hint",
    "name",
    "description",
    "user_id",
    "created_by",
    "role_id",
    "permissions",
    "allowed_ips",
    "rate_limit_requests",
    "rate_limit_per_seconds",
    "created_at",
    "expires_at",
    "revoked_at",
    "revoked_reason",
    "last_used_at",
    "last_used_ip",
    "rolled_from",
    "rolled_to",
    "previous_secret_hash",
    "previous_secret_until",
];
const TENANT_COLUMNS: &[&str] = &[
    "id",
    "parent_id",
    "name",
    "slug",
    "status",
    "allowlist_enabled",
    "allowlist",
    "path",
    "created_at",
    "leak_policy",
];
const USER_COLUMNS: &[&str] = &[
    "id",
    "tenant_id",
    "email",
    "name",
    "role_id",
    "status",
    "created_at",
    "last_sign_in_at",
];
const ROLE_COLUMNS: &[&str] = &["id", "tenant_id", "name", "permissions", "created_at"];
const QUOTA_COLUMNS: &[&str] = &[
    "quota_subject",
    "quota_limit",
    "quota_period",
    "quota_anchor",
    "quota_window",
    "quota_used",
];

/// The SQL type of a column of [`record_statement`], for the `NULL`s of the parts without it:
/// PostgreSQL types a column of untyped `NULL`s as text, which a later part's number or bytes
/// then cannot join.
fn column_type(column: &str) -> &'static str {
    match column {
        "secret_hash" | "previous_secret_hash" => "BYTEA",
        "allowlist_enabled" => "BOOLEAN",
        "rate_limit_requests"
        | "rate_limit_per_seconds"
        | "created_at"
        | "expires_at"
        | "revoked_at"
        | "last_used_at"
        | "previous_secret_until"
        | "last_sign_in_at"
        | "quota_limit"
        | "quota_anchor"
        | "quota_window"
        | "quota_used" => "BIGINT",
        _ => "TEXT",
    }
}

/// The one statement that reads a credential as verification needs it: the credential (part
/// `c`), every tenant of its line (`t`, found by following `parent_id` up from its tenant), its
/// user (`u`) and role (`r`), each with its quota, as rows of one `UNION ALL` whose parts share
/// their column names (`NULL` where a part has no such column). One statement is one snapshot
/// and, on PostgreSQL, one round trip, with no transaction around it. `CROSS JOIN` keeps SQLite's
/// planner walking from the credential to the rows it names by their keys (PostgreSQL reads it as
/// a plain join).
///
/// `credential` is the statement that gives `c`: a credential's row, or for a context alone
/// ([`context_statement`]) the three ids it is found by, in which case there is no part `c`.
/// `marks` are parts with no columns of their own, (alias, what it reads): a row each that is
/// found, which says only that it was.
fn record_statement(credential: &str, with_credential: bool, marks: &[(&str, &str)]) -> String {
    let mut all: Vec<&str> = Vec::new();
    let own = [
        if with_credential {
            CREDENTIAL_COLUMNS
        } else {
            &[]
        },
        TENANT_COLUMNS,
        USER_COLUMNS,
        ROLE_COLUMNS,
        QUOTA_COLUMNS,
    ];
    for column in own.concat() {
        if !all.contains(&column) {
            all.push(column);
        }
    }
    // A part is named by the alias it reads its own columns from.
    let part = |alias: &str, own: &[&str], quota: bool, from: &str| {
        let columns: Vec<String> = all
            .iter()
            .map(|column| {
                if own.contains(column) {
                    format!("{alias}.{column}")
                } else if quota && QUOTA_COLUMNS.contains(column) {
                    format!("qv.{column}")
                } else {
                    format!("CAST(NULL AS {}) AS {column}", column_type(column))
                }
            })
            .collect();
        format!(
            "SELECT '{alias}' AS part, {} FROM {from}",
            columns.join(", ")
        )
    };
    let mut parts = Vec::new();
    if with_credential {
        parts.push(part(
            "c",
            CREDENTIAL_COLUMNS,
            true,
            concat!("c", with_quota!(credential "c")),
        ));
    }
    parts.extend([
        part(
            "t",
            TENANT_COLUMNS,
            true,
            concat!(
                "line CROSS JOIN tenants t",
                with_quota!("t"),
                "WHERE t.id = line.id"
            ),
        ),
        part("u", USER_COLUMNS, false, "u"),
        part(
            "r",
            ROLE_COLUMNS,
            false,
            "roles r WHERE r.id = (SELECT coalesce(c.role_id, u.role_id) FROM c LEFT JOIN u ON true)",
        ),
    ]);
    parts.extend(
        marks
            .iter()
            .map(|(alias, from)| part(alias, &[], false, from)),
    );
    format!(
        "WITH RECURSIVE c AS ({credential}),
         line (id) AS (SELECT tenant_id FROM c
                       UNION ALL SELECT t.parent_id FROM line CROSS JOIN tenants t
                                 WHERE t.id = line.id AND t.parent_id IS NOT NULL),
         u AS (SELECT users.* FROM c CROSS JOIN users WHERE users.id = c.user_id)
         {}",
        parts.join(" UNION ALL ")
    )
}

/// Credentials' rows alone, with their quotas: the columns `credential_from_row` reads. The
/// credentials whose secret, or whose previous secret, hashes to one of `$1` … `$hashes`.
fn credentials_statement(hashes: usize) -> String {
    let columns: Vec<String> = CREDENTIAL_COLUMNS
        .iter()
        .map(|column| format!("c.{column}"))
        .chain(QUOTA_COLUMNS.iter().map(|column| format!("qv.{column}")))
        .collect();
    let hashes: Vec<String> = (1..=hashes).map(|n| format!("${n}")).collect();
    let hashes = hashes.join(", ");
    format!(
        "SELECT {} FROM credentials c{} \
         WHERE c.secret_hash IN ({hashes}) OR c.previous_secret_hash IN ({hashes})",
        columns.join(", "),
        with_quota!(credential "c"),
    )
}

/// A credential's tenant line, user and role, as [`record_statement`] reads them, from the ids
/// it names them by: its tenant (`$1`), user (`$2`) and own role (`$3`).
fn context_statement() -> String {
    record_statement(
        "SELECT CAST($1 AS TEXT) AS tenant_id, CAST($2 AS TEXT) AS user_id,
                CAST($3 AS TEXT) AS role_id",
        false,
        &[],
    )
}

/// The credential `of` names as verification needs it, with its tenant line, user and role: one
/// statement, read through `executor` (the pool, or a transaction it belongs to). `None` if there
/// is no such credential; beside it, whether a part `revoked` was found
/// ([`RecordOf::AccessToken`]).
pub(super) async fn credential_record<'e, E>(
    executor: E,
    of: RecordOf<'_>,
) -> Result<Option<(CredentialRecord, bool)>, StoreError>
where
    E: sqlx::Executor<'e, Database = Db>,
{
    static BY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        // A client's previous secret finds its client too; whether it still works is the
        // verifier's to decide (`previous_secret_until`).
        record_statement(
            "SELECT * FROM credentials WHERE secret_hash = $1 OR previous_secret_hash = $1",
            true,
            &[],
        )
    });
    const CLIENT: &str = "SELECT * FROM credentials WHERE id = $1 AND kind = 'oauth_secret'";
    static BY_CLIENT: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| record_statement(CLIENT, true, &[]));
    static BY_ACCESS_TOKEN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        record_statement(
            CLIENT,
            true,
            &[(
                "revoked",
                "revoked_access_tokens WHERE client_id = $1 AND (jti = $2 OR jti = $3)",
            )],
        )
    });
    let query = match of {
        RecordOf::Hash(hash) => sqlx::query(BY_HASH.as_str()).bind(hash.as_bytes().as_slice()),
        RecordOf::Client(id) => sqlx::query(BY_CLIENT.as_str()).bind(id.as_str()),
        RecordOf::AccessToken { client, jti, grant } => sqlx::query(BY_ACCESS_TOKEN.as_str())
            .bind(client.as_str())
            .bind(jti.as_str())
            .bind(grant.map(CredentialId::as_str)),
    };
    let rows = query.fetch_all(executor).await.map_err(store_error)?;
    let parts = record_parts(&rows)?;
    let Some(credential) = parts.credential else {
        return Ok(None);
    };
    let Some(context) = parts
        .context
        .filter(|c| c.tenant.id == credential.tenant_id)
    else {
        return Err(StoreError::Internal(format!(
            "credential {} has no tenant",
            credential.id
        )));
    };
    Ok(Some((
        CredentialRecord::in_context(credential, &context),
        parts.revoked,
    )))
}

/// The credentials with these hashes (current or previous secret) alone, with their quotas: one
/// statement for up to [`MOST_HASHES_AT_ONCE`].
pub(super) async fn credentials_alone(
    pool: &sqlx::Pool<Db>,
    hashes: &[CredentialHash],
) -> Result<Vec<Credential>, StoreError> {
    // One statement per power of two of hashes, up to the most a statement takes; a batch is
    // padded with its last hash, so a connection keeps a handful of prepared statements, not one
    // per batch size.
    static STATEMENTS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        (0..=MOST_HASHES_AT_ONCE.trailing_zeros())
            .map(|power| credentials_statement(1 << power))
            .collect()
    });
    let mut found = Vec::new();
    for batch in hashes.chunks(MOST_HASHES_AT_ONCE) {
        let Some(last) = batch.last() else { break };
        let size = batch.len().next_power_of_two();
        let statement = &STATEMENTS[size.trailing_zeros() as usize];
        let mut query = sqlx::query(statement.as_str());
        for hash in batch
            .iter()
            .chain(std::iter::repeat_n(last, size - batch.len()))
        {
            query = query.bind(hash.as_bytes().as_slice());
        }
        let rows = query.fetch_all(pool).await.map_err(store_error)?;
        for row in &rows {
            found.push(credential_from_row(row)?);
        }
    }
    Ok(found)
}

/// `credential`'s tenant line, user and role: one statement. `None` if its tenant is gone.
pub(super) async fn credential_context(
    pool: &sqlx::Pool<Db>,
    credential: &Credential,
) -> Result<Option<CredentialContext>, StoreError> {
    static STATEMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(context_statement);
    let rows = sqlx::query(STATEMENT.as_str())
        .bind(credential.tenant_id.as_str())
        .bind(credential.user_id.as_ref().map(UserId::as_str))
        .bind(credential.role_id.as_ref().map(RoleId::as_str))
        .fetch_all(pool)
        .await
        .map_err(store_error)?;
    let context = record_parts(&rows)?.context;
    Ok(context.filter(|c| c.tenant.id == credential.tenant_id))
}

/// What [`record_statement`]'s rows hold.
struct Parts {
    /// The credential, if there was a part `c`.
    credential: Option<Credential>,
    /// The context, if there was a tenant; the tenant line nearest first.
    context: Option<CredentialContext>,
    /// Whether there was a part `revoked`.
    revoked: bool,
}

fn record_parts(rows: &[DbRow]) -> Result<Parts, StoreError> {
    let mut credential = None;
    let mut line = Vec::new();
    let mut user = None;
    let mut role = None;
    let mut revoked = false;
    for row in rows {
        let part: String = row.try_get("part").map_err(store_error)?;
        match part.as_str() {
            "c" => credential = Some(credential_from_row(row)?),
            "t" => line.push(tenant_from_row(row)?),
            "u" => user = Some(user_from_row(row)?),
            "r" => role = Some(role_from_row(row)?),
            "revoked" => revoked = true,
            other => return Err(corrupt("part", other)),
        }
    }
    // Nearest first: the credential's own tenant, then its parent, …
    line.sort_by_key(|t| std::cmp::Reverse(t.path.depth()));
    let context = (!line.is_empty()).then(|| {
        let tenant = line.remove(0);
        CredentialContext {
            tenant,
            ancestors: line,
            user,
            role,
        }
    });
    Ok(Parts {
        credential,
        context,
        revoked,
    })
}

pub(super) async fn insert_tenant(
    tx: &mut Transaction<'_, Db>,
    t: &Tenant,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tenants (id, parent_id, name, slug, status, allowlist_enabled, allowlist,
                              path, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(t.id.as_str())
    .bind(t.parent_id.as_ref().map(TenantId::as_str))
    .bind(&t.name)
    .bind(t.slug.as_str())
    .bind(t.status.as_str())
    .bind(t.ip_restriction.enabled)
    .bind(to_json(&t.ip_restriction.allowlist.to_strings())?)
    .bind(t.path.as_str())
    .bind(t.created_at.unix())
    .execute(&mut **tx)
    .await
    .map(drop)
    .map_err(store_error)
}

pub(super) async fn insert_user(
    tx: &mut Transaction<'_, Db>,
    u: &User,
    password_hash: &PasswordHashString,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO users (id, tenant_id, email, email_key, email_folded, name, role_id,
                            password_hash, status, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(u.id.as_str())
    .bind(u.tenant_id.as_str())
    .bind(&u.email)
    // Unique per tenant (migration 0007); the folded address alone is what sign-in finds.
    .bind(format!("{}:{}", u.tenant_id, email_key(&u.email)))
    .bind(email_key(&u.email))
    .bind(&u.name)
    .bind(u.role_id.as_str())
    .bind(password_hash.as_str())
    .bind(u.status.as_str())
    .bind(u.created_at.unix())
    .execute(&mut **tx)
    .await
    .map(drop)
    .map_err(store_error)
}

pub(super) async fn insert_credential(
    tx: &mut Transaction<'_, Db>,
    c: &Credential,
) -> Result<(), StoreError> {
    insert_row(tx, c, None).await
}

/// Inserts a credential; `lineage` is a refresh token's client and family.
pub(super) async fn insert_row(
    tx: &mut Transaction<'_, Db>,
    c: &Credential,
    lineage: Option<(&CredentialId, &CredentialId)>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO credentials (id, tenant_id, kind, secret_hash, hint, name, description,
             user_id, created_by, role_id, permissions, allowed_ips, rate_limit_requests,
             rate_limit_per_seconds, created_at, expires_at, revoked_at, last_used_at,
             client_id, family_id, rolled_from)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                 $19, $20, $21)",
    )
    .bind(c.id.as_str())
    .bind(c.tenant_id.as_str())
    .bind(c.kind.as_str())
    .bind(c.hash.as_bytes().as_slice())
    .bind(&c.hint)
    .bind(&c.name)
    .bind(&c.description)
    .bind(c.user_id.as_ref().map(UserId::as_str))
    .bind(&c.created_by)
    .bind(c.role_id.as_ref().map(RoleId::as_str))
    .bind(c.permissions.as_ref().map(to_json).transpose()?)
    .bind(c.allowed_ips.as_ref().map(to_json).transpose()?)
    .bind(c.rate_limit.map(|r| i64::from(r.requests)))
    .bind(c.rate_limit.map(|r| i64::from(r.per_seconds)))
    .bind(c.created_at.unix())
    .bind(c.expires_at.map(Timestamp::unix))
    .bind(c.revoked_at.map(Timestamp::unix))
    .bind(c.last_used_at.map(Timestamp::unix))
    .bind(lineage.map(|(client, _)| client.as_str()))
    .bind(lineage.map(|(_, family)| family.as_str()))
    .bind(c.rolled_from.as_ref().map(CredentialId::as_str))
    .execute(&mut **tx)
    .await
    .map_err(store_error)?;
    if let Some(quota) = &c.quota {
        upsert_quota(tx, &c.tenant_id, quota).await?;
    }
    Ok(())
}

/// Writes a change's audit event and, in the same transaction, the webhook deliveries it causes
/// (API.md §15): a change that could not be recorded did not happen (the failure rolls it back,
/// and is reported as the store being unavailable: a retry may succeed, whatever the database
/// said), and one that happened is never lost to its webhooks.
pub(super) async fn insert_event(
    tx: &mut Transaction<'_, Db>,
    e: &AuditEvent,
) -> Result<(), StoreError> {
    insert_events(tx, &[e]).await
}

/// [`insert_event`] for the events of several changes made together (a bulk revocation's 500):
/// the events in one statement, and each tenant's webhooks read once, not a statement or two for
/// each change.
pub(super) async fn insert_events(
    tx: &mut Transaction<'_, Db>,
    events: &[&AuditEvent],
) -> Result<(), StoreError> {
    let counted: Vec<(&AuditEvent, u32)> = events.iter().map(|e| (*e, 1)).collect();
    insert_events_counted(tx, &counted)
        .await
        .map_err(|error| match error {
            StoreError::Unavailable(why) | StoreError::Internal(why) => {
                StoreError::Unavailable(format!("the audit event could not be written: {why}"))
            }
            other => other,
        })?;
    let mut webhooks: HashMap<(&TenantId, &str), Vec<String>> = HashMap::new();
    for e in events {
        if e.outcome != keygate_core::model::Outcome::Success {
            continue;
        }
        let Some((event_type, body)) = keygate_core::webhooks::message_for(e) else {
            continue;
        };
        let tenant = e.acting_tenant_id.as_ref().unwrap_or(&e.tenant_id);
        let wanting = match webhooks.entry((tenant, event_type)) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(entry) => entry.insert(webhooks_wanting(tx, tenant, event_type).await?),
        };
        insert_deliveries_to(tx, wanting, event_type, &body, e.time).await?;
    }
    Ok(())
}

/// Events written by one statement at most: 20 values each, well under the most a statement
/// may bind (32 766 in SQLite).
const EVENTS_PER_STATEMENT: usize = 500;

/// Writes audit events, each standing for `count` occurrences.
pub(super) async fn insert_events_counted(
    tx: &mut Transaction<'_, Db>,
    events: &[(&AuditEvent, u32)],
) -> Result<(), StoreError> {
    for chunk in events.chunks(EVENTS_PER_STATEMENT) {
        // Each event's scope is the path of the tenant whose log shows it, joined once for the
        // statement: a subquery in each row made SQLite compile 500 of them.
        let mut query = QueryBuilder::<Db>::new(
            "INSERT INTO audit_events (id, time, tenant_id, acting_tenant_id, actor_type, actor_id,
                 token_id, action, target_type, target_id, outcome, status, ip, user_agent,
                 request_id, count, detail, scope_path)
             SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7,
                 v.column8, v.column9, v.column10, v.column11, v.column12, v.column13,
                 v.column14, v.column15, v.column16, v.column17,
                 COALESCE(t.path, '/' || v.column18 || '/')
             FROM (",
        );
        query.push_values(chunk, |mut row, (e, count)| {
            row.push_bind(e.id.as_str())
                .push_bind(e.time.unix())
                .push_bind(e.tenant_id.as_str())
                .push_bind(e.acting_tenant_id.as_ref().map(TenantId::as_str))
                .push_bind(e.actor.kind)
                .push_bind(e.actor.id.as_str())
                .push_bind(e.token_id.as_ref().map(CredentialId::as_str))
                .push_bind(e.action)
                .push_bind(e.target.as_ref().map(|t| t.kind))
                .push_bind(e.target.as_ref().map(|t| t.id.as_str()))
                .push_bind(e.outcome.as_str())
                .push_bind(i64::from(e.status))
                .push_bind(e.ip.as_deref())
                .push_bind(e.user_agent.as_deref())
                .push_bind(e.request_id.as_deref())
                .push_bind(i64::from(*count))
                .push_bind(detail_json(e))
                .push_bind(e.acting_tenant_id.as_ref().unwrap_or(&e.tenant_id).as_str());
        });
        query.push(") AS v LEFT JOIN tenants t ON t.id = v.column18");
        query
            .build()
            .execute(&mut **tx)
            .await
            .map_err(store_error)?;
    }
    Ok(())
}

/// An event's details as a JSON object, or NULL when it has none.
fn detail_json(e: &AuditEvent) -> Option<String> {
    (!e.detail.is_empty()).then(|| {
        let object: serde_json::Map<String, serde_json::Value> = e
            .detail
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.clone()))
            .collect();
        serde_json::Value::Object(object).to_string()
    })
}

/// Writes a delivery of `body` to every enabled webhook of `tenant` or an ancestor of it that
/// wants `event_type`, in the caller's transaction; how many.
pub(super) async fn insert_deliveries(
    tx: &mut Transaction<'_, Db>,
    tenant: &TenantId,
    event_type: &str,
    body: &str,
    at: Timestamp,
) -> Result<u64, StoreError> {
    let webhooks = webhooks_wanting(tx, tenant, event_type).await?;
    insert_deliveries_to(tx, &webhooks, event_type, body, at).await?;
    Ok(webhooks.len() as u64)
}

/// The enabled webhooks of `tenant` and its ancestors that want `event_type`.
async fn webhooks_wanting(
    tx: &mut Transaction<'_, Db>,
    tenant: &TenantId,
    event_type: &str,
) -> Result<Vec<String>, StoreError> {
    sqlx::query_scalar(
        "SELECT w.id FROM webhooks w, tenants t
         WHERE t.id = $1 AND t.path LIKE '%/' || w.tenant_id || '/%' AND w.enabled = TRUE
           AND (w.events = '*' OR w.events LIKE '%,' || $2 || ',%')",
    )
    .bind(tenant.as_str())
    .bind(event_type)
    .fetch_all(&mut **tx)
    .await
    .map_err(store_error)
}

async fn insert_deliveries_to(
    tx: &mut Transaction<'_, Db>,
    webhooks: &[String],
    event_type: &str,
    body: &str,
    at: Timestamp,
) -> Result<(), StoreError> {
    for webhook in webhooks {
        let id = DeliveryId::generate(at).map_err(|e| StoreError::Internal(e.to_string()))?;
        sqlx::query(
            "INSERT INTO webhook_deliveries
                 (id, webhook_id, event_type, body, created_at, status, attempts, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $5)",
        )
        .bind(id.as_str())
        .bind(webhook)
        .bind(event_type)
        .bind(body)
        .bind(at.unix())
        .execute(&mut **tx)
        .await
        .map_err(store_error)?;
    }
    Ok(())
}

/// One page of a list in a scope: `sql` takes the scope's tenant as `$1`, the cursor as `$2`
/// (`$2 IS NULL OR id < $2`) and the limit as `$3`, and has `{ids}` where [`among_ids`] puts the
/// page's ids.
pub(super) async fn scoped_page<T, P>(
    pool: &sqlx::Pool<Db>,
    sql: &'static str,
    scope: &Scope<P>,
    page: &Page,
    map: fn(&DbRow) -> Result<T, StoreError>,
    id: fn(&T) -> String,
) -> Result<Paged<T>, StoreError> {
    let sql = among_ids(sql, "id", 3, page);
    let query = sqlx::query(&sql)
        .bind(scope.tenant_id().as_str())
        .bind(page.cursor.as_deref())
        .bind(i64::from(page.limit) + 1);
    let rows = fetch_among_ids(query, page, pool).await?;
    paged(&rows, page, map, id)
}

/// `sql` with its `{ids}` replaced by ` AND <column> IN ($n, …)`, one parameter per id of the page
/// numbered after the query's `fixed` ones (the caller binds the ids last, in order); by nothing
/// when the page is not among given ids.
pub(super) fn among_ids(sql: &str, column: &str, fixed: usize, page: &Page) -> String {
    let clause = if page.ids.is_empty() {
        String::new()
    } else {
        let parameters: Vec<String> = (1..=page.ids.len())
            .map(|n| format!("${}", fixed + n))
            .collect();
        format!(" AND {column} IN ({})", parameters.join(", "))
    };
    sql.replace("{ids}", &clause)
}

/// The rows of `query` with the page's ids bound last, for the parameters [`among_ids`]
/// numbered.
pub(super) async fn fetch_among_ids<'q>(
    mut query: sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments<'q>>,
    page: &'q Page,
    pool: &sqlx::Pool<Db>,
) -> Result<Vec<DbRow>, StoreError> {
    for id in &page.ids {
        query = query.bind(id.as_str());
    }
    query.fetch_all(pool).await.map_err(store_error)
}

/// Maps the rows of a `LIMIT page.limit + 1` query: the extra row only says there is a next page.
pub(super) fn paged<T>(
    rows: &[DbRow],
    page: &Page,
    map: fn(&DbRow) -> Result<T, StoreError>,
    id: fn(&T) -> String,
) -> Result<Paged<T>, StoreError> {
    let limit = usize::try_from(page.limit).unwrap_or(usize::MAX);
    let mut items = rows
        .iter()
        .take(limit)
        .map(map)
        .collect::<Result<Vec<T>, _>>()?;
    let next_cursor = if rows.len() > limit {
        items.last().map(id)
    } else {
        None
    };
    items.truncate(limit);
    Ok(Paged { items, next_cursor })
}

pub(super) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Internal(e.to_string()))
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Internal(format!("stored JSON: {e}")))
}

pub(super) fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Internal(format!("unexpected stored {what} `{value}`"))
}

pub(super) fn tenant_from_row(row: &DbRow) -> Result<Tenant, StoreError> {
    let slug: String = row.try_get("slug").map_err(store_error)?;
    let status: String = row.try_get("status").map_err(store_error)?;
    Ok(Tenant {
        id: TenantId::from_trusted(row.try_get("id").map_err(store_error)?),
        parent_id: row
            .try_get::<Option<String>, _>("parent_id")
            .map_err(store_error)?
            .map(TenantId::from_trusted),
        name: row.try_get("name").map_err(store_error)?,
        slug: Slug::parse(&slug).map_err(|_| corrupt("slug", &slug))?,
        status: TenantStatus::from_name(&status).ok_or_else(|| corrupt("status", &status))?,
        ip_restriction: IpRestriction {
            enabled: row.try_get("allowlist_enabled").map_err(store_error)?,
            allowlist: IpAllowlist::new(
                optional_json::<Vec<ipnet::IpNet>>(row, "allowlist")?.unwrap_or_default(),
            ),
        },
        path: TenantPath::from_stored(row.try_get("path").map_err(store_error)?),
        created_at: timestamp(row, "created_at")?,
        quota: stored_quota(row)?,
        // Read where the query selected it; a tenant line read for verification does not.
        leak_policy: row
            .try_get::<Option<String>, _>("leak_policy")
            .ok()
            .flatten()
            .and_then(|p| LeakPolicy::parse(&p))
            .unwrap_or_default(),
    })
}

pub(super) fn user_from_row(row: &DbRow) -> Result<User, StoreError> {
    let status: String = row.try_get("status").map_err(store_error)?;
    Ok(User {
        id: UserId::from_trusted(row.try_get("id").map_err(store_error)?),
        tenant_id: TenantId::from_trusted(row.try_get("tenant_id").map_err(store_error)?),
        email: row.try_get("email").map_err(store_error)?,
        name: row.try_get("name").map_err(store_error)?,
        role_id: RoleId::from_trusted(row.try_get("role_id").map_err(store_error)?),
        status: UserStatus::from_name(&status).ok_or_else(|| corrupt("status", &status))?,
        created_at: timestamp(row, "created_at")?,
        last_sign_in_at: optional_timestamp(row, "last_sign_in_at")?,
    })
}

pub(super) fn role_from_row(row: &DbRow) -> Result<Role, StoreError> {
    let permissions: String = row.try_get("permissions").map_err(store_error)?;
    Ok(Role {
        id: RoleId::from_trusted(row.try_get("id").map_err(store_error)?),
        tenant_id: row
            .try_get::<Option<String>, _>("tenant_id")
            .map_err(store_error)?
            .map(TenantId::from_trusted),
        name: row.try_get("name").map_err(store_error)?,
        permissions: from_json(&permissions)?,
        created_at: timestamp(row, "created_at")?,
    })
}

pub(super) fn credential_from_row(row: &DbRow) -> Result<Credential, StoreError> {
    let kind: String = row.try_get("kind").map_err(store_error)?;
    let hash: Vec<u8> = row.try_get("secret_hash").map_err(store_error)?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| StoreError::Internal("stored credential hash is not 32 bytes".into()))?;
    let requests: Option<i64> = row.try_get("rate_limit_requests").map_err(store_error)?;
    let per_seconds: Option<i64> = row.try_get("rate_limit_per_seconds").map_err(store_error)?;
    let rate_limit = match (requests, per_seconds) {
        (Some(requests), Some(per_seconds)) => Some(RateLimit {
            requests: u32::try_from(requests).map_err(|_| corrupt("rate limit", "requests"))?,
            per_seconds: u32::try_from(per_seconds)
                .map_err(|_| corrupt("rate limit", "per_seconds"))?,
        }),
        _ => None,
    };
    Ok(Credential {
        id: CredentialId::from_trusted(row.try_get("id").map_err(store_error)?),
        tenant_id: TenantId::from_trusted(row.try_get("tenant_id").map_err(store_error)?),
        kind: CredentialKind::from_name(&kind).ok_or_else(|| corrupt("kind", &kind))?,
        hash: CredentialHash::from_bytes(hash),
        hint: row.try_get("hint").map_err(store_error)?,
        name: row.try_get("name").map_err(store_error)?,
        description: row.try_get("description").map_err(store_error)?,
        user_id: row
            .try_get::<Option<String>, _>("user_id")
            .map_err(store_error)?
            .map(UserId::from_trusted),
        created_by: row.try_get("created_by").map_err(store_error)?,
        role_id: row
            .try_get::<Option<String>, _>("role_id")
            .map_err(store_error)?
            .map(RoleId::from_trusted),
        permissions: optional_json(row, "permissions")?,
        allowed_ips: optional_json(row, "allowed_ips")?,
        rate_limit,
        created_at: timestamp(row, "created_at")?,
        expires_at: optional_timestamp(row, "expires_at")?,
        revoked_at: optional_timestamp(row, "revoked_at")?,
        // Not every query that reads a credential selects it.
        revoked_reason: row
            .try_get::<Option<String>, _>("revoked_reason")
            .ok()
            .flatten(),
        last_used_at: optional_timestamp(row, "last_used_at")?,
        // Written by keygate alone; an address it cannot read back is forgotten, not an error.
        last_used_ip: row
            .try_get::<Option<String>, _>("last_used_ip")
            .map_err(store_error)?
            .and_then(|ip| ip.parse().ok()),
        rolled_from: row
            .try_get::<Option<String>, _>("rolled_from")
            .map_err(store_error)?
            .map(CredentialId::from_trusted),
        rolled_to: row
            .try_get::<Option<String>, _>("rolled_to")
            .map_err(store_error)?
            .map(CredentialId::from_trusted),
        previous_secret: previous_secret(row)?,
        quota: stored_quota(row)?,
    })
}

/// The quota joined by `with_quota!`: `None` when the row has none, or the query joined none.
pub(super) fn stored_quota(row: &DbRow) -> Result<Option<StoredQuota>, StoreError> {
    let limit = match row.try_get::<Option<i64>, _>("quota_limit") {
        Ok(Some(limit)) => limit,
        Ok(None) | Err(sqlx::Error::ColumnNotFound(_)) => return Ok(None),
        Err(error) => return Err(store_error(error)),
    };
    let period: String = row.try_get("quota_period").map_err(store_error)?;
    let used: i64 = row.try_get("quota_used").map_err(store_error)?;
    Ok(Some(StoredQuota {
        subject: row.try_get("quota_subject").map_err(store_error)?,
        quota: Quota {
            limit: u64::try_from(limit).map_err(|_| corrupt("quota limit", &limit.to_string()))?,
            period: QuotaPeriod::from_name(&period).ok_or_else(|| corrupt("period", &period))?,
            anchor: timestamp(row, "quota_anchor")?,
        },
        window_start: timestamp(row, "quota_window")?,
        used: u64::try_from(used).unwrap_or(0),
    }))
}

/// Writes a new quota on `subject` of `tenant` (a credential just inserted, in the same
/// transaction), or replaces its definition: the count goes on if the period and anchor are as
/// they were, else it starts again.
pub(super) async fn upsert_quota(
    tx: &mut Transaction<'_, Db>,
    tenant: &TenantId,
    quota: &StoredQuota,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO quotas (subject_id, tenant_id, lim, period, anchor, window_start, used)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (subject_id) DO UPDATE SET
           used = CASE WHEN quotas.period = excluded.period AND quotas.anchor = excluded.anchor
                       THEN quotas.used ELSE excluded.used END,
           window_start = CASE WHEN quotas.period = excluded.period
                                AND quotas.anchor = excluded.anchor
                               THEN quotas.window_start ELSE excluded.window_start END,
           notified = CASE WHEN quotas.period = excluded.period AND quotas.anchor = excluded.anchor
                            AND quotas.lim = excluded.lim
                           THEN quotas.notified ELSE 0 END,
           lim = excluded.lim, period = excluded.period, anchor = excluded.anchor",
    )
    .bind(&quota.subject)
    .bind(tenant.as_str())
    .bind(i64::try_from(quota.quota.limit).map_err(|_| StoreError::Internal("limit".into()))?)
    .bind(quota.quota.period.as_str())
    .bind(quota.quota.anchor.unix())
    .bind(quota.window_start.unix())
    .bind(i64::try_from(quota.used).map_err(|_| StoreError::Internal("used".into()))?)
    .execute(&mut **tx)
    .await
    .map(drop)
    .map_err(store_error)
}

/// The secret a client's last roll replaced, while the row still names one.
fn previous_secret(row: &DbRow) -> Result<Option<PreviousSecret>, StoreError> {
    let hash: Option<Vec<u8>> = row.try_get("previous_secret_hash").map_err(store_error)?;
    let (Some(hash), Some(until)) = (hash, optional_timestamp(row, "previous_secret_until")?)
    else {
        return Ok(None);
    };
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| StoreError::Internal("stored previous secret hash is not 32 bytes".into()))?;
    Ok(Some(PreviousSecret {
        hash: CredentialHash::from_bytes(hash),
        until,
    }))
}

pub(super) fn optional_json<T: serde::de::DeserializeOwned>(
    row: &DbRow,
    column: &str,
) -> Result<Option<T>, StoreError> {
    row.try_get::<Option<String>, _>(column)
        .map_err(store_error)?
        .map(|text| from_json(&text))
        .transpose()
}

pub(super) fn timestamp(row: &DbRow, column: &str) -> Result<Timestamp, StoreError> {
    row.try_get::<i64, _>(column)
        .map(Timestamp::from_unix)
        .map_err(store_error)
}

pub(super) fn optional_timestamp(
    row: &DbRow,
    column: &str,
) -> Result<Option<Timestamp>, StoreError> {
    row.try_get::<Option<i64>, _>(column)
        .map(|t| t.map(Timestamp::from_unix))
        .map_err(store_error)
}

/// Locks the tenant's row until the transaction ends (PostgreSQL; SQLite's writes take turns
/// anyway), so that what is counted in it (its account keys, its owners) is counted and changed
/// one request at a time.
pub(super) async fn lock_tenant(
    tx: &mut sqlx::Transaction<'static, Db>,
    tenant: &keygate_core::id::TenantId,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE tenants SET id = id WHERE id = $1")
        .bind(tenant.as_str())
        .execute(&mut **tx)
        .await
        .map(drop)
        .map_err(store_error)
}
