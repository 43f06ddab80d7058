//! The shipped examples (`config/examples/*.toml`) stay valid: each passes `portcullis
//! check` once `portcullis certs --out certs` has run, exactly as their comments promise a
//! reader who starts in the repository root. A new example is covered by being there.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// `config/examples` of the repository.
fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples")
}

/// Copies every file of `from` (not recursing) into `to`.
fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn every_example_config_passes_check() {
    // A stand-in repository root: fresh certificates from the binary in `certs/`, the
    // examples and the users/secret files they name in `config/examples/`. The examples'
    // relative paths (`certs/server.crt`, `config/examples/users.htpasswd`) resolve from
    // the working directory, as for a reader in the repository root; nothing is read from
    // the real checkout's `certs/`.
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["certs", "--out", "certs"])
        .current_dir(root.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "portcullis certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copies = root.path().join("config/examples");
    copy_files(&examples_dir(), &copies);

    let mut examples: Vec<PathBuf> = std::fs::read_dir(&copies)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    examples.sort();
    assert!(
        !examples.is_empty(),
        "no *.toml files in {}",
        examples_dir().display()
    );

    let mut failures = Vec::new();
    for example in &examples {
        let relative = example.strip_prefix(root.path()).unwrap();
        let out = Command::new(BIN)
            .arg("check")
            .arg("--config")
            .arg(relative)
            .current_dir(root.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.code() != Some(0) || stdout.trim() != "ok" {
            failures.push(format!(
                "{}: exit {:?}\n{}{}",
                relative.display(),
                out.status.code(),
                stdout,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "examples that fail `portcullis check`:\n{}",
        failures.join("\n")
    );
}
