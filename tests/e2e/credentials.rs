//! Basic and API-key authentication, the success cache, lockout and the hashing pool,
//! driven through the real gateway.

use std::time::Duration;

use base64::Engine;
use portcullis::credentials::{api_key_hash, hash_password, new_api_key};

use crate::support::{Gateway, PUBLIC, basic, eventually, gateway};

const CHALLENGE: &str = "Basic realm=\"staff\", charset=\"UTF-8\"";
const HASHES: &str = "portcullis_password_hashes_total";

fn argon(pw: &str) -> String {
    hash_password(pw, 1024, 1, 1).unwrap()
}

/// Config with the public route, a basic `staff` (alice: argon2id, bob: bcrypt), an
/// api_key `partners` (header) and `partners_q` (query), and routes over them.
fn body(alice_pw: &str, key: &str, extra: &str) -> String {
    let bob = bcrypt::hash("bob-secret-pw", 4).unwrap();
    format!(
        r#"{PUBLIC}
[authenticators.staff]
kind = "basic"
users = {{ alice = "{alice}", bob = "{bob}" }}

[authenticators.partners]
kind = "api_key"
keys = [
  {{ id = "acme", hash = "{kh}", scopes = ["orders:read", "orders:list"] }},
  {{ id = "old", hash = "{old}", expires = "2020-01-01T00:00:00Z" }},
]

[authenticators.partners_q]
kind = "api_key"
query = "api_key"
keys = [{{ id = "acme-q", hash = "{kh}" }}]

{extra}

[[routes]]
name = "staff"
match = {{ path_prefix = "/staff" }}
upstream = "echo"
auth = "staff"

[[routes]]
name = "partners"
match = {{ path_prefix = "/partners" }}
upstream = "echo"
auth = "partners"

[[routes]]
name = "query"
match = {{ path_prefix = "/query" }}
upstream = "echo"
auth = "partners_q"

[[routes]]
name = "write"
match = {{ path_prefix = "/write" }}
upstream = "echo"
auth = "partners"
require = {{ scopes = ["orders:write"] }}

[[routes]]
name = "read"
match = {{ path_prefix = "/read" }}
upstream = "echo"
auth = "partners"
require = {{ scopes = ["orders:read"] }}

[[routes]]
name = "either"
match = {{ path_prefix = "/either" }}
upstream = "echo"
auth = {{ any = ["staff", "partners"] }}

[[routes]]
name = "both"
match = {{ path_prefix = "/both" }}
upstream = "echo"
auth = {{ all = ["staff", "partners"] }}
"#,
        alice = argon(alice_pw),
        kh = api_key_hash(key),
        old = api_key_hash(&format!("{key}-old")),
    )
}

async fn start(alice_pw: &str, key: &str) -> Gateway {
    gateway(&body(alice_pw, key, "")).start().await
}

async fn start_unlocked(alice_pw: &str, key: &str) -> Gateway {
    gateway(&body(alice_pw, key, ""))
        .tls_extra("[server.lockout]\nenabled = false")
        .start()
        .await
}

fn www_auth(r: &crate::support::Resp) -> Vec<String> {
    r.headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admits_right_password_and_forwards_identity_not_credentials() {
    let gw = start("alice-pw-8c1f", "k-unused").await;
    let c = gw.client();
    let auth = basic("alice", "alice-pw-8c1f");
    let r = c.get_with("/staff/x", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-auth-subject").as_deref(),
        Some("alice")
    );
    assert_eq!(r.upstream_header("x-auth-method").as_deref(), Some("basic"));
    assert_eq!(r.upstream_header("authorization"), None);
    assert_eq!(r.upstream_header("x-auth-scopes"), None);
    // bcrypt user.
    let r = c
        .get_with(
            "/staff/x",
            &[("authorization", &basic("bob", "bob-secret-pw"))],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-auth-subject").as_deref(), Some("bob"));
    let logs = crate::support::logs();
    assert!(!logs.contains("alice-pw-8c1f") && !logs.contains("bob-secret-pw"));
    assert!(!logs.contains(auth.trim_start_matches("Basic ")));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_wrong_password_and_unknown_user_with_challenge() {
    let gw = start("alice-pw-19ad", "k-unused").await;
    let c = gw.client();
    let r = c
        .get_with(
            "/staff/x",
            &[("authorization", &basic("alice", "nope-19ad"))],
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(www_auth(&r), vec![CHALLENGE.to_string()]);
    assert_eq!(r.json()["error"], "authentication required");
    let before = gw.metric(HASHES).await;
    let r = c
        .get_with(
            "/staff/x",
            &[("authorization", &basic("mallory", "alice-pw-19ad"))],
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(www_auth(&r), vec![CHALLENGE.to_string()]);
    assert_eq!(
        gw.metric(HASHES).await,
        before + 1.0,
        "unknown user still runs one (dummy) hash"
    );
    // bcrypt user, wrong password.
    let r = c
        .get_with("/staff/x", &[("authorization", &basic("bob", "nope"))])
        .await;
    assert_eq!(r.status, 401);
    // No credential: 401 with the challenge, nothing hashed.
    let before = gw.metric(HASHES).await;
    let r = c.get("/staff/x").await;
    assert_eq!(r.status, 401);
    assert_eq!(www_auth(&r), vec![CHALLENGE.to_string()]);
    assert_eq!(gw.metric(HASHES).await, before);
    assert!(!crate::support::logs().contains("nope-19ad"));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_basic_headers_get_401_with_challenge_never_500() {
    let gw = start_unlocked("alice-pw-malf", "k-unused").await;
    let c = gw.client();
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let cases = [
        "Basic".to_string(),
        "Basic ".to_string(),
        "Basic %%%not-base64%%%".to_string(),
        format!("Basic {}", b64(b"alice")),
        format!("Basic {}", b64(b"\xff\xfe\xfd:\xc3\x28")),
        format!("Basic {}", b64(b"")),
        format!("Basic {}", b64(b":")),
        format!("Basic {}", b64(b"alice-pw-malf")),
        "Basic YWxpY2U6cGFzcw".to_string(), // missing padding
    ];
    for case in &cases {
        let r = c.get_with("/staff/x", &[("authorization", case)]).await;
        assert_eq!(r.status, 401, "{case:?}");
        assert_eq!(www_auth(&r), vec![CHALLENGE.to_string()], "{case:?}");
    }
    // Another scheme is "absent" for basic: still 401 with the challenge.
    let r = c
        .get_with("/staff/x", &[("authorization", "Bearer abc.def.ghi")])
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(www_auth(&r), vec![CHALLENGE.to_string()]);
    // Hostile bytes over raw TLS, then a legitimate request.
    let raw = gw
        .raw_request(
            b"GET /staff/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic \xff\xfe\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert!(!raw.starts_with("HTTP/1.1 5"), "{raw}");
    let r = c
        .get_with(
            "/staff/x",
            &[("authorization", &basic("alice", "alice-pw-malf"))],
        )
        .await;
    assert_eq!(r.status, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_users_file_and_reports_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(
        &users,
        format!(
            "# staff accounts\n\ncarol:{}\ndan:{}\n",
            argon("carol-pw-uf"),
            bcrypt::hash("dan-pw-uf", 4)
                .unwrap()
                .replacen("$2b$", "$2y$", 1)
        ),
    )
    .unwrap();
    let cfg = format!(
        r#"
[authenticators.staff]
kind = "basic"
users_file = "{}"

[[routes]]
name = "staff"
match = {{ path_prefix = "/staff" }}
upstream = "echo"
auth = "staff"
"#,
        users.display()
    );
    let gw = gateway(&cfg).start().await;
    let c = gw.client();
    for (u, p) in [("carol", "carol-pw-uf"), ("dan", "dan-pw-uf")] {
        let r = c
            .get_with("/staff", &[("authorization", &basic(u, p))])
            .await;
        assert_eq!(r.status, 200, "{u}");
        assert_eq!(r.upstream_header("x-auth-subject").as_deref(), Some(u));
    }
    gw.shutdown().await;

    // A bad line is a config error naming file and line.
    std::fs::write(
        dir.path().join("bad-users"),
        format!(
            "# comment\ncarol:{}\nerin:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\nfrank\n",
            argon("x")
        ),
    )
    .unwrap();
    let text = r#"[server]
listen = ["127.0.0.1:0"]
insecure_plaintext = true

[upstreams.echo]
targets = ["http://127.0.0.1:9"]

[authenticators.staff]
kind = "basic"
users_file = "bad-users"

[[routes]]
match = { path_prefix = "/" }
upstream = "echo"
auth = "staff"
"#;
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, text).unwrap();
    let err = portcullis::config::load(&path).err().unwrap().to_string();
    let file = path.display();
    assert!(
        err.contains(&format!(
            "{file}:10: authenticators.staff.users_file: bad-users:3: user \"erin\": unsupported hash"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:10: authenticators.staff.users_file: bad-users:4: expected `name:hash`"
        )),
        "{err}"
    );
    assert!(!err.contains("W6ph5Mm5"), "hash not echoed: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_success_and_reload_drops_stale_password() {
    let mut gw = start("first-pw-cache", "k-unused").await;
    let c = gw.client();
    let old = basic("alice", "first-pw-cache");
    let h0 = gw.metric(HASHES).await;
    assert_eq!(
        c.get_with("/staff", &[("authorization", &old)])
            .await
            .status,
        200
    );
    let h1 = gw.metric(HASHES).await;
    assert_eq!(h1, h0 + 1.0);
    for _ in 0..3 {
        assert_eq!(
            c.get_with("/staff", &[("authorization", &old)])
                .await
                .status,
            200
        );
    }
    assert_eq!(gw.metric(HASHES).await, h1, "cached: no more hashing");
    // Wrong passwords are never cached: each one hashes.
    let wrong = basic("alice", "wrong-pw-cache");
    for _ in 0..2 {
        assert_eq!(
            c.get_with("/staff", &[("authorization", &wrong)])
                .await
                .status,
            401
        );
    }
    assert_eq!(gw.metric(HASHES).await, h1 + 2.0);

    gw.rewrite_and_reload(&body("second-pw-cache", "k-unused", ""))
        .await
        .unwrap();
    let r = c.get_with("/staff", &[("authorization", &old)]).await;
    assert_eq!(r.status, 401, "stale cache entry must not admit");
    let r = c
        .get_with(
            "/staff",
            &[("authorization", &basic("alice", "second-pw-cache"))],
        )
        .await;
    assert_eq!(r.status, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_in_header_admits_with_scopes_and_is_stripped() {
    let (key, _) = new_api_key("pk");
    let gw = start("x", &key).await;
    let c = gw.client();
    let r = c.get_with("/partners/a", &[("x-api-key", &key)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-auth-subject").as_deref(), Some("acme"));
    assert_eq!(
        r.upstream_header("x-auth-method").as_deref(),
        Some("api_key")
    );
    assert_eq!(
        r.upstream_header("x-auth-scopes").as_deref(),
        Some("orders:read orders:list")
    );
    assert_eq!(r.upstream_header("x-api-key"), None);
    assert!(!r.text().contains(&key));
    // No key: 401 without a challenge.
    let r = c.get("/partners/a").await;
    assert_eq!(r.status, 401);
    assert!(www_auth(&r).is_empty());
    assert!(!crate::support::logs().contains(&key));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_in_query_is_removed_from_forwarded_uri() {
    let (key, _) = new_api_key("pq");
    let gw = start("x", &key).await;
    let c = gw.client();
    let r = c.get(&format!("/query/a?x=1&api_key={key}&y=2")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["uri"], "/query/a?x=1&y=2");
    assert_eq!(
        r.upstream_header("x-auth-subject").as_deref(),
        Some("acme-q")
    );
    assert!(!r.text().contains(&key));
    let r = c.get(&format!("/query/a?api_key={key}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["uri"], "/query/a");
    // The header is not a source for a query authenticator.
    assert_eq!(
        c.get_with("/query/a", &[("x-api-key", &key)]).await.status,
        401
    );
    assert_eq!(c.get("/query/a?api_key=wrong").await.status, 401);
    assert!(!crate::support::logs().contains(&key));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_expired_and_near_miss_keys() {
    let (key, _) = new_api_key("pk");
    let gw = start_unlocked("x", &key).await;
    let c = gw.client();
    let expired = format!("{key}-old");
    assert_eq!(
        c.get_with(
            "/partners",
            &[("x-api-key", &expired), ("x-request-id", "expired-key-1")]
        )
        .await
        .status,
        401
    );
    eventually("the expired key's id is logged", async || {
        crate::support::logs()
            .lines()
            .any(|l| l.contains("expired-key-1") && l.contains(r#""auth.attempted":"old""#))
    })
    .await;
    let mut changed = key.clone().into_bytes();
    let last = changed.len() - 1;
    changed[last] = if changed[last] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(changed).unwrap();
    let near = [
        changed,
        key[..key.len() - 1].to_string(),
        format!("{key}x"),
        format!("x{key}"),
        key[3..].to_string(),
        key.to_uppercase(),
        String::new(),
    ];
    for k in &near {
        let r = c.get_with("/partners", &[("x-api-key", k)]).await;
        assert_eq!(r.status, 401, "{k:?}");
    }
    assert_eq!(
        c.get_with("/partners", &[("x-api-key", &key)]).await.status,
        200
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_scope_is_403_and_granted_scope_passes() {
    let (key, _) = new_api_key("pk");
    let gw = start("x", &key).await;
    let c = gw.client();
    assert_eq!(
        c.get_with("/write", &[("x-api-key", &key)]).await.status,
        403
    );
    assert_eq!(
        c.get_with("/read", &[("x-api-key", &key)]).await.status,
        200
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_and_all_combine_basic_and_api_key() {
    let (key, _) = new_api_key("pk");
    let gw = start("alice-pw-combo", &key).await;
    let c = gw.client();
    let auth = basic("alice", "alice-pw-combo");
    let r = c.get_with("/either", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-auth-method").as_deref(), Some("basic"));
    let r = c.get_with("/either", &[("x-api-key", &key)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-auth-method").as_deref(),
        Some("api_key")
    );
    let r = c.get("/either").await;
    assert_eq!(r.status, 401);
    assert_eq!(www_auth(&r), vec![CHALLENGE.to_string()]);

    let r = c
        .get_with("/both", &[("authorization", &auth), ("x-api-key", &key)])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-auth-method").as_deref(),
        Some("basic,api_key")
    );
    assert_eq!(
        r.upstream_header("x-auth-subject").as_deref(),
        Some("alice")
    );
    assert_eq!(r.upstream_header("authorization"), None);
    assert_eq!(r.upstream_header("x-api-key"), None);
    assert_eq!(
        c.get_with("/both", &[("authorization", &auth)])
            .await
            .status,
        401
    );
    assert_eq!(
        c.get_with("/both", &[("x-api-key", &key)]).await.status,
        401
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_out_after_failures_and_recovers() {
    let (key, _) = new_api_key("pk");
    let gw = gateway(&body("alice-pw-lock", &key, ""))
        .tls_extra(
            "[server.lockout]\nmax_failures = 3\nwindow = \"2s\"\nlockout = \"1s\"\nmax_lockout = \"2s\"",
        )
        .start()
        .await;
    let c = gw.client();
    let wrong = basic("alice", "wrong-pw-lock");
    for i in 0..3 {
        let id = format!("lockout-attempt-{i}");
        assert_eq!(
            c.get_with(
                "/staff",
                &[("authorization", &wrong), ("x-request-id", &id)]
            )
            .await
            .status,
            401
        );
    }
    // The access log names who the refused credential claimed to be; the lockout that
    // starts is a warning naming its kind and length.
    eventually("the refused user and the lockout are logged", async || {
        let logs = crate::support::logs();
        logs.lines()
            .any(|l| l.contains("lockout-attempt-0") && l.contains(r#""auth.attempted":"alice""#))
            && logs.lines().any(|l| {
                l.contains("lockout started")
                    && l.contains(r#""lockout.kind":"user""#)
                    && l.contains(r#""user.name":"alice""#)
            })
    })
    .await;
    assert!(
        !crate::support::logs().contains("wrong-pw-lock"),
        "never the password"
    );
    let hashes = gw.metric(HASHES).await;
    let right = basic("alice", "alice-pw-lock");
    let r = c.get_with("/staff", &[("authorization", &right)]).await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // The IP lockout covers api_key too, and nothing is hashed while locked.
    assert_eq!(
        c.get_with("/partners", &[("x-api-key", &key)]).await.status,
        429
    );
    assert_eq!(gw.metric(HASHES).await, hashes, "decided before hashing");
    assert_eq!(
        gw.metric("portcullis_auth_decisions_total{authenticator=\"staff\",result=\"locked\"}")
            .await,
        1.0
    );
    // Public routes are unaffected.
    assert_eq!(c.get("/public").await.status, 200);
    eventually("lockout expires", async || {
        c.get_with("/staff", &[("authorization", &right)])
            .await
            .status
            == 200
    })
    .await;
    gw.shutdown().await;
}

/// A connection remembers its last admitted `Authorization` (no decoding, no HMAC): the
/// lockout must still apply to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_credential_still_meets_the_lockout() {
    let (key, _) = new_api_key("pm");
    let gw = gateway(&body("alice-pw-memo", &key, ""))
        .tls_extra("[server.lockout]\nmax_failures = 3\nwindow = \"1m\"\nlockout = \"1m\"")
        .start()
        .await;
    let right = basic("alice", "alice-pw-memo");
    let kept = gw.client();
    for _ in 0..3 {
        let r = kept.get_with("/staff", &[("authorization", &right)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.upstream_header("x-auth-subject").as_deref(),
            Some("alice")
        );
    }
    // Another connection guesses alice's password from the same address.
    let other = gw.client();
    let wrong = basic("alice", "wrong-pw-memo");
    for _ in 0..3 {
        assert_eq!(
            other
                .get_with("/staff", &[("authorization", &wrong)])
                .await
                .status,
            401
        );
    }
    let r = kept.get_with("/staff", &[("authorization", &right)]).await;
    assert_eq!(r.status, 429, "the remembered credential is locked out too");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_flood_does_not_starve_other_routes() {
    let gw = gateway(&body("flood-pw", "k-unused", ""))
        .tls_extra("[server.lockout]\nenabled = false")
        .start()
        .await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let c = gw.client();
        tasks.push(tokio::spawn(async move {
            let auth = basic("alice", &format!("wrong-{i}"));
            c.get_with("/staff", &[("authorization", &auth)])
                .await
                .status
        }));
    }
    let c = gw.client();
    let public = tokio::time::timeout(Duration::from_secs(20), c.get("/public/ok")).await;
    assert_eq!(public.expect("public route completed").status, 200);
    for t in tasks {
        let s = t.await.unwrap();
        assert!(s == 401 || s == 503, "{s}");
    }
    // After the flood the right password works.
    assert_eq!(
        c.get_with("/staff", &[("authorization", &basic("alice", "flood-pw"))])
            .await
            .status,
        200
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_lockout_counts_the_forwarded_client() {
    let (key, _) = new_api_key("pk");
    let gw = gateway(&body("alice-pw-xff", &key, ""))
        .server("trusted_proxies = [\"127.0.0.0/8\"]")
        .tls_extra("[server.lockout]\nmax_failures = 3\nwindow = \"1m\"\nlockout = \"1m\"")
        .start()
        .await;
    let c = gw.client();
    let right = basic("alice", "alice-pw-xff");
    let from = |ip: &'static str, auth: &str| {
        let (c, auth) = (c.clone(), auth.to_string());
        async move {
            c.get_with(
                "/staff",
                &[("authorization", &auth), ("x-forwarded-for", ip)],
            )
            .await
            .status
        }
    };
    // Three names, so only the per-client count reaches its limit.
    for user in ["u1", "u2", "u3"] {
        assert_eq!(from("203.0.113.5", &basic(user, "guess")).await, 401);
    }
    assert_eq!(
        from("203.0.113.5", &right).await,
        429,
        "the guessing client"
    );
    assert_eq!(
        from("203.0.113.6", &right).await,
        200,
        "another client, same proxy"
    );
    let direct = c.get_with("/staff", &[("authorization", &right)]).await;
    assert_eq!(direct.status, 200, "the proxy itself is not locked out");
    // The access log names the client the lockout counted, and the proxy as the peer.
    let traced = c
        .get_with(
            "/staff",
            &[
                ("authorization", &right),
                ("x-forwarded-for", "203.0.113.6"),
                ("x-request-id", "xff-access-log-1"),
            ],
        )
        .await;
    assert_eq!(traced.status, 200);
    crate::support::eventually("the access line names the forwarded client", async || {
        crate::support::logs().lines().any(|l| {
            l.contains("xff-access-log-1")
                && l.contains(r#""client.ip":"203.0.113.6""#)
                && l.contains(r#""network.peer.address":"127.0.0.1""#)
        })
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_cannot_overshoot_the_lockout() {
    let (key, _) = new_api_key("pk");
    let gw = gateway(&body("alice-pw-race", &key, ""))
        .tls_extra("[server.lockout]\nmax_failures = 3\nwindow = \"1m\"\nlockout = \"1m\"")
        .start()
        .await;
    let c = gw.client();
    let before = gw.metric(HASHES).await;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let wrong = basic("alice", &format!("guess-{i}"));
                c.get_with("/staff", &[("authorization", &wrong)])
                    .await
                    .status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    let hashed = gw.metric(HASHES).await - before;
    assert!(
        hashed <= 3.0,
        "at most max_failures guesses may be verified, got {hashed}"
    );
    // The burst may end below the limit (a guess refused while three were in flight is
    // not a failure); one guess at a time then reaches it, and the lockout follows at
    // exactly max_failures hashes, decided before any further hash.
    let mut locked = None;
    for i in 0..4 {
        let wrong = basic("alice", &format!("after-{i}"));
        let r = c.get_with("/staff", &[("authorization", &wrong)]).await;
        if r.status == 429 {
            locked = Some(r);
            break;
        }
        assert_eq!(r.status, 401);
    }
    let r = locked.expect("locked out after max_failures failures");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        retry > 30,
        "the lockout's Retry-After, not a busy one: {retry}"
    );
    assert_eq!(gw.metric(HASHES).await - before, 3.0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_for_one_credential_share_one_hash() {
    let (key, _) = new_api_key("pk");
    let gw = gateway(&body("alice-pw-burst", &key, ""))
        .tls_extra("[server.lockout]\nmax_failures = 3\nwindow = \"1m\"\nlockout = \"1m\"")
        .start()
        .await;
    let before = gw.metric(HASHES).await;
    let right = basic("alice", "alice-pw-burst");
    // Separate clients, so the requests arrive on separate connections at once.
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let c = gw.client();
            let right = right.clone();
            tokio::spawn(async move {
                c.get_with("/staff", &[("authorization", &right)])
                    .await
                    .status
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            200,
            "a correct password is never locked out by its own concurrency"
        );
    }
    let hashed = gw.metric(HASHES).await - before;
    assert!(
        hashed <= 2.0,
        "concurrent identical credentials share a verification, got {hashed}"
    );
    gw.shutdown().await;
}
