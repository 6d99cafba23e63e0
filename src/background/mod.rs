//! What runs beside admission in `serve`: `data.inventory` kept in step with the watch caches,
//! and the background audit of existing objects into PolicyReports.
//!
//! This sits above the pipeline (it judges through [`crate::pipeline::Admitter`], the same code
//! `/validate` runs) and talks to the API server only through [`crate::cluster::ClusterAccess`].

pub mod audit;
pub mod inventory;

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::cluster::{SyncEntry, WatchSpec};
use crate::config::Config;
use crate::pipeline::Admitter;

/// What [`spawn_all`] started.
#[derive(Default)]
pub struct Spawned {
    pub tasks: Vec<JoinHandle<()>>,
    /// The background audit's last round and Lease state, when the audit runs.
    pub audit: Option<Arc<audit::AuditStatus>>,
}

/// Start what `serve` runs beside admission for this pipeline; nothing without cluster access.
pub fn spawn_all(admitter: &Arc<Admitter>) -> Spawned {
    let Some(cluster) = admitter.cluster.clone() else {
        return Spawned::default();
    };
    let mut tasks = Vec::new();
    let mut status = None;
    tasks.extend(inventory::spawn(
        cluster.clone(),
        admitter.config.sync.clone(),
        admitter.policies.clone(),
        admitter.metrics.clone(),
    ));
    if let Some(shadow) = &admitter.shadow {
        // The shadow set judges with the same data.inventory as the serving set, or its
        // referential policies would disagree on every request.
        tasks.extend(inventory::spawn(
            cluster.clone(),
            admitter.config.sync.clone(),
            shadow.store.clone(),
            admitter.metrics.clone(),
        ));
    }
    if admitter.config.audit.enabled {
        let settings =
            audit::AuditSettings::from_config(&admitter.config, audit::holder_identity());
        tracing::info!(interval = ?settings.interval, lease = %settings.lease.name, holder = %settings.lease.holder, "background audit on");
        let auditor = Arc::new(audit::Auditor::new(admitter.clone(), cluster, settings));
        status = Some(auditor.status());
        tasks.push(auditor.spawn());
    }
    Spawned {
        tasks,
        audit: status,
    }
}

/// The label the Agent Sandbox controller puts on every pod it makes for a Sandbox.
pub const SANDBOX_POD_LABEL: &str = "agents.x-k8s.io/sandbox-name-hash";

/// The kinds the background audit judges (storage versions), Sandbox pods by their label.
pub fn audited_kinds() -> Vec<WatchSpec> {
    let spec = |group: &str, kind: &str| WatchSpec {
        entry: SyncEntry::new(group, "v1beta1", kind),
        label_selector: None,
    };
    vec![
        spec("agents.x-k8s.io", "Sandbox"),
        spec("extensions.agents.x-k8s.io", "SandboxTemplate"),
        spec("extensions.agents.x-k8s.io", "SandboxWarmPool"),
        spec("extensions.agents.x-k8s.io", "SandboxClaim"),
        WatchSpec {
            entry: SyncEntry::new("", "v1", "Pod"),
            label_selector: Some(SANDBOX_POD_LABEL.into()),
        },
    ]
}

/// The watch caches `serve` keeps: the `sync` list, plus the audited kinds when the audit is on.
/// A kind named twice is watched once, unfiltered if either asks for all of it.
pub fn watches(config: &Config) -> Vec<WatchSpec> {
    let mut out: Vec<WatchSpec> = Vec::new();
    let wanted = config
        .sync
        .iter()
        .map(|entry| WatchSpec {
            entry: entry.clone(),
            label_selector: None,
        })
        .chain(
            config
                .audit
                .enabled
                .then(audited_kinds)
                .into_iter()
                .flatten(),
        );
    for spec in wanted {
        match out.iter_mut().find(|s| s.entry == spec.entry) {
            Some(existing) => {
                if spec.label_selector.is_none() {
                    existing.label_selector = None;
                }
            }
            None => out.push(spec),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_and_audit_kinds_are_watched_once() {
        let mut config = Config::embedded().unwrap();
        assert_eq!(watches(&config).len(), config.sync.len());
        config.audit.enabled = true;
        let w = watches(&config);
        // SandboxWarmPool and SandboxTemplate are in both lists.
        assert_eq!(w.len(), config.sync.len() + audited_kinds().len() - 2);
        let pods = w.iter().find(|s| s.entry.kind == "Pod").unwrap();
        assert_eq!(pods.label_selector.as_deref(), Some(SANDBOX_POD_LABEL));
    }
}
