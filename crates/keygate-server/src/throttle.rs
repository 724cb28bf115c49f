//! Slowing down password guessing: failed sign-ins are counted per email and per client address in
//! a fixed window; past the limit, sign-in answers 429 with `Retry-After` until the window ends.
//!
//! In memory and per node: an attacker spreading guesses over several nodes gets a few more tries,
//! which the per-address limit and argon2's cost keep small. A std `Mutex`: nothing awaits while
//! it is held.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use keygate_core::Timestamp;

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

#[derive(Debug, Default)]
pub struct LoginThrottle {
    windows: Mutex<HashMap<String, Window>>,
}

impl LoginThrottle {
    fn keys(email: &str, address: Option<&str>) -> [(String, u32); 2] {
        [
            (
                format!("email:{}", keygate_core::model::email_key(email)),
                PER_EMAIL,
            ),
            (
                format!("address:{}", address.unwrap_or("unknown")),
                PER_ADDRESS,
            ),
        ]
    }

    /// `Err(seconds)` to wait if either key is over its limit.
    pub fn check(&self, email: &str, address: Option<&str>, now: Timestamp) -> Result<(), u64> {
        let windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = 0;
        for (key, limit) in Self::keys(email, address) {
            if let Some(window) = windows.get(&key) {
                let ends = window.started.saturating_add(WINDOW);
                if window.failures >= limit && ends > now {
                    wait = wait.max(ends.unix() - now.unix());
                }
            }
        }
        if wait > 0 {
            Err(u64::try_from(wait).unwrap_or(1))
        } else {
            Ok(())
        }
    }

    pub fn failed(&self, email: &str, address: Option<&str>, now: Timestamp) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() > SWEEP_ABOVE {
            windows.retain(|_, w| w.started.saturating_add(WINDOW) > now);
        }
        for (key, _) in Self::keys(email, address) {
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
    }

    /// A successful sign-in clears the email's count (not the address's: one good password does
    /// not excuse a spray of guesses at other accounts).
    pub fn succeeded(&self, email: &str) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        windows.remove(&format!("email:{}", keygate_core::model::email_key(email)));
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
                    .check("Ada@example.com", Some("10.0.0.1"), now)
                    .is_ok()
            );
            throttle.failed("ada@example.com", Some("10.0.0.1"), now);
        }
        let wait = throttle
            .check("ADA@example.com", Some("10.0.0.2"), now)
            .unwrap_err();
        assert_eq!(wait, WINDOW.as_secs());
        assert!(
            throttle
                .check("bob@example.com", Some("10.0.0.1"), now)
                .is_ok()
        );
        let later = now.saturating_add(WINDOW);
        assert!(
            throttle
                .check("ada@example.com", Some("10.0.0.1"), later)
                .is_ok()
        );

        for i in 0..PER_ADDRESS {
            throttle.failed(&format!("user{i}@example.com"), Some("10.9.9.9"), later);
        }
        assert!(
            throttle
                .check("new@example.com", Some("10.9.9.9"), later)
                .is_err()
        );
        throttle.succeeded("new@example.com");
        assert!(
            throttle
                .check("new@example.com", Some("10.9.9.9"), later)
                .is_err()
        );
    }
}
