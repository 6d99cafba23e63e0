//! An in-memory cluster for offline runs and tests: it answers from what it was given and records
//! every NetworkPolicy it is asked to apply, so a test can assert that dry-run applied nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{
    CacheStatus, CachedObject, ClusterAccess, ClusterError, Ensured, LeaseRequest, Lookup,
    RawObject, SyncEntry,
};

#[derive(Debug)]
pub struct FakeCluster {
    runtime_classes: BTreeMap<String, Arc<RuntimeClass>>,
    namespaces: BTreeMap<String, Arc<Namespace>>,
    apply_error: Option<ClusterError>,
    unavailable: Option<String>,
    applied: Mutex<Vec<NetworkPolicy>>,
    /// What the watch caches hold.
    objects: Mutex<Vec<CachedObject>>,
    changes: tokio::sync::watch::Sender<u64>,
    reports: Mutex<Vec<serde_json::Value>>,
}

impl Default for FakeCluster {
    fn default() -> Self {
        FakeCluster {
            runtime_classes: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            apply_error: None,
            unavailable: None,
            applied: Mutex::new(Vec::new()),
            objects: Mutex::new(Vec::new()),
            changes: tokio::sync::watch::Sender::new(0),
            reports: Mutex::new(Vec::new()),
        }
    }
}

/// The kind an object is cached as: its own apiVersion and kind.
fn entry_of(object: &serde_json::Value) -> SyncEntry {
    let at = |k: &str| {
        object
            .get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
    };
    let (group, version) = at("apiVersion")
        .rsplit_once('/')
        .unwrap_or(("", at("apiVersion")));
    SyncEntry::new(group, version, at("kind"))
}

impl FakeCluster {
    pub fn new() -> Self {
        FakeCluster::default()
    }

    /// Objects in the watch caches, each cached as its own apiVersion and kind.
    pub fn with_objects(self, objects: impl IntoIterator<Item = serde_json::Value>) -> Self {
        self.set_objects(objects);
        self
    }

    /// Replace what the watch caches hold, as a watch event would.
    pub fn set_objects(&self, objects: impl IntoIterator<Item = serde_json::Value>) {
        let cached = objects
            .into_iter()
            .map(|v| CachedObject {
                entry: entry_of(&v),
                object: Arc::new(RawObject::from_value(v)),
            })
            .collect();
        if let Ok(mut slot) = self.objects.lock() {
            *slot = cached;
        }
        self.changes.send_modify(|n| *n += 1);
    }

    /// The PolicyReports applied so far, in order.
    pub fn reports(&self) -> Vec<serde_json::Value> {
        self.reports.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn with_runtime_class(mut self, class: RuntimeClass) -> Self {
        let name = class.metadata.name.clone().unwrap_or_default();
        self.runtime_classes.insert(name, Arc::new(class));
        self
    }

    /// A RuntimeClass with just a name and handler.
    pub fn with_simple_runtime_class(self, name: &str, handler: &str) -> Self {
        self.with_runtime_class(RuntimeClass {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            handler: handler.to_owned(),
            ..Default::default()
        })
    }

    pub fn with_namespace(mut self, name: &str, labels: &[(&str, &str)]) -> Self {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        };
        self.namespaces.insert(name.to_owned(), Arc::new(ns));
        self
    }

    /// Every apply fails with this error.
    pub fn failing_apply(mut self, err: ClusterError) -> Self {
        self.apply_error = Some(err);
        self
    }

    /// Every lookup answers `Unavailable` (a cache that never synced).
    pub fn unavailable(mut self, reason: &str) -> Self {
        self.unavailable = Some(reason.to_owned());
        self
    }

    /// The NetworkPolicies applied so far, in order.
    pub fn applied(&self) -> Vec<NetworkPolicy> {
        self.applied.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn lookup<T>(&self, map: &BTreeMap<String, Arc<T>>, name: &str) -> Lookup<T> {
        if let Some(reason) = &self.unavailable {
            return Lookup::Unavailable(reason.clone());
        }
        match map.get(name) {
            Some(obj) => Lookup::Found(Arc::clone(obj)),
            None => Lookup::Missing,
        }
    }
}

impl ClusterAccess for FakeCluster {
    fn runtime_class<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Lookup<RuntimeClass>> {
        Box::pin(async move { self.lookup(&self.runtime_classes, name) })
    }

    fn namespace<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Lookup<Namespace>> {
        Box::pin(async move { self.lookup(&self.namespaces, name) })
    }

    fn ensure_network_policy<'a>(
        &'a self,
        policy: &'a NetworkPolicy,
    ) -> BoxFuture<'a, Result<Ensured, ClusterError>> {
        Box::pin(async move {
            if let Some(err) = &self.apply_error {
                return Err(err.clone());
            }
            let mut applied = self
                .applied
                .lock()
                .map_err(|_| ClusterError::Transport("fake cluster lock poisoned".into()))?;
            applied.push(policy.clone());
            Ok(Ensured::Applied)
        })
    }

    fn cached_objects(&self) -> Vec<CachedObject> {
        self.objects.lock().map(|o| o.clone()).unwrap_or_default()
    }

    fn cache_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.changes.subscribe())
    }

    fn cache_status(&self) -> Vec<CacheStatus> {
        let objects = self.cached_objects();
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for o in &objects {
            *kinds.entry(o.entry.to_string()).or_default() += 1;
        }
        kinds
            .into_iter()
            .map(|(kind, objects)| CacheStatus {
                kind,
                synced: true,
                objects,
                ..Default::default()
            })
            .collect()
    }

    /// One replica, offline: the Lease is always ours.
    fn try_lease<'a>(&'a self, _: &'a LeaseRequest) -> BoxFuture<'a, Result<bool, ClusterError>> {
        Box::pin(async { Ok(true) })
    }

    fn apply_policy_report<'a>(
        &'a self,
        report: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(async move {
            if let Ok(mut reports) = self.reports.lock() {
                reports.push(report.clone());
            }
            Ok(())
        })
    }

    fn list_policy_reports(&self) -> BoxFuture<'_, Result<Vec<serde_json::Value>, ClusterError>> {
        Box::pin(async move { Ok(self.reports()) })
    }
}
