//! Failed-attempt limits (`[server.lockout]`): brute-force and credential-stuffing
//! protection for the credential kinds that check a secret (`basic`, `api_key`).
//!
//! Place in the request path: an authenticator that found *its* credential on the request
//! asks [`Throttle::check`] first and answers `Outcome::Locked` (429 + `Retry-After`)
//! **before any hash is computed**; after verifying it reports the result with
//! [`Throttle::failure`] / [`Throttle::success`]. An absent credential is never counted; a
//! present-but-wrong one (malformed, unknown user, wrong password, unknown or expired key)
//! always is.
//!
//! Keys and policy choices:
//!
//! * **Per client IP** — every failure of `basic` or `api_key` counts against the peer
//!   address. This is what stops credential stuffing (many names, one try each).
//! * **Per name** — `basic` also counts against the user name (known *and* unknown names,
//!   so the lockout does not reveal which users exist), which stops a distributed guess
//!   at one account. `api_key` has no per-name key: an unknown key has no `id`, and
//!   keying on the presented value would let an attacker fill the table for free.
//! * Names are scoped by authenticator (`staff/alice` and `ops/alice` are distinct).
//! * `max_failures` failures within `window` lock the key for `lockout`; each further
//!   lockout of the same key (before it has been quiet for `max_lockout`) doubles the
//!   duration, capped at `max_lockout`.
//! * **A success never resets a per-IP counter**: otherwise an attacker holding one valid
//!   credential could log in between guesses to reset its own budget. A success resets
//!   the *failure count* (not the lockout history) of a user name only when every failure
//!   in the current window came from the same IP as the success — the user who mistyped
//!   and then got it right — so a legitimate login elsewhere never forgives an attacker's
//!   failures against that name from another address.
//! * **Concurrent guesses cannot overshoot**: a verification is reserved before its hash
//!   runs ([`Throttle::reserve`]), and a key admits a reservation only while it is not
//!   locked and its failures in the window plus the verifications in flight stay under
//!   `max_failures`, decided under the key's map lock. The lockout check is made again
//!   there, not only by [`Throttle::check`]: the failure that locks a key resets its
//!   count, so a guess that passed `check` just before would otherwise find a budget of
//!   `max_failures` again. Nothing drops a key's in-flight count while verifications run:
//!   not a success, not a fresh window, not making room.
//! * Memory is bounded by `max_entries`: when the table is full, expired entries are swept;
//!   if it is still full, the least recently touched tenth of the entries that are not
//!   currently locked is evicted (amortised O(1) per insert). Active lockouts and keys with
//!   verifications in flight (at most the hash pool's permits and queue) are never evicted
//!   to make room, so a flood of random names cannot unlock anyone; if the table holds
//!   nothing else, the new key is simply not tracked (its IP still is).
//!
//! Counters sit behind [`FailureStore`] so a shared (e.g. Redis) store can replace the
//! in-memory [`MemoryStore`] for a fleet of gateways. They live in `auth::Services`, so
//! they survive reloads.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::config::Lockout;

/// What a failure counter is kept for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// A client address.
    Ip(IpAddr),
    /// A user name within one authenticator (`authenticator`, `name`).
    Name(Arc<str>, Box<str>),
}

/// Storage of failure counters. Implementations must be cheap to call on every request
/// carrying a credential and must bound their memory.
pub trait FailureStore: Send + Sync {
    /// The remaining lockout of `key`, if it is locked at `now`.
    fn locked(&self, key: &Key, now: Instant) -> Option<Duration>;
    /// Records one failure of `key` from `ip`; returns the lockout it started, if any.
    fn record_failure(
        &self,
        key: &Key,
        ip: IpAddr,
        now: Instant,
        policy: &Lockout,
    ) -> Option<Duration>;
    /// Records a success of `key` from `ip` (see the module doc for what it resets).
    fn record_success(&self, key: &Key, ip: IpAddr, now: Instant, policy: &Lockout);
    /// Reserves one verification of `key` before the (slow) hash runs: refused while the
    /// key is locked, or when the failures in the window plus verifications already in
    /// flight reach `max_failures`, so concurrent guesses cannot overshoot the limit. The
    /// decision and the count must be one atomic step per key. Pair with `release`.
    fn reserve(&self, key: &Key, ip: IpAddr, now: Instant, policy: &Lockout) -> bool;
    /// Ends a reservation made by `reserve`.
    fn release(&self, key: &Key);
    /// Number of keys currently tracked.
    fn len(&self) -> usize;
    /// True when nothing is tracked.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug)]
struct Entry {
    failures: u32,
    window_start: Instant,
    locked_until: Option<Instant>,
    /// Lockouts so far (for the doubling).
    strikes: u32,
    last_seen: Instant,
    /// The only IP that failed in this window, or `None` once several did.
    sole_ip: Option<IpAddr>,
    /// Verifications reserved and not yet finished.
    in_flight: u32,
}

impl Entry {
    fn new(now: Instant, ip: IpAddr) -> Self {
        Entry {
            failures: 0,
            window_start: now,
            locked_until: None,
            strikes: 0,
            last_seen: now,
            sole_ip: Some(ip),
            in_flight: 0,
        }
    }

    fn is_locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|u| now < u)
    }

    /// Must stay in the table: locked, or verifications reserved on it still run (their
    /// release must find this entry, not a fresh one).
    fn pinned(&self, now: Instant) -> bool {
        self.in_flight > 0 || self.is_locked(now)
    }

    /// Nothing left to remember: not locked, window over, and quiet long enough that the
    /// doubling history is forgotten too.
    fn expired(&self, now: Instant, policy: &Lockout) -> bool {
        let window_over = now >= self.window_start + policy.window;
        let history_over = self
            .locked_until
            .is_none_or(|u| now >= u + policy.max_lockout);
        window_over && history_over
    }
}

/// A lockout beginning is worth a line at warn: a guessing client or a user under attack.
fn lockout_started(key: &Key, ip: IpAddr, d: Duration) {
    match key {
        Key::Ip(_) => tracing::warn!(
            lockout.kind = "ip",
            client.ip = %ip,
            lockout.seconds = d.as_secs_f64(),
            "lockout started"
        ),
        Key::Name(authenticator, name) => tracing::warn!(
            lockout.kind = "user",
            auth.authenticator = %authenticator,
            user.name = %name,
            client.ip = %ip,
            lockout.seconds = d.as_secs_f64(),
            "lockout started"
        ),
    }
}

/// The lockout for the `strikes`-th lockout of a key: `lockout * 2^(strikes-1)`, capped.
pub fn lockout_for(strikes: u32, policy: &Lockout) -> Duration {
    let shift = strikes.saturating_sub(1).min(30);
    policy
        .lockout
        .checked_mul(1u32 << shift)
        .unwrap_or(policy.max_lockout)
        .min(policy.max_lockout)
}

/// In-process counters in a sharded concurrent map.
pub struct MemoryStore {
    map: DashMap<Key, Entry>,
    /// Nanoseconds after `base` at which the latest lockout ever set ends: until a lockout
    /// runs past now, nothing is locked and `locked` answers without hashing a key (two
    /// SipHash map lookups were ~1,250 instructions of every `basic` request).
    latest_end: AtomicU64,
    base: Instant,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            map: DashMap::new(),
            latest_end: AtomicU64::new(0),
            base: Instant::now(),
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// `t` as nanoseconds after `base`, rounded up.
    fn offset(&self, t: Instant) -> u64 {
        let n = t.saturating_duration_since(self.base).as_nanos();
        u64::try_from(n).unwrap_or(u64::MAX).saturating_add(1)
    }

    /// Makes room for one more key; false when the table holds only pinned entries
    /// (active lockouts, verifications in flight).
    fn make_room(&self, now: Instant, policy: &Lockout) -> bool {
        let max = policy.max_entries.max(1);
        if self.map.len() < max {
            return true;
        }
        self.map
            .retain(|_, e| e.in_flight > 0 || !e.expired(now, policy));
        if self.map.len() < max {
            return true;
        }
        // Evict the least recently touched tenth of the entries that are not pinned.
        let mut seen: Vec<Instant> = self
            .map
            .iter()
            .filter(|e| !e.pinned(now))
            .map(|e| e.last_seen)
            .collect();
        if seen.is_empty() {
            return false;
        }
        let n = (max / 10).clamp(1, seen.len());
        let (_, cutoff, _) = seen.select_nth_unstable(n - 1);
        let cutoff = *cutoff;
        self.map
            .retain(|_, e| e.pinned(now) || e.last_seen > cutoff);
        self.map.len() < max
    }
}

impl FailureStore for MemoryStore {
    fn locked(&self, key: &Key, now: Instant) -> Option<Duration> {
        if self.latest_end.load(Ordering::Acquire) < self.offset(now) {
            return None;
        }
        let e = self.map.get(key)?;
        let until = e.locked_until?;
        (now < until).then(|| until - now)
    }

    fn record_failure(
        &self,
        key: &Key,
        ip: IpAddr,
        now: Instant,
        policy: &Lockout,
    ) -> Option<Duration> {
        if !self.map.contains_key(key) && !self.make_room(now, policy) {
            return None;
        }
        let mut e = self
            .map
            .entry(key.clone())
            .or_insert_with(|| Entry::new(now, ip));
        if e.expired(now, policy) {
            let in_flight = e.in_flight;
            *e = Entry::new(now, ip);
            e.in_flight = in_flight;
        } else if now >= e.window_start + policy.window {
            e.failures = 0;
            e.window_start = now;
            e.sole_ip = Some(ip);
        }
        e.last_seen = now;
        if e.is_locked(now) {
            // Raced with another failure that locked it; the lockout stands.
            return e.locked_until.map(|u| u - now);
        }
        if e.failures == 0 {
            e.sole_ip = Some(ip);
        } else if e.sole_ip != Some(ip) {
            e.sole_ip = None;
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= policy.max_failures.max(1) {
            e.strikes = e.strikes.saturating_add(1);
            let d = lockout_for(e.strikes, policy);
            e.locked_until = Some(now + d);
            self.latest_end
                .fetch_max(self.offset(now + d), Ordering::Release);
            e.failures = 0;
            e.window_start = now;
            return Some(d);
        }
        None
    }

    fn record_success(&self, key: &Key, ip: IpAddr, now: Instant, policy: &Lockout) {
        if matches!(key, Key::Ip(_)) {
            return;
        }
        let remove = match self.map.get_mut(key) {
            Some(mut e) => {
                if e.failures > 0 && e.sole_ip == Some(ip) {
                    e.failures = 0;
                }
                e.in_flight == 0 && (e.expired(now, policy) || (e.strikes == 0 && e.failures == 0))
            }
            None => false,
        };
        if remove {
            self.map.remove_if(key, |_, e| {
                e.in_flight == 0 && e.strikes == 0 && e.failures == 0
            });
        }
    }

    fn reserve(&self, key: &Key, ip: IpAddr, now: Instant, policy: &Lockout) -> bool {
        if !self.map.contains_key(key) && !self.make_room(now, policy) {
            // Table full of active lockouts: this key is not tracked (its IP still is).
            return true;
        }
        let mut e = self
            .map
            .entry(key.clone())
            .or_insert_with(|| Entry::new(now, ip));
        // Under the entry's lock, so no failure can lock the key (and reset its count)
        // between this look and the reservation.
        if e.is_locked(now) {
            return false;
        }
        let failures = if now >= e.window_start + policy.window {
            0
        } else {
            e.failures
        };
        if failures.saturating_add(e.in_flight) >= policy.max_failures.max(1) {
            return false;
        }
        e.in_flight += 1;
        e.last_seen = now;
        true
    }

    fn release(&self, key: &Key) {
        if let Some(mut e) = self.map.get_mut(key) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// Verifications reserved with [`Throttle::reserve`]; released on drop.
pub struct Reservation<'a> {
    store: &'a dyn FailureStore,
    keys: [Option<Key>; 2],
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        for k in self.keys.iter().flatten() {
            self.store.release(k);
        }
    }
}

/// The address a client's failures are counted under: IPv4 as is (IPv4-mapped IPv6 too),
/// IPv6 by its /64, the block one subscriber or host usually holds, so rotating through
/// addresses of one prefix does not buy a fresh failure budget each time.
fn client_prefix(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::from(std::net::Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// The lockout decisions one authenticator makes, over a shared store.
pub struct Throttle<'a> {
    store: &'a dyn FailureStore,
    policy: &'a Lockout,
    ip: IpAddr,
}

impl<'a> Throttle<'a> {
    /// Decisions for a request from `ip` under `policy`.
    pub fn new(store: &'a dyn FailureStore, policy: &'a Lockout, ip: IpAddr) -> Self {
        Throttle {
            store,
            policy,
            ip: client_prefix(ip),
        }
    }

    /// The remaining lockout of the client IP or of `name`, whichever is longer.
    pub fn check(&self, name: Option<&Key>) -> Option<Duration> {
        if !self.policy.enabled {
            return None;
        }
        let now = Instant::now();
        let ip = self.store.locked(&Key::Ip(self.ip), now);
        let name = name.and_then(|k| self.store.locked(k, now));
        match (ip, name) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Reserves a verification for the client IP and `name` before hashing; `Err` carries
    /// the `Retry-After` when either is locked (the remaining lockout) or its failures plus
    /// verifications in flight already reach the limit (1 s).
    pub fn reserve(&self, name: Option<&Key>) -> Result<Reservation<'a>, Duration> {
        let mut r = Reservation {
            store: self.store,
            keys: [None, None],
        };
        if !self.policy.enabled {
            return Ok(r);
        }
        let now = Instant::now();
        let ip = Key::Ip(self.ip);
        let refused = |k: &Key| {
            let busy = Duration::from_secs(1);
            Err(self.store.locked(k, now).map_or(busy, |d| d.max(busy)))
        };
        if !self.store.reserve(&ip, self.ip, now, self.policy) {
            return refused(&ip);
        }
        r.keys[0] = Some(ip);
        if let Some(k) = name {
            if !self.store.reserve(k, self.ip, now, self.policy) {
                return refused(k);
            }
            r.keys[1] = Some(k.clone());
        }
        Ok(r)
    }

    /// Counts a failure against the client IP and, if given, `name`.
    pub fn failure(&self, name: Option<&Key>) {
        if !self.policy.enabled {
            return;
        }
        let now = Instant::now();
        let ip = Key::Ip(self.ip);
        for key in std::iter::once(&ip).chain(name) {
            if let Some(d) = self.store.record_failure(key, self.ip, now, self.policy) {
                lockout_started(key, self.ip, d);
            }
        }
    }

    /// Reports a success (never resets the IP counter; see the module doc).
    pub fn success(&self, name: Option<&Key>) {
        if !self.policy.enabled {
            return;
        }
        if let Some(k) = name {
            self.store
                .record_success(k, self.ip, Instant::now(), self.policy);
        }
    }
}

#[cfg(test)]
mod tests;
