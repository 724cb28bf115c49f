//! Store tests, run against every backend this build can reach.

use std::sync::{Arc, Mutex};

use keygate_core::access::{Caller, perm};
use keygate_core::bootstrap;
use keygate_core::credential::{CredentialFormat, CredentialHash, Environment};
use keygate_core::id::CredentialId;
use keygate_core::permission::Catalog;
use keygate_core::store::{Change, ChangeListener, DynStore, StoreError};
use keygate_core::verify::Verified;
use keygate_core::{Timestamp, access::RequestMeta};

use crate::{StoreOptions, open};

#[derive(Default)]
struct Recorder(Mutex<Vec<Change>>);

impl ChangeListener for Recorder {
    fn changed(&self, change: &Change) {
        self.0.lock().unwrap().push(change.clone());
    }
}

const NOW: Timestamp = Timestamp::from_unix(1_800_000_000);

struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn url(&self) -> String {
        format!("sqlite://{}/nested/keygate.db", self.dir.path().display())
    }

    async fn open(&self, recorder: Arc<Recorder>) -> DynStore {
        open(&self.url(), &StoreOptions::default(), recorder)
            .await
            .unwrap()
    }
}

fn format() -> CredentialFormat {
    CredentialFormat::new("kg", Environment::Live).unwrap()
}

#[tokio::test]
async fn bootstrap_is_all_or_nothing_and_only_once() {
    let db = Sqlite::new();
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
    assert!(
        store
            .find_credential(&CredentialHash::of("kg_live_nothing"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn data_survives_reopening_and_secrets_never_reach_the_file() {
    let db = Sqlite::new();
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
    assert!(
        reopened
            .find_credential(&secrets.token.hash())
            .await
            .unwrap()
            .is_some()
    );
    reopened.close().await;

    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(db.dir.path().join("nested")).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        contains("owner@example.com"),
        "the check reads the real data"
    );
    assert!(!contains(secrets.token.expose()));
    assert!(!contains(&secrets.password));
}

#[tokio::test]
async fn revocation_is_scoped_to_the_grant_and_announced_after_commit() {
    let db = Sqlite::new();
    let recorder = Arc::new(Recorder::default());
    let store = db.open(recorder.clone()).await;
    let (plan, secrets) = bootstrap::plan(&format(), "owner@example.com", NOW).unwrap();
    store.bootstrap(&plan).await.unwrap();
    assert!(recorder.0.lock().unwrap().is_empty());

    let record = store
        .find_credential(&secrets.token.hash())
        .await
        .unwrap()
        .unwrap();
    let catalog = Catalog::new::<&str>(&[]).unwrap();
    let caller = Caller::new(Arc::new(Verified::resolve(&record, &catalog)));
    let grant = caller.require::<perm::TokensWrite>().unwrap();
    let event = grant
        .event("token.delete", None, NOW, &RequestMeta::default())
        .unwrap();

    let unknown = CredentialId::generate_for(record.credential.kind, NOW).unwrap();
    assert_eq!(
        store
            .revoke_credential(&grant, &unknown, NOW, &event)
            .await
            .unwrap(),
        None
    );
    assert!(recorder.0.lock().unwrap().is_empty());

    let id = record.credential.id.clone();
    assert_eq!(
        store
            .revoke_credential(&grant, &id, NOW, &event)
            .await
            .unwrap(),
        Some(())
    );
    assert_eq!(
        *recorder.0.lock().unwrap(),
        [Change::Credential(id.clone())]
    );
    let revoked = store
        .find_credential(&secrets.token.hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.credential.revoked_at, Some(NOW));
    // Revoking twice changes nothing and announces nothing.
    assert_eq!(
        store
            .revoke_credential(&grant, &id, NOW, &event)
            .await
            .unwrap(),
        None
    );
    assert_eq!(recorder.0.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn last_use_only_moves_forward() {
    let db = Sqlite::new();
    let store = db.open(Arc::default()).await;
    let (plan, secrets) = bootstrap::plan(&format(), "owner@example.com", NOW).unwrap();
    store.bootstrap(&plan).await.unwrap();
    let id = plan.token.id.clone();
    let later = Timestamp::from_unix(NOW.unix() + 60);
    store
        .record_last_used(&[(id.clone(), later)])
        .await
        .unwrap();
    store.record_last_used(&[(id.clone(), NOW)]).await.unwrap();
    let record = store
        .find_credential(&secrets.token.hash())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.credential.last_used_at, Some(later));
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_foreign_keys() {
    let db = Sqlite::new();
    let store = crate::SqliteStore::open(
        &db.url(),
        &StoreOptions::default(),
        Arc::new(Recorder::default()),
    )
    .await
    .unwrap();
    let (mode, foreign_keys) = store.pragmas().await.unwrap();
    assert_eq!(mode, "wal");
    assert!(foreign_keys);
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
