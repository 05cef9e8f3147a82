//! Sign-in and registration attempt limits, kept in memory.
//!
//! - Per client address: after [`MAX_PER_ADDRESS`] failed logins (or [`MAX_REGISTER_PER_ADDRESS`]
//!   registration attempts) within [`WINDOW`], that address gets 429 until the window passes.
//! - Per account: after [`MAX_PER_ACCOUNT`] failures, attempts are refused only from addresses
//!   that have never signed in to the account. A stranger can thus slow guessing from new
//!   addresses, but cannot lock the owner out from an address the owner used before.
//!
//! An attempt counts as soon as it arrives (as if it failed), so concurrent attempts cannot
//! slip past a limit while their passwords are being checked; a success gives it back.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(15 * 60);
pub const MAX_PER_ACCOUNT: usize = 5;
pub const MAX_PER_ADDRESS: usize = 20;
pub const MAX_REGISTER_PER_ADDRESS: usize = 10;
/// Addresses remembered per account as having signed in.
const KNOWN_PER_ACCOUNT: usize = 16;
/// Entries kept before stale ones are forgotten (bounds memory under a spray of names).
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct LoginLimiter {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    attempts: HashMap<String, Vec<Instant>>,
    /// Per account, the addresses that signed in to it, newest last.
    known: HashMap<String, VecDeque<String>>,
}

fn addr_key(address: Option<&str>) -> String {
    format!("addr:{}", address.unwrap_or("?"))
}

fn account_key(username: &str) -> String {
    format!("user:{username}")
}

fn register_key(address: Option<&str>) -> String {
    format!("register:{}", address.unwrap_or("?"))
}

impl Inner {
    /// Refuses (with the wait) when any key is at its limit; otherwise counts the attempt
    /// against every key.
    fn take(&mut self, keys: &[(String, usize)]) -> Option<Duration> {
        let now = Instant::now();
        let mut wait: Option<Duration> = None;
        for (key, max) in keys {
            if let Some(list) = self.attempts.get_mut(key) {
                list.retain(|t| now.duration_since(*t) < WINDOW);
                if list.len() >= *max {
                    let until = WINDOW.saturating_sub(now.duration_since(list[0]));
                    wait = Some(wait.map_or(until, |w| w.max(until)));
                }
            }
        }
        if wait.is_some() {
            return wait;
        }
        if self.attempts.len() > MAX_ENTRIES {
            self.attempts
                .retain(|_, l| l.last().is_some_and(|t| now.duration_since(*t) < WINDOW));
        }
        for (key, _) in keys {
            self.attempts.entry(key.clone()).or_default().push(now);
        }
        None
    }

    fn give_back(&mut self, key: &str) {
        if let Some(list) = self.attempts.get_mut(key) {
            list.pop();
        }
    }

    fn is_known(&self, username: &str, address: Option<&str>) -> bool {
        address.is_some_and(|a| {
            self.known
                .get(username)
                .is_some_and(|l| l.iter().any(|k| k == a))
        })
    }

    fn login_keys(&self, username: &str, address: Option<&str>) -> Vec<(String, usize)> {
        let mut keys = vec![(addr_key(address), MAX_PER_ADDRESS)];
        if !self.is_known(username, address) {
            keys.push((account_key(username), MAX_PER_ACCOUNT));
        }
        keys
    }
}

impl LoginLimiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Some(wait)` when the login attempt must be refused; otherwise it is counted.
    pub fn check(&self, username: &str, address: Option<&str>) -> Option<Duration> {
        let mut inner = self.lock();
        let keys = inner.login_keys(username, address);
        inner.take(&keys)
    }

    /// The attempt failed: it stays counted (it was counted by `check`).
    pub fn failed(&self, _username: &str, _address: Option<&str>) {}

    /// The attempt could not be checked at all (the host was busy): it does not count.
    pub fn abandoned(&self, username: &str, address: Option<&str>) {
        let mut inner = self.lock();
        inner.give_back(&addr_key(address));
        if !inner.is_known(username, address) {
            inner.give_back(&account_key(username));
        }
    }

    /// The attempt succeeded: the account's failures are forgiven, the address's count for
    /// this attempt is taken back, and the address is remembered as the account's.
    pub fn succeeded(&self, username: &str, address: Option<&str>) {
        let mut inner = self.lock();
        inner.attempts.remove(&account_key(username));
        inner.give_back(&addr_key(address));
        let Some(address) = address else { return };
        if inner.known.len() > MAX_ENTRIES {
            inner.known.clear();
        }
        let list = inner.known.entry(username.to_string()).or_default();
        list.retain(|a| a != address);
        list.push_back(address.to_string());
        while list.len() > KNOWN_PER_ACCOUNT {
            list.pop_front();
        }
    }

    /// `Some(wait)` when a registration attempt from this address must be refused.
    pub fn check_register(&self, address: Option<&str>) -> Option<Duration> {
        self.lock()
            .take(&[(register_key(address), MAX_REGISTER_PER_ADDRESS)])
    }

    /// A registration succeeded: it does not count against the address.
    pub fn register_succeeded(&self, address: Option<&str>) {
        self.lock().give_back(&register_key(address));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_too_many_failures_per_account_from_new_addresses() {
        let l = LoginLimiter::default();
        for _ in 0..MAX_PER_ACCOUNT {
            assert!(l.check("bob", Some("1.2.3.4")).is_none());
            l.failed("bob", Some("1.2.3.4"));
        }
        assert!(
            l.check("bob", Some("5.6.7.8")).is_some(),
            "per account, from an address that never signed in"
        );
        assert!(l.check("alice", Some("9.9.9.9")).is_none());
    }

    #[test]
    fn attempts_in_flight_count_before_their_outcome_is_known() {
        let racing = LoginLimiter::default();
        let passed = (0..50)
            .filter(|_| racing.check("eve", Some("6.6.6.6")).is_none())
            .count();
        assert_eq!(passed, MAX_PER_ACCOUNT);
    }

    #[test]
    fn a_stranger_cannot_lock_the_owner_out_of_a_known_address() {
        let l = LoginLimiter::default();
        assert!(l.check("admin", Some("10.0.0.5")).is_none());
        l.succeeded("admin", Some("10.0.0.5"));
        for i in 0..(MAX_PER_ACCOUNT * 3) {
            let stranger = format!("192.0.2.{i}");
            let _ = l.check("admin", Some(&stranger));
        }
        assert!(
            l.check("admin", Some("192.0.2.200")).is_some(),
            "strangers are slowed"
        );
        assert!(
            l.check("admin", Some("10.0.0.5")).is_none(),
            "the owner's address is not"
        );
    }

    #[test]
    fn the_address_limit_holds_for_known_addresses_too() {
        let l = LoginLimiter::default();
        l.succeeded("admin", Some("10.0.0.5"));
        for _ in 0..MAX_PER_ADDRESS {
            assert!(l.check("admin", Some("10.0.0.5")).is_none());
        }
        assert!(l.check("admin", Some("10.0.0.5")).is_some());
    }

    #[test]
    fn registrations_are_limited_per_address_and_successes_do_not_count() {
        let l = LoginLimiter::default();
        for _ in 0..MAX_REGISTER_PER_ADDRESS * 2 {
            assert!(l.check_register(Some("1.1.1.1")).is_none());
            l.register_succeeded(Some("1.1.1.1"));
        }
        for _ in 0..MAX_REGISTER_PER_ADDRESS {
            assert!(l.check_register(Some("2.2.2.2")).is_none());
        }
        assert!(l.check_register(Some("2.2.2.2")).is_some());
        assert!(l.check_register(Some("3.3.3.3")).is_none());
    }

    #[test]
    fn an_abandoned_attempt_does_not_count() {
        let l = LoginLimiter::default();
        for _ in 0..MAX_PER_ACCOUNT * 2 {
            assert!(l.check("carol", Some("4.4.4.4")).is_none());
            l.abandoned("carol", Some("4.4.4.4"));
        }
    }
}
