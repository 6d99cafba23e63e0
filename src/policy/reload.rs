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
            .stack_size(super::EVALUATION_STACK_BYTES)
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
    let PolicySource::Dir(root) = source else {
        return;
    };
    while let Ok(event) = rx.recv() {
        if !is_change(&event, root) {
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

/// Reading the files during a reload produces access events; reacting to them would loop. And
/// the kubelet writes each new ConfigMap generation into a hidden `..<timestamp>` directory before
/// it swaps the `..data` link: those staging writes change nothing that is read (hidden entries
/// are skipped), so only the swap, or a change to a visible file, triggers a reload.
fn is_change(event: &notify::Result<notify::Event>, root: &Path) -> bool {
    match event {
        Ok(e) => {
            !matches!(e.kind, EventKind::Access(_))
                && (e.paths.is_empty() || e.paths.iter().any(|p| is_read(p, root)))
        }
        Err(err) => {
            tracing::warn!(error = %err, "policy directory watch error");
            false
        }
    }
}

/// Whether `path` is something a reload reads: not under a hidden entry other than `..data`.
/// Paths outside `root` (or when the watcher reports none) count, to be safe.
fn is_read(path: &Path, root: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(root) else {
        return true;
    };
    relative.components().all(|c| {
        let name = c.as_os_str().to_string_lossy();
        !name.starts_with('.') || name == "..data"
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Result<notify::Event> {
        let mut e = notify::Event::new(kind);
        for p in paths {
            e = e.add_path(p.into());
        }
        Ok(e)
    }

    #[test]
    fn staging_writes_are_ignored_and_the_swap_is_not() {
        let root = Path::new("/etc/policies");
        let write = EventKind::Create(CreateKind::File);
        assert!(!is_change(
            &event(write, &["/etc/policies/..2026_11_28/a.rego"]),
            root
        ));
        assert!(!is_change(
            &event(write, &["/etc/policies/..data_tmp"]),
            root
        ));
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(is_change(
            &event(
                rename,
                &["/etc/policies/..data_tmp", "/etc/policies/..data"]
            ),
            root
        ));
        assert!(is_change(&event(write, &["/etc/policies/a.rego"]), root));
        assert!(is_change(
            &event(write, &["/etc/policies/sub/a.rego"]),
            root
        ));
        assert!(!is_change(
            &event(write, &["/etc/policies/.git/index"]),
            root
        ));
        let read = EventKind::Access(notify::event::AccessKind::Any);
        assert!(!is_change(&event(read, &["/etc/policies/a.rego"]), root));
    }
}
