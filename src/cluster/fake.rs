//! An in-memory cluster for offline runs and tests: it answers from what it was given and records
//! every NetworkPolicy it is asked to apply, so a test can assert that dry-run applied nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{ClusterAccess, ClusterError, Ensured, Lookup};

#[derive(Debug, Default)]
pub struct FakeCluster {
    runtime_classes: BTreeMap<String, Arc<RuntimeClass>>,
    namespaces: BTreeMap<String, Arc<Namespace>>,
    apply_error: Option<ClusterError>,
    unavailable: Option<String>,
    applied: Mutex<Vec<NetworkPolicy>>,
}

impl FakeCluster {
    pub fn new() -> Self {
        FakeCluster::default()
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
}
