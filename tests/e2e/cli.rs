//! The binary itself: exit codes, subcommands and signals, driven as a user would.

use rustls::pki_types::pem::PemObject;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["check", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Runs `portcullis check --config <config>`.
fn check(config: &Path) -> Output {
    Command::new(BIN)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn check_prints_ok_or_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[server]\nlisten = [\"127.0.0.1:0\"]\ninsecure_plaintext = true\n[upstreams.a]\ntargets = [\"http://127.0.0.1:1\"]\n[authenticators.p]\nkind = \"none\"\n[[routes]]\nmatch = { path_prefix = \"/\" }\nupstream = \"a\"\nauth = \"p\"\n",
    )
    .unwrap();
    let out = check(&good);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = [\"127.0.0.1:0\"]\ninsecure_plaintext = true\n[upstreams.a]\ntargets = [\"http://127.0.0.1:1\"]\n[[routes]]\nmatch = { path_prefix = \"/\" }\nupstream = \"b\"\nauth = \"idpp\"\n",
    )
    .unwrap();
    let out = check(&bad);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let f = bad.display().to_string();
    assert_eq!(
        lines,
        vec![
            format!(
                "{f}:8: routes[0].upstream: unknown upstream \"b\" (define it as [upstreams.b])"
            ),
            format!(
                "{f}:9: routes[0].auth: unknown authenticator \"idpp\" (define it as [authenticators.idpp])"
            ),
        ]
    );

    let out = check(Path::new("/nonexistent/p.toml"));
    assert_eq!(out.status.code(), Some(1));
}

/// `check --routes` prints the table in match order; `check --explain PATH` names the
/// route a request would take and what it needs, or 404, and exits 0 either way.
#[test]
fn check_lists_routes_and_explains_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[server]\ninsecure_plaintext = true\n[upstreams.a]\ntargets = [\"http://127.0.0.1:1\"]\n\
         [authenticators.p]\nkind = \"none\"\n\
         [authenticators.staff]\nkind = \"basic\"\nusers = { alice = \"$2b$04$abcdefghijklmnopqrstuu2r9OfJnfCsdneAXAGHnS4UpFFP8WIrW\" }\n\
         [[routes]]\nname = \"admin\"\nmatch = { path_prefix = \"/admin\", methods = [\"GET\", \"POST\"] }\nupstream = \"a\"\nauth = \"staff\"\n\
         [[routes]]\nname = \"health\"\nmatch = { path_prefix = \"/health\" }\nupstream = \"a\"\nauth = \"p\"\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        run(&["--routes"]),
        "1. admin  [GET POST] /admin  -> a  auth: staff (basic)\n\
         2. health  [*] /health  -> a  auth: p (none)\nok\n"
    );
    let admin = run(&["--explain", "/admin/users?page=2", "--method", "post"]);
    assert!(
        admin.starts_with("route admin (#1): [GET POST] /admin  -> a\nneeds: staff (basic)\n"),
        "{admin}"
    );
    let health = run(&["--explain", "/health"]);
    assert!(health.contains("admitted without credentials"), "{health}");
    assert_eq!(
        run(&["--explain", "/admin", "--method", "DELETE"]),
        "404: no route matches DELETE /admin\n"
    );
}

/// Runs `portcullis certs --out <dir> <args>` and asserts that it succeeded.
fn certs(dir: &Path, args: &[&str]) {
    let out = Command::new(BIN)
        .args(["certs", "--out"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn certs_writes_a_dev_pki() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path(), &["--host", "api.test"]);
    for f in [
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
        "client.crt",
        "client.key",
    ] {
        let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert!(text.starts_with("-----BEGIN"), "{f}");
    }
    certs(
        dir.path(),
        &[
            "--client",
            "billing",
            "--uri",
            "spiffe://example.org/billing",
        ],
    );
    assert!(dir.path().join("billing.crt").exists() && dir.path().join("billing.key").exists());
}

/// Running `certs` again keeps the CA (the client certificates it issued keep verifying);
/// only `--force` replaces it. `--days` sets the validity of what is issued now.
#[test]
fn certs_keeps_an_existing_ca_unless_forced_and_takes_days() {
    let dir = tempfile::tempdir().unwrap();
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    let not_after = |f: &str| {
        let der = rustls::pki_types::CertificateDer::from_pem_slice(read(f).as_bytes()).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        c.validity().not_after.timestamp()
    };
    certs(dir.path(), &[]);
    let (ca, server) = (read("ca.crt"), read("server.crt"));
    certs(dir.path(), &["--days", "90"]);
    assert_eq!(read("ca.crt"), ca, "the CA is kept");
    assert_ne!(
        read("server.crt"),
        server,
        "the server certificate is issued again"
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for f in ["server.crt", "client.crt"] {
        let days = (not_after(f) - now) as f64 / 86400.0;
        assert!((89.0..=90.0).contains(&days), "{f}: {days} days");
    }
    certs(dir.path(), &["--force"]);
    assert_ne!(read("ca.crt"), ca, "--force makes a new CA");
    let out = Command::new(BIN)
        .args(["certs", "--days", "0", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--days 0 is refused");
}

#[test]
fn gen_api_key_prints_key_and_hash() {
    let out = Command::new(BIN)
        .args(["gen-api-key", "--prefix", "pk"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("pk_") && lines[0].len() >= 3 + 43);
    assert_eq!(lines[1], portcullis::credentials::api_key_hash(lines[0]));
}

#[test]
fn hash_password_reads_one_line_from_stdin() {
    let mut child = Command::new(BIN)
        .args(["hash-password", "--m-cost", "1024", "--t-cost", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret pass\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");
    use argon2::{PasswordHash, PasswordVerifier};
    let parsed = PasswordHash::new(&hash).unwrap();
    assert!(
        argon2::Argon2::default()
            .verify_password(b"s3cret pass", &parsed)
            .is_ok()
    );
}

fn kill(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn run_reloads_on_sighup_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("p.toml");
    let body = |prefix: &str| {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\ninsecure_plaintext = true\nshutdown_grace = \"2s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n[upstreams.a]\ntargets = [\"http://127.0.0.1:1\"]\n[authenticators.p]\nkind = \"none\"\n[[routes]]\nmatch = {{ path_prefix = \"{prefix}\" }}\nupstream = \"a\"\nauth = \"p\"\n"
        )
    };
    std::fs::write(&cfg, body("/")).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |needle: &str| -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                if line.contains(needle) {
                    return line;
                }
            }
        }
        panic!("no log line containing {needle}");
    };
    let bound = wait_for("admin listener bound");
    let v: serde_json::Value = serde_json::from_str(&bound).unwrap();
    assert!(
        v["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{bound}"
    );

    std::fs::write(&cfg, body("/v2")).unwrap();
    kill(pid, "-HUP");
    wait_for("configuration reloaded");

    std::fs::write(&cfg, "this is not toml").unwrap();
    kill(pid, "-HUP");
    wait_for("reload rejected");

    kill(pid, "-TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert_eq!(st.code(), Some(0));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `format = "text"` colours only a terminal: into a pipe, a file or a journal the lines
/// carry no ANSI escape codes.
#[test]
fn text_logs_written_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        "[server]\nlisten = [\"127.0.0.1:0\"]\ninsecure_plaintext = true\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"text\"\n[upstreams.a]\ntargets = [\"http://127.0.0.1:1\"]\n[authenticators.p]\nkind = \"none\"\n[[routes]]\nmatch = { path_prefix = \"/\" }\nupstream = \"a\"\nauth = \"p\"\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("PORTCULLIS_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let bound = loop {
        assert!(std::time::Instant::now() < deadline, "never bound");
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if line.contains("admin listener bound") {
                break line;
            }
        }
    };
    kill(child.id(), "-TERM");
    let _ = child.wait();
    assert!(bound.contains("INFO"), "{bound}");
    assert!(!bound.contains('\u{1b}'), "colour codes in {bound:?}");
}
