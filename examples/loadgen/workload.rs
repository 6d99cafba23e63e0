//! Realistic AdmissionReviews built from the upstream example manifests in
//! `tests/fixtures/agent-sandbox/examples/`, shared by the load generator, the criterion benches and
//! the hostile-input tests (included with `#[path]`, hence the `dead_code` allowance).
//!
//! Sandbox pods are built the way the upstream controller builds them: named after the Sandbox, with
//! a controller ownerReference `kind: Sandbox` and the `agents.x-k8s.io/sandbox-name-hash` label
//! (FNV-1a 32-bit of the Sandbox name). `/validate` gets pods, Sandboxes, SandboxTemplates,
//! SandboxWarmPools and SandboxClaims, plus hardened-away variants that the default policies deny.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// One prepared request: the body bytes and the uid the answer must echo.
#[derive(Clone, Debug)]
pub struct Review {
    pub uid: String,
    pub kind: String,
    pub body: Vec<u8>,
}

/// All reviews a run cycles through.
#[derive(Clone, Debug, Default)]
pub struct Workload {
    /// Sandbox pods for `/mutate`.
    pub mutate: Vec<Review>,
    /// Mixed kinds for `/validate`, allowed and denied.
    pub validate: Vec<Review>,
    /// Only Sandboxes, for the "validate a Sandbox with the full policy set" budget.
    pub validate_sandbox: Vec<Review>,
}

/// The fixtures directory of this repository.
pub fn default_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent-sandbox/examples")
}

/// FNV-1a 32-bit, as the controller hashes names into `*-hash` labels.
pub fn fnv1a32(text: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in text.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

/// Every YAML document under `dir` (recursively) that parses as a mapping.
pub fn load_docs(dir: &Path) -> Vec<Value> {
    let mut files = Vec::new();
    collect_yaml(dir, &mut files, 0);
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if let Ok(values) = serde_saphyr::from_multiple::<Value>(&text) {
            docs.extend(values.into_iter().filter(Value::is_object));
        }
    }
    docs
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 8 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_yaml(&path, out, depth + 1);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

/// The Pod the controller creates for `sandbox` (None when it has no usable pod template).
pub fn sandbox_pod(sandbox: &Value, namespace: &str) -> Option<Value> {
    let name = sandbox["metadata"]["name"].as_str()?;
    let template = &sandbox["spec"]["podTemplate"];
    let spec = template.get("spec")?;
    spec.get("containers")?.as_array()?;
    let mut labels = template["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels.insert(
        "agents.x-k8s.io/sandbox-name-hash".into(),
        Value::String(fnv1a32(name)),
    );
    let api_version = sandbox["apiVersion"]
        .as_str()
        .unwrap_or("agents.x-k8s.io/v1beta1");
    let mut metadata = json!({
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "ownerReferences": [{
            "apiVersion": api_version,
            "kind": "Sandbox",
            "name": name,
            "uid": format!("00000000-0000-4000-8000-{:012x}", u64::from_str_radix(&fnv1a32(name), 16).unwrap_or(0)),
            "controller": true,
            "blockOwnerDeletion": true
        }]
    });
    if let Some(annotations) = template["metadata"].get("annotations") {
        metadata["annotations"] = annotations.clone();
    }
    Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}))
}

/// The AdmissionRequest the API server sends for `object` (CREATE, or as told).
pub fn request_for(object: &Value, operation: &str, uid: &str) -> Value {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or("Pod");
    let plural = match kind {
        "Sandbox" => "sandboxes".to_string(),
        k => format!("{}s", k.to_lowercase()),
    };
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default");
    let name = object["metadata"]["name"].as_str().unwrap_or("");
    json!({
        "uid": uid,
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": plural},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "requestResource": {"group": group, "version": version, "resource": plural},
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": {
            "username": "system:serviceaccount:agent-sandbox-system:agent-sandbox-controller",
            "uid": "5b3e1f2c-0000-4000-8000-000000000001",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:agent-sandbox-system", "system:authenticated"]
        },
        "object": object,
        "oldObject": null,
        "dryRun": false,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
    })
}

/// Wrap a request in an AdmissionReview v1 envelope.
pub fn wrap(request: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

fn review(object: &Value, uid: String) -> Review {
    let body = serde_json::to_vec(&wrap(request_for(object, "CREATE", &uid))).unwrap_or_default();
    Review {
        kind: kind_of(object).to_string(),
        uid,
        body,
    }
}

/// A copy of a pod-bearing object with the usual things a policy refuses: privileged, host network,
/// an unknown runtime class. `pod_spec` points at the pod spec inside `object`.
pub fn insecure_variant(object: &Value, pod_spec: &str) -> Option<Value> {
    let mut bad = object.clone();
    let spec = bad.pointer_mut(pod_spec)?.as_object_mut()?;
    spec.insert("hostNetwork".into(), Value::Bool(true));
    spec.insert("runtimeClassName".into(), Value::String("runc".into()));
    if let Some(Value::Array(containers)) = spec.get_mut("containers")
        && let Some(Value::Object(first)) = containers.first_mut()
    {
        first.insert("securityContext".into(), json!({"privileged": true}));
    }
    let name = bad["metadata"]["name"].as_str().unwrap_or("x").to_string();
    bad["metadata"]["name"] = Value::String(format!("{name}-insecure"));
    Some(bad)
}

impl Workload {
    /// Build the workload from the fixture manifests under `dir`.
    pub fn from_fixtures(dir: &Path) -> Workload {
        let docs = load_docs(dir);
        let mut w = Workload::default();
        let mut n = 0usize;
        let mut uid = |prefix: &str| {
            n += 1;
            format!("{prefix}-{n:05}")
        };
        for doc in &docs {
            let namespace = doc["metadata"]["namespace"].as_str().unwrap_or("default");
            match kind_of(doc) {
                "Sandbox" => {
                    let r = review(doc, uid("sandbox"));
                    w.validate_sandbox.push(r.clone());
                    w.validate.push(r);
                    if let Some(bad) = insecure_variant(doc, "/spec/podTemplate/spec") {
                        let r = review(&bad, uid("sandbox-insecure"));
                        w.validate_sandbox.push(r.clone());
                        w.validate.push(r);
                    }
                    if let Some(pod) = sandbox_pod(doc, namespace) {
                        w.mutate.push(review(&pod, uid("pod")));
                        w.validate.push(review(&pod, uid("pod")));
                        if let Some(bad) = insecure_variant(&pod, "/spec") {
                            w.validate.push(review(&bad, uid("pod-insecure")));
                        }
                    }
                }
                "SandboxTemplate" => {
                    w.validate.push(review(doc, uid("template")));
                    if let Some(bad) = insecure_variant(doc, "/spec/podTemplate/spec") {
                        w.validate.push(review(&bad, uid("template-insecure")));
                    }
                }
                "SandboxWarmPool" | "SandboxClaim" => {
                    w.validate.push(review(doc, uid("extension")));
                }
                _ => {}
            }
        }
        w
    }
}
