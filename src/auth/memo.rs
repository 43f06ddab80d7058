//! A connection's memo of the last credential its requests were admitted with (a bearer
//! token for jwt and introspection, the `Authorization` value for basic), so the next
//! request on the connection carrying the same bytes skips the hashing (SHA-256, HMAC) and
//! the shared cache: clients send one credential on every request of a keep-alive
//! connection. Lockout checks are the caller's and still run.
//!
//! Invariants: an entry answers only the authenticator instance that stored it (ids come
//! from a counter and are never reused, so a reload's new instances start empty), only a
//! byte-identical credential (compared in constant time), and never past the deadline of
//! the cache entry it was copied from. It is filled only from a cache hit, so it never
//! admits what the cache would not. The copy lives as long as the connection (or the next
//! credential) and is zeroed when dropped or replaced.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use zeroize::Zeroize;

use super::Identity;

/// A new, never reused id for an authenticator instance.
pub fn owner_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One connection's memo (empty until an authenticator fills it from its cache).
#[derive(Default)]
pub struct Memo(Mutex<Option<Entry>>);

struct Entry {
    owner: u64,
    token: Vec<u8>,
    identity: Arc<Identity>,
    deadline: Instant,
}

impl std::fmt::Debug for Memo {
    /// Never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.token.zeroize();
    }
}

impl Memo {
    /// The identity `owner` admitted `token` (a bearer token or `Authorization` value) as,
    /// if this connection's last credential was it.
    pub fn get(&self, owner: u64, token: &[u8], now: Instant) -> Option<Arc<Identity>> {
        // Never waits: a connection's requests run on one thread, and a poisoned or busy
        // slot only means the cache answers instead.
        let slot = self.0.try_lock().ok()?;
        let e = slot.as_ref()?;
        (e.owner == owner && now < e.deadline && ct_eq(&e.token, token)).then(|| e.identity.clone())
    }

    /// Remembers that `owner` admitted `token` as `identity` until `deadline`.
    pub fn put(&self, owner: u64, token: &[u8], identity: Arc<Identity>, deadline: Instant) {
        let Ok(mut slot) = self.0.try_lock() else {
            return;
        };
        match slot.as_mut() {
            Some(e) => {
                e.token.zeroize();
                e.token.extend_from_slice(token);
                e.owner = owner;
                e.identity = identity;
                e.deadline = deadline;
            }
            None => {
                *slot = Some(Entry {
                    owner,
                    token: token.to_vec(),
                    identity,
                    deadline,
                })
            }
        }
    }
}

/// Constant-time equality of two byte strings (their lengths are not secret), a word at
/// a time: `subtle`'s per-byte comparison would cost more than the hash it saves.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        u64::from_ne_bytes(w)
    };
    let (aw, bw) = (a.chunks_exact(8), b.chunks_exact(8));
    let (at, bt) = (aw.remainder(), bw.remainder());
    let mut diff = 0u64;
    for (x, y) in aw.zip(bw) {
        diff |= word(x) ^ word(y);
    }
    for (x, y) in at.iter().zip(bt) {
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::auth::AuthMethod;

    fn id(s: &str) -> Arc<Identity> {
        Arc::new(Identity::new(AuthMethod::Jwt, s))
    }

    #[test]
    fn answers_only_the_same_token_owner_and_time() {
        let m = Memo::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        assert!(m.get(1, b"tok", now).is_none());
        m.put(1, b"token-a", id("alice"), later);
        assert_eq!(m.get(1, b"token-a", now).unwrap().subject, "alice");
        assert!(m.get(1, b"token-b", now).is_none(), "other token");
        assert!(m.get(1, b"token-a2", now).is_none(), "longer token");
        assert!(m.get(1, b"token-", now).is_none(), "prefix");
        assert!(m.get(2, b"token-a", now).is_none(), "other authenticator");
        assert!(m.get(1, b"token-a", later).is_none(), "past the deadline");
        m.put(1, b"token-b", id("bob"), later);
        assert!(m.get(1, b"token-a", now).is_none(), "replaced");
        assert_eq!(m.get(1, b"token-b", now).unwrap().subject, "bob");
    }

    #[test]
    fn compares_whole_words_and_tails() {
        let a: Vec<u8> = (0..37).collect();
        for i in 0..a.len() {
            let mut b = a.clone();
            b[i] ^= 0x20;
            assert!(!ct_eq(&a, &b), "byte {i}");
        }
        assert!(ct_eq(&a, &a.clone()));
        assert!(ct_eq(b"", b""));
        assert!(!ct_eq(b"abc", b"abcd"));
    }

    #[test]
    fn owner_ids_are_unique() {
        assert_ne!(owner_id(), owner_id());
    }
}
