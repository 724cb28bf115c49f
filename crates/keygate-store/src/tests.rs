//! Store tests, run against every backend this build can reach.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keygate_core::access::{Caller, Grant, Scope, perm};
use keygate_core::bootstrap;
use keygate_core::cache::CredentialCache;
use keygate_core::credential::{
    CredentialFormat, CredentialHash, CredentialKind, Environment, Secret,
};
use keygate_core::gate::{Gate, Presented, Request as GateRequest};
use keygate_core::id::{CredentialId, RoleId, TenantId, UserId};
use keygate_core::jwt::SigningAlgorithm;
use keygate_core::model::{AuditEvent, Outcome, Role, Tenant, User, UserStatus};
use keygate_core::oauth::{AuthenticatedClient, Lifetimes, RefreshToken, Rotation};
use keygate_core::permission::{BuiltinRole, Catalog};
use keygate_core::store::{
    Change, ChangeListener, CredentialRecord, Deletion, Granularity, KeyDeletion, LastUse, Page,
    StoreError, Taken, TokenFilter, UsageBucket, UsageCount, UsageFilter, UsageOutcome,
};
use keygate_core::verify::Verifier;
use keygate_core::{ManualClock, Timestamp, access::RequestMeta};

use crate::{Backend, StoreOptions, open};

#[derive(Default)]
struct Recorder(Mutex<Vec<Change>>);

impl ChangeListener for Recorder {
    fn changed(&self, change: &Change) {
        self.0.lock().unwrap().push(change.clone());
    }
}

const NOW: Timestamp = Timestamp::from_unix(1_800_000_000);

/// A fresh, empty database on one backend.
struct TestDb {
    url: String,
    dir: Option<tempfile::TempDir>,
}

impl TestDb {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            url: format!("sqlite://{}/nested/keygate.db", dir.path().display()),
            dir: Some(dir),
        }
    }

    async fn postgres() -> Self {
        Self {
            url: keygate_testkit::PgCluster::shared().create_database().await,
            dir: None,
        }
    }

    fn url(&self) -> String {
        self.url.clone()
    }

    fn dir(&self) -> &std::path::Path {
        self.dir.as_ref().unwrap().path()
    }

    /// The store as the server holds it: a `Store`, and the verifier's `CredentialSource`.
    async fn open(&self, recorder: Arc<Recorder>) -> Arc<dyn Backend> {
        open(&self.url(), &StoreOptions::default(), recorder)
            .await
            .unwrap()
    }
}

/// Runs each named test once per backend: `name::sqlite` and `name::postgres`. Where PostgreSQL
/// is not installed the `postgres` variants say so and pass, except under CI, where they fail.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn sqlite() {
                    super::$test(super::TestDb::sqlite()).await
                }

                #[tokio::test]
                async fn postgres() {
                    if keygate_testkit::postgres_or_skip() {
                        super::$test(super::TestDb::postgres().await).await
                    }
                }
            }
        )*
    };
}

on_every_backend!(
    nodes_opening_a_new_store_at_once_all_open_it,
    bootstrap_is_all_or_nothing_and_only_once,
    credentials_are_read_together_by_current_or_previous_secret,
    revocation_is_scoped_to_the_grant_and_announced_after_commit,
    a_revocation_of_more_ids_than_a_statement_binds_is_split,
    roles_in_use_cannot_be_deleted_and_changes_are_announced,
    deleting_a_user_takes_their_personal_tokens_but_not_service_tokens_they_made,
    a_console_form_is_noted_once_per_session_and_goes_with_it,
    last_use_only_moves_forward,
    quota_takes_shrink_to_what_is_left_and_a_new_window_starts_at_zero,
    quota_takes_from_two_nodes_at_once_never_pass_the_limit,
    quotas_are_set_where_the_grant_reaches_and_read_with_what_they_limit,
    rate_limits_are_shared_schedules_made_by_their_first_take,
    every_change_writes_its_event_with_the_acting_credential,
    data_survives_reopening,
    two_keys_at_most_even_when_created_at_once,
    two_keys_deleting_each_other_at_once_leave_one,
    an_account_key_is_found_by_its_secret_in_its_own_tenant_only,
    the_ip_restriction_is_stored_and_announced,
    tenants_are_scoped_to_their_subtree,
    clients_are_scoped_and_take_their_tokens_with_them,
    a_refresh_token_is_spent_once_and_reuse_burns_its_family,
    a_refresh_token_is_found_by_its_own_client_and_within_its_tenant_only,
    access_token_revocations_are_remembered_and_announced,
    signing_keys_rotate_one_generation_at_a_time,
    signing_keys_of_every_algorithm_are_kept_as_given,
    eddsa_keys_made_before_0006_are_kept_by_it,
    built_in_roles_are_as_old_as_the_first_tenant,
    usage_from_several_nodes_sums_into_minutes_hours_and_days,
    usage_reads_group_filter_and_bound_buckets,
    usage_is_read_in_the_scope_and_below_only,
    pruning_usage_deletes_the_oldest_buckets_at_most_a_limit_at_a_time,
    rolling_up_goes_a_credentials_hour_at_a_time_and_reads_stay_exact,
    usage_stored_before_the_roll_up_is_not_counted_twice,
    deleting_a_tenant_takes_its_usage,
    a_batch_of_usage_is_added_whole_or_not_at_all,
);

/// PostgreSQL keeps a fifth of each credentials page free (migration 0017), so that the usage
/// batch's last-use updates, which touch no indexed column, stay on the row's page (heap-only)
/// instead of adding an entry to each of the table's indexes.
#[tokio::test]
async fn postgres_credentials_pages_leave_room_for_last_uses() {
    if !keygate_testkit::postgres_or_skip() {
        return;
    }
    let db = TestDb::postgres().await;
    let _store = db.open(Arc::default()).await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let options: Option<Vec<String>> =
        sqlx::query_scalar("SELECT reloptions FROM pg_class WHERE relname = 'credentials'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(options, Some(vec!["fillfactor=80".to_owned()]));
    pool.close().await;
}

/// A credential read alone and its context read apart (what a cache miss reads when the verifier
/// keeps the context, or does not) are the credential as one whole read gives it.
async fn read_apart_as_whole(store: &dyn Backend, hash: &CredentialHash) {
    let whole = store.find_credential(hash).await.unwrap().unwrap();
    let mut alone = store.find_credentials_alone(&[*hash]).await.unwrap();
    assert_eq!(alone.len(), 1);
    let alone = alone.remove(0);
    let context = store.find_context(&alone).await.unwrap().unwrap();
    assert_eq!(
        format!("{:?}", CredentialRecord::in_context(alone, &context)),
        format!("{whole:?}")
    );
    assert!(
        store
            .find_credentials_alone(&[CredentialHash::of("kg_live_nothing")])
            .await
            .unwrap()
            .is_empty()
    );
}

fn format() -> CredentialFormat {
    CredentialFormat::new("kg", Environment::Live).unwrap()
}

async fn bootstrap_is_all_or_nothing_and_only_once(db: TestDb) {
    let store = db.open(Arc::default()).await;
    assert!(!store.is_initialized().await.unwrap());
    let (plan, secrets) = bootstrap::plan(&format(), "owner@example.com", NOW).unwrap();
    store.bootstrap(&plan).await.unwrap();
    assert!(store.is_initialized().await.unwrap());

    let (again, _) = bootstrap::plan(&format(), "other@example.com", NOW).unwrap();
    assert!(matches!(
        store.bootstrap(&again).await,
        Err(StoreError::AlreadyInitialized)
    ));
    assert!(
        store
            .find_credential(&again.token.hash)
            .await
            .unwrap()
            .is_none()
    );

    let record = store
        .find_credential(&secrets.token.hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.credential.id, plan.token.id);
    assert_eq!(record.tenant.slug.as_str(), "root");
    assert!(record.ancestors.is_empty());
    assert_eq!(record.role.unwrap().name, "owner");
    assert!(record.user.is_none());
    read_apart_as_whole(&*store, &secrets.token.hash()).await;
    assert!(
        store
            .find_credential(&CredentialHash::of("kg_live_nothing"))
            .await
            .unwrap()
            .is_none()
    );
}

async fn data_survives_reopening(db: TestDb) {
    let store = db.open(Arc::default()).await;
    let (plan, secrets) = bootstrap::plan(&format(), "owner@example.com", NOW).unwrap();
    store.bootstrap(&plan).await.unwrap();
    store.close().await;
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    let reopened = db.open(Arc::default()).await;
    assert!(reopened.is_initialized().await.unwrap());
    let record = reopened
        .find_credential(&secrets.token.hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.credential.id, plan.token.id);
}

#[tokio::test]
async fn secrets_never_reach_the_sqlite_file() {
    let db = TestDb::sqlite();
    let store = db.open(Arc::default()).await;
    let (plan, secrets) = bootstrap::plan(&format(), "owner@example.com", NOW).unwrap();
    store.bootstrap(&plan).await.unwrap();
    store.close().await;

    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(db.dir().join("nested")).unwrap() {
        // SQLite may still be removing its -wal and -shm files as the last connection closes:
        // one gone between the listing and the read held nothing of interest any more.
        match std::fs::read(entry.unwrap().path()) {
            Ok(read) => bytes.extend(read),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => panic!("{error}"),
        }
    }
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        contains("owner@example.com"),
        "the check reads the real data"
    );
    assert!(!contains(secrets.token.expose()));
    assert!(!contains(&secrets.password));
}

/// A store with the bootstrap applied, and a caller acting as its owner token, admitted as a
/// request would be: core alone makes callers and authenticated clients.
struct Owned {
    store: Arc<dyn Backend>,
    recorder: Arc<Recorder>,
    caller: Caller,
    plan: keygate_core::store::Bootstrap,
    gate: Gate,
    /// The secrets of the clients [`client`] made, by hash: the token endpoint authenticates a
    /// client by its secret's text, and the tests name clients by hash.
    client_secrets: Mutex<HashMap<CredentialHash, Secret>>,
    _db: TestDb,
}

async fn owned(db: TestDb) -> Owned {
    let recorder = Arc::new(Recorder::default());
    let store = db.open(recorder.clone()).await;
    let (plan, secrets) = bootstrap::plan(&format(), "owner@example.com", NOW).unwrap();
    store.bootstrap(&plan).await.unwrap();
    let verifier = Verifier::new(
        format(),
        Arc::new(Catalog::new::<&str>(&[]).unwrap()),
        store.clone(),
        Arc::new(CredentialCache::new()),
        Arc::new(ManualClock::new(NOW)),
    );
    let gate = Gate::new(verifier, store.clone(), None);
    let caller = admitted(&gate, secrets.token.expose()).await;
    Owned {
        store,
        recorder,
        caller,
        plan,
        gate,
        client_secrets: Mutex::default(),
        _db: db,
    }
}

/// The caller `secret` makes, admitted by the gate as a request would be.
async fn admitted(gate: &Gate, secret: &str) -> Caller {
    let presented = Presented {
        credential: secret,
        basic_username: None,
        realm: None,
        as_tenant: None,
    };
    let request = GateRequest {
        client: None,
        required: &[],
        within: None,
        now_millis: NOW.unix() * 1000,
        counted: true,
        cost: None,
    };
    gate.admit(presented, request).await.unwrap().caller
}

fn event<P: perm::Required>(grant: &Grant<P>, action: &'static str) -> AuditEvent {
    grant
        .event(action, None, NOW, &RequestMeta::default())
        .unwrap()
}

fn changes(recorder: &Recorder) -> Vec<Change> {
    std::mem::take(&mut *recorder.0.lock().unwrap())
}

async fn revocation_is_scoped_to_the_grant_and_announced_after_commit(db: TestDb) {
    let o = owned(db).await;
    let grant = o.caller.require::<perm::TokensWrite>().unwrap();
    let e = event(&grant, "token.delete");
    let id = o.plan.token.id.clone();
    let unknown = CredentialId::generate_for(CredentialKind::Service, NOW).unwrap();

    let revoked = o
        .store
        .revoke_tokens(&grant, &[unknown, id.clone()], NOW, &[e.clone(), e.clone()])
        .await
        .unwrap();
    assert_eq!(revoked, std::slice::from_ref(&id));
    assert_eq!(changes(&o.recorder), [Change::Credential(id.clone())]);
    let stored = o
        .store
        .get_token(&grant.reads(), &id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.revoked_at, Some(NOW));
    // Revoking twice changes nothing and announces nothing.
    let again = o
        .store
        .revoke_tokens(&grant, &[id], NOW, &[e])
        .await
        .unwrap();
    assert!(again.is_empty());
    assert!(changes(&o.recorder).is_empty());
}

/// SQLite binds at most 32 766 values in a statement: a revocation names its ids over several
/// (and one named twice, in two of them, is revoked once).
async fn a_revocation_of_more_ids_than_a_statement_binds_is_split(db: TestDb) {
    let o = owned(db).await;
    let grant = o.caller.require::<perm::TokensWrite>().unwrap();
    let mut ids: Vec<CredentialId> = (0..40_000)
        .map(|_| CredentialId::generate_for(CredentialKind::Service, NOW).unwrap())
        .collect();
    ids[35_000] = o.plan.token.id.clone();
    ids[39_999] = o.plan.token.id.clone();
    let events = vec![event(&grant, "token.delete"); ids.len()];
    let revoked = o
        .store
        .revoke_tokens(&grant, &ids, NOW, &events)
        .await
        .unwrap();
    assert_eq!(revoked, std::slice::from_ref(&o.plan.token.id));
    assert_eq!(
        changes(&o.recorder),
        [Change::Credential(o.plan.token.id.clone())]
    );
}

async fn roles_in_use_cannot_be_deleted_and_changes_are_announced(db: TestDb) {
    let o = owned(db).await;
    let roles = o.caller.require::<perm::RolesWrite>().unwrap();
    let role = Role {
        id: RoleId::generate(NOW).unwrap(),
        tenant_id: Some(roles.tenant_id().clone()),
        name: "deployer".into(),
        permissions: vec!["tokens:*".into()],
        created_at: NOW,
    };
    o.store
        .create_role(&roles, &role, &event(&roles, "role.create"))
        .await
        .unwrap();
    let duplicate = Role {
        id: RoleId::generate(NOW).unwrap(),
        ..role.clone()
    };
    assert!(matches!(
        o.store
            .create_role(&roles, &duplicate, &event(&roles, "role.create"))
            .await,
        Err(StoreError::AlreadyExists("name"))
    ));
    let listed = o.store.list_roles(&roles.reads(), &page(50)).await.unwrap();
    assert_eq!(listed.items.len(), 5, "four built-ins and the custom role");

    let users = o.caller.require::<perm::UsersWrite>().unwrap();
    let user = User {
        id: UserId::generate(NOW).unwrap(),
        tenant_id: users.tenant_id().clone(),
        email: "Ada@Example.com".into(),
        name: "Ada".into(),
        role_id: role.id.clone(),
        status: UserStatus::Active,
        created_at: NOW,
        last_sign_in_at: None,
    };
    let hash = keygate_core::password::hash("correct horse battery").unwrap();
    o.store
        .create_user(&users, &user, &hash, &event(&users, "user.create"))
        .await
        .unwrap();
    let twin = User {
        id: UserId::generate(NOW).unwrap(),
        email: "ada@example.COM".into(),
        ..user.clone()
    };
    assert!(matches!(
        o.store
            .create_user(&users, &twin, &hash, &event(&users, "user.create"))
            .await,
        Err(StoreError::AlreadyExists("email"))
    ));
    let logins = o
        .store
        .find_logins("ADA@example.com", None, 8)
        .await
        .unwrap();
    assert_eq!(logins.len(), 1);
    assert_eq!(logins[0].user.id, user.id);
    assert_eq!(logins[0].organization, "root");
    assert!(logins[0].tenant_active);

    // The same address in another tenant is another account, not a conflict.
    let (child, _) = chain(&o, 1).await;
    let child_users = o
        .caller
        .clone()
        .acting_for(keygate_core::verified::TenantSummary::from(&child))
        .unwrap();
    let child_users = child_users.require::<perm::UsersWrite>().unwrap();
    let elsewhere = User {
        id: UserId::generate(NOW).unwrap(),
        tenant_id: child.id.clone(),
        role_id: BuiltinRole::Viewer.id(),
        created_at: NOW.saturating_add(std::time::Duration::from_secs(1)),
        ..twin.clone()
    };
    o.store
        .create_user(
            &child_users,
            &elsewhere,
            &hash,
            &event(&child_users, "user.create"),
        )
        .await
        .unwrap();
    let both = o
        .store
        .find_logins("ada@example.com", None, 8)
        .await
        .unwrap();
    assert_eq!(
        both.iter().map(|l| l.user.id.clone()).collect::<Vec<_>>(),
        [user.id.clone(), elsewhere.id.clone()]
    );
    let named = o
        .store
        .find_logins("ada@example.com", Some(child.slug.as_str()), 8)
        .await
        .unwrap();
    assert_eq!(named.len(), 1);
    assert_eq!(named[0].user.id, elsewhere.id);
    assert_eq!(
        o.store
            .find_logins("ada@example.com", None, 1)
            .await
            .unwrap()
            .len(),
        1
    );

    assert_eq!(
        o.store
            .delete_role(&roles, &role.id, &event(&roles, "role.delete"))
            .await
            .unwrap(),
        Deletion::InUse
    );
    let mut replaced = role.clone();
    replaced.permissions = vec!["tokens:read".into()];
    changes(&o.recorder);
    assert_eq!(
        o.store
            .replace_role(&roles, &replaced, &event(&roles, "role.update"))
            .await
            .unwrap(),
        Some(())
    );
    assert_eq!(changes(&o.recorder), [Change::Role(role.id.clone())]);

    let mut moved = user.clone();
    moved.role_id = BuiltinRole::Viewer.id();
    o.store
        .update_user(&users, &moved, None, &event(&users, "user.update"))
        .await
        .unwrap();
    assert_eq!(changes(&o.recorder), [Change::User(user.id.clone())]);
    assert_eq!(
        o.store
            .delete_role(&roles, &role.id, &event(&roles, "role.delete"))
            .await
            .unwrap(),
        Deletion::Deleted
    );
    assert_eq!(
        o.store
            .delete_role(
                &roles,
                &BuiltinRole::Owner.id(),
                &event(&roles, "role.delete")
            )
            .await
            .unwrap(),
        Deletion::NotFound,
        "built-in roles belong to no tenant"
    );
}

/// A member of the grant's tenant, stored.
async fn member(o: &Owned, users: &Grant<perm::UsersWrite>, email: &str, name: &str) -> User {
    let user = User {
        id: UserId::generate(NOW).unwrap(),
        tenant_id: users.tenant_id().clone(),
        email: email.into(),
        name: name.into(),
        role_id: BuiltinRole::Member.id(),
        status: UserStatus::Active,
        created_at: NOW,
        last_sign_in_at: None,
    };
    let hash = keygate_core::password::hash("correct horse battery").unwrap();
    o.store
        .create_user(users, &user, &hash, &event(users, "user.create"))
        .await
        .unwrap();
    user
}

async fn deleting_a_user_takes_their_personal_tokens_but_not_service_tokens_they_made(db: TestDb) {
    let o = owned(db).await;
    let users = o.caller.require::<perm::UsersWrite>().unwrap();
    let tokens = o.caller.require::<perm::TokensWrite>().unwrap();
    let user = member(&o, &users, "bob@example.com", "Bob").await;
    let mut personal = o.plan.token.clone();
    let secret = format().generate(CredentialKind::Personal).unwrap();
    personal.id = CredentialId::generate_for(CredentialKind::Personal, NOW).unwrap();
    personal.kind = CredentialKind::Personal;
    personal.hash = secret.hash();
    personal.user_id = Some(user.id.clone());
    personal.role_id = None;
    let mut service = o.plan.token.clone();
    let service_secret = format().generate(CredentialKind::Service).unwrap();
    service.id = CredentialId::generate_for(CredentialKind::Service, NOW).unwrap();
    service.hash = service_secret.hash();
    service.created_by = Some(user.id.to_string());
    for token in [&personal, &service] {
        o.store
            .create_token(&tokens, token, &event(&tokens, "token.create"))
            .await
            .unwrap();
    }
    let listed = o
        .store
        .list_tokens(&tokens.reads(), &TokenFilter::default(), &page(2), NOW)
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 2);
    // A personal token's role is its user's.
    read_apart_as_whole(&*o.store, &secret.hash()).await;
    let context = o.store.find_context(&personal).await.unwrap().unwrap();
    assert_eq!(context.user.map(|u| u.id), Some(user.id.clone()));
    assert_eq!(context.role.map(|r| r.id), Some(BuiltinRole::Member.id()));
    let rest = o
        .store
        .list_tokens(
            &tokens.reads(),
            &TokenFilter::default(),
            &Page {
                cursor: listed.next_cursor.clone(),
                ..Page::first(2)
            },
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1, "three tokens in pages of two");
    assert!(rest.next_cursor.is_none());

    o.store
        .delete_user(&users, &user.id, &event(&users, "user.delete"))
        .await
        .unwrap();
    assert!(
        o.store
            .find_credential(&secret.hash())
            .await
            .unwrap()
            .is_none()
    );
    let kept = o
        .store
        .find_credential(&service_secret.hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        kept.credential.created_by.as_deref(),
        Some(user.id.as_str())
    );
    let filter = TokenFilter {
        kinds: vec![CredentialKind::Personal],
        ..TokenFilter::default()
    };
    let personal_left = o
        .store
        .list_tokens(&tokens.reads(), &filter, &page(50), NOW)
        .await
        .unwrap();
    assert!(personal_left.items.is_empty());
}

async fn a_console_form_is_noted_once_per_session_and_goes_with_it(db: TestDb) {
    let o = owned(db).await;
    let users = o.caller.require::<perm::UsersWrite>().unwrap();
    let user = member(&o, &users, "carol@example.com", "Carol").await;
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let mut session = o.plan.token.clone();
        session.id = CredentialId::generate_for(CredentialKind::Session, NOW).unwrap();
        session.kind = CredentialKind::Session;
        session.hash = format().generate(CredentialKind::Session).unwrap().hash();
        session.user_id = Some(user.id.clone());
        session.role_id = None;
        o.store
            .create_session(&session, &event(&users, "session.create"))
            .await
            .unwrap();
        sessions.push(session.id);
    }
    let note = |session: usize, form: &'static str| {
        let store = o.store.clone();
        let id = sessions[session].clone();
        async move { store.note_form(&id, form).await.unwrap() }
    };
    assert!(note(0, "form-a").await, "a form is new the first time");
    assert!(!note(0, "form-a").await, "and not the second");
    assert!(note(1, "form-a").await, "each session notes its own");
    assert!(note(0, "form-b").await);
    assert!(!note(0, "form-b").await);
    assert!(note(0, "form-a").await, "only the last form is remembered");
    // The user's sessions go with the user, and their notes with them.
    o.store
        .delete_user(&users, &user.id, &event(&users, "user.delete"))
        .await
        .unwrap();
}

fn page(limit: u32) -> Page {
    Page::first(limit)
}

async fn last_use_only_moves_forward(db: TestDb) {
    let store = db.open(Arc::default()).await;
    let (plan, secrets) = bootstrap::plan(&format(), "owner@example.com", NOW).unwrap();
    store.bootstrap(&plan).await.unwrap();
    let id = plan.token.id.clone();
    let later = Timestamp::from_unix(NOW.unix() + 60);
    let used = |at, ip: Option<&str>| LastUse {
        credential_id: id.clone(),
        at,
        ip: ip.map(|ip| ip.parse().unwrap()),
    };
    store
        .add_usage(&[], &[used(later, Some("2001:db8::7"))])
        .await
        .unwrap();
    // An older use, from elsewhere, arriving late changes neither.
    store
        .add_usage(&[], &[used(NOW, Some("203.0.113.9"))])
        .await
        .unwrap();
    let record = store
        .find_credential(&secrets.token.hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.credential.last_used_at, Some(later));
    assert_eq!(
        record.credential.last_used_ip,
        Some("2001:db8::7".parse().unwrap())
    );
    // A use whose address was not known keeps the last one that was.
    store.add_usage(&[], &[used(later, None)]).await.unwrap();
    let record = store
        .find_credential(&secrets.token.hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.credential.last_used_ip,
        Some("2001:db8::7".parse().unwrap())
    );
    // Two uses of one credential in a batch: the later one is written, whatever their order.
    let last = Timestamp::from_unix(NOW.unix() + 90);
    let between = Timestamp::from_unix(NOW.unix() + 75);
    store
        .add_usage(
            &[],
            &[
                used(last, Some("192.0.2.7")),
                used(between, Some("192.0.2.8")),
            ],
        )
        .await
        .unwrap();
    let record = store
        .find_credential(&secrets.token.hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.credential.last_used_at, Some(last));
    assert_eq!(
        record.credential.last_used_ip,
        Some("192.0.2.7".parse().unwrap())
    );

    // A batch is one transaction: counts that cannot be added take its last uses back with them.
    let full = [used_count(
        &id,
        &plan.tenant,
        0,
        UsageOutcome::Valid,
        i64::MAX as u64 - 1,
    )];
    store.add_usage(&full, &[]).await.unwrap();
    let overflowing = [used_count(&id, &plan.tenant, 0, UsageOutcome::Valid, 2)];
    let latest = Timestamp::from_unix(NOW.unix() + 120);
    assert!(
        store
            .add_usage(&overflowing, &[used(latest, Some("192.0.2.1"))])
            .await
            .is_err()
    );
    let record = store
        .find_credential(&secrets.token.hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.credential.last_used_at, Some(last));
}

/// Several nodes (or a restarted process and the one it replaces) opening a store at once each
/// run its migrations: on SQLite they used to race, the later one failing on a table the earlier
/// had just made ("table ... already exists"), and that node did not start.
async fn nodes_opening_a_new_store_at_once_all_open_it(db: TestDb) {
    let url = db.url();
    let opened = futures_util::future::join_all((0..6).map(|_| {
        let url = url.clone();
        async move {
            let listener: Arc<dyn ChangeListener> = Arc::new(Recorder::default());
            open(&url, &StoreOptions::default(), listener)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    }))
    .await;
    for result in opened {
        result.unwrap();
    }
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_foreign_keys_and_plans_independent_of_bound_values() {
    let db = TestDb::sqlite();
    let store = crate::SqliteStore::open(
        &db.url(),
        &StoreOptions::default(),
        Arc::new(Recorder::default()),
    )
    .await
    .unwrap();
    let (mode, foreign_keys, stable_plans) = store.pragmas().await.unwrap();
    assert_eq!(mode, "wal");
    assert!(foreign_keys);
    // Else, once the database is analysed, every lookup by a new hash is parsed and planned anew.
    assert!(stable_plans, "SQLite built without SQLITE_ENABLE_QPSG");
}

#[tokio::test]
async fn unknown_schemes_are_refused_with_the_scheme_named() {
    let error = match open(
        "mysql://localhost/x",
        &StoreOptions::default(),
        Arc::new(Recorder::default()),
    )
    .await
    {
        Err(error) => error.to_string(),
        Ok(_) => panic!("mysql is not supported"),
    };
    assert!(error.contains("`mysql`"), "{error}");
}

/// The audit log as stored: (action, token_id, target_id), oldest first.
async fn stored_events(db: &TestDb) -> Vec<(String, Option<String>, Option<String>)> {
    const SQL: &str = "SELECT action, token_id, target_id FROM audit_events ORDER BY id";
    if db.url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
        let rows = sqlx::query_as(SQL).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    } else {
        let pool = sqlx::SqlitePool::connect(&db.url()).await.unwrap();
        let rows = sqlx::query_as(SQL).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    }
}

async fn every_change_writes_its_event_with_the_acting_credential(db: TestDb) {
    let o = owned(db).await;
    let tokens = o.caller.require::<perm::TokensWrite>().unwrap();
    let acting = o.plan.token.id.to_string();
    let mut token = o.plan.token.clone();
    token.id = CredentialId::generate_for(CredentialKind::Service, NOW).unwrap();
    token.hash = format().generate(CredentialKind::Service).unwrap().hash();
    let target = keygate_core::model::Target {
        kind: "token",
        id: token.id.to_string(),
    };
    let created = tokens
        .event(
            "token.create",
            Some(target.clone()),
            NOW,
            &RequestMeta::default(),
        )
        .unwrap();
    o.store
        .create_token(&tokens, &token, &created)
        .await
        .unwrap();
    let deleted = tokens
        .event("token.delete", Some(target), NOW, &RequestMeta::default())
        .unwrap();
    o.store
        .revoke_tokens(&tokens, &[token.id.clone()], NOW, &[deleted])
        .await
        .unwrap();

    // A change whose event cannot be written does not happen: a duplicate event id fails the
    // insert, and the token stays active.
    let mut another = token.clone();
    another.id = CredentialId::generate_for(CredentialKind::Service, NOW).unwrap();
    another.hash = format().generate(CredentialKind::Service).unwrap().hash();
    assert!(
        o.store
            .create_token(&tokens, &another, &created)
            .await
            .is_err()
    );
    assert!(
        o.store
            .get_token(&tokens.reads(), &another.id)
            .await
            .unwrap()
            .is_none()
    );

    let events = stored_events(&o._db).await;
    let token_id = Some(token.id.to_string());
    assert_eq!(
        events,
        [
            (
                "system.bootstrap".to_owned(),
                None,
                Some(o.plan.tenant.id.to_string())
            ),
            (
                "token.create".to_owned(),
                Some(acting.clone()),
                token_id.clone()
            ),
            ("token.delete".to_owned(), Some(acting), token_id),
        ]
    );
}

async fn two_keys_at_most_even_when_created_at_once(db: TestDb) {
    let o = owned(db).await;
    let keys = Arc::new(o.caller.require::<perm::KeysWrite>().unwrap());
    let store = o.store.clone();
    let attempts: Vec<_> = (0..6)
        .map(|_| {
            let (store, keys) = (store.clone(), keys.clone());
            tokio::spawn(async move {
                let mut key = o_key(&keys);
                key.name = "race".into();
                let event = event(&*keys, "account_key.create");
                store
                    .create_account_key(&keys, &key, 2, &event)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut created = 0;
    for attempt in attempts {
        created += usize::from(attempt.await.unwrap());
    }
    assert_eq!(created, 2);
    let listed = o.store.list_account_keys(&keys.reads()).await.unwrap();
    assert_eq!(listed.len(), 2);
    let gone = listed[0].id.clone();
    changes(&o.recorder);
    assert_eq!(
        o.store
            .delete_account_key(&keys, &gone, &event(&*keys, "account_key.delete"))
            .await
            .unwrap(),
        KeyDeletion::Deleted
    );
    assert_eq!(changes(&o.recorder), [Change::Credential(gone.clone())]);
    assert!(
        o.store
            .find_credential(&listed[0].hash)
            .await
            .unwrap()
            .is_none(),
        "deleted for good"
    );
    assert_eq!(
        o.store
            .delete_account_key(&keys, &gone, &event(&*keys, "account_key.delete"))
            .await
            .unwrap(),
        KeyDeletion::NotFound
    );
}

fn o_key(keys: &Grant<perm::KeysWrite>) -> keygate_core::model::Credential {
    let (key, _) = keygate_core::model::Credential::issue(
        &format(),
        CredentialKind::AccountKey,
        keys.tenant_id().clone(),
        "key".into(),
        None,
        NOW,
    )
    .unwrap();
    key
}

/// Each key authenticates a request deleting the other, both under way at once: whichever
/// commits first wins, and the other finds its own key gone and deletes nothing, as if it had
/// come after (without the check, both deleted, and the tenant had no key left).
async fn two_keys_deleting_each_other_at_once_leave_one(db: TestDb) {
    let o = owned(db).await;
    let owner = o.caller.require::<perm::KeysWrite>().unwrap();
    let mut callers = Vec::new();
    for _ in 0..2 {
        let (key, secret) = keygate_core::model::Credential::issue(
            &format(),
            CredentialKind::AccountKey,
            owner.tenant_id().clone(),
            "account key".into(),
            None,
            NOW,
        )
        .unwrap();
        let event = event(&owner, "account_key.create");
        assert!(
            o.store
                .create_account_key(&owner, &key, 2, &event)
                .await
                .unwrap()
        );
        let caller = admitted(&o.gate, secret.expose()).await;
        callers.push((
            Arc::new(caller.require::<perm::KeysWrite>().unwrap()),
            key.id,
        ));
    }
    let deleting = |by: usize, of: usize| {
        let (store, grant) = (o.store.clone(), callers[by].0.clone());
        let target = callers[of].1.clone();
        tokio::spawn(async move {
            let event = event(&grant, "account_key.delete");
            store
                .delete_account_key(&grant, &target, &event)
                .await
                .unwrap()
        })
    };
    let (first, second) = (deleting(0, 1), deleting(1, 0));
    let mut outcomes = [first.await.unwrap(), second.await.unwrap()];
    outcomes.sort_by_key(|outcome| *outcome != KeyDeletion::Deleted);
    assert_eq!(outcomes, [KeyDeletion::Deleted, KeyDeletion::CallerGone]);
    let left = o.store.list_account_keys(&owner.reads()).await.unwrap();
    assert_eq!(left.len(), 1, "one key deleted, the other kept");

    // A caller that is not an account key deletes the last one.
    let event = event(&owner, "account_key.delete");
    let last = &left[0].id;
    let deleted = o.store.delete_account_key(&owner, last, &event).await;
    assert_eq!(deleted.unwrap(), KeyDeletion::Deleted);
}

async fn an_account_key_is_found_by_its_secret_in_its_own_tenant_only(db: TestDb) {
    let o = owned(db).await;
    let keys = o.caller.require::<perm::KeysWrite>().unwrap();
    let key = o_key(&keys);
    o.store
        .create_account_key(&keys, &key, 2, &event(&keys, "account_key.create"))
        .await
        .unwrap();
    let (child, _) = chain(&o, 1).await;
    let child_keys = o
        .caller
        .clone()
        .acting_for(keygate_core::verified::TenantSummary::from(&child))
        .unwrap()
        .require::<perm::KeysWrite>()
        .unwrap();
    let child_key = o_key(&child_keys);
    o.store
        .create_account_key(
            &child_keys,
            &child_key,
            2,
            &event(&child_keys, "account_key.create"),
        )
        .await
        .unwrap();

    let found = |scope: keygate_core::access::Scope<perm::KeysRead>, hash: CredentialHash| {
        let store = o.store.clone();
        async move {
            store
                .find_account_key(&scope, &hash)
                .await
                .unwrap()
                .map(|k| k.id)
        }
    };
    assert_eq!(found(keys.reads(), key.hash).await, Some(key.id.clone()));
    assert_eq!(
        found(child_keys.reads(), child_key.hash).await,
        Some(child_key.id.clone())
    );
    assert_eq!(
        found(keys.reads(), child_key.hash).await,
        None,
        "not a descendant's key"
    );
    assert_eq!(
        found(child_keys.reads(), key.hash).await,
        None,
        "not an ancestor's key"
    );
    assert_eq!(
        found(keys.reads(), o.plan.token.hash).await,
        None,
        "a token of the tenant is not an account key"
    );
    assert_eq!(
        found(keys.reads(), CredentialHash::of("kg_live_nothing")).await,
        None
    );
}

async fn the_ip_restriction_is_stored_and_announced(db: TestDb) {
    let o = owned(db).await;
    let grant = o.caller.require::<perm::IpRestrictionWrite>().unwrap();
    let before = o.store.get_ip_restriction(&grant.reads()).await.unwrap();
    assert!(!before.enabled && before.allowlist.is_empty());
    let entries = vec!["10.0.0.0/8".to_owned(), "2001:db8::/32".to_owned()];
    let restriction = keygate_core::model::IpRestriction {
        enabled: true,
        allowlist: keygate_core::allowlist::IpAllowlist::parse(&entries, "allowlist")
            .unwrap()
            .0,
    };
    changes(&o.recorder);
    o.store
        .set_ip_restriction(
            &grant,
            &restriction,
            &event(&grant, "ip_restriction.update"),
        )
        .await
        .unwrap();
    assert_eq!(
        changes(&o.recorder),
        [Change::Tenant(grant.tenant_id().clone())]
    );
    assert_eq!(
        o.store.get_ip_restriction(&grant.reads()).await.unwrap(),
        restriction
    );
    // Verification reads it with the credential.
    let record = o
        .store
        .find_credential(&o.plan.token.hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.tenant.ip_restriction, restriction);
}

/// A chain of `depth` tenants below the bootstrap root, each created by the owner acting in the
/// level above, and a service token in the deepest; returns that tenant and the token's hash.
async fn chain(o: &Owned, depth: usize) -> (keygate_core::model::Tenant, CredentialHash) {
    let mut parent = o.plan.tenant.clone();
    let mut acting = o.caller.clone();
    for level in 0..depth {
        let grant = acting.require::<perm::TenantsWrite>().unwrap();
        let id = keygate_core::id::TenantId::generate(NOW).unwrap();
        let child = keygate_core::model::Tenant {
            path: parent.path.child(&id),
            id,
            parent_id: Some(parent.id.clone()),
            name: format!("level {level}"),
            slug: keygate_core::model::Slug::parse(&format!("d{depth}-level-{level}")).unwrap(),
            status: keygate_core::model::TenantStatus::Active,
            ip_restriction: Default::default(),
            created_at: NOW,
            quota: None,
            leak_policy: Default::default(),
        };
        let created = event(&grant, "tenant.create");
        o.store
            .create_tenant(&grant, &child, None, &[created])
            .await
            .unwrap();
        acting = o
            .caller
            .clone()
            .acting_for(keygate_core::verified::TenantSummary::from(&child))
            .unwrap();
        parent = child;
    }
    let tokens = acting.require::<perm::TokensWrite>().unwrap();
    let mut token = o.plan.token.clone();
    let secret = format().generate(CredentialKind::Service).unwrap();
    token.id = CredentialId::generate_for(CredentialKind::Service, NOW).unwrap();
    token.tenant_id = parent.id.clone();
    token.hash = secret.hash();
    o.store
        .create_token(&tokens, &token, &event(&tokens, "token.create"))
        .await
        .unwrap();
    (parent, secret.hash())
}

async fn tenants_are_scoped_to_their_subtree(db: TestDb) {
    let o = owned(db).await;
    let (deep, hash) = chain(&o, 10).await;
    let record = o.store.find_credential(&hash).await.unwrap().unwrap();
    assert_eq!(record.tenant.id, deep.id);
    assert_eq!(
        record.ancestors.len(),
        10,
        "nine levels above it, and the root"
    );
    assert_eq!(
        record.ancestors[0].id,
        *deep.parent_id.as_ref().unwrap(),
        "nearest first"
    );
    assert_eq!(record.ancestors[9].id, o.plan.tenant.id);
    read_apart_as_whole(&*o.store, &hash).await;

    // A scope sees itself and below, never above or beside.
    let root_scope = o.caller.require::<perm::TenantsRead>().unwrap().reads();
    let seen = o
        .store
        .get_tenant(&root_scope, deep.slug.as_str())
        .await
        .unwrap();
    assert_eq!(seen.map(|t| t.id), Some(deep.id.clone()));
    let deep_scope = o
        .caller
        .clone()
        .acting_for(keygate_core::verified::TenantSummary::from(&deep))
        .unwrap()
        .require::<perm::TenantsRead>()
        .unwrap()
        .reads();
    assert!(
        o.store
            .get_tenant(&deep_scope, o.plan.tenant.id.as_str())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        o.store
            .get_tenant(&deep_scope, deep.id.as_str())
            .await
            .unwrap()
            .is_some()
    );
    let children = o
        .store
        .list_tenants(&root_scope, &o.plan.tenant.id, &page(50))
        .await
        .unwrap();
    assert_eq!(children.items.len(), 1);

    // Deleting a tenant with children is refused; a leaf goes, with its credentials.
    let tenants = o.caller.require::<perm::TenantsWrite>().unwrap();
    let middle = record.ancestors[4].id.clone();
    assert_eq!(
        o.store
            .delete_tenant(&tenants, &middle, &event(&tenants, "tenant.delete"))
            .await
            .unwrap(),
        Deletion::InUse
    );
    changes(&o.recorder);
    assert_eq!(
        o.store
            .delete_tenant(&tenants, &deep.id, &event(&tenants, "tenant.delete"))
            .await
            .unwrap(),
        Deletion::Deleted
    );
    assert_eq!(changes(&o.recorder), [Change::Tenant(deep.id.clone())]);
    assert!(o.store.find_credential(&hash).await.unwrap().is_none());
}

/// Counts the SQL statements sqlx runs on this thread.
#[derive(Clone, Default)]
struct Statements(Arc<std::sync::atomic::AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Statements {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// A credential ten tenants deep is verified with as many statements as one in the root: the
/// ancestry comes from the tenant's path, not from a walk up the tree. And a miss on an access
/// token reads its client (tenant line, user and role) and whether the token was revoked in as
/// many: one, so one round trip on PostgreSQL and one snapshot. (PostgreSQL runs its statements
/// on the calling thread, where a test can count them; SQLite runs the same SQL.)
#[tokio::test]
async fn verification_reads_a_deep_tenant_line_in_as_many_statements_as_a_root_one() {
    use tracing_subscriber::layer::SubscriberExt;
    if !keygate_testkit::postgres_or_skip() {
        return;
    }
    let o = owned(TestDb::postgres().await).await;
    let (_, deep) = chain(&o, 10).await;
    let root = o.plan.token.hash;
    let (client_record, client_hash) = client(&o, "reader").await;
    let authenticated = authenticated(&o, &client_hash).await;
    let revoked = CredentialId::generate_for(CredentialKind::AccessToken, NOW).unwrap();
    let event = client_event(&authenticated, "oauth.revoke", Outcome::Success);
    let expires = NOW.saturating_add(std::time::Duration::from_secs(900));
    o.store
        .revoke_access_token(&authenticated, &revoked, expires, &event)
        .await
        .unwrap();
    let live = CredentialId::generate_for(CredentialKind::AccessToken, NOW).unwrap();
    let statements = Statements::default();
    let subscriber = tracing_subscriber::registry().with(statements.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let count = |hash| {
        let store = o.store.clone();
        let statements = statements.clone();
        async move {
            let before = statements.0.load(std::sync::atomic::Ordering::SeqCst);
            store.find_credential(&hash).await.unwrap().unwrap();
            statements.0.load(std::sync::atomic::Ordering::SeqCst) - before
        }
    };
    let at_root = count(root).await;
    let ten_deep = count(deep).await;
    assert!(at_root > 0, "statements are counted");
    assert_eq!(ten_deep, at_root);
    for (jti, is_revoked) in [(&live, false), (&revoked, true)] {
        let before = statements.0.load(std::sync::atomic::Ordering::SeqCst);
        let found = o
            .store
            .find_access_token(&client_record.id, jti, None)
            .await;
        let found = found.unwrap().unwrap();
        let read = statements.0.load(std::sync::atomic::Ordering::SeqCst) - before;
        assert_eq!(read, at_root, "an access token's miss");
        assert_eq!(found.revoked, is_revoked);
        assert_eq!(found.client.credential.id, client_record.id);
    }
}

/// An OAuth client of the bootstrap tenant, created by its owner, with its secret's hash.
async fn client(o: &Owned, name: &str) -> (keygate_core::model::Credential, CredentialHash) {
    let grant = o.caller.require::<perm::OauthClientsWrite>().unwrap();
    let secret = format().generate(CredentialKind::OauthSecret).unwrap();
    let mut client = o.plan.token.clone();
    client.id = CredentialId::generate_for(CredentialKind::OauthSecret, NOW).unwrap();
    client.kind = CredentialKind::OauthSecret;
    client.hash = secret.hash();
    client.name = name.into();
    client.role_id = Some(BuiltinRole::Viewer.id());
    o.store
        .create_client(&grant, &client, &event(&grant, "oauth_client.create"))
        .await
        .unwrap();
    let hash = secret.hash();
    o.client_secrets.lock().unwrap().insert(hash, secret);
    (client, hash)
}

/// The client with this secret hash, authenticated as the token endpoint would.
async fn authenticated(o: &Owned, hash: &CredentialHash) -> AuthenticatedClient {
    let secret = o.client_secrets.lock().unwrap()[hash].expose().to_owned();
    o.gate
        .verifier()
        .authenticate_client(&secret, None)
        .await
        .unwrap()
}

const LIFETIMES: Lifetimes = Lifetimes {
    access: std::time::Duration::from_secs(900),
    refresh: std::time::Duration::from_secs(86_400),
};

fn issue(
    client: &AuthenticatedClient,
    previous: Option<&RefreshToken>,
) -> (RefreshToken, CredentialHash) {
    let scope = Catalog::new::<&str>(&[]).unwrap().expand(&["tokens:read"]);
    let issued = keygate_core::oauth::issue(
        client,
        &scope,
        previous,
        &format(),
        keygate_core::oauth::Parties {
            issuer: "https://kg",
            audience: keygate_core::jwt::Audience::new(vec!["https://kg".into()]).unwrap(),
        },
        LIFETIMES,
        NOW,
    )
    .unwrap();
    (issued.refresh, issued.refresh_secret.hash())
}

fn client_event(
    client: &AuthenticatedClient,
    action: &'static str,
    outcome: Outcome,
) -> AuditEvent {
    client
        .event(action, outcome, 200, None, NOW, &RequestMeta::default())
        .unwrap()
}

fn denied(client: &AuthenticatedClient) -> AuditEvent {
    client_event(client, "oauth.token", Outcome::Denied)
}

/// A grant's event: recorded with the refresh token it stores.
fn granted(client: &AuthenticatedClient) -> AuditEvent {
    client_event(client, "oauth.grant", Outcome::Success)
}

/// Cache misses of a moment are read in one statement: any number of hashes, current secrets and
/// previous ones, known and unknown, give each known credential, and nothing else.
async fn credentials_are_read_together_by_current_or_previous_secret(db: TestDb) {
    let o = owned(db).await;
    let mut clients = Vec::new();
    for n in 0..70 {
        clients.push(client(&o, &format!("client {n}")).await);
    }
    let grant = o.caller.require::<perm::OauthClientsWrite>().unwrap();
    let (rolled, previous) = clients[3].clone();
    let current = format()
        .generate(CredentialKind::OauthSecret)
        .unwrap()
        .hash();
    o.store
        .roll_client_secret(
            &grant,
            &rolled.id,
            &current,
            "hint",
            Timestamp::from_unix(NOW.unix() + 3600),
            &event(&grant, "oauth_client.roll"),
        )
        .await
        .unwrap()
        .unwrap();
    clients[3].1 = current;
    let unknown: Vec<CredentialHash> = (0..5)
        .map(|n| CredentialHash::of(&format!("kg_live_nothing{n}")))
        .collect();
    // More than one statement takes, and a batch that is no power of two.
    let mut hashes: Vec<CredentialHash> = clients.iter().map(|(_, hash)| *hash).collect();
    hashes.insert(10, previous);
    hashes.extend(&unknown);
    let found = o.store.find_credentials_alone(&hashes).await.unwrap();
    let found_by = |hash: &CredentialHash| {
        let ids: std::collections::BTreeSet<_> = found
            .iter()
            .filter(|c| {
                c.hash == *hash || c.previous_secret.as_ref().is_some_and(|p| p.hash == *hash)
            })
            .map(|c| c.id.clone())
            .collect();
        ids
    };
    for (client, hash) in &clients {
        assert_eq!(
            found_by(hash),
            [client.id.clone()].into(),
            "{}",
            client.name
        );
    }
    assert_eq!(found_by(&previous), [rolled.id.clone()].into());
    for hash in &unknown {
        assert!(found_by(hash).is_empty());
    }
    let ids: std::collections::BTreeSet<_> = found.iter().map(|c| c.id.clone()).collect();
    assert_eq!(
        ids.len(),
        clients.len(),
        "nothing but the credentials asked for"
    );
    for few in [1, 2, 3, 5] {
        let found = o
            .store
            .find_credentials_alone(&hashes[..few])
            .await
            .unwrap();
        assert_eq!(found.len(), few, "{few} hashes");
    }
}

async fn clients_are_scoped_and_take_their_tokens_with_them(db: TestDb) {
    let o = owned(db).await;
    let (client, hash) = client(&o, "billing").await;
    let grant = o.caller.require::<perm::OauthClientsWrite>().unwrap();
    let listed = o
        .store
        .list_clients(&grant.reads(), &page(50))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].id, client.id);
    assert!(
        o.store
            .list_tokens(
                &o.caller.require::<perm::TokensRead>().unwrap().reads(),
                &TokenFilter::default(),
                &page(50),
                NOW
            )
            .await
            .unwrap()
            .items
            .iter()
            .all(|t| t.id != client.id),
        "a client is not a token"
    );
    assert_eq!(
        o.store
            .get_client(&grant.reads(), &client.id)
            .await
            .unwrap()
            .map(|c| c.name),
        Some("billing".to_owned())
    );
    // Another tenant's scope does not see it.
    let (child, _) = chain(&o, 1).await;
    let child_scope = o
        .caller
        .clone()
        .acting_for(keygate_core::verified::TenantSummary::from(&child))
        .unwrap()
        .require::<perm::OauthClientsWrite>()
        .unwrap();
    assert!(
        o.store
            .get_client(&child_scope.reads(), &client.id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        o.store
            .delete_client(
                &child_scope,
                &client.id,
                &event(&child_scope, "oauth_client.delete")
            )
            .await
            .unwrap(),
        None
    );

    let authenticated = authenticated(&o, &hash).await;
    let (refresh, refresh_hash) = issue(&authenticated, None);
    o.store
        .issue_refresh_token(&authenticated, &refresh, &granted(&authenticated))
        .await
        .unwrap();
    let jti = CredentialId::generate_for(CredentialKind::AccessToken, NOW).unwrap();
    assert!(
        o.store
            .find_access_token(&client.id, &jti, None)
            .await
            .unwrap()
            .is_some()
    );

    changes(&o.recorder);
    assert_eq!(
        o.store
            .delete_client(&grant, &client.id, &event(&grant, "oauth_client.delete"))
            .await
            .unwrap(),
        Some(())
    );
    assert_eq!(
        changes(&o.recorder),
        [Change::Credential(client.id.clone())]
    );
    assert!(o.store.find_credential(&hash).await.unwrap().is_none());
    assert!(
        o.store
            .find_refresh_token(&authenticated, &refresh_hash)
            .await
            .unwrap()
            .is_none(),
        "its refresh tokens went with it"
    );
    assert!(
        o.store
            .find_access_token(&client.id, &jti, None)
            .await
            .unwrap()
            .is_none()
    );
}

async fn a_refresh_token_is_spent_once_and_reuse_burns_its_family(db: TestDb) {
    let o = owned(db).await;
    let (_, hash) = client(&o, "ci").await;
    let client = authenticated(&o, &hash).await;
    let (first, first_hash) = issue(&client, None);
    o.store
        .issue_refresh_token(&client, &first, &granted(&client))
        .await
        .unwrap();
    let found = o
        .store
        .find_refresh_token(&client, &first_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.family_id, first.credential.id);
    assert_eq!(found.client_id, *client.id());
    assert_eq!(
        found.credential.permissions,
        Some(vec!["tokens:read".to_owned()])
    );
    assert!(found.spent_at.is_none());

    let refused = denied(&client);
    let (second, second_hash) = issue(&client, Some(&found));
    assert_eq!(
        o.store
            .rotate_refresh_token(
                &client,
                &found.credential.id,
                &second,
                &refused,
                &granted(&client)
            )
            .await
            .unwrap(),
        Rotation::Rotated
    );
    assert_eq!(
        o.store
            .find_refresh_token(&client, &first_hash)
            .await
            .unwrap()
            .unwrap()
            .spent_at,
        Some(NOW)
    );
    let live = o
        .store
        .find_refresh_token(&client, &second_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live.family_id, first.credential.id, "the same family");
    assert!(live.credential.revoked_at.is_none());

    // The first token again, racing: it cannot be spent twice, and its family burns, access
    // tokens of the grant included, which every node hears of through the client.
    let jti = CredentialId::generate_for(CredentialKind::AccessToken, NOW).unwrap();
    let access_revoked = |grant: CredentialId| {
        let (store, client, jti) = (o.store.clone(), client.id().clone(), jti.clone());
        async move {
            let found = store.find_access_token(&client, &jti, Some(&grant)).await;
            found.unwrap().unwrap().revoked
        }
    };
    assert!(!access_revoked(found.family_id.clone()).await);
    changes(&o.recorder);
    let (third, third_hash) = issue(&client, Some(&found));
    assert_eq!(
        o.store
            .rotate_refresh_token(
                &client,
                &found.credential.id,
                &third,
                &refused,
                &granted(&client)
            )
            .await
            .unwrap(),
        Rotation::Reused
    );
    assert!(
        o.store
            .find_refresh_token(&client, &third_hash)
            .await
            .unwrap()
            .is_none(),
        "no successor"
    );
    let burnt = o
        .store
        .find_refresh_token(&client, &second_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(burnt.credential.revoked_at, Some(NOW));
    assert!(access_revoked(found.family_id.clone()).await);
    assert_eq!(
        changes(&o.recorder),
        [Change::Credential(client.id().clone())]
    );

    // A family revoked explicitly: every token of it, and nothing of another family.
    let (other, other_hash) = issue(&client, None);
    o.store
        .issue_refresh_token(&client, &other, &granted(&client))
        .await
        .unwrap();
    let burn = denied(&client);
    let revoked = o
        .store
        .revoke_refresh_family(&client, &other.family_id, NOW, &burn)
        .await
        .unwrap();
    assert_eq!(revoked, 1);
    assert!(access_revoked(other.family_id.clone()).await);
    assert!(
        o.store
            .find_refresh_token(&client, &other_hash)
            .await
            .unwrap()
            .unwrap()
            .credential
            .revoked_at
            .is_some()
    );
    let spent_first = o
        .store
        .find_refresh_token(&client, &first_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        spent_first.credential.revoked_at,
        Some(NOW),
        "the reuse burnt the spent token too"
    );

    // Housekeeping deletes what expired, whatever its state, and nothing else.
    let expiry = other.credential.expires_at.unwrap();
    assert_eq!(
        o.store.delete_expired_refresh_tokens(expiry).await.unwrap(),
        0
    );
    let after = Timestamp::from_unix(expiry.unix() + 1);
    assert_eq!(
        o.store.delete_expired_refresh_tokens(after).await.unwrap(),
        3
    );
    assert!(
        o.store
            .find_refresh_token(&client, &other_hash)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        o.store.find_credential(&hash).await.unwrap().is_some(),
        "the client stays"
    );
    let denied = stored_events(&o._db)
        .await
        .into_iter()
        .filter(|(action, _, _)| action == "oauth.token")
        .count();
    assert_eq!(
        denied, 2,
        "the race and the explicit revocation were both recorded"
    );
    let grants = stored_events(&o._db)
        .await
        .into_iter()
        .filter(|(action, _, _)| action == "oauth.grant")
        .count();
    assert_eq!(grants, 3, "two grants and the one rotation that succeeded");
}

async fn a_refresh_token_is_found_by_its_own_client_and_within_its_tenant_only(db: TestDb) {
    let o = owned(db).await;
    let (_, first_hash) = client(&o, "first").await;
    let (_, second_hash) = client(&o, "second").await;
    let first = authenticated(&o, &first_hash).await;
    let second = authenticated(&o, &second_hash).await;
    let (refresh, refresh_hash) = issue(&first, None);
    o.store
        .issue_refresh_token(&first, &refresh, &granted(&first))
        .await
        .unwrap();

    let found = o
        .store
        .find_refresh_token(&first, &refresh_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.credential.id, refresh.credential.id);
    assert!(
        o.store
            .find_refresh_token(&second, &refresh_hash)
            .await
            .unwrap()
            .is_none(),
        "another client's token is not found"
    );
    let client_secret = o.store.find_credential(&first_hash).await.unwrap().unwrap();
    assert!(
        o.store
            .find_refresh_token(&first, &client_secret.credential.hash)
            .await
            .unwrap()
            .is_none(),
        "a client secret is not a refresh token"
    );

    // Introspection by a credential with `credentials:verify`: its tenant's tokens and below,
    // with the client as verification reads it.
    let verify = o.caller.require::<perm::CredentialsVerify>().unwrap();
    let (token, client) = o
        .store
        .find_refresh_token_within(&verify, &refresh_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token.credential.id, refresh.credential.id);
    assert_eq!(client.credential.id, *first.id());
    assert_eq!(client.tenant.id, o.plan.tenant.id);
    let (child, _) = chain(&o, 1).await;
    let child_verify = o
        .caller
        .clone()
        .acting_for(keygate_core::verified::TenantSummary::from(&child))
        .unwrap()
        .require::<perm::CredentialsVerify>()
        .unwrap();
    assert!(
        o.store
            .find_refresh_token_within(&child_verify, &refresh_hash)
            .await
            .unwrap()
            .is_none(),
        "not a token of a tenant above"
    );
}

async fn access_token_revocations_are_remembered_and_announced(db: TestDb) {
    let o = owned(db).await;
    let (client_record, hash) = client(&o, "revoker").await;
    let client = authenticated(&o, &hash).await;
    let jti = CredentialId::generate_for(CredentialKind::AccessToken, NOW).unwrap();
    let event = client_event(&client, "oauth.revoke", Outcome::Success);
    changes(&o.recorder);
    let expires = NOW.saturating_add(std::time::Duration::from_secs(900));
    o.store
        .revoke_access_token(&client, &jti, expires, &event)
        .await
        .unwrap();
    assert_eq!(changes(&o.recorder), [Change::Credential(jti.clone())]);
    let record = o
        .store
        .find_access_token(&client_record.id, &jti, None)
        .await
        .unwrap()
        .unwrap();
    assert!(record.revoked);
    assert_eq!(record.client.credential.id, client_record.id);
    assert_eq!(record.client.role.unwrap().name, "viewer");
    let other = CredentialId::generate_for(CredentialKind::AccessToken, NOW).unwrap();
    assert!(
        !o.store
            .find_access_token(&client_record.id, &other, None)
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    // Revoking twice is fine.
    let again = client_event(&client, "oauth.revoke", Outcome::Success);
    o.store
        .revoke_access_token(&client, &jti, expires, &again)
        .await
        .unwrap();
}

/// The migrations of `all` older than `version`: a database as an earlier keygate left it.
fn migrations_before(all: &sqlx::migrate::Migrator, version: i64) -> sqlx::migrate::Migrator {
    sqlx::migrate::Migrator {
        migrations: all
            .migrations
            .iter()
            .filter(|m| m.version < version)
            .cloned()
            .collect::<Vec<_>>()
            .into(),
        ..sqlx::migrate::Migrator::DEFAULT
    }
}

/// The migration that widened the algorithms keeps the EdDSA keys already stored (SQLite rebuilds
/// the table for it).
async fn eddsa_keys_made_before_0006_are_kept_by_it(db: TestDb) {
    let old = keygate_core::jwt::generate_key(SigningAlgorithm::EdDsa, 1, NOW, None).unwrap();
    let insert = "INSERT INTO signing_keys (kid, generation, algorithm, public_key, private_key, \
                  created_at) VALUES ($1, 1, 'EdDSA', $2, $3, $4)";
    if db.url.starts_with("sqlite:") {
        std::fs::create_dir_all(db.dir().join("nested")).unwrap();
        let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&db.url)
            .unwrap()
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        migrations_before(&crate::sqlite::MIGRATOR, 6)
            .run(&pool)
            .await
            .unwrap();
        sqlx::query(insert)
            .bind(&old.kid)
            .bind(&old.public_key)
            .bind(&old.private_key)
            .bind(NOW.unix())
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        migrations_before(&crate::postgres::MIGRATOR, 6)
            .run(&pool)
            .await
            .unwrap();
        sqlx::query(insert)
            .bind(&old.kid)
            .bind(&old.public_key)
            .bind(&old.private_key)
            .bind(NOW.unix())
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let store = db.open(Arc::new(Recorder::default())).await;
    assert_eq!(
        store.signing_keys().await.unwrap(),
        std::slice::from_ref(&old)
    );
    let later = Timestamp::from_unix(NOW.unix() + 60);
    let new = keygate_core::jwt::generate_key(SigningAlgorithm::Es256, 2, later, None).unwrap();
    assert!(
        store
            .add_signing_key(&new, later, Timestamp::from_unix(0))
            .await
            .unwrap()
    );
    let kept = store.signing_keys().await.unwrap();
    assert_eq!(
        kept.iter()
            .map(|k| (k.kid.as_str(), k.algorithm, k.retired_at))
            .collect::<Vec<_>>(),
        [
            (old.kid.as_str(), SigningAlgorithm::EdDsa, Some(later)),
            (new.kid.as_str(), SigningAlgorithm::Es256, None)
        ]
    );
}

/// The built-in roles are dated by bootstrap, and a store bootstrapped when they were dated 0
/// (1970) is dated by its migration (run again here, as on a store that never had it).
async fn built_in_roles_are_as_old_as_the_first_tenant(db: TestDb) {
    let o = owned(db).await;
    let roles = o.caller.require::<perm::RolesRead>().unwrap().reads();
    let dates = || async {
        let owner = RoleId::parse("rol_owner").unwrap();
        o.store
            .get_role(&roles, &owner)
            .await
            .unwrap()
            .unwrap()
            .created_at
    };
    assert_eq!(dates().await, NOW);

    let (undate, forget) = (
        "UPDATE roles SET created_at = 0 WHERE tenant_id IS NULL",
        "DELETE FROM _sqlx_migrations WHERE description = 'built in roles dated'",
    );
    if o._db.url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&o._db.url).await.unwrap();
        for sql in [undate, forget] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        crate::sqlite::MIGRATOR.run(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&o._db.url).await.unwrap();
        for sql in [undate, forget] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        crate::postgres::MIGRATOR.run(&pool).await.unwrap();
        pool.close().await;
    }
    assert_eq!(dates().await, NOW);
}

async fn signing_keys_of_every_algorithm_are_kept_as_given(db: TestDb) {
    let o = owned(db).await;
    let never = Timestamp::from_unix(0);
    let mut made = Vec::new();
    for (generation, algorithm) in (1..).zip(SigningAlgorithm::ALL) {
        let at = Timestamp::from_unix(NOW.unix() + generation);
        let key = keygate_core::jwt::generate_key(algorithm, generation, at, None).unwrap();
        assert!(o.store.add_signing_key(&key, at, never).await.unwrap());
        made.push(key);
    }
    let stored = o.store.signing_keys().await.unwrap();
    let read: Vec<_> = stored
        .iter()
        .map(|k| (k.algorithm, k.public_key.clone(), k.private_key.clone()))
        .collect();
    let given: Vec<_> = made
        .iter()
        .map(|k| (k.algorithm, k.public_key.clone(), k.private_key.clone()))
        .collect();
    assert_eq!(read, given);
    assert_eq!(stored[2].retired_at, None, "the newest signs");
    assert!(stored[..2].iter().all(|k| k.retired_at.is_some()));
}

async fn signing_keys_rotate_one_generation_at_a_time(db: TestDb) {
    let o = owned(db).await;
    assert!(o.store.signing_keys().await.unwrap().is_empty());
    let sealer = keygate_core::jwt::KeySealer::new("a secret of sixteen+ characters").unwrap();
    let first =
        keygate_core::jwt::generate_key(SigningAlgorithm::EdDsa, 1, NOW, Some(&sealer)).unwrap();
    let never = Timestamp::from_unix(0);
    changes(&o.recorder);
    assert!(o.store.add_signing_key(&first, NOW, never).await.unwrap());
    assert_eq!(changes(&o.recorder), [Change::SigningKeys]);
    assert_eq!(
        o.store.signing_keys().await.unwrap(),
        std::slice::from_ref(&first),
        "stored as given, sealed"
    );

    // A second node rotating from the same view loses, changing nothing.
    let rival = keygate_core::jwt::generate_key(SigningAlgorithm::Es256, 1, NOW, None).unwrap();
    assert!(!o.store.add_signing_key(&rival, NOW, never).await.unwrap());
    assert!(changes(&o.recorder).is_empty());

    let later = Timestamp::from_unix(NOW.unix() + 60);
    let second = keygate_core::jwt::generate_key(SigningAlgorithm::Rs256, 2, later, None).unwrap();
    assert!(
        o.store
            .add_signing_key(&second, later, never)
            .await
            .unwrap()
    );
    let keys = o.store.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        (keys[0].kid.as_str(), keys[0].retired_at),
        (first.kid.as_str(), Some(later))
    );
    assert_eq!(
        (keys[1].kid.as_str(), keys[1].retired_at),
        (second.kid.as_str(), None)
    );

    // Keys retired before the given time are deleted with the next rotation.
    let latest = Timestamp::from_unix(later.unix() + 60);
    let third = keygate_core::jwt::generate_key(SigningAlgorithm::Es256, 3, latest, None).unwrap();
    assert!(
        o.store
            .add_signing_key(&third, latest, Timestamp::from_unix(later.unix() + 1))
            .await
            .unwrap()
    );
    let kids: Vec<String> = o
        .store
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(kids, [second.kid.clone(), third.kid.clone()]);
}

/// The owner, acting in `tenant` (in its own tenant without acting for anyone).
fn acting_in(o: &Owned, tenant: &Tenant) -> Caller {
    if tenant.id == o.plan.tenant.id {
        o.caller.clone()
    } else {
        o.caller
            .clone()
            .acting_for(keygate_core::verified::TenantSummary::from(tenant))
            .unwrap()
    }
}

/// A tenant below `parent`, made by the owner acting in `parent`.
async fn tenant_below(o: &Owned, parent: &Tenant, slug: &str) -> Tenant {
    let grant = acting_in(o, parent)
        .require::<perm::TenantsWrite>()
        .unwrap();
    let id = TenantId::generate(NOW).unwrap();
    let tenant = Tenant {
        path: parent.path.child(&id),
        id,
        parent_id: Some(parent.id.clone()),
        name: slug.to_owned(),
        slug: keygate_core::model::Slug::parse(slug).unwrap(),
        status: keygate_core::model::TenantStatus::Active,
        ip_restriction: Default::default(),
        created_at: NOW,
        quota: None,
        leak_policy: Default::default(),
    };
    o.store
        .create_tenant(&grant, &tenant, None, &[event(&grant, "tenant.create")])
        .await
        .unwrap();
    tenant
}

/// What a read of usage in `tenant` may see.
fn usage_scope(o: &Owned, tenant: &Tenant) -> Scope<perm::UsageRead> {
    acting_in(o, tenant)
        .require::<perm::UsageRead>()
        .unwrap()
        .reads()
}

fn credential() -> CredentialId {
    CredentialId::generate_for(CredentialKind::Service, NOW).unwrap()
}

/// The start of the day `NOW` falls in, plus `seconds`: usage tests place their minutes in it.
fn day_at(seconds: i64) -> Timestamp {
    Timestamp::from_unix(Granularity::Day.bucket(NOW).unix() + seconds)
}

/// Rolls up every minute of the hours before `day_at(before)`.
async fn roll_up(o: &Owned, before: i64) {
    while o.store.roll_up_usage(day_at(before), 1_000).await.unwrap() > 0 {}
}

fn used_count(
    credential: &CredentialId,
    tenant: &Tenant,
    minute: i64,
    outcome: UsageOutcome,
    count: u64,
) -> UsageCount {
    UsageCount {
        credential_id: credential.clone(),
        tenant_id: tenant.id.clone(),
        minute: day_at(minute),
        outcome,
        count,
    }
}

/// Every bucket of `granularity` in `since..until` (seconds into the day), grouped by nothing.
fn window(granularity: Granularity, since: i64, until: i64) -> UsageFilter {
    UsageFilter {
        credential_ids: Vec::new(),
        tenant_ids: Vec::new(),
        since: day_at(since),
        until: day_at(until),
        granularity,
        by_credential: false,
        by_outcome: false,
        by_tenant: false,
    }
}

/// A bucket as the usage tests compare them: its start in seconds into the day, then what it is
/// grouped by (the outcome by its name) and its count. Tuples order as the store orders buckets.
type Row = (
    i64,
    Option<String>,
    Option<String>,
    Option<&'static str>,
    u64,
);

/// Reads usage both ways, the list and the export, and asserts they agree.
async fn usage_of(o: &Owned, scope: &Scope<perm::UsageRead>, filter: &UsageFilter) -> Vec<Row> {
    use futures_util::TryStreamExt;
    let read = o.store.usage(scope, filter).await.unwrap();
    let exported: Vec<UsageBucket> = o
        .store
        .export_usage(scope, filter)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(exported, read, "the export streams what the read returns");
    let day = Granularity::Day.bucket(NOW).unix();
    read.into_iter()
        .map(|b| {
            (
                b.start.unix() - day,
                b.credential_id,
                b.tenant_id,
                b.outcome.map(UsageOutcome::as_str),
                b.count,
            )
        })
        .collect()
}

fn row(
    start: i64,
    credential: Option<&CredentialId>,
    tenant: Option<&Tenant>,
    outcome: Option<UsageOutcome>,
    count: u64,
) -> Row {
    (
        start,
        credential.map(|c| c.to_string()),
        tenant.map(|t| t.id.to_string()),
        outcome.map(UsageOutcome::as_str),
        count,
    )
}

/// The rows expected, in the order the store returns them: by start, then the grouped keys.
fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort();
    rows
}

/// The tenant of every stored usage row, of every bucket size, read past the store.
async fn usage_row_tenants(db: &TestDb) -> Vec<String> {
    const SQL: &str = "SELECT tenant_id FROM usage_minutes UNION ALL \
                       SELECT tenant_id FROM usage_hours UNION ALL \
                       SELECT tenant_id FROM usage_days";
    let mut tenants: Vec<String> = if db.url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
        let tenants = sqlx::query_scalar(SQL).fetch_all(&pool).await.unwrap();
        pool.close().await;
        tenants
    } else {
        let pool = sqlx::SqlitePool::connect(&db.url()).await.unwrap();
        let tenants = sqlx::query_scalar(SQL).fetch_all(&pool).await.unwrap();
        pool.close().await;
        tenants
    };
    tenants.sort();
    tenants
}

async fn usage_from_several_nodes_sums_into_minutes_hours_and_days(db: TestDb) {
    use UsageOutcome::{Expired, Forbidden, Valid};
    let o = owned(db).await;
    let other_node = o._db.open(Arc::default()).await;
    let root = o.plan.tenant.clone();
    let c = credential();
    // 00:59, 01:00 and 01:01 on the first day; 00:05 on the next.
    let (m0059, m0100, m0101, next_day) = (3_540, 3_600, 3_660, 86_400 + 300);
    let node_a = [
        used_count(&c, &root, m0059, Valid, 3),
        used_count(&c, &root, m0059, Expired, 1),
        used_count(&c, &root, m0100, Valid, 4),
        used_count(&c, &root, m0100, Valid, 1),
        used_count(&c, &root, m0101, Forbidden, 0),
    ];
    let node_b = [
        used_count(&c, &root, m0059, Valid, 5),
        used_count(&c, &root, m0101, Valid, 2),
        used_count(&c, &root, next_day, Valid, 7),
    ];
    let (a, b) = tokio::join!(
        o.store.add_usage(&node_a, &[]),
        other_node.add_usage(&node_b, &[])
    );
    a.unwrap();
    b.unwrap();
    // The next flush of the same minute adds to it.
    o.store
        .add_usage(&[used_count(&c, &root, m0059, Valid, 10)], &[])
        .await
        .unwrap();
    o.store.add_usage(&[], &[]).await.unwrap();

    let scope = usage_scope(&o, &root);
    let by_outcome = |granularity| UsageFilter {
        by_outcome: true,
        ..window(granularity, 0, 2 * 86_400)
    };
    assert_eq!(
        usage_of(&o, &scope, &by_outcome(Granularity::Minute)).await,
        [
            row(m0059, None, None, Some(Expired), 1),
            row(m0059, None, None, Some(Valid), 3 + 5 + 10),
            row(m0100, None, None, Some(Valid), 4 + 1),
            row(m0101, None, None, Some(Valid), 2),
            row(next_day, None, None, Some(Valid), 7),
        ],
        "what both nodes counted for a minute is one sum; a count of nothing is not written"
    );
    assert_eq!(
        usage_of(&o, &scope, &by_outcome(Granularity::Hour)).await,
        [
            row(0, None, None, Some(Expired), 1),
            row(0, None, None, Some(Valid), 18),
            row(3_600, None, None, Some(Valid), 5 + 2),
            row(86_400, None, None, Some(Valid), 7),
        ]
    );
    assert_eq!(
        usage_of(&o, &scope, &by_outcome(Granularity::Day)).await,
        [
            row(0, None, None, Some(Expired), 1),
            row(0, None, None, Some(Valid), 18 + 5 + 2),
            row(86_400, None, None, Some(Valid), 7),
        ]
    );
}

async fn usage_reads_group_filter_and_bound_buckets(db: TestDb) {
    use UsageOutcome::{RateLimited, Revoked, Valid};
    let o = owned(db).await;
    let root = o.plan.tenant.clone();
    let child = tenant_below(&o, &root, "usage-child").await;
    let (own, first, second) = (credential(), credential(), credential());
    o.store
        .add_usage(
            &[
                used_count(&own, &root, 0, Valid, 1),
                used_count(&own, &root, 60, Valid, 2),
                used_count(&own, &root, 120, RateLimited, 4),
                used_count(&first, &child, 0, Valid, 10),
                used_count(&first, &child, 0, Revoked, 20),
                used_count(&first, &child, 60, Valid, 30),
                used_count(&second, &child, 120, Valid, 100),
            ],
            &[],
        )
        .await
        .unwrap();
    let scope = usage_scope(&o, &root);
    let all = window(Granularity::Minute, 0, 180);

    assert_eq!(
        usage_of(&o, &scope, &all).await,
        [
            row(0, None, None, None, 31),
            row(60, None, None, None, 32),
            row(120, None, None, None, 104),
        ]
    );
    let by_credential = UsageFilter {
        by_credential: true,
        ..all.clone()
    };
    assert_eq!(
        usage_of(&o, &scope, &by_credential).await,
        sorted(vec![
            row(0, Some(&own), None, None, 1),
            row(0, Some(&first), None, None, 30),
            row(60, Some(&own), None, None, 2),
            row(60, Some(&first), None, None, 30),
            row(120, Some(&own), None, None, 4),
            row(120, Some(&second), None, None, 100),
        ])
    );
    let by_outcome = UsageFilter {
        by_outcome: true,
        ..all.clone()
    };
    assert_eq!(
        usage_of(&o, &scope, &by_outcome).await,
        [
            row(0, None, None, Some(Revoked), 20),
            row(0, None, None, Some(Valid), 11),
            row(60, None, None, Some(Valid), 32),
            row(120, None, None, Some(RateLimited), 4),
            row(120, None, None, Some(Valid), 100),
        ]
    );
    let by_tenant = UsageFilter {
        by_tenant: true,
        ..all.clone()
    };
    assert_eq!(
        usage_of(&o, &scope, &by_tenant).await,
        sorted(vec![
            row(0, None, Some(&root), None, 1),
            row(0, None, Some(&child), None, 30),
            row(60, None, Some(&root), None, 32 - 30),
            row(60, None, Some(&child), None, 30),
            row(120, None, Some(&root), None, 4),
            row(120, None, Some(&child), None, 100),
        ])
    );
    let by_everything = UsageFilter {
        by_credential: true,
        by_outcome: true,
        by_tenant: true,
        ..all.clone()
    };
    assert_eq!(
        usage_of(&o, &scope, &by_everything).await,
        sorted(vec![
            row(0, Some(&own), Some(&root), Some(Valid), 1),
            row(0, Some(&first), Some(&child), Some(Valid), 10),
            row(0, Some(&first), Some(&child), Some(Revoked), 20),
            row(60, Some(&own), Some(&root), Some(Valid), 2),
            row(60, Some(&first), Some(&child), Some(Valid), 30),
            row(120, Some(&own), Some(&root), Some(RateLimited), 4),
            row(120, Some(&second), Some(&child), Some(Valid), 100),
        ])
    );

    // `since` is inclusive, `until` exclusive.
    assert_eq!(
        usage_of(&o, &scope, &window(Granularity::Minute, 60, 120)).await,
        [row(60, None, None, None, 32)]
    );
    assert_eq!(
        usage_of(&o, &scope, &window(Granularity::Minute, 61, 180)).await,
        [row(120, None, None, None, 104)]
    );
    assert!(
        usage_of(&o, &scope, &window(Granularity::Minute, 180, 3_600))
            .await
            .is_empty()
    );

    // Filters: a bucket matches one value of each list given.
    let of_credentials = UsageFilter {
        credential_ids: vec![first.clone(), own.clone()],
        ..all.clone()
    };
    assert_eq!(
        usage_of(&o, &scope, &of_credentials).await,
        [
            row(0, None, None, None, 31),
            row(60, None, None, None, 32),
            row(120, None, None, None, 4),
        ]
    );
    let of_child = UsageFilter {
        tenant_ids: vec![child.id.clone()],
        ..all.clone()
    };
    assert_eq!(
        usage_of(&o, &scope, &of_child).await,
        [
            row(0, None, None, None, 30),
            row(60, None, None, None, 30),
            row(120, None, None, None, 100),
        ]
    );
    let of_both = UsageFilter {
        credential_ids: vec![own.clone()],
        tenant_ids: vec![child.id.clone()],
        ..all.clone()
    };
    assert!(usage_of(&o, &scope, &of_both).await.is_empty());

    assert_eq!(
        usage_of(&o, &scope, &window(Granularity::Hour, 0, 3_600)).await,
        [row(0, None, None, None, 167)]
    );
}

async fn usage_is_read_in_the_scope_and_below_only(db: TestDb) {
    let o = owned(db).await;
    let root = o.plan.tenant.clone();
    let a = tenant_below(&o, &root, "usage-a").await;
    let a1 = tenant_below(&o, &a, "usage-a1").await;
    let b = tenant_below(&o, &root, "usage-b").await;
    let (in_root, in_a, in_a1, in_b) = (credential(), credential(), credential(), credential());
    o.store
        .add_usage(
            &[
                used_count(&in_root, &root, 0, UsageOutcome::Valid, 1),
                used_count(&in_a, &a, 0, UsageOutcome::Valid, 10),
                used_count(&in_a1, &a1, 0, UsageOutcome::Valid, 100),
                used_count(&in_b, &b, 0, UsageOutcome::Valid, 1_000),
            ],
            &[],
        )
        .await
        .unwrap();
    let all = window(Granularity::Minute, 0, 60);
    let by_tenant = UsageFilter {
        by_tenant: true,
        ..all.clone()
    };

    assert_eq!(
        usage_of(&o, &usage_scope(&o, &a), &by_tenant).await,
        sorted(vec![
            row(0, None, Some(&a), None, 10),
            row(0, None, Some(&a1), None, 100),
        ]),
        "a tenant sees its own usage and its descendants', not its parent's or its sibling's"
    );
    for (tenant, total) in [(&root, 1_111), (&a, 110), (&a1, 100), (&b, 1_000)] {
        assert_eq!(
            usage_of(&o, &usage_scope(&o, tenant), &all).await,
            [row(0, None, None, None, total)],
            "{}",
            tenant.slug.as_str()
        );
    }
    // Naming what lies outside the scope finds nothing.
    for outside in [
        UsageFilter {
            tenant_ids: vec![b.id.clone(), root.id.clone()],
            ..all.clone()
        },
        UsageFilter {
            credential_ids: vec![in_b.clone(), in_root.clone()],
            ..all.clone()
        },
    ] {
        assert!(
            usage_of(&o, &usage_scope(&o, &a), &outside)
                .await
                .is_empty()
        );
    }
}

async fn rolling_up_goes_a_credentials_hour_at_a_time_and_reads_stay_exact(db: TestDb) {
    use UsageOutcome::{Forbidden, Valid};
    let o = owned(db).await;
    let root = o.plan.tenant.clone();
    let scope = usage_scope(&o, &root);
    // 500 credentials once each in hour 0; one credential every minute of hour 1, two outcomes
    // (120 minute buckets); and once in hour 2.
    let quiet: Vec<CredentialId> = (0..500).map(|_| credential()).collect();
    let busy = credential();
    let mut counts: Vec<UsageCount> = quiet
        .iter()
        .enumerate()
        .map(|(i, c)| used_count(c, &root, (i as i64 % 60) * 60, Valid, 1))
        .collect();
    for minute in 0..60 {
        counts.push(used_count(&busy, &root, 3_600 + minute * 60, Valid, 2));
        counts.push(used_count(&busy, &root, 3_600 + minute * 60, Forbidden, 1));
    }
    counts.push(used_count(&busy, &root, 7_200, Valid, 5));
    o.store.add_usage(&counts, &[]).await.unwrap();
    let hours = window(Granularity::Hour, 0, 86_400);
    let busy_hours = UsageFilter {
        credential_ids: vec![busy.clone()],
        by_outcome: true,
        ..hours.clone()
    };
    let check = async |when: &str| {
        assert_eq!(
            usage_of(&o, &scope, &hours).await,
            [
                row(0, None, None, None, 500),
                row(3_600, None, None, None, 180),
                row(7_200, None, None, None, 5),
            ],
            "{when}"
        );
        assert_eq!(
            usage_of(&o, &scope, &busy_hours).await,
            [
                row(3_600, None, None, Some(Forbidden), 60),
                row(3_600, None, None, Some(Valid), 120),
                row(7_200, None, None, Some(Valid), 5),
            ],
            "{when}"
        );
        assert_eq!(
            usage_of(&o, &scope, &window(Granularity::Day, 0, 86_400)).await,
            [row(0, None, None, None, 685)],
            "{when}"
        );
    };
    check("before").await;

    // A full chunk ends where a credential's hour would be cut: that hour waits for the next.
    let roll = |limit| o.store.roll_up_usage(day_at(7_200), limit);
    assert_eq!(
        roll(1).await.unwrap(),
        420,
        "raised to 421, the last one left"
    );
    check("between chunks").await;
    assert_eq!(roll(421).await.unwrap(), 80 + 120);
    check("after").await;
    assert_eq!(roll(421).await.unwrap(), 0, "hour 2 is not before the time");

    // The minutes rolled up can go; what they counted stays in hours and days.
    let far = day_at(10 * 86_400);
    assert_eq!(
        o.store
            .prune_usage(Granularity::Minute, far, 10_000)
            .await
            .unwrap(),
        620
    );
    check("minutes pruned").await;
    assert_eq!(
        usage_of(&o, &scope, &window(Granularity::Minute, 0, 86_400))
            .await
            .len(),
        1,
        "hour 2's minute, not rolled up"
    );

    // A minute of an hour already rolled up is added to its hour and day by its batch.
    let late = [used_count(&quiet[7], &root, 60, Valid, 3)];
    o.store.add_usage(&late, &[]).await.unwrap();
    assert_eq!(
        usage_of(&o, &scope, &hours).await[0],
        row(0, None, None, None, 503)
    );
    assert_eq!(
        usage_of(&o, &scope, &window(Granularity::Day, 0, 86_400)).await,
        [row(0, None, None, None, 688)]
    );
    assert_eq!(roll(421).await.unwrap(), 0, "nothing to roll up twice");
    assert_eq!(
        usage_of(&o, &scope, &window(Granularity::Day, 0, 86_400)).await,
        [row(0, None, None, None, 688)]
    );
}

/// The migration that has hours and days rolled up from minutes keeps what was stored before it:
/// those minutes were added to their hours and days when they were written, so none is rolled up
/// again; and a minute of the same hour written after it is added to that hour by its batch.
async fn usage_stored_before_the_roll_up_is_not_counted_twice(db: TestDb) {
    let (credential_id, tenant_id) = (credential(), TenantId::generate(NOW).unwrap());
    let hour = day_at(0).unix();
    let rows = [
        ("usage_minutes", day_at(60).unix()),
        ("usage_hours", hour),
        ("usage_days", hour),
    ];
    // What the rows say once migrated: the position, the minutes' hours, the hours' sum.
    let state = "SELECT (SELECT hour FROM usage_rolled) AS rolled,
                        (SELECT credential_id FROM usage_rolled) AS past,
                        (SELECT min(hour) FROM usage_minutes) AS hour,
                        (SELECT CAST(sum(count) AS BIGINT) FROM usage_hours) AS total";
    macro_rules! on {
        ($pool:expr, $migrator:expr, $version:expr) => {{
            let pool = $pool;
            migrations_before($migrator, $version)
                .run(&pool)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO tenants (id, name, slug, status, created_at, path)
                 VALUES ($1, 'Before', 'before', 'active', 0, '/' || $1 || '/')",
            )
            .bind(tenant_id.as_str())
            .execute(&pool)
            .await
            .unwrap();
            for (table, start) in rows {
                sqlx::query(&format!(
                    "INSERT INTO {table} (start, credential_id, outcome, tenant_id, count)
                     VALUES ($1, $2, 'valid', $3, 5)"
                ))
                .bind(start)
                .bind(credential_id.as_str())
                .bind(tenant_id.as_str())
                .execute(&pool)
                .await
                .unwrap();
            }
            let store = db.open(Arc::new(Recorder::default())).await;
            let far = day_at(10 * 86_400);
            assert_eq!(store.roll_up_usage(far, 1_000).await.unwrap(), 0);
            let late = UsageCount {
                credential_id: credential_id.clone(),
                tenant_id: tenant_id.clone(),
                minute: day_at(120),
                outcome: UsageOutcome::Valid,
                count: 2,
            };
            store.add_usage(&[late], &[]).await.unwrap();
            assert_eq!(store.roll_up_usage(far, 1_000).await.unwrap(), 0);
            let row = sqlx::query(state).fetch_one(&pool).await.unwrap();
            let (rolled, past, minutes_hour, total): (i64, String, i64, i64) = (
                sqlx::Row::get(&row, "rolled"),
                sqlx::Row::get(&row, "past"),
                sqlx::Row::get(&row, "hour"),
                sqlx::Row::get(&row, "total"),
            );
            assert_eq!(
                (rolled, past.as_str()),
                (hour + 3_600, ""),
                "past what was there"
            );
            assert_eq!(minutes_hour, hour);
            assert_eq!(total, 7, "the hour counted once, and the minute after");
            pool.close().await;
        }};
    }
    if db.url.starts_with("sqlite:") {
        std::fs::create_dir_all(db.dir().join("nested")).unwrap();
        let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&db.url)
            .unwrap()
            .create_if_missing(true);
        on!(
            sqlx::SqlitePool::connect_with(options).await.unwrap(),
            &crate::sqlite::MIGRATOR,
            17
        );
    } else {
        on!(
            sqlx::PgPool::connect(&db.url).await.unwrap(),
            &crate::postgres::MIGRATOR,
            19
        );
    }
}

async fn pruning_usage_deletes_the_oldest_buckets_at_most_a_limit_at_a_time(db: TestDb) {
    use UsageOutcome::{Expired, Valid};
    let o = owned(db).await;
    let root = o.plan.tenant.clone();
    let c = credential();
    let mut counts = vec![used_count(&c, &root, 0, Expired, 1)];
    counts.extend((0..5).map(|minute| used_count(&c, &root, minute * 60, Valid, 1)));
    o.store.add_usage(&counts, &[]).await.unwrap();
    let scope = usage_scope(&o, &root);
    let starts = |rows: Vec<Row>| rows.into_iter().map(|r| r.0).collect::<Vec<_>>();
    let minutes = UsageFilter {
        by_outcome: true,
        ..window(Granularity::Minute, 0, 3_600)
    };
    assert_eq!(
        o.store
            .prune_usage(Granularity::Minute, day_at(180), 10)
            .await
            .unwrap(),
        0,
        "minutes not yet rolled up into their hours and days stay"
    );
    roll_up(&o, 3_600).await;

    assert_eq!(
        o.store
            .prune_usage(Granularity::Minute, day_at(180), 2)
            .await
            .unwrap(),
        2,
        "at most the limit"
    );
    assert_eq!(usage_of(&o, &scope, &minutes).await.len(), 4);
    assert_eq!(
        o.store
            .prune_usage(Granularity::Minute, day_at(180), 10)
            .await
            .unwrap(),
        2,
        "only what starts before the time"
    );
    assert_eq!(starts(usage_of(&o, &scope, &minutes).await), [180, 240]);
    for (before, limit) in [(180, 10), (3_600, 0)] {
        assert_eq!(
            o.store
                .prune_usage(Granularity::Minute, day_at(before), limit)
                .await
                .unwrap(),
            0
        );
    }
    assert_eq!(starts(usage_of(&o, &scope, &minutes).await), [180, 240]);

    // Each size is pruned on its own.
    let hours = UsageFilter {
        by_outcome: true,
        ..window(Granularity::Hour, 0, 86_400)
    };
    assert_eq!(
        usage_of(&o, &scope, &hours).await,
        [
            row(0, None, None, Some(Expired), 1),
            row(0, None, None, Some(Valid), 5),
        ]
    );
    assert_eq!(
        o.store
            .prune_usage(Granularity::Hour, day_at(3_600), 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(usage_of(&o, &scope, &hours).await.len(), 1);
    assert_eq!(
        usage_of(&o, &scope, &window(Granularity::Day, 0, 86_400)).await,
        [row(0, None, None, None, 6)]
    );
}

async fn deleting_a_tenant_takes_its_usage(db: TestDb) {
    let o = owned(db).await;
    let root = o.plan.tenant.clone();
    let child = tenant_below(&o, &root, "usage-gone").await;
    let (in_root, in_child) = (credential(), credential());
    o.store
        .add_usage(
            &[
                used_count(&in_root, &root, 0, UsageOutcome::Valid, 1),
                used_count(&in_child, &child, 0, UsageOutcome::Valid, 2),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(usage_row_tenants(&o._db).await.len(), 2, "minutes");
    roll_up(&o, 3_600).await;
    assert_eq!(
        usage_row_tenants(&o._db).await.len(),
        6,
        "minutes, and the hours and days rolled up from them"
    );

    let tenants = o.caller.require::<perm::TenantsWrite>().unwrap();
    assert_eq!(
        o.store
            .delete_tenant(&tenants, &child.id, &event(&tenants, "tenant.delete"))
            .await
            .unwrap(),
        Deletion::Deleted
    );
    assert_eq!(
        usage_row_tenants(&o._db).await,
        vec![root.id.to_string(); 3],
        "a minute, an hour and a day bucket of the root's, none of the deleted tenant's"
    );

    // A node that counted the deleted tenant's credential before it went is not refused (it would
    // keep the counts and fail for ever): those counts are dropped, the rest of the batch added
    // (to its hour and day as well: the hour was rolled up).
    o.store
        .add_usage(
            &[
                used_count(&in_child, &child, 60, UsageOutcome::Valid, 5),
                used_count(&in_root, &root, 60, UsageOutcome::Valid, 3),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        usage_row_tenants(&o._db).await,
        vec![root.id.to_string(); 4]
    );
    assert_eq!(
        usage_of(
            &o,
            &usage_scope(&o, &root),
            &window(Granularity::Hour, 0, 3_600)
        )
        .await,
        [row(0, None, None, None, 4)]
    );
}

/// On PostgreSQL usage rows do not check their tenant by a foreign key (migration 0018); a batch
/// and a tenant's deletion that meet still leave no usage of a deleted tenant behind. Each side
/// is held open mid-transaction by a connection of the test's while the other runs.
#[tokio::test]
async fn postgres_usage_of_a_tenant_deleted_meanwhile_is_not_left_behind() {
    if !keygate_testkit::postgres_or_skip() {
        return;
    }
    let o = owned(TestDb::postgres().await).await;
    let root = o.plan.tenant.clone();
    let pool = sqlx::PgPool::connect(&o._db.url).await.unwrap();
    let tenants = o.caller.require::<perm::TenantsWrite>().unwrap();
    let rows_of = |tenant: &Tenant| {
        let (pool, id) = (pool.clone(), tenant.id.to_string());
        async move {
            let rows: i64 = sqlx::query_scalar(
                "SELECT (SELECT count(*) FROM usage_minutes WHERE tenant_id = $1)
                      + (SELECT count(*) FROM usage_hours WHERE tenant_id = $1)
                      + (SELECT count(*) FROM usage_days WHERE tenant_id = $1)",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
            rows
        }
    };

    // A deletion under way when a batch comes: the batch waits for it and drops the counts.
    let child = tenant_below(&o, &root, "deleted-first").await;
    let mut deleting = pool.begin().await.unwrap();
    sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(child.id.as_str())
        .execute(&mut *deleting)
        .await
        .unwrap();
    let counts = [
        used_count(&credential(), &child, 0, UsageOutcome::Valid, 1),
        used_count(&credential(), &root, 0, UsageOutcome::Valid, 1),
    ];
    let store = o.store.clone();
    let batch = tokio::spawn(async move { store.add_usage(&counts, &[]).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    deleting.commit().await.unwrap();
    batch.await.unwrap().unwrap();
    assert_eq!(rows_of(&child).await, 0, "no usage of the deleted tenant");
    assert_eq!(rows_of(&root).await, 1, "the rest of the batch is added");

    // A batch under way when a deletion comes: the deletion waits for it and takes its rows.
    let child = tenant_below(&o, &root, "deleted-second").await;
    let mut batch = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM tenants WHERE id = $1 FOR KEY SHARE")
        .bind(child.id.as_str())
        .execute(&mut *batch)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO usage_minutes (hour, start, credential_id, outcome, tenant_id, count)
         VALUES (0, 0, 'tok_x', 'valid', $1, 1)",
    )
    .bind(child.id.as_str())
    .execute(&mut *batch)
    .await
    .unwrap();
    let store = o.store.clone();
    let (id, event) = (child.id.clone(), event(&tenants, "tenant.delete"));
    let deletion = tokio::spawn(async move { store.delete_tenant(&tenants, &id, &event).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    batch.commit().await.unwrap();
    assert_eq!(deletion.await.unwrap().unwrap(), Deletion::Deleted);
    assert_eq!(rows_of(&child).await, 0, "the batch's rows went with it");
    pool.close().await;
}

/// On PostgreSQL several nodes write batches and roll up at once: a batch holds the roll-up's
/// position shared, the roll-up holds it alone, so a minute is added to its hour once, by the
/// roll-up or by its batch, never by neither. Each side is held open mid-transaction by a
/// connection of the test's while the other runs.
#[tokio::test]
async fn postgres_a_roll_up_and_a_batch_wait_for_each_other() {
    if !keygate_testkit::postgres_or_skip() {
        return;
    }
    let o = owned(TestDb::postgres().await).await;
    let root = o.plan.tenant.clone();
    let scope = usage_scope(&o, &root);
    let pool = sqlx::PgPool::connect(&o._db.url).await.unwrap();
    let hour_total = async || usage_of(&o, &scope, &window(Granularity::Hour, 0, 3_600)).await;
    let rolled = async || -> i64 {
        sqlx::query_scalar("SELECT coalesce(sum(count), 0)::BIGINT FROM usage_hours")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let early = credential();
    o.store
        .add_usage(&[used_count(&early, &root, 0, UsageOutcome::Valid, 1)], &[])
        .await
        .unwrap();

    // A batch under way when the roll-up comes: the roll-up waits for it and takes its minute.
    let mut batch = pool.begin().await.unwrap();
    sqlx::query("SELECT hour FROM usage_rolled FOR SHARE")
        .execute(&mut *batch)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO usage_minutes (hour, start, credential_id, outcome, tenant_id, count)
         VALUES ($1, $1, $2, 'valid', $3, 2)",
    )
    .bind(day_at(0).unix())
    .bind(credential().as_str())
    .bind(root.id.as_str())
    .execute(&mut *batch)
    .await
    .unwrap();
    let store = o.store.clone();
    let roll_up = tokio::spawn(async move { store.roll_up_usage(day_at(3_600), 1_000).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!roll_up.is_finished(), "the roll-up waits for the batch");
    batch.commit().await.unwrap();
    assert_eq!(roll_up.await.unwrap().unwrap(), 2);
    assert_eq!(rolled().await, 3, "both minutes in their hour");
    assert_eq!(hour_total().await, [row(0, None, None, None, 3)]);

    // A roll-up under way when a batch comes: the batch waits, and finds its minute's hour
    // rolled up past it, so it adds the minute to the hour itself.
    let mut rolling = pool.begin().await.unwrap();
    sqlx::query("SELECT hour FROM usage_rolled FOR UPDATE")
        .execute(&mut *rolling)
        .await
        .unwrap();
    let store = o.store.clone();
    let late = [used_count(&credential(), &root, 60, UsageOutcome::Valid, 4)];
    let batch = tokio::spawn(async move { store.add_usage(&late, &[]).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!batch.is_finished(), "the batch waits for the roll-up");
    // As if the roll-up had gone past every credential of the hour.
    sqlx::query("UPDATE usage_rolled SET hour = $1, credential_id = '~'")
        .bind(day_at(0).unix())
        .execute(&mut *rolling)
        .await
        .unwrap();
    rolling.commit().await.unwrap();
    batch.await.unwrap().unwrap();
    assert_eq!(rolled().await, 7, "the batch added its minute to its hour");
    assert_eq!(hour_total().await, [row(0, None, None, None, 7)]);
    pool.close().await;
}

/// Every node rolls up: two at once on PostgreSQL take turns, each chunk rolled up by one of them.
#[tokio::test]
async fn postgres_two_nodes_rolling_up_at_once_count_each_minute_once() {
    if !keygate_testkit::postgres_or_skip() {
        return;
    }
    let o = owned(TestDb::postgres().await).await;
    let root = o.plan.tenant.clone();
    let counts: Vec<UsageCount> = (0..3_000)
        .map(|i| used_count(&credential(), &root, (i % 60) * 60, UsageOutcome::Valid, 1))
        .collect();
    o.store.add_usage(&counts, &[]).await.unwrap();
    // Another node on the same database.
    let other = o._db.open(Arc::new(Recorder::default())).await;
    let node = |store: Arc<dyn Backend>| {
        tokio::spawn(async move {
            let mut rolled = 0;
            loop {
                match store.roll_up_usage(day_at(3_600), 421).await.unwrap() {
                    0 => return rolled,
                    chunk => rolled += chunk,
                }
            }
        })
    };
    let (a, b) = (node(o.store.clone()), node(other));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(
        a + b,
        3_000,
        "each minute rolled up by one node ({a} and {b})"
    );
    let scope = usage_scope(&o, &root);
    assert_eq!(
        usage_of(&o, &scope, &window(Granularity::Hour, 0, 3_600)).await,
        [row(0, None, None, None, 3_000)]
    );
    let pool = sqlx::PgPool::connect(&o._db.url).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT CAST(sum(count) AS BIGINT) FROM usage_hours")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 3_000, "in the hour table once");
    pool.close().await;
}

async fn a_batch_of_usage_is_added_whole_or_not_at_all(db: TestDb) {
    let o = owned(db).await;
    let root = o.plan.tenant.clone();
    let scope = usage_scope(&o, &root);
    let c = credential();
    // More minutes than one statement carries on either backend (200 rows on SQLite, 1 000 on
    // PostgreSQL): 22 1/2 hours of them.
    let minutes: Vec<UsageCount> = (0..1_350)
        .map(|minute| used_count(&c, &root, minute * 60, UsageOutcome::Valid, 1))
        .collect();
    // And more last uses: of credentials no longer there, made before the bootstrap token and
    // so ahead of it in id order, and then the token's, in the last statement.
    let token = &o.plan.token;
    let gone = Timestamp::from_unix(NOW.unix() - 86_400);
    let mut uses: Vec<LastUse> = (0..1_200)
        .map(|_| LastUse {
            credential_id: CredentialId::generate_for(token.kind, gone).unwrap(),
            at: NOW,
            ip: None,
        })
        .collect();
    let token_used = Timestamp::from_unix(NOW.unix() + 30);
    uses.push(LastUse {
        credential_id: token.id.clone(),
        at: token_used,
        ip: Some("198.51.100.4".parse().unwrap()),
    });
    o.store.add_usage(&minutes, &uses).await.unwrap();
    let stored = usage_of(&o, &scope, &window(Granularity::Minute, 0, 86_400)).await;
    assert_eq!(stored.len(), 1_350);
    assert!(stored.iter().all(|r| r.4 == 1));
    let hours = usage_of(&o, &scope, &window(Granularity::Hour, 0, 86_400)).await;
    let mut whole_hours = vec![60; 22];
    whole_hours.push(30);
    assert_eq!(hours.iter().map(|r| r.4).collect::<Vec<_>>(), whole_hours);
    let record = o.store.find_credential(&token.hash).await.unwrap().unwrap();
    assert_eq!(record.credential.last_used_at, Some(token_used));
    assert_eq!(
        record.credential.last_used_ip,
        Some("198.51.100.4".parse().unwrap())
    );

    // A batch whose last statement fails: a minute that cannot hold what is added to it. The
    // statements before it, more minutes and the last uses, are rolled back with it.
    let (other, full) = (credential(), credential());
    let top = [used_count(
        &full,
        &root,
        86_340,
        UsageOutcome::Valid,
        i64::MAX as u64 - 1,
    )];
    o.store.add_usage(&top, &[]).await.unwrap();
    let mut overflowing: Vec<UsageCount> = (0..1_350)
        .map(|minute| used_count(&other, &root, minute * 60, UsageOutcome::Valid, 1))
        .collect();
    overflowing.push(used_count(&full, &root, 86_340, UsageOutcome::Valid, 2));
    let later = LastUse {
        credential_id: token.id.clone(),
        at: Timestamp::from_unix(NOW.unix() + 60),
        ip: None,
    };
    assert!(o.store.add_usage(&overflowing, &[later]).await.is_err());
    let of_other = UsageFilter {
        credential_ids: vec![other],
        ..window(Granularity::Minute, 0, 86_400)
    };
    assert!(usage_of(&o, &scope, &of_other).await.is_empty());
    let record = o.store.find_credential(&token.hash).await.unwrap().unwrap();
    assert_eq!(record.credential.last_used_at, Some(token_used));
    let of_c = UsageFilter {
        credential_ids: vec![c],
        ..window(Granularity::Day, 0, 86_400)
    };
    assert_eq!(
        usage_of(&o, &scope, &of_c).await,
        [row(0, None, None, None, 1_350)]
    );
}

/// Puts a quota row as the API will: `lim` credits, its window starting at `window`.
async fn quota_row(db: &TestDb, subject: &str, tenant: &TenantId, lim: i64, window: Timestamp) {
    const SQL: &str =
        "INSERT INTO quotas (subject_id, tenant_id, lim, period, anchor, window_start)
                       VALUES ($1, $2, $3, 'hour', $4, $4)";
    macro_rules! insert {
        ($pool:expr) => {{
            let pool = $pool;
            sqlx::query(SQL)
                .bind(subject)
                .bind(tenant.as_str())
                .bind(lim)
                .bind(window.unix())
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }};
    }
    if db.url.starts_with("postgres") {
        insert!(sqlx::PgPool::connect(&db.url()).await.unwrap());
    } else {
        insert!(sqlx::SqlitePool::connect(&db.url()).await.unwrap());
    }
}

async fn quota_takes_shrink_to_what_is_left_and_a_new_window_starts_at_zero(db: TestDb) {
    let o = owned(db).await;
    let hour = NOW;
    let next = Timestamp::from_unix(NOW.unix() + 3600);
    quota_row(&o._db, "tok_q", &o.plan.tenant.id, 10, hour).await;
    let take = |window, need, want| o.store.take_credits("tok_q", window, need, want, NOW);
    let taken = |taken, remaining| Some(Taken { taken, remaining });

    assert_eq!(take(hour, 1, 4).await.unwrap(), taken(4, 6));
    assert_eq!(take(hour, 1, 4).await.unwrap(), taken(4, 2));
    assert_eq!(take(hour, 1, 4).await.unwrap(), taken(2, 0), "what is left");
    assert_eq!(take(hour, 1, 4).await.unwrap(), taken(0, 0), "nothing left");
    // Given back, the credits can be taken again; never more than was taken.
    o.store.give_back_credits("tok_q", hour, 3).await.unwrap();
    assert_eq!(
        take(hour, 5, 5).await.unwrap(),
        taken(0, 3),
        "fewer than needed: none"
    );
    assert_eq!(
        take(hour, 2, 1).await.unwrap(),
        taken(2, 1),
        "at least what is needed"
    );
    o.store.give_back_credits("tok_q", hour, 50).await.unwrap();
    assert_eq!(
        take(hour, 1, 100).await.unwrap(),
        taken(10, 0),
        "the limit, not more"
    );

    // The next hour starts at zero; a give-back for the hour before changes nothing.
    assert_eq!(take(next, 1, 3).await.unwrap(), taken(3, 7));
    o.store.give_back_credits("tok_q", hour, 3).await.unwrap();
    assert_eq!(take(next, 1, 100).await.unwrap(), taken(7, 0));
    // A node whose clock is behind takes from the newer window, counted there.
    assert_eq!(take(hour, 1, 1).await.unwrap(), taken(0, 0));
    // A cost of nothing needs nothing and takes nothing.
    assert_eq!(take(next, 0, 0).await.unwrap(), taken(0, 0));

    assert_eq!(
        o.store
            .take_credits("tok_none", hour, 1, 1, NOW)
            .await
            .unwrap(),
        None,
        "no quota"
    );
}

/// Two stores on one database (two nodes), 8 tasks each, taking 1 to 3 credits at a time from a
/// quota of 1 000 until it is spent: exactly 1 000 are taken between them.
async fn quota_takes_from_two_nodes_at_once_never_pass_the_limit(db: TestDb) {
    let o = owned(db).await;
    quota_row(&o._db, "tok_q", &o.plan.tenant.id, 1_000, NOW).await;
    let other = o._db.open(Arc::default()).await;
    let mut tasks = Vec::new();
    for (i, store) in [o.store.clone(), other]
        .into_iter()
        .cycle()
        .take(16)
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            let want = 1 + i as u64 % 3;
            let mut taken = 0;
            loop {
                let got = store
                    .take_credits("tok_q", NOW, 1, want, NOW)
                    .await
                    .unwrap()
                    .unwrap();
                if got.taken == 0 {
                    return taken;
                }
                assert!(got.taken <= want);
                taken += got.taken;
            }
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert_eq!(total, 1_000);
}

fn hourly(subject: &str, limit: u64, anchor: Timestamp) -> keygate_core::quota::StoredQuota {
    keygate_core::quota::StoredQuota::fresh(
        subject,
        keygate_core::quota::Quota {
            limit,
            period: keygate_core::quota::QuotaPeriod::Hour,
            anchor,
        },
        NOW,
    )
}

/// A token's quota and a child tenant's pool: set only where the grant reaches (a tenant's pool by
/// an ancestor, never by itself), announced, read back with the credential and with verification's
/// tenant line; replaced with the same period it keeps its count, with another it starts again; a
/// roll moves it to the successor; deleting the quota removes it.
async fn quotas_are_set_where_the_grant_reaches_and_read_with_what_they_limit(db: TestDb) {
    use keygate_core::store::QuotaTarget;
    let o = owned(db).await;
    let tokens = o.caller.require::<perm::TokensWrite>().unwrap();
    let token = o.plan.token.id.clone();
    let quota = hourly(token.as_str(), 100, NOW);
    let set = o
        .store
        .set_quota(
            QuotaTarget::Token(&tokens, &token),
            Some(&quota),
            &event(&tokens, "quota.update"),
        )
        .await
        .unwrap();
    assert_eq!(set, Some(()));
    assert_eq!(changes(&o.recorder), [Change::Credential(token.clone())]);
    let read = o
        .store
        .get_token(&tokens.reads(), &token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.quota.as_ref(), Some(&quota));
    let found = o
        .store
        .find_credential(&o.plan.token.hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.credential.quota.as_ref(), Some(&quota));

    // Some spent; the same period keeps the count, another starts again.
    o.store
        .take_credits(token.as_str(), NOW, 1, 30, NOW)
        .await
        .unwrap();
    let raised = hourly(token.as_str(), 200, NOW);
    o.store
        .set_quota(
            QuotaTarget::Token(&tokens, &token),
            Some(&raised),
            &event(&tokens, "quota.update"),
        )
        .await
        .unwrap();
    let stored = o.store.stored_quota(token.as_str()).await.unwrap().unwrap();
    assert_eq!((stored.quota.limit, stored.used), (200, 30));
    let moved = hourly(token.as_str(), 200, Timestamp::from_unix(NOW.unix() - 60));
    o.store
        .set_quota(
            QuotaTarget::Token(&tokens, &token),
            Some(&moved),
            &event(&tokens, "quota.update"),
        )
        .await
        .unwrap();
    let stored = o.store.stored_quota(token.as_str()).await.unwrap().unwrap();
    assert_eq!(stored.used, 0, "a new anchor starts the count again");

    // A child's pool: set by its parent, not by the child, nor from beside it.
    let root = o.plan.tenant.clone();
    let child = tenant_below(&o, &root, "child").await;
    let sibling = tenant_below(&o, &root, "sibling").await;
    changes(&o.recorder);
    let pool = hourly(child.id.as_str(), 1_000, NOW);
    let from_root = o.caller.require::<perm::TenantsWrite>().unwrap();
    let as_child = acting_in(&o, &child)
        .require::<perm::TenantsWrite>()
        .unwrap();
    let as_sibling = acting_in(&o, &sibling)
        .require::<perm::TenantsWrite>()
        .unwrap();
    for grant in [&as_child, &as_sibling] {
        let refused = o
            .store
            .set_quota(
                QuotaTarget::Tenant(grant, &child.id),
                Some(&pool),
                &event(&tokens, "quota.update"),
            )
            .await
            .unwrap();
        assert_eq!(refused, None);
    }
    let set = o
        .store
        .set_quota(
            QuotaTarget::Tenant(&from_root, &child.id),
            Some(&pool),
            &event(&tokens, "quota.update"),
        )
        .await
        .unwrap();
    assert_eq!(set, Some(()));
    assert_eq!(changes(&o.recorder), [Change::Tenant(child.id.clone())]);
    let read = o
        .store
        .get_tenant(&from_root.reads(), child.id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.quota.as_ref(), Some(&pool));

    // Another tenant's token is not found from here.
    let child_tokens = acting_in(&o, &child)
        .require::<perm::TokensWrite>()
        .unwrap();
    let refused = o
        .store
        .set_quota(
            QuotaTarget::Token(&child_tokens, &token),
            Some(&quota),
            &event(&tokens, "quota.update"),
        )
        .await
        .unwrap();
    assert_eq!(refused, None);

    // A roll passes the quota and its count to the successor.
    o.store
        .take_credits(token.as_str(), NOW, 1, 5, NOW)
        .await
        .unwrap();
    let previous = o
        .store
        .get_token(&tokens.reads(), &token)
        .await
        .unwrap()
        .unwrap();
    let (mut successor, _) = keygate_core::model::Credential::issue(
        &format(),
        CredentialKind::Service,
        o.plan.tenant.id.clone(),
        "next".into(),
        None,
        NOW,
    )
    .unwrap();
    successor.role_id = previous.role_id.clone();
    successor.quota = previous
        .quota
        .clone()
        .map(|q| keygate_core::quota::StoredQuota {
            subject: successor.id.to_string(),
            ..q
        });
    o.store
        .roll_token(
            &tokens,
            &token,
            NOW,
            &successor,
            &event(&tokens, "token.roll"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.store.stored_quota(token.as_str()).await.unwrap(), None);
    let next = o
        .store
        .stored_quota(successor.id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((next.quota.limit, next.used), (200, 5));
    let rolled = o
        .store
        .get_token(&tokens.reads(), &token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rolled.quota.map(|q| q.subject),
        Some(successor.id.to_string()),
        "the rolled token spends from its successor's quota while it still works"
    );

    // Removed.
    o.store
        .set_quota(
            QuotaTarget::Token(&tokens, &successor.id),
            None,
            &event(&tokens, "quota.update"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        o.store.stored_quota(successor.id.as_str()).await.unwrap(),
        None
    );
}

/// A rate limit's schedule across nodes (GCRA's TAT): made by the first take, a burst and then
/// one request per interval between all takes, never past what the limit allows; pruned once its
/// TAT has passed.
async fn rate_limits_are_shared_schedules_made_by_their_first_take(db: TestDb) {
    use keygate_core::store::{RateCell, RateTaken};
    let o = owned(db).await;
    assert_eq!(o.store.shared_by_nodes(), o._db.url.starts_with("postgres"));
    // 10 a second: one every 100 ms, a burst of 10.
    let cell = RateCell {
        interval_ms: 100,
        tolerance_ms: 900,
    };
    let t0 = NOW.unix() * 1000;
    let take = |now, want| o.store.take_rate("tok_r", cell, now, 1, want);
    let taken = |taken, tat_ms| RateTaken { taken, tat_ms };
    assert_eq!(take(t0, 4).await.unwrap(), taken(4, t0 + 400));
    assert_eq!(take(t0, 8).await.unwrap(), taken(6, t0 + 1_000));
    assert_eq!(
        take(t0, 1).await.unwrap(),
        taken(0, t0 + 1_000),
        "the burst is spent"
    );
    assert_eq!(take(t0 + 99, 1).await.unwrap(), taken(0, t0 + 1_000));
    assert_eq!(
        take(t0 + 100, 5).await.unwrap(),
        taken(1, t0 + 1_100),
        "one interval, one more"
    );
    assert_eq!(o.store.prune_rate_limits(t0 + 1_099).await.unwrap(), 0);
    assert_eq!(o.store.prune_rate_limits(t0 + 1_100).await.unwrap(), 1);
    assert_eq!(
        take(t0 + 5_000, 20).await.unwrap(),
        taken(10, t0 + 6_000),
        "pruned: a full burst again"
    );
}
