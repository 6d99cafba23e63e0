//! `data.inventory` in step with the watch caches: after a change (gathered for a moment, so a
//! burst of events costs one rebuild), the inventory is rebuilt from the synced kinds and
//! layered onto the serving policy set once; requests never pay for it.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::{ClusterAccess, SyncEntry, inventory};
use crate::metrics::Metrics;
use crate::policy::PolicyStore;

/// Quiet period after a cache change before the inventory is rebuilt.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Rebuild the inventory from `cluster`'s caches of the `sync` kinds and serve it. Returns the
/// number of objects in it.
pub fn refresh(
    cluster: &dyn ClusterAccess,
    sync: &[SyncEntry],
    policies: &PolicyStore,
    metrics: &Metrics,
) -> usize {
    let objects = cluster.cached_objects();
    let synced: Vec<&serde_json::Value> = objects
        .iter()
        .filter(|o| {
            // By group and kind: the cache of a kind is keyed by the version it watches.
            let wanted = sync
                .iter()
                .any(|s| s.group == o.entry.group && s.kind == o.entry.kind);
            wanted && o.object.decode_error().is_none()
        })
        .map(|o| o.object.value())
        .collect();
    let count = synced.len();
    if let Err(e) = policies.set_inventory(Arc::new(inventory::build(synced))) {
        tracing::error!(error = %e, "cannot serve the new data.inventory; the previous one stays");
    }
    metrics
        .inventory_objects
        .set(i64::try_from(count).unwrap_or(i64::MAX));
    record_cache_status(cluster, metrics);
    count
}

/// Cache health into metrics (`sandbox_admission_watch_cache_*`).
pub fn record_cache_status(cluster: &dyn ClusterAccess, metrics: &Metrics) {
    for status in cluster.cache_status() {
        metrics.cache_status(&status.kind, status.synced, status.relists, status.errors);
    }
}

/// Keep `policies`' inventory in step with `cluster` until the task is dropped.
pub fn spawn(
    cluster: Arc<dyn ClusterAccess>,
    sync: Vec<SyncEntry>,
    policies: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
) -> Option<tokio::task::JoinHandle<()>> {
    let mut changes = cluster.cache_changes()?;
    Some(tokio::spawn(async move {
        // The inventory exists from the start (empty until the caches list), so referential
        // policies judge against what the cluster holds, never against a missing document.
        refresh(cluster.as_ref(), &sync, &policies, &metrics);
        let mut status_tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tokio::time::sleep(DEBOUNCE).await;
                    changes.mark_unchanged();
                    refresh(cluster.as_ref(), &sync, &policies, &metrics);
                }
                _ = status_tick.tick() => record_cache_status(cluster.as_ref(), &metrics),
            }
        }
    }))
}
