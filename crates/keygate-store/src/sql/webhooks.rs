//! Webhooks: endpoints in a scope, the deliveries written with the changes that cause them, the
//! queue nodes claim them from, and leaked credentials handled by their tenant's policy.

use std::collections::HashMap;

use async_trait::async_trait;
use keygate_core::Timestamp;
use keygate_core::access::{Grant, Scope, perm};
use keygate_core::credential::CredentialKind;
use keygate_core::id::{CredentialId, DeliveryId, TenantId, WebhookId};
use keygate_core::model::{Actor, AuditEvent, LeakPolicy, Target};
use keygate_core::store::{
    AttemptOutcome, Change, LeakHandled, LeakReport, Page, Paged, StoreError, WebhookStore,
};
use keygate_core::webhooks::{
    Attempt, CLAIM_SECONDS, ClaimedDelivery, Delivery, DeliveryStatus, EventSelection,
    StoredSecret, Webhook, message_body,
};
use serde_json::{Map, Value};
use sqlx::{QueryBuilder, Row};

use super::shared::{
    among_ids, corrupt, fetch_among_ids, insert_deliveries, insert_event, optional_timestamp,
    paged, timestamp,
};
use super::{Db, DbRow, SHARED_BY_NODES, SqlStore, store_error};

fn webhook_from_row(row: &DbRow) -> Result<Webhook, StoreError> {
    let events: String = row.try_get("events").map_err(store_error)?;
    Ok(Webhook {
        id: WebhookId::from_trusted(row.try_get("id").map_err(store_error)?),
        tenant_id: TenantId::from_trusted(row.try_get("tenant_id").map_err(store_error)?),
        url: row.try_get("url").map_err(store_error)?,
        events: EventSelection::from_column(&events),
        description: row.try_get("description").map_err(store_error)?,
        enabled: row.try_get("enabled").map_err(store_error)?,
        created_at: timestamp(row, "created_at")?,
    })
}

fn delivery_from_row(row: &DbRow) -> Result<Delivery, StoreError> {
    let status: String = row.try_get("status").map_err(store_error)?;
    Ok(Delivery {
        id: DeliveryId::from_trusted(row.try_get("id").map_err(store_error)?),
        webhook_id: WebhookId::from_trusted(row.try_get("webhook_id").map_err(store_error)?),
        event_type: row.try_get("event_type").map_err(store_error)?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        created_at: timestamp(row, "created_at")?,
        next_attempt_at: optional_timestamp(row, "next_attempt_at")?,
        delivered_at: optional_timestamp(row, "delivered_at")?,
        attempts: Vec::new(),
    })
}

fn attempt_from_row(row: &DbRow) -> Result<Attempt, StoreError> {
    let number: i64 = row.try_get("number").map_err(store_error)?;
    let status: Option<i64> = row.try_get("status").map_err(store_error)?;
    let duration: i64 = row.try_get("duration_ms").map_err(store_error)?;
    Ok(Attempt {
        number: u32::try_from(number).map_err(|_| corrupt("attempt", &number.to_string()))?,
        time: timestamp(row, "time")?,
        status: status.and_then(|s| u16::try_from(s).ok()),
        duration_ms: u64::try_from(duration).unwrap_or(0),
        error: row.try_get("error").map_err(store_error)?,
        response_body: row.try_get("response_body").map_err(store_error)?,
    })
}

/// SQL saying webhook `$webhook` (a parameter) belongs to tenant `$tenant`'s subtree: what every
/// change of a webhook or its deliveries is scoped by.
macro_rules! webhook_in_grant {
    ($webhook:literal, $tenant:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM webhooks w, tenants t, tenants s WHERE w.id = ",
            $webhook,
            " AND t.id = w.tenant_id AND s.id = ",
            $tenant,
            " AND ",
            in_subtree!("t", "s"),
            ")"
        )
    };
}

/// `SELECT` of webhooks whose tenant is `$1`'s or below it.
const IN_SCOPE: &str = concat!(
    "SELECT w.* FROM webhooks w, tenants t, tenants s
     WHERE s.id = $1 AND t.id = w.tenant_id AND ",
    in_subtree!("t", "s")
);

/// The deliveries with these ids, newest first, each with its attempts.
async fn deliveries_with_attempts(
    pool: &sqlx::Pool<Db>,
    rows: &[DbRow],
) -> Result<Vec<Delivery>, StoreError> {
    let mut deliveries = rows
        .iter()
        .map(|row| {
            Ok((
                delivery_from_row(row)?,
                row.try_get::<i64, _>("attempts").map_err(store_error)?,
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    let mut query =
        QueryBuilder::<Db>::new("SELECT * FROM webhook_attempts WHERE delivery_id IN (");
    let mut list = query.separated(", ");
    for (delivery, _) in &deliveries {
        list.push_bind(delivery.id.as_str().to_owned());
    }
    query.push(") ORDER BY delivery_id, number");
    let attempts = query.build().fetch_all(pool).await.map_err(store_error)?;
    for row in &attempts {
        let delivery: String = row.try_get("delivery_id").map_err(store_error)?;
        let number: i64 = row.try_get("number").map_err(store_error)?;
        // The delivery row and its attempts are two reads: an attempt recorded between them is
        // left out, so the status, the schedule and the attempts shown always agree.
        if let Some((d, _)) = deliveries
            .iter_mut()
            .find(|(d, counted)| d.id.as_str() == delivery && number <= *counted)
        {
            d.attempts.push(attempt_from_row(row)?);
        }
    }
    Ok(deliveries.into_iter().map(|(d, _)| d).collect())
}

/// The webhook name of a credential kind, for `credential.leaked`'s target.
fn leaked_object(kind: CredentialKind) -> &'static str {
    match kind {
        CredentialKind::Personal | CredentialKind::Service => "token",
        CredentialKind::AccountKey => "account_key",
        CredentialKind::OauthSecret => "oauth_client",
        CredentialKind::Refresh => "refresh_token",
        CredentialKind::Session => "session",
        CredentialKind::AccessToken => "access_token",
    }
}

#[async_trait]
impl WebhookStore for SqlStore {
    async fn create_webhook(
        &self,
        grant: &Grant<perm::WebhooksWrite>,
        webhook: &Webhook,
        secret: &StoredSecret,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        if webhook.tenant_id != *grant.tenant_id() {
            return Err(StoreError::Internal(
                "a webhook outside the grant's tenant".into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO webhooks
                 (id, tenant_id, url, events, description, enabled, secret, sealing, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(webhook.id.as_str())
        .bind(webhook.tenant_id.as_str())
        .bind(&webhook.url)
        .bind(webhook.events.to_column())
        .bind(&webhook.description)
        .bind(webhook.enabled)
        .bind(secret.bytes.as_slice())
        .bind(&secret.sealing)
        .bind(webhook.created_at.unix())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        insert_event(&mut tx, event).await?;
        self.commit(tx, &[]).await
    }

    async fn list_webhooks(
        &self,
        scope: &Scope<perm::WebhooksRead>,
        page: &Page,
    ) -> Result<Paged<Webhook>, StoreError> {
        let sql = among_ids(
            &format!("{IN_SCOPE} AND ($2 IS NULL OR w.id < $2){{ids}} ORDER BY w.id DESC LIMIT $3"),
            "w.id",
            3,
            page,
        );
        let query = sqlx::query(&sql)
            .bind(scope.tenant_id().as_str())
            .bind(page.cursor.as_deref())
            .bind(i64::from(page.limit) + 1);
        let rows = fetch_among_ids(query, page, &self.pool).await?;
        paged(&rows, page, webhook_from_row, |w| w.id.to_string())
    }

    async fn get_webhook(
        &self,
        scope: &Scope<perm::WebhooksRead>,
        id: &WebhookId,
    ) -> Result<Option<Webhook>, StoreError> {
        sqlx::query(&format!("{IN_SCOPE} AND w.id = $2"))
            .bind(scope.tenant_id().as_str())
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)?
            .map(|row| webhook_from_row(&row))
            .transpose()
    }

    async fn update_webhook(
        &self,
        grant: &Grant<perm::WebhooksWrite>,
        webhook: &Webhook,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(concat!(
            "UPDATE webhooks SET url = $1, events = $2, enabled = $3, description = $4
             WHERE id = $5 AND ",
            webhook_in_grant!("$5", "$6")
        ))
        .bind(&webhook.url)
        .bind(webhook.events.to_column())
        .bind(webhook.enabled)
        .bind(&webhook.description)
        .bind(webhook.id.as_str())
        .bind(grant.tenant_id().as_str())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        if updated == 0 {
            return Ok(None);
        }
        insert_event(&mut tx, event).await?;
        self.commit(tx, &[]).await?;
        Ok(Some(()))
    }

    async fn delete_webhook(
        &self,
        grant: &Grant<perm::WebhooksWrite>,
        id: &WebhookId,
        event: &AuditEvent,
    ) -> Result<Option<()>, StoreError> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query(concat!(
            "DELETE FROM webhooks WHERE id = $1 AND ",
            webhook_in_grant!("$1", "$2")
        ))
        .bind(id.as_str())
        .bind(grant.tenant_id().as_str())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        if deleted == 0 {
            return Ok(None);
        }
        insert_event(&mut tx, event).await?;
        self.commit(tx, &[]).await?;
        Ok(Some(()))
    }

    async fn list_deliveries(
        &self,
        scope: &Scope<perm::WebhooksRead>,
        webhook: &WebhookId,
        page: &Page,
    ) -> Result<Option<Paged<Delivery>>, StoreError> {
        if self.get_webhook(scope, webhook).await?.is_none() {
            return Ok(None);
        }
        let sql = among_ids(
            "SELECT * FROM webhook_deliveries WHERE webhook_id = $1 AND ($2 IS NULL OR id < $2){ids}
             ORDER BY id DESC LIMIT $3",
            "id",
            3,
            page,
        );
        let query = sqlx::query(&sql)
            .bind(webhook.as_str())
            .bind(page.cursor.as_deref())
            .bind(i64::from(page.limit) + 1);
        let rows = fetch_among_ids(query, page, &self.pool).await?;
        let more = rows.len() > page.limit as usize;
        let shown = &rows[..rows.len().min(page.limit as usize)];
        let items = deliveries_with_attempts(&self.pool, shown).await?;
        let next_cursor = more
            .then(|| items.last().map(|d| d.id.to_string()))
            .flatten();
        Ok(Some(Paged { items, next_cursor }))
    }

    async fn retry_delivery(
        &self,
        grant: &Grant<perm::WebhooksWrite>,
        webhook: &WebhookId,
        delivery: &DeliveryId,
        event: &AuditEvent,
    ) -> Result<Option<Delivery>, StoreError> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(concat!(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1
             WHERE id = $2 AND webhook_id = $3 AND ",
            webhook_in_grant!("$3", "$4")
        ))
        .bind(event.time.unix())
        .bind(delivery.as_str())
        .bind(webhook.as_str())
        .bind(grant.tenant_id().as_str())
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        if updated == 0 {
            return Ok(None);
        }
        insert_event(&mut tx, event).await?;
        self.commit(tx, &[]).await?;
        let row = sqlx::query("SELECT * FROM webhook_deliveries WHERE id = $1")
            .bind(delivery.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(store_error)?;
        Ok(deliveries_with_attempts(&self.pool, &row).await?.pop())
    }

    async fn publish(
        &self,
        tenant: &TenantId,
        event_type: &str,
        body: &str,
        at: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let written = insert_deliveries(&mut tx, tenant, event_type, body, at).await?;
        self.commit(tx, &[]).await?;
        Ok(written)
    }

    async fn claim_deliveries(
        &self,
        claimer: &str,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        // The outer conditions repeat the inner ones: on PostgreSQL, a row another claimer took
        // between the two is checked again once its lock is free, and left to that claimer.
        let lock = if SHARED_BY_NODES {
            " FOR UPDATE OF d SKIP LOCKED"
        } else {
            ""
        };
        // A read first: most polls find nothing due, and need no write lock to say so.
        let due: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM webhook_deliveries d, webhooks w
                            WHERE w.id = d.webhook_id AND w.enabled = TRUE
                              AND d.status = 'pending' AND d.next_attempt_at <= $1
                              AND (d.claimed_until IS NULL OR d.claimed_until <= $1))",
        )
        .bind(now.unix())
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)?;
        if !due {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query(&format!(
            "UPDATE webhook_deliveries SET claimed_by = $1, claimed_until = $2
             WHERE id IN (SELECT d.id FROM webhook_deliveries d, webhooks w
                          WHERE w.id = d.webhook_id AND w.enabled = TRUE
                            AND d.status = 'pending' AND d.next_attempt_at <= $3
                            AND (d.claimed_until IS NULL OR d.claimed_until <= $3)
                          ORDER BY d.next_attempt_at LIMIT $4{lock})
               AND status = 'pending' AND (claimed_until IS NULL OR claimed_until <= $3)
             RETURNING id, webhook_id, body, attempts, created_at"
        ))
        .bind(claimer)
        .bind(now.unix().saturating_add_unsigned(CLAIM_SECONDS))
        .bind(now.unix())
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(store_error)?;
        let mut deliveries = Vec::with_capacity(claimed.len());
        // A batch is mostly for a few webhooks: each is read once.
        let mut endpoints: HashMap<String, (String, StoredSecret)> = HashMap::new();
        for row in &claimed {
            let webhook: String = row.try_get("webhook_id").map_err(store_error)?;
            let (url, secret) = match endpoints.get(&webhook) {
                Some(known) => known.clone(),
                None => {
                    let endpoint =
                        sqlx::query("SELECT url, secret, sealing FROM webhooks WHERE id = $1")
                            .bind(&webhook)
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(store_error)?;
                    let read: (String, StoredSecret) = (
                        endpoint.try_get("url").map_err(store_error)?,
                        StoredSecret {
                            bytes: endpoint.try_get("secret").map_err(store_error)?,
                            sealing: endpoint.try_get("sealing").map_err(store_error)?,
                        },
                    );
                    endpoints.insert(webhook.clone(), read.clone());
                    read
                }
            };
            let attempts: i64 = row.try_get("attempts").map_err(store_error)?;
            deliveries.push(ClaimedDelivery {
                id: DeliveryId::from_trusted(row.try_get("id").map_err(store_error)?),
                webhook_id: WebhookId::from_trusted(webhook),
                url,
                secret,
                body: row.try_get("body").map_err(store_error)?,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                created_at: timestamp(row, "created_at")?,
            });
        }
        tx.commit().await.map_err(store_error)?;
        Ok(deliveries)
    }

    async fn record_attempt(
        &self,
        claimer: &str,
        delivery: &DeliveryId,
        attempt: &Attempt,
        outcome: AttemptOutcome,
    ) -> Result<bool, StoreError> {
        let (status, next, delivered_at) = match outcome {
            AttemptOutcome::Delivered => ("delivered", None, Some(attempt.time.unix())),
            AttemptOutcome::RetryAt(at) => ("pending", Some(at.unix()), None),
            AttemptOutcome::Failed => ("failed", None, None),
        };
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE webhook_deliveries
             SET attempts = $1, status = $2, next_attempt_at = $3, delivered_at = $4,
                 claimed_by = NULL, claimed_until = NULL
             WHERE id = $5 AND claimed_by = $6 AND attempts = $7",
        )
        .bind(i64::from(attempt.number))
        .bind(status)
        .bind(next)
        .bind(delivered_at)
        .bind(delivery.as_str())
        .bind(claimer)
        .bind(i64::from(attempt.number) - 1)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?
        .rows_affected();
        if updated == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_attempts
                 (delivery_id, number, time, status, duration_ms, error, response_body)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(delivery.as_str())
        .bind(i64::from(attempt.number))
        .bind(attempt.time.unix())
        .bind(attempt.status.map(i64::from))
        .bind(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX))
        .bind(&attempt.error)
        .bind(&attempt.response_body)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        Ok(true)
    }

    async fn notice_expiring_tokens(&self, now: Timestamp) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut noticed = 0;
        // The one-day notice first: a token that expires within a day is told once, not twice.
        for (level, days) in [(2_i64, 1_i64), (1, 7)] {
            let rows = sqlx::query(
                "UPDATE credentials SET expiry_notices = $1
                 WHERE id IN (SELECT id FROM credentials
                              WHERE kind IN ('personal', 'service') AND revoked_at IS NULL
                                AND rolled_to IS NULL AND expires_at IS NOT NULL
                                AND expires_at > $2 AND expires_at <= $3
                                AND expiry_notices < $1
                              ORDER BY expires_at LIMIT 500)
                 RETURNING id, tenant_id, name, expires_at",
            )
            .bind(level)
            .bind(now.unix())
            .bind(now.unix() + days * 86_400)
            .fetch_all(&mut *tx)
            .await
            .map_err(store_error)?;
            for row in &rows {
                let tenant = TenantId::from_trusted(row.try_get("tenant_id").map_err(store_error)?);
                let id: String = row.try_get("id").map_err(store_error)?;
                let name: String = row.try_get("name").map_err(store_error)?;
                let expires_at = timestamp(row, "expires_at")?;
                // The days it has left, a part counted whole: a token made two days from its
                // end is told of two days at the seven-day notice, not of seven.
                let left = (expires_at.unix() - now.unix() + 86_399) / 86_400;
                let mut data = Map::new();
                data.insert("tenant_id".into(), tenant.as_str().into());
                data.insert("object".into(), "token".into());
                data.insert("id".into(), id.into());
                data.insert("name".into(), name.into());
                data.insert("expires_at".into(), expires_at.to_string().into());
                data.insert("days_left".into(), Value::from(left.clamp(1, days)));
                let body = message_body("token.expiring", now, data);
                insert_deliveries(&mut tx, &tenant, "token.expiring", &body, now).await?;
                noticed += 1;
            }
        }
        tx.commit().await.map_err(store_error)?;
        Ok(noticed)
    }

    async fn report_leak(&self, report: &LeakReport<'_>) -> Result<LeakHandled, StoreError> {
        // Most reported strings are no credential of ours (anyone may post them): a read says so
        // without taking a write lock.
        let known: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM credentials
                            WHERE secret_hash = $1 OR previous_secret_hash = $1)",
        )
        .bind(report.hash.as_bytes().as_slice())
        .fetch_one(&self.pool)
        .await
        .map_err(store_error)?;
        if !known {
            return Ok(LeakHandled::Unknown);
        }
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query(
            "SELECT c.id, c.kind, c.tenant_id, c.name, c.revoked_at, c.expires_at,
                    c.secret_hash = $1 AS current, t.leak_policy
             FROM credentials c, tenants t
             WHERE t.id = c.tenant_id AND (c.secret_hash = $1
                   OR (c.previous_secret_hash = $1 AND c.previous_secret_until > $2))",
        )
        .bind(report.hash.as_bytes().as_slice())
        .bind(report.at.unix())
        .fetch_optional(&mut *tx)
        .await
        .map_err(store_error)?
        else {
            return Ok(LeakHandled::Unknown);
        };
        let kind_name: String = row.try_get("kind").map_err(store_error)?;
        let kind =
            CredentialKind::from_name(&kind_name).ok_or_else(|| corrupt("kind", &kind_name))?;
        let id = CredentialId::from_trusted(row.try_get("id").map_err(store_error)?);
        let tenant = TenantId::from_trusted(row.try_get("tenant_id").map_err(store_error)?);
        let name: String = row.try_get("name").map_err(store_error)?;
        let current: bool = row.try_get("current").map_err(store_error)?;
        let policy: String = row.try_get("leak_policy").map_err(store_error)?;
        let policy = LeakPolicy::parse(&policy).ok_or_else(|| corrupt("leak_policy", &policy))?;
        let dead = optional_timestamp(&row, "revoked_at")?.is_some()
            || optional_timestamp(&row, "expires_at")?.is_some_and(|at| at <= report.at);
        if dead {
            return Ok(LeakHandled::AlreadyDead { id, kind });
        }
        let handled = match policy {
            LeakPolicy::Notify => LeakHandled::Notified {
                id: id.clone(),
                kind,
            },
            LeakPolicy::Revoke => {
                // A client's previous secret ends its overlap; anything else is revoked whole.
                let query = if current {
                    sqlx::query(
                        "UPDATE credentials SET revoked_at = $1, revoked_reason = 'leaked'
                         WHERE id = $2 AND revoked_at IS NULL",
                    )
                    .bind(report.at.unix())
                } else {
                    sqlx::query(
                        "UPDATE credentials SET previous_secret_hash = NULL,
                             previous_secret_until = NULL
                         WHERE id = $1",
                    )
                };
                query
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(store_error)?;
                LeakHandled::Revoked {
                    id: id.clone(),
                    kind,
                }
            }
        };
        let mut event = AuditEvent::new(
            tenant,
            Actor {
                kind: "system",
                id: report.source.to_owned(),
            },
            None,
            "credential.leaked",
            Some(Target {
                kind: leaked_object(kind),
                id: id.to_string(),
            }),
            report.at,
            report.meta,
        )
        .map_err(|e| StoreError::Internal(e.to_string()))?
        .with_status(report.status)
        .with_detail("name", name)
        .with_detail("credential_type", kind.as_str())
        .with_detail("source", report.source)
        .with_detail("reason", "leaked")
        .with_detail(
            "action",
            match handled {
                LeakHandled::Revoked { .. } => "revoked",
                _ => "notified",
            },
        );
        if let Some(url) = report.url {
            event = event.with_detail("url", url);
        }
        insert_event(&mut tx, &event).await?;
        self.commit(tx, &[Change::Credential(id)]).await?;
        Ok(handled)
    }

    async fn prune_deliveries(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError> {
        sqlx::query(
            "DELETE FROM webhook_deliveries WHERE id IN
                 (SELECT id FROM webhook_deliveries
                  WHERE status <> 'pending' AND created_at < $1 ORDER BY created_at LIMIT $2)",
        )
        .bind(before.unix())
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map(|done| done.rows_affected())
        .map_err(store_error)
    }
}
