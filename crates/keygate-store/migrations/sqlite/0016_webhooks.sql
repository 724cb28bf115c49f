-- Webhooks and leaked credentials (API.md §15).
--
-- `webhooks`: the endpoints a tenant registers. `events` is `*` or the event types between commas
-- (`,token.created,token.deleted,`), so one LIKE tells whether an endpoint wants a type. The
-- signing secret is kept so deliveries can be signed; `sealing` says how it is sealed (NULL: not
-- sealed, when no `oauth.key_encryption_secret` is configured).
CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,
    description TEXT,
    enabled     INTEGER NOT NULL,
    secret      BLOB NOT NULL,
    sealing     TEXT,
    created_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX webhooks_by_tenant ON webhooks (tenant_id);

-- `webhook_deliveries`: one message owed to one endpoint, written in the same transaction as the
-- change that causes it, so no event is lost between a change and its sending. `body` is the
-- message as signed and sent, the same on every attempt. A node sends a delivery only while its
-- claim (`claimed_by` until `claimed_until`, unix seconds) holds, so one node sends each attempt;
-- a node that dies holding a claim lets it lapse, and another takes the delivery over.
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_type      TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    claimed_by      TEXT,
    claimed_until   INTEGER,
    delivered_at    INTEGER
) STRICT;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id);

-- Each attempt at a delivery: numbered, so two nodes can never both record the same one.
CREATE TABLE webhook_attempts (
    delivery_id   TEXT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    number        INTEGER NOT NULL,
    time          INTEGER NOT NULL,
    status        INTEGER,
    duration_ms   INTEGER NOT NULL,
    error         TEXT,
    response_body TEXT,
    PRIMARY KEY (delivery_id, number)
) STRICT;

-- What a leaked credential of the tenant's does: `revoke` it, or only `notify`.
ALTER TABLE tenants ADD COLUMN leak_policy TEXT NOT NULL DEFAULT 'revoke'
    CHECK (leak_policy IN ('revoke', 'notify'));
-- Why a credential was revoked, when it was not by its owner's hand (`leaked`).
ALTER TABLE credentials ADD COLUMN revoked_reason TEXT;
-- Which `token.expiring` notices a token has had: 0 none, 1 seven days before, 2 one day before.
ALTER TABLE credentials ADD COLUMN expiry_notices INTEGER NOT NULL DEFAULT 0;
CREATE INDEX credentials_expiring ON credentials (expires_at)
    WHERE revoked_at IS NULL AND expires_at IS NOT NULL;
-- What an event's webhook message says beyond ids (a name, a reason, a leak's source URL), as a
-- JSON object; never a secret.
ALTER TABLE audit_events ADD COLUMN detail TEXT;
-- The `quota.threshold` notices sent for a quota's current window: 0 none, 80, or 100 (percent
-- taken). Checked after every take, by whichever node takes, so a notice a dead node did not get
-- to send is sent by the next take; reset when a new window starts.
ALTER TABLE quotas ADD COLUMN notified INTEGER NOT NULL DEFAULT 0;
