//! Serving certificate rotation without a restart.
//!
//! The certificate's *directory* is watched, not the files: a Kubernetes Secret volume updates by
//! writing a new timestamped directory and swapping the `..data` symlink, which never touches the
//! paths a file watch holds (`tls.crt` is a symlink into `..data`). Any change in the directory
//! re-reads the certificate, key and client CA together after a short debounce; a periodic
//! re-check backs the watch up (an inotify queue overflow, a directory replaced whole).
//!
//! The new pair is swapped into the [`ArcSwap`] the listener reads per connection, so new
//! connections get it and connections already open finish on the old one. A pair that does not
//! load (unparseable, key not matching the certificate) is refused: the old one keeps serving,
//! the error is logged, counted and shown in `/readyz` detail (still ready: a valid certificate
//! serves).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{CertError, TlsFiles, TlsPem, server_config_from};
use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// How quickly a change is picked up.
#[derive(Debug, Clone, Copy)]
pub struct ReloadTiming {
    /// Quiet time after the last event before reading: a Secret update is a burst of events.
    pub debounce: Duration,
    /// Re-read this often even without an event.
    pub recheck: Duration,
}

impl Default for ReloadTiming {
    fn default() -> Self {
        ReloadTiming {
            debounce: Duration::from_millis(200),
            recheck: Duration::from_secs(60),
        }
    }
}

/// Where a reload's outcome is reported.
/// Called with a newly loaded private key (PEM).
pub type KeyListener = Arc<dyn Fn(&[u8]) + Send + Sync>;

#[derive(Clone)]
pub struct ReloadSinks {
    pub tls: Arc<ArcSwap<rustls::ServerConfig>>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// Told the new private key (PEM) after each successful reload; the mutation's seal is keyed
    /// from it.
    pub on_new_key: Option<KeyListener>,
}

/// Start watching; the task ends when `shutdown` flips. `loaded` is what is serving now.
///
/// When the directory cannot be watched (inotify limits, an unsupported filesystem), the
/// periodic re-check still rotates the certificate, only later: a warning, not a failed start.
pub fn spawn(
    files: TlsFiles,
    loaded: TlsPem,
    sinks: ReloadSinks,
    timing: ReloadTiming,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let (tx, mut events) = mpsc::unbounded_channel::<()>();
    let watcher = match watch_dirs(&files, tx) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, every = ?timing.recheck, "falling back to re-reading the serving certificate periodically");
            None
        }
    };
    let mut state = State {
        files,
        serving: loaded,
        refused: None,
        read_error: None,
        sinks,
    };
    tokio::spawn(async move {
        // Owned by the task: dropping it would stop the events.
        let _watcher: Option<RecommendedWatcher> = watcher;
        let mut recheck = tokio::time::interval(timing.recheck);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        recheck.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(()) = events.recv() => {
                    // Debounce: wait until the burst is over, then read once. Capped, so a
                    // directory that never stops changing still gets read.
                    let cap = tokio::time::Instant::now() + timing.debounce * 25;
                    while tokio::time::Instant::now() < cap
                        && let Ok(Some(())) = tokio::time::timeout(timing.debounce, events.recv()).await
                    {}
                    state.reload();
                }
                _ = recheck.tick() => state.reload(),
            }
        }
    })
}

fn watch_dirs(
    files: &TlsFiles,
    tx: mpsc::UnboundedSender<()>,
) -> Result<RecommendedWatcher, CertError> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        // An error (e.g. queue overflow) may hide a change: treat it as one.
        if event.as_ref().map_or(true, is_change) {
            let _ = tx.send(());
        }
    })
    .map_err(|e| watch_error(files, &e))?;
    for dir in watched_dirs(files) {
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| watch_error(files, &e))?;
        tracing::info!(dir = %dir.display(), "watching the serving certificate's directory");
    }
    Ok(watcher)
}

fn watch_error(files: &TlsFiles, e: &notify::Error) -> CertError {
    CertError::Tls(format!(
        "cannot watch the directory of {}: {e}",
        files.cert.display()
    ))
}

/// The directories holding the certificate, key and client CA.
fn watched_dirs(files: &TlsFiles) -> BTreeSet<PathBuf> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    })
    .collect()
}

/// Reads (our own included) are not changes; everything else may be.
fn is_change(event: &Event) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

struct State {
    files: TlsFiles,
    /// The bytes of the pair serving now.
    serving: TlsPem,
    /// The bytes of the last pair refused, so a periodic re-check does not count it again.
    refused: Option<TlsPem>,
    /// The last read error, for the same reason.
    read_error: Option<String>,
    sinks: ReloadSinks,
}

impl State {
    fn reload(&mut self) {
        let pem = match TlsPem::read(&self.files) {
            Ok(pem) => pem,
            Err(e) => {
                // A file missing or unreadable: count each distinct failure once.
                let message = e.to_string();
                if self.read_error.as_deref() != Some(message.as_str()) {
                    self.refuse(None, &e);
                    self.read_error = Some(message);
                }
                return;
            }
        };
        self.read_error = None;
        if pem == self.serving || Some(&pem) == self.refused.as_ref() {
            return;
        }
        match server_config_from(&self.files, &pem) {
            Ok(config) => {
                self.serving = pem;
                self.refused = None;
                // Counted before the swap, so whoever sees the new certificate sees the count.
                self.sinks
                    .metrics
                    .reload(&self.sinks.metrics.cert_reloads, true);
                let detail = format!(
                    "{}, reloaded {}",
                    super::describe_serving(&self.files.cert, &self.serving.cert),
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
                tracing::info!(cert = %self.files.cert.display(), "serving certificate reloaded");
                self.sinks.readiness.set("tls", Ok(detail));
                self.sinks.tls.store(Arc::new(config));
                if let Some(on_new_key) = &self.sinks.on_new_key {
                    on_new_key(&self.serving.key);
                }
            }
            Err(e) => self.refuse(Some(pem), &e),
        }
    }

    fn refuse(&mut self, pem: Option<TlsPem>, error: &CertError) {
        let message = error.to_string();
        if pem.is_some() {
            self.refused = pem;
        }
        self.sinks
            .metrics
            .reload(&self.sinks.metrics.cert_reloads, false);
        tracing::error!(error = %message, "new serving certificate refused; the previous one keeps serving");
        self.sinks.readiness.set(
            "tls",
            Ok(format!(
                "{}; the previous pair keeps serving: last reload failed: {message}",
                super::describe_serving(&self.files.cert, &self.serving.cert)
            )),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    #[test]
    fn reads_are_not_changes() {
        let read = Event::new(EventKind::Access(AccessKind::Close(AccessMode::Read)));
        let open = Event::new(EventKind::Access(AccessKind::Open(AccessMode::Any)));
        assert!(!is_change(&read) && !is_change(&open));
        for kind in [
            EventKind::Create(CreateKind::Any),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Any,
        ] {
            assert!(is_change(&Event::new(kind)), "{kind:?}");
        }
    }

    #[test]
    fn watches_each_directory_once() {
        let files = TlsFiles {
            cert: "tls/tls.crt".into(),
            key: "tls/tls.key".into(),
            client_ca: Some("ca.crt".into()),
        };
        let dirs: Vec<PathBuf> = watched_dirs(&files).into_iter().collect();
        assert_eq!(dirs, vec![PathBuf::from("."), PathBuf::from("tls")]);
    }
}
