//! Login attempt limits, per account and per client address: after too many failures in a
//! window, further attempts are refused with 429 and a Retry-After until the window passes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const MAX_PER_ACCOUNT: usize = 5;
pub const MAX_PER_ADDRESS: usize = 20;

#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl LoginLimiter {
    fn keys(username: &str, address: Option<&str>) -> [(String, usize); 2] {
        [
            (format!("user:{username}"), MAX_PER_ACCOUNT),
            (format!("addr:{}", address.unwrap_or("?")), MAX_PER_ADDRESS),
        ]
    }

    /// `Some(wait)` when the attempt must be refused. Otherwise the attempt is counted at once,
    /// as if it failed (concurrent attempts cannot slip past the limit while their passwords
    /// are being checked); [`LoginLimiter::succeeded`] takes it back.
    pub fn check(&self, username: &str, address: Option<&str>) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = None;
        for (key, max) in Self::keys(username, address) {
            if let Some(list) = map.get_mut(&key) {
                list.retain(|t| now.duration_since(*t) < WINDOW);
                if list.len() >= max {
                    let until = WINDOW.saturating_sub(now.duration_since(list[0]));
                    wait = Some(wait.map_or(until, |w: Duration| w.max(until)));
                }
            }
        }
        if wait.is_none() {
            if map.len() > 100_000 {
                // Bound memory under a spray of usernames: forget stale entries.
                map.retain(|_, l| l.last().is_some_and(|t| now.duration_since(*t) < WINDOW));
            }
            for (key, _) in Self::keys(username, address) {
                map.entry(key).or_default().push(now);
            }
        }
        wait
    }

    /// The attempt failed: it stays counted (it was counted by `check`).
    pub fn failed(&self, _username: &str, _address: Option<&str>) {}

    /// The attempt succeeded: the account's failures are forgiven and the address's count
    /// for this attempt taken back.
    pub fn succeeded(&self, username: &str, address: Option<&str>) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&format!("user:{username}"));
        if let Some(list) = map.get_mut(&format!("addr:{}", address.unwrap_or("?"))) {
            list.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_too_many_failures_per_account() {
        let l = LoginLimiter::default();
        for _ in 0..MAX_PER_ACCOUNT {
            assert!(l.check("bob", Some("1.2.3.4")).is_none());
            l.failed("bob", Some("1.2.3.4"));
        }
        let racing = LoginLimiter::default();
        let passed = (0..50)
            .filter(|_| racing.check("eve", Some("6.6.6.6")).is_none())
            .count();
        assert_eq!(
            passed, MAX_PER_ACCOUNT,
            "attempts in flight count before their outcome is known"
        );
        assert!(
            l.check("bob", Some("5.6.7.8")).is_some(),
            "per account, whatever the address"
        );
        assert!(l.check("alice", Some("9.9.9.9")).is_none());
        l.succeeded("bob", Some("5.6.7.8"));
        assert!(l.check("bob", Some("5.6.7.8")).is_none());
    }
}
