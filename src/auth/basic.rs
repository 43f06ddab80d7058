//! `kind = "basic"`: HTTP Basic authentication (RFC 7617) against argon2id / argon2i PHC
//! hashes or bcrypt (`$2a$`, `$2b$`, `$2y$`) from `users = { ... }` or an htpasswd-style
//! `users_file`.
//!
//! Place in the request path: the pipeline calls [`Basic::authenticate`] with a borrowed
//! view of the request. An `Authorization` header with another scheme is `Absent` (so an
//! any-of can try a bearer method); a Basic header that is malformed or wrong is `Reject`
//! (401 with this realm's challenge), never a 500.
//!
//! Security invariants:
//!
//! * Lockout (`throttle.rs`) is decided before any hash is computed.
//! * Hashing never runs on the async runtime: it goes to `spawn_blocking` behind the
//!   process-wide [`HashPool`] (bounded permits and a bounded wait queue), so a flood of
//!   wrong passwords gets quick 503s instead of starving admitted traffic.
//! * Unknown users are verified against a dummy hash with the same algorithm and cost as
//!   the configured users, so response time does not reveal which names exist.
//! * Successful checks are cached under an HMAC-SHA256 (per-process random key) of the
//!   user and password, never the password itself; the cache is bounded, expires, lives in
//!   this authenticator (a reload starts empty) and only ever holds successes.
//! * No type here derives `Debug`; passwords never reach a log line.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::{Output, Salt};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::Engine;
use dashmap::DashMap;
use hmac::{Hmac, KeyInit, Mac};
use http::header::{AUTHORIZATION, HeaderValue};
use http::{HeaderMap, HeaderName};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::memo::owner_id;
use super::throttle::{Key, Throttle};
use super::{AuthMethod, Identity, Outcome, RejectReason, RequestView};
use crate::config::Problems;
use crate::config::units::Dur;

/// `[authenticators.NAME]` of kind `basic`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    /// Always `"basic"`.
    pub kind: String,
    /// `WWW-Authenticate` realm.
    pub realm: Option<String>,
    /// htpasswd-style `name:hash` lines.
    pub users_file: Option<String>,
    /// Inline `name = "hash"`.
    pub users: Option<std::collections::BTreeMap<String, String>>,
    /// Verified-credential cache lifetime.
    pub cache_ttl: Option<Dur>,
    /// Verified-credential cache entries.
    pub cache_size: Option<i64>,
}

/// `kind = "basic"`, checked: every user's hash parses, the realm can be sent.
pub struct Settings {
    realm: String,
    users: Vec<(String, String)>,
    cache_ttl: Duration,
    cache_size: usize,
}

/// Longest accepted `Authorization: Basic` token (base64 text).
const MAX_TOKEN_LEN: usize = 4096;
/// Default success-cache lifetime.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
/// Default success-cache capacity.
pub const DEFAULT_CACHE_SIZE: usize = 10_000;

/// Bounded pool for password hashing: `permits` hashes run at once on blocking threads,
/// at most `max_waiting` more wait (for up to `max_wait`); anything beyond is refused at
/// once so the caller can answer 503.
pub struct HashPool {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    max_wait: Duration,
}

impl HashPool {
    /// A pool with `permits` concurrent hashes and `max_waiting` queued requests.
    pub fn new(permits: usize, max_waiting: usize, max_wait: Duration) -> Self {
        HashPool {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
            max_wait,
        }
    }

    /// Sized from the host: 2 x cores permits, 64 waiters, 5 s longest wait.
    pub fn for_host() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        HashPool::new(2 * cores, 64, Duration::from_secs(5))
    }

    /// Runs `f` on a blocking thread once a permit is free; `None` when the pool is
    /// saturated (queue full or waited too long) or the task failed.
    pub async fn run<T, F>(&self, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    return None;
                }
                let _queued = Queued(&self.waiting);
                let acquired =
                    tokio::time::timeout(self.max_wait, self.permits.clone().acquire_owned()).await;
                match acquired {
                    Ok(Ok(p)) => p,
                    _ => return None,
                }
            }
        };
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .ok()
    }
}

/// Leaves the wait queue when dropped (also when the request is cancelled).
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Most memory an argon2 hash may ask for, in KiB: RFC 9106's largest recommendation (2 GiB).
const ARGON2_MAX_MEMORY_KIB: u32 = 2 * 1024 * 1024;
/// Most argon2 work (memory in KiB × passes): about 4 s of one core.
const ARGON2_MAX_WORK: u64 = 4 * 1024 * 1024;
/// Highest bcrypt cost (2^16 rounds, about 4 s of one core).
const BCRYPT_MAX_COST: u32 = 16;

/// Why a stored password hash is refused. The text never contains the hash.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Not a well-formed argon2 PHC string.
    #[error("invalid argon2 hash: {0}")]
    Argon2(#[source] argon2::password_hash::phc::Error),
    /// The argon2 parameters are out of range.
    #[error("invalid argon2 parameters: {0}")]
    Argon2Params(#[source] argon2::password_hash::Error),
    /// The argon2 string lacks its salt or its output.
    #[error("invalid argon2 hash: missing salt or output")]
    Argon2Incomplete,
    /// Verifying would hold a hashing thread for seconds.
    #[error(
        "argon2 cost too high (m={m}, t={t}): at most m={ARGON2_MAX_MEMORY_KIB} \
         and m × t = {ARGON2_MAX_WORK}, or each attempt holds a hashing thread \
         for seconds"
    )]
    Argon2TooCostly {
        /// Memory in KiB.
        m: u32,
        /// Passes.
        t: u32,
    },
    /// Not a well-formed bcrypt string.
    #[error("invalid bcrypt hash: {0}")]
    Bcrypt(#[source] bcrypt::BcryptError),
    /// Verifying would hold a hashing thread for seconds.
    #[error(
        "bcrypt cost too high ({0}): at most {BCRYPT_MAX_COST}, or each attempt \
         holds a hashing thread for seconds"
    )]
    BcryptTooCostly(u32),
    /// Neither argon2i(d) nor bcrypt.
    #[error(
        "unsupported hash (expected an argon2id or argon2i PHC string, or bcrypt $2a$/$2b$/$2y$)"
    )]
    Unsupported,
}

/// Why `Basic::new` could not build the authenticator.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A user's stored hash is refused.
    #[error("user \"{user}\": {source}")]
    User {
        /// The user name (never the hash).
        user: String,
        /// Why the hash is refused.
        source: HashError,
    },
    /// No dummy hash could be made for unknown users.
    #[error("cannot create the dummy hash for unknown users")]
    Dummy,
    /// The realm cannot be sent in `WWW-Authenticate`.
    #[error("realm \"{0}\" cannot be sent in a header")]
    Realm(String),
    /// The success cache could not be keyed.
    #[error("cannot key the HMAC cache")]
    CacheKey,
}

/// A stored password hash, parsed at load time.
enum Stored {
    Argon2(Box<PasswordHash>),
    Bcrypt(String),
}

impl Stored {
    /// Parses one hash; the error never contains the hash.
    fn parse(s: &str) -> Result<Stored, HashError> {
        if s.starts_with("$argon2id$") || s.starts_with("$argon2i$") {
            let h = PasswordHash::new(s).map_err(HashError::Argon2)?;
            let p = argon2::Params::try_from(&h).map_err(HashError::Argon2Params)?;
            if h.salt.is_none() || h.hash.is_none() {
                return Err(HashError::Argon2Incomplete);
            }
            // Every attempt (and every unknown user's) pays this on the bounded hashing
            // pool: a cost of minutes would end Basic auth for everyone.
            let (m, t) = (p.m_cost(), p.t_cost());
            if m > ARGON2_MAX_MEMORY_KIB || u64::from(m) * u64::from(t) > ARGON2_MAX_WORK {
                return Err(HashError::Argon2TooCostly { m, t });
            }
            Ok(Stored::Argon2(Box::new(h)))
        } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| s.starts_with(p)) {
            let parts = s.parse::<bcrypt::HashParts>().map_err(HashError::Bcrypt)?;
            if parts.get_cost() > BCRYPT_MAX_COST {
                return Err(HashError::BcryptTooCostly(parts.get_cost()));
            }
            Ok(Stored::Bcrypt(s.to_string()))
        } else {
            Err(HashError::Unsupported)
        }
    }

    /// Runs the hash; this is the expensive part.
    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Stored::Argon2(h) => Argon2::default().verify_password(password, &**h).is_ok(),
            Stored::Bcrypt(s) => bcrypt::verify(password, s).unwrap_or(false),
        }
    }

    /// A hash of the same algorithm and cost that no password matches.
    fn dummy_like(&self) -> Option<Stored> {
        match self {
            Stored::Argon2(h) => {
                let mut salt = [0u8; 16];
                rand::fill(&mut salt);
                let mut out = vec![0u8; h.hash.as_ref().map_or(32, Output::len)];
                rand::fill(out.as_mut_slice());
                let mut d = h.clone();
                d.salt = Some(Salt::new(&salt).ok()?);
                d.hash = Some(Output::new(&out).ok()?);
                Some(Stored::Argon2(d))
            }
            Stored::Bcrypt(s) => {
                // The model's version and cost (`$2b$12$`) with a random salt and output:
                // verifying against it costs what a real one does, and nothing matches.
                // Not made by hashing, so loading never pays the cost (a `$2b$30$` user
                // held the load, `check` and a reload for days, found by fuzzing; costs
                // over BCRYPT_MAX_COST are now refused, and 16 still takes seconds).
                let b64 = base64::engine::GeneralPurpose::new(
                    &base64::alphabet::BCRYPT,
                    base64::engine::general_purpose::NO_PAD,
                );
                let (mut salt, mut out) = ([0u8; 16], [0u8; 23]);
                rand::fill(&mut salt);
                rand::fill(&mut out);
                let d = format!("{}{}{}", s.get(..7)?, b64.encode(salt), b64.encode(out));
                d.parse::<bcrypt::HashParts>().ok()?;
                Some(Stored::Bcrypt(d))
            }
        }
    }
}

fn default_dummy() -> Option<Stored> {
    let params = argon2::Params::new(19_456, 2, 1, None).ok()?;
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let mut out = [0u8; 32];
    rand::fill(&mut out);
    let h = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(argon2::Version::V0x13.into()),
        params: argon2::password_hash::phc::ParamsString::try_from(&params).ok()?,
        salt: Some(Salt::new(&salt).ok()?),
        hash: Some(Output::new(&out).ok()?),
    };
    Some(Stored::Argon2(Box::new(h)))
}

/// The configured users.
struct Users {
    /// What each user is admitted as, by index.
    identities: Vec<Arc<Identity>>,
    hashes: Vec<Stored>,
    index: HashMap<String, usize>,
    dummy: Stored,
}

/// Parses an htpasswd-style users file: `name:hash` per line, `#` comments and blank
/// lines ignored. Returns the entries with their 1-based line, and the problems as
/// `(line, message)`.
#[allow(clippy::type_complexity)]
pub fn parse_users_file(text: &str) -> (Vec<(usize, String, String)>, Vec<(usize, String)>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((name, hash)) if !name.trim().is_empty() && !hash.trim().is_empty() => {
                let name = name.trim();
                let hash = hash.trim();
                match Stored::parse(hash) {
                    Ok(_) => entries.push((n, name.to_string(), hash.to_string())),
                    Err(e) => problems.push((n, format!("user \"{name}\": {e}"))),
                }
            }
            _ => problems.push((n, "expected `name:hash`".to_string())),
        }
    }
    (entries, problems)
}

/// Success cache: HMAC-SHA256(per-process key, len(user) || user || 0x00 || password)
/// -> (user index, expiry). The map is keyed by the first 16 bytes of the tag and the
/// full tag is compared in constant time.
struct Cache {
    mac: Hmac<Sha256>,
    map: DashMap<u128, CacheEntry>,
    ttl: Duration,
    capacity: usize,
}

struct CacheEntry {
    tag: [u8; 32],
    user: usize,
    expires: Instant,
}

impl Cache {
    fn new(ttl: Duration, capacity: usize) -> Option<Self> {
        let mut key = [0u8; 32];
        rand::fill(&mut key);
        Some(Cache {
            mac: <Hmac<Sha256> as KeyInit>::new_from_slice(&key).ok()?,
            map: DashMap::new(),
            ttl,
            capacity,
        })
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.capacity > 0
    }

    fn tag(&self, user: &str, password: &[u8]) -> [u8; 32] {
        let mut m = self.mac.clone();
        m.update(&(user.len() as u64).to_be_bytes());
        m.update(user.as_bytes());
        m.update(&[0]);
        m.update(password);
        m.finalize().into_bytes().into()
    }

    fn slot(tag: &[u8; 32]) -> u128 {
        let mut b = [0u8; 16];
        b.copy_from_slice(tag.get(..16).unwrap_or(&[0u8; 16]));
        u128::from_le_bytes(b)
    }

    /// The user index and the entry's expiry.
    fn get(&self, user: &str, password: &[u8], now: Instant) -> Option<(usize, Instant)> {
        if !self.enabled() {
            return None;
        }
        let tag = self.tag(user, password);
        let e = self.map.get(&Self::slot(&tag))?;
        (bool::from(e.tag.ct_eq(&tag)) && now < e.expires).then_some((e.user, e.expires))
    }

    fn insert(&self, user: &str, password: &[u8], index: usize, now: Instant) {
        if !self.enabled() {
            return;
        }
        if self.map.len() >= self.capacity {
            self.map.retain(|_, e| now < e.expires);
            if self.map.len() >= self.capacity {
                // Evict an arbitrary eighth (DashMap order is effectively random).
                let drop_n = (self.capacity / 8).max(1);
                let victims: Vec<u128> = self.map.iter().take(drop_n).map(|e| *e.key()).collect();
                for k in victims {
                    self.map.remove(&k);
                }
            }
        }
        let tag = self.tag(user, password);
        self.map.insert(
            Self::slot(&tag),
            CacheEntry {
                tag,
                user: index,
                expires: now + self.ttl,
            },
        );
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// A credential found in `Authorization: Basic`.
pub(crate) enum Found {
    /// No Basic header (none, or another scheme).
    Absent,
    /// A Basic header that cannot be decoded.
    Malformed,
    /// User and password.
    Credentials(String, Vec<u8>),
}

/// The request's `Authorization` value when it has exactly one.
fn single_authorization(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => Some(v.as_bytes()),
        _ => None,
    }
}

/// Extracts Basic credentials from the request headers.
pub(crate) fn extract(headers: &HeaderMap) -> Found {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(first) = values.next() else {
        return Found::Absent;
    };
    let is_basic = |v: &HeaderValue| {
        let b = v.as_bytes();
        b.get(..5).is_some_and(|s| s.eq_ignore_ascii_case(b"basic"))
            && b.get(5).is_none_or(|c| *c == b' ' || *c == b'\t')
    };
    if values.next().is_some() {
        // Several Authorization headers: ambiguous; refuse if any claims to be Basic.
        return if headers.get_all(AUTHORIZATION).iter().any(is_basic) {
            Found::Malformed
        } else {
            Found::Absent
        };
    }
    if !is_basic(first) {
        return Found::Absent;
    }
    let token = first.as_bytes().get(5..).unwrap_or_default().trim_ascii();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Found::Malformed;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(token) else {
        return Found::Malformed;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return Found::Malformed;
    };
    let Some((user, password)) = text.split_once(':') else {
        return Found::Malformed;
    };
    if user.is_empty() || user.chars().any(char::is_control) {
        return Found::Malformed;
    }
    Found::Credentials(user.to_string(), password.as_bytes().to_vec())
}

/// The basic authenticator.
pub struct Basic {
    name: Arc<str>,
    challenge: HeaderValue,
    users: Arc<Users>,
    cache: Cache,
    /// Verifications in progress, by cache tag (single-flight).
    inflight: DashMap<[u8; 32], Arc<tokio::sync::OnceCell<Verdict>>>,
    /// This instance's id in connection memos.
    memo_owner: u64,
}

/// The shared result of one verification.
#[derive(Clone, Copy)]
enum Verdict {
    Admit(usize),
    Reject,
    Unavailable,
    Locked(Duration),
}

/// Removes a single-flight entry when its request finishes or is cancelled, so abandoned
/// verifications cannot pile up in the map.
struct InflightGuard<'a> {
    map: &'a DashMap<[u8; 32], Arc<tokio::sync::OnceCell<Verdict>>>,
    tag: [u8; 32],
    cell: Arc<tokio::sync::OnceCell<Verdict>>,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.map
            .remove_if(&self.tag, |_, v| Arc::ptr_eq(v, &self.cell));
    }
}

impl Settings {
    /// Reads `[authenticators.NAME]` of kind basic, recording problems under `base`.
    pub fn read(
        name: &str,
        r: Raw,
        base: &str,
        ctx: &super::BuildContext,
        problems: &mut Problems,
    ) -> Option<Settings> {
        let before = problems.len();
        let mut list: Vec<(String, String)> = Vec::new();
        if let Some(users) = &r.users {
            for (user, hash) in users {
                if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
                    problems.push(
                        format!("{base}.users"),
                        format!("invalid user name \"{user}\" (non-empty, no `:`)"),
                    );
                    continue;
                }
                match Stored::parse(hash) {
                    Ok(_) => list.push((user.clone(), hash.clone())),
                    Err(e) => problems.push(format!("{base}.users.{user}"), e.to_string()),
                }
            }
        }
        if let Some(file) = &r.users_file {
            let path = crate::config::resolve_path(&ctx.config_dir, file);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let (entries, bad) = parse_users_file(&text);
                    for (line, msg) in bad {
                        problems.push(
                            format!("{base}.users_file"),
                            format!("{file}:{line}: {msg}"),
                        );
                    }
                    for (line, user, hash) in entries {
                        if list.iter().any(|(u, _)| *u == user) {
                            problems.push(
                                format!("{base}.users_file"),
                                format!("{file}:{line}: user \"{user}\" is defined twice"),
                            );
                        } else {
                            list.push((user, hash));
                        }
                    }
                }
                Err(e) => problems.push(
                    format!("{base}.users_file"),
                    format!("cannot read users file {}: {e}", path.display()),
                ),
            }
        }
        if r.users.is_none() && r.users_file.is_none() {
            problems.push(
                base.to_string(),
                "kind \"basic\" needs `users = { name = \"$argon2id$...\" }` or `users_file`",
            );
        } else if list.is_empty() && problems.len() == before {
            problems.push(
                base.to_string(),
                "no users defined: add users or entries to the users file",
            );
        }
        let realm = r.realm.clone().unwrap_or_else(|| name.to_string());
        if realm.is_empty()
            || realm
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            problems.push(
                format!("{base}.realm"),
                "realm must be non-empty printable text without `\"` or `\\`",
            );
        }
        let ttl = r.cache_ttl.map_or(DEFAULT_CACHE_TTL, |d| d.0);
        let size = match r.cache_size {
            None => DEFAULT_CACHE_SIZE,
            Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
            Some(_) => {
                problems.push(format!("{base}.cache_size"), "must be 0 or more");
                DEFAULT_CACHE_SIZE
            }
        };
        (problems.len() == before).then_some(Settings {
            realm,
            users: list,
            cache_ttl: ttl,
            cache_size: size,
        })
    }

    /// The authenticator: the users' hashes, the dummy for unknown names, the cache.
    pub fn build(&self, name: &str) -> Result<Basic, super::BuildError> {
        Basic::new(
            name,
            &self.realm,
            &self.users,
            self.cache_ttl,
            self.cache_size,
        )
        .map_err(|e| super::BuildError::at("", e))
    }
}

impl Basic {
    /// Builds from `(user, hash)` pairs (benches and tests; `build` validates first).
    pub fn new(
        name: &str,
        realm: &str,
        users: &[(String, String)],
        cache_ttl: Duration,
        cache_size: usize,
    ) -> Result<Basic, SetupError> {
        let mut identities = Vec::with_capacity(users.len());
        let mut hashes = Vec::with_capacity(users.len());
        let mut index = HashMap::with_capacity(users.len());
        for (user, hash) in users {
            let stored = Stored::parse(hash).map_err(|source| SetupError::User {
                user: user.clone(),
                source,
            })?;
            index.insert(user.clone(), hashes.len());
            identities.push(Arc::new(Identity::new(AuthMethod::Basic, user.as_str())));
            hashes.push(stored);
        }
        // The dummy mirrors the first argon2 user (else the first user, else defaults).
        let model = hashes
            .iter()
            .find(|h| matches!(h, Stored::Argon2(_)))
            .or(hashes.first());
        let dummy = model
            .and_then(Stored::dummy_like)
            .or_else(default_dummy)
            .ok_or(SetupError::Dummy)?;
        let challenge =
            HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
                .map_err(|_| SetupError::Realm(realm.to_string()))?;
        Ok(Basic {
            name: Arc::from(name),
            challenge,
            users: Arc::new(Users {
                identities,
                hashes,
                index,
                dummy,
            }),
            cache: Cache::new(cache_ttl, cache_size).ok_or(SetupError::CacheKey)?,
            inflight: DashMap::new(),
            memo_owner: owner_id(),
        })
    }

    /// The precomputed `WWW-Authenticate` value.
    pub fn challenge(&self) -> &HeaderValue {
        &self.challenge
    }

    /// Where the credential travels.
    pub fn consumes() -> Vec<HeaderName> {
        vec![AUTHORIZATION]
    }

    /// The cached path alone: the user's subject when these credentials were verified
    /// within the cache TTL (one HMAC, one map lookup, one constant-time compare).
    pub fn verify_cached(&self, user: &str, password: &[u8]) -> Option<&str> {
        self.cache
            .get(user, password, Instant::now())
            .and_then(|(i, _)| self.users.identities.get(i))
            .map(|id| id.subject.as_str())
    }

    /// The uncached check, run on the calling thread (benches): hashes and, on success,
    /// fills the cache.
    pub fn verify_uncached(&self, user: &str, password: &[u8]) -> bool {
        let users = &self.users;
        let idx = users.index.get(user).copied();
        let stored = idx
            .and_then(|i| users.hashes.get(i))
            .unwrap_or(&users.dummy);
        let ok = stored.verify(password) && idx.is_some();
        if let (true, Some(i)) = (ok, idx) {
            self.cache.insert(user, password, i, Instant::now());
        }
        ok
    }

    /// Entries in the success cache.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Checks one request.
    pub async fn authenticate(&self, req: &RequestView<'_>) -> Outcome {
        // The connection's last admitted `Authorization`, byte for byte: no decoding, no
        // HMAC, no cache lookup; the lockout is still consulted.
        let raw = single_authorization(req.headers);
        let remembered = raw.and_then(|r| req.conn.memo.get(self.memo_owner, r, Instant::now()));
        let throttle = Throttle::new(&*req.services.failures, req.lockout, req.client_ip);
        if let Some(id) = remembered {
            let key = Key::Name(self.name.clone(), id.subject.as_str().into());
            if let Some(d) = throttle.check(Some(&key)) {
                return Outcome::Locked(d);
            }
            throttle.success(Some(&key));
            return Outcome::Admit(id);
        }
        let found = extract(req.headers);
        if matches!(found, Found::Absent) {
            return Outcome::Absent;
        }
        let Found::Credentials(user, password) = found else {
            if let Some(d) = throttle.check(None) {
                return Outcome::Locked(d);
            }
            throttle.failure(None);
            return Outcome::Reject(RejectReason::Invalid);
        };
        let key = Key::Name(self.name.clone(), user.as_str().into());
        // The client IP's lockout and the name's, whichever is longer.
        if let Some(d) = throttle.check(Some(&key)) {
            return Outcome::Locked(d);
        }
        if let Some((i, expires)) = self.cache.get(&user, &password, Instant::now()) {
            throttle.success(Some(&key));
            let admitted = self.admit(i);
            if let (Outcome::Admit(id), Some(raw)) = (&admitted, raw) {
                req.conn.memo.put(self.memo_owner, raw, id.clone(), expires);
            }
            return admitted;
        }
        // Concurrent misses for the same (user, password) share one verification, so a
        // client whose cached credential just expired pays one hash, not one per connection,
        // and does not use up the lockout's in-flight budget.
        let tag = self.cache.tag(&user, &password);
        let cell = self
            .inflight
            .entry(tag)
            .or_insert_with(|| Arc::new(tokio::sync::OnceCell::new()))
            .clone();
        let _leave = InflightGuard {
            map: &self.inflight,
            tag,
            cell: cell.clone(),
        };
        // Boxed: a miss is rare, and the hashing state would otherwise size every
        // request's future, cached or not.
        let verdict =
            *Box::pin(cell.get_or_init(|| self.verify(req, &throttle, &key, &user, &password)))
                .await;
        match verdict {
            Verdict::Admit(i) => self.admit(i),
            Verdict::Reject => {
                let _ = req.attempted.set(user.into_boxed_str());
                Outcome::Reject(RejectReason::Invalid)
            }
            Verdict::Unavailable => Outcome::Unavailable,
            Verdict::Locked(d) => Outcome::Locked(d),
        }
    }

    /// One real verification: reserve against the lockout, hash on the blocking pool,
    /// record the result.
    async fn verify(
        &self,
        req: &RequestView<'_>,
        throttle: &Throttle<'_>,
        key: &Key,
        user: &str,
        password: &[u8],
    ) -> Verdict {
        // Reserve before hashing so concurrent guesses cannot overshoot `max_failures`.
        let _reservation = match throttle.reserve(Some(key)) {
            Ok(r) => r,
            Err(d) => return Verdict::Locked(d),
        };
        let users = self.users.clone();
        let idx = users.index.get(user).copied();
        let metrics = req.services.metrics.clone();
        let pw = password.to_vec();
        let verdict = req
            .services
            .hashing
            .run(move || {
                metrics.password_hashes.inc();
                let stored = idx
                    .and_then(|i| users.hashes.get(i))
                    .unwrap_or(&users.dummy);
                stored.verify(&pw) && idx.is_some()
            })
            .await;
        match (verdict, idx) {
            (None, _) => Verdict::Unavailable,
            (Some(true), Some(i)) => {
                self.cache.insert(user, password, i, Instant::now());
                throttle.success(Some(key));
                Verdict::Admit(i)
            }
            _ => {
                throttle.failure(Some(key));
                Verdict::Reject
            }
        }
    }

    fn admit(&self, index: usize) -> Outcome {
        match self.users.identities.get(index) {
            Some(id) => Outcome::Admit(id.clone()),
            None => Outcome::Reject(RejectReason::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        h
    }

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn extracts_credentials() {
        let h = header(format!("Basic {}", b64(b"alice:pa:ss")).as_bytes());
        match extract(&h) {
            Found::Credentials(u, p) => {
                assert_eq!(u, "alice");
                assert_eq!(p, b"pa:ss");
            }
            _ => panic!("expected credentials"),
        }
        let h = header(format!("bAsIc {}", b64(b"alice:")).as_bytes());
        assert!(matches!(extract(&h), Found::Credentials(_, p) if p.is_empty()));
    }

    #[test]
    fn other_schemes_and_no_header_are_absent() {
        assert!(matches!(extract(&HeaderMap::new()), Found::Absent));
        assert!(matches!(extract(&header(b"Bearer abc")), Found::Absent));
        assert!(matches!(extract(&header(b"Basicx abc")), Found::Absent));
    }

    #[test]
    fn malformed_basic_headers_are_malformed() {
        let cases: Vec<Vec<u8>> = vec![
            b"Basic".to_vec(),
            b"Basic ".to_vec(),
            b"Basic !!!notbase64".to_vec(),
            format!("Basic {}", b64(b"nocolon")).into_bytes(),
            format!("Basic {}", b64(b":nouser")).into_bytes(),
            format!("Basic {}", b64(b"\xff\xfe:x")).into_bytes(),
            format!("Basic {}", b64(b"a\x00b:x")).into_bytes(),
            format!("Basic {}", "A".repeat(MAX_TOKEN_LEN + 4)).into_bytes(),
        ];
        for c in cases {
            assert!(
                matches!(extract(&header(&c)), Found::Malformed),
                "{}",
                String::from_utf8_lossy(&c)
            );
        }
    }

    #[test]
    fn parses_users_file_with_comments_and_reports_bad_lines() {
        let argon = crate::credentials::hash_password("pw", 1024, 1, 1).unwrap();
        let bc = bcrypt::hash("pw", 4).unwrap();
        let text = format!(
            "# staff\n\nalice:{argon}\nbob:{bc}\ncarol:{{SHA}}abc\nnocolon\n  dave : {argon}  \n"
        );
        let (entries, problems) = parse_users_file(&text);
        let names: Vec<_> = entries.iter().map(|(l, n, _)| (*l, n.as_str())).collect();
        assert_eq!(names, vec![(3, "alice"), (4, "bob"), (7, "dave")]);
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].0, 5);
        assert!(
            problems[0]
                .1
                .starts_with("user \"carol\": unsupported hash")
        );
        assert!(!problems[0].1.contains("abc"), "hash not echoed");
        assert_eq!(problems[1], (6, "expected `name:hash`".to_string()));
    }

    #[test]
    fn accepts_argon2_and_bcrypt_variants_only() {
        let argon = crate::credentials::hash_password("pw", 1024, 1, 1).unwrap();
        assert!(Stored::parse(&argon).is_ok());
        assert!(Stored::parse(&argon.replace("$argon2id$", "$argon2i$")).is_ok());
        assert!(Stored::parse(&argon.replace("$argon2id$", "$argon2d$")).is_err());
        let bc = bcrypt::hash("pw", 4).unwrap();
        for p in ["$2a$", "$2b$", "$2y$"] {
            assert!(Stored::parse(&format!("{p}{}", &bc[4..])).is_ok(), "{p}");
        }
        assert!(Stored::parse(&format!("$2x${}", &bc[4..])).is_err());
        // Costs that would hold a hashing thread for more than seconds per attempt.
        let slow = format!("$2b$17${}", &bc[7..]);
        assert!(Stored::parse(&slow).is_err_and(|e| e.to_string().contains("at most 16")));
        assert!(Stored::parse(&format!("$2b$16${}", &bc[7..])).is_ok());
        for (params, ok) in [
            ("m=2097152,t=2,p=1", true),
            ("m=2097153,t=1,p=1", false),
            ("m=1048576,t=5,p=1", false),
            ("m=65536,t=64,p=1", true),
        ] {
            let h = argon.replace("m=1024,t=1,p=1", params);
            assert_eq!(Stored::parse(&h).is_ok(), ok, "{params}");
        }
        assert!(Stored::parse("$1$abc").is_err());
        assert!(Stored::parse("plaintext").is_err());
    }

    #[test]
    fn dummy_never_verifies_and_mirrors_params() {
        let argon = crate::credentials::hash_password("pw", 1024, 1, 1).unwrap();
        let s = Stored::parse(&argon).unwrap();
        let Some(Stored::Argon2(d)) = s.dummy_like() else {
            panic!("argon2 dummy")
        };
        assert!(d.to_string().starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(!Stored::Argon2(d).verify(b"pw"));
        assert!(!default_dummy().unwrap().verify(b""));
    }

    #[test]
    fn bcrypt_dummy_mirrors_cost_without_hashing_at_load() {
        let real = bcrypt::hash("pw", 4).unwrap();
        let Some(Stored::Bcrypt(d)) = Stored::parse(&real).unwrap().dummy_like() else {
            panic!("bcrypt dummy")
        };
        assert_eq!(d.get(..7), real.get(..7));
        assert!(!Stored::Bcrypt(d).verify(b"pw"));
        // Cost 16, the highest taken, takes seconds to hash: made instantly, it only parses.
        let slow = format!("$2b$16${}", real.get(7..).unwrap());
        let start = Instant::now();
        let Some(Stored::Bcrypt(d)) = Stored::parse(&slow).unwrap().dummy_like() else {
            panic!("bcrypt dummy")
        };
        assert!(d.starts_with("$2b$16$") && d.len() == 60);
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    fn basic(ttl: Duration, size: usize) -> Basic {
        let h = crate::credentials::hash_password("right", 1024, 1, 1).unwrap();
        let b = bcrypt::hash("bpass", 4).unwrap();
        Basic::new(
            "staff",
            "staff",
            &[("alice".into(), h), ("bob".into(), b)],
            ttl,
            size,
        )
        .unwrap()
    }

    #[test]
    fn cache_holds_only_successes() {
        let b = basic(Duration::from_secs(60), 100);
        assert!(b.verify_cached("alice", b"right").is_none());
        assert!(!b.verify_uncached("alice", b"wrong"));
        assert!(!b.verify_uncached("nobody", b"right"));
        assert_eq!(b.cached(), 0);
        assert!(b.verify_uncached("alice", b"right"));
        assert!(b.verify_uncached("bob", b"bpass"));
        assert_eq!(b.verify_cached("alice", b"right"), Some("alice"));
        assert_eq!(b.verify_cached("bob", b"bpass"), Some("bob"));
        assert!(b.verify_cached("alice", b"righ").is_none());
        assert!(b.verify_cached("alic", b"eright").is_none());
    }

    #[test]
    fn cache_key_separates_user_and_password() {
        let b = basic(Duration::from_secs(60), 100);
        assert_ne!(b.cache.tag("a", b"\0b"), b.cache.tag("a\0", b"b"));
        assert_ne!(b.cache.tag("ab", b"c"), b.cache.tag("a", b"bc"));
    }

    #[test]
    fn cache_expires_and_is_bounded() {
        let b = basic(Duration::from_millis(1), 100);
        assert!(b.verify_uncached("alice", b"right"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(b.verify_cached("alice", b"right").is_none());
        let c = Cache::new(Duration::from_secs(60), 16).unwrap();
        let now = Instant::now();
        for i in 0..1000 {
            c.insert(&format!("u{i}"), b"p", 0, now);
            assert!(c.len() <= 16);
        }
        assert_eq!(c.get("u999", b"p", now).map(|e| e.0), Some(0));
    }

    #[test]
    fn zero_ttl_disables_cache() {
        let b = basic(Duration::ZERO, 100);
        assert!(b.verify_uncached("alice", b"right"));
        assert!(b.verify_cached("alice", b"right").is_none());
    }

    #[test]
    fn challenge_names_realm_and_charset() {
        let b = basic(Duration::ZERO, 0);
        assert_eq!(
            b.challenge().to_str().unwrap(),
            "Basic realm=\"staff\", charset=\"UTF-8\""
        );
    }

    #[tokio::test]
    async fn pool_refuses_when_queue_is_full() {
        let pool = Arc::new(HashPool::new(1, 1, Duration::from_secs(5)));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let p1 = pool.clone();
        let first = tokio::spawn(async move { p1.run(move || rx.recv().is_ok()).await });
        // Wait until the first job holds the permit.
        while pool.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let p2 = pool.clone();
        let second = tokio::spawn(async move { p2.run(|| 2).await });
        while pool.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.run(|| 3).await, None, "queue full -> refused at once");
        tx.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Some(true));
        assert_eq!(second.await.unwrap(), Some(2));
    }

    /// Each refusal's text, byte for byte; none holds the hash it refuses.
    #[test]
    fn refusals_keep_their_text_and_never_the_hash() {
        let bc = bcrypt::hash("pw", 4).unwrap();
        let argon = crate::credentials::hash_password("pw", 1024, 1, 1).unwrap();
        let cases = [
            (
                format!("$2b$17${}", &bc[7..]),
                "bcrypt cost too high (17): at most 16, or each attempt holds a hashing thread for seconds",
            ),
            (
                argon.replace("m=1024,t=1", "m=4194304,t=1"),
                "argon2 cost too high (m=4194304, t=1): at most m=2097152 and m × t = 4194304, or each attempt holds a hashing thread for seconds",
            ),
            (
                "plaintext-password".to_string(),
                "unsupported hash (expected an argon2id or argon2i PHC string, or bcrypt $2a$/$2b$/$2y$)",
            ),
        ];
        for (hash, want) in &cases {
            let e = Stored::parse(hash).err().map(|e| e.to_string());
            assert_eq!(e.as_deref(), Some(*want), "{hash}");
        }
        for hash in [
            format!("$2b$04${}", "!".repeat(53)),
            format!("{argon}$extra"),
            "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ".to_string(),
        ] {
            let e = Stored::parse(&hash).err().map(|e| e.to_string());
            assert!(e.as_ref().is_some_and(|e| !e.contains(&hash)), "{e:?}");
        }
        let users = [("alice".to_string(), "plaintext-password".to_string())];
        let e = Basic::new("b", "r", &users, Duration::ZERO, 0)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "user \"alice\": unsupported hash (expected an argon2id or argon2i PHC string, or bcrypt $2a$/$2b$/$2y$)"
            )
        );
        let e = Basic::new("b", "a\nb", &[], Duration::ZERO, 0)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("realm \"a\nb\" cannot be sent in a header")
        );
    }
}
