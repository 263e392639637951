//! Who may log in and cancel: failed logins slow their address down, tokens the API accepted
//! are remembered for a while, and each connection has a distinct process id and a random
//! secret that cancel requests must name.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::CancelToken;

/// Failed logins (and forged cancel requests) an address may make before it must wait.
const FREE_FAILURES: u32 = 5;
/// How long failures are remembered.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// The longest an address waits after failing again and again.
const MAX_LOCKOUT: Duration = Duration::from_secs(60);
/// How long a token the API accepted is trusted without asking again.
const TOKEN_TRUST: Duration = Duration::from_secs(60);
/// Addresses and tokens kept in memory at most; the oldest are dropped first.
const MAX_REMEMBERED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Failed logins by address.
#[derive(Debug, Default)]
pub struct Logins {
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

impl Logins {
    /// How long `address` must still wait before it may try again, if it must.
    pub fn wait(&self, address: IpAddr) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let until = failures.get(&address)?.locked_until?;
        until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    /// Counts a failure; past [`FREE_FAILURES`] the address waits, twice as long each time.
    pub fn failed(&self, address: IpAddr) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_REMEMBERED {
            failures.retain(|_, f| now.duration_since(f.last) < FAILURE_MEMORY);
        }
        let entry = failures.entry(address).or_insert(Failures { count: 0, last: now, locked_until: None });
        if now.duration_since(entry.last) >= FAILURE_MEMORY {
            *entry = Failures { count: 0, last: now, locked_until: None };
        }
        entry.count += 1;
        entry.last = now;
        if entry.count > FREE_FAILURES {
            let lockout = Duration::from_secs(1 << (entry.count - FREE_FAILURES - 1).min(6)).min(MAX_LOCKOUT);
            entry.locked_until = Some(now + lockout);
        }
    }

    pub fn succeeded(&self, address: IpAddr) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&address);
    }
}

/// Tokens the API accepted lately, by fingerprint (never the token itself).
#[derive(Debug, Default)]
pub struct Tokens {
    accepted: Mutex<HashMap<u64, Instant>>,
}

impl Tokens {
    pub fn trusted(&self, fingerprint: u64) -> bool {
        let accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        accepted.get(&fingerprint).is_some_and(|at| at.elapsed() < TOKEN_TRUST)
    }

    pub fn accepted(&self, fingerprint: u64) {
        let mut accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        if accepted.len() >= MAX_REMEMBERED {
            accepted.retain(|_, at| at.elapsed() < TOKEN_TRUST);
        }
        accepted.insert(fingerprint, Instant::now());
    }
}

/// What a cancel request reaches: the statement a connection runs now.
#[derive(Debug, Default)]
pub struct Running(Mutex<CancelToken>);

impl Running {
    /// A fresh token for the statement that starts now.
    pub fn start(&self) -> CancelToken {
        let token = CancelToken::new();
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = token.clone();
        token
    }

    fn cancel(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).cancel();
    }
}

/// The connections of a server by process id.
#[derive(Debug, Default)]
pub struct Backends {
    by_pid: Mutex<HashMap<i32, (i32, Arc<Running>)>>,
}

/// A connection's place in [`Backends`], given up when dropped.
pub struct Backend<'a> {
    backends: &'a Backends,
    pub pid: i32,
    pub secret: i32,
    pub running: Arc<Running>,
}

impl Drop for Backend<'_> {
    fn drop(&mut self) {
        self.backends.by_pid.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.pid);
    }
}

fn random_i32() -> i32 {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("the system's random source works");
    i32::from_be_bytes(bytes)
}

impl Backends {
    /// A new connection: a process id no other connection has and a random secret.
    pub fn join(&self) -> Backend<'_> {
        let mut by_pid = self.by_pid.lock().unwrap_or_else(|e| e.into_inner());
        let pid = loop {
            // Positive, like a process id; random, so that ids say nothing of other connections.
            let pid = (random_i32() & 0x3fff_ffff).max(1000);
            if !by_pid.contains_key(&pid) {
                break pid;
            }
        };
        let (secret, running) = (random_i32(), Arc::new(Running::default()));
        by_pid.insert(pid, (secret, running.clone()));
        Backend { backends: self, pid, secret, running }
    }

    /// Cancels what connection `pid` runs if `secret` is its secret; whether it was.
    pub fn cancel(&self, pid: i32, secret: i32) -> bool {
        let by_pid = self.by_pid.lock().unwrap_or_else(|e| e.into_inner());
        match by_pid.get(&pid) {
            Some((known, running)) if *known == secret => {
                running.cancel();
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_lock_an_address_out_and_success_forgives() {
        let logins = Logins::default();
        let address: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            logins.failed(address);
        }
        assert_eq!(logins.wait(address), None);
        logins.failed(address);
        assert!(logins.wait(address).is_some_and(|d| d <= Duration::from_secs(1)));
        assert_eq!(logins.wait("192.0.2.2".parse().unwrap()), None, "other addresses are not affected");
        logins.succeeded(address);
        assert_eq!(logins.wait(address), None);
    }

    #[test]
    fn pids_are_distinct_and_cancels_need_the_secret() {
        let backends = Backends::default();
        let joined: Vec<Backend> = (0..200).map(|_| backends.join()).collect();
        let mut pids: Vec<i32> = joined.iter().map(|b| b.pid).collect();
        pids.sort();
        pids.dedup();
        assert_eq!(pids.len(), 200);
        let first = &joined[0];
        let token = first.running.start();
        assert!(!backends.cancel(first.pid, first.secret.wrapping_add(1)));
        assert!(!token.is_cancelled());
        assert!(backends.cancel(first.pid, first.secret));
        assert!(token.is_cancelled());
        let (pid, secret) = (first.pid, first.secret);
        drop(joined);
        assert!(!backends.cancel(pid, secret), "a connection that ended cannot be cancelled");
    }
}
