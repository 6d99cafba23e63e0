//! What the webhook needs from the API server, behind one small trait.
//!
//! Mutation asks three questions: does this RuntimeClass exist (and how does it schedule), what
//! labels does this Namespace carry, and is this NetworkPolicy in place. Keeping them behind
//! [`ClusterAccess`] lets the mutator run offline (`review`, tests) with [`FakeCluster`] and in a
//! cluster with [`KubeCluster`], whose watch caches answer without a round trip per pod.

mod caches;
mod fake;
pub mod inventory;
mod kube_cluster;
mod lease;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;

pub use caches::{CacheStatus, CachedObject, RawObject, WatchSpec};
pub use fake::FakeCluster;
pub use inventory::SyncEntry;
pub use kube_cluster::{KubeCluster, KubeClusterOptions};

/// The field manager this product applies NetworkPolicies with.
pub const FIELD_MANAGER: &str = "sandbox-admission";

/// Answer of a cache lookup. `Unavailable` is distinct from `Missing` so that a cache that has not
/// synced (or an API error) is never mistaken for "the object does not exist".
#[derive(Debug, Clone)]
pub enum Lookup<T> {
    Found(Arc<T>),
    Missing,
    Unavailable(String),
}

/// Why talking to the API server failed, phrased for an admission message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The API server answered with a Status (e.g. 403 Forbidden from RBAC).
    #[error("API server answered {code} {reason}: {message}")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    /// No answer: connection, TLS or decoding trouble.
    #[error("{0}")]
    Transport(String),
    /// No client could be configured (no in-cluster config, no kubeconfig).
    #[error("no cluster access: {0}")]
    NotConfigured(String),
}

impl From<kube::Error> for ClusterError {
    fn from(err: kube::Error) -> Self {
        match err {
            kube::Error::Api(status) => ClusterError::Api {
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            },
            other => ClusterError::Transport(other.to_string()),
        }
    }
}

/// How an `ensure_network_policy` call ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// Sent to the API server now.
    Applied,
    /// The same spec was applied recently; nothing was sent.
    Cached,
}

impl fmt::Display for Ensured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ensured::Applied => "applied",
            Ensured::Cached => "already applied",
        })
    }
}

/// Read and write access to the cluster, as mutation needs it. Object-safe so the server can hold
/// an `Arc<dyn ClusterAccess>` and tests can swap in a fake.
pub trait ClusterAccess: Send + Sync {
    /// A RuntimeClass by name.
    fn runtime_class<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Lookup<RuntimeClass>>;

    /// A Namespace by name (its labels choose profiles; Rego policies see it as `namespaceObject`).
    fn namespace<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Lookup<Namespace>>;

    /// Make sure `policy` (which names its namespace) exists as given, by server-side apply.
    fn ensure_network_policy<'a>(
        &'a self,
        policy: &'a NetworkPolicy,
    ) -> BoxFuture<'a, Result<Ensured, ClusterError>>;

    /// For `/readyz`: `Err` while the caches that admission reads from are not usable yet.
    fn readiness(&self) -> Result<String, String> {
        Ok("cluster access configured".into())
    }

    /// Every object of the watched kinds (the `sync` list, the audited kinds).
    fn cached_objects(&self) -> Vec<CachedObject> {
        Vec::new()
    }

    /// Changes whenever a watched cache does; `None` when nothing is watched.
    fn cache_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// How each watched cache is doing.
    fn cache_status(&self) -> Vec<CacheStatus> {
        Vec::new()
    }

    /// Take or renew a `coordination.k8s.io` Lease; `Ok(false)` when another holder has it.
    fn try_lease<'a>(
        &'a self,
        _lease: &'a LeaseRequest,
    ) -> BoxFuture<'a, Result<bool, ClusterError>> {
        Box::pin(async { Err(ClusterError::NotConfigured("no Lease support".into())) })
    }

    /// Server-side apply a `wgpolicyk8s.io/v1alpha2` PolicyReport (given as JSON).
    fn apply_policy_report<'a>(
        &'a self,
        _report: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async {
            Err(ClusterError::NotConfigured(
                "no PolicyReport support".into(),
            ))
        })
    }

    /// The PolicyReports this product wrote.
    fn list_policy_reports(&self) -> BoxFuture<'_, Result<Vec<serde_json::Value>, ClusterError>> {
        Box::pin(async {
            Err(ClusterError::NotConfigured(
                "no PolicyReport support".into(),
            ))
        })
    }
}

/// The Lease that lets one replica at a time run the background audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    pub namespace: String,
    pub name: String,
    /// This replica (its pod name).
    pub holder: String,
    pub duration: Duration,
}

/// Cluster access for `serve`: in-cluster configuration or the local kubeconfig, or `None` (with
/// a warning saying what that means) when neither exists, so the binary also runs on a laptop.
pub async fn connect_or_offline(watches: Vec<WatchSpec>) -> Option<Arc<dyn ClusterAccess>> {
    crate::certs::install_crypto_provider();
    let options = KubeClusterOptions {
        watches,
        ..Default::default()
    };
    match KubeCluster::connect(options).await {
        Ok(cluster) => {
            tracing::info!(
                "cluster access: watching RuntimeClasses and Namespaces, applying NetworkPolicies"
            );
            Some(Arc::new(cluster))
        }
        Err(err) => {
            tracing::warn!(
                error = %err,
                "no cluster access: runtime scheduling and overhead come from configuration, RuntimeClass existence is not checked, NetworkPolicies are not applied"
            );
            None
        }
    }
}

/// The Namespace as JSON, for Rego policies' `input.review.namespaceObject` (as Gatekeeper gives
/// it); `None` when it cannot be found or read.
pub async fn namespace_object(
    cluster: &dyn ClusterAccess,
    name: &str,
) -> Option<serde_json::Value> {
    match cluster.namespace(name).await {
        Lookup::Found(ns) => serde_json::to_value(&*ns).ok(),
        Lookup::Missing | Lookup::Unavailable(_) => None,
    }
}
