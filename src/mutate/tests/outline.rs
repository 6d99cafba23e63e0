//! The patch `/mutate` answers, computed on the pod's outline (`read`), against the old way:
//! every step run on a copy of the whole pod and the two diffed by the json-patch crate. For
//! every pod the upstream examples give the controller, and variants of each that reach the
//! rarer edits (an injected token volume ahead of the pod's own, null maps, pre-set keys under
//! the prefix, keys with `/` and `~`, a Windows pod, partial drop lists and placements), both
//! must give the very same operations, and the patch must turn the pod into the same object.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::*;

const EXAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/agent-sandbox/examples"
);

fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// The controller's pod for every Sandbox and SandboxTemplate with a pod spec in the examples.
fn fixture_pods() -> Vec<(String, Value)> {
    let mut files = Vec::new();
    yaml_files(Path::new(EXAMPLES), &mut files);
    let options = serde_saphyr::options! { legacy_octal_numbers: true };
    let mut pods = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let Ok(docs) = serde_saphyr::from_multiple_with_options::<Value>(&text, options.clone())
        else {
            continue;
        };
        for doc in docs {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            if !matches!(kind.as_str(), "Sandbox" | "SandboxTemplate") {
                continue;
            }
            let template = &doc["spec"]["podTemplate"];
            if !template["spec"]["containers"].is_array() {
                continue;
            }
            let api = doc["apiVersion"].as_str().unwrap_or_default();
            let (group, version) = api.split_once('/').unwrap_or(("", api));
            let req = AdmissionRequest::from_value(json!({
                "uid": "u", "kind": {"group": group, "version": version, "kind": kind},
                "resource": {"group": group, "version": version, "resource": "x"},
                "namespace": doc["metadata"]["namespace"].as_str().unwrap_or("team"),
                "name": doc["metadata"]["name"], "operation": "CREATE", "object": doc
            }))
            .unwrap();
            let mut doc_with_uid = doc.clone();
            doc_with_uid["metadata"]["uid"] = json!(format!("uid-{}", pods.len()));
            let pod = sandbox_pod::controller_pod(
                &req,
                &doc_with_uid,
                template,
                kind == "SandboxTemplate",
            )
            .unwrap();
            let origin = format!(
                "{} {kind}/{}",
                file.strip_prefix(EXAMPLES).unwrap_or(&file).display(),
                doc["metadata"]["name"].as_str().unwrap_or_default()
            );
            pods.push((origin, without_nulls(pod)));
        }
    }
    pods
}

/// YAML's empty fields are nulls; the API server sends them absent.
fn without_nulls(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|_, c| !c.is_null());
                m.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

fn containers_mut(pod: &mut Value) -> impl Iterator<Item = &mut Value> {
    let spec = pod["spec"].as_object_mut().unwrap();
    spec.iter_mut()
        .filter(|(k, _)| matches!(k.as_str(), "containers" | "initContainers"))
        .flat_map(|(_, list)| list.as_array_mut().into_iter().flatten())
}

/// The pod and its variants.
fn variants(pod: &Value) -> Vec<(&'static str, Value)> {
    let mut out = vec![("as written", pod.clone())];

    // The ServiceAccount plugin's token volume, first (so removing it shifts the pod's own).
    let mut token = pod.clone();
    let volume = json!({"name": "kube-api-access-x2x9k", "projected": {"defaultMode": 420,
        "sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}});
    let mount = json!({"name": "kube-api-access-x2x9k", "readOnly": true,
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"});
    let spec = token["spec"].as_object_mut().unwrap();
    spec.remove("automountServiceAccountToken");
    match spec.get_mut("volumes").and_then(Value::as_array_mut) {
        Some(volumes) => volumes.insert(0, volume),
        None => {
            spec.insert("volumes".into(), json!([volume]));
        }
    }
    for c in containers_mut(&mut token) {
        match c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
            Some(mounts) => mounts.insert(0, mount.clone()),
            None => c["volumeMounts"] = json!([mount]),
        }
    }
    out.push(("token volume", token));

    // Nulls where maps and lists go, and keys the webhook owns or must escape.
    let mut nulls = pod.clone();
    nulls["spec"]["securityContext"] = Value::Null;
    nulls["spec"]["automountServiceAccountToken"] = Value::Null;
    nulls["spec"]["tolerations"] = Value::Null;
    nulls["metadata"]["annotations"] = Value::Null;
    for c in containers_mut(&mut nulls) {
        c["securityContext"] = Value::Null;
    }
    let labels = nulls["metadata"]["labels"].as_object_mut().unwrap();
    labels.insert(format!("{P}claimed"), json!("true"));
    labels.insert(format!("{P}trusted"), json!("yes"));
    labels.insert(format!("{P}runtime"), json!("none"));
    labels.insert("ex~ample.io/a/b".into(), json!("kept"));
    out.push(("nulls and owned keys", nulls));

    // What a stricter author already wrote, partly: drop lists without ALL, escalation set,
    // placements present, annotations with our inputs and foreign keys.
    let mut partial = pod.clone();
    partial["spec"]["nodeSelector"] = json!({"zone": "a"});
    partial["spec"]["tolerations"] = json!([{"key": "other", "operator": "Exists"}]);
    partial["spec"]["securityContext"] = json!({"runAsNonRoot": true});
    for (i, c) in containers_mut(&mut partial).enumerate() {
        c["securityContext"] = match i % 3 {
            0 => json!({"capabilities": {"drop": ["NET_RAW"]}}),
            1 => json!({"allowPrivilegeEscalation": true, "capabilities": null}),
            _ => json!({"privileged": true, "capabilities": {"add": ["NET_ADMIN"], "drop": null}}),
        };
    }
    partial["metadata"]["annotations"] = json!({
        format!("{P}network-profile"): "default", format!("{P}exempt"): "true",
        format!("{P}admitted-at"): "2020-01-01T00:00:00Z", "other.io/keep": "1"});
    out.push(("partly hardened", partial));

    let mut windows = pod.clone();
    windows["spec"]["os"] = json!({"name": "windows"});
    out.push(("windows", windows));
    out
}

fn pod_request(pod: &Value) -> Value {
    json!({
        "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": pod["metadata"]["namespace"].as_str().unwrap_or("team"),
        "name": pod["metadata"]["name"], "operation": "CREATE", "dryRun": false,
        "userInfo": {"username": "system:serviceaccount:agent-sandbox-system:controller"},
        "object": pod, "oldObject": null
    })
}

fn review_body(pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": pod_request(pod)
    }))
    .unwrap()
}

/// The old way: every step on a copy of the whole pod, and json-patch's diff of the two.
async fn whole_pod_patch(
    m: &Mutator,
    req: &AdmissionRequest,
    now: DateTime<Utc>,
) -> Result<(Vec<json_patch::PatchOperation>, Value), Refusal> {
    let object = req.object().unwrap();
    let head = PodHead::deserialize(object).unwrap();
    let identity = sandbox_pod::identify(&head.metadata).unwrap();
    // The original whole, and taken apart with its spec elsewhere than its root (as the
    // effective pod of a Sandbox is taken against the request's own pod spec).
    let mut root = object.clone();
    let spec = root
        .as_object_mut()
        .and_then(|r| r.remove("spec"))
        .unwrap_or(Value::Null);
    let apart = patch::Original {
        root: &root,
        spec: Some(&spec),
    };
    let run = async |original| {
        m.apply(
            original,
            object.clone(),
            &head,
            &identity,
            &req.namespace,
            None,
            now,
        )
        .await
    };
    let whole_original = patch::Original::whole(object);
    let (mutated, touched, _, _) = run(whole_original).await?;
    let touched_only = patch::diff_touched(whole_original, &mutated, &touched);
    let (mutated_apart, touched_apart, _, _) = run(apart).await?;
    let ops_apart = patch::diff_touched(apart, &mutated_apart, &touched_apart);
    // The effective pod's `defaulted` list: the same operations' pointers, none built.
    let pointers: Vec<String> = ops_apart.iter().map(|op| op.path().to_string()).collect();
    assert_eq!(
        patch::touched_pointers(apart, &mutated_apart, &touched_apart),
        pointers,
        "the pointers of the patch's operations"
    );
    let whole = json_patch::diff(object, &mutated).0;
    // Walking only what the steps marked gives the whole diff on the whole pod too.
    assert_eq!(touched_only, whole, "the steps left a change unmarked");
    assert_eq!(
        mutated_apart, mutated,
        "the same pod from the original taken apart"
    );
    assert_eq!(
        ops_apart, whole,
        "the same patch from the original taken apart"
    );
    Ok((whole, mutated))
}

async fn check(m: &Mutator, what: &str) -> usize {
    let now = Utc::now();
    let mut checked = 0;
    for (origin, pod) in fixture_pods() {
        for (variant, pod) in variants(&pod) {
            let at = format!("{what}: {origin} ({variant})");
            // As `/mutate` gets it: decoded from the body, the pod read from its text.
            let req = crate::admission::decode(&review_body(&pod)).unwrap();
            let ours = m.mutate_pod(&req, now).await;
            let whole = whole_pod_patch(m, &req, now).await;
            let (ours, (theirs, mutated)) = match (ours, whole) {
                (Ok(o), Ok(w)) => (o, w),
                (Err(a), Err(b)) => {
                    assert_eq!(a, b, "{at}: refused differently");
                    continue;
                }
                (o, w) => panic!("{at}: {:?} vs {:?}", o.map(|o| o.patch), w.map(|w| w.0)),
            };
            assert_eq!(
                ours.patch, theirs,
                "{at}: patch differs from the whole pod's"
            );
            assert!(!ours.patch.is_empty(), "{at}: nothing to do?");
            let mut patched = pod.clone();
            json_patch::patch(&mut patched, &ours.patch).unwrap();
            assert_eq!(patched, mutated, "{at}: patched pod differs");

            // Built as a value (offline tools), the same.
            let req = AdmissionRequest::from_value(pod_request(&pod)).unwrap();
            let from_value = m.mutate_pod(&req, now).await.unwrap();
            assert_eq!(from_value.patch, ours.patch, "{at}: from a value");
            checked += 1;
        }
    }
    checked
}

#[tokio::test]
async fn outline_patch_is_the_whole_pod_diff_for_every_fixture_pod() {
    let offline = check(&offline(), "offline").await;
    assert!(offline >= 5 * 40, "only {offline} pods checked");
    // With a cluster: the RuntimeClass's scheduling and overhead are copied in too.
    let kata = FakeCluster::new()
        .with_runtime_class(
            serde_json::from_value(json!({
                "metadata": {"name": "gvisor"}, "handler": "runsc",
                "scheduling": {"nodeSelector": {"sandbox.gke.io/runtime": "gvisor"},
                    "tolerations": [{"key": "sandbox.gke.io/runtime", "operator": "Equal",
                        "value": "gvisor", "effect": "NoSchedule"}]},
                "overhead": {"podFixed": {"cpu": "250m", "memory": "160Mi"}}
            }))
            .unwrap(),
        )
        .with_simple_runtime_class("kata-qemu", "kata-qemu");
    let (m, _) = with(kata);
    let placed = check(&m, "cluster").await;
    assert_eq!(placed, offline);
}
