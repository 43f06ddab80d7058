//! Config loading errors as users see them: every problem at once, each with file, line
//! and key path.

use std::path::Path;

fn problems(text: &str) -> Vec<String> {
    match portcullis::config::load_str(Path::new("test.toml"), text) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    }
}

const BASE: &str = r#"[server]
listen = ["127.0.0.1:0"]
insecure_plaintext = true

[upstreams.app]
targets = ["http://127.0.0.1:8080"]

[authenticators.public]
kind = "none"
"#;

#[test]
fn accepts_a_minimal_config() {
    let text = format!(
        "{BASE}\n[[routes]]\nmatch = {{ path_prefix = \"/\" }}\nupstream = \"app\"\nauth = \"public\"\n"
    );
    assert_eq!(problems(&text), Vec::<String>::new());
}

#[test]
fn reports_every_problem_with_line_and_key_path() {
    let text = format!(
        r#"{BASE}
[[routes]]
match = {{ path_prefix = "/a" }}
upstream = "app"

[[routes]]
match = {{ path_prefix = "/b" }}
upstream = "nope"
auth = "public"

[[routes]]
match = {{ path_prefix = "/c" }}
upstream = "app"
auth = "idpp"

[[routes]]
match = {{ path_prefix = "/d" }}
upstream = "app"
auth = {{ any = [] }}
"#
    );
    let p = problems(&text);
    assert_eq!(
        p,
        vec![
            "test.toml:11: routes[0].auth: missing `auth`: every route names its authenticators; a public route uses one of kind \"none\"".to_string(),
            "test.toml:17: routes[1].upstream: unknown upstream \"nope\" (define it as [upstreams.nope])".to_string(),
            "test.toml:23: routes[2].auth: unknown authenticator \"idpp\" (define it as [authenticators.idpp])".to_string(),
            "test.toml:28: routes[3].auth.any: must name at least one authenticator (an empty list would admit no one)".to_string(),
        ],
        "{p:#?}"
    );
}

/// A key the declared kind does not take is named with that kind's keys only, not every
/// kind's (a `basic` authenticator with a typo is not told about `jwks_url`).
#[test]
fn an_unknown_authenticator_key_lists_only_its_kinds_keys() {
    let text = "[upstreams.app]\ntargets = [\"http://127.0.0.1:1\"]\n\n[authenticators.staff]\nkind = \"basic\"\nusers = {}\nrealmm = \"x\"\njwks_url = \"https://idp/jwks\"\n\n[[routes]]\nmatch = { path_prefix = \"/\" }\nupstream = \"app\"\nauth = \"staff\"\n";
    let p = problems(text);
    let keys = "expected one of `kind`, `realm`, `users_file`, `users`, `cache_ttl`, `cache_size`";
    assert!(
        p.contains(&format!(
            "test.toml:7: authenticators.staff.realmm: unknown key `realmm`, {keys}"
        )),
        "{p:#?}"
    );
    assert!(
        p.contains(&format!(
            "test.toml:8: authenticators.staff.jwks_url: unknown key `jwks_url`, {keys}"
        )),
        "{p:#?}"
    );
}

#[test]
fn names_unknown_keys_where_they_are() {
    let text = format!(
        "{BASE}realm = \"x\"\n\n[[routes]]\nmatch = {{ path_prefix = \"/\" }}\nupstream = \"app\"\nauth = \"public\"\ncolour = \"red\"\n"
    );
    let p = problems(&text);
    assert_eq!(p.len(), 2, "{p:#?}");
    assert_eq!(
        p[0], "test.toml:10: authenticators.public.realm: unknown key `realm`, expected `kind`",
        "{p:#?}"
    );
    assert!(
        p[1].starts_with("test.toml:16: routes[0].colour: unknown key `colour`"),
        "{p:#?}"
    );
}

#[test]
fn rejects_bad_units_and_addresses() {
    let text = r#"[server]
listen = ["127.0.0.1:0"]
shutdown_grace = "30"
insecure_plaintext = true

[server.limits]
max_body_bytes = "10XB"

[upstreams.app]
targets = ["http://10.0.0.1:8080"]

[authenticators.public]
kind = "none"

[[routes]]
match = { path_prefix = "/" }
upstream = "app"
auth = "public"
"#;
    let p = problems(text);
    assert!(
        p.iter()
            .any(|m| m.starts_with("test.toml:3: server.shutdown_grace: invalid duration \"30\"")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|m| m
                .starts_with("test.toml:7: server.limits.max_body_bytes: invalid size \"10XB\"")),
        "{p:#?}"
    );
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(
        p.iter().any(|m| m.starts_with(
            "test.toml:10: upstreams.app.targets[0]: \"http://10.0.0.1:8080\" must use https"
        )),
        "{p:#?}"
    );
}

#[test]
fn requires_tls_unless_plaintext_is_explicit() {
    let text = BASE.replace("insecure_plaintext = true\n", "")
        + "\n[[routes]]\nmatch = { path_prefix = \"/\" }\nupstream = \"app\"\nauth = \"public\"\n";
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].starts_with("test.toml:1: server.tls: missing [server.tls]"),
        "{p:#?}"
    );
}

#[test]
fn reports_missing_certificate_files() {
    let text = BASE.replace(
        "insecure_plaintext = true\n",
        "\n[server.tls]\ncert = \"/nonexistent/server.crt\"\nkey = \"/nonexistent/server.key\"\n",
    ) + "\n[[routes]]\nmatch = { path_prefix = \"/\" }\nupstream = \"app\"\nauth = \"public\"\n";
    let p = problems(&text);
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(
        p[0].starts_with("test.toml:5: server.tls.cert: cannot read /nonexistent/server.crt"),
        "{p:#?}"
    );
    assert!(
        p[1].starts_with("test.toml:6: server.tls.key: cannot read /nonexistent/server.key"),
        "{p:#?}"
    );
}

#[test]
fn reports_syntax_errors_with_their_line() {
    let p = problems("[server]\nlisten = [\"127.0.0.1:0\"\n\n[admin]\n");
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].starts_with("test.toml:"), "{p:#?}");
    assert!(p[0].contains("invalid TOML"), "{p:#?}");
}

#[test]
fn rejects_unknown_authenticator_kinds() {
    let text = BASE.replace("kind = \"none\"", "kind = \"magic\"")
        + "\n[[routes]]\nmatch = { path_prefix = \"/\" }\nupstream = \"app\"\nauth = \"public\"\n";
    let p = problems(&text);
    assert!(
        p[0].starts_with(
            "test.toml:9: authenticators.public.kind: unknown authenticator kind \"magic\""
        ),
        "{p:#?}"
    );
}
