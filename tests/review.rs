//! `review` (the real binary, offline) against the live server over HTTPS on the same inputs: the
//! answers must be equal, whatever mutation and the policies decide, because both go through the
//! same pipeline. Plus the exit codes and the request built around a bare object.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use common::{TestServer, fixture_docs, request_for, wrap};
use sandbox_admission::admission::Operation;
use sandbox_admission::request::{self, RequestDefaults};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_sandbox-admission");

fn review_bin(args: &[&str], input: &Path) -> Output {
    Command::new(BIN)
        .arg("review")
        .arg(input)
        .args(args)
        .env_remove("SANDBOX_ADMISSION_POLICIES")
        .env_remove("SANDBOX_ADMISSION_CONFIG")
        .output()
        .unwrap()
}

/// `v` with the mutation's admission time blanked out, in annotations, the audit summary and
/// inside the (decoded) patch. The live server and the `review` process stamp the second they run
/// in, and loading the policy set takes long enough that the two often straddle a second.
fn without_clock(v: &Value) -> Value {
    const KEY: &str = "sandbox-admission.io/admitted-at";
    // Keyed per process (the offline review has no serving key).
    const SEAL: &str = "sandbox-admission.io/admitted-at-seal";
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        (KEY, _) => json!("<time>"),
                        (SEAL, _) => json!("<seal>"),
                        ("patch", Value::String(b64)) => base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .ok()
                            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                            .map_or_else(|| v.clone(), |p| without_clock(&p)),
                        _ => without_clock(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_clock).collect()),
        Value::String(text) if text.contains("admitted-at=") => {
            let re = regex::Regex::new(r"admitted-at=\S+Z").unwrap();
            let text = re.replace_all(text, "admitted-at=<time>");
            let seal = regex::Regex::new(r"admitted-at-seal=[A-Za-z0-9_-]+").unwrap();
            json!(seal.replace_all(&text, "admitted-at-seal=<seal>"))
        }
        _ => v.clone(),
    }
}

/// Every JSON document the command printed.
fn json_docs(out: &Output) -> Vec<Value> {
    serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// FNV-1a, 32 bits: the controller's `sandbox-name-hash` label.
fn fnv1a32(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// A pod as the Agent Sandbox controller creates it for Sandbox `name`.
fn sandbox_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "team-a",
            "labels": {"agents.x-k8s.io/sandbox-name-hash": fnv1a32(name)},
            "ownerReferences": [{"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
                "name": name, "uid": "7d1c0a52-3f7e-4c1e-9d55-1b0f6c7a0a11",
                "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {"containers": [{"name": "agent", "image": "python:3.12-slim",
                                 "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}
    })
}

fn plain_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "team-a"},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

fn objects() -> Vec<Value> {
    let mut all = vec![plain_pod(), sandbox_pod("coder-1")];
    for f in [
        "examples/hello-world-sandbox/hello-world.yaml",
        "examples/kata-gke-sandbox/sandbox-kata-gke.yaml",
        "examples/warmpool-quickstart/sandboxtemplate.yaml",
        "examples/warmpool-quickstart/sandboxwarmpool.yaml",
        "examples/warmpool-quickstart/sandbox-claim.yaml",
    ] {
        all.extend(fixture_docs(&format!("agent-sandbox/{f}")));
    }
    assert!(all.len() >= 7);
    all
}

fn write(dir: &Path, name: &str, value: &Value) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn review_answers_exactly_what_the_server_answers() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    for (i, object) in objects().iter().enumerate() {
        for operation in ["CREATE", "UPDATE"] {
            let review = wrap(request_for(object, operation, "team-a"));
            let input = write(dir.path(), &format!("r{i}.json"), &review);
            for endpoint in ["mutate", "validate"] {
                let (status, live) = server
                    .post(
                        &format!("/{endpoint}"),
                        serde_json::to_vec(&review).unwrap(),
                    )
                    .await;
                assert_eq!(status, 200);
                let out = review_bin(&["-o", "json", "--endpoint", endpoint], &input);
                let offline = json_docs(&out);
                assert_eq!(
                    without_clock(&json!(offline)),
                    without_clock(&json!([live.clone()])),
                    "{endpoint} {operation} {object}"
                );
                let allowed = live["response"]["allowed"] == true;
                assert_eq!(out.status.code(), Some(if allowed { 0 } else { 1 }));
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn both_endpoints_validate_the_patched_pod_like_the_api_server() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let request = request_for(&sandbox_pod("coder-2"), "CREATE", "team-a");
    let input = write(dir.path(), "pod.json", &wrap(request.clone()));

    // The API server's sequence, by hand: /mutate, apply the patch, /validate the result.
    let mutated = server.review("/mutate", request.clone()).await;
    let mut patched = request["object"].clone();
    if let Some(b64) = mutated["patch"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let ops: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut patched, &ops).unwrap();
    }
    let mut second = request.clone();
    second["object"] = patched.clone();
    let validated = server.review("/validate", second).await;

    let out = review_bin(&["-o", "json", "--patched"], &input);
    let offline = json_docs(&out);
    assert_eq!(offline.len(), 1);
    assert_eq!(
        without_clock(&offline[0]["mutate"]["response"]),
        without_clock(&mutated)
    );
    assert_eq!(offline[0]["validate"]["response"], validated);
    assert_eq!(
        without_clock(&offline[0]["patchedObject"]),
        without_clock(&patched)
    );
    let allowed = mutated["allowed"] == true && validated["allowed"] == true;
    assert_eq!(offline[0]["allowed"], allowed);

    // Text and YAML say the same thing for people.
    let text = review_bin(&["--patched"], &input);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.starts_with("Pod team-a/coder-2: "), "{text}");
    assert!(
        text.contains("  mutate:")
            && text.contains("  validate:")
            && text.contains("patched object:"),
        "{text}"
    );
    let yaml = review_bin(&["-o", "yaml"], &input);
    let yaml: Value = serde_saphyr::from_slice(&yaml.stdout).unwrap();
    assert_eq!(yaml["object"], "Pod team-a/coder-2");
    assert_eq!(yaml["validate"]["allowed"], validated["allowed"]);
    server.stop().await;
}

#[tokio::test]
async fn a_bare_object_gets_the_request_the_api_server_would_send() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Multi-document YAML, namespace from --namespace, a fixed uid so the answers compare.
    let mut docs = Vec::new();
    for f in [
        "hello-world-sandbox/hello-world.yaml",
        "warmpool-quickstart/sandboxtemplate.yaml",
        "warmpool-quickstart/sandboxwarmpool.yaml",
        "warmpool-quickstart/sandbox-claim.yaml",
    ] {
        docs.extend(fixture_docs(&format!("agent-sandbox/examples/{f}")));
    }
    // The fixtures name `default`; a request for another namespace must not carry it.
    let conflicting = write(dir.path(), "conflict.json", &docs[1]);
    let out = review_bin(&["-n", "team-b"], &conflicting);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match"));
    for d in &mut docs {
        d["metadata"].as_object_mut().unwrap().remove("namespace");
    }
    let mut yaml = String::new();
    for d in &docs {
        yaml.push_str("---\n");
        yaml.push_str(&serde_saphyr::to_string(d).unwrap());
    }
    let input = dir.path().join("objects.yaml");
    std::fs::write(&input, &yaml).unwrap();
    let defaults = RequestDefaults {
        operation: Operation::Update,
        namespace: Some("team-b".into()),
        user: "alice".into(),
        groups: vec!["dev".into(), "system:authenticated".into()],
        uid: Some("fixed-uid".into()),
    };
    let args = [
        "-o",
        "json",
        "--endpoint",
        "validate",
        "--operation",
        "UPDATE",
        "-n",
        "team-b",
        "--user",
        "alice",
        "--groups",
        "dev,system:authenticated",
        "--uid",
        "fixed-uid",
    ];
    let out = review_bin(&args, &input);
    let offline = json_docs(&out);
    assert_eq!(offline.len(), docs.len());
    let resources = [
        "sandboxes",
        "sandboxtemplates",
        "sandboxwarmpools",
        "sandboxclaims",
    ];
    for ((doc, offline), resource) in docs.into_iter().zip(offline).zip(resources) {
        let req = request::request_for(doc, &defaults).unwrap();
        assert_eq!(req["namespace"], "team-b");
        assert_eq!(req["object"]["metadata"]["namespace"], "team-b");
        assert_eq!(req["operation"], "UPDATE");
        assert_eq!(req["resource"]["resource"], resource);
        let (_, live) = server
            .post("/validate", serde_json::to_vec(&wrap(req)).unwrap())
            .await;
        assert_eq!(offline, live);
    }
    server.stop().await;
}

#[test]
fn exit_codes_zero_one_two() {
    let dir = tempfile::tempdir().unwrap();
    let ok = write(dir.path(), "ok.json", &plain_pod());
    assert_eq!(review_bin(&[], &ok).status.code(), Some(0));

    // A request the pipeline denies today: its uid is readable, its operation is not.
    let mut broken = request_for(&plain_pod(), "CREATE", "team-a");
    broken["operation"] = json!("EXPLODE");
    let denied = write(dir.path(), "denied.json", &wrap(broken));
    let out = review_bin(&["-o", "json", "--endpoint", "validate"], &denied);
    assert_eq!(out.status.code(), Some(1));
    let answer = &json_docs(&out)[0]["response"];
    assert_eq!(answer["allowed"], false);
    assert_eq!(answer["status"]["code"], 400);
    let text = review_bin(&[], &denied);
    assert_eq!(text.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&text.stdout).contains("DENIED"));

    // A captured review is taken as given (a missing uid is filled in, as Gatekeeper takes it),
    // but one with nothing to review is refused, never allowed.
    let mut no_uid = request_for(&plain_pod(), "CREATE", "team-a");
    no_uid.as_object_mut().unwrap().remove("uid");
    let given = write(dir.path(), "no-uid.json", &wrap(no_uid));
    assert_eq!(review_bin(&[], &given).status.code(), Some(0));
    let mut no_object = request_for(&plain_pod(), "CREATE", "team-a");
    for key in ["uid", "kind", "resource", "object"] {
        no_object.as_object_mut().unwrap().remove(key);
    }
    let nothing = write(dir.path(), "no-object.json", &wrap(no_object));
    let out = review_bin(&["-o", "json", "--endpoint", "validate"], &nothing);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_docs(&out)[0]["response"]["allowed"], false);
    let bad_inputs: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"{ this is not json".to_vec()),
        ("bad yaml", b"a: [1, 2".to_vec()),
        ("scalar", b"42".to_vec()),
        (
            "no kind",
            br#"{"apiVersion": "v1", "metadata": {"name": "x"}}"#.to_vec(),
        ),
        ("empty", b"".to_vec()),
    ];
    for (what, body) in bad_inputs {
        let path = dir.path().join("bad");
        std::fs::write(&path, body).unwrap();
        let out = review_bin(&[], &path);
        assert_eq!(out.status.code(), Some(2), "{what}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("error"),
            "{what}"
        );
    }
    let missing = review_bin(&[], &dir.path().join("missing.yaml"));
    assert_eq!(missing.status.code(), Some(2));
    let conflict = review_bin(&["-o", "json", "--endpoint", "mutate", "--patched"], &ok);
    assert_eq!(conflict.status.code(), Some(2));
    let help = Command::new(BIN)
        .args(["review", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("Examples:"));
}
