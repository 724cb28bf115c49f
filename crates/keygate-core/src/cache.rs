//! The in-process cache of verified credentials, keyed by credential hash.
//!
//! A std `RwLock`, not an async one: nothing awaits while it is held, and reads (every request)
//! vastly outnumber writes (cache misses and changes). Entries are dropped by the store's change
//! notifications ([`ChangeListener`]) in the same code path as the change, so the very next request
//! sees it. A miss that raced with a change must not re-insert what it read before the change:
//! every change bumps a generation, and a miss only inserts if the generation it started with is
//! still current.
//!
//! When changes made elsewhere may be going unseen (another node's notifications cannot reach this
//! one), the cache is *untrusted*: lookups miss, so every verification reads the store, while the
//! entries stay for one purpose only: to answer if the store is down too and the operator chose
//! availability over freshness (`cache.serve_stale_on_store_outage`). When the channel is back, the
//! cache starts again from empty.
//!
//! The cache holds credentials that exist in the store, at most [`CredentialCache::capacity`] of
//! them (`cache.max_credentials`): an insert that finds it full first drops the least recently used
//! eighth (by each entry's last admitted request, to the second), so a node whose working set is
//! larger than its memory keeps the credentials in use and reads the rest from the store again. The
//! sweep is one pass over the entries under the write lock, once per eighth of the capacity
//! inserted, so its cost per insert stays constant. It also remembers hashes the store did not know (a well-formed credential with a valid checksum is
//! easy to forge, so a flood of them must not reach the store once each): a set capped at
//! [`MAX_UNKNOWN`] entries, emptied when full, so an attacker can neither grow it without bound
//! nor make it answer wrongly. A remembered unknown hash could only turn stale if that exact
//! credential were issued later, which its 178 random bits rule out.
//!
//! Beside the verifications it keeps what they were made from that many credentials share: the
//! tenant line, user and role of a credential ([`CredentialContext`]), keyed by the credential's
//! tenant, user and role ids, so that a miss for one more credential of a known tenant and role
//! reads that credential's row alone. The same changes drop them (a tenant, anywhere in the line;
//! the user; the role), under the same lock and with the same generation, and at most
//! [`MAX_CONTEXTS`] are kept (all dropped when full: they are one read each to get back).
//!
//! OAuth access tokens are the exception to "bounded by the store": they are never stored, and a
//! client may mint many. Every [`MAX_ACCESS_TOKENS`] inserts of them, the expired ones are swept;
//! if as many are still alive, they all go (each is verified again on its next use), so they never
//! take more than about twice that.

use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use crate::Timestamp;
use crate::credential::{CredentialHash, CredentialKind};
use crate::id::{RoleId, TenantId, UserId};
use crate::model::Credential;
use crate::store::{Change, ChangeListener, CredentialContext};
use crate::verified::Verified;

/// Keys are SHA-256 outputs of credentials that exist: already uniform, and not chosen by an
/// attacker (unknown credentials are never inserted), so their first eight bytes are the hash.
#[derive(Default)]
struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
}

/// The cached verifications, found by the hash of their credential, which each holds: a slot is
/// one pointer and a word of [`Dependencies`] (and hashbrown's control byte), not the 32-byte
/// hash again beside it. At a million entries that is ~36 bytes an entry (2^21 slots of 17)
/// instead of ~86.
///
/// In [`SHARDS`] tables, a hash's six bits naming its table ([`shard_of`]): a table grows
/// by doubling, which moves every entry it holds (reading each verification's hash from scattered
/// memory) while the write lock is held and every request of the node waits. In one table the
/// insert that doubled it took 56–77 ms at 917 504 entries; each shard holds a 64th of them, and
/// doubles at another moment than the others: the slowest of a million inserts takes 1.5 ms.
/// Lookups go to one shard; passes go over all.
struct Map([HashTable<Slot>; SHARDS]);

/// How many tables the cache's entries are spread over.
const SHARDS: usize = 64;

impl Default for Map {
    fn default() -> Self {
        Self(std::array::from_fn(|_| HashTable::new()))
    }
}

struct Slot {
    verified: Arc<Verified>,
    depends: Dependencies,
}

impl Slot {
    fn new(verified: Arc<Verified>) -> Self {
        Self {
            depends: Dependencies::of(&verified),
            verified,
        }
    }
}

/// What a verification depends on ([`Verified::ids_depended_on`]), in a word that a change reads
/// instead of the verification: 16 bits of its own id's hash, 16 of its client's (0: it has none),
/// and 32 in which each id of its context (user, role, tenant line) sets two. A change reads only
/// the verifications whose word says they may depend on an id it names (those it affects, and a
/// few others), not every verification and its ids, two reads from scattered memory each: with a
/// million cached (`bench/cold-verify`, SQLite), those reads made a revocation take 42 ms, every
/// request of the node waiting for the lock, and over the slots (34 MB in a row) it takes 2 ms.
/// The credential ids have bits of their own, not two each among the context's: 500 tokens
/// revoked in one request named a thousand bits of 64, almost every verification seemed to depend
/// on one of them, and the pass took 420 ms at a million cached; it takes 8 ms.
#[derive(Clone, Copy, Default)]
struct Dependencies(u64);

impl Dependencies {
    fn of(verified: &Verified) -> Self {
        let own = fingerprint(verified.id().as_str());
        let client = verified
            .client_id()
            .map_or(0, |id| fingerprint(id.as_str()));
        let context = verified
            .context_ids()
            .fold(0, |bits, id| bits | context_bits(id));
        Self(u64::from(own) | u64::from(client) << 16 | u64::from(context) << 32)
    }

    /// The fingerprints of its own id and its client's.
    fn credentials(self) -> [u16; 2] {
        [self.0 as u16, (self.0 >> 16) as u16]
    }

    fn context(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

fn hash_of_id(id: &str) -> u64 {
    std::hash::BuildHasher::hash_one(
        &BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default(),
        id,
    )
}

/// 16 bits of a credential id's hash, never 0 (which stands for no client).
fn fingerprint(id: &str) -> u16 {
    (hash_of_id(id) % 65_535) as u16 + 1
}

/// The two bits (of 32) of a context id; the same bit twice for some.
fn context_pair(id: &str) -> (u32, u32) {
    let hash = hash_of_id(id);
    ((hash & 31) as u32, ((hash >> 5) & 31) as u32)
}

fn context_bits(id: &str) -> u32 {
    let (a, b) = context_pair(id);
    1 << a | 1 << b
}

/// The context ids of several changes, to find the verifications that may depend on any of them
/// in one pass: for each bit, the other bits it was paired with. A verification may depend on one
/// of the ids when it has both bits of one pair: when one of its bits is paired with another of
/// its bits. As exact as testing each id's two bits, at the cost of a step per bit the
/// verification shares with the ids, not one per id.
#[derive(Default)]
struct AnyOf {
    pairs: [u32; 32],
    /// Every bit of a pair.
    bits: u32,
}

impl AnyOf {
    fn add(&mut self, id: &str) {
        let (a, b) = context_pair(id);
        self.pairs[a as usize] |= 1 << b;
        self.pairs[b as usize] |= 1 << a;
        self.bits |= 1 << a | 1 << b;
    }

    fn may_be_included_in(&self, context: u32) -> bool {
        let mut shared = context & self.bits;
        while shared != 0 {
            if context & self.pairs[shared.trailing_zeros() as usize] != 0 {
                return true;
            }
            shared &= shared - 1;
        }
        false
    }
}

/// What the changes of one commit name, to find in one pass the verifications that depend on
/// any of it.
struct Named<'a> {
    ids: std::collections::HashSet<&'a str>,
    credentials: Fingerprints,
    contexts: AnyOf,
}

/// The fingerprints of the credentials named.
enum Fingerprints {
    None,
    /// One (a single revocation, the common case): compared, not looked up.
    One(u16),
    /// A bit for each: 8 KB, read for every verification, so it stays in the processor's nearest
    /// cache. With 500 named, 0.8 % of the others are read.
    Many(Box<[u64; 1024]>),
}

impl Fingerprints {
    fn add(&mut self, print: u16) {
        match self {
            Self::None => *self = Self::One(print),
            Self::One(one) => {
                let mut bits = Box::new([0; 1024]);
                for print in [*one, print] {
                    bits[usize::from(print >> 6)] |= 1 << (print & 63);
                }
                *self = Self::Many(bits);
            }
            Self::Many(bits) => bits[usize::from(print >> 6)] |= 1 << (print & 63),
        }
    }

    fn contain_any(&self, [own, client]: [u16; 2]) -> bool {
        match self {
            Self::None => false,
            Self::One(print) => own == *print || client == *print,
            Self::Many(bits) => {
                let has = |print: u16| bits[usize::from(print >> 6)] >> (print & 63) & 1 != 0;
                has(own) | has(client)
            }
        }
    }
}

impl<'a> Named<'a> {
    fn of(changes: &'a [Change]) -> Self {
        let mut named = Self {
            ids: std::collections::HashSet::with_capacity(changes.len()),
            credentials: Fingerprints::None,
            contexts: AnyOf::default(),
        };
        for change in changes {
            match change {
                Change::Credential(id) => named.credentials.add(fingerprint(id.as_str())),
                Change::User(id) => named.contexts.add(id.as_str()),
                Change::Role(id) => named.contexts.add(id.as_str()),
                Change::Tenant(id) => named.contexts.add(id.as_str()),
                // Cached verifications are of tokens whose signature was already checked: none
                // depends on the signing keys.
                Change::SigningKeys => continue,
            }
            named.ids.extend(change.id());
        }
        named
    }

    /// Whether a verification that depends on these may depend on a named id: true for every
    /// one that does, and a few that do not.
    fn may_affect(&self, depends: Dependencies) -> bool {
        self.credentials.contain_any(depends.credentials())
            || self.contexts.may_be_included_in(depends.context())
    }

    /// Whether the verification depends on a named id.
    fn affects(&self, verified: &Verified) -> bool {
        verified.ids_depended_on().any(|id| self.ids.contains(id))
    }
}

/// Where a hash's entry is looked for: its first eight bytes, uniform already (see
/// [`PrehashedHasher`]).
fn slot_of(hash: &[u8; 32]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(word)
}

fn slot_of_entry(slot: &Slot) -> u64 {
    slot_of(slot.verified.hash().as_bytes())
}

/// Which shard holds a hash: six bits of its word that hashbrown uses for neither the bucket
/// (the low bits) nor the control byte (the top seven), so entries spread over each shard's
/// buckets as over one table's.
fn shard_of(word: u64) -> usize {
    (word >> 51) as usize % SHARDS
}

impl Map {
    fn shard(&self, word: u64) -> &HashTable<Slot> {
        &self.0[shard_of(word)]
    }

    fn get(&self, hash: &[u8; 32]) -> Option<&Arc<Verified>> {
        let word = slot_of(hash);
        self.shard(word)
            .find(word, |s| s.verified.hash().as_bytes() == hash)
            .map(|s| &s.verified)
    }

    fn contains(&self, hash: &[u8; 32]) -> bool {
        self.get(hash).is_some()
    }

    /// Caches a verification under its credential's hash, in place of what was there.
    fn insert(&mut self, slot: Slot) {
        let hash = *slot.verified.hash().as_bytes();
        let word = slot_of(&hash);
        match self.0[shard_of(word)].entry(
            word,
            |s| s.verified.hash().as_bytes() == &hash,
            slot_of_entry,
        ) {
            Entry::Occupied(mut entry) => *entry.get_mut() = slot,
            Entry::Vacant(entry) => {
                entry.insert(slot);
            }
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&Verified) -> bool) {
        for shard in &mut self.0 {
            shard.retain(|s| keep(&s.verified));
        }
    }

    /// Drops the verifications that depend on an id `named`, in one pass: only those whose
    /// dependencies say they may are read.
    fn drop_affected(&mut self, named: &Named) {
        for shard in &mut self.0 {
            shard.retain(|s| !(named.may_affect(s.depends) && named.affects(&s.verified)));
        }
    }

    fn values(&self) -> impl Iterator<Item = &Arc<Verified>> {
        self.0
            .iter()
            .flat_map(|shard| shard.iter().map(|s| &s.verified))
    }

    fn len(&self) -> usize {
        self.0.iter().map(HashTable::len).sum()
    }

    fn clear(&mut self) {
        self.0.iter_mut().for_each(HashTable::clear);
    }

    /// The most entries one insert could move now: those of the largest shard that is full.
    #[cfg(test)]
    fn largest_move(&self) -> usize {
        self.0
            .iter()
            .filter(|shard| shard.len() == shard.capacity())
            .map(HashTable::len)
            .max()
            .unwrap_or(0)
    }
}

type Unknown = std::collections::HashSet<[u8; 32], BuildHasherDefault<PrehashedHasher>>;

/// How many unknown hashes are remembered before the set starts over.
pub const MAX_UNKNOWN: usize = 65_536;
/// How many access tokens are inserted between two sweeps of the expired ones.
pub const MAX_ACCESS_TOKENS: usize = 100_000;
/// How many verified credentials a cache holds unless configured otherwise.
pub const DEFAULT_CAPACITY: usize = 1_000_000;
/// How many contexts (tenant line, user, role) are kept before they all go.
pub const MAX_CONTEXTS: usize = 16_384;

/// What a credential's context is found by: its tenant, its user and its own role.
type ContextKey = (TenantId, Option<UserId>, Option<RoleId>);

fn context_key(credential: &Credential) -> ContextKey {
    (
        credential.tenant_id.clone(),
        credential.user_id.clone(),
        credential.role_id.clone(),
    )
}

pub struct CredentialCache {
    entries: RwLock<Map>,
    /// Changed only with `entries` write-locked (changes take that lock first), so a change and
    /// the generation it bumps cover both.
    contexts: RwLock<std::collections::HashMap<ContextKey, Arc<CredentialContext>>>,
    unknown: RwLock<Unknown>,
    generation: AtomicU64,
    trusted: AtomicBool,
    /// Access tokens inserted since the last sweep, and how many make a sweep.
    access_token_inserts: AtomicUsize,
    access_token_limit: usize,
    capacity: usize,
    /// Lookups answered from memory, and lookups that had to go to the store.
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Entries dropped to make room (not those a change dropped).
    pub evictions: AtomicU64,
}

impl Default for CredentialCache {
    fn default() -> Self {
        Self {
            entries: RwLock::default(),
            contexts: RwLock::default(),
            unknown: RwLock::default(),
            generation: AtomicU64::new(0),
            trusted: AtomicBool::new(true),
            access_token_inserts: AtomicUsize::new(0),
            access_token_limit: MAX_ACCESS_TOKENS,
            capacity: DEFAULT_CAPACITY,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }
}

impl CredentialCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// A cache holding at most `capacity` verified credentials (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            ..Self::default()
        }
    }

    /// How many verified credentials it holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    #[cfg(test)]
    pub(crate) fn with_access_token_limit(limit: usize) -> Self {
        Self {
            access_token_limit: limit,
            ..Self::default()
        }
    }

    /// The cached verification, unless the cache is untrusted.
    pub fn get(&self, hash: &CredentialHash) -> Option<Arc<Verified>> {
        let found = if self.trusted.load(Ordering::Acquire) {
            self.read().get(hash.as_bytes()).cloned()
        } else {
            None
        };
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The cached verification of `hash`, or what `load` reads on a miss: `None` when the store
    /// does not know the hash (remembered, so a flood of one unknown credential reaches the store
    /// once). What `load` found is cached unless a change happened while it was being read: the
    /// generation is taken before `load` is called, and changes bump it under the write lock, so
    /// a read that raced a change is used once and not kept. Access tokens are swept of expired
    /// ones (at `now`) as they are added. A hit calls nothing and builds no future.
    pub async fn get_or_load<E, F>(
        &self,
        hash: &CredentialHash,
        now: Timestamp,
        load: impl FnOnce() -> F,
    ) -> Result<Option<Arc<Verified>>, E>
    where
        F: Future<Output = Result<Option<Arc<Verified>>, E>>,
    {
        if self.is_known_unknown(hash) {
            return Ok(None);
        }
        if let Some(hit) = self.get(hash) {
            return Ok(Some(hit));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let Some(verified) = load().await? else {
            self.remember_unknown(hash);
            return Ok(None);
        };
        self.insert_unless_changed_since(generation, Arc::clone(&verified), now);
        Ok(Some(verified))
    }

    /// Where a read that may race a change starts: pass it to [`Self::keep_context`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The kept context of `credential`'s tenant, user and role, unless the cache is untrusted.
    pub fn context(&self, credential: &Credential) -> Option<Arc<CredentialContext>> {
        if !self.trusted.load(Ordering::Acquire) {
            return None;
        }
        self.contexts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&context_key(credential))
            .cloned()
    }

    /// Keeps `context`, read for `credential` after [`Self::generation`] said `generation`, unless
    /// a change happened since; returns it either way.
    pub fn keep_context(
        &self,
        generation: u64,
        credential: &Credential,
        context: CredentialContext,
    ) -> Arc<CredentialContext> {
        let context = Arc::new(context);
        // The entries' lock first, as changes take it: no change can run between the check and
        // the insert.
        let _entries = self.write();
        if self.generation.load(Ordering::Acquire) == generation {
            let mut contexts = self.contexts.write().unwrap_or_else(|p| p.into_inner());
            if contexts.len() >= MAX_CONTEXTS {
                contexts.clear();
            }
            contexts.insert(context_key(credential), Arc::clone(&context));
        }
        context
    }

    /// Whether the store said it does not know this hash (and the cache is trusted).
    fn is_known_unknown(&self, hash: &CredentialHash) -> bool {
        self.trusted.load(Ordering::Acquire)
            && self
                .unknown
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(hash.as_bytes())
    }

    /// Remembers that the store does not know this hash.
    fn remember_unknown(&self, hash: &CredentialHash) {
        let mut unknown = self.unknown.write().unwrap_or_else(|p| p.into_inner());
        if unknown.len() >= MAX_UNKNOWN {
            unknown.clear();
        }
        unknown.insert(*hash.as_bytes());
    }

    /// The cached verification even when untrusted: only for answering during a store outage.
    pub fn get_stale(&self, hash: &CredentialHash) -> Option<Arc<Verified>> {
        self.read().get(hash.as_bytes()).cloned()
    }

    /// Caches `verified` unless a change happened since `generation` was read. Access tokens,
    /// which are many and short-lived, are swept of expired ones once enough were added since
    /// the last sweep.
    fn insert_unless_changed_since(
        &self,
        generation: u64,
        verified: Arc<Verified>,
        now: Timestamp,
    ) {
        let is_access_token = |v: &Verified| v.kind() == CredentialKind::AccessToken;
        // Made before the lock is taken, as little as possible being done while it is held.
        let slot = Slot::new(verified);
        let verified = &slot.verified;
        let mut entries = self.write();
        // Changes bump the generation while holding the write lock, so this check cannot race.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if is_access_token(verified)
            && self.access_token_inserts.fetch_add(1, Ordering::Relaxed) + 1
                >= self.access_token_limit
        {
            self.access_token_inserts.store(0, Ordering::Relaxed);
            entries.retain(|v| !is_access_token(v) || v.expires_at().is_some_and(|at| at > now));
            if entries.values().filter(|v| is_access_token(v)).count() >= self.access_token_limit {
                entries.retain(|v| !is_access_token(v));
            }
        }
        if entries.len() >= self.capacity && !entries.contains(verified.hash().as_bytes()) {
            let evicted = evict_least_recently_used(&mut entries, self.capacity.div_ceil(8));
            self.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
        }
        entries.insert(slot);
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry: the safe answer when it is unknown what changed.
    pub fn clear(&self) {
        let mut entries = self.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
        self.contexts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.unknown
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Map> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Map> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Drops the `count` entries least recently used (an entry loaded but never admitted counts as
/// used longest ago); how many it dropped. Last uses are kept to the second, so the entries of the
/// cut-off second are dropped only until `count` is reached.
fn evict_least_recently_used(entries: &mut Map, count: usize) -> usize {
    let count = count.min(entries.len());
    if count == 0 {
        return 0;
    }
    let mut uses: Vec<i64> = entries.values().map(|v| v.usage.last_used()).collect();
    let (before, &mut cut, _) = uses.select_nth_unstable(count - 1);
    // Strictly older than the cut-off second first, then the cut-off second's own until `count`
    // (requests may note a use meanwhile: an entry used since is kept).
    let older = before.iter().filter(|&&used| used < cut).count();
    drop(uses);
    let mut at_cut = count - older;
    entries.retain(|v| {
        let used = v.usage.last_used();
        if used < cut {
            false
        } else if used == cut && at_cut > 0 {
            at_cut -= 1;
            false
        } else {
            true
        }
    });
    count
}

impl ChangeListener for CredentialCache {
    fn may_have_missed_changes(&self) {
        self.trusted.store(false, Ordering::Release);
    }

    fn resynced(&self) {
        self.clear();
        self.trusted.store(true, Ordering::Release);
    }

    fn changed(&self, change: &Change) {
        self.changed_all(std::slice::from_ref(change));
    }

    /// The changes of one commit (one, or up to 500 tokens of a bulk revocation) in one pass
    /// over the entries under one write lock: a pass takes milliseconds with a million cached,
    /// and every request of the node waits for it. A verification, or a context (tenant line,
    /// user, role), goes if it depends on any id the changes name.
    fn changed_all(&self, changes: &[Change]) {
        let named = Named::of(changes);
        if named.ids.is_empty() {
            return;
        }
        let mut entries = self.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.drop_affected(&named);
        self.contexts
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, context| {
                let mut ids = std::iter::once(&context.tenant)
                    .chain(&context.ancestors)
                    .map(|tenant| tenant.id.as_str())
                    .chain(context.user.as_ref().map(|user| user.id.as_str()))
                    .chain(context.role.as_ref().map(|role| role.id.as_str()));
                !ids.any(|id| named.ids.contains(id))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_hashes_are_remembered_up_to_a_cap() {
        let cache = CredentialCache::new();
        let first = CredentialHash::of("kg_live_first");
        cache.remember_unknown(&first);
        assert!(cache.is_known_unknown(&first));
        for i in 1..MAX_UNKNOWN {
            cache.remember_unknown(&CredentialHash::of(&format!("kg_live_{i}")));
        }
        assert!(cache.is_known_unknown(&first));
        cache.remember_unknown(&CredentialHash::of("kg_live_one_more"));
        assert!(!cache.is_known_unknown(&first), "a full set starts over");
        // An untrusted cache answers nothing from memory, and a resync forgets.
        cache.remember_unknown(&first);
        cache.may_have_missed_changes();
        assert!(!cache.is_known_unknown(&first));
        cache.resynced();
        assert!(!cache.is_known_unknown(&first));
    }

    /// 2 000 verifications of service and personal tokens of every built-in role, a third of
    /// them in a subtenant of `root`, cached with their contexts; and `root`.
    fn cached_verifications() -> (CredentialCache, Vec<Arc<Verified>>, crate::model::Tenant) {
        let (cache, verified, root, _) = cached_with_records();
        (cache, verified, root)
    }

    fn cached_with_records() -> (
        CredentialCache,
        Vec<Arc<Verified>>,
        crate::model::Tenant,
        Vec<crate::store::CredentialRecord>,
    ) {
        use crate::permission::BuiltinRole;
        use crate::testing::{NOW, catalog, record};

        let catalog = catalog();
        let root = record(CredentialKind::Service, BuiltinRole::Owner, None).tenant;
        let cache = CredentialCache::new();
        let records: Vec<_> = (0..2_000)
            .map(|n| {
                let kind = [CredentialKind::Service, CredentialKind::Personal][n % 2];
                let mut record = record(kind, BuiltinRole::ALL[n % 4], None);
                if n % 3 == 0 {
                    record.tenant.path = root.path.child(&record.tenant.id);
                    record.tenant.parent_id = Some(root.id.clone());
                    record.ancestors.push(root.clone());
                }
                record
            })
            .collect();
        let verified: Vec<Arc<Verified>> = records
            .iter()
            .map(|record| Arc::new(Verified::resolve(record, &catalog)))
            .collect();
        for (v, record) in verified.iter().zip(&records) {
            cache.insert_unless_changed_since(cache.generation(), Arc::clone(v), NOW);
            let context = CredentialContext {
                tenant: record.tenant.clone(),
                ancestors: record.ancestors.clone(),
                user: record.user.clone(),
                role: record.role.clone(),
            };
            cache.keep_context(cache.generation(), &record.credential, context);
        }
        (cache, verified, root, records)
    }

    /// Whether `change` affects `v`, read from the verification itself.
    fn affects(change: &Change, v: &Verified) -> bool {
        match change {
            Change::Credential(id) => v.id() == id,
            Change::User(id) => v.user_id() == Some(id),
            Change::Role(id) => v.role_id() == Some(id),
            Change::Tenant(id) => v.is_within(id),
            Change::SigningKeys => false,
        }
    }

    #[test]
    fn a_change_drops_exactly_the_verifications_it_affects() {
        let (cache, verified, root) = cached_verifications();
        let cached = |v: &Verified| cache.get_stale(v.hash()).is_some();
        let mut left = verified.clone();
        let changes = [
            Change::Credential(verified[7].id().clone()),
            Change::User(verified[9].user_id().unwrap().clone()),
            Change::Tenant(verified[11].tenant().id.clone()),
            Change::Tenant(root.id.clone()),
            Change::Role(crate::permission::BuiltinRole::Viewer.id()),
        ];
        for change in changes {
            cache.changed(&change);
            let before = left.len();
            left.retain(|v| !affects(&change, v));
            assert!(left.len() < before, "{change:?} affects some");
            assert!(left.iter().all(|v| cached(v)), "{change:?} drops no other");
            assert_eq!(cache.len(), left.len(), "{change:?} drops all it affects");
        }
    }

    #[test]
    fn changes_made_together_drop_exactly_what_they_affect_in_one_pass() {
        let (cache, verified, root, records) = cached_with_records();
        // A bulk revocation's 500 credentials, with a user, a tenant and the signing keys.
        let mut changes: Vec<Change> = (0..500)
            .map(|n| Change::Credential(verified[n * 4].id().clone()))
            .collect();
        changes.push(Change::User(verified[9].user_id().unwrap().clone()));
        changes.push(Change::Tenant(verified[11].tenant().id.clone()));
        changes.push(Change::Tenant(root.id.clone()));
        changes.push(Change::SigningKeys);
        let generation = cache.generation();
        cache.changed_all(&changes);
        assert!(
            cache.generation() > generation,
            "a miss under way must not insert"
        );
        let left: Vec<_> = verified
            .iter()
            .filter(|v| !changes.iter().any(|change| affects(change, v)))
            .collect();
        assert!(left.len() < 1_500 && left.len() > 500, "{}", left.len());
        assert!(left.iter().all(|v| cache.get_stale(v.hash()).is_some()));
        assert_eq!(cache.len(), left.len());
        // The contexts of the user and the tenants named (a third are in `root`) are gone,
        // the others kept.
        let touched = |record: &crate::store::CredentialRecord| {
            changes.iter().any(|change| match change {
                Change::User(id) => record.user.as_ref().is_some_and(|u| u.id == *id),
                Change::Tenant(id) => std::iter::once(&record.tenant)
                    .chain(&record.ancestors)
                    .any(|t| t.id == *id),
                _ => false,
            })
        };
        let kept =
            |record: &crate::store::CredentialRecord| cache.context(&record.credential).is_some();
        assert!(records.iter().filter(|r| touched(r)).count() > 600);
        for record in &records {
            assert_eq!(kept(record), !touched(record), "{:?}", record.credential.id);
        }
    }

    #[test]
    fn a_bulk_revocation_reads_few_of_the_verifications_it_leaves() {
        let (_, verified, _, _) = cached_with_records();
        let changes: Vec<Change> = (0..500)
            .map(|n| Change::Credential(verified[n * 4].id().clone()))
            .collect();
        let named = Named::of(&changes);
        let (affected, left): (Vec<_>, Vec<_>) = verified.iter().partition(|v| named.affects(v));
        assert_eq!(affected.len(), 500);
        let may = |v: &Verified| named.may_affect(Dependencies::of(v));
        assert!(affected.iter().all(|v| may(v)));
        // 500 of 65 535 fingerprints: 0.8 % of the others expected, and 2 % at most. With the
        // ids' bits among the context's, almost every verification was read.
        let read = left.iter().filter(|v| may(v)).count();
        assert!(read <= left.len() / 50, "{read} of {} read", left.len());
    }

    /// A table doubles by moving all it holds while every request waits: no insert may move more
    /// than a small part of what is cached. In one table the insert that doubled it moved
    /// 14 336 of 14 336 here (and 917 504, for 52 ms, at a million).
    #[test]
    fn no_insert_moves_more_than_a_sixteenth_of_the_cache() {
        use crate::permission::BuiltinRole;
        use crate::testing::{NOW, catalog, record};

        let catalog = catalog();
        let base = record(CredentialKind::Service, BuiltinRole::Owner, None);
        let cache = CredentialCache::new();
        let mut largest = 0;
        for n in 0..20_000 {
            let mut record = base.clone();
            record.credential.hash = CredentialHash::of(&format!("kg_test_{n}"));
            let verified = Arc::new(Verified::resolve(&record, &catalog));
            let moved = cache.read().largest_move();
            if n >= 1_024 {
                assert!(
                    moved <= n / 16,
                    "an insert at {n} cached could move {moved}"
                );
            }
            largest = largest.max(moved);
            cache.insert_unless_changed_since(cache.generation(), verified, NOW);
        }
        assert_eq!(cache.len(), 20_000);
        assert!(largest > 0, "the shards do grow");
    }

    #[test]
    fn slots_found_for_any_of_several_ids_are_those_found_for_each() {
        let ids: Vec<String> = (0..40).map(|n| format!("usr_{n:026}")).collect();
        for named in [&ids[..1], &ids[..3], &ids[..40]] {
            let mut any = AnyOf::default();
            named.iter().for_each(|id| any.add(id));
            // Contexts of every pair of bits, and of many bits.
            for a in 0..32 {
                for b in a..32 {
                    for context in [
                        1_u32 << a | 1 << b,
                        (1_u32 << a | 1 << b).wrapping_mul(0x0101) ^ 0x8000_0001,
                    ] {
                        let each = named.iter().any(|id| {
                            let bits = context_bits(id);
                            context & bits == bits
                        });
                        assert_eq!(any.may_be_included_in(context), each, "{context:#x}");
                    }
                }
            }
        }
    }
}
