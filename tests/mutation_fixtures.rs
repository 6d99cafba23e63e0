//! Every Sandbox and SandboxTemplate pod template in the upstream examples, turned into the pod the
//! upstream controller would create and sent through the mutator.

mod common;

use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use sandbox_admission::admission::AdmissionRequest;
use sandbox_admission::cluster::{ClusterAccess, FakeCluster};
use sandbox_admission::config::Config;
use sandbox_admission::mutate::Mutator;
use sandbox_admission::mutate::labels::{is_label_value, name_hash};
use serde_json::{Value, json};

const PREFIX: &str = "sandbox-admission.io/";
const EXAMPLES: &str = "tests/fixtures/agent-sandbox/examples";

struct FixturePod {
    origin: String,
    pod: Value,
}

/// Documents of a file that are Sandboxes or SandboxTemplates with a full pod template.
fn templates(path: &Path) -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(path).unwrap();
    if !text.contains("podTemplate") {
        return Vec::new();
    }
    // kubectl reads YAML 1.1: `defaultMode: 0400` is octal.
    let options = serde_saphyr::options! { legacy_octal_numbers: true };
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(&text, options)
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    docs.into_iter()
        .filter(|d| {
            let api = d["apiVersion"].as_str().unwrap_or_default();
            let kind = d["kind"].as_str().unwrap_or_default();
            (kind == "Sandbox" && api.starts_with("agents.x-k8s.io/"))
                || (kind == "SandboxTemplate" && api.starts_with("extensions.agents.x-k8s.io/"))
        })
        .filter(|d| {
            d.pointer("/spec/podTemplate/spec/containers")
                .is_some_and(Value::is_array)
        })
        .map(|d| {
            let origin = format!(
                "{} {}/{}",
                path.strip_prefix(EXAMPLES).unwrap_or(path).display(),
                d["kind"].as_str().unwrap_or_default(),
                d["metadata"]["name"].as_str().unwrap_or_default()
            );
            (origin, d)
        })
        .collect()
}

/// What the API server hands a webhook: quantities written as YAML numbers (`cpu: 2`) are
/// strings, and empty fields (`image:` waiting for a value) are absent rather than null.
fn as_the_api_server_sends_it(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, child| !child.is_null());
            for (key, child) in map.iter_mut() {
                if matches!(key.as_str(), "limits" | "requests" | "overhead")
                    && let Value::Object(q) = child
                {
                    for value in q.values_mut() {
                        if let Value::Number(n) = value {
                            *value = Value::String(n.to_string());
                        }
                    }
                }
                as_the_api_server_sends_it(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(as_the_api_server_sends_it),
        _ => {}
    }
}

/// The pod the upstream controller creates for a Sandbox (or a Sandbox made from a template).
fn controller_pod(doc: &Value, index: usize) -> Value {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let doc_name = doc["metadata"]["name"].as_str().unwrap_or("sandbox");
    let (name, api_version) = if kind == "Sandbox" {
        (
            doc_name.to_owned(),
            doc["apiVersion"].as_str().unwrap().to_owned(),
        )
    } else {
        (
            format!("{doc_name}-x7k2p"),
            "agents.x-k8s.io/v1beta1".to_owned(),
        )
    };
    let namespace = doc["metadata"]["namespace"].as_str().unwrap_or("default");
    let template = &doc["spec"]["podTemplate"];
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels["agents.x-k8s.io/sandbox-name-hash"] = json!(name_hash(&name));
    let mut metadata = json!({
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "ownerReferences": [{
            "apiVersion": api_version, "kind": "Sandbox", "name": name,
            "uid": format!("5b0c6a1e-0000-4000-8000-{index:012}"),
            "controller": true, "blockOwnerDeletion": true
        }]
    });
    if let Some(a) = template["metadata"]["annotations"].as_object() {
        metadata["annotations"] = Value::Object(a.clone());
    }
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
        "spec": template["spec"].clone()});
    as_the_api_server_sends_it(&mut pod);
    pod
}

fn fixture_pods() -> Vec<FixturePod> {
    let mut files = Vec::new();
    common::yaml_files(Path::new(EXAMPLES), &mut files);
    let mut pods = Vec::new();
    for file in files {
        for (origin, doc) in templates(&file) {
            let pod = controller_pod(&doc, pods.len());
            pods.push(FixturePod { origin, pod });
        }
    }
    pods
}

fn request(pod: &Value) -> AdmissionRequest {
    AdmissionRequest::from_value(json!({
        "uid": "fixture", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": pod["metadata"]["namespace"], "name": pod["metadata"]["name"],
        "operation": "CREATE", "object": pod
    }))
    .unwrap()
}

/// Every leaf of `original` is in `patched` with the same value, apart from labels under our
/// prefix (which belong to this product and are rewritten).
fn assert_nothing_lost(origin: &str, original: &Value, patched: &Value, path: &str) {
    match original {
        Value::Object(map) => {
            for (key, child) in map {
                if path == "/metadata/labels" && key.starts_with(PREFIX) {
                    continue;
                }
                let escaped = key.replace('~', "~0").replace('/', "~1");
                let child_path = format!("{path}/{escaped}");
                let Some(other) = patched.get(key) else {
                    panic!("{origin}: {child_path} lost");
                };
                assert_nothing_lost(origin, child, other, &child_path);
            }
        }
        // Lists may only grow (capabilities.drop, tolerations) and keep their order.
        Value::Array(items) => {
            let other = patched.as_array().unwrap();
            assert!(other.len() >= items.len(), "{origin}: {path} shrank");
            for (i, item) in items.iter().enumerate() {
                assert_nothing_lost(origin, item, &other[i], &format!("{path}/{i}"));
            }
        }
        leaf => assert_eq!(leaf, patched, "{origin}: {path} changed"),
    }
}

fn cluster() -> Arc<dyn ClusterAccess> {
    Arc::new(
        FakeCluster::new()
            .with_simple_runtime_class("gvisor", "runsc")
            .with_simple_runtime_class("kata-qemu", "kata-qemu"),
    )
}

#[tokio::test]
async fn every_fixture_pod_is_mutated_validly_and_idempotently() {
    let config = Config::embedded().unwrap();
    let mutator = Mutator::new(&config.mutation, &config.label_prefix, Some(cluster()));
    let pods = fixture_pods();
    assert!(pods.len() >= 40, "found only {} pod templates", pods.len());

    for FixturePod { origin, pod } in &pods {
        // The controller's pod is itself a valid Pod, and k8s-openapi keeps all of it.
        let typed: Pod = serde_json::from_value(pod.clone())
            .unwrap_or_else(|e| panic!("{origin}: fixture pod is not a Pod: {e}"));
        assert_eq!(
            &serde_json::to_value(&typed).unwrap(),
            pod,
            "{origin}: fixture round trip"
        );

        let out = mutator.mutate(&request(pod)).await;
        assert_eq!(out.denial, None, "{origin}");
        assert!(!out.patch.is_empty(), "{origin}: no patch");
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &out.patch)
            .unwrap_or_else(|e| panic!("{origin}: patch does not apply: {e}"));
        // The engine's own diff gives exactly what the json-patch crate's diff would.
        assert_eq!(
            out.patch,
            json_patch::diff(pod, &patched).0,
            "{origin}: patch differs from json_patch::diff"
        );

        let typed: Pod = serde_json::from_value(patched.clone())
            .unwrap_or_else(|e| panic!("{origin}: mutated pod is not a Pod: {e}"));
        assert_eq!(
            serde_json::to_value(&typed).unwrap(),
            patched,
            "{origin}: schema round trip"
        );
        assert_nothing_lost(origin, pod, &patched, "");

        let spec = &patched["spec"];
        match pod["spec"]["runtimeClassName"].as_str() {
            Some(own) => assert_eq!(spec["runtimeClassName"], own, "{origin}"),
            None => {
                assert_eq!(spec["runtimeClassName"], "gvisor", "{origin}");
                assert_eq!(
                    patched["metadata"]["labels"][format!("{PREFIX}runtime")],
                    "gvisor"
                );
            }
        }
        assert!(
            spec.pointer("/securityContext/seccompProfile/type")
                .is_some(),
            "{origin}"
        );
        assert!(
            spec["automountServiceAccountToken"].is_boolean(),
            "{origin}"
        );
        if pod["spec"].get("automountServiceAccountToken").is_none() {
            assert_eq!(spec["automountServiceAccountToken"], false, "{origin}");
        }
        for list in ["containers", "initContainers"] {
            for c in spec[list].as_array().into_iter().flatten() {
                let sc = &c["securityContext"];
                let drop = sc["capabilities"]["drop"].as_array().unwrap();
                assert!(drop.iter().any(|d| d == "ALL"), "{origin}: {}", c["name"]);
                if sc["privileged"] != json!(true) {
                    assert!(
                        sc["allowPrivilegeEscalation"].is_boolean(),
                        "{origin}: {}",
                        c["name"]
                    );
                }
            }
        }
        let labels = &patched["metadata"]["labels"];
        let name = pod["metadata"]["name"].as_str().unwrap();
        if is_label_value(name) {
            assert_eq!(labels[format!("{PREFIX}sandbox-name")], name, "{origin}");
        } else {
            // Placeholder names (`${TEMPLATE_NAME}`) cannot be label values: kept as annotation.
            assert!(
                labels.get(format!("{PREFIX}sandbox-name")).is_none(),
                "{origin}"
            );
            let annotation = &patched["metadata"]["annotations"][format!("{PREFIX}sandbox-name")];
            assert_eq!(annotation, name, "{origin}");
        }
        assert_eq!(
            labels[format!("{PREFIX}sandbox-uid")],
            pod["metadata"]["ownerReferences"][0]["uid"],
            "{origin}"
        );
        assert_eq!(
            labels[format!("{PREFIX}network-profile")],
            "default",
            "{origin}"
        );
        let annotations = &patched["metadata"]["annotations"];
        let at = annotations[format!("{PREFIX}admitted-at")]
            .as_str()
            .unwrap();
        chrono::DateTime::parse_from_rfc3339(at).unwrap();
        assert_eq!(annotations[format!("{PREFIX}idle-timeout")], "1h");

        // The webhook's own clock is kept (not restarted) on reinvocation.
        let again = mutator.mutate(&request(&patched)).await;
        assert_eq!(again.denial, None, "{origin}");
        assert!(
            again.patch.is_empty(),
            "{origin}: second pass patched {:?}",
            again.patch
        );
        // One it did not write (here: moved) is not: the seal no longer matches.
        patched["metadata"]["annotations"][format!("{PREFIX}admitted-at")] =
            json!("2020-01-01T00:00:00Z");
        let forged = mutator.mutate(&request(&patched)).await;
        assert_eq!(forged.denial, None, "{origin}");
        let mut restored = patched.clone();
        json_patch::patch(&mut restored, &forged.patch).unwrap();
        assert_ne!(
            restored["metadata"]["annotations"][format!("{PREFIX}admitted-at")],
            "2020-01-01T00:00:00Z",
            "{origin}"
        );
    }
}

#[test]
fn fixtures_cover_both_kinds_and_both_versions() {
    let pods = fixture_pods();
    let has = |needle: &str| pods.iter().any(|p| p.origin.contains(needle));
    assert!(has(" Sandbox/") && has(" SandboxTemplate/"));
    let versions: Vec<_> = pods
        .iter()
        .map(|p| p.pod["metadata"]["ownerReferences"][0]["apiVersion"].clone())
        .collect();
    assert!(versions.contains(&json!("agents.x-k8s.io/v1beta1")));
}
