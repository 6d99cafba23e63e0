//! The shadow set (`serve --shadow-policies DIR`): a candidate policy set judged on live
//! `/validate` traffic after each answer has been sent, so that its cost never reaches the API
//! server. Its evaluations are bounded by a fixed number of slots: when they are all taken a
//! review is simply not shadowed, and counted, so a burst can never queue work without limit.
//!
//! The evaluations run on a thread of their own at the lowest CPU priority, not on the server's
//! workers: an answer already sent cannot be delayed, but the next requests could, if the
//! shadow set took turns with them on the same threads. On a busy machine the kernel now runs
//! the live requests first and the shadow set gets the time left over (docs/performance.md,
//! "Shadow set", has the figures before and after).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::config::ShadowConfig;
use crate::disagreement::Change;
use crate::metrics::{Metrics, ShadowLabels};
use crate::policy::{PolicyConfig, PolicySource, PolicyStore, WatchGuard};

pub struct Shadow {
    pub store: Arc<PolicyStore>,
    pub dir: PathBuf,
    slots: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    watch: Mutex<Option<WatchGuard>>,
    runner: Runner,
}

/// The shadow thread's runtime; the thread ends when this is dropped.
struct Runner {
    handle: tokio::runtime::Handle,
    _stop: oneshot::Sender<()>,
}

impl Runner {
    fn start() -> anyhow::Result<Runner> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("shadow".into())
            .stack_size(crate::policy::EVALUATION_STACK_BYTES)
            .spawn(move || {
                lower_priority();
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        let _ = tx.send(Ok(rt.handle().clone()));
                        // Until the shadow set is dropped; evaluations still pending then are
                        // dropped with the runtime.
                        rt.block_on(async {
                            let _ = stopped.await;
                        });
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })
            .context("cannot start the shadow set's thread")?;
        let handle = rx
            .recv()
            .context("the shadow set's thread ended at start")?
            .context("cannot build the shadow set's runtime")?;
        Ok(Runner {
            handle,
            _stop: stop,
        })
    }
}

/// Nice 19 for the calling thread only (Linux applies `setpriority` to one thread when given its
/// id). Elsewhere, or when refused, the thread keeps the normal priority: still off the workers.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's own id; no memory is shared.
        let (tid, rc) = unsafe {
            let tid = libc::gettid();
            // `id_t` is unsigned; a thread id is always positive.
            let rc = libc::setpriority(libc::PRIO_PROCESS, tid.unsigned_abs(), 19);
            (tid, rc)
        };
        if rc != 0 {
            tracing::warn!(tid, error = %std::io::Error::last_os_error(), "cannot lower the shadow thread's priority");
        }
    }
}

/// A slot for one shadow evaluation, held until it finishes.
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Shadow {
    /// Load the candidate set; a set that does not compile stops `serve` from starting, as the
    /// serving set's would (later reloads that fail keep the last good shadow set).
    pub fn load(
        config: &ShadowConfig,
        policy: &PolicyConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Option<Shadow>> {
        let Some(dir) = &config.policies else {
            return Ok(None);
        };
        let source = PolicySource::Dir(dir.clone());
        let store = PolicyStore::load_shadow(&source, policy, metrics.clone()).map_err(|e| {
            anyhow::anyhow!("shadow policy set {} does not load:\n{e}", dir.display())
        })?;
        Ok(Some(Shadow {
            store,
            dir: dir.clone(),
            slots: Arc::new(Semaphore::new(config.max_pending.max(1))),
            metrics,
            watch: Mutex::new(None),
            runner: Runner::start()?,
        }))
    }

    /// Run one evaluation on the shadow thread.
    pub fn spawn(&self, evaluation: impl Future<Output = ()> + Send + 'static) {
        self.runner.handle.spawn(evaluation);
    }

    /// Hot reload, with the same watcher as the serving set; stops when the shadow is dropped.
    pub fn watch(&self) -> anyhow::Result<()> {
        let guard = self
            .store
            .watch(Path::new(&self.dir))
            .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", self.dir.display()))?;
        if let Ok(mut w) = self.watch.lock() {
            *w = Some(guard);
        }
        Ok(())
    }

    /// A slot for one evaluation, or `None` (counted) when all are taken.
    pub fn try_slot(&self) -> Option<Slot> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Some(Slot(permit)),
            Err(_) => {
                self.metrics.shadow_dropped.inc();
                None
            }
        }
    }

    /// Count one evaluation and its disagreements. The evaluation is counted last: a scrape
    /// (or a test waiting on `shadow_evaluations_total`) that sees it also sees what it found.
    pub fn count(&self, changes: &[Change]) {
        for c in changes {
            self.metrics
                .shadow_disagreements
                .get_or_create(&ShadowLabels {
                    policy: c.policy.clone(),
                    direction: c.direction.as_str().into(),
                })
                .inc();
        }
        self.metrics.shadow_evaluations.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_a_full_shadow_counts_what_it_skips() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let config = ShadowConfig {
            policies: Some(dir.path().to_path_buf()),
            max_pending: 2,
        };
        let shadow = Shadow::load(&config, &PolicyConfig::default(), metrics.clone())
            .unwrap()
            .unwrap();
        let a = shadow.try_slot();
        let b = shadow.try_slot();
        assert!(a.is_some() && b.is_some());
        assert!(shadow.try_slot().is_none());
        assert_eq!(metrics.shadow_dropped.get(), 1);
        drop(a);
        assert!(shadow.try_slot().is_some());
        assert_eq!(metrics.shadow_dropped.get(), 1);
        // The shadow set's size is its own gauge, never the serving set's.
        assert_eq!(metrics.policies.get(), 0);
    }
}
