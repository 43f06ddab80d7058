//! Route order, checked: routes match in order and the first match wins, so an earlier
//! route can take requests meant for a later one. That is refused when it would admit
//! without credentials what the later route protects, or when the later route can never
//! be reached; an earlier, weaker credential in front of a stronger one is a warning.

use super::error::Problems;
use super::{AuthExpr, Route};
use crate::auth::Settings;
use crate::route::prefix_matches;

/// Checks the order of `routes` (all valid, index = position in the file). Errors go to
/// `problems`; warnings are returned as (key path, message).
pub(super) fn check(
    routes: &[Route],
    authenticators: &[(String, Settings)],
    problems: &mut Problems,
) -> Vec<(String, String)> {
    let mut warnings = Vec::new();
    for (b, later) in routes.iter().enumerate() {
        for (a, earlier) in routes.iter().enumerate().take(b) {
            if !takes_paths_of(earlier, later) {
                continue;
            }
            let open = admits_anyone(&earlier.auth, authenticators);
            let protected = !admits_anyone(&later.auth, authenticators);
            let (ea, lb) = (&earlier.name, &later.name);
            if covers(earlier, later) {
                let why = if open && protected {
                    format!(
                        "; requests for its paths are admitted without credentials by \"{ea}\": move route \"{lb}\" above route \"{ea}\""
                    )
                } else {
                    format!(": move it above route \"{ea}\", or remove it")
                };
                problems.push(
                    format!("routes[{b}]"),
                    format!(
                        "route \"{lb}\" can never be reached: route \"{ea}\" (routes[{a}]) comes first and matches every request it matches{why}"
                    ),
                );
            } else if open && protected {
                problems.push(
                    format!("routes[{b}]"),
                    format!(
                        "route \"{ea}\" (routes[{a}]) admits requests without credentials and comes first, taking requests for paths of protected route \"{lb}\": move route \"{lb}\" above route \"{ea}\""
                    ),
                );
            } else if strength(&earlier.auth, authenticators)
                < strength(&later.auth, authenticators)
            {
                warnings.push((
                    format!("routes[{b}]"),
                    format!(
                        "route \"{ea}\" (routes[{a}]) needs weaker credentials and comes first, taking some requests for paths of route \"{lb}\": move route \"{lb}\" above it if they should need \"{lb}\"'s"
                    ),
                ));
            }
        }
    }
    warnings
}

/// Whether `a` matches some requests for `b`'s paths: `a`'s prefix contains `b`'s (on a
/// segment boundary), their methods overlap, and `a`'s host is `b`'s or any.
fn takes_paths_of(a: &Route, b: &Route) -> bool {
    prefix_matches(&a.path_prefix, &b.path_prefix)
        && (a.methods.is_empty()
            || b.methods.is_empty()
            || a.methods.iter().any(|m| b.methods.contains(m)))
        && a.host.as_ref().is_none_or(|h| b.host.as_ref() == Some(h))
}

/// Whether `a` matches every request `b` matches.
fn covers(a: &Route, b: &Route) -> bool {
    prefix_matches(&a.path_prefix, &b.path_prefix)
        && (a.methods.is_empty()
            || (!b.methods.is_empty() && b.methods.iter().all(|m| a.methods.contains(m))))
        && a.host.as_ref().is_none_or(|h| b.host.as_ref() == Some(h))
}

fn is_none(i: usize, authenticators: &[(String, Settings)]) -> bool {
    authenticators
        .get(i)
        .is_some_and(|(_, s)| matches!(s, Settings::None))
}

/// Whether a request with no credential can pass.
pub(super) fn admits_anyone(expr: &AuthExpr, authenticators: &[(String, Settings)]) -> bool {
    match expr {
        AuthExpr::Any(ids) => ids.iter().any(|i| is_none(*i, authenticators)),
        AuthExpr::All(ids) => ids.iter().all(|i| is_none(*i, authenticators)),
    }
}

/// Credentials a request needs: 0 for `none`, 1 for any other kind; `any` takes its
/// weakest member, `all` adds its members up.
fn strength(expr: &AuthExpr, authenticators: &[(String, Settings)]) -> usize {
    let one = |i: &usize| usize::from(!is_none(*i, authenticators));
    match expr {
        AuthExpr::Any(ids) => ids.iter().map(one).min().unwrap_or(0),
        AuthExpr::All(ids) => ids.iter().map(one).sum(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const HEAD: &str = r#"
[server]
insecure_plaintext = true

[upstreams.app]
targets = ["http://127.0.0.1:1"]

[authenticators.public]
kind = "none"

[authenticators.partners]
kind = "api_key"
keys = [{ id = "acme", hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000" }]

[authenticators.staff]
kind = "basic"
users = { alice = "$2b$04$abcdefghijklmnopqrstuu2r9OfJnfCsdneAXAGHnS4UpFFP8WIrW" }
"#;

    /// The problems (or, if none, the warnings) of a config with these routes, in order:
    /// (name, prefix, methods, auth).
    fn verdict(routes: &[(&str, &str, &str, &str)]) -> (Vec<String>, Vec<String>) {
        let mut src = HEAD.to_string();
        for (name, prefix, methods, auth) in routes {
            src.push_str(&format!(
                "\n[[routes]]\nname = \"{name}\"\nmatch = {{ path_prefix = \"{prefix}\"{methods} }}\nupstream = \"app\"\nauth = {auth}\n"
            ));
        }
        match crate::config::load_str(Path::new("c.toml"), &src) {
            Ok(c) => (Vec::new(), c.warning_lines()),
            Err(e) => (
                e.problems.iter().map(|p| p.to_string()).collect(),
                Vec::new(),
            ),
        }
    }

    const ANY: &str = "";
    const GET: &str = ", methods = [\"GET\"]";

    #[test]
    fn a_public_route_in_front_of_a_protected_one_it_swallows_is_refused() {
        for (public, prefix) in [
            ("\"public\"", "/"),
            ("\"public\"", "/api"),
            ("{ any = [\"staff\", \"public\"] }", "/api"),
        ] {
            let (errors, _) = verdict(&[
                ("open", prefix, ANY, public),
                ("admin", "/api/admin", ANY, "\"staff\""),
            ]);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].contains("routes[1]")
                    && errors[0].contains("move route \"admin\" above route \"open\""),
                "{errors:?}"
            );
        }
        // Only some methods: still taken for those, still refused.
        let (errors, _) = verdict(&[
            ("open", "/api", GET, "\"public\""),
            ("admin", "/api/admin", ANY, "\"staff\""),
        ]);
        assert!(
            errors[0].contains("admits requests without credentials"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_route_an_earlier_one_covers_is_unreachable() {
        let (errors, _) = verdict(&[
            ("api", "/api", ANY, "\"partners\""),
            ("admin", "/api/admin", GET, "\"staff\""),
        ]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("route \"admin\" can never be reached"),
            "{errors:?}"
        );
    }

    #[test]
    fn weaker_before_stronger_is_a_warning_and_the_right_order_is_clean() {
        let (errors, warnings) = verdict(&[
            ("api", "/api", GET, "\"partners\""),
            (
                "admin",
                "/api/admin",
                ANY,
                "{ all = [\"partners\", \"staff\"] }",
            ),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("needs weaker credentials"),
            "{warnings:?}"
        );
        // Specific before general, and disjoint prefixes, are what is meant.
        let (errors, warnings) = verdict(&[
            ("admin", "/api/admin", ANY, "\"staff\""),
            ("health", "/api/health", ANY, "\"public\""),
            ("api", "/api", ANY, "\"partners\""),
            ("apix", "/apix", ANY, "\"public\""),
            ("rest", "/", ANY, "\"public\""),
        ]);
        assert!(
            errors.is_empty() && warnings.is_empty(),
            "{errors:?} {warnings:?}"
        );
    }
}
