//! Turning what a user has at hand (a manifest, `kubectl get -o yaml`, a captured AdmissionReview)
//! into the AdmissionReview the API server would send for it.

use std::hash::{BuildHasher, Hasher};

use serde_json::{Map, Value, json};

use crate::admission::{self, Operation};

/// Kinds the API server keeps outside namespaces; everything else is namespaced.
const CLUSTER_SCOPED: &[&str] = &[
    "APIService",
    "CertificateSigningRequest",
    "ClusterRole",
    "ClusterRoleBinding",
    "ComponentStatus",
    "CSIDriver",
    "CSINode",
    "CustomResourceDefinition",
    "IngressClass",
    "MutatingWebhookConfiguration",
    "Namespace",
    "Node",
    "PersistentVolume",
    "PriorityClass",
    "RuntimeClass",
    "StorageClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
];

/// The resource (plural, lower case) the API server names a kind by: `Sandbox` → `sandboxes`,
/// `NetworkPolicy` → `networkpolicies`, `SandboxWarmPool` → `sandboxwarmpools`.
pub fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    match lower.as_str() {
        "endpoints" => return lower,
        _ if lower.ends_with("s")
            || lower.ends_with("x")
            || lower.ends_with("z")
            || lower.ends_with("ch")
            || lower.ends_with("sh") =>
        {
            return format!("{lower}es");
        }
        _ => {}
    }
    if let Some(stem) = lower.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        return format!("{stem}ies");
    }
    format!("{lower}s")
}

/// How to fill in the request around a bare object (flags of `review`).
#[derive(Debug, Clone)]
pub struct RequestDefaults {
    pub operation: Operation,
    pub namespace: Option<String>,
    pub user: String,
    pub groups: Vec<String>,
    /// Fixed uid; otherwise a random UUID, as the API server would send.
    pub uid: Option<String>,
}

/// One input document, ready for the pipeline.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `Kind namespace/name` for messages.
    pub label: String,
    /// The AdmissionReview as JSON (what the API server would POST).
    pub review: Value,
    /// Whether the API server would send it to `/mutate` (Pods only, as the webhook is configured).
    pub mutable: bool,
}

pub use crate::documents::documents;

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// Prepare one document: an AdmissionReview is taken as is (so the answer is exactly the
/// server's); a bare object gets the request the API server would build around it.
pub fn prepare(doc: Value, defaults: &RequestDefaults) -> Result<Prepared, String> {
    if !doc.is_object() {
        return Err(
            "a document must be an object (a Kubernetes object or an AdmissionReview)".into(),
        );
    }
    if is_admission_review(&doc) {
        let doc = complete_given(doc, defaults);
        let request = doc.get("request").cloned().unwrap_or(Value::Null);
        let kind = str_at(&request, "/kind/kind").unwrap_or("?");
        let group = str_at(&request, "/kind/group").unwrap_or("");
        let name = str_at(&request, "/name").unwrap_or("");
        let namespace = str_at(&request, "/namespace").unwrap_or("");
        return Ok(Prepared {
            label: label(kind, namespace, name),
            mutable: group.is_empty() && kind == "Pod",
            review: doc,
        });
    }
    let request = request_for(doc, defaults)?;
    let kind = str_at(&request, "/kind/kind").unwrap_or_default();
    let prepared = Prepared {
        label: label(
            kind,
            str_at(&request, "/namespace").unwrap_or_default(),
            str_at(&request, "/name").unwrap_or_default(),
        ),
        mutable: str_at(&request, "/kind/group") == Some("") && kind == "Pod",
        review: json!({"apiVersion": admission::API_VERSION, "kind": admission::KIND, "request": request}),
    };
    Ok(prepared)
}

/// Is `doc` an AdmissionReview (any `admission.k8s.io` version, as gator accepts)?
fn is_admission_review(doc: &Value) -> bool {
    str_at(doc, "/kind") == Some(admission::KIND)
        && str_at(doc, "/apiVersion").is_some_and(|v| v.starts_with("admission.k8s.io/"))
}

/// A captured or hand-written AdmissionReview taken as given (Gatekeeper's reading), with only
/// what the server needs to decode it filled in where it is missing: `apiVersion`
/// `admission.k8s.io/v1` (v1beta1 has the same request schema), `uid` (from the defaults or a
/// random one), `kind` from the object's apiVersion/kind, `resource` from it, `operation`
/// (the default) and `userInfo` (`{}`, as Gatekeeper gives it). Everything given, `oldObject` and `operation` included, reaches the policies
/// unchanged.
fn complete_given(mut doc: Value, defaults: &RequestDefaults) -> Value {
    let Some(review) = doc.as_object_mut() else {
        return doc;
    };
    review.insert("apiVersion".into(), json!(admission::API_VERSION));
    let Some(Value::Object(request)) = review.get_mut("request") else {
        return doc;
    };
    let object = ["object", "oldObject"]
        .into_iter()
        .filter_map(|k| request.get(k))
        .find(|v| v.is_object())
        .cloned()
        .unwrap_or(Value::Null);
    let api_version = str_at(&object, "/apiVersion").unwrap_or_default();
    let kind = str_at(&object, "/kind").unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    if !request.contains_key("uid") {
        let uid = defaults.uid.clone().unwrap_or_else(random_uid);
        request.insert("uid".into(), json!(uid));
    }
    if !request.contains_key("kind") && !kind.is_empty() {
        request.insert(
            "kind".into(),
            json!({"group": group, "version": version, "kind": kind}),
        );
    }
    if !request.contains_key("resource") && !kind.is_empty() {
        request.insert(
            "resource".into(),
            json!({"group": group, "version": version, "resource": plural(kind)}),
        );
    }
    request
        .entry("operation")
        .or_insert_with(|| json!(defaults.operation.as_str()));
    // Gatekeeper's Go types always write userInfo (as `{}` when empty).
    request.entry("userInfo").or_insert_with(|| json!({}));
    doc
}

/// The AdmissionRequest Gatekeeper's `gator verify` gives the policies for a suite case's
/// object, as its Go types serialise it (so `input.review` here is exactly gator's):
///
/// - an AdmissionReview: its `request` as given; members that Go always writes (`uid`,
///   `kind`, `resource`, `operation`, `userInfo`) appear with their zero value when absent, and
///   a DELETE without `object` gets `oldObject` as its object (Gatekeeper's `SetObjectOnDelete`);
/// - a bare object: `kind` from its apiVersion/kind, its `name` and `namespace` (left out when
///   empty, never defaulted), `object`, and the zero values for the rest (no operation, no user).
pub fn gator_request(doc: Value) -> Result<Value, String> {
    if !doc.is_object() {
        return Err(
            "a document must be an object (a Kubernetes object or an AdmissionReview)".into(),
        );
    }
    if is_admission_review(&doc) {
        let Some(Value::Object(mut request)) = doc.get("request").cloned() else {
            return Err("the AdmissionReview has no request".into());
        };
        let present = |r: &Map<String, Value>, k: &str| r.get(k).is_some_and(|v| !v.is_null());
        if !present(&request, "object") && !present(&request, "oldObject") {
            return Err(
                "the AdmissionRequest has neither an object nor an oldObject to review".into(),
            );
        }
        if str_at(&Value::Object(request.clone()), "/operation") == Some("DELETE")
            && !present(&request, "object")
            && let Some(old) = request.get("oldObject").cloned()
        {
            request.insert("object".into(), old);
        }
        for (key, zero) in [
            ("uid", json!("")),
            ("kind", json!({"group": "", "version": "", "kind": ""})),
            (
                "resource",
                json!({"group": "", "version": "", "resource": ""}),
            ),
            ("operation", json!("")),
            ("userInfo", json!({})),
        ] {
            request.entry(key).or_insert(zero);
        }
        return Ok(Value::Object(request));
    }
    let api_version = str_at(&doc, "/apiVersion")
        .ok_or("object has no apiVersion (is it a Kubernetes object?)")?;
    let kind = str_at(&doc, "/kind").ok_or("object has no kind (is it a Kubernetes object?)")?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let mut request = Map::new();
    request.insert("uid".into(), json!(""));
    request.insert(
        "kind".into(),
        json!({"group": group, "version": version, "kind": kind}),
    );
    request.insert(
        "resource".into(),
        json!({"group": "", "version": "", "resource": ""}),
    );
    for (key, pointer) in [
        ("name", "/metadata/name"),
        ("namespace", "/metadata/namespace"),
    ] {
        if let Some(v) = str_at(&doc, pointer).filter(|v| !v.is_empty()) {
            request.insert(key.into(), json!(v));
        }
    }
    request.insert("operation".into(), json!(""));
    request.insert("userInfo".into(), json!({}));
    request.insert("object".into(), doc);
    Ok(Value::Object(request))
}

fn label(kind: &str, namespace: &str, name: &str) -> String {
    let name = if name.is_empty() {
        "(generated name)"
    } else {
        name
    };
    if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    }
}

/// The AdmissionRequest the API server sends for `object`.
pub fn request_for(mut object: Value, d: &RequestDefaults) -> Result<Value, String> {
    let api_version = str_at(&object, "/apiVersion")
        .ok_or("object has no apiVersion (is it a Kubernetes object?)")?
        .to_owned();
    let kind = str_at(&object, "/kind")
        .ok_or("object has no kind (is it a Kubernetes object?)")?
        .to_owned();
    let (group, version) = api_version
        .split_once('/')
        .unwrap_or(("", api_version.as_str()));
    let name = str_at(&object, "/metadata/name")
        .unwrap_or_default()
        .to_owned();
    if name.is_empty() && str_at(&object, "/metadata/generateName").is_none() {
        return Err(format!(
            "{kind} has neither metadata.name nor metadata.generateName"
        ));
    }
    if name.is_empty() && d.operation != Operation::Create {
        return Err(format!("{} of a {kind} needs metadata.name", d.operation));
    }
    let namespace = if CLUSTER_SCOPED.contains(&kind.as_str()) {
        String::new()
    } else {
        let own = str_at(&object, "/metadata/namespace").filter(|n| !n.is_empty());
        let namespace = match (own, d.namespace.as_deref()) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!(
                    "the object's namespace {a:?} does not match --namespace {b:?} \
                     (the API server refuses such a request)"
                ));
            }
            (Some(a), _) => a.to_owned(),
            (None, Some(b)) => b.to_owned(),
            (None, None) => "default".to_owned(),
        };
        // The API server fills in the namespace before admission.
        metadata(&mut object)?.insert("namespace".into(), Value::String(namespace.clone()));
        namespace
    };
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": plural(&kind)});
    let (object, old_object, options) = match d.operation {
        Operation::Create => (object, Value::Null, "CreateOptions"),
        Operation::Update => (object.clone(), object, "UpdateOptions"),
        Operation::Delete => (Value::Null, object, "DeleteOptions"),
        Operation::Connect => (Value::Null, Value::Null, "ConnectOptions"),
    };
    Ok(json!({
        "uid": d.uid.clone().unwrap_or_else(random_uid),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": name,
        "namespace": namespace,
        "operation": d.operation.as_str(),
        "userInfo": {"username": d.user, "groups": d.groups},
        "object": object,
        "oldObject": old_object,
        "dryRun": false,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": options},
    }))
}

fn metadata(object: &mut Value) -> Result<&mut Map<String, Value>, String> {
    let map = object
        .as_object_mut()
        .ok_or("a Kubernetes object must be a map")?;
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    meta.as_object_mut()
        .ok_or_else(|| "metadata must be a map".to_string())
}

/// A version-4-shaped UUID from the process's random hasher keys: unique per request without a
/// random-number dependency.
fn random_uid() -> String {
    let state = std::collections::hash_map::RandomState::new();
    let mut words = [0u64; 2];
    for (i, w) in words.iter_mut().enumerate() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        *w = h.finish();
    }
    let [a, b] = words;
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> RequestDefaults {
        RequestDefaults {
            operation: Operation::Create,
            namespace: None,
            user: "alice".into(),
            groups: vec!["dev".into()],
            uid: Some("u1".into()),
        }
    }

    #[test]
    fn plural_resource_names() {
        for (kind, resource) in [
            ("Pod", "pods"),
            ("Sandbox", "sandboxes"),
            ("SandboxTemplate", "sandboxtemplates"),
            ("SandboxClaim", "sandboxclaims"),
            ("SandboxWarmPool", "sandboxwarmpools"),
            ("NetworkPolicy", "networkpolicies"),
            ("Ingress", "ingresses"),
            ("Gateway", "gateways"),
            ("Endpoints", "endpoints"),
        ] {
            assert_eq!(plural(kind), resource);
        }
    }

    #[test]
    fn builds_the_request_the_api_server_sends() {
        let sandbox = json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
                             "metadata": {"name": "s"}, "spec": {}});
        let r = request_for(sandbox.clone(), &defaults()).unwrap();
        assert_eq!(r["uid"], "u1");
        assert_eq!(
            r["resource"],
            json!({"group": "agents.x-k8s.io", "version": "v1beta1", "resource": "sandboxes"})
        );
        assert_eq!(r["kind"]["kind"], "Sandbox");
        assert_eq!(r["namespace"], "default");
        assert_eq!(r["object"]["metadata"]["namespace"], "default");
        assert_eq!(r["oldObject"], Value::Null);
        assert_eq!(
            r["userInfo"],
            json!({"username": "alice", "groups": ["dev"]})
        );
        let req = crate::admission::AdmissionRequest::from_value(r).unwrap();
        assert_eq!(req.operation, Operation::Create);

        let mut d = defaults();
        d.operation = Operation::Delete;
        d.namespace = Some("team".into());
        let r = request_for(sandbox.clone(), &d).unwrap();
        assert_eq!(r["namespace"], "team");
        assert_eq!(r["object"], Value::Null);
        assert_eq!(r["oldObject"]["metadata"]["namespace"], "team");

        let mut other = sandbox.clone();
        other["metadata"]["namespace"] = json!("elsewhere");
        assert!(
            request_for(other, &d)
                .unwrap_err()
                .contains("does not match")
        );
        let rc = json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                        "metadata": {"name": "gvisor"}, "handler": "runsc"});
        assert_eq!(request_for(rc, &defaults()).unwrap()["namespace"], "");
        assert!(request_for(json!({"kind": "Pod"}), &defaults()).is_err());
        assert!(request_for(json!({"apiVersion": "v1", "kind": "Pod"}), &defaults()).is_err());
    }

    #[test]
    fn generated_uids_differ_and_look_like_uuids() {
        let (a, b) = (random_uid(), random_uid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
    }

    #[test]
    fn documents_from_yaml_json_and_lists() {
        let yaml = "a: 1\n---\n---\nkind: List\napiVersion: v1\nitems:\n- b: 2\n- c: 3\n";
        assert_eq!(documents(yaml).unwrap().len(), 3);
        let json = r#"{"a": 1} {"b": 2}"#;
        assert_eq!(documents(json).unwrap().len(), 2);
        assert!(documents("{nope").is_err());
        assert!(documents("a: [").is_err());
    }

    #[test]
    fn gator_requests_as_gatekeeper_serialises_them() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        let bare = gator_request(pod.clone()).unwrap();
        assert_eq!(
            bare,
            json!({"uid": "", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                   "resource": {"group": "", "version": "", "resource": ""}, "name": "p",
                   "operation": "", "userInfo": {}, "object": pod})
        );
        let delete = json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                            "request": {"operation": "DELETE", "oldObject": pod}});
        let given = gator_request(delete).unwrap();
        assert_eq!(given["object"], pod);
        assert_eq!(given["oldObject"], pod);
        assert_eq!(given["kind"]["kind"], "");
        let req = crate::admission::AdmissionRequest::from_given(given).unwrap();
        assert_eq!(
            (req.kind.kind.as_str(), req.operation),
            ("Pod", Operation::Delete)
        );
        let empty = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                           "request": {"operation": "CREATE"}});
        assert!(gator_request(empty).unwrap_err().contains("neither"));
    }
}
