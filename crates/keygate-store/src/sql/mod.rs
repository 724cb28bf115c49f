//! The SQL both backends share, written once and compiled into each: `sqlite.rs` and
//! `postgres.rs` each include this folder as their child module `sql`, after naming their
//! database (`Db`), its rows (`DbRow`) and their store (`SqlStore`). One file per resource
//! implements that resource's storage trait; `shared.rs` holds what several of them use (row
//! mapping, inserts, the audit event, paging).
//!
//! SQLite and PostgreSQL agree on almost all of keygate's SQL: `$n` parameters (sqlx maps them for
//! SQLite too), `substr` and `||` on tenant paths, `coalesce`, `EXISTS`, `ON CONFLICT`. What
//! differs lives in each backend's module: connecting, how a write transaction begins
//! (`begin_write`), how changes reach other nodes (`commit`), how driver errors map to
//! [`StoreError`](keygate_core::store::StoreError) (`store_error`), and how a usage batch's many
//! rows are written (`add_to_buckets`, `set_last_used`).
//!
//! Adding a resource: its file here, and its line in the list below.

/// SQL joining the quota (API.md §13) on `$alias.id`, if it has one, as the columns `quota_*`
/// that `stored_quota` reads: names no table of keygate has, so the rest of a query's columns
/// stay unambiguous. A credential's quota moves with a roll (API.md §14), so a rolled token
/// still in its overlap spends from its successor's.
macro_rules! with_quota {
    (credential $alias:literal) => {
        concat!(
            " LEFT JOIN (SELECT subject_id AS quota_subject, lim AS quota_limit,
                                period AS quota_period, anchor AS quota_anchor,
                                window_start AS quota_window, used AS quota_used
                         FROM quotas) qv ON qv.quota_subject = coalesce(",
            $alias,
            ".rolled_to, ",
            $alias,
            ".id) "
        )
    };
    ($alias:literal) => {
        concat!(
            " LEFT JOIN (SELECT subject_id AS quota_subject, lim AS quota_limit,
                                period AS quota_period, anchor AS quota_anchor,
                                window_start AS quota_window, used AS quota_used
                         FROM quotas) qv ON qv.quota_subject = ",
            $alias,
            ".id "
        )
    };
}

/// SQL saying tenant `$t` is tenant `$s` or below it: its path is in `$s`'s subtree range (see
/// `TenantPath::subtree`), which an index on `path` answers.
macro_rules! in_subtree {
    ($t:literal, $s:literal) => {
        concat!(
            "(",
            $t,
            ".path >= ",
            $s,
            ".path AND ",
            $t,
            ".path < substr(",
            $s,
            ".path, 1, length(",
            $s,
            ".path) - 1) || '0')"
        )
    };
}

/// Appends ` AND <column> IN (…)` with one bind per value, or nothing when there are no values
/// (a filter that was not given).
macro_rules! and_in {
    ($query:expr, $column:expr, $values:expr) => {{
        let values = $values;
        if !values.is_empty() {
            $query.push(format_args!(" AND {} IN (", $column));
            let mut list = $query.separated(", ");
            for value in values {
                list.push_bind(value.as_str());
            }
            $query.push(")");
        }
    }};
}

use super::{Db, DbRow, SHARED_BY_NODES, SqlStore, add_to_buckets, set_last_used, store_error};
use crate::{BucketAddition, usage_hour, usage_key, usage_table};

mod account;
mod audit;
mod keys;
mod lifecycle;
mod oauth;
mod quotas;
mod roles;
mod shared;
mod tenants;
mod tokens;
mod usage;
mod users;
mod verification;
mod webhooks;
