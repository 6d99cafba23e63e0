//! Which pods are Sandbox pods, and which Sandbox they belong to.
//!
//! The upstream controller creates one pod per Sandbox, named after it, with a controller
//! ownerReference to the Sandbox and the `sandbox-name-hash` label. Either mark is enough: a pod
//! that carries the label without the reference (adopted, or created by hand) is still treated as
//! a sandbox, so it cannot escape isolation by dropping one of the two.
//!
//! A namespace labelled `<prefix>isolation: enforce` goes further: every pod in it is a Sandbox
//! pod, whatever it carries. The server decides that from its own namespace cache, not from
//! which webhook entry the API server happened to call.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::labels::name_hash;
use super::patch::Refusal;
use crate::admission::AdmissionRequest;

pub const SANDBOX_GROUP: &str = "agents.x-k8s.io";
pub const EXTENSIONS_GROUP: &str = "extensions.agents.x-k8s.io";
pub const SANDBOX_VERSIONS: [&str; 2] = ["v1alpha1", "v1beta1"];
pub const NAME_HASH_LABEL: &str = "agents.x-k8s.io/sandbox-name-hash";
pub const WARM_POOL_LABEL: &str = "agents.x-k8s.io/warm-pool-sandbox";
pub const CLAIM_UID_LABEL: &str = "agents.x-k8s.io/claim-uid";
pub const TEMPLATE_REF_HASH_LABEL: &str = "agents.x-k8s.io/sandbox-template-ref-hash";

/// The namespace label (after the product's prefix) whose value [`ENFORCE`] isolates every pod.
pub const ISOLATION_LABEL: &str = "isolation";
pub const ENFORCE: &str = "enforce";

/// `<prefix>isolation`.
pub fn isolation_label(prefix: &str) -> String {
    format!("{prefix}{ISOLATION_LABEL}")
}

/// Whether a namespace with these labels is in enforce mode.
pub fn enforced(namespace_labels: &BTreeMap<String, String>, prefix: &str) -> bool {
    namespace_labels
        .get(&isolation_label(prefix))
        .is_some_and(|v| v == ENFORCE)
}

/// What is known about the Sandbox behind a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxIdentity {
    /// From the ownerReference, or the pod name when it hashes to the label.
    pub name: Option<String>,
    pub uid: Option<String>,
    /// The upstream warm-pool label (hash of the pool name): the pod waits in a pool.
    pub warm_pool: Option<String>,
    /// The upstream claim label: the pod serves a SandboxClaim.
    pub claim_uid: Option<String>,
}

/// The parts of a pod that mutation reads before it edits the raw JSON. Reading just these, not
/// a whole typed `Pod`, keeps the hot path cheap; the rest of the pod is only ever edited as JSON.
#[derive(Debug, Default, Deserialize)]
pub struct PodHead {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<SpecHead>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecHead {
    #[serde(default)]
    pub runtime_class_name: Option<String>,
}

/// The Sandbox identity of a pod with metadata `meta`, or `None` when it is not a Sandbox pod.
pub fn identify(meta: &ObjectMeta) -> Option<SandboxIdentity> {
    let owner = meta.owner_references.iter().flatten().find(|r| {
        r.controller == Some(true)
            && r.kind == "Sandbox"
            && r.api_version
                .split_once('/')
                .is_some_and(|(g, v)| g == SANDBOX_GROUP && SANDBOX_VERSIONS.contains(&v))
    });
    let label = |key: &str| meta.labels.as_ref().and_then(|l| l.get(key)).cloned();
    let hash = label(NAME_HASH_LABEL);
    let (name, uid) = match (owner, &hash) {
        (Some(owner), _) => (Some(owner.name.clone()), Some(owner.uid.clone())),
        (None, Some(hash)) => {
            let name = meta.name.clone().filter(|n| name_hash(n) == *hash);
            (name, None)
        }
        (None, None) => return None,
    };
    Some(SandboxIdentity {
        name: name.filter(|n| !n.is_empty()),
        uid: uid.filter(|u| !u.is_empty()),
        warm_pool: label(WARM_POOL_LABEL).filter(|v| !v.is_empty()),
        claim_uid: label(CLAIM_UID_LABEL).filter(|v| !v.is_empty()),
    })
}

/// The identity of a pod that is a Sandbox pod only because its namespace enforces isolation:
/// no Sandbox name or UID, but the upstream pool and claim labels when present.
pub fn enforced_identity(meta: &ObjectMeta) -> SandboxIdentity {
    let label = |key: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(key))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    SandboxIdentity {
        name: None,
        uid: None,
        warm_pool: label(WARM_POOL_LABEL),
        claim_uid: label(CLAIM_UID_LABEL),
    }
}

/// The Pod the upstream controller creates for the Sandbox `object` from its `template`
/// (`spec.podTemplate`): named after the Sandbox, in its namespace, with the template's labels
/// and annotations, the `sandbox-name-hash` label and a controller ownerReference. For a
/// SandboxTemplate (`from_template`), the pod its Sandboxes would get, named after the template
/// and labelled with its reference hash, as a warm pool's Sandbox from it would be.
pub fn controller_pod(
    req: &AdmissionRequest,
    object: &Value,
    template: &Value,
    from_template: bool,
) -> Result<Value, Refusal> {
    let head = controller_pod_head(req, object, template, from_template)?;
    let empty = Value::Object(Map::new());
    Ok(with_spec(&head, template.get("spec").unwrap_or(&empty)))
}

/// A copy of the pod `head` ([`controller_pod_head`]) with `spec` copied in.
pub fn with_spec(head: &Value, spec: &Value) -> Value {
    let mut pod = head.clone();
    if let Value::Object(members) = &mut pod {
        members.insert("spec".into(), spec.clone());
    }
    pod
}

/// [`controller_pod`] without its `spec` (the template's spec, as it is), for a caller that
/// takes the spec from the template itself rather than from a copy.
pub fn controller_pod_head(
    req: &AdmissionRequest,
    object: &Value,
    template: &Value,
    from_template: bool,
) -> Result<Value, Refusal> {
    let meta = object.get("metadata");
    let text = |v: Option<&Value>, key: &str| {
        v.and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let name = match text(meta, "name") {
        n if n.is_empty() => req.name.clone(),
        n => n,
    };
    let namespace = match text(meta, "namespace") {
        n if n.is_empty() => req.namespace.clone(),
        n => n,
    };
    let template_meta = template.get("metadata").filter(|m| !m.is_null());
    let map_of = |key: &str| -> Result<Map<String, Value>, Refusal> {
        match template_meta.and_then(|m| m.get(key)) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(_) => Err(Refusal::new(format!(
                "spec.podTemplate.metadata.{key} is not an object"
            ))),
        }
    };
    let mut labels = map_of("labels")?;
    let annotations = map_of("annotations")?;
    labels.insert(NAME_HASH_LABEL.into(), Value::String(name_hash(&name)));
    let mut metadata = Map::new();
    metadata.insert("name".into(), Value::String(name.clone()));
    if !namespace.is_empty() {
        metadata.insert("namespace".into(), Value::String(namespace));
    }
    if from_template {
        labels.insert(
            TEMPLATE_REF_HASH_LABEL.into(),
            Value::String(name_hash(&name)),
        );
    } else {
        let version = if req.kind.version.is_empty() {
            "v1beta1"
        } else {
            req.kind.version.as_str()
        };
        metadata.insert(
            "ownerReferences".into(),
            json!([{
                "apiVersion": format!("{SANDBOX_GROUP}/{version}"),
                "kind": "Sandbox",
                "name": name,
                "uid": text(meta, "uid"),
                "controller": true,
                "blockOwnerDeletion": true,
            }]),
        );
    }
    metadata.insert("labels".into(), Value::Object(labels));
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    // Built member by member: `json!` with a value inside serialises it into a new copy.
    let mut pod = Map::new();
    pod.insert("apiVersion".into(), Value::from("v1"));
    pod.insert("kind".into(), Value::from("Pod"));
    pod.insert("metadata".into(), Value::Object(metadata));
    Ok(Value::Object(pod))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> ObjectMeta {
        serde_json::from_value::<PodHead>(v).unwrap().metadata
    }

    fn owner(api_version: &str, kind: &str, controller: bool) -> serde_json::Value {
        json!({"apiVersion": api_version, "kind": kind, "name": "sb", "uid": "u-1", "controller": controller})
    }

    #[test]
    fn owner_reference_in_either_version() {
        for v in ["agents.x-k8s.io/v1alpha1", "agents.x-k8s.io/v1beta1"] {
            let p = pod(
                json!({"metadata": {"name": "sb", "ownerReferences": [owner(v, "Sandbox", true)]}}),
            );
            let id = identify(&p).unwrap();
            assert_eq!(id.name.as_deref(), Some("sb"));
            assert_eq!(id.uid.as_deref(), Some("u-1"));
        }
    }

    #[test]
    fn other_owners_are_not_sandboxes() {
        for r in [
            owner("agents.x-k8s.io/v1beta1", "Sandbox", false),
            owner("agents.x-k8s.io/v2", "Sandbox", true),
            owner("example.com/v1beta1", "Sandbox", true),
            owner("apps/v1", "ReplicaSet", true),
        ] {
            let p = pod(json!({"metadata": {"name": "sb", "ownerReferences": [r]}}));
            assert_eq!(identify(&p), None);
        }
        assert_eq!(identify(&pod(json!({"metadata": {"name": "x"}}))), None);
    }

    #[test]
    fn enforce_mode_is_the_exact_label_value() {
        let labels = |v: &str| BTreeMap::from([("p.io/isolation".to_string(), v.to_string())]);
        assert!(enforced(&labels("enforce"), "p.io/"));
        for other in ["", "Enforce", "audit", "true"] {
            assert!(!enforced(&labels(other), "p.io/"), "{other:?}");
        }
        assert!(!enforced(&labels("enforce"), "q.io/"));
        assert!(!enforced(&BTreeMap::new(), "p.io/"));
    }

    #[test]
    fn hash_label_alone_recognises_and_names_when_it_matches() {
        let p = pod(
            json!({"metadata": {"name": "my-box", "labels": {NAME_HASH_LABEL: name_hash("my-box"),
            WARM_POOL_LABEL: "abcd1234", CLAIM_UID_LABEL: "c-1"}}}),
        );
        let id = identify(&p).unwrap();
        assert_eq!(id.name.as_deref(), Some("my-box"));
        assert_eq!(id.uid, None);
        assert_eq!(id.warm_pool.as_deref(), Some("abcd1234"));
        assert_eq!(id.claim_uid.as_deref(), Some("c-1"));
        let p =
            pod(json!({"metadata": {"name": "other", "labels": {NAME_HASH_LABEL: "00000000"}}}));
        assert_eq!(identify(&p).unwrap().name, None);
    }
}
