//! `data.inventory`: the cluster state referential policies read, in Gatekeeper's layout, so a
//! Gatekeeper policy that reads `data.inventory` runs unchanged and ours run in Gatekeeper.
//!
//! ```text
//! cluster[groupVersion][kind][name]                 cluster-scoped objects
//! namespace[namespace][groupVersion][kind][name]    namespaced objects
//! ```
//!
//! Which kinds are kept is configuration (`sync`), in the shape of Gatekeeper's Config
//! `spec.sync.syncOnly` entries so one list serves both. The layout is built here from plain
//! objects, so the server (from its watch caches) and `scan` (from the files it reads) build it
//! the same way.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One kind to keep in the inventory: a Gatekeeper `syncOnly` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncEntry {
    /// API group; `""` is the core group.
    #[serde(default)]
    pub group: String,
    pub version: String,
    pub kind: String,
}

impl SyncEntry {
    pub fn new(group: &str, version: &str, kind: &str) -> Self {
        SyncEntry {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
        }
    }

    /// `group/version`, or just `version` for the core group (an object's `apiVersion`).
    pub fn group_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether `object` is of this entry's group and kind. The version is not compared: the
    /// server watches one version and files may hold another (v1alpha1 and v1beta1 are both
    /// served), and both describe the same stored object.
    pub fn matches(&self, object: &Value) -> bool {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        object.get("kind").and_then(Value::as_str) == Some(self.kind.as_str())
            && group == self.group
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.version.is_empty() || self.kind.is_empty() {
            return Err(format!(
                "sync entry {self:?} needs a version and a kind (as Gatekeeper's syncOnly)"
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for SyncEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.group_version(), self.kind)
    }
}

/// Objects by groupVersion, kind and name.
type ByKind = BTreeMap<String, BTreeMap<String, Map<String, Value>>>;

/// The inventory of `objects`, in Gatekeeper's layout. Objects without a kind, apiVersion or
/// name cannot be addressed there and are left out; a later object with the same address
/// replaces an earlier one (as a later `kubectl apply` would).
pub fn build<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Value {
    let mut cluster = ByKind::new();
    let mut namespaces: BTreeMap<String, ByKind> = BTreeMap::new();
    for object in objects {
        let str_at = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("");
        let (api_version, kind, name) = (
            str_at("/apiVersion"),
            str_at("/kind"),
            str_at("/metadata/name"),
        );
        if api_version.is_empty() || kind.is_empty() || name.is_empty() {
            continue;
        }
        let namespace = str_at("/metadata/namespace");
        let root = if namespace.is_empty() {
            &mut cluster
        } else {
            namespaces.entry(namespace.to_owned()).or_default()
        };
        root.entry(api_version.to_owned())
            .or_default()
            .entry(kind.to_owned())
            .or_default()
            .insert(name.to_owned(), object.clone());
    }
    let to_value = |by_kind: ByKind| -> Value {
        Value::Object(
            by_kind
                .into_iter()
                .map(|(gv, kinds)| {
                    let kinds = kinds
                        .into_iter()
                        .map(|(kind, names)| (kind, Value::Object(names)))
                        .collect();
                    (gv, Value::Object(kinds))
                })
                .collect(),
        )
    };
    let namespaces = namespaces
        .into_iter()
        .map(|(ns, by_kind)| (ns, to_value(by_kind)))
        .collect();
    let mut inventory = Map::new();
    inventory.insert("cluster".into(), to_value(cluster));
    inventory.insert("namespace".into(), Value::Object(namespaces));
    Value::Object(inventory)
}

/// The objects of `objects` that `sync` names.
pub fn synced<'a>(
    sync: &'a [SyncEntry],
    objects: impl IntoIterator<Item = &'a Value> + 'a,
) -> impl Iterator<Item = &'a Value> + 'a {
    objects
        .into_iter()
        .filter(move |o| sync.iter().any(|s| s.matches(o)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn gatekeeper_layout() {
        let pool = json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
            "metadata": {"name": "p", "namespace": "team-a"}});
        let rc = json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "gvisor"}});
        let nameless =
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "x"}});
        let inv = build([&pool, &rc, &nameless]);
        assert_eq!(
            inv["namespace"]["team-a"]["extensions.agents.x-k8s.io/v1beta1"]["SandboxWarmPool"]["p"],
            pool
        );
        assert_eq!(
            inv["cluster"]["node.k8s.io/v1"]["RuntimeClass"]["gvisor"],
            rc
        );
        assert!(inv["namespace"].get("x").is_none());
    }

    #[test]
    fn sync_entries_match_group_and_kind() {
        let entry = SyncEntry::new("extensions.agents.x-k8s.io", "v1beta1", "SandboxWarmPool");
        assert_eq!(entry.group_version(), "extensions.agents.x-k8s.io/v1beta1");
        let v1alpha1 =
            json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxWarmPool"});
        assert!(entry.matches(&v1alpha1));
        assert!(!entry.matches(&json!({"apiVersion": "v1", "kind": "SandboxWarmPool"})));
        let service = SyncEntry::new("", "v1", "Service");
        assert_eq!(service.group_version(), "v1");
        assert!(service.matches(&json!({"apiVersion": "v1", "kind": "Service"})));
        assert!(!service.matches(&json!({"apiVersion": "example.com/v1", "kind": "Service"})));
        // Gatekeeper's syncOnly entries parse as they are.
        let parsed: Vec<SyncEntry> = serde_saphyr::from_str(
            "- group: \"\"\n  version: v1\n  kind: Namespace\n- {group: apps, version: v1, kind: Deployment}\n",
        )
        .unwrap();
        assert_eq!(parsed[1], SyncEntry::new("apps", "v1", "Deployment"));
    }
}
