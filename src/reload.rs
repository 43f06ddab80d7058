//! Reload and shutdown: SIGHUP re-reads the config and every file it names, builds a new
//! snapshot and swaps it in, or keeps the running one and counts the failure; SIGTERM and
//! SIGINT drain in-flight requests for up to `shutdown_grace` and end the process.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config;
use crate::gateway::Shared;
use crate::server::Running;
use crate::snapshot::Snapshot;

impl Running {
    /// Re-reads the config file and swaps in a new snapshot; on any error the running
    /// snapshot stays and the error is returned (and counted).
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let result = reload(&self.shared, self.config_path.clone()).await;
        let label = if result.is_ok() { "success" } else { "failure" };
        self.shared
            .metrics
            .reloads
            .get_or_create(&crate::metrics::ResultLabel { result: label })
            .inc();
        match &result {
            Ok(()) => {
                tracing::info!(config = %self.config_path.display(), "configuration reloaded")
            }
            Err(e) => {
                tracing::error!(config = %self.config_path.display(), error = %e, "reload rejected; keeping the running configuration")
            }
        }
        result
    }

    /// Serves until SIGTERM/SIGINT, reloading on SIGHUP. `signals` come from
    /// `Signals::install` before `start`, so a signal sent as soon as the listeners are
    /// reported bound is not met by its default action (SIGHUP would end the process).
    pub async fn serve_until_signal(self, signals: Signals) -> anyhow::Result<()> {
        let Signals {
            mut hup,
            mut term,
            mut int,
        } = signals;
        loop {
            tokio::select! {
                _ = hup.recv() => { let _ = self.reload().await; }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        tracing::info!("shutting down: draining in-flight requests");
        self.shutdown().await;
        Ok(())
    }
}

/// The process signals `serve_until_signal` answers, caught from the moment this is made.
pub struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Catches SIGHUP, SIGTERM and SIGINT (queued until served). Inside a runtime.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

/// Why a reload was refused (the running configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The loader task died.
    #[error("config loader failed: {0}")]
    Loader(#[from] tokio::task::JoinError),
    /// The config or a file it names is invalid (every problem, one per line).
    #[error("{0}")]
    Config(#[from] config::error::ConfigError),
    /// The validated config could not be compiled.
    #[error(transparent)]
    Build(#[from] crate::snapshot::BuildError),
    /// The change is one only a restart may make; nothing of the new config applies.
    #[error("{0} needs a restart; keeping the running configuration")]
    NeedsRestart(&'static str),
}

async fn reload(shared: &Shared, path: PathBuf) -> Result<(), ReloadError> {
    let cfg = tokio::task::spawn_blocking(move || config::load(&path)).await??;
    let current = shared.snapshot.load();
    let (new, old) = (&cfg, &current.config);
    // The listener's protocol is not for a reload to change: a SIGHUP must never turn the
    // HTTPS port into a plaintext one (or the other way round under running clients).
    if new.server.tls.is_some() != old.server.tls.is_some() {
        return Err(ReloadError::NeedsRestart(
            "switching between TLS and insecure_plaintext",
        ));
    }
    for (key, changed) in [
        (
            "server.listen / admin.listen",
            new.server.listen != old.server.listen || new.admin.listen != old.admin.listen,
        ),
        ("server.workers", new.server.workers != old.server.workers),
        (
            "server.limits.max_connections",
            new.server.limits.max_connections != old.server.limits.max_connections,
        ),
        (
            "log",
            new.log.json != old.log.json || new.log.level != old.log.level,
        ),
    ] {
        if changed {
            tracing::warn!(key, "changed, but takes effect only after a restart");
        }
    }
    for w in cfg.warning_lines() {
        tracing::warn!(warning = %w, "config warning");
    }
    let snap = Snapshot::build(cfg, &shared.metrics)?;
    snap.inherit(&current);
    snap.start(&shared.metrics);
    // An upstream the new config no longer has must not keep reporting its last health
    // (a 0 left behind would keep "no healthy target" alerts firing).
    for gone in current
        .upstreams
        .iter()
        .filter(|u| !snap.upstreams.iter().any(|n| n.name == u.name))
    {
        shared.metrics.forget_upstream(&gone.name);
    }
    shared.snapshot.store(Arc::new(snap));
    Ok(())
}
