//! `scan` (the real binary) against the live server over HTTPS: every upstream example object
//! gets the verdict `/validate` gives it, whatever the policies currently decide. The expected
//! answers are asked of the server, never written down here, so a change of posture cannot make
//! this test stale.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use std::sync::Arc;

use common::{TestServer, request_for, test_config};
use sandbox_admission::cluster::FakeCluster;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_sandbox-admission");

fn scan_bin(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("scan")
        .args(args)
        .env_remove("SANDBOX_ADMISSION_POLICIES")
        .env_remove("SANDBOX_ADMISSION_CONFIG")
        .output()
        .unwrap()
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent-sandbox/examples")
}

/// Every YAML file under `dir`, hidden entries skipped, sorted.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

/// The documents of a file as the API server would receive them (List items one by one).
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    for doc in serde_saphyr::from_multiple::<Value>(&text).unwrap() {
        match doc {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind") == Some(&json!("List")) => {
                out.extend(m["items"].as_array().unwrap().iter().cloned());
            }
            other => out.push(other),
        }
    }
    out
}

const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "RuntimeClass",
    "StorageClass",
    "PriorityClass",
];

/// The request the API server sends for `object` on CREATE, namespace filled in.
fn create_request(mut object: Value) -> Value {
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let namespace = if CLUSTER_SCOPED.contains(&kind.as_str()) {
        String::new()
    } else {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        object["metadata"]["namespace"] = json!(ns);
        ns
    };
    let mut req = request_for(&object, "CREATE", &namespace);
    req["userInfo"] = json!({"username": "kubernetes-admin", "groups": ["system:authenticated"]});
    req
}

#[tokio::test]
async fn scan_of_the_upstream_examples_gives_the_verdicts_of_validate() {
    let dir = examples();
    let out = scan_bin(&[dir.to_str().unwrap(), "-o", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["summary"]["errors"], 0, "{}", report["errors"]);
    let scanned: BTreeMap<(String, u64), &Value> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                (
                    o["file"].as_str().unwrap().to_owned(),
                    o["document"].as_u64().unwrap(),
                ),
                o,
            )
        })
        .collect();

    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    // The server's watch caches hold what the scan read, so both judge against the same
    // data.inventory (the server builds it from its `sync` kinds, as the scan does).
    let cached: Vec<Value> = files
        .iter()
        .flat_map(|f| documents(f))
        .filter(|d| d["apiVersion"].is_string() && d["kind"].is_string())
        .map(|d| create_request(d)["object"].clone())
        .collect();
    // The configured profiles' RuntimeClasses exist, as `scan` (offline) assumes.
    let cluster = Arc::new(
        FakeCluster::new()
            .with_simple_runtime_class("gvisor", "runsc")
            .with_simple_runtime_class("kata-qemu", "kata-qemu")
            .with_objects(cached),
    );
    let server = TestServer::start_full(test_config(), None, Some(cluster), false).await;
    for _ in 0..500 {
        if server.running.admitter.metrics.inventory_objects.get() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(server.running.admitter.metrics.inventory_objects.get() > 0);
    let (mut compared, mut denied, mut allowed) = (0, 0, 0);
    for file in &files {
        for (i, doc) in documents(file).into_iter().enumerate() {
            let is_object = doc["apiVersion"].is_string() && doc["kind"].is_string();
            let client_side = doc["apiVersion"].as_str().is_some_and(|v| {
                v.starts_with("kustomize.config.k8s.io/") || v.starts_with("kind.x-k8s.io/")
            });
            let key = (file.display().to_string(), i as u64 + 1);
            let Some(entry) = scanned.get(&key) else {
                assert!(
                    !is_object || client_side,
                    "scan did not judge {key:?} ({})",
                    doc["kind"]
                );
                continue;
            };
            assert_eq!(entry["kind"], doc["kind"], "{key:?}");
            assert_eq!(entry["name"], doc["metadata"]["name"], "{key:?}");
            let answer = server.review("/validate", create_request(doc)).await;
            let verdict = match (answer["allowed"].as_bool(), answer["warnings"].is_array()) {
                (Some(false), _) => "denied",
                (Some(true), true) => "warned",
                (Some(true), false) => "allowed",
                (None, _) => panic!("no verdict for {key:?}: {answer}"),
            };
            assert_eq!(entry["verdict"], verdict, "{key:?}: {answer}");
            assert_eq!(
                entry["message"].as_str(),
                answer["status"]["message"]
                    .as_str()
                    .filter(|_| verdict == "denied"),
                "{key:?}"
            );
            let warnings: Vec<String> = entry["warnings"]
                .as_array()
                .map(|w| {
                    w.iter()
                        .map(|w| sandbox_admission::admission::clip_warning(w.as_str().unwrap()))
                        .collect()
                })
                .unwrap_or_default();
            let live: Vec<String> = answer["warnings"]
                .as_array()
                .map(|w| w.iter().map(|w| w.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            assert_eq!(warnings, live, "{key:?}");
            compared += 1;
            match verdict {
                "denied" => denied += 1,
                _ => allowed += 1,
            }
        }
    }
    assert_eq!(compared, scanned.len(), "every scanned object was compared");
    assert!(compared >= 150, "only {compared} objects in the examples");
    assert_eq!(
        report["summary"]["denied"], denied,
        "the summary counts what the server denies"
    );
    let expected_code = if denied > 0 { 1 } else { 0 };
    assert_eq!(out.status.code(), Some(expected_code));
    eprintln!("{compared} objects compared: {allowed} admitted, {denied} denied");
    server.stop().await;
}

#[test]
fn policy_report_output_and_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("pool.yaml");
    std::fs::write(
        &good,
        "apiVersion: extensions.agents.x-k8s.io/v1beta1\nkind: SandboxWarmPool\nmetadata: {name: p, namespace: team-a}\nspec: {replicas: 1, sandboxTemplateRef: {name: t}}\n---\nsteps: [not, an, object]\n",
    )
    .unwrap();
    let out = scan_bin(&[good.to_str().unwrap(), "-o", "policy-report"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["apiVersion"], "wgpolicyk8s.io/v1alpha2");
    assert_eq!(reports[0]["kind"], "PolicyReport");
    assert_eq!(reports[0]["metadata"]["namespace"], "team-a");
    // The pool's template is not in the input, so data.inventory (built from it) lacks it.
    assert_eq!(reports[0]["summary"]["warn"], 1);
    assert_eq!(
        reports[0]["results"][0]["policy"], "warmpool-template-exists",
        "{}",
        reports[0]
    );
    assert_eq!(reports[0]["results"][0]["resources"][0]["name"], "p");

    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, "a: [\n").unwrap();
    let out = scan_bin(&[tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.yaml"));

    let help = Command::new(BIN).args(["scan", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("GitOps"), "{help}");
    assert!(help.contains("kustomize build"), "{help}");
}
