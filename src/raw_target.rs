//! The raw HTTP/1.1 request target, checked before the URI parser sees it.
//!
//! The parser hyper uses (the `http` crate) drops a fragment without a word: `GET
//! /public#/../admin` arrives as `/public`. What is routed is then what is forwarded, so
//! nothing is bypassed, but a `#` has no place in a request target (RFC 9112 §3.2) and the
//! contract answers it 400. This scanner watches the bytes an HTTP/1.1 connection reads,
//! and records the target of every request line that carries a `#` (the part before it,
//! which is what the request will show); the gateway refuses the request whose target is
//! the oldest one recorded.
//!
//! Cost: one `memchr` for `#` per read; a read without one costs nothing else, unless its
//! last line is the start of a request line (kept, so a line split over two reads is
//! seen whole).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Longest request line followed across reads (hyper refuses longer targets anyway).
const MAX_LINE: usize = 8 * 1024;
/// Targets waiting for their request; beyond this the connection is misbehaving.
const MAX_PENDING: usize = 16;

/// Per-connection scanner state, owned by the connection's reader.
#[derive(Default)]
pub(crate) struct Scanner {
    /// The unfinished last line of earlier reads, when it may be a request line.
    carry: Vec<u8>,
}

/// Targets seen with a `#`, oldest first, shared by a connection's reader and the
/// gateway. Empty on every well-behaved connection, so the gateway's check is one load.
#[derive(Debug, Default)]
pub struct Fragments {
    any: AtomicBool,
    pending: Mutex<VecDeque<Vec<u8>>>,
}

impl Fragments {
    fn push(&self, target: &[u8]) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() < MAX_PENDING {
            p.push_back(target.to_vec());
        }
        self.any.store(true, Ordering::Release);
    }

    /// Whether the request whose parsed target is `uri` came with a `#`. Consumes the
    /// record.
    pub fn take(&self, uri: &http::Uri) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        // As the request line wrote it: path and query (origin form), or the whole URI.
        let target = match uri.scheme() {
            Some(_) => uri.to_string(),
            None => uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_owned(),
        };
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let found = p.iter().position(|t| t == target.as_bytes());
        if let Some(i) = found {
            p.remove(i);
        }
        self.any.store(!p.is_empty(), Ordering::Release);
        found.is_some()
    }
}

impl Scanner {
    /// Looks at bytes just read off the connection, recording targets in `out`.
    pub(crate) fn scan(&mut self, read: &[u8], out: &Fragments) {
        let last_nl = memchr::memrchr(b'\n', read);
        if memchr::memchr(b'#', read).is_some() || !self.carry.is_empty() {
            self.scan_lines(read, out);
        }
        // Keep the unfinished last line only if it can be the start of a request line.
        let tail = match last_nl {
            Some(i) => read.get(i + 1..).unwrap_or_default(),
            None if !self.carry.is_empty() => {
                if self.carry.len() + read.len() > MAX_LINE {
                    self.carry.clear();
                } else {
                    self.carry.extend_from_slice(read);
                }
                return;
            }
            None => read,
        };
        self.carry.clear();
        if !tail.is_empty() && tail.len() <= MAX_LINE && may_start_request_line(tail) {
            self.carry.extend_from_slice(tail);
        }
    }

    fn scan_lines(&mut self, read: &[u8], out: &Fragments) {
        let mut rest = read;
        let mut first = true;
        while !rest.is_empty() {
            let (line, more) = match memchr::memchr(b'\n', rest) {
                Some(i) => (
                    rest.get(..=i).unwrap_or(rest),
                    rest.get(i + 1..).unwrap_or_default(),
                ),
                None => return, // unfinished: kept in `carry` by the caller
            };
            if first && !self.carry.is_empty() {
                let mut whole = std::mem::take(&mut self.carry);
                whole.extend_from_slice(line);
                check_line(&whole, out);
            } else if memchr::memchr(b'#', line).is_some() {
                check_line(line, out);
            }
            first = false;
            rest = more;
        }
    }
}

fn check_line(line: &[u8], out: &Fragments) {
    if let Some(target) = fragment_target(line) {
        out.push(target);
    }
}

/// Whether `b` can begin a request line: a method token, perhaps a space and a target.
fn may_start_request_line(b: &[u8]) -> bool {
    let method = b.iter().take_while(|c| is_tchar(**c)).count();
    method > 0 && b.get(method).is_none_or(|c| *c == b' ')
}

/// The target before the `#` if `line` is `METHOD SP target-with-# SP HTTP/1.x CRLF`.
fn fragment_target(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let method = line.iter().take_while(|c| is_tchar(**c)).count();
    if method == 0 {
        return None;
    }
    let rest = line.get(method..)?.strip_prefix(b" ")?;
    let (target, version) = rest.split_at(memchr::memchr(b' ', rest)?);
    if !matches!(version, b" HTTP/1.1" | b" HTTP/1.0") {
        return None;
    }
    let hash = memchr::memchr(b'#', target)?;
    target.get(..hash)
}

/// RFC 9110 `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> http::Uri {
        s.parse().unwrap()
    }

    fn scanned(reads: &[&[u8]]) -> Fragments {
        let (mut s, out) = (Scanner::default(), Fragments::default());
        for r in reads {
            s.scan(r, &out);
        }
        out
    }

    #[test]
    fn records_targets_with_a_fragment_however_the_line_is_split() {
        let line: &[u8] = b"GET /public#/../admin HTTP/1.1\r\nHost: x\r\n\r\n";
        for split in 0..line.len() {
            let (a, b) = line.split_at(split);
            let s = scanned(&[a, b]);
            assert!(s.take(&uri("/public")), "split at {split}");
            assert!(!s.take(&uri("/public")));
        }
        let s = scanned(&[b"GET https://h/p?q=1#f HTTP/1.1\r\n\r\n"]);
        assert!(s.take(&uri("https://h/p?q=1")));
    }

    #[test]
    fn ignores_fragments_elsewhere() {
        for reads in [
            &[&b"GET /a HTTP/1.1\r\nCookie: a#b\r\nX-Y: GET /b#c HTTP/1.1\r\n\r\n"[..]][..],
            &[&b"POST /a HTTP/1.1\r\nContent-Length: 9\r\n\r\nsee /b#c\n"[..]],
            &[&b"GET /a#b HTTP/2.0\r\n"[..]],
            &[&b"GET /a HTTP/1.1\r\n"[..], b"#\r\n"],
        ] {
            let s = scanned(reads);
            assert!(!s.any.load(Ordering::Relaxed), "{:?}", reads);
        }
    }

    #[test]
    fn takes_only_the_request_it_recorded() {
        let s = scanned(&[b"GET /a#x HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"]);
        assert!(!s.take(&uri("/b")));
        assert!(s.take(&uri("/a")));
        assert!(!s.take(&uri("/a")));
    }
}
