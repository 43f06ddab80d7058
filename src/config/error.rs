//! Config problems: collected, never short-circuited, and printed one per line as
//! `FILE:LINE: KEY.PATH: message` with 0-based indexes, the line found by walking the
//! spanned TOML document along the key path.

use std::fmt;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// Every problem found while loading one config file.
#[derive(Debug)]
pub struct ConfigError {
    /// The problems, in the order they were found.
    pub problems: Vec<Problem>,
}

/// One problem: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line, 0 when the file could not be read at all.
    pub line: usize,
    /// Key path such as `routes[0].auth`; empty for syntax errors.
    pub path: String,
    /// What is wrong and, where possible, what to do.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.file.display(),
                self.line,
                self.path,
                self.message
            )
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The sink validation writes into: key path and message, lines resolved at the end.
#[derive(Debug, Default)]
pub struct Problems {
    items: Vec<(String, String)>,
}

impl Problems {
    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.items.push((path.into(), message.into()));
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Number of problems recorded so far.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Resolves every key path to a line of `src` and builds the error.
    pub fn into_error(self, file: &Path, src: &str, doc: Option<&DeTable<'_>>) -> ConfigError {
        let problems = self
            .items
            .into_iter()
            .map(|(path, message)| Problem {
                file: file.to_path_buf(),
                line: doc.map_or(1, |d| line_of(src, span_of_path(d, &path))),
                path,
                message,
            })
            .collect();
        ConfigError { problems }
    }
}

/// 1-based line of a byte offset.
pub fn line_of(src: &str, offset: usize) -> usize {
    let end = offset.min(src.len());
    src.as_bytes()
        .get(..end)
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
        + 1
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => part.split_at(i),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(close) = stripped.find(']') else {
                break;
            };
            let (idx, tail) = stripped.split_at(close);
            if let Ok(i) = idx.parse() {
                out.push(Seg::Index(i));
            }
            rest = tail.get(1..).unwrap_or("");
        }
    }
    out
}

/// Start offset of the deepest element of `path` present in the document (the key itself
/// where there is one, so the line shown is the line the user wrote the key on).
fn span_of_path(doc: &DeTable<'_>, path: &str) -> usize {
    let mut best = 0usize;
    let mut table: Option<&DeTable<'_>> = Some(doc);
    let mut value: Option<&DeValue<'_>> = None;
    for seg in segments(path) {
        match seg {
            Seg::Key(k) => {
                let t = match (table, value) {
                    (Some(t), _) => t,
                    (None, Some(DeValue::Table(t))) => t,
                    _ => break,
                };
                let Some((key, v)) = t.iter().find(|(key, _)| key.get_ref().as_ref() == k) else {
                    break;
                };
                best = key.span().start;
                table = None;
                value = Some(v.get_ref());
            }
            Seg::Index(i) => {
                let Some(DeValue::Array(a)) = value else {
                    break;
                };
                let Some(item) = a.get(i) else { break };
                best = item.span().start;
                table = None;
                value = Some(item.get_ref());
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_nested_paths_to_lines() {
        let src = "[server]\nlisten = [\"x\"]\n\n[[routes]]\nname = \"a\"\n\n[[routes]]\nname = \"b\"\nauth = \"z\"\n";
        let doc = DeTable::parse(src).unwrap();
        let d = doc.get_ref();
        assert_eq!(line_of(src, span_of_path(d, "server.listen")), 2);
        assert_eq!(line_of(src, span_of_path(d, "routes[1].auth")), 9);
        assert_eq!(line_of(src, span_of_path(d, "routes[1].missing")), 7);
        assert_eq!(line_of(src, span_of_path(d, "routes[0]")), 4);
    }

    #[test]
    fn prints_file_line_path_message() {
        let p = Problem {
            file: "c.toml".into(),
            line: 3,
            path: "routes[0].auth".into(),
            message: "boom".into(),
        };
        assert_eq!(p.to_string(), "c.toml:3: routes[0].auth: boom");
    }
}
