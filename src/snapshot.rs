//! Everything a request needs, compiled from a validated `Config` and swapped atomically
//! on reload (arc-swap). A request loads the snapshot once and uses it to the end, so a
//! reload never changes the rules under an in-flight request.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::auth::pipeline::{Member, Pipeline};
use crate::auth::{Authenticator, Consumes};
use crate::config::{Config, ConfigError, Limits};
use crate::metrics::{Metrics, RouteMetrics};
use crate::proxy::upstream::UpstreamRt;
use crate::route::Matcher;

/// Why a validated config could not be compiled: a checked part that could not be built
/// (a CA certificate rustls refuses, a certificate and key that do not pair), or an
/// internal inconsistency.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Reported as any config problem is: `FILE:LINE: KEY.PATH: message`.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// An upstream's runtime form.
    #[error("upstreams.{name}: {source}")]
    Upstream {
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: crate::proxy::upstream::UpstreamError,
    },
    /// A route names an authenticator the config does not hold.
    #[error("route {0}: authenticator missing")]
    Authenticator(String),
    /// A route names an upstream the config does not hold.
    #[error("route {0}: upstream missing")]
    Upstream404(String),
}

/// One compiled route.
pub struct RouteRt {
    /// Match rules.
    pub matcher: Matcher,
    /// Name for logs and metrics.
    pub name: String,
    /// Authentication and authorization.
    pub pipeline: Pipeline,
    /// Where admitted requests go.
    pub upstream: Arc<UpstreamRt>,
    /// Credentials stripped before forwarding (union over the route's authenticators).
    pub consumes: Consumes,
    /// Metric handles.
    pub metrics: RouteMetrics,
}

/// A complete, immutable runtime configuration.
pub struct Snapshot {
    /// Routes in match order.
    pub routes: Vec<RouteRt>,
    /// Upstreams by config order.
    pub upstreams: Vec<Arc<UpstreamRt>>,
    /// Authenticators by name.
    pub authenticators: Vec<(String, Arc<Authenticator>)>,
    /// TLS for new handshakes; `None` on a plaintext listener.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Limits and timeouts.
    pub limits: Limits,
    /// Trusted proxy networks for `X-Forwarded-For`.
    pub trusted_proxies: Vec<IpNet>,
    /// Every header an authenticator can set (`forward_claims`): stripped on every route.
    pub set_by_gateway: Vec<HeaderName>,
    /// `X-Forwarded-Proto` value.
    pub proto: HeaderValue,
    /// Metrics for unmatched requests.
    pub unmatched: RouteMetrics,
    /// When the listener's certificates expire (`portcullis_certificate_expiry_*`).
    pub certificate_expiry: Vec<(String, i64)>,
    /// The config this was built from (for settings that cannot change on reload).
    pub config: Config,
}

impl Snapshot {
    /// Compiles a snapshot. Does not start background tasks (see `start`).
    pub fn build(config: Config, metrics: &Arc<Metrics>) -> Result<Self, BuildError> {
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for u in &config.upstreams {
            let rt = UpstreamRt::new(u, metrics.upstream(&u.name)).map_err(|source| {
                BuildError::Upstream {
                    name: u.name.clone(),
                    source,
                }
            })?;
            upstreams.push(Arc::new(rt));
        }
        let mut authenticators = Vec::with_capacity(config.authenticators.len());
        for (name, settings) in &config.authenticators {
            let a = settings.build(name).map_err(|e| {
                let key = match e.key {
                    "" => format!("authenticators.{name}"),
                    k => format!("authenticators.{name}.{k}"),
                };
                config.problem(key, e.message)
            })?;
            a.attach(metrics);
            authenticators.push((name.clone(), Arc::new(a)));
        }
        let members: Vec<Member> = authenticators
            .iter()
            .map(|(name, a)| Member {
                auth: a.clone(),
                counters: metrics.decisions(name),
            })
            .collect();
        let mut routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let ids = match &r.auth {
                crate::config::AuthExpr::Any(v) | crate::config::AuthExpr::All(v) => v,
            };
            let route_members: Vec<Member> = ids
                .iter()
                .filter_map(|i| members.get(*i).cloned())
                .collect();
            if route_members.len() != ids.len() || route_members.is_empty() {
                return Err(BuildError::Authenticator(r.name.clone()));
            }
            let mut consumes = Consumes::default();
            for m in &route_members {
                let c = m.auth.consumes();
                for h in c.headers {
                    if !consumes.headers.contains(&h) {
                        consumes.headers.push(h);
                    }
                }
                for q in c.query {
                    if !consumes.query.contains(&q) {
                        consumes.query.push(q);
                    }
                }
            }
            let upstream = upstreams
                .get(r.upstream)
                .cloned()
                .ok_or_else(|| BuildError::Upstream404(r.name.clone()))?;
            routes.push(RouteRt {
                matcher: Matcher {
                    prefix: r.path_prefix.clone(),
                    methods: r.methods.clone(),
                    host: r.host.clone(),
                },
                name: r.name.clone(),
                pipeline: Pipeline::new(&r.auth, r.require.clone(), route_members),
                upstream,
                consumes,
                metrics: metrics.route(&r.name),
            });
        }
        let tls = match &config.server.tls {
            Some(t) => {
                let cfg =
                    crate::tls::server_config(t).map_err(|e| config.problem(e.key, e.message))?;
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
            }
            None => None,
        };
        let proto = HeaderValue::from_static(if tls.is_some() { "https" } else { "http" });
        let mut set_by_gateway: Vec<HeaderName> = Vec::new();
        for (_, a) in &authenticators {
            for h in a.sets_headers() {
                if !set_by_gateway.contains(&h) {
                    set_by_gateway.push(h);
                }
            }
        }
        Ok(Snapshot {
            routes,
            upstreams,
            authenticators,
            tls,
            limits: config.server.limits.clone(),
            trusted_proxies: config.server.trusted_proxies.clone(),
            set_by_gateway,
            proto,
            unmatched: metrics.route("-"),
            certificate_expiry: config
                .server
                .tls
                .as_ref()
                .map(crate::tls::expiry)
                .unwrap_or_default(),
            config,
        })
    }

    /// Carries over run-time state from the snapshot this one replaces on a reload (see
    /// `Authenticator::inherit`). Before `start`.
    pub fn inherit(&self, old: &Snapshot) {
        for (name, a) in &self.authenticators {
            if let Some((_, prev)) = old.authenticators.iter().find(|(n, _)| n == name) {
                a.inherit(prev);
            }
        }
    }

    /// Starts background work owned by this snapshot (health checks, JWKS refresh) and
    /// publishes what it serves with (certificate expiry).
    pub fn start(&self, metrics: &Metrics) {
        metrics.set_certificate_expiry(&self.certificate_expiry);
        for u in &self.upstreams {
            u.start();
        }
        for (_, a) in &self.authenticators {
            a.start();
        }
    }

    /// `/readyz` reasons, empty when ready.
    pub fn not_ready(&self) -> Vec<String> {
        let mut out = Vec::new();
        for u in &self.upstreams {
            if !u.any_healthy() {
                out.push(format!("upstream {} has no healthy target", u.name));
            }
        }
        for (name, a) in &self.authenticators {
            if let Err(e) = a.ready() {
                out.push(format!("authenticator {name}: {e}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devkit::certs::Ca;

    /// A problem only building can find (rustls refuses the pair) is still reported as
    /// `FILE:LINE: KEY.PATH: message`, by `check` as by a start or a reload.
    #[test]
    fn a_certificate_and_key_that_do_not_pair_are_placed_like_any_problem() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test ca").unwrap();
        let hosts = ["localhost".to_string()];
        ca.server(&hosts).unwrap().write(dir.path(), "a").unwrap();
        ca.server(&hosts).unwrap().write(dir.path(), "b").unwrap();
        let src = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[server.tls]\ncert = \"{0}/a.crt\"\nkey = \"{0}/b.key\"\n\n\
             [upstreams.app]\ntargets = [\"http://127.0.0.1:1\"]\n\n\
             [authenticators.public]\nkind = \"none\"\n\n\
             [[routes]]\nmatch = {{ path_prefix = \"/\" }}\nupstream = \"app\"\nauth = \"public\"\n",
            dir.path().display()
        );
        let path = dir.path().join("c.toml");
        let config = crate::config::load_str(&path, &src).unwrap();
        let Err(e) = Snapshot::build(config, &Arc::new(Metrics::new())) else {
            panic!("a mismatched key was accepted");
        };
        let shown = e.to_string();
        let want = format!(
            "{}:6: server.tls.key: certificate and key do not form a usable pair",
            path.display()
        );
        assert!(shown.starts_with(&want), "{shown}");
    }
}
