//! [`ClusterAccess`] backed by the API server: watch caches for RuntimeClasses and Namespaces,
//! server-side apply for NetworkPolicies.
//!
//! Reads come from reflector stores so admission does not cost a round trip per pod. A store miss
//! falls back to one direct GET, because an object created a moment ago (a new namespace, a
//! RuntimeClass just installed) may not have reached the watch yet; a cache that has not synced
//! is treated the same way rather than being read as "nothing exists".

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use super::caches::{self, CacheStatus, CachedObject, WatchSpec, WatchedCache};
use super::{ClusterAccess, ClusterError, Ensured, FIELD_MANAGER, LeaseRequest, Lookup};

/// Tuning for [`KubeCluster`].
#[derive(Debug, Clone)]
pub struct KubeClusterOptions {
    /// How long the first lookups wait for a cache's first list before asking the API server
    /// directly. Waited once: a cache that cannot sync (e.g. RBAC forbids the list) must not
    /// slow every admission down.
    pub sync_wait: Duration,
    /// An applied NetworkPolicy is applied again after this long, repairing manual deletions.
    pub reapply_after: Duration,
    /// Further kinds to keep watch caches of: the `sync` list (`data.inventory`) and the kinds
    /// the background audit judges.
    pub watches: Vec<WatchSpec>,
}

impl Default for KubeClusterOptions {
    fn default() -> Self {
        KubeClusterOptions {
            sync_wait: Duration::from_secs(2),
            reapply_after: Duration::from_secs(600),
            watches: Vec::new(),
        }
    }
}

/// Cache key of an applied policy: namespace and name.
type AppliedKey = (String, String);

pub struct KubeCluster {
    client: Client,
    runtime_classes: Store<RuntimeClass>,
    namespaces: Store<Namespace>,
    tasks: Vec<JoinHandle<()>>,
    /// Set once a lookup has waited `sync_wait` for a cache in vain.
    gave_up_waiting: AtomicBool,
    applied: Mutex<HashMap<AppliedKey, (u64, Instant)>>,
    options: KubeClusterOptions,
    caches: Vec<WatchedCache>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl KubeCluster {
    /// Connect with in-cluster configuration or the local kubeconfig, and start the watches.
    pub async fn connect(options: KubeClusterOptions) -> Result<KubeCluster, ClusterError> {
        let client = Client::try_default()
            .await
            .map_err(|e| ClusterError::NotConfigured(e.to_string()))?;
        Ok(KubeCluster::start(client, options))
    }

    /// Start the watches on an existing client. Must be called inside a Tokio runtime.
    pub fn start(client: Client, options: KubeClusterOptions) -> KubeCluster {
        let (runtime_classes, rc_task) = spawn_reflector(Api::<RuntimeClass>::all(client.clone()));
        let (namespaces, ns_task) = spawn_reflector(Api::<Namespace>::all(client.clone()));
        let mut tasks = vec![rc_task, ns_task];
        let changes = tokio::sync::watch::Sender::new(0);
        let mut caches = Vec::new();
        for spec in &options.watches {
            let (cache, task) = caches::spawn(client.clone(), spec.clone(), changes.clone());
            caches.push(cache);
            tasks.push(task);
        }
        KubeCluster {
            client,
            runtime_classes,
            namespaces,
            tasks,
            gave_up_waiting: AtomicBool::new(false),
            applied: Mutex::new(HashMap::new()),
            options,
            caches,
            changes,
        }
    }

    /// Every cache has completed its first list (for readiness reporting).
    pub fn is_synced(&self) -> bool {
        is_ready(&self.runtime_classes)
            && is_ready(&self.namespaces)
            && self.caches.iter().all(|c| store_ready(&c.store))
    }

    async fn wait_for<K>(&self, store: &Store<K>) -> bool
    where
        K: Resource<DynamicType = ()> + Clone,
    {
        if is_ready(store) {
            return true;
        }
        if self.gave_up_waiting.load(Ordering::Relaxed) {
            return false;
        }
        let synced = matches!(
            tokio::time::timeout(self.options.sync_wait, store.wait_until_ready()).await,
            Ok(Ok(()))
        );
        if !synced {
            tracing::warn!(
                kind = %K::kind(&()),
                "watch cache not synced after {:?}; answering from direct reads until it is",
                self.options.sync_wait
            );
            self.gave_up_waiting.store(true, Ordering::Relaxed);
        }
        synced
    }

    async fn cached<K>(&self, store: &Store<K>, api: Api<K>, name: &str) -> Lookup<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        if self.wait_for(store).await
            && let Some(obj) = store.get(&ObjectRef::new(name))
        {
            return Lookup::Found(obj);
        }
        match api.get_opt(name).await {
            Ok(Some(obj)) => Lookup::Found(Arc::new(obj)),
            Ok(None) => Lookup::Missing,
            Err(err) => Lookup::Unavailable(format!(
                "cannot read {} {name:?}: {}",
                K::kind(&()),
                ClusterError::from(err)
            )),
        }
    }

    async fn apply(&self, policy: &NetworkPolicy) -> Result<Ensured, ClusterError> {
        let namespace = policy.metadata.namespace.clone().ok_or_else(|| {
            ClusterError::Transport("NetworkPolicy to apply names no namespace".into())
        })?;
        let name = policy.name_any();
        let fingerprint = fingerprint(policy)?;
        let key = (namespace.clone(), name.clone());
        if self.recently_applied(&key, fingerprint) {
            return Ok(Ensured::Cached);
        }
        let api = Api::<NetworkPolicy>::namespaced(self.client.clone(), &namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(policy)).await?;
        if let Ok(mut applied) = self.applied.lock() {
            applied.insert(key, (fingerprint, Instant::now()));
        }
        Ok(Ensured::Applied)
    }

    fn recently_applied(&self, key: &AppliedKey, fingerprint: u64) -> bool {
        let Ok(applied) = self.applied.lock() else {
            return false;
        };
        matches!(applied.get(key), Some((fp, at)) if *fp == fingerprint && at.elapsed() < self.options.reapply_after)
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl ClusterAccess for KubeCluster {
    fn readiness(&self) -> Result<String, String> {
        let mut parts = Vec::new();
        for status in self.cache_status() {
            let mut part = format!(
                "{}: {}",
                status.kind,
                if status.synced {
                    format!("{} objects", status.objects)
                } else {
                    "not synced".into()
                }
            );
            if status.relists > 0 {
                part.push_str(&format!(
                    ", re-listed {} times after losing its watch",
                    status.relists
                ));
            }
            if let Some(err) = &status.last_error {
                part.push_str(&format!(", last error: {err}"));
            }
            parts.push(part);
        }
        let extra = if parts.is_empty() {
            String::new()
        } else {
            format!("; {}", parts.join("; "))
        };
        if self.is_synced() {
            Ok(format!("RuntimeClass and Namespace caches synced{extra}"))
        } else {
            Err(format!("waiting for the watch caches to sync{extra}"))
        }
    }

    fn cached_objects(&self) -> Vec<CachedObject> {
        self.caches.iter().flat_map(WatchedCache::objects).collect()
    }

    fn cache_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.changes.subscribe())
    }

    fn cache_status(&self) -> Vec<CacheStatus> {
        self.caches.iter().map(WatchedCache::status).collect()
    }

    fn try_lease<'a>(
        &'a self,
        lease: &'a LeaseRequest,
    ) -> BoxFuture<'a, Result<bool, ClusterError>> {
        Box::pin(super::lease::try_lease(self.client.clone(), lease))
    }

    fn apply_policy_report<'a>(
        &'a self,
        report: &'a serde_json::Value,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(super::lease::apply_policy_report(
            self.client.clone(),
            report,
        ))
    }

    fn list_policy_reports(&self) -> BoxFuture<'_, Result<Vec<serde_json::Value>, ClusterError>> {
        Box::pin(super::lease::list_policy_reports(self.client.clone()))
    }

    fn runtime_class<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Lookup<RuntimeClass>> {
        let api = Api::<RuntimeClass>::all(self.client.clone());
        Box::pin(self.cached(&self.runtime_classes, api, name))
    }

    fn namespace<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Lookup<Namespace>> {
        let api = Api::<Namespace>::all(self.client.clone());
        Box::pin(self.cached(&self.namespaces, api, name))
    }

    fn ensure_network_policy<'a>(
        &'a self,
        policy: &'a NetworkPolicy,
    ) -> BoxFuture<'a, Result<Ensured, ClusterError>> {
        Box::pin(self.apply(policy))
    }
}

/// Whether a store has completed its first list, without waiting: `wait_until_ready` is the only
/// readiness signal a Store offers, so it is polled once.
fn is_ready<K>(store: &Store<K>) -> bool
where
    K: Resource<DynamicType = ()> + Clone,
{
    store_ready(store)
}

/// [`is_ready`] for stores of any dynamic type.
pub(super) fn store_ready<K>(store: &Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(store.wait_until_ready());
    matches!(fut.as_mut().poll(&mut cx), std::task::Poll::Ready(Ok(())))
}

/// A hash of the whole object, so a changed profile is applied again at once.
fn fingerprint(policy: &NetworkPolicy) -> Result<u64, ClusterError> {
    let json = serde_json::to_vec(policy)
        .map_err(|e| ClusterError::Transport(format!("cannot encode NetworkPolicy: {e}")))?;
    let mut hasher = DefaultHasher::new();
    json.hash(&mut hasher);
    Ok(hasher.finish())
}

fn spawn_reflector<K>(api: Api<K>) -> (Store<K>, JoinHandle<()>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&()).into_owned();
    // managedFields are never read here and are often most of an object's size.
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|obj: &mut K| obj.managed_fields_mut().clear());
    let stream = reflector::reflector(writer, stream);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(err) = event {
                tracing::warn!(kind = %kind, error = %err, "watch failed; retrying with backoff");
            }
        }
    });
    (reader, task)
}
