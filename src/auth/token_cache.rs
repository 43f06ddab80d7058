//! Caches of token verdicts (verified JWTs, introspection answers), keyed by the SHA-256
//! of the token so the cache never holds a usable credential.
//!
//! Invariants: an entry is never returned after its deadline (which callers bound by the
//! token's own `exp`); the cache is bounded, so a flood of distinct tokens cannot grow
//! memory without limit. Stores sit behind [`TokenStore`] so a shared (e.g. Redis) store
//! can replace the in-process one without touching the authenticators.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use sha2::{Digest, Sha256};

/// Cache key: SHA-256 of the token bytes.
pub type TokenKey = [u8; 32];

/// The cache key of a token.
pub fn token_key(token: &[u8]) -> TokenKey {
    Sha256::digest(token).into()
}

/// A store of token verdicts with per-entry deadlines.
pub trait TokenStore<V>: Send + Sync {
    /// The value stored under `key` and its deadline, if that is after `now`.
    fn get(&self, key: &TokenKey, now: Instant) -> Option<(V, Instant)>;
    /// Stores `value` for `ttl` (a zero `ttl` stores nothing).
    fn put(&self, key: TokenKey, value: V, ttl: Duration);
    /// Number of entries (including expired ones not yet evicted).
    fn len(&self) -> usize;
    /// Whether the store is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An in-process, bounded [`TokenStore`].
pub struct MemoryStore<V> {
    map: DashMap<TokenKey, (V, Instant)>,
    capacity: usize,
}

impl<V> MemoryStore<V> {
    /// A store holding at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        MemoryStore {
            map: DashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Drops expired entries, then, if still full, about an eighth of the rest.
    fn evict(&self, now: Instant) {
        self.map.retain(|_, v| v.1 > now);
        if self.map.len() >= self.capacity {
            let n = self.capacity / 8 + 1;
            let victims: Vec<TokenKey> = self.map.iter().take(n).map(|e| *e.key()).collect();
            for k in victims {
                self.map.remove(&k);
            }
        }
    }
}

impl<V: Clone + Send + Sync> TokenStore<V> for MemoryStore<V> {
    fn get(&self, key: &TokenKey, now: Instant) -> Option<(V, Instant)> {
        let (value, deadline) = {
            let e = self.map.get(key)?;
            (e.0.clone(), e.1)
        };
        if deadline > now {
            Some((value, deadline))
        } else {
            self.map.remove_if(key, |_, v| v.1 <= now);
            None
        }
    }

    fn put(&self, key: TokenKey, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            self.evict(now);
        }
        self.map.insert(key, (value, now + ttl));
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_fresh_entries() {
        let s = MemoryStore::new(4);
        s.put(token_key(b"a"), 1, Duration::from_secs(60));
        assert_eq!(
            s.get(&token_key(b"a"), Instant::now()).map(|e| e.0),
            Some(1)
        );
        assert_eq!(s.get(&token_key(b"b"), Instant::now()).map(|e| e.0), None);
    }

    #[test]
    fn forgets_expired_entries() {
        let s = MemoryStore::new(4);
        s.put(token_key(b"a"), 1, Duration::from_nanos(1));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(s.get(&token_key(b"a"), Instant::now()).map(|e| e.0), None);
        assert!(s.is_empty());
    }

    #[test]
    fn zero_ttl_stores_nothing() {
        let s = MemoryStore::new(4);
        s.put(token_key(b"a"), 1, Duration::ZERO);
        assert!(s.is_empty());
    }

    #[test]
    fn stays_bounded() {
        let s = MemoryStore::new(16);
        for i in 0..1000 {
            s.put(
                token_key(i.to_string().as_bytes()),
                i,
                Duration::from_secs(60),
            );
        }
        assert!(s.len() <= 16);
        assert_eq!(
            s.get(&token_key(b"999"), Instant::now()).map(|e| e.0),
            Some(999)
        );
    }
}
