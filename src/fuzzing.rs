//! Fuzz harnesses for the code written here instead of taken from a crate: the HTTP/1.1
//! upstream client, the path canonicaliser, credential parsing, the XFCC and RFC 4514
//! formatter, and the config loader.
//!
//! Each harness is a `pub fn NAME(data: &[u8])` that a thin libFuzzer target in
//! `fuzz/fuzz_targets/NAME.rs` calls, and that the unit test below runs on every input
//! committed under `fuzz/corpus/NAME/` and `fuzz/regressions/NAME/`, so a stable
//! `cargo test` replays what the fuzzer found (a crash whose fix belongs to another change
//! is listed in `fuzz/regressions/open.txt` and must still fail until it lands). A
//! harness checks more than "no panic": an invariant a wrong parse breaks
//! (split-invariance, a round trip, an independent reading of the same rule), and fails
//! with `assert!` when one does not hold.
//!
//! Not part of the API: public only so the fuzz targets can link it. `fuzz/README.md`
//! says how to run them.

mod config;
mod credentials;
mod h1;
mod path;
mod xfcc;

pub use config::config;
pub use credentials::credentials;
pub use h1::{h1_request_head, h1_response};
pub use path::path;
pub use xfcc::xfcc;

/// A harness: panics when the input breaks an invariant.
pub type Harness = fn(&[u8]);

/// Every harness by target name (the names of `fuzz/fuzz_targets/*.rs` and the corpus
/// directories).
pub const TARGETS: [(&str, Harness); 6] = [
    ("h1_response", h1_response),
    ("h1_request_head", h1_request_head),
    ("path", path),
    ("credentials", credentials),
    ("xfcc", xfcc),
    ("config", config),
];

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::{Harness, TARGETS};

    /// The files of `fuzz/<kind>/<target>/`, sorted (none when it does not exist).
    fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz")
            .join(kind)
            .join(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.is_file());
        files.sort();
        files
    }

    /// Runs one harness on each input; every failure is reported with its file.
    fn replay(target: &str, run: Harness, files: &[PathBuf]) -> Vec<String> {
        let mut failed = Vec::new();
        for f in files {
            let data = std::fs::read(f).unwrap();
            if std::panic::catch_unwind(|| run(&data)).is_err() {
                failed.push(format!("{target}: {}", f.display()));
            }
        }
        failed
    }

    #[test]
    fn committed_corpus_replays_cleanly() {
        let mut failed = Vec::new();
        for (target, run) in TARGETS {
            let corpus = inputs("corpus", target);
            assert!(!corpus.is_empty(), "no corpus for {target}");
            failed.extend(replay(target, run, &corpus));
        }
        assert!(
            failed.is_empty(),
            "failing corpus inputs:\n{}",
            failed.join("\n")
        );
    }

    /// `fuzz/regressions/open.txt`: `TARGET/FILE` of each crash whose fix has not landed
    /// yet (text after `#` is a comment: where the fix belongs).
    fn open_crashes() -> Vec<String> {
        let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/open.txt");
        std::fs::read_to_string(list)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default().trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    #[test]
    fn fixed_crashes_stay_fixed_and_open_ones_still_fail() {
        let open = open_crashes();
        let (mut failed, mut now_passing) = (Vec::new(), Vec::new());
        for (target, run) in TARGETS {
            for f in inputs("regressions", target) {
                let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                let id = format!("{target}/{name}");
                let fails = !replay(target, run, std::slice::from_ref(&f)).is_empty();
                match (open.contains(&id), fails) {
                    (false, true) => failed.push(id),
                    (true, false) => now_passing.push(id),
                    _ => {}
                }
            }
        }
        assert!(
            failed.is_empty(),
            "failing regressions:\n{}",
            failed.join("\n")
        );
        assert!(
            now_passing.is_empty(),
            "fixed: delete these lines from fuzz/regressions/open.txt:\n{}",
            now_passing.join("\n")
        );
        for id in &open {
            let known = TARGETS.iter().any(|(t, _)| {
                id.strip_prefix(t)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .is_some_and(|file| inputs("regressions", t).iter().any(|p| p.ends_with(file)))
            });
            assert!(
                known,
                "fuzz/regressions/open.txt names {id}, which does not exist"
            );
        }
    }

    #[test]
    fn every_target_has_a_fuzz_target_file() {
        for (target, _) in TARGETS {
            let file = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/fuzz_targets")
                .join(format!("{target}.rs"));
            assert!(file.is_file(), "{} missing", file.display());
        }
    }
}
