//! The route's `auth` expression evaluated over authenticators, then `require`.
//!
//! | expression | outcomes (in order)                          | result                     |
//! |------------|----------------------------------------------|----------------------------|
//! | any        | first `Admit`                                | admit (later ones not run) |
//! | any        | no admit, some `Locked`                      | 429                        |
//! | any        | no admit/locked, some `Unavailable`          | 503                        |
//! | any        | else some `Reject`                           | 401 (`invalid_token` where a token was refused) |
//! | any        | else some `Forbidden`                        | 403                        |
//! | any        | all `Absent`                                 | 401 with every challenge   |
//! | all        | every one `Admit`                            | admit, methods comma-joined |
//! | all        | first non-admit `Absent` / `Reject`          | 401 (later ones not run)   |
//! | all        | first non-admit `Forbidden`                  | 403                        |
//! | all        | first non-admit `Unavailable` / `Locked`     | 503 / 429                  |
//!
//! An empty list cannot reach here: validation refuses it. After admission, `require`
//! checks scopes (union over identities), claims and certificate binding -> 403.

use std::sync::Arc;

use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;

use super::{Authenticator, Identity, Outcome, RejectReason, RequestView};
use crate::config::{AuthExpr, Require};
use crate::error::Refusal;

/// Counters of one authenticator on one snapshot, resolved once.
#[derive(Clone, Default)]
pub struct DecisionCounters {
    /// `result="admit"`.
    pub admit: Counter,
    /// `result="absent"`.
    pub absent: Counter,
    /// `result="reject"`.
    pub reject: Counter,
    /// `result="unavailable"`.
    pub unavailable: Counter,
    /// `result="locked"`.
    pub locked: Counter,
}

impl DecisionCounters {
    fn record(&self, o: &Outcome) {
        match o {
            Outcome::Admit(_) => self.admit.inc(),
            Outcome::Absent => self.absent.inc(),
            Outcome::Reject(_) | Outcome::Forbidden => self.reject.inc(),
            Outcome::Unavailable => self.unavailable.inc(),
            Outcome::Locked(_) => self.locked.inc(),
        };
    }
}

/// One authenticator as a route uses it.
#[derive(Clone)]
pub struct Member {
    /// The authenticator.
    pub auth: Arc<Authenticator>,
    /// Its decision counters.
    pub counters: DecisionCounters,
}

/// A compiled route `auth` expression.
#[derive(Clone)]
pub struct Pipeline {
    /// any-of or all-of.
    pub all: bool,
    /// Members in evaluation order (never empty).
    pub members: Vec<Member>,
    /// `require`.
    pub require: Require,
}

/// What the pipeline admitted.
#[derive(Debug)]
pub struct Admitted {
    /// One identity per admitting authenticator (one for any-of).
    pub identities: Vec<Identity>,
}

impl Admitted {
    /// `X-Auth-Method`: the methods, comma-joined.
    pub fn methods(&self) -> String {
        let mut s = String::new();
        for (i, id) in self.identities.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(id.method.as_str());
        }
        s
    }

    /// `X-Auth-Subject`: the first non-empty subject.
    pub fn subject(&self) -> &str {
        self.identities
            .iter()
            .map(|i| i.subject.as_str())
            .find(|s| !s.is_empty())
            .unwrap_or("")
    }

    /// Whether a consumed header must be kept (`forward_token`).
    pub fn keeps(&self, name: &http::HeaderName) -> bool {
        name == http::header::AUTHORIZATION && self.identities.iter().any(|i| i.keep_authorization)
    }

    /// Union of scopes in first-seen order.
    pub fn scopes(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for id in &self.identities {
            for s in id.scopes.iter() {
                if !out.contains(&s.as_str()) {
                    out.push(s);
                }
            }
        }
        out
    }
}

impl Pipeline {
    /// Builds a pipeline from a route expression.
    pub fn new(expr: &AuthExpr, require: Require, members: Vec<Member>) -> Self {
        Pipeline {
            all: matches!(expr, AuthExpr::All(_)),
            members,
            require,
        }
    }

    /// Authenticates and authorizes one request.
    pub async fn run(&self, req: &RequestView<'_>) -> Result<Admitted, Refusal> {
        let admitted = if self.all {
            self.all_of(req).await?
        } else {
            self.any_of(req).await?
        };
        self.authorize(req, admitted)
    }

    async fn any_of(&self, req: &RequestView<'_>) -> Result<Admitted, Refusal> {
        let mut locked = None;
        let mut unavailable = false;
        let mut rejected = false;
        let mut forbidden = false;
        let mut rejected_token: u64 = 0;
        for (i, m) in self.members.iter().enumerate() {
            let outcome = m.auth.authenticate(req).await;
            m.counters.record(&outcome);
            match outcome {
                Outcome::Admit(id) => {
                    return Ok(Admitted {
                        identities: vec![id],
                    });
                }
                Outcome::Absent => {}
                Outcome::Reject(r) => {
                    rejected = true;
                    if r != RejectReason::Invalid || m.auth.is_token() {
                        rejected_token |= 1 << i.min(63);
                    }
                }
                Outcome::Forbidden => forbidden = true,
                Outcome::Unavailable => unavailable = true,
                Outcome::Locked(d) => {
                    locked = Some(locked.map_or(d, |l: std::time::Duration| l.max(d)))
                }
            }
        }
        if let Some(retry_after) = locked {
            return Err(Refusal::TooManyRequests { retry_after });
        }
        if unavailable {
            return Err(Refusal::AuthUnavailable);
        }
        if forbidden && !rejected {
            return Err(Refusal::Forbidden { challenge: None });
        }
        Err(Refusal::Unauthorized {
            challenges: self.challenges(|i| rejected_token & (1 << i.min(63)) != 0),
        })
    }

    async fn all_of(&self, req: &RequestView<'_>) -> Result<Admitted, Refusal> {
        let mut identities = Vec::with_capacity(self.members.len());
        for (i, m) in self.members.iter().enumerate() {
            let outcome = m.auth.authenticate(req).await;
            m.counters.record(&outcome);
            match outcome {
                Outcome::Admit(id) => identities.push(id),
                Outcome::Absent => {
                    return Err(Refusal::Unauthorized {
                        challenges: self.challenges(|_| false),
                    });
                }
                Outcome::Reject(r) => {
                    let token = r != RejectReason::Invalid || m.auth.is_token();
                    return Err(Refusal::Unauthorized {
                        challenges: self.challenges(|j| j == i && token),
                    });
                }
                Outcome::Forbidden => return Err(Refusal::Forbidden { challenge: None }),
                Outcome::Unavailable => return Err(Refusal::AuthUnavailable),
                Outcome::Locked(retry_after) => {
                    return Err(Refusal::TooManyRequests { retry_after });
                }
            }
        }
        Ok(Admitted { identities })
    }

    fn challenges(&self, rejected: impl Fn(usize) -> bool) -> Vec<HeaderValue> {
        self.members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.auth.challenge(rejected(i)).cloned())
            .collect()
    }

    fn authorize(&self, req: &RequestView<'_>, admitted: Admitted) -> Result<Admitted, Refusal> {
        let r = &self.require;
        // RFC 8705: a certificate-bound token is only good on a connection presenting that
        // certificate, whether or not the route asks for binding.
        let thumb = req.conn.client_cert.as_ref().map(|c| c.x5t_s256.as_str());
        let unbound = admitted
            .identities
            .iter()
            .any(|id| id.cnf_x5t_s256.as_deref().is_some_and(|t| Some(t) != thumb));
        if unbound {
            return Err(Refusal::Unauthorized {
                challenges: self
                    .challenges(|i| self.members.get(i).is_some_and(|m| m.auth.is_token())),
            });
        }
        let token_used = admitted.identities.iter().any(|i| i.claims.is_some());
        if !r.scopes.is_empty() {
            let granted = admitted.scopes();
            if !r.scopes.iter().all(|s| granted.contains(&s.as_str())) {
                let challenge = token_used
                    .then(|| insufficient_scope(self.realm(), &r.scopes))
                    .flatten();
                return Err(Refusal::Forbidden { challenge });
            }
        }
        for (claim, want) in &r.claims {
            let ok = admitted.identities.iter().any(|id| {
                id.claims
                    .as_ref()
                    .and_then(|c| c.get(claim))
                    .is_some_and(|v| match v {
                        serde_json::Value::String(s) => s == want,
                        serde_json::Value::Array(a) => {
                            a.iter().any(|x| x.as_str() == Some(want.as_str()))
                        }
                        serde_json::Value::Bool(b) => want == if *b { "true" } else { "false" },
                        serde_json::Value::Number(n) => &n.to_string() == want,
                        _ => false,
                    })
            });
            if !ok {
                return Err(Refusal::Forbidden {
                    challenge: token_used
                        .then(|| insufficient_scope(self.realm(), &[]))
                        .flatten(),
                });
            }
        }
        if r.bound_token {
            let thumb = req.conn.client_cert.as_ref().map(|c| c.x5t_s256.as_str());
            let bound = admitted
                .identities
                .iter()
                .any(|id| id.cnf_x5t_s256.as_deref().is_some_and(|t| Some(t) == thumb));
            if !bound {
                return Err(Refusal::Unauthorized {
                    challenges: self
                        .challenges(|i| self.members.get(i).is_some_and(|m| m.auth.is_token())),
                });
            }
        }
        Ok(admitted)
    }

    fn realm(&self) -> &str {
        self.members
            .iter()
            .find_map(|m| m.auth.bearer_realm())
            .unwrap_or("portcullis")
    }
}

fn insufficient_scope(realm: &str, scopes: &[String]) -> Option<HeaderValue> {
    let v = if scopes.is_empty() {
        format!("Bearer realm=\"{realm}\", error=\"insufficient_scope\"")
    } else {
        format!(
            "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{}\"",
            scopes.join(" ")
        )
    };
    HeaderValue::from_str(&v).ok()
}
