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

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;
use smallvec::{SmallVec, smallvec};

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
    /// One identity per admitting authenticator (one for any-of), inline when one.
    pub identities: SmallVec<[Arc<Identity>; 1]>,
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
        self.subject_identity().map_or("", |i| i.subject.as_str())
    }

    /// The identity whose subject is `X-Auth-Subject`.
    pub fn subject_identity(&self) -> Option<&Arc<Identity>> {
        self.identities.iter().find(|i| !i.subject.is_empty())
    }

    /// `X-Auth-Scopes`: the union of scopes, space-joined (one identity's is made once).
    pub fn scopes_value(&self) -> Option<Cow<'_, HeaderValue>> {
        if let [one] = self.identities.as_slice() {
            return one.scopes_value.as_ref().map(Cow::Borrowed);
        }
        let scopes = self.scopes();
        if scopes.is_empty() {
            return None;
        }
        HeaderValue::from_str(&scopes.join(" "))
            .ok()
            .map(Cow::Owned)
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
        let mut verdict = AnyVerdict::default();
        for (i, m) in self.members.iter().enumerate() {
            let outcome = m.auth.authenticate(req).await;
            m.counters.record(&outcome);
            if let Outcome::Admit(id) = outcome {
                return Ok(Admitted {
                    identities: smallvec![id],
                });
            }
            verdict.note(i, &outcome, m.auth.is_token());
        }
        Err(verdict.refusal(|rejected| self.challenges(rejected)))
    }

    async fn all_of(&self, req: &RequestView<'_>) -> Result<Admitted, Refusal> {
        let mut identities = SmallVec::with_capacity(self.members.len());
        for (i, m) in self.members.iter().enumerate() {
            let outcome = m.auth.authenticate(req).await;
            m.counters.record(&outcome);
            match outcome {
                Outcome::Admit(id) => identities.push(id),
                other => {
                    return Err(all_refusal(i, &other, m.auth.is_token(), |rejected| {
                        self.challenges(rejected)
                    }));
                }
            }
        }
        Ok(Admitted { identities })
    }

    fn challenges(&self, rejected: &dyn Fn(usize) -> bool) -> Vec<HeaderValue> {
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
                    .challenges(&|i| self.members.get(i).is_some_and(|m| m.auth.is_token())),
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
                        .challenges(&|i| self.members.get(i).is_some_and(|m| m.auth.is_token())),
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

/// The non-admitting outcomes of an any-of, folded into its refusal (table rows 2-6).
#[derive(Default)]
struct AnyVerdict {
    locked: Option<Duration>,
    unavailable: bool,
    rejected: bool,
    forbidden: bool,
    /// Bit i: member i refused a token (Bearer `error="invalid_token"`).
    token_rejected: u64,
}

impl AnyVerdict {
    fn note(&mut self, i: usize, outcome: &Outcome, is_token: bool) {
        match outcome {
            Outcome::Admit(_) | Outcome::Absent => {}
            Outcome::Reject(r) => {
                self.rejected = true;
                if *r != RejectReason::Invalid || is_token {
                    self.token_rejected |= 1 << i.min(63);
                }
            }
            Outcome::Forbidden => self.forbidden = true,
            Outcome::Unavailable => self.unavailable = true,
            Outcome::Locked(d) => self.locked = Some(self.locked.map_or(*d, |l| l.max(*d))),
        }
    }

    fn refusal(
        self,
        challenges: impl FnOnce(&dyn Fn(usize) -> bool) -> Vec<HeaderValue>,
    ) -> Refusal {
        if let Some(retry_after) = self.locked {
            return Refusal::TooManyRequests { retry_after };
        }
        if self.unavailable {
            return Refusal::AuthUnavailable;
        }
        if self.forbidden && !self.rejected {
            return Refusal::Forbidden { challenge: None };
        }
        let bits = self.token_rejected;
        Refusal::Unauthorized {
            challenges: challenges(&|i| bits & (1 << i.min(63)) != 0),
        }
    }
}

/// The refusal of an all-of whose member `i` did not admit (table rows 8-10).
fn all_refusal(
    i: usize,
    outcome: &Outcome,
    is_token: bool,
    challenges: impl FnOnce(&dyn Fn(usize) -> bool) -> Vec<HeaderValue>,
) -> Refusal {
    match outcome {
        Outcome::Admit(_) | Outcome::Absent => Refusal::Unauthorized {
            challenges: challenges(&|_| false),
        },
        Outcome::Reject(r) => {
            let token = *r != RejectReason::Invalid || is_token;
            Refusal::Unauthorized {
                challenges: challenges(&|j| j == i && token),
            }
        }
        Outcome::Forbidden => Refusal::Forbidden { challenge: None },
        Outcome::Unavailable => Refusal::AuthUnavailable,
        Outcome::Locked(retry_after) => Refusal::TooManyRequests {
            retry_after: *retry_after,
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthMethod, Identity};

    fn any(outcomes: Vec<Outcome>) -> Result<&'static str, Refusal> {
        let mut v = AnyVerdict::default();
        for (i, o) in outcomes.iter().enumerate() {
            if matches!(o, Outcome::Admit(_)) {
                return Ok("admit");
            }
            v.note(i, o, false);
        }
        Err(v.refusal(|_| Vec::new()))
    }

    fn admit() -> Outcome {
        Outcome::Admit(Arc::new(Identity::new(AuthMethod::None, "x")))
    }

    fn locked(s: u64) -> Outcome {
        Outcome::Locked(Duration::from_secs(s))
    }

    fn unauthorized() -> Refusal {
        Refusal::Unauthorized {
            challenges: Vec::new(),
        }
    }

    #[test]
    fn any_first_admit_wins() {
        assert_eq!(
            any(vec![Outcome::Absent, admit(), Outcome::Unavailable]),
            Ok("admit")
        );
        assert_eq!(
            any(vec![Outcome::Reject(RejectReason::Invalid), admit()]),
            Ok("admit")
        );
    }

    #[test]
    fn any_lockout_beats_everything_else() {
        let r = any(vec![
            Outcome::Unavailable,
            locked(3),
            Outcome::Reject(RejectReason::Invalid),
            locked(9),
        ]);
        assert_eq!(
            r,
            Err(Refusal::TooManyRequests {
                retry_after: Duration::from_secs(9)
            })
        );
    }

    #[test]
    fn any_unavailable_beats_reject() {
        let r = any(vec![
            Outcome::Reject(RejectReason::InvalidToken),
            Outcome::Unavailable,
        ]);
        assert_eq!(r, Err(Refusal::AuthUnavailable));
    }

    #[test]
    fn any_reject_beats_forbidden() {
        assert_eq!(
            any(vec![
                Outcome::Forbidden,
                Outcome::Reject(RejectReason::Invalid)
            ]),
            Err(unauthorized())
        );
    }

    #[test]
    fn any_forbidden_alone_is_403() {
        assert_eq!(
            any(vec![Outcome::Absent, Outcome::Forbidden]),
            Err(Refusal::Forbidden { challenge: None })
        );
    }

    #[test]
    fn any_all_absent_is_401() {
        assert_eq!(
            any(vec![Outcome::Absent, Outcome::Absent]),
            Err(unauthorized())
        );
    }

    #[test]
    fn any_marks_only_refused_tokens_invalid() {
        let mut v = AnyVerdict::default();
        v.note(0, &Outcome::Absent, true);
        v.note(1, &Outcome::Reject(RejectReason::InvalidToken), true);
        v.note(2, &Outcome::Reject(RejectReason::Invalid), false);
        let mut seen = Vec::new();
        let _ = v.refusal(|f| {
            seen = (0..3).map(f).collect();
            Vec::new()
        });
        assert_eq!(seen, vec![false, true, false]);
    }

    #[test]
    fn all_first_non_admit_decides() {
        let r = |o: Outcome| all_refusal(1, &o, false, |_| Vec::new());
        assert_eq!(r(Outcome::Absent), unauthorized());
        assert_eq!(r(Outcome::Reject(RejectReason::Invalid)), unauthorized());
        assert_eq!(
            r(Outcome::Forbidden),
            Refusal::Forbidden { challenge: None }
        );
        assert_eq!(r(Outcome::Unavailable), Refusal::AuthUnavailable);
        assert_eq!(
            r(locked(5)),
            Refusal::TooManyRequests {
                retry_after: Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn all_marks_the_refused_token_member() {
        let mut seen = Vec::new();
        let _ = all_refusal(1, &Outcome::Reject(RejectReason::Invalid), true, |f| {
            seen = (0..3).map(f).collect();
            Vec::new()
        });
        assert_eq!(seen, vec![false, true, false]);
    }

    #[test]
    fn admitted_joins_methods_and_unions_scopes() {
        let a = Identity::new(AuthMethod::Mtls, "spiffe://x/a")
            .with_scopes(Arc::from(vec!["r".to_string()]));
        let b = Identity::new(AuthMethod::Basic, "alice")
            .with_scopes(Arc::from(vec!["w".to_string(), "r".to_string()]));
        let one = Admitted {
            identities: smallvec![Arc::new(b.clone())],
        };
        assert_eq!(one.scopes_value().unwrap().as_ref(), "w r");
        let adm = Admitted {
            identities: smallvec![Arc::new(a), Arc::new(b)],
        };
        assert_eq!(adm.methods(), "mtls,basic");
        assert_eq!(adm.subject(), "spiffe://x/a");
        assert_eq!(adm.scopes(), vec!["r", "w"]);
        assert_eq!(adm.scopes_value().unwrap().as_ref(), "r w");
        let none = Admitted {
            identities: smallvec![Arc::new(Identity::new(AuthMethod::None, ""))],
        };
        assert_eq!(none.subject_identity().map(|i| i.subject.as_str()), None);
        assert!(none.scopes_value().is_none());
    }
}
