//! Keeps `docs/configuration.md` true to the code. The key set of every config table is
//! read from the real loader: each table's raw type denies unknown keys, so feeding it a
//! probe key makes serde list the keys it accepts ("unknown key `x`, expected one of `a`,
//! `b`, ..."). That list must equal the keys in the table of the matching docs section,
//! every key must appear in that section's TOML example, and every row must say its type,
//! default and reload behaviour.
//!
//! Authenticators are checked twice: the keys of all kinds together against the union of
//! the per-kind sections, and each kind's own keys, found by asking the loader which keys
//! that kind refuses, against that kind's section.

use std::collections::BTreeSet;
use std::path::Path;

const DOC_PATH: &str = "docs/configuration.md";
const DOC: &str = include_str!("../../docs/configuration.md");

/// What the drift tests compare, for their failure messages.
const DRIFT: &str = "between the config code and docs/configuration.md";

/// A key no table accepts.
const PROBE: &str = "zz_doc_probe";

/// The header row that marks a key table in the docs.
const KEY_TABLE_HEADER: &str = "| key | type | default | reload | meaning |";

/// One config table: the docs heading that documents it, a config holding the probe key in
/// it, and the key path the loader reports the probe at.
struct Table {
    heading: &'static str,
    probe: &'static str,
    path: &'static str,
}

/// Every table except `[authenticators.NAME]`, which is checked per kind.
const TABLES: &[Table] = &[
    Table {
        heading: "Top-level tables",
        probe: "zz_doc_probe = 1",
        path: "zz_doc_probe",
    },
    Table {
        heading: "`[server]`",
        probe: "[server]\nzz_doc_probe = 1",
        path: "server.zz_doc_probe",
    },
    Table {
        heading: "`[server.tls]`",
        probe: "[server.tls]\nzz_doc_probe = 1",
        path: "server.tls.zz_doc_probe",
    },
    Table {
        heading: "`[server.tls.client_auth]`",
        probe: "[server.tls.client_auth]\nzz_doc_probe = 1",
        path: "server.tls.client_auth.zz_doc_probe",
    },
    Table {
        heading: "`[server.lockout]`",
        probe: "[server.lockout]\nzz_doc_probe = 1",
        path: "server.lockout.zz_doc_probe",
    },
    Table {
        heading: "`[server.limits]`",
        probe: "[server.limits]\nzz_doc_probe = 1",
        path: "server.limits.zz_doc_probe",
    },
    Table {
        heading: "`[admin]`",
        probe: "[admin]\nzz_doc_probe = 1",
        path: "admin.zz_doc_probe",
    },
    Table {
        heading: "`[log]`",
        probe: "[log]\nzz_doc_probe = 1",
        path: "log.zz_doc_probe",
    },
    Table {
        heading: "`[upstreams.NAME]`",
        probe: "[upstreams.u]\ntargets = []\nzz_doc_probe = 1",
        path: "upstreams.u.zz_doc_probe",
    },
    Table {
        heading: "`upstreams.NAME.health_check`",
        probe: "[upstreams.u]\ntargets = []\n[upstreams.u.health_check]\nzz_doc_probe = 1",
        path: "upstreams.u.health_check.zz_doc_probe",
    },
    Table {
        heading: "`keys` entries",
        probe: "[authenticators.a]\nkind = \"api_key\"\n\
                keys = [{ id = \"a\", hash = \"b\", zz_doc_probe = 1 }]",
        path: "authenticators.a.keys[0].zz_doc_probe",
    },
    Table {
        heading: "`[[routes]]`",
        probe: "[[routes]]\nupstream = \"u\"\nmatch = { path_prefix = \"/\" }\nzz_doc_probe = 1",
        path: "routes[0].zz_doc_probe",
    },
    Table {
        heading: "`routes[].match`",
        probe: "[[routes]]\nupstream = \"u\"\nmatch = { path_prefix = \"/\", zz_doc_probe = 1 }",
        path: "routes[0].match.zz_doc_probe",
    },
    Table {
        heading: "`routes[].require`",
        probe: "[[routes]]\nupstream = \"u\"\nmatch = { path_prefix = \"/\" }\n\
                require = { zz_doc_probe = 1 }",
        path: "routes[0].require.zz_doc_probe",
    },
];

/// The heading of the section common to every authenticator kind.
const AUTH_HEADING: &str = "`[authenticators.NAME]`";

/// Values tried, in order, until one has the type a key wants (string and duration,
/// integer, boolean, list, map, list of tables), so the loader gets past deserializing.
const VALUES: &[&str] = &[
    "\"1s\"",
    "1",
    "true",
    "[\"1s\"]",
    "{ x = \"y\" }",
    "[{ id = \"a\", hash = \"b\" }]",
];

/// `(key path, message)` of every problem the loader reports for `src`.
fn problems(src: &str) -> Vec<(String, String)> {
    match super::load_str(Path::new("doc-probe.toml"), src) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect(),
    }
}

/// The keys a table accepts, from the loader's message about the probe key at `path`.
fn accepted_keys(probe: &str, path: &str) -> BTreeSet<String> {
    let found = problems(probe);
    let Some((_, message)) = found.iter().find(|(p, _)| p == path) else {
        panic!("the loader reported no problem at `{path}` for\n{probe}\ngot: {found:?}");
    };
    let Some(expected) = message
        .strip_prefix(&format!("unknown key `{PROBE}`, "))
        .and_then(|m| m.strip_prefix("expected "))
    else {
        if message.contains("there are no fields") {
            return BTreeSet::new();
        }
        panic!("unexpected message at `{path}`: {message}");
    };
    let list = expected.strip_prefix("one of ").unwrap_or(expected);
    list.split(", ")
        .flat_map(|part| part.split(" or "))
        .map(|k| k.trim().trim_matches('`').to_string())
        .filter(|k| !k.is_empty())
        .collect()
}

/// Whether `line` is a Markdown code fence.
fn is_fence(line: &str) -> bool {
    line.trim_start().starts_with("```")
}

/// The lines of the section under `heading` (up to the next heading of any level), or
/// `None` when the docs have no such heading. Lines inside code fences are never headings.
fn section(heading: &str) -> Option<Vec<&'static str>> {
    let mut in_fence = false;
    let mut out: Option<Vec<&'static str>> = None;
    for line in DOC.lines() {
        if is_fence(line) {
            in_fence = !in_fence;
        }
        let is_heading = !in_fence && line.starts_with('#');
        if is_heading {
            if out.is_some() {
                break;
            }
            if line.trim_start_matches('#').trim() == heading {
                out = Some(Vec::new());
            }
            continue;
        }
        if let Some(lines) = out.as_mut() {
            lines.push(line);
        }
    }
    out
}

/// The cells of a table row, trimmed.
fn cells(row: &str) -> Vec<&str> {
    let inner = row.trim();
    let inner = inner.strip_prefix('|').unwrap_or(inner);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    inner.split('|').map(str::trim).collect()
}

/// The keys in the key tables of a section, checking each row's shape into `errors`.
fn documented_keys(heading: &str, lines: &[&str], errors: &mut Vec<String>) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut in_table = false;
    for line in lines {
        let t = line.trim();
        if t == KEY_TABLE_HEADER {
            in_table = true;
            continue;
        }
        if !t.starts_with('|') {
            in_table = false;
        }
        if !in_table || t.starts_with("| ---") {
            continue;
        }
        let c = cells(t);
        let Some(name) = c
            .first()
            .and_then(|k| k.strip_prefix('`'))
            .and_then(|k| k.strip_suffix('`'))
            .filter(|k| !k.is_empty() && !k.contains('`'))
        else {
            errors.push(format!(
                "{DOC_PATH}, section {heading}: row `{t}` must start with the key in backticks"
            ));
            continue;
        };
        let empty = c.iter().filter(|cell| cell.is_empty()).count();
        if c.len() != 5 || empty > 0 {
            errors.push(format!(
                "{DOC_PATH}, section {heading}: row for `{name}` needs five non-empty cells \
                 (key | type | default | reload | meaning); it has {} cells, {empty} empty",
                c.len()
            ));
        }
        if !keys.insert(name.to_string()) {
            errors.push(format!(
                "{DOC_PATH}, section {heading}: key `{name}` has two rows"
            ));
        }
    }
    keys
}

/// The contents of the TOML code blocks of a section.
fn toml_blocks(lines: &[&str]) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in lines {
        if is_fence(line) {
            match current.take() {
                Some(block) => blocks.push(block),
                None if line.trim() == "```toml" => current = Some(String::new()),
                None => current = None,
            }
            continue;
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    blocks
}

/// Whether a TOML example sets `key` (`key = ...`, also commented out or inside an inline
/// table) or names it in a table header (`[server.tls]` names `tls`).
fn example_mentions(blocks: &[String], key: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    blocks.iter().any(|block| {
        block.lines().any(|line| {
            let t = line.trim();
            if t.starts_with('[') {
                let header = t.split('#').next().unwrap_or("");
                return header.split(['[', ']', '.']).any(|part| part.trim() == key);
            }
            let bytes = line.as_bytes();
            line.match_indices(key).any(|(at, _)| {
                let before_ok = at == 0 || bytes.get(at - 1).is_none_or(|b| !word(*b));
                let rest = line.get(at + key.len()..).unwrap_or("");
                before_ok && rest.trim_start().starts_with('=')
            })
        })
    })
}

/// Compares one table's keys in the code with its docs section, into `errors`; `hint` is
/// appended to the message about a key the docs lack.
fn compare(heading: &str, code: &BTreeSet<String>, hint: &str, errors: &mut Vec<String>) {
    let Some(lines) = section(heading) else {
        errors.push(format!("{DOC_PATH} has no section headed {heading}"));
        return;
    };
    let docs = documented_keys(heading, &lines, errors);
    for key in code.difference(&docs) {
        errors.push(format!(
            "{DOC_PATH}, section {heading}: key `{key}` is accepted by the config but has no \
             row (add `| `{key}` | type | default | reload | meaning |`){hint}"
        ));
    }
    for key in docs.difference(code) {
        errors.push(format!(
            "{DOC_PATH}, section {heading}: row `{key}` documents a key the config does not \
             accept (remove the row or fix its spelling)"
        ));
    }
    let blocks = toml_blocks(&lines);
    for key in &docs {
        if !example_mentions(&blocks, key) {
            errors.push(format!(
                "{DOC_PATH}, section {heading}: the TOML example does not show `{key}`"
            ));
        }
    }
}

fn fail_on(what: &str, errors: Vec<String>) {
    assert!(
        errors.is_empty(),
        "{} problem(s) {what}:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

#[test]
fn every_table_is_documented_key_for_key() {
    let mut errors = Vec::new();
    for t in TABLES {
        let code = accepted_keys(t.probe, t.path);
        assert!(
            !code.is_empty() || t.heading == "`[[routes]]`",
            "no keys found for {}",
            t.heading
        );
        compare(t.heading, &code, "", &mut errors);
    }
    fail_on(DRIFT, errors);
}

/// Where a problem about `key` of the probed authenticator would be reported.
fn about(path: &str, key: &str) -> bool {
    let base = format!("authenticators.a.{key}");
    path == base
        || path
            .strip_prefix(&base)
            .is_some_and(|rest| rest.starts_with(['.', '[']))
}

/// Whether `kind` accepts `key`: a value of the right type gets past deserializing, and
/// then the loader either refuses the key for this kind or it does not.
fn kind_accepts(kind: &str, key: &str) -> bool {
    for value in VALUES {
        let src = format!("[authenticators.a]\nkind = \"{kind}\"\n{key} = {value}\n");
        let found = problems(&src);
        let mine: Vec<&String> = found
            .iter()
            .filter(|(p, _)| about(p, key))
            .map(|(_, m)| m)
            .collect();
        if mine
            .iter()
            .any(|m| m.contains("does not apply to kind") || m.starts_with("unknown key"))
        {
            return false;
        }
        if mine.iter().any(|m| m.starts_with("invalid type")) {
            continue;
        }
        return true;
    }
    panic!("none of {VALUES:?} has the type of authenticator key `{key}`: extend VALUES");
}

#[test]
fn every_authenticator_key_is_documented_under_its_kinds() {
    let mut errors = Vec::new();
    // The keys of all kinds together (today one union struct; per-kind structs list theirs).
    let mut union = BTreeSet::new();
    for kind in crate::auth::KINDS {
        let probe = format!("[authenticators.a]\nkind = \"{kind}\"\n{PROBE} = 1\n");
        union.extend(accepted_keys(&probe, "authenticators.a.zz_doc_probe"));
    }
    assert!(union.contains("kind"), "`kind` not among {union:?}");

    // `kind` is documented in the common section, every other key under each kind taking it.
    let common: BTreeSet<String> = ["kind".to_string()].into();
    compare(AUTH_HEADING, &common, "", &mut errors);
    let mut documented_somewhere = BTreeSet::new();
    for kind in crate::auth::KINDS {
        let heading = format!("`kind = \"{kind}\"`");
        let own: BTreeSet<String> = union
            .iter()
            .filter(|k| *k != "kind" && kind_accepts(kind, k))
            .cloned()
            .collect();
        compare(
            &heading,
            &own,
            "; if the key is not meant for this kind, the loader must refuse it for the kind",
            &mut errors,
        );
        if let Some(lines) = section(&heading) {
            documented_somewhere.extend(documented_keys(&heading, &lines, &mut Vec::new()));
        }
    }
    for key in union.iter().filter(|k| *k != "kind") {
        if !documented_somewhere.contains(key) {
            errors.push(format!(
                "{DOC_PATH}: authenticator key `{key}` is not documented under any kind"
            ));
        }
    }
    fail_on(DRIFT, errors);
}

#[test]
fn every_toml_example_parses() {
    let mut in_toml = false;
    let mut block = String::new();
    let mut errors = Vec::new();
    for (i, line) in DOC.lines().enumerate() {
        if is_fence(line) {
            if in_toml {
                if let Err(e) = toml::from_str::<toml::Table>(&block) {
                    errors.push(format!(
                        "{DOC_PATH}: the TOML block ending at line {} does not parse: {}",
                        i + 1,
                        e.message()
                    ));
                }
                block.clear();
                in_toml = false;
            } else {
                in_toml = line.trim() == "```toml";
            }
            continue;
        }
        if in_toml {
            block.push_str(line);
            block.push('\n');
        }
    }
    fail_on("in the TOML examples of docs/configuration.md", errors);
}

#[test]
fn doc_links_stay_in_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    if let Ok(dir) = std::fs::read_dir(root.join("docs")) {
        files.extend(
            dir.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "md")),
        );
    }
    let mut errors = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let shown = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (at, _) in text.match_indices("](") {
            let after = &text[at + 2..];
            let Some(end) = after.find(')') else { continue };
            let target = &after[..end];
            if target.contains("://") || target.starts_with("mailto:") {
                errors.push(format!("{shown}: link `{target}` leaves the repository"));
                continue;
            }
            let file_part = target.split('#').next().unwrap_or("");
            if file_part.is_empty() {
                continue;
            }
            let base = file.parent().unwrap_or(root);
            let resolved = base.join(file_part);
            if !resolved.exists() {
                errors.push(format!("{shown}: link `{target}` points to a missing file"));
            } else if !resolved
                .canonicalize()
                .is_ok_and(|p| p.starts_with(root.canonicalize().unwrap_or_default()))
            {
                errors.push(format!("{shown}: link `{target}` leaves the repository"));
            }
        }
    }
    fail_on("in the links of README.md and docs/", errors);
}
