//! Authentication: one file per config `kind`, one enum that dispatches with `match` (no
//! boxed future per request; adding a kind is a compile error wherever it must be handled),
//! and the any/all pipeline in `pipeline.rs`.
//!
//! Invariants: authenticators only *read* a borrowed view of the request; only the pipeline
//! strips credentials and writes identity headers. "Absent" (not my kind of credential) is
//! not "Reject" (mine and wrong); "Unavailable" fails closed.

pub mod api_key;
pub mod basic;
pub mod bearer;
pub mod idp;
pub mod introspection;
pub mod jwks;
pub mod jwt;
pub mod memo;
pub mod mtls;
pub mod none;
pub mod pipeline;
pub mod throttle;
pub mod token_cache;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};

use crate::config::{ClientAuthMode, Problems, section};
use crate::conn::ConnInfo;

/// How a request was admitted, as forwarded in `X-Auth-Method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// Public route.
    None,
    /// HTTP Basic.
    Basic,
    /// API key.
    ApiKey,
    /// JWT bearer token.
    Jwt,
    /// RFC 7662 token introspection.
    Introspection,
    /// Client certificate.
    Mtls,
}

impl AuthMethod {
    /// The SPEC name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::Basic => "basic",
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Jwt => "jwt",
            AuthMethod::Introspection => "introspection",
            AuthMethod::Mtls => "mtls",
        }
    }
}

/// A verified identity produced by one authenticator. Authenticators hand out shared
/// ones (`Arc`): a cached credential's identity, and its header values, are made once.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Which method admitted.
    pub method: AuthMethod,
    /// `X-Auth-Subject`; empty for `none`.
    pub subject: String,
    /// `subject` as a header value; `None` when empty or not a valid header value.
    pub subject_value: Option<HeaderValue>,
    /// Granted scopes (set with [`Identity::with_scopes`]).
    pub scopes: Arc<[String]>,
    /// `scopes` space-joined as a header value; `None` when there are none.
    pub scopes_value: Option<HeaderValue>,
    /// Token claims (jwt, introspection) for `require.claims`.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// RFC 8705 `cnf.x5t#S256` of a certificate-bound token.
    pub cnf_x5t_s256: Option<Arc<str>>,
    /// Extra headers for the upstream (e.g. `forward_claims`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Forward `Authorization` unchanged (`forward_token = true`).
    pub keep_authorization: bool,
}

/// The empty scope list, shared: an `Arc` of an empty slice still allocates its counts.
fn no_scopes() -> Arc<[String]> {
    static NONE: std::sync::LazyLock<Arc<[String]>> = std::sync::LazyLock::new(|| Arc::from([]));
    NONE.clone()
}

impl Identity {
    /// An identity with no scopes, claims or extra headers.
    pub fn new(method: AuthMethod, subject: impl Into<String>) -> Self {
        let subject: String = subject.into();
        Identity {
            method,
            subject_value: HeaderValue::from_str(&subject)
                .ok()
                .filter(|_| !subject.is_empty()),
            subject,
            scopes: no_scopes(),
            scopes_value: None,
            claims: None,
            cnf_x5t_s256: None,
            headers: Vec::new(),
            keep_authorization: false,
        }
    }

    /// The identity granting `scopes`.
    pub fn with_scopes(mut self, scopes: Arc<[String]>) -> Self {
        self.scopes_value = if scopes.is_empty() {
            None
        } else {
            HeaderValue::from_str(&scopes.join(" ")).ok()
        };
        self.scopes = scopes;
        self
    }
}

/// Why a present credential was refused (never sent to the client beyond the category).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// Malformed or wrong credential.
    Invalid,
    /// Token invalid (RFC 6750 `invalid_token`).
    InvalidToken,
    /// Expired credential.
    Expired,
}

/// One authenticator's verdict.
#[derive(Debug)]
pub enum Outcome {
    /// Verified.
    Admit(Arc<Identity>),
    /// No credential of this kind on the request.
    Absent,
    /// A credential of this kind, and it is wrong.
    Reject(RejectReason),
    /// Authenticated but not allowed (e.g. certificate not on the allow-list) -> 403.
    Forbidden,
    /// Backend down and nothing valid cached -> 503 (fail closed).
    Unavailable,
    /// Too many failures -> 429 with this `Retry-After`.
    Locked(Duration),
}

/// The result label of `portcullis_auth_decisions_total`.
pub fn outcome_label(o: &Outcome) -> &'static str {
    match o {
        Outcome::Admit(_) => "admit",
        Outcome::Absent => "absent",
        Outcome::Reject(_) | Outcome::Forbidden => "reject",
        Outcome::Unavailable => "unavailable",
        Outcome::Locked(_) => "locked",
    }
}

/// Process-wide services authenticators use; they outlive reloads (so lockout counters
/// survive a SIGHUP) and belong to one running gateway (so tests do not share them).
pub struct Services {
    /// Metrics registry and handles.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Bounded pool for argon2/bcrypt verification (never on the async runtime).
    pub hashing: basic::HashPool,
    /// Failed-attempt counters for `[server.lockout]`.
    pub failures: Arc<dyn throttle::FailureStore>,
}

impl Services {
    /// Services for one gateway.
    pub fn new(metrics: Arc<crate::metrics::Metrics>) -> Self {
        Services {
            metrics,
            hashing: basic::HashPool::for_host(),
            failures: Arc::new(throttle::MemoryStore::new()),
        }
    }
}

/// What an authenticator sees: a borrowed view of the request, never the body.
pub struct RequestView<'a> {
    /// Shared services (lockout store, hashing pool, metrics).
    pub services: &'a Services,
    /// `[server.lockout]` of the request's snapshot.
    pub lockout: &'a crate::config::Lockout,
    /// Method.
    pub method: &'a Method,
    /// Request target as received.
    pub uri: &'a Uri,
    /// Request headers as received.
    pub headers: &'a HeaderMap,
    /// Facts about the connection (peer address, client certificate).
    pub conn: &'a ConnInfo,
    /// The client's address for lockout: the peer, or what a trusted proxy forwarded
    /// (`proxy::headers::client_ip`).
    pub client_ip: std::net::IpAddr,
    /// Who a refused credential claimed to be (a Basic user name, the id of a known but
    /// expired API key), for the access log. Set at most once; never a secret.
    pub attempted: &'a std::sync::OnceLock<Box<str>>,
}

/// Where a credential travels, so the pipeline can strip it before forwarding.
#[derive(Clone, Debug, Default)]
pub struct Consumes {
    /// Headers removed before forwarding.
    pub headers: Vec<HeaderName>,
    /// Query parameters removed from the forwarded URI.
    pub query: Vec<String>,
}

/// Facts reading an authenticator's settings may need.
pub struct BuildContext {
    /// Directory of the config file, for relative paths.
    pub config_dir: PathBuf,
    /// Whether and how client certificates are requested.
    pub client_auth: Option<ClientAuthMode>,
}

/// Every authenticator kind.
pub enum Authenticator {
    /// `kind = "none"`.
    None(none::NoneAuth),
    /// `kind = "mtls"`.
    Mtls(mtls::Mtls),
    /// `kind = "basic"`.
    Basic(Box<basic::Basic>),
    /// `kind = "api_key"`.
    ApiKey(api_key::ApiKey),
    /// `kind = "jwt"`.
    Jwt(Box<jwt::Jwt>),
    /// `kind = "introspection"`.
    Introspection(Box<introspection::Introspection>),
}

/// Kinds recognised in config files.
pub const KINDS: &[&str] = &["none", "basic", "api_key", "jwt", "introspection", "mtls"];

/// One `[authenticators.NAME]`, read and checked: plain data with every file loaded and
/// nothing built. The config holds these; the snapshot builds an `Authenticator` from each.
pub enum Settings {
    /// `kind = "none"`.
    None,
    /// `kind = "mtls"`.
    Mtls(mtls::Settings),
    /// `kind = "basic"`.
    Basic(basic::Settings),
    /// `kind = "api_key"`.
    ApiKey(api_key::Settings),
    /// `kind = "jwt"`.
    Jwt(Box<jwt::Settings>),
    /// `kind = "introspection"`.
    Introspection(Box<introspection::Settings>),
}

impl Settings {
    /// Reads one `[authenticators.NAME]` table, recording problems under `base`. Its
    /// `kind` picks the kind's own raw shape, so an unknown key is reported against that
    /// kind's keys only.
    pub fn read(
        name: &str,
        table: toml::Value,
        base: &str,
        ctx: &BuildContext,
        problems: &mut Problems,
    ) -> Option<Settings> {
        let kind = match table.get("kind") {
            Some(toml::Value::String(k)) => k.clone(),
            Some(_) => {
                problems.push(format!("{base}.kind"), "must be a string");
                return None;
            }
            None if table.is_table() => {
                problems.push(base.to_string(), "missing field `kind`");
                return None;
            }
            None => {
                // Never the value itself: it may be a secret written one level too high.
                problems.push(
                    base.to_string(),
                    format!(
                        "invalid type: {}, expected a table with a `kind` ([authenticators.{name}])",
                        table.type_str()
                    ),
                );
                return None;
            }
        };
        match kind.as_str() {
            "none" => section::<none::Raw>(problems, base, table).map(|_| Settings::None),
            "mtls" => {
                let r = section(problems, base, table)?;
                mtls::Settings::read(name, r, base, ctx, problems).map(Settings::Mtls)
            }
            "basic" => {
                let r = section(problems, base, table)?;
                basic::Settings::read(name, r, base, ctx, problems).map(Settings::Basic)
            }
            "api_key" => {
                let r = section(problems, base, table)?;
                api_key::Settings::read(r, base, problems).map(Settings::ApiKey)
            }
            "jwt" => {
                let r = section(problems, base, table)?;
                jwt::Settings::read(name, r, base, ctx, problems)
                    .map(|s| Settings::Jwt(Box::new(s)))
            }
            "introspection" => {
                let r = section(problems, base, table)?;
                introspection::Settings::read(name, r, base, ctx, problems)
                    .map(|s| Settings::Introspection(Box::new(s)))
            }
            k => {
                problems.push(
                    format!("{base}.kind"),
                    format!(
                        "unknown authenticator kind \"{k}\" (expected one of {})",
                        KINDS.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// The `kind` it was configured as.
    pub fn kind(&self) -> &'static str {
        match self {
            Settings::None => "none",
            Settings::Mtls(_) => "mtls",
            Settings::Basic(_) => "basic",
            Settings::ApiKey(_) => "api_key",
            Settings::Jwt(_) => "jwt",
            Settings::Introspection(_) => "introspection",
        }
    }

    /// Whether this kind grants scopes (for `require.scopes` validation).
    pub fn grants_scopes(&self) -> bool {
        match self {
            Settings::ApiKey(_) | Settings::Jwt(_) | Settings::Introspection(_) => true,
            Settings::None | Settings::Mtls(_) | Settings::Basic(_) => false,
        }
    }

    /// Whether this kind verifies bearer tokens (claims, bound tokens).
    pub fn is_token(&self) -> bool {
        match self {
            Settings::Jwt(_) | Settings::Introspection(_) => true,
            Settings::None | Settings::Mtls(_) | Settings::Basic(_) | Settings::ApiKey(_) => false,
        }
    }

    /// Builds the authenticator these settings describe (caches, clients, key fetchers).
    pub fn build(&self, name: &str) -> Result<Authenticator, BuildError> {
        Ok(match self {
            Settings::None => Authenticator::None(none::NoneAuth),
            Settings::Mtls(s) => Authenticator::Mtls(s.build()),
            Settings::Basic(s) => Authenticator::Basic(Box::new(s.build(name)?)),
            Settings::ApiKey(s) => Authenticator::ApiKey(s.build()),
            Settings::Jwt(s) => Authenticator::Jwt(Box::new(s.build(name)?)),
            Settings::Introspection(s) => Authenticator::Introspection(Box::new(s.build(name)?)),
        })
    }
}

/// Why an authenticator is not ready to serve yet; `/readyz` shows the text.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// A `jwks_url` whose first fetch has not succeeded.
    #[error("JWKS not loaded yet")]
    JwksNotLoaded,
}

/// Why settings that passed validation could not be built: a key path under the
/// authenticator's table (`""`: the table itself) and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    /// Where, relative to `authenticators.NAME` (e.g. `ca`), or empty.
    pub key: &'static str,
    /// What went wrong.
    pub message: String,
}

impl BuildError {
    /// An error about `key` of the authenticator's table.
    pub fn at(key: &'static str, message: impl std::fmt::Display) -> Self {
        BuildError {
            key,
            message: message.to_string(),
        }
    }
}

impl Authenticator {
    /// Runs this authenticator against one request.
    pub async fn authenticate(&self, req: &RequestView<'_>) -> Outcome {
        match self {
            Authenticator::None(a) => a.authenticate(req),
            Authenticator::Mtls(a) => a.authenticate(req),
            Authenticator::Basic(a) => a.authenticate(req).await,
            Authenticator::ApiKey(a) => a.authenticate(req),
            Authenticator::Jwt(a) => a.authenticate(req).await,
            Authenticator::Introspection(a) => a.authenticate(req).await,
        }
    }

    /// The method reported upstream.
    pub fn method(&self) -> AuthMethod {
        match self {
            Authenticator::None(_) => AuthMethod::None,
            Authenticator::Mtls(_) => AuthMethod::Mtls,
            Authenticator::Basic(_) => AuthMethod::Basic,
            Authenticator::ApiKey(_) => AuthMethod::ApiKey,
            Authenticator::Jwt(_) => AuthMethod::Jwt,
            Authenticator::Introspection(_) => AuthMethod::Introspection,
        }
    }

    /// `WWW-Authenticate` challenge offered on 401, if this kind has one; `rejected` asks
    /// for the RFC 6750 `error="invalid_token"` form where a token was refused.
    pub fn challenge(&self, rejected: bool) -> Option<&HeaderValue> {
        match self {
            Authenticator::None(_) | Authenticator::ApiKey(_) | Authenticator::Mtls(_) => None,
            Authenticator::Basic(a) => Some(a.challenge()),
            Authenticator::Jwt(a) => Some(a.challenge(rejected)),
            Authenticator::Introspection(a) => Some(a.challenge(rejected)),
        }
    }

    /// The realm used in Bearer challenges, for token kinds.
    pub fn bearer_realm(&self) -> Option<&str> {
        match self {
            Authenticator::Jwt(a) => Some(a.realm()),
            Authenticator::Introspection(a) => Some(a.realm()),
            Authenticator::None(_)
            | Authenticator::Mtls(_)
            | Authenticator::Basic(_)
            | Authenticator::ApiKey(_) => None,
        }
    }

    /// Where this kind's credential travels.
    pub fn consumes(&self) -> Consumes {
        match self {
            Authenticator::None(_) | Authenticator::Mtls(_) => Consumes::default(),
            Authenticator::Basic(_) => Consumes {
                headers: basic::Basic::consumes(),
                query: Vec::new(),
            },
            Authenticator::ApiKey(a) => {
                let (headers, query) = a.consumes();
                Consumes { headers, query }
            }
            Authenticator::Jwt(a) => a.consumes(),
            Authenticator::Introspection(a) => a.consumes(),
        }
    }

    /// Headers this authenticator sets on the requests it admits besides the `X-Auth-*`
    /// ones (`forward_claims`). Every route strips them from every request, so a client
    /// cannot send them where this authenticator does not run.
    pub fn sets_headers(&self) -> Vec<http::HeaderName> {
        match self {
            Authenticator::Jwt(a) => a.sets_headers(),
            Authenticator::Introspection(_) => self
                .consumes()
                .headers
                .into_iter()
                .filter(|h| *h != http::header::AUTHORIZATION)
                .collect(),
            Authenticator::None(_)
            | Authenticator::Mtls(_)
            | Authenticator::Basic(_)
            | Authenticator::ApiKey(_) => Vec::new(),
        }
    }

    /// Whether this kind verifies bearer tokens (claims, bound tokens).
    pub fn is_token(&self) -> bool {
        matches!(
            self,
            Authenticator::Jwt(_) | Authenticator::Introspection(_)
        )
    }

    /// Whether this kind's backend is ready (e.g. JWKS loaded) for `/readyz`.
    pub fn ready(&self) -> Result<(), NotReady> {
        match self {
            Authenticator::Jwt(a) => a.ready(),
            Authenticator::None(_)
            | Authenticator::Mtls(_)
            | Authenticator::Basic(_)
            | Authenticator::ApiKey(_)
            | Authenticator::Introspection(_) => Ok(()),
        }
    }

    /// Carries over what `old`, the authenticator of the same name in the snapshot a
    /// reload replaces, learned at run time (JWKS keys), so a reload loses nothing.
    pub fn inherit(&self, old: &Authenticator) {
        if let (Authenticator::Jwt(new), Authenticator::Jwt(old)) = (self, old) {
            new.inherit(old);
        }
    }

    /// Starts background work (JWKS refresh) for the snapshot that owns this authenticator.
    pub fn start(self: &Arc<Self>) {
        if let Authenticator::Jwt(a) = &**self {
            a.start();
        }
    }

    /// Resolves per-authenticator metric handles (e.g. JWKS refresh counters).
    pub fn attach(&self, metrics: &crate::metrics::Metrics) {
        if let Authenticator::Jwt(a) = self {
            a.attach(metrics);
        }
    }
}
