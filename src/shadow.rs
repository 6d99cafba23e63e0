//! The shadow set (`serve --shadow-policies DIR`): a candidate policy set judged on live
//! `/validate` traffic after each answer has been sent, so that its cost never reaches the API
//! server. Its evaluations are bounded by a fixed number of slots: when they are all taken a
//! review is simply not shadowed, and counted, so a burst can never queue work without limit.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
        }))
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

    /// Count one evaluation and its disagreements.
    pub fn count(&self, changes: &[Change]) {
        self.metrics.shadow_evaluations.inc();
        for c in changes {
            self.metrics
                .shadow_disagreements
                .get_or_create(&ShadowLabels {
                    policy: c.policy.clone(),
                    direction: c.direction.as_str().into(),
                })
                .inc();
        }
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
