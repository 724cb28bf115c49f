//! One value for equal values. What many cached verifications have in common (a role's
//! permission set, a tenant, its line of ancestors) is held once and shared, not copied into
//! each: at a million cached credentials the copies were most of the cache's memory.
//!
//! The set of kept values is swept of those nobody else holds any more whenever it has doubled
//! since the last sweep, so it stays within about twice the values in use, and a sweep costs each
//! insert a constant on average.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

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
}
