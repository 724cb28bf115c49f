//! Slowing down password guessing: sign-in attempts are counted per email and per client address in
//! a fixed window, reserved before the password is checked and given back when it was right; past
//! the limit, sign-in answers 429 with `Retry-After` until the window ends.
//!
//! In memory and per node: an attacker spreading guesses over several nodes gets a few more tries,
//! which the per-address limit and argon2's cost keep small. A std `Mutex`: nothing awaits while
//! it is held.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::Timestamp;

/// Failures allowed per email within a window.
pub const PER_EMAIL: u32 = 5;
/// Failures allowed per client address within a window.
pub const PER_ADDRESS: u32 = 20;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Beyond this many tracked keys, expired windows are swept on the next failure.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Timestamp,
    failures: u32,
}

/// A sign-in held back: how long until the window that held it ends, and that window's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub wait_seconds: u64,
    pub limit: u32,
}

#[derive(Debug, Default)]
pub struct LoginThrottle {
    windows: Mutex<HashMap<String, Window>>,
}

impl LoginThrottle {
    fn keys(email: &str, address: Option<&str>) -> [(String, u32); 2] {
        [
            (
                format!("email:{}", crate::model::email_key(email)),
                PER_EMAIL,
            ),
            (
                format!("address:{}", address.unwrap_or("unknown")),
                PER_ADDRESS,
            ),
        ]
    }

    /// Takes one attempt for `email` from `address`, *before* the password is checked, so that
    /// attempts sent at once cannot all pass a check made before any of them failed: `Err` with
    /// the seconds to wait and the limit reached, if either key is at its limit, changing
    /// nothing. The attempt counts as a failure until [`Self::succeeded`] gives it back.
    pub fn reserve(
        &self,
        email: &str,
        address: Option<&str>,
        now: Timestamp,
    ) -> Result<(), Throttled> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() > SWEEP_ABOVE {
            windows.retain(|_, w| w.started.saturating_add(WINDOW) > now);
        }
        let keys = Self::keys(email, address);
        let mut reached: Option<Throttled> = None;
        for (key, limit) in &keys {
            if let Some(window) = windows.get(key) {
                let ends = window.started.saturating_add(WINDOW);
                if window.failures >= *limit && ends > now {
                    let wait = u64::try_from(ends.unix() - now.unix()).unwrap_or(1);
                    if reached.is_none_or(|r| wait > r.wait_seconds) {
                        reached = Some(Throttled {
                            wait_seconds: wait,
                            limit: *limit,
                        });
                    }
                }
            }
        }
        if let Some(reached) = reached {
            return Err(reached);
        }
        for (key, _) in keys {
            let window = windows.entry(key).or_insert(Window {
                started: now,
                failures: 0,
            });
            if window.started.saturating_add(WINDOW) <= now {
                *window = Window {
                    started: now,
                    failures: 0,
                };
            }
            window.failures += 1;
        }
        Ok(())
    }

    /// The password was right: the email's count is cleared, and the attempt given back to the
    /// address (one good password does not excuse a spray of guesses at other accounts, but is
    /// not one of them).
    pub fn succeeded(&self, email: &str, address: Option<&str>) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let [(email_key, _), (address_key, _)] = Self::keys(email, address);
        windows.remove(&email_key);
        if let Some(window) = windows.get_mut(&address_key) {
            window.failures = window.failures.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_email_and_per_address_with_a_window() {
        let throttle = LoginThrottle::default();
        let now = Timestamp::from_unix(1_000_000);
        for _ in 0..PER_EMAIL {
            assert!(
                throttle
                    .reserve("Ada@example.com", Some("10.0.0.1"), now)
                    .is_ok()
            );
        }
        let held = throttle
            .reserve("ADA@example.com", Some("10.0.0.2"), now)
            .unwrap_err();
        assert_eq!(held.wait_seconds, WINDOW.as_secs());
        assert_eq!(held.limit, PER_EMAIL);
        assert!(
            throttle
                .reserve("bob@example.com", Some("10.0.0.1"), now)
                .is_ok()
        );
        let later = now.saturating_add(WINDOW);
        assert!(
            throttle
                .reserve("ada@example.com", Some("10.0.0.1"), later)
                .is_ok()
        );

        for i in 0..PER_ADDRESS {
            assert!(
                throttle
                    .reserve(&format!("user{i}@example.com"), Some("10.9.9.9"), later)
                    .is_ok()
            );
        }
        assert!(
            throttle
                .reserve("new@example.com", Some("10.9.9.9"), later)
                .is_err()
        );
        throttle.succeeded("new@example.com", Some("10.9.9.9"));
        // One attempt given back to the address: one more may be tried, no more.
        assert!(
            throttle
                .reserve("new@example.com", Some("10.9.9.9"), later)
                .is_ok()
        );
        assert!(
            throttle
                .reserve("other@example.com", Some("10.9.9.9"), later)
                .is_err()
        );
    }

    #[test]
    fn a_refused_reservation_changes_nothing_and_a_success_clears_the_email() {
        let throttle = LoginThrottle::default();
        let now = Timestamp::from_unix(1_000_000);
        for _ in 0..PER_EMAIL {
            throttle
                .reserve("ada@example.com", Some("10.0.0.1"), now)
                .unwrap();
        }
        for _ in 0..10 {
            assert!(
                throttle
                    .reserve("ada@example.com", Some("10.0.0.1"), now)
                    .is_err()
            );
        }
        // The refusals did not count against the address.
        for i in 0..(PER_ADDRESS - PER_EMAIL) {
            throttle
                .reserve(&format!("u{i}@example.com"), Some("10.0.0.1"), now)
                .unwrap();
        }
        assert!(
            throttle
                .reserve("z@example.com", Some("10.0.0.1"), now)
                .is_err()
        );
        throttle.succeeded("ada@example.com", Some("10.0.0.2"));
        assert!(
            throttle
                .reserve("ada@example.com", Some("10.0.0.2"), now)
                .is_ok()
        );
    }
}
