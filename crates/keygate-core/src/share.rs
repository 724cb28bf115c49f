//! One value for equal values. What many cached verifications have in common (a role's
//! permission set, a tenant, its line of ancestors) is held once and shared, not copied into
//! each: at a million cached credentials the copies were most of the cache's memory.
//!
//! The set of kept values is swept of those nobody else holds any more whenever it has doubled
//! since the last sweep, so it stays within about twice the values in use, and a sweep costs each
//! insert a constant on average.

use std::any::Any;
use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use once_cell::race::OnceBox;

/// Below this many kept values, no sweep.
const FIRST_SWEEP: usize = 1024;

#[derive(Debug)]
pub struct Interner<T> {
    kept: Mutex<Kept<T>>,
}

#[derive(Debug)]
struct Kept<T> {
    values: HashSet<Arc<T>>,
    sweep_at: usize,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self {
            kept: Mutex::new(Kept {
                values: HashSet::new(),
                sweep_at: FIRST_SWEEP,
            }),
        }
    }
}

impl<T: Hash + Eq> Interner<T> {
    /// The kept value equal to `value`, or `value`, kept from now on.
    pub fn share(&self, value: Arc<T>) -> Arc<T> {
        // A panic while holding the lock leaves the set as it was: still a set of values.
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = kept.values.get(&value) {
            return Arc::clone(found);
        }
        if kept.values.len() >= kept.sweep_at {
            kept.values.retain(|kept| Arc::strong_count(kept) > 1);
            kept.sweep_at = (kept.values.len() * 2).max(FIRST_SWEEP);
        }
        kept.values.insert(Arc::clone(&value));
        value
    }

    /// How many values are kept.
    pub fn len(&self) -> usize {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a front end derives from the value holding it (a header value, a response body), made
/// on first use and kept as long as that value lives: one word until then. Ignored by equality
/// and hashing, so a shared value's slot does not make two equal values differ. Two threads
/// deriving at once may both make it; one result is kept (they are the same).
#[derive(Default)]
pub struct Derived(OnceBox<Box<dyn Any + Send + Sync>>);

impl Derived {
    /// What `make` derives, made on the first call. One type per slot: `None` if a value of
    /// another type was kept first.
    pub fn get_or_init<T: Any + Send + Sync>(&self, make: impl FnOnce() -> T) -> Option<&T> {
        self.0
            .get_or_init(|| Box::new(Box::new(make())))
            .downcast_ref()
    }
}

impl PartialEq for Derived {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Derived {}

impl Hash for Derived {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Derived(made)"
        } else {
            "Derived(not yet)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_are_one_and_unused_ones_are_let_go() {
        let interner = Interner::default();
        let a = interner.share(Arc::new("tenant a".to_owned()));
        let again = interner.share(Arc::new("tenant a".to_owned()));
        assert!(Arc::ptr_eq(&a, &again));
        // Many values used once and dropped: the set stays within twice what is in use.
        for i in 0..100_000 {
            drop(interner.share(Arc::new(format!("gone {i}"))));
        }
        assert!(interner.len() <= 2 * FIRST_SWEEP, "{}", interner.len());
        // What is still held survives every sweep.
        assert!(Arc::ptr_eq(
            &a,
            &interner.share(Arc::new("tenant a".to_owned()))
        ));
        // Values in use are all kept, however many.
        let held: Vec<_> = (0..5_000)
            .map(|i| interner.share(Arc::new(format!("held {i}"))))
            .collect();
        for (i, value) in held.iter().enumerate() {
            assert!(Arc::ptr_eq(
                value,
                &interner.share(Arc::new(format!("held {i}")))
            ));
        }
    }

    #[test]
    fn a_derived_value_is_made_once_and_does_not_count_in_equality() {
        let interner = Interner::default();
        let held = interner.share(Arc::new((7u8, Derived::default())));
        let made = held.1.get_or_init(|| "seven".to_owned());
        assert_eq!(made.map(String::as_str), Some("seven"));
        // Made once: a second maker is not called.
        let again = held.1.get_or_init(|| -> String { unreachable!() });
        assert_eq!(again.map(String::as_str), Some("seven"));
        // Another type asked of the same slot gets nothing, not a wrong value.
        assert_eq!(held.1.get_or_init(|| 7u32), None);
        // An equal value with nothing derived is still the same shared value.
        let equal = interner.share(Arc::new((7u8, Derived::default())));
        assert!(Arc::ptr_eq(&held, &equal));
    }
}
