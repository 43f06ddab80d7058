//! `config`: the config loader, from TOML text to a validated `Config` or every problem.

use std::path::Path;

use crate::config::{AuthExpr, load_str};

/// Keys whose string values are secrets, and tables whose string values are.
const SECRET_KEYS: [&str; 2] = ["secret", "client_secret"];
const SECRET_TABLES: [&str; 1] = ["users"];
/// Shorter strings occur in messages by chance.
const SECRET_MIN: usize = 8;
/// Largest file a fuzzed config may make the loader read.
const MAX_FILE: u64 = 1 << 20;

/// Arbitrary text as the config file `fuzz.toml` (relative paths resolve against the
/// working directory). Inputs whose file keys (`cert`, `key`, `ca`, `crls`, `*_file`)
/// name anything but a small regular file (a device, a FIFO, a directory) are skipped:
/// reading `/dev/zero` would only test the machine.
///
/// Invariants: nothing panics; an error has at least one problem, each with a non-empty
/// message and a line inside the file, and never repeats an inline secret (`secret`,
/// `client_secret`, a `users` hash); an accepted config holds no dangling reference
/// (every route's upstream and authenticators exist, no empty any/all, no upstream
/// without targets) and its authenticators are sorted by unique name.
pub fn config(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let mut secrets = Vec::new();
    let mut others = Vec::new();
    if let Ok(table) = toml::from_str::<toml::Table>(src) {
        let top = At {
            secret: false,
            path: false,
        };
        if !walk(&toml::Value::Table(table), top, &mut secrets, &mut others) {
            return;
        }
    }
    secrets.retain(|s| s.len() >= SECRET_MIN && !others.iter().any(|o| o.contains(s.as_str())));
    let lines = src.bytes().filter(|&b| b == b'\n').count() + 1;
    match load_str(Path::new("fuzz.toml"), src) {
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error without a problem");
            for p in &e.problems {
                assert!(
                    (1..=lines).contains(&p.line),
                    "line {} of {lines}: {p}",
                    p.line
                );
                assert!(!p.message.trim().is_empty(), "empty message at {}", p.path);
                for s in &secrets {
                    assert!(!p.to_string().contains(s.as_str()), "a secret in {p}");
                }
            }
        }
        Ok(c) => {
            for r in &c.routes {
                assert!(r.upstream < c.upstreams.len());
                let (AuthExpr::Any(members) | AuthExpr::All(members)) = &r.auth;
                assert!(
                    !members.is_empty(),
                    "route {} with an empty auth list",
                    r.name
                );
                assert!(members.iter().all(|&i| i < c.authenticators.len()));
            }
            for u in &c.upstreams {
                assert!(!u.targets.is_empty(), "upstream {} without targets", u.name);
            }
            assert!(c.authenticators.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }
}

/// Keys whose values the loader reads as file paths (besides every `*_file`).
const PATH_KEYS: [&str; 4] = ["cert", "key", "ca", "crls"];

/// Where a value sits: under a secret key, under a file-path key.
#[derive(Clone, Copy)]
struct At {
    secret: bool,
    path: bool,
}

/// Collects string values (secret or not); false when a file path names anything the
/// loader must not be pointed at.
fn walk(v: &toml::Value, at: At, secrets: &mut Vec<String>, others: &mut Vec<String>) -> bool {
    match v {
        toml::Value::String(s) => {
            if at.path {
                if let Ok(m) = std::fs::metadata(s) {
                    if !m.is_file() || m.len() > MAX_FILE {
                        return false;
                    }
                }
            }
            if at.secret {
                secrets.push(s.clone());
            } else {
                others.push(s.clone());
            }
            true
        }
        toml::Value::Array(a) => a.iter().all(|v| walk(v, at, secrets, others)),
        toml::Value::Table(t) => t.iter().all(|(k, v)| {
            let at = At {
                secret: at.secret
                    || SECRET_KEYS.contains(&k.as_str())
                    || (SECRET_TABLES.contains(&k.as_str()) && v.is_table()),
                path: PATH_KEYS.contains(&k.as_str()) || k.ends_with("_file"),
            };
            others.push(k.clone());
            walk(v, at, secrets, others)
        }),
        _ => true,
    }
}
