//! Secrets: exactly one of inline, `*_file` or `*_env`, resolved at load time into a
//! `Secret` that never prints its content.

use std::fmt;
use std::path::Path;

use super::error::Problems;

/// A secret value. `Debug` prints `[redacted]`; there is no `Display` or `Serialize`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    /// The secret itself; call sites are the only places it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The three ways a secret can be given.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    /// `NAME = "..."`.
    pub inline: Option<&'a String>,
    /// `NAME_file = "path"`.
    pub file: Option<&'a String>,
    /// `NAME_env = "VAR"`.
    pub env: Option<&'a String>,
}

/// Resolves `NAME` / `NAME_file` / `NAME_env`; records a problem when none or several are
/// set (when `required`) or when the file or variable cannot be read.
pub fn resolve(
    problems: &mut Problems,
    base: &str,
    name: &str,
    src: Sources<'_>,
    config_dir: &Path,
    required: bool,
) -> Option<Secret> {
    let Sources { inline, file, env } = src;
    let given = [inline.is_some(), file.is_some(), env.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if given > 1 {
        problems.push(
            format!("{base}.{name}"),
            format!("give exactly one of `{name}`, `{name}_file` or `{name}_env`"),
        );
        return None;
    }
    if let Some(v) = inline {
        return Some(Secret(v.clone()));
    }
    if let Some(f) = file {
        let p = super::resolve_path(config_dir, f);
        return match std::fs::read_to_string(&p) {
            Ok(s) => Some(Secret(s.trim_end_matches(['\n', '\r']).to_string())),
            Err(e) => {
                problems.push(
                    format!("{base}.{name}_file"),
                    format!("cannot read secret file {}: {e}", p.display()),
                );
                None
            }
        };
    }
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(s) if !s.is_empty() => Some(Secret(s)),
            _ => {
                problems.push(
                    format!("{base}.{name}_env"),
                    format!("environment variable {var} is not set or empty"),
                );
                None
            }
        };
    }
    if required {
        problems.push(
            base.to_string(),
            format!("missing `{name}` (or `{name}_file` / `{name}_env`)"),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("hunter2".into())), "[redacted]");
    }

    #[test]
    fn rejects_two_sources() {
        let mut p = Problems::default();
        let v = "x".to_string();
        let src = Sources {
            inline: Some(&v),
            file: None,
            env: Some(&v),
        };
        assert!(resolve(&mut p, "a", "client_secret", src, Path::new("."), true).is_none());
        assert_eq!(p.len(), 1);
    }
}
