//! Watch caches of configured kinds (the `sync` list for `data.inventory`, and the kinds the
//! background audit judges), kept by kube's own watcher and reflector.
//!
//! Objects are cached as they came, not as a typed struct: a policy reads them as JSON anyway,
//! and one object that does not decode must not fail a whole list (kube decodes a list in one
//! piece, so a single bad item would keep the cache from ever syncing). Such an object is kept
//! with the reason, and whoever reads the cache skips and counts it.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, GroupVersionKind};
use kube::core::DynamicResourceScope;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::SyncEntry;

/// One kind to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSpec {
    pub entry: SyncEntry,
    /// Only objects with these labels (e.g. Sandbox pods: the controller's name-hash label).
    pub label_selector: Option<String>,
}

/// An object as the API server sent it, with its metadata decoded when it can be.
#[derive(Debug, Clone)]
pub struct RawObject {
    meta: ObjectMeta,
    raw: Value,
    error: Option<String>,
}

impl RawObject {
    /// Wrap a JSON object (tests, and the offline fake).
    pub fn from_value(raw: Value) -> RawObject {
        let (meta, error) = match raw.get("metadata") {
            None => (
                ObjectMeta::default(),
                Some("the object has no metadata".into()),
            ),
            Some(m) => match ObjectMeta::deserialize(m) {
                Ok(meta) => (meta, None),
                Err(e) => (
                    fallback_meta(m),
                    Some(format!("metadata does not decode: {e}")),
                ),
            },
        };
        let error = error
            .or_else(|| (!raw.is_object()).then(|| "the object is not a JSON object".to_string()));
        RawObject { meta, raw, error }
    }

    /// The object as JSON (with `apiVersion` and `kind`, which list items of built-in kinds
    /// leave out, filled in from the watched kind).
    pub fn value(&self) -> &Value {
        &self.raw
    }

    /// Why this object cannot be judged, when it cannot.
    pub fn decode_error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    pub fn name(&self) -> &str {
        self.meta.name.as_deref().unwrap_or("")
    }

    pub fn namespace(&self) -> &str {
        self.meta.namespace.as_deref().unwrap_or("")
    }
}

/// Name, namespace and resourceVersion read by hand from metadata that does not decode, so the
/// cache can still key the object and the watch can still resume after it.
fn fallback_meta(m: &Value) -> ObjectMeta {
    let at = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
    ObjectMeta {
        name: at("name"),
        namespace: at("namespace"),
        resource_version: at("resourceVersion"),
        uid: at("uid"),
        ..Default::default()
    }
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(RawObject::from_value)
    }
}

impl Serialize for RawObject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

impl Resource for RawObject {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }
    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

/// One cached object with the kind it was watched as.
#[derive(Debug, Clone)]
pub struct CachedObject {
    pub entry: SyncEntry,
    pub object: Arc<RawObject>,
}

/// How one cache is doing, for `/readyz` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheStatus {
    /// `groupVersion Kind`.
    pub kind: String,
    pub synced: bool,
    pub objects: usize,
    /// Lists after the first one: the watch was lost (e.g. 410 Gone) and the cache re-listed.
    pub relists: u64,
    /// Watch or list errors seen (each retried with backoff).
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    lists: u64,
    errors: u64,
    last_error: Option<String>,
}

/// A running cache of one kind.
pub(super) struct WatchedCache {
    pub spec: WatchSpec,
    pub store: Store<RawObject>,
    counters: Arc<Mutex<Counters>>,
}

impl WatchedCache {
    pub fn status(&self) -> CacheStatus {
        let counters = self.counters.lock();
        let (lists, errors, last_error) = match &counters {
            Ok(c) => (c.lists, c.errors, c.last_error.clone()),
            Err(_) => (0, 0, Some("status unavailable".into())),
        };
        CacheStatus {
            kind: self.spec.entry.to_string(),
            synced: super::kube_cluster::store_ready(&self.store),
            objects: self.store.state().len(),
            relists: lists.saturating_sub(1),
            errors,
            last_error,
        }
    }

    pub fn objects(&self) -> impl Iterator<Item = CachedObject> + '_ {
        self.store.state().into_iter().map(|object| CachedObject {
            entry: self.spec.entry.clone(),
            object,
        })
    }
}

/// Start watching `spec`'s kind across all namespaces; `changes` is bumped after each change
/// the cache takes in.
pub(super) fn spawn(
    client: Client,
    spec: WatchSpec,
    changes: watch::Sender<u64>,
) -> (WatchedCache, JoinHandle<()>) {
    let entry = &spec.entry;
    let gvk = GroupVersionKind::gvk(&entry.group, &entry.version, &entry.kind);
    let resource = ApiResource::from_gvk(&gvk);
    let api = Api::<RawObject>::all_with(client, &resource);
    let mut config = watcher::Config::default();
    if let Some(selector) = &spec.label_selector {
        config = config.labels(selector);
    }
    let (api_version, kind) = (resource.api_version.clone(), resource.kind.clone());
    let writer = reflector::store::Writer::new(resource);
    let reader = writer.as_reader();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(move |obj: &mut RawObject| {
            // managedFields are never read and are often most of an object's size.
            obj.meta.managed_fields = None;
            if let Some(map) = obj.raw.as_object_mut() {
                if let Some(Value::Object(meta)) = map.get_mut("metadata") {
                    meta.remove("managedFields");
                }
                map.entry("apiVersion")
                    .or_insert_with(|| Value::String(api_version.clone()));
                map.entry("kind")
                    .or_insert_with(|| Value::String(kind.clone()));
            }
        });
    let stream = reflector::reflector(writer, stream);
    let counters = Arc::new(Mutex::new(Counters::default()));
    let task_counters = counters.clone();
    let label = entry.to_string();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let mut changed = true;
            match event {
                Ok(watcher::Event::Init) => {
                    changed = false;
                    if let Ok(mut c) = task_counters.lock() {
                        c.lists += 1;
                        if c.lists > 1 {
                            tracing::info!(kind = %label, "watch cache re-listing after losing its watch");
                        }
                    }
                }
                Ok(watcher::Event::InitApply(_)) => changed = false,
                Ok(_) => {}
                Err(err) => {
                    changed = false;
                    tracing::warn!(kind = %label, error = %err, "watch failed; retrying with backoff");
                    if let Ok(mut c) = task_counters.lock() {
                        c.errors += 1;
                        c.last_error = Some(err.to_string());
                    }
                }
            }
            if changed {
                changes.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    });
    (
        WatchedCache {
            spec,
            store: reader,
            counters,
        },
        task,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_object_whose_metadata_does_not_decode_is_kept_with_the_reason() {
        let bad = RawObject::from_value(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "namespace": "n", "labels": "not-a-map", "resourceVersion": "7"}}));
        assert_eq!(bad.name(), "s");
        assert_eq!(bad.namespace(), "n");
        assert_eq!(bad.meta.resource_version.as_deref(), Some("7"));
        assert!(bad.decode_error().unwrap().contains("metadata"), "{bad:?}");
        let good = RawObject::from_value(json!({"metadata": {"name": "s"}}));
        assert_eq!(good.decode_error(), None);
        // A whole list still decodes when one item is bad.
        let list: Vec<RawObject> = serde_json::from_value(json!([
            {"metadata": {"name": "a"}}, {"metadata": {"name": 5}}, "junk"
        ]))
        .unwrap();
        assert_eq!(list.len(), 3);
        assert!(list[1].decode_error().is_some() && list[2].decode_error().is_some());
    }
}
