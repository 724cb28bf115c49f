//! Cache misses read together: while the store is reading some credentials, the misses that arrive
//! wait, and the next read takes all of them in one statement.
//!
//! At most as many reads run at once as the node has cores. A miss that finds fewer running
//! becomes a reader, but first yields to the runtime ([`YIELDS`] times): every other task that is
//! ready runs (the requests the node has already received, each up to its own miss), and so do
//! those that the runtime's poll of its sockets wakes; then the reader reads, with the misses that
//! queued behind it meanwhile. On a node at rest that is a few microseconds, and the miss reads
//! alone. A miss that finds every reader taken joins the queue. A reader done with its read hands
//! the queue (up to [`MOST`] misses) to the first miss in it, which reads them all at once and
//! hands on in turn. So under a storm of misses (a node started cold, a wave of keys never seen)
//! each read serves many, and what a read costs besides finding the rows (a trip to the store's
//! thread or a round trip to its server, a statement) is paid once per batch instead of once per
//! miss.
//!
//! The yields fill the first batches where reads are short. Without them a miss read the moment it
//! found the reader free, before the requests behind it on the same thread had been parsed: a node
//! started cold on one core, on SQLite, read under three misses a statement and spent its core
//! switching to SQLite's thread and back (13 000 switches a second). With them it answered 28 800
//! and 30 200 cold misses a second instead of 21 400 and 20 900 (`bench/cold-verify`, a million
//! stored, alternating), and 21 700 instead of 18 000 on PostgreSQL.
//!
//! More reads at once would not read faster: a read of a batch takes little more than a read of
//! one, and each read running takes a core (SQLite's thread, or the node's share of a round trip).
//! On one core, four readers instead of one answered 12 000 cold misses a second instead of 17 700
//! on SQLite, and 10 900 instead of 14 500 on PostgreSQL (`bench/cold-verify`, 200 000 stored).
//!
//! A miss that is dropped while it waits (its client went away) is skipped; a reader that is
//! dropped mid-read hands the queue on all the same, and the misses it had taken read alone.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_channel::oneshot;

use crate::credential::CredentialHash;
use crate::model::Credential;
use crate::store::{CredentialSource, MOST_HASHES_AT_ONCE, StoreError};

/// Misses in one read: as many as a store reads in one statement.
const MOST: usize = MOST_HASHES_AT_ONCE;

/// How many times a miss that finds a reader free yields before it reads: once for the tasks that
/// are ready, once more for those that the runtime's poll of its sockets woke (tokio runs a task
/// that yielded before them).
const YIELDS: usize = 2;

type Answer = Result<Option<Credential>, StoreError>;

/// What a queued miss is told: its credential, or that it reads now (the misses given with it, and
/// its own), in the place of the reader that handed on.
enum Turn {
    Answered(Box<Answer>),
    Read(Reading, Vec<Waiting>),
}

struct Waiting {
    hash: CredentialHash,
    turn: oneshot::Sender<Turn>,
}

#[derive(Default)]
struct Queue {
    reading: usize,
    waiting: VecDeque<Waiting>,
}

impl Queue {
    /// Up to `most` of the misses that still wait, first come first; those dropped are skipped.
    fn take(&mut self, most: usize) -> Vec<Waiting> {
        let mut taken = Vec::new();
        while taken.len() < most {
            match self.waiting.pop_front() {
                None => break,
                Some(miss) if miss.turn.is_canceled() => continue,
                Some(miss) => taken.push(miss),
            }
        }
        taken
    }
}

/// The misses of one verifier.
pub struct Misses {
    queue: Arc<Mutex<Queue>>,
    readers: usize,
}

impl Default for Misses {
    /// As many readers as the cores this process may run on.
    fn default() -> Self {
        Self::with_readers(std::thread::available_parallelism().map_or(1, |cores| cores.get()))
    }
}

impl Misses {
    /// At most `readers` reads at once (at least one).
    pub fn with_readers(readers: usize) -> Self {
        Self {
            queue: Arc::default(),
            readers: readers.max(1),
        }
    }

    /// The credential whose current or previous secret has `hash`, read with whatever other misses
    /// are waiting; `None` if the store knows no such credential.
    pub async fn find(&self, store: &dyn CredentialSource, hash: CredentialHash) -> Answer {
        let wait = {
            let mut queue = lock(&self.queue);
            if queue.reading < self.readers {
                queue.reading += 1;
                None
            } else {
                let (turn, wait) = oneshot::channel();
                queue.waiting.push_back(Waiting { hash, turn });
                Some(wait)
            }
        };
        let (reading, others) = match wait {
            None => {
                let reading = Reading(Arc::clone(&self.queue));
                for _ in 0..YIELDS {
                    tokio::task::yield_now().await;
                }
                let others = lock(&self.queue).take(MOST - 1);
                (reading, others)
            }
            Some(wait) => match wait.await {
                Ok(Turn::Answered(answer)) => return *answer,
                Ok(Turn::Read(reading, others)) => (reading, others),
                // The reader that had taken it was dropped mid-read.
                Err(oneshot::Canceled) => return read_alone(store, hash).await,
            },
        };
        let mut hashes = Vec::with_capacity(others.len() + 1);
        hashes.push(hash);
        hashes.extend(others.iter().map(|waiting| waiting.hash));
        let found = store.find_credentials_alone(&hashes).await;
        drop(reading);
        for waiting in others {
            // A miss dropped since has nobody to tell.
            let _ = waiting
                .turn
                .send(Turn::Answered(Box::new(answer_for(&found, &waiting.hash))));
        }
        answer_for(&found, &hash)
    }
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(|p| p.into_inner())
}

/// A read, in progress or handed to a miss that has not started it: when it ends (done, or
/// dropped), the queue goes to the first miss in it that still waits, or there is one reader
/// fewer.
struct Reading(Arc<Mutex<Queue>>);

impl Drop for Reading {
    fn drop(&mut self) {
        let (next, batch) = {
            let mut queue = lock(&self.0);
            let Some(next) = queue.take(1).pop() else {
                queue.reading -= 1;
                return;
            };
            (next, queue.take(MOST - 1))
        };
        // Should `next` be dropped by now, the message is dropped with the read in it, which
        // hands on again (the queue is not locked here), and each miss of the batch reads alone.
        let _ = next
            .turn
            .send(Turn::Read(Reading(Arc::clone(&self.0)), batch));
    }
}

async fn read_alone(store: &dyn CredentialSource, hash: CredentialHash) -> Answer {
    let found = store
        .find_credentials_alone(std::slice::from_ref(&hash))
        .await;
    answer_for(&found, &hash)
}

/// The credential in `found` that `hash` is the current or previous secret of.
fn answer_for(found: &Result<Vec<Credential>, StoreError>, hash: &CredentialHash) -> Answer {
    let found = found.as_ref().map_err(Clone::clone)?;
    Ok(found
        .iter()
        .find(|credential| {
            credential.hash == *hash
                || credential
                    .previous_secret
                    .as_ref()
                    .is_some_and(|previous| previous.hash == *hash)
        })
        .cloned())
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use tokio::sync::Semaphore;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::Timestamp;
    use crate::credential::{CredentialFormat, CredentialKind, Environment};
    use crate::id::{CredentialId, TenantId};
    use crate::jwt::StoredSigningKey;
    use crate::store::{AccessTokenRecord, CredentialRecord, SigningKeySource};

    const NOW: Timestamp = Timestamp::from_unix(1_800_000_000);
    const READERS: usize = 4;

    /// A store whose reads of credentials wait for a permit each, and which remembers how many
    /// hashes each read was given.
    struct Held {
        credentials: Vec<(Credential, CredentialHash)>,
        reads: Mutex<Vec<usize>>,
        permits: Semaphore,
    }

    impl Held {
        fn new(count: usize) -> Arc<Self> {
            let format = CredentialFormat::new("kg", Environment::Live).unwrap();
            let tenant = TenantId::generate(NOW).unwrap();
            let credentials = (0..count)
                .map(|n| {
                    let (credential, secret) = Credential::issue(
                        &format,
                        CredentialKind::Service,
                        tenant.clone(),
                        format!("ci {n}"),
                        None,
                        NOW,
                    )
                    .unwrap();
                    (credential, secret.hash())
                })
                .collect();
            Arc::new(Self {
                credentials,
                reads: Mutex::default(),
                permits: Semaphore::new(0),
            })
        }

        fn reads(&self) -> Vec<usize> {
            self.reads.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl CredentialSource for Held {
        async fn find_credential(
            &self,
            _: &CredentialHash,
        ) -> Result<Option<CredentialRecord>, StoreError> {
            unreachable!("misses read credentials alone")
        }

        async fn find_credentials_alone(
            &self,
            hashes: &[CredentialHash],
        ) -> Result<Vec<Credential>, StoreError> {
            self.reads.lock().unwrap().push(hashes.len());
            self.permits.acquire().await.unwrap().forget();
            Ok(self
                .credentials
                .iter()
                .filter(|(_, hash)| hashes.contains(hash))
                .map(|(credential, _)| credential.clone())
                .collect())
        }

        async fn find_client(
            &self,
            _: &CredentialId,
        ) -> Result<Option<CredentialRecord>, StoreError> {
            unreachable!("misses read credentials alone")
        }

        async fn find_access_token(
            &self,
            _: &CredentialId,
            _: &CredentialId,
            _: Option<&CredentialId>,
        ) -> Result<Option<AccessTokenRecord>, StoreError> {
            unreachable!("misses read credentials alone")
        }
    }

    #[async_trait]
    impl SigningKeySource for Held {
        async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
            Ok(Vec::new())
        }
    }

    fn miss(
        misses: &Arc<Misses>,
        store: &Arc<Held>,
        hash: CredentialHash,
    ) -> JoinHandle<Option<CredentialId>> {
        let (misses, store) = (Arc::clone(misses), Arc::clone(store));
        tokio::spawn(async move {
            let found = misses.find(&*store, hash).await.unwrap();
            found.map(|credential| credential.id)
        })
    }

    /// Lets the spawned misses run until `done` holds.
    async fn until(done: impl Fn() -> bool) {
        while !done() {
            tokio::task::yield_now().await;
        }
    }

    fn waiting(misses: &Misses) -> usize {
        lock(&misses.queue).waiting.len()
    }

    fn reading(misses: &Misses) -> usize {
        lock(&misses.queue).reading
    }

    #[tokio::test]
    async fn misses_that_arrive_while_the_store_reads_are_read_together() {
        let store = Held::new(20);
        let misses = Arc::new(Misses::with_readers(READERS));
        let unknown = [
            CredentialHash::of("kg_live_a"),
            CredentialHash::of("kg_live_b"),
        ];
        let hashes: Vec<CredentialHash> = store
            .credentials
            .iter()
            .map(|(_, hash)| *hash)
            .chain(unknown)
            .collect();
        let mut handles: Vec<_> = hashes[..READERS]
            .iter()
            .map(|hash| miss(&misses, &store, *hash))
            .collect();
        until(|| store.reads().len() == READERS).await;
        assert_eq!(store.reads(), [1; READERS], "the first misses read at once");
        handles.extend(
            hashes[READERS..]
                .iter()
                .map(|hash| miss(&misses, &store, *hash)),
        );
        until(|| waiting(&misses) == hashes.len() - READERS).await;

        store.permits.add_permits(hashes.len());
        let mut answers = Vec::new();
        for handle in handles {
            answers.push(handle.await.unwrap());
        }
        for (n, (credential, _)) in store.credentials.iter().enumerate() {
            assert_eq!(answers[n].as_ref(), Some(&credential.id));
        }
        assert_eq!(answers[20..], [None, None]);
        assert_eq!(
            store.reads(),
            [1, 1, 1, 1, hashes.len() - READERS],
            "the misses that waited were read together"
        );
        assert_eq!(reading(&misses), 0);
    }

    #[tokio::test]
    async fn a_miss_that_finds_no_read_running_lets_the_requests_behind_it_miss_first() {
        let store = Held::new(3);
        store.permits.add_permits(3);
        let misses = Arc::new(Misses::with_readers(1));
        let handles: Vec<_> = store
            .credentials
            .iter()
            .map(|(_, hash)| miss(&misses, &store, *hash))
            .collect();
        for (handle, (credential, _)) in handles.into_iter().zip(&store.credentials) {
            assert_eq!(handle.await.unwrap(), Some(credential.id.clone()));
        }
        assert_eq!(
            store.reads(),
            [3],
            "the three ready at once were read together"
        );
        assert_eq!(reading(&misses), 0);
    }

    #[tokio::test]
    async fn a_reader_dropped_before_it_reads_gives_its_place_back() {
        let store = Held::new(2);
        let misses = Arc::new(Misses::with_readers(1));
        let hash = |n: usize| store.credentials[n].1;
        let first = miss(&misses, &store, hash(0));
        until(|| reading(&misses) == 1).await;
        assert!(store.reads().is_empty(), "it lets the others run first");
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        assert_eq!(reading(&misses), 0);

        store.permits.add_permits(1);
        let second = miss(&misses, &store, hash(1));
        assert_eq!(
            second.await.unwrap(),
            Some(store.credentials[1].0.id.clone())
        );
        assert_eq!(store.reads(), [1]);
    }

    #[tokio::test]
    async fn misses_dropped_while_waiting_or_reading_leave_the_others_answered() {
        let store = Held::new(READERS + 4);
        let misses = Arc::new(Misses::with_readers(READERS));
        let hash = |n: usize| store.credentials[n].1;
        let readers: Vec<_> = (0..READERS)
            .map(|n| miss(&misses, &store, hash(n)))
            .collect();
        until(|| store.reads().len() == READERS).await;
        // One waits and is dropped (its client went away): it is skipped.
        let dropped = miss(&misses, &store, hash(READERS));
        until(|| waiting(&misses) == 1).await;
        dropped.abort();
        assert!(dropped.await.unwrap_err().is_cancelled());
        let queued: Vec<_> = (READERS + 1..READERS + 4)
            .map(|n| miss(&misses, &store, hash(n)))
            .collect();
        until(|| waiting(&misses) == 4).await;

        // A read ends: the first miss still waiting reads all three, and is dropped mid-read.
        store.permits.add_permits(1);
        until(|| store.reads().len() == READERS + 1).await;
        assert_eq!(store.reads()[READERS], 3);
        let mut queued = queued.into_iter();
        let reader = queued.next().unwrap();
        reader.abort();
        assert!(reader.await.unwrap_err().is_cancelled());

        // The two it had taken read alone.
        until(|| store.reads().len() == READERS + 3).await;
        assert_eq!(store.reads()[READERS + 1..], [1, 1]);
        store.permits.add_permits(16);
        for (n, handle) in (READERS + 2..).zip(queued) {
            assert_eq!(
                handle.await.unwrap(),
                Some(store.credentials[n].0.id.clone())
            );
        }
        for (n, handle) in readers.into_iter().enumerate() {
            assert_eq!(
                handle.await.unwrap(),
                Some(store.credentials[n].0.id.clone())
            );
        }
        assert_eq!(reading(&misses), 0, "every read handed on");
        assert_eq!(waiting(&misses), 0);
    }

    #[test]
    fn a_read_handed_to_a_miss_dropped_before_it_started_is_handed_on() {
        let misses = Misses::with_readers(READERS);
        lock(&misses.queue).reading = READERS;
        let mut waits = Vec::new();
        for n in 0..2 {
            let (turn, wait) = oneshot::channel();
            let hash = CredentialHash::of(&format!("kg_live_{n}"));
            lock(&misses.queue)
                .waiting
                .push_back(Waiting { hash, turn });
            waits.push(wait);
        }
        // A read ends: the first miss is handed the read, and dropped before it starts it.
        drop(Reading(Arc::clone(&misses.queue)));
        assert_eq!((reading(&misses), waiting(&misses)), (READERS, 0));
        let mut second = waits.pop().unwrap();
        drop(waits);
        assert_eq!(reading(&misses), READERS - 1, "the read was not lost");
        assert!(
            matches!(second.try_recv(), Err(oneshot::Canceled)),
            "the miss it had been given reads alone"
        );
    }
}
