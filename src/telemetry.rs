//! Logging: a tracing subscriber (JSON lines or text) and the one access-log event per
//! request. The access log carries the path without its query string and never a
//! credential, header value or body.
//!
//! Access-log lines are batched: they go into an in-memory buffer that a background thread
//! writes to stderr every 50 ms (or at once when 64 KiB accumulate), so a request costs a
//! `memcpy`, not a `write(2)`. Every other event flushes that buffer and is written
//! immediately, so the order on stderr is kept and warnings are never delayed. `flush()`
//! runs on exit; a crash can lose at most the last 50 ms of access lines.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

const ACCESS_TARGET: &str = "portcullis::access";
const FLUSH_EVERY: Duration = Duration::from_millis(50);
const FLUSH_AT: usize = 64 * 1024;

/// Pending access-log lines.
static PENDING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Writes the pending access-log lines to stderr.
pub fn flush() {
    let Ok(mut pending) = PENDING.lock() else {
        return;
    };
    if !pending.is_empty() {
        let _ = std::io::stderr().lock().write_all(&pending);
        pending.clear();
    }
}

/// Picks the writer per event: access lines are buffered, everything else is direct.
#[derive(Clone, Copy)]
struct LogWriter;

/// One event's writer.
enum EventWriter {
    /// An access-log line, appended to `PENDING`.
    Access,
    /// Any other event, written straight to stderr after the pending lines.
    Direct,
}

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Ok(mut pending) = PENDING.lock() else {
            return std::io::stderr().write(buf);
        };
        match self {
            EventWriter::Access => {
                pending.extend_from_slice(buf);
                if pending.len() >= FLUSH_AT {
                    let _ = std::io::stderr().lock().write_all(&pending);
                    pending.clear();
                }
                Ok(buf.len())
            }
            EventWriter::Direct => {
                let mut err = std::io::stderr().lock();
                if !pending.is_empty() {
                    let _ = err.write_all(&pending);
                    pending.clear();
                }
                err.write(buf)
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter::Direct
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        if meta.target() == ACCESS_TARGET {
            EventWriter::Access
        } else {
            EventWriter::Direct
        }
    }
}

use crate::config::Log;

/// Installs the global subscriber. Safe to call once; later calls are ignored.
pub fn init(log: &Log) {
    let filter = EnvFilter::try_from_env("PORTCULLIS_LOG")
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only where a person reads it: never into a file or a journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(LogWriter);
    let installed = if log.json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
    if installed.is_ok() {
        let _ = std::thread::Builder::new()
            .name("portcullis-log".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    flush();
                }
            });
    }
}

/// Installs a text subscriber at `info` for commands that run before a config is loaded.
pub fn init_default() {
    init(&Log {
        json: false,
        level: "info".into(),
    });
}

/// One finished request, as the access log records it.
pub struct Access<'a> {
    /// Request id.
    pub request_id: &'a str,
    /// Route name or `-`.
    pub route: &'a str,
    /// Method.
    pub method: &'a str,
    /// Path without query.
    pub path: &'a str,
    /// Status sent.
    pub status: u16,
    /// Seconds from head received to response head.
    pub duration: f64,
    /// Upstream name or `-`.
    pub upstream: &'a str,
    /// Admitting methods or `-`.
    pub auth_method: &'a str,
    /// Subject or empty.
    pub subject: &'a str,
    /// Who a refused credential claimed to be, or empty.
    pub attempted: &'a str,
    /// The client's address: the TCP peer, or what a trusted proxy forwarded for it.
    pub client_ip: std::net::IpAddr,
    /// The TCP peer.
    pub peer_ip: std::net::IpAddr,
}

/// Emits the access-log event.
pub fn access(a: &Access<'_>) {
    tracing::info!(
        target: ACCESS_TARGET,
        request_id = a.request_id,
        route.name = a.route,
        http.method = a.method,
        url.path = a.path,
        http.status = a.status,
        duration_ms = a.duration * 1000.0,
        upstream.name = a.upstream,
        auth.method = a.auth_method,
        auth.subject = a.subject,
        auth.attempted = a.attempted,
        client.ip = %a.client_ip,
        network.peer.address = %a.peer_ip,
        "request"
    );
}

#[cfg(test)]
mod tests {
    /// The JSON formatter writes `timestamp`, `level`, `target` and `message` itself, at
    /// the top level next to the event's fields: a field of the same name gives a line
    /// with a key twice, and JSON parsers keep only one of them. No event may use one.
    #[test]
    fn no_event_field_repeats_a_key_the_json_formatter_writes() {
        let mut files = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
        let mut offending = Vec::new();
        while let Some(p) = files.pop() {
            if p.is_dir() {
                files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if p.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            for (n, line) in text.lines().enumerate() {
                let fields = line
                    .split(['(', ','])
                    .map(str::trim_start)
                    .filter(|f| !f.starts_with("//"));
                for f in fields {
                    let Some((key, _)) = f.split_once(" = ") else {
                        continue;
                    };
                    if ["timestamp", "level", "target", "message"].contains(&key.trim()) {
                        offending.push(format!("{}:{}: {}", p.display(), n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(offending.is_empty(), "{offending:#?}");
    }
}
