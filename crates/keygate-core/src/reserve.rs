//! A node's reserve of a quota's credits (API.md §13): how a quota stays exact across nodes
//! without a store round trip per request.
//!
//! ## The design
//!
//! The store keeps one row per quota: its limit, the window it is counting, and `used`, the
//! credits *taken* in that window by every node together, whether spent yet or not. A node never
//! admits a request on credits it has not taken, and taking is one statement that never lets
//! `used` pass the limit. So however many nodes share the store, a window admits at most `limit`:
//! the proof is that row's check, not any agreement between nodes.
//!
//! Each node holds, per quota it has seen used, a [`Reserve`]: the credits it took for the current
//! window and has not spent. A request spends its cost from the reserve with one compare-and-swap
//! (no lock, no allocation). When the reserve cannot pay, the node takes more from the store, one
//! statement, and how much it asks for shrinks as the quota runs out ([`Reserve::want`]):
//!
//! - a full reserve ([`RESERVE`] credits) while plenty remain, so a busy credential costs one round
//!   trip per [`RESERVE`] requests on each node;
//! - an eighth of what remains once that is less than eight reserves, so nodes do not strand the
//!   last credits in each other's reserves;
//! - only the request's own cost when fewer than eight remain: the last credits are spent one
//!   request at a time in the store itself.
//!
//! Credits a node holds but does not spend are given back: at shutdown, and by the flush loop for a
//! reserve idle for a while, so another node can have them. A window's end needs no give-back: the
//! next window starts at zero (the take that first sees it resets the row). A quota that changes
//! (or goes) is dropped from every node's reserves at once (the same change notice that empties
//! the verification cache), and what they held is given back.
//!
//! Once a take finds nothing left, the node refuses that quota's requests without asking the store
//! again until the next second (or the refill, if sooner): a spent credential hammered by its
//! client costs the store one round trip per second per node. Credits given back in that second
//! wait for the next.
//!
//! A node makes one take at a time per quota: requests that find the reserve short while a take is
//! under way wait for it and spend from what it brought, so a node never holds more than one
//! take's leftover, fewer than [`RESERVE`] credits.
//!
//! **What a dead node costs.** A node killed outright cannot give back its reserves: each quota
//! loses at most the credits that node held, never more than [`RESERVE`] per quota, until its
//! window ends, besides the requests it was answering when it died (spent, and never answered).
//! Requests are then refused that the limit would have allowed; none is ever admitted beyond it.
//!
//! [`Credits`] is a node's set of reserves, one per quota it has spent from, and the spend, refund
//! and give-back above them.
//!
//! A request of a credential with its own quota and a tenant pool above it spends from each; if one
//! cannot pay, what the others already gave is put back in their reserves (locally: the credits
//! stay taken), and the request is refused, costing nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use crate::Timestamp;
use crate::quota::{Quota, StoredQuota, Window};
use crate::store::{Change, ChangeListener, QuotaStore, RateCell, StoreError, Taken};

/// The most credits a node takes from the store at a time, and so the most one node can strand.
pub const RESERVE: u64 = 64;

/// The most a single request may cost: a reserve's count must hold a take for it.
pub const MAX_COST: u64 = 1 << 32;

/// How many of the remaining credits a node leaves to the others: it asks for at most
/// `1 / SPREAD` of them.
const SPREAD: u64 = 8;

/// A reserve's word: the window's tag in the high bits, the credits in the low ones, so that a
/// spend checks the window and pays in one compare-and-swap.
/// 34 bits of credits hold a take for the largest cost ([`MAX_COST`]) and a reserve besides.
const CREDIT_BITS: u32 = 34;
const CREDITS: u64 = (1 << CREDIT_BITS) - 1;

/// The window a count belongs to, as 30 bits: its start in seconds, which differs between any two
/// windows (a rate limit's may be a second long) until they are 34 years apart. A reserve is never
/// left that long: the give-back loop empties an idle one within seconds.
fn tag(window: Timestamp) -> u64 {
    (window.unix() as u64 & ((1 << (64 - CREDIT_BITS)) - 1)) << CREDIT_BITS
}

/// What a reserve says of a spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// Paid from the reserve.
    Paid,
    /// The reserve holds too little, or only another window's credits: take more from the store.
    Short,
}

/// A node's credits of one quota, for one window at a time.
#[derive(Debug)]
pub struct Reserve {
    /// The window's tag and the credits held for it. Credits are only ever added for the window
    /// they were taken for, and a spend only pays from its own window's: a reserve can lose
    /// credits to a race (a take for a newer window replacing an older one's), never pay with
    /// another window's.
    word: AtomicU64,
}

impl Default for Reserve {
    fn default() -> Self {
        // The tag of all ones: a window starting at that second (mod 2^30) finds no credits
        // here anyway, since none were added.
        Self {
            word: AtomicU64::new(!CREDITS),
        }
    }
}

impl Reserve {
    /// Spends `cost` credits of the window starting at `window`, if the reserve holds them.
    pub fn spend(&self, window: Timestamp, cost: u64) -> Spend {
        let tag = tag(window);
        let paid = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                (word & !CREDITS == tag && word & CREDITS >= cost).then(|| word - cost)
            });
        match paid {
            Ok(_) => Spend::Paid,
            Err(_) => Spend::Short,
        }
    }

    /// Puts back credits a request spent but did not use (another quota refused it).
    pub fn refund(&self, window: Timestamp, cost: u64) {
        self.add_if(window, cost, false);
    }

    /// Adds credits taken from the store for the window starting at `window`. Whatever another
    /// window left is dropped: a take comes for the current window, and an older one's credits
    /// ended with it.
    pub fn add(&self, window: Timestamp, taken: u64) {
        self.add_if(window, taken, true);
    }

    fn add_if(&self, window: Timestamp, credits: u64, replace_other: bool) {
        let tag = tag(window);
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                if word & !CREDITS == tag {
                    Some(tag | ((word & CREDITS) + credits).min(CREDITS))
                } else if replace_other {
                    Some(tag | credits.min(CREDITS))
                } else {
                    None
                }
            });
    }

    /// Takes every credit of the window starting at `window` out of the reserve, to give back to
    /// the store.
    pub fn drain(&self, window: Timestamp) -> u64 {
        let tag = tag(window);
        self.word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                (word & !CREDITS == tag).then_some(tag)
            })
            .map_or(0, |word| word & CREDITS)
    }

    /// The credits held for the window starting at `window`.
    pub fn held(&self, window: Timestamp) -> u64 {
        let word = self.word.load(Ordering::Acquire);
        if word & !CREDITS == tag(window) {
            word & CREDITS
        } else {
            0
        }
    }

    /// How many credits to ask the store for, for a request costing `cost`, when `remaining` are
    /// left in the store (as the last take saw it; the store caps the take at what is really left).
    pub fn want(cost: u64, remaining: u64) -> u64 {
        let share = (remaining / SPREAD).min(RESERVE);
        share.max(cost)
    }
}

/// A quota a request spends from: the credential's own, or a tenant's pool above it, as a
/// cached verification carries it, with this node's reserve for it found once and kept (so a
/// request's spend looks nothing up).
#[derive(Debug, Clone)]
pub struct QuotaOn {
    /// What it limits: the credential's or the tenant's id, the key of its stored count.
    pub subject: String,
    pub quota: Quota,
    slot: OnceLock<Arc<Slot>>,
}

impl From<&StoredQuota> for QuotaOn {
    fn from(stored: &StoredQuota) -> Self {
        Self {
            subject: stored.subject.clone(),
            quota: stored.quota,
            slot: OnceLock::new(),
        }
    }
}

impl PartialEq for QuotaOn {
    fn eq(&self, other: &Self) -> bool {
        self.subject == other.subject && self.quota == other.quota
    }
}

impl Eq for QuotaOn {}

/// What a spend leaves: what is left as far as this node knows (the store's count at its last
/// take plus its own reserve), and when the period it spent from ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    pub left: u64,
    pub resets_at: Option<Timestamp>,
}

/// Why a spend was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpendError {
    /// The window's credits are spent: refused, costing nothing.
    #[error("the quota is spent")]
    Exhausted {
        /// Seconds until the refill; `None` for a `total` quota.
        retry_after: Option<u64>,
        /// What is left, as this node last knew it (less than the cost; 0 for a rate limit).
        left: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A quota as this node sees it: its reserve, what the store had left at the last take
/// ([`UNKNOWN`] before the first), the window the reserve was last filled for (its start in unix
/// seconds, for giving it back), and the reserve's word when the give-back loop last looked.
#[derive(Debug)]
struct Slot {
    reserve: Reserve,
    remaining: AtomicU64,
    window: AtomicI64,
    seen: AtomicU64,
    /// Until when (unix seconds, excluded; milliseconds for a rate limit) the store is known to
    /// have nothing left: requests are
    /// refused without asking it again, so a spent credential hammered by its client costs the
    /// store one round trip a second per node, not one per request.
    spent_until: AtomicI64,
    /// Held by the request taking from the store, so that concurrent requests finding the reserve
    /// short wait for that one take instead of each making their own: a node's reserve never
    /// holds more than one take's leftover. An async lock, taken only on that slow path.
    taking: futures_util::lock::Mutex<()>,
    /// The quota's current period, packed ([`pack`]), so that a request in it does not work out
    /// the calendar again; [`NO_PERIOD`] until the first.
    period: AtomicU64,
}

const NO_PERIOD: u64 = u64::MAX;
/// A packed period: its start in seconds from 1970 (42 bits, to the year 141 000) and its length
/// (22 bits: the longest, a month, is under 2^22 seconds; 0 for a period that never ends).
const LENGTH_BITS: u32 = 22;

fn pack(period: Window) -> Option<u64> {
    let start = u64::try_from(period.start.unix()).ok()?;
    let length = match period.resets_at {
        Some(end) => u64::try_from(end.unix() - period.start.unix()).ok()?,
        None => 0,
    };
    (start < 1 << (64 - LENGTH_BITS) && length < (1 << LENGTH_BITS) - 1)
        .then_some(start << LENGTH_BITS | length)
}

fn unpack(packed: u64) -> Option<Window> {
    (packed != NO_PERIOD).then(|| {
        let start = (packed >> LENGTH_BITS) as i64;
        let length = (packed & ((1 << LENGTH_BITS) - 1)) as i64;
        Window {
            start: Timestamp::from_unix(start),
            resets_at: (length > 0).then(|| Timestamp::from_unix(start + length)),
        }
    })
}

const UNKNOWN: u64 = u64::MAX;

impl Default for Slot {
    fn default() -> Self {
        Self {
            reserve: Reserve::default(),
            remaining: AtomicU64::new(UNKNOWN),
            window: AtomicI64::new(i64::MIN),
            seen: AtomicU64::new(0),
            spent_until: AtomicI64::new(i64::MIN),
            taking: futures_util::lock::Mutex::new(()),
            period: AtomicU64::new(NO_PERIOD),
        }
    }
}

impl Slot {
    /// `quota`'s period at `now`: the one last worked out while `now` is still in it, else
    /// worked out and kept. One word, so a request never reads half of another's update.
    fn period(&self, quota: &Quota, now: Timestamp) -> Window {
        let kept = unpack(self.period.load(Ordering::Relaxed))
            .filter(|w| w.start <= now && w.resets_at.is_none_or(|end| now < end));
        if let Some(period) = kept {
            return period;
        }
        let period = quota.window(now);
        if let Some(packed) = pack(period) {
            self.period.store(packed, Ordering::Relaxed);
        }
        period
    }

    /// Takes every credit out of the reserve: `(window, credits)` to give back, if any.
    fn drain(&self) -> Option<(Timestamp, u64)> {
        let window = Timestamp::from_unix(self.window.load(Ordering::Acquire));
        let credits = self.reserve.drain(window);
        (credits > 0).then_some((window, credits))
    }
}

/// The reserves of every quota this node has spent from, by the id of what the quota limits (a
/// credential or a tenant). A std `RwLock`: a spend takes the read lock for one lookup; the write
/// lock is taken once per quota, the first time it is used.
#[derive(Debug, Default)]
pub struct Credits {
    slots: RwLock<HashMap<String, Arc<Slot>>>,
    /// The rate limits' reserves, by credential id (API.md §9, on a store shared by nodes).
    rates: RwLock<HashMap<String, Arc<Slot>>>,
    /// Credits drained from reserves whose quota changed, waiting to be given back.
    returns: Mutex<Vec<(String, Timestamp, u64)>>,
    /// Round trips to the store for this node's takes, for the metrics.
    takes: AtomicU64,
}

impl Credits {
    /// Spends `cost` credits of the quota on `subject` for the request at `now`: from this node's
    /// reserve when it can pay, else by taking more from the store. `Ok` carries what is left as
    /// far as this node knows (the store's count at its last take plus its own reserve), for
    /// `X-Keygate-Quota-Remaining`; `Ok(None)` when the store holds no quota for `subject` (it was
    /// removed since it was read).
    pub async fn spend(
        &self,
        store: &dyn QuotaStore,
        on: &QuotaOn,
        now: Timestamp,
        cost: u64,
    ) -> Result<Option<Spent>, SpendError> {
        let slot = on.slot.get_or_init(|| slot_in(&self.slots, &on.subject));
        let period = slot.period(&on.quota, now);
        let left = self
            .spend_from(
                slot,
                on.quota.limit,
                period,
                now,
                cost,
                |window, need, want| async move {
                    // What was drained here when the quota changed is still counted as used in
                    // the store: given back first, it is not counted against the quota as it is
                    // now (a lowered limit would refuse requests until the next give-back).
                    self.give_back_owed(store, &on.subject).await;
                    store
                        .take_credits(&on.subject, window, need, want, now)
                        .await
                },
            )
            .await?;
        Ok(left.map(|left| Spent {
            left,
            resets_at: period.resets_at,
        }))
    }

    /// Spends one request of the rate limit of `credential` on the GCRA state the store keeps
    /// for nodes sharing it (API.md §9): from this node's reserve of requests already taken from
    /// the shared schedule, else by taking more. Taken requests count as made when taken, so the
    /// nodes together admit what one node would, plus at most what each holds unspent (fewer
    /// than [`RESERVE`]). `Ok` carries what is left as far as this node knows. A rate limit's
    /// reserve is never given back; one left idle is dropped (the schedule only gets stricter).
    pub async fn spend_rate(
        &self,
        store: &dyn QuotaStore,
        credential: &str,
        cell: RateCell,
        now_ms: i64,
    ) -> Result<u64, SpendError> {
        // Requests taken from a schedule belong to no window: any time is theirs.
        const CELLS: Timestamp = Timestamp::from_unix(0);
        let slot = slot_in(&self.rates, credential);
        if slot.reserve.spend(CELLS, 1) == Spend::Paid {
            return Ok(self.left(&slot, CELLS));
        }
        let _taking = slot.taking.lock().await;
        if slot.reserve.spend(CELLS, 1) == Spend::Paid {
            return Ok(self.left(&slot, CELLS));
        }
        let wait = |until_ms: i64| SpendError::Exhausted {
            retry_after: Some(
                u64::try_from((until_ms - now_ms + 999) / 1000)
                    .unwrap_or(0)
                    .max(1),
            ),
            left: 0,
        };
        // For a rate limit, in milliseconds.
        let until = slot.spent_until.load(Ordering::Acquire);
        if now_ms < until {
            return Err(wait(until));
        }
        let (interval, tolerance) = (cell.interval_ms.max(1), cell.tolerance_ms.max(0));
        let burst = u64::try_from(tolerance / interval + 1).unwrap_or(1);
        let remaining = match slot.remaining.load(Ordering::Acquire) {
            UNKNOWN => burst,
            known => known,
        };
        self.takes.fetch_add(1, Ordering::Relaxed);
        let taken = store
            .take_rate(credential, cell, now_ms, 1, Reserve::want(1, remaining))
            .await?;
        let free = (now_ms + tolerance + interval - taken.tat_ms.max(now_ms)) / interval;
        slot.remaining
            .store(u64::try_from(free).unwrap_or(0), Ordering::Release);
        if taken.taken == 0 {
            // One more is free once now plus the tolerance reaches the TAT.
            let until = (taken.tat_ms - tolerance).max(now_ms + 1);
            slot.spent_until.store(until, Ordering::Release);
            return Err(wait(until));
        }
        slot.reserve.add(CELLS, taken.taken - 1);
        Ok(self.left(&slot, CELLS))
    }

    async fn spend_from<F, Fut>(
        &self,
        slot: &Slot,
        limit: u64,
        period: Window,
        now: Timestamp,
        cost: u64,
        take: F,
    ) -> Result<Option<u64>, SpendError>
    where
        F: FnOnce(Timestamp, u64, u64) -> Fut,
        Fut: std::future::Future<Output = Result<Option<Taken>, StoreError>>,
    {
        let window = period.start;
        let exhausted = |left: u64| SpendError::Exhausted {
            retry_after: period.resets_at.map(|at| {
                u64::try_from(at.unix().saturating_sub(now.unix()))
                    .unwrap_or(0)
                    .max(1)
            }),
            left,
        };
        if slot.reserve.spend(window, cost) == Spend::Paid {
            return Ok(Some(self.left(slot, window)));
        }
        let _taking = slot.taking.lock().await;
        // Another request may have filled the reserve, or found the store empty, meanwhile.
        if slot.reserve.spend(window, cost) == Spend::Paid {
            return Ok(Some(self.left(slot, window)));
        }
        if now.unix() < slot.spent_until.load(Ordering::Acquire) && cost > 0 {
            return Err(exhausted(self.left(slot, window)));
        }
        // Before its first take a node sizes it as if the whole limit were left.
        let remaining = match slot.remaining.load(Ordering::Acquire) {
            UNKNOWN => limit,
            known => known,
        };
        let want = Reserve::want(cost, remaining);
        self.takes.fetch_add(1, Ordering::Relaxed);
        let Some(taken) = take(window, cost, want).await? else {
            return Ok(None);
        };
        slot.remaining.store(taken.remaining, Ordering::Release);
        if taken.remaining == 0 && taken.taken < cost {
            // Until the next second, or the refill if that comes first.
            let next = now.unix().saturating_add(1);
            let until = period.resets_at.map_or(next, |at| at.unix().min(next));
            slot.spent_until.store(until, Ordering::Release);
        }
        if taken.taken < cost {
            return Err(exhausted(self.left(slot, window)));
        }
        // The request keeps its cost; the rest waits in the reserve for the next ones.
        slot.window.store(window.unix(), Ordering::Release);
        slot.reserve.add(window, taken.taken - cost);
        Ok(Some(self.left(slot, window)))
    }

    /// [`Credits::spend`] when this node's reserve can pay, without a future: `None` when the
    /// store must be asked.
    pub fn spend_now(&self, on: &QuotaOn, now: Timestamp, cost: u64) -> Option<Spent> {
        let slot = on.slot.get_or_init(|| slot_in(&self.slots, &on.subject));
        let period = slot.period(&on.quota, now);
        (slot.reserve.spend(period.start, cost) == Spend::Paid).then(|| Spent {
            left: self.left(slot, period.start),
            resets_at: period.resets_at,
        })
    }

    /// Puts back what a request spent from `on` when another quota refused it.
    pub fn refund(&self, on: &QuotaOn, now: Timestamp, cost: u64) {
        if let Some(slot) = on.slot.get() {
            slot.reserve.refund(slot.period(&on.quota, now).start, cost);
        }
    }

    /// How many times this node has taken credits from the store.
    pub fn store_takes(&self) -> u64 {
        self.takes.load(Ordering::Relaxed)
    }

    /// What this node holds of the quota on `subject` in the window of `now`: counted as used
    /// in the store, not spent yet. That includes what it drained when the quota changed and
    /// has not given back yet: a read right after a change would otherwise count it as used.
    pub fn held(&self, subject: &str, quota: &Quota, now: Timestamp) -> u64 {
        let window = quota.window(now).start;
        let reserved = self
            .read()
            .get(subject)
            .map_or(0, |slot| slot.reserve.held(window));
        let returning: u64 = self
            .returns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(owed, at, _)| owed == subject && *at == window)
            .map(|(_, _, credits)| credits)
            .sum();
        reserved.saturating_add(returning)
    }

    /// Drops what this node holds of the quota on `subject`, which changed (or went): the
    /// credits are given back by the next [`Credits::give_back_idle`], and the next request
    /// takes afresh under the quota as it is now.
    pub fn forget(&self, subject: &str) {
        let Some(slot) = self
            .slots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(subject)
        else {
            return;
        };
        if let Some((window, credits)) = slot.drain() {
            self.returns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((subject.to_owned(), window, credits));
        }
    }

    /// Gives back to the store the credits of reserves no request has spent from since the last
    /// call (so another node can have them), and those of quotas that changed. Returns how many
    /// credits went back; what the store could not take back is kept for the next call.
    pub async fn give_back_idle(&self, store: &dyn QuotaStore) -> u64 {
        let mut due = std::mem::take(&mut *self.returns.lock().unwrap_or_else(|p| p.into_inner()));
        for (subject, slot) in self.read().iter() {
            let word = slot.reserve.word.load(Ordering::Acquire);
            if slot.seen.swap(word, Ordering::AcqRel) == word
                && let Some((window, credits)) = slot.drain()
            {
                due.push((subject.clone(), window, credits));
            }
        }
        // Rate limits idle since the last look are forgotten: their windows are short, and a
        // credential not used for a while needs no slot.
        self.rates
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, slot| {
                let word = slot.reserve.word.load(Ordering::Acquire);
                slot.seen.swap(word, Ordering::AcqRel) != word
            });
        self.give_back(store, due).await
    }

    /// Gives back every credit this node holds (a node stopping).
    pub async fn give_back_all(&self, store: &dyn QuotaStore) -> u64 {
        let mut due = std::mem::take(&mut *self.returns.lock().unwrap_or_else(|p| p.into_inner()));
        for (subject, slot) in self.read().iter() {
            if let Some((window, credits)) = slot.drain() {
                due.push((subject.clone(), window, credits));
            }
        }
        self.give_back(store, due).await
    }

    /// Gives back what this node drained of `subject`'s reserve when its quota changed and has
    /// not given back yet.
    async fn give_back_owed(&self, store: &dyn QuotaStore, subject: &str) {
        let owed: Vec<(String, Timestamp, u64)> = {
            let mut returns = self.returns.lock().unwrap_or_else(|p| p.into_inner());
            if !returns.iter().any(|(owed, _, _)| owed == subject) {
                return;
            }
            let (owed, rest) = std::mem::take(&mut *returns)
                .into_iter()
                .partition(|(owed, _, _)| owed == subject);
            *returns = rest;
            owed
        };
        self.give_back(store, owed).await;
    }

    async fn give_back(&self, store: &dyn QuotaStore, due: Vec<(String, Timestamp, u64)>) -> u64 {
        let mut given = 0;
        for (subject, window, credits) in due {
            match store.give_back_credits(&subject, window, credits).await {
                Ok(()) => given += credits,
                // Kept for the next try; the store still counts them as taken.
                Err(_) => self
                    .returns
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((subject, window, credits)),
            }
        }
        given
    }

    fn left(&self, slot: &Slot, window: Timestamp) -> u64 {
        match slot.remaining.load(Ordering::Acquire) {
            UNKNOWN => slot.reserve.held(window),
            known => known.saturating_add(slot.reserve.held(window)),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Slot>>> {
        self.slots.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// The slot of `subject` in `slots`, made on its first use.
fn slot_in(slots: &RwLock<HashMap<String, Arc<Slot>>>, subject: &str) -> Arc<Slot> {
    if let Some(slot) = slots.read().unwrap_or_else(|p| p.into_inner()).get(subject) {
        return Arc::clone(slot);
    }
    let mut slots = slots.write().unwrap_or_else(|p| p.into_inner());
    Arc::clone(slots.entry(subject.to_owned()).or_default())
}

/// A quota changed on any node (its limit, its period, or it went): what this node holds of it
/// was taken under the old one, so it goes back, and the next request takes afresh.
impl ChangeListener for Credits {
    fn changed(&self, change: &Change) {
        match change {
            Change::Credential(id) => self.forget(id.as_str()),
            Change::Tenant(id) => self.forget(id.as_str()),
            Change::User(_) | Change::Role(_) | Change::SigningKeys => {}
        }
    }

    fn may_have_missed_changes(&self) {
        let subjects: Vec<String> = self.read().keys().cloned().collect();
        for subject in subjects {
            self.forget(&subject);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use super::*;

    /// Spends as the gate does, from a verification made afresh: what is left.
    async fn spend(
        node: &Credits,
        store: &dyn QuotaStore,
        subject: &str,
        quota: &Quota,
        now: Timestamp,
        cost: u64,
    ) -> Result<Option<u64>, SpendError> {
        let on = QuotaOn {
            subject: subject.to_owned(),
            quota: *quota,
            slot: OnceLock::new(),
        };
        Ok(node
            .spend(store, &on, now, cost)
            .await?
            .map(|spent| spent.left))
    }

    const W0: Timestamp = Timestamp::from_unix(3600);
    const W1: Timestamp = Timestamp::from_unix(7200);

    #[test]
    fn periods_pack_into_one_word_and_back() {
        for period in [
            Window {
                start: W0,
                resets_at: Some(W1),
            },
            Window {
                start: Timestamp::from_unix(1_798_761_600),
                resets_at: Some(Timestamp::from_unix(1_798_761_600 + 31 * 86_400)),
            },
            Window {
                start: W0,
                resets_at: None,
            },
        ] {
            assert_eq!(unpack(pack(period).unwrap()), Some(period));
        }
        let before_1970 = Window {
            start: Timestamp::from_unix(-1),
            resets_at: None,
        };
        assert_eq!(pack(before_1970), None, "worked out each time instead");
        assert_eq!(unpack(NO_PERIOD), None);
    }

    #[test]
    fn spends_what_it_holds_and_no_more() {
        let reserve = Reserve::default();
        assert_eq!(reserve.spend(W0, 1), Spend::Short, "nothing taken yet");
        reserve.add(W0, 3);
        assert_eq!(reserve.spend(W0, 2), Spend::Paid);
        assert_eq!(reserve.spend(W0, 2), Spend::Short, "one left, two asked");
        assert_eq!(reserve.spend(W0, 1), Spend::Paid);
        assert_eq!(reserve.held(W0), 0);
        assert_eq!(
            reserve.spend(W0, 0),
            Spend::Paid,
            "a free request needs no credit"
        );
    }

    #[test]
    fn credits_belong_to_their_window() {
        let reserve = Reserve::default();
        reserve.add(W0, 5);
        assert_eq!(
            reserve.spend(W1, 1),
            Spend::Short,
            "the new window has none"
        );
        reserve.add(W1, 2);
        assert_eq!(
            reserve.held(W0),
            0,
            "the old window's credits ended with it"
        );
        assert_eq!(reserve.held(W1), 2);
        reserve.refund(W0, 4);
        assert_eq!(reserve.held(W1), 2, "nor does a stale refund");
        assert_eq!(reserve.drain(W0), 0);
        assert_eq!(reserve.drain(W1), 2);
        assert_eq!(reserve.held(W1), 0);
    }

    #[test]
    fn neighbouring_windows_never_share_a_tag() {
        let reserve = Reserve::default();
        assert_eq!(reserve.held(Timestamp::from_unix(0)), 0);
        reserve.add(W0, 1);
        for window in [
            W1,
            Timestamp::from_unix(W0.unix() - 3600),
            Timestamp::from_unix(0),
        ] {
            assert_eq!(reserve.held(window), 0, "{window}");
            assert_eq!(reserve.spend(window, 1), Spend::Short, "{window}");
        }
        let years_later = Timestamp::from_unix(W0.unix() + 100 * 365 * 86_400);
        assert_eq!(reserve.held(years_later), 0);
    }

    #[test]
    fn a_refund_puts_back_what_was_spent() {
        let reserve = Reserve::default();
        reserve.add(W0, 2);
        assert_eq!(reserve.spend(W0, 2), Spend::Paid);
        reserve.refund(W0, 2);
        assert_eq!(reserve.held(W0), 2);
    }

    #[test]
    fn takes_shrink_as_the_quota_runs_out() {
        assert_eq!(Reserve::want(1, 1_000_000), RESERVE);
        assert_eq!(Reserve::want(1, 8 * RESERVE), RESERVE);
        assert_eq!(Reserve::want(1, 80), 10);
        assert_eq!(Reserve::want(1, 15), 1, "the last credits one at a time");
        assert_eq!(Reserve::want(1, 0), 1);
        assert_eq!(
            Reserve::want(500, 1_000_000),
            500,
            "never less than the cost"
        );
    }

    /// Four threads spend from one reserve while a fifth adds credits: exactly what was added is
    /// spent, never more.
    #[test]
    fn concurrent_spends_never_exceed_what_was_taken() {
        let reserve = Arc::new(Reserve::default());
        let paid = Arc::new(AtomicU64::new(0));
        let added = 10_000;
        let spenders: Vec<_> = (0..4)
            .map(|_| {
                let (reserve, paid) = (reserve.clone(), paid.clone());
                std::thread::spawn(move || {
                    let mut misses = 0;
                    while misses < 1_000_000 {
                        match reserve.spend(W0, 1) {
                            Spend::Paid => {
                                paid.fetch_add(1, Ordering::Relaxed);
                            }
                            Spend::Short => misses += 1,
                        }
                    }
                })
            })
            .collect();
        for _ in 0..added / 10 {
            reserve.add(W0, 10);
        }
        for spender in spenders {
            spender.join().unwrap();
        }
        assert_eq!(paid.load(Ordering::Relaxed) + reserve.held(W0), added);
    }

    /// The store's half as both databases do it (one row per quota, taken under its lock),
    /// counting its round trips.
    #[derive(Default)]
    struct FakeStore {
        rows: std::sync::Mutex<HashMap<String, (u64, i64, u64)>>,
        trips: AtomicU64,
    }

    impl FakeStore {
        fn with(subject: &str, limit: u64) -> Arc<Self> {
            let store = Self::default();
            store
                .rows
                .lock()
                .unwrap()
                .insert(subject.into(), (limit, i64::MIN, 0));
            Arc::new(store)
        }

        fn used(&self, subject: &str) -> u64 {
            self.rows.lock().unwrap()[subject].2
        }
    }

    #[async_trait::async_trait]
    impl QuotaStore for FakeStore {
        fn shared_by_nodes(&self) -> bool {
            true
        }

        async fn take_rate(
            &self,
            subject: &str,
            cell: RateCell,
            now_ms: i64,
            need: u64,
            want: u64,
        ) -> Result<crate::store::RateTaken, StoreError> {
            self.trips.fetch_add(1, Ordering::Relaxed);
            let mut rows = self.rows.lock().unwrap();
            let (_, tat, _) = rows.entry(subject.to_owned()).or_insert((0, now_ms, 0));
            let base = (*tat).max(now_ms);
            let free = ((now_ms + cell.tolerance_ms + cell.interval_ms - base) / cell.interval_ms)
                .max(0) as u64;
            let taken = if free < need {
                0
            } else {
                want.max(need).min(free)
            };
            *tat = base + taken as i64 * cell.interval_ms;
            Ok(crate::store::RateTaken {
                taken,
                tat_ms: *tat,
            })
        }

        async fn prune_rate_limits(&self, _: i64) -> Result<u64, StoreError> {
            Ok(0)
        }

        async fn stored_quota(
            &self,
            _: &str,
        ) -> Result<Option<crate::quota::StoredQuota>, StoreError> {
            Ok(None)
        }

        async fn set_quota(
            &self,
            _: crate::store::QuotaTarget<'_>,
            _: Option<&crate::quota::StoredQuota>,
            _: &crate::model::AuditEvent,
        ) -> Result<Option<()>, StoreError> {
            Ok(None)
        }

        async fn take_credits(
            &self,
            subject: &str,
            window: Timestamp,
            need: u64,
            want: u64,
            _: Timestamp,
        ) -> Result<Option<crate::store::Taken>, StoreError> {
            self.trips.fetch_add(1, Ordering::Relaxed);
            let mut rows = self.rows.lock().unwrap();
            let Some((limit, start, used)) = rows.get_mut(subject) else {
                return Ok(None);
            };
            if *start < window.unix() {
                (*start, *used) = (window.unix(), 0);
            }
            let left = *limit - *used;
            let taken = if left < need {
                0
            } else {
                want.max(need).min(left)
            };
            *used += taken;
            Ok(Some(crate::store::Taken {
                taken,
                remaining: *limit - *used,
            }))
        }

        async fn give_back_credits(
            &self,
            subject: &str,
            window: Timestamp,
            credits: u64,
        ) -> Result<(), StoreError> {
            self.trips.fetch_add(1, Ordering::Relaxed);
            let mut rows = self.rows.lock().unwrap();
            if let Some((_, start, used)) = rows.get_mut(subject)
                && *start == window.unix()
            {
                *used = used.saturating_sub(credits);
            }
            Ok(())
        }
    }

    fn hourly(limit: u64) -> Quota {
        Quota {
            limit,
            period: crate::quota::QuotaPeriod::Hour,
            anchor: Timestamp::from_unix(0),
        }
    }

    /// Three nodes, each with four tasks, spend from one quota of 1 000 until it refuses: exactly
    /// 1 000 requests are admitted, in far fewer round trips than requests; what the nodes still
    /// hold is given back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn nodes_sharing_a_quota_admit_exactly_its_limit() {
        let store = FakeStore::with("tok_q", 1_000);
        let quota = hourly(1_000);
        let nodes: Vec<Arc<Credits>> = (0..3).map(|_| Arc::default()).collect();
        let mut tasks = Vec::new();
        for node in nodes.iter().cycle().take(12) {
            let (node, store) = (node.clone(), store.clone());
            tasks.push(tokio::spawn(async move {
                let mut admitted = 0_u64;
                loop {
                    match spend(&node, &*store, "tok_q", &quota, W0, 1).await {
                        Ok(Some(_)) => admitted += 1,
                        Err(SpendError::Exhausted { retry_after, .. }) => {
                            assert_eq!(retry_after, Some(3600));
                            return admitted;
                        }
                        other => panic!("{other:?}"),
                    }
                }
            }));
        }
        let mut admitted = 0;
        for task in tasks {
            admitted += task.await.unwrap();
        }
        assert_eq!(admitted, 1_000);
        let trips = store.trips.load(Ordering::Relaxed);
        assert!(trips < 200, "{trips} round trips for 1 000 requests");
        for node in &nodes {
            node.give_back_all(&*store).await;
        }
        assert_eq!(store.used("tok_q"), 1_000, "every credit taken was spent");
    }

    #[tokio::test]
    async fn idle_and_changed_reserves_go_back() {
        let store = FakeStore::with("tok_q", 1_000);
        let quota = hourly(1_000);
        let node = Credits::default();
        spend(&node, &*store, "tok_q", &quota, W0, 1).await.unwrap();
        assert_eq!(store.used("tok_q"), RESERVE);
        assert_eq!(node.held("tok_q", &quota, W0), RESERVE - 1);
        assert_eq!(
            node.give_back_idle(&*store).await,
            0,
            "first look: not idle yet"
        );
        spend(&node, &*store, "tok_q", &quota, W0, 1).await.unwrap();
        assert_eq!(node.give_back_idle(&*store).await, 0, "spent from since");
        assert_eq!(node.give_back_idle(&*store).await, RESERVE - 2, "idle");
        assert_eq!(store.used("tok_q"), 2);

        spend(&node, &*store, "tok_q", &quota, W0, 1).await.unwrap();
        node.forget("tok_q");
        assert_eq!(
            node.held("tok_q", &quota, W0),
            RESERVE - 1,
            "what a forgotten reserve held is still held until it is given back"
        );
        assert_eq!(node.give_back_idle(&*store).await, RESERVE - 1);
        assert_eq!(node.held("tok_q", &quota, W0), 0, "given back");
        assert_eq!(store.used("tok_q"), 3);
        assert_eq!(node.store_takes(), 2, "one take per empty reserve");
    }

    #[tokio::test]
    async fn what_a_changed_quota_drained_goes_back_before_the_next_take() {
        let store = FakeStore::with("tok_q", 1_000);
        let quota = hourly(1_000);
        let node = Credits::default();
        spend(&node, &*store, "tok_q", &quota, W0, 1).await.unwrap();
        node.forget("tok_q");
        assert_eq!(store.used("tok_q"), RESERVE, "drained, not given back yet");
        // Lowered below what the store counts: the drained credits must not count as spent.
        let lowered = hourly(RESERVE - 1);
        store.rows.lock().unwrap().get_mut("tok_q").unwrap().0 = RESERVE - 1;
        spend(&node, &*store, "tok_q", &lowered, W0, 1)
            .await
            .unwrap();
        node.give_back_all(&*store).await;
        assert_eq!(store.used("tok_q"), 2, "two spent, the rest given back");
    }

    /// Two nodes share a limit of 100 a minute: between them, a burst of 100 and then one more
    /// per interval, plus at most what a node took and did not spend.
    #[tokio::test]
    async fn nodes_sharing_a_rate_limit_admit_what_one_node_would() {
        let store = Arc::new(FakeStore::default());
        let cell = crate::ratelimit::cell(crate::model::RateLimit {
            requests: 100,
            per_seconds: 60,
        });
        let nodes = [Credits::default(), Credits::default()];
        let t0 = 1_000_000_000;
        let mut admitted = 0;
        for i in 0..400 {
            if nodes[i % 2]
                .spend_rate(&*store, "tok_r", cell, t0)
                .await
                .is_ok()
            {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 100, "the burst, shared");
        let later = t0 + cell.interval_ms * 10;
        let mut more = 0;
        for i in 0..40 {
            if nodes[i % 2]
                .spend_rate(&*store, "tok_r", cell, later)
                .await
                .is_ok()
            {
                more += 1;
            }
        }
        assert_eq!(more, 10, "ten intervals, ten more");
        match nodes[0].spend_rate(&*store, "tok_r", cell, later).await {
            Err(SpendError::Exhausted { retry_after, .. }) => assert_eq!(retry_after, Some(1)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_busy_quota_costs_one_round_trip_per_reserve() {
        let store = FakeStore::with("tok_q", 1_000_000);
        let quota = hourly(1_000_000);
        let node = Credits::default();
        for _ in 0..1_000 {
            spend(&node, &*store, "tok_q", &quota, W0, 1).await.unwrap();
        }
        let trips = store.trips.load(Ordering::Relaxed);
        assert!(trips <= 1_000 / RESERVE + 1, "{trips}");
    }

    #[tokio::test]
    async fn unspent_credits_go_back_and_a_new_window_refills() {
        let store = FakeStore::with("tok_q", 100);
        let quota = hourly(100);
        let node = Credits::default();
        // The first take: an eighth of 100, the request keeps 1 of them.
        assert_eq!(
            spend(&node, &*store, "tok_q", &quota, W0, 1).await.unwrap(),
            Some(99)
        );
        assert_eq!(store.used("tok_q"), 12);
        node.give_back_all(&*store).await;
        assert_eq!(
            store.used("tok_q"),
            1,
            "only the request's credit stays used"
        );

        // A cost larger than what is left is refused and costs nothing.
        assert!(matches!(
            spend(&node, &*store, "tok_q", &quota, W0, 100).await,
            Err(SpendError::Exhausted { .. })
        ));
        assert_eq!(store.used("tok_q"), 1);
        assert!(spend(&node, &*store, "tok_q", &quota, W0, 99).await.is_ok());
        assert!(matches!(
            spend(&node, &*store, "tok_q", &quota, W0, 1).await,
            Err(SpendError::Exhausted { .. })
        ));
        // A free request still passes.
        assert!(spend(&node, &*store, "tok_q", &quota, W0, 0).await.is_ok());
        // The next hour starts again at the full limit.
        assert!(spend(&node, &*store, "tok_q", &quota, W1, 1).await.is_ok());
        assert!(store.used("tok_q") >= 1 && store.used("tok_q") <= 100);

        // A refund puts the cost back in the reserve.
        let on = QuotaOn {
            subject: "tok_q".into(),
            quota,
            slot: OnceLock::new(),
        };
        node.spend(&*store, &on, W1, 1).await.unwrap();
        let held = node.read()["tok_q"].reserve.held(W1);
        node.refund(&on, W1, 1);
        assert_eq!(node.read()["tok_q"].reserve.held(W1), held + 1);
        // No quota in the store: nothing to spend from.
        assert_eq!(
            spend(&node, &*store, "tok_none", &quota, W1, 1)
                .await
                .unwrap(),
            None
        );
    }
}
