//! Hot reload: watch the policy directory and swap in each new set that compiles.
//!
//! The directory itself is watched (recursively), not the files: a Kubernetes ConfigMap volume
//! updates by re-pointing its `..data` symlink, which replaces every file at once without
//! touching the paths a file watch would hold. Compilation runs on the watcher's own thread, so
//! requests never wait for it.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::{PolicyLoadError, PolicySource, PolicyStore};

/// Keeps the watch alive; dropping it stops watching and ends the reload thread.
pub struct WatchGuard {
    watcher: Option<RecommendedWatcher>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        // Dropping the watcher closes the event channel, which ends the thread's loop.
        self.watcher.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl PolicyStore {
    /// Watch `dir` and reload the set after each burst of changes settles.
    pub fn watch(self: &Arc<Self>, dir: &Path) -> Result<WatchGuard, PolicyLoadError> {
        let shown = dir.display().to_string();
        let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(tx)
            .map_err(|e| PolicyLoadError::one(&shown, None, format!("cannot watch: {e}")))?;
        watcher
            .watch(dir, RecursiveMode::Recursive)
            .map_err(|e| PolicyLoadError::one(&shown, None, format!("cannot watch: {e}")))?;
        let store = Arc::downgrade(self);
        let source = PolicySource::Dir(dir.to_path_buf());
        let debounce = Duration::from_millis(self.config.reload_debounce_ms);
        let thread = std::thread::Builder::new()
            .name("policy-reload".into())
            .spawn(move || reload_loop(&rx, &store, &source, debounce))
            .map_err(|e| {
                PolicyLoadError::one(&shown, None, format!("cannot start watcher: {e}"))
            })?;
        tracing::info!(dir = %shown, "watching policy directory");
        Ok(WatchGuard {
            watcher: Some(watcher),
            thread: Some(thread),
        })
    }
}

fn reload_loop(
    rx: &mpsc::Receiver<notify::Result<notify::Event>>,
    store: &Weak<PolicyStore>,
    source: &PolicySource,
    debounce: Duration,
) {
    while let Ok(event) = rx.recv() {
        if !is_change(&event) {
            continue;
        }
        // Debounce: an editor save or a ConfigMap swap is a burst of events; reload once after.
        loop {
            match rx.recv_timeout(debounce) {
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let Some(store) = store.upgrade() else {
            return;
        };
        // The outcome is logged, counted and kept for /readyz by `reload` itself.
        let _ = store.reload(source);
    }
}

/// Reading the files during a reload produces access events; reacting to them would loop.
fn is_change(event: &notify::Result<notify::Event>) -> bool {
    match event {
        Ok(e) => !matches!(e.kind, EventKind::Access(_)),
        Err(err) => {
            tracing::warn!(error = %err, "policy directory watch error");
            false
        }
    }
}
