//! Closing the ways around the webhook, over real HTTPS: bookkeeping a Sandbox author cannot
//! forge, Sandboxes that try to pre-set it refused by name, and pods selected whatever marks they
//! drop (enforce mode decided by the server from its namespace cache).

mod common;
mod kube_mock;

use std::sync::Arc;

use base64::Engine as _;
use common::{TestServer, fixture_docs, request_for, test_config};
use sandbox_admission::cluster::{ClusterAccess, FakeCluster, KubeCluster, KubeClusterOptions};
use serde_json::{Value, json};

const P: &str = "sandbox-admission.io/";

fn hello_sandbox() -> Value {
    fixture_docs("agent-sandbox/examples/hello-world-sandbox/hello-world.yaml")
        .into_iter()
        .find(|d| d["kind"] == "Sandbox")
        .expect("hello-world Sandbox")
}

/// The lines of a deny message that come from `policy`.
fn lines_of(response: &Value, policy: &str) -> Vec<String> {
    let tag = format!("[{policy}] ");
    response["status"]["message"]
        .as_str()
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.strip_prefix(&tag).map(String::from))
        .collect()
}

/// The pod the controller creates for Sandbox `name`, carrying the template's metadata.
fn controller_pod(name: &str, labels: Value, annotations: Value) -> Value {
    let mut all_labels = json!({"agents.x-k8s.io/sandbox-name-hash": sandbox_admission::mutate::labels::name_hash(name)});
    for (k, v) in labels.as_object().cloned().unwrap_or_default() {
        all_labels[k] = v;
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "team", "labels": all_labels, "annotations": annotations,
            "ownerReferences": [{"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
                "name": name, "uid": "3c0e6a57-0000-4000-8000-00000000000a", "controller": true}]},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}
    })
}

fn apply_patch(pod: &Value, response: &Value) -> Value {
    let mut patched = pod.clone();
    if let Some(b64) = response["patch"].as_str() {
        assert_eq!(response["patchType"], "JSONPatch");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&raw).unwrap();
        json_patch::patch(&mut patched, &patch).unwrap();
    }
    patched
}

#[tokio::test]
async fn sandboxes_presetting_bookkeeping_are_refused_naming_each_key() {
    let server = TestServer::start().await;
    let mut sandbox = hello_sandbox();
    sandbox["spec"]["podTemplate"]["metadata"] = json!({
        "labels": {format!("{P}sandbox-uid"): "someone-else"},
        "annotations": {format!("{P}admitted-at"): "2030-01-01T00:00:00Z",
                        format!("{P}runtime"): "gvisor"}
    });
    let response = server
        .review("/validate", request_for(&sandbox, "CREATE", "team"))
        .await;
    assert_eq!(response["allowed"], false);
    let mut lines = lines_of(&response, "sandbox-reserved-metadata");
    lines.sort();
    assert_eq!(
        lines,
        [
            format!(
                "podTemplate.metadata.annotations: \"{P}admitted-at\" is reserved: sandbox-admission sets it at admission"
            ),
            format!(
                "podTemplate.metadata.labels: \"{P}sandbox-uid\" is reserved: sandbox-admission sets it at admission"
            ),
        ],
        "{response}"
    );

    // A template that only chooses its runtime profile is not refused for that.
    let mut template = json!({
        "apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
        "metadata": {"name": "t", "namespace": "team"},
        "spec": {"podTemplate": sandbox["spec"]["podTemplate"].clone()}
    });
    template["spec"]["podTemplate"]["metadata"] =
        json!({"annotations": {format!("{P}runtime"): "kata"}});
    let response = server
        .review("/validate", request_for(&template, "CREATE", "team"))
        .await;
    assert!(
        lines_of(&response, "sandbox-reserved-metadata").is_empty(),
        "{response}"
    );
    template["spec"]["podTemplate"]["metadata"] =
        json!({"annotations": {format!("{P}idle-timeout"): "87600h"}});
    let response = server
        .review("/validate", request_for(&template, "CREATE", "team"))
        .await;
    assert_eq!(response["allowed"], false);
    assert_eq!(
        lines_of(&response, "sandbox-reserved-metadata").len(),
        1,
        "{response}"
    );
    server.stop().await;
}

#[tokio::test]
async fn forged_bookkeeping_does_not_survive_create_and_reinvocation_is_empty() {
    let server = TestServer::start().await;
    // What the controller makes of a Sandbox whose template forged the idle clock, copied a
    // running pod's seal, and invented a key of its own.
    let pod = controller_pod(
        "box",
        json!({format!("{P}claimed"): "true", format!("{P}exempt"): "yes"}),
        json!({format!("{P}admitted-at"): "2030-01-01T00:00:00Z",
               format!("{P}admitted-at-seal"): "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
               format!("{P}idle-timeout"): "87600h",
               format!("{P}audit-exempt"): "true",
               format!("{P}network-profile"): "isolated"}),
    );
    let response = server
        .review("/mutate", request_for(&pod, "CREATE", "team"))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    let patched = apply_patch(&pod, &response);
    let (labels, annotations) = (
        &patched["metadata"]["labels"],
        &patched["metadata"]["annotations"],
    );
    let admitted = annotations[format!("{P}admitted-at")].as_str().unwrap();
    let admitted = chrono::DateTime::parse_from_rfc3339(admitted).unwrap();
    let age = chrono::Utc::now().signed_duration_since(admitted);
    assert!(
        age >= chrono::Duration::zero() && age < chrono::Duration::minutes(1),
        "admitted-at is the real admission time, got {admitted}"
    );
    assert_ne!(
        annotations[format!("{P}admitted-at-seal")],
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    );
    assert_eq!(annotations[format!("{P}idle-timeout")], "1h");
    assert!(annotations.get(format!("{P}audit-exempt")).is_none());
    assert_eq!(annotations[format!("{P}network-profile")], "isolated");
    assert!(labels.get(format!("{P}claimed")).is_none());
    assert!(labels.get(format!("{P}exempt")).is_none());
    assert_eq!(labels[format!("{P}network-profile")], "isolated");

    // reinvocationPolicy: IfNeeded sends the webhook its own output: an empty patch.
    let again = server
        .review("/mutate", request_for(&patched, "CREATE", "team"))
        .await;
    assert_eq!(again["allowed"], true);
    assert!(again.get("patch").is_none(), "{again}");

    // A copy of those annotations on another Sandbox's pod (a new UID) is not accepted.
    let mut copy = controller_pod("box", json!({}), patched["metadata"]["annotations"].clone());
    copy["metadata"]["ownerReferences"][0]["uid"] = json!("3c0e6a57-0000-4000-8000-00000000000b");
    let response = server
        .review("/mutate", request_for(&copy, "CREATE", "team"))
        .await;
    let ops = patch_paths(&response);
    assert!(
        ops.iter()
            .any(|p| p == "/metadata/annotations/sandbox-admission.io~1admitted-at-seal"),
        "{ops:?}"
    );
    server.stop().await;
}

fn patch_paths(response: &Value) -> Vec<String> {
    let Some(b64) = response["patch"].as_str() else {
        return Vec::new();
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let ops: Vec<Value> = serde_json::from_slice(&raw).unwrap();
    ops.iter()
        .filter_map(|o| o["path"].as_str().map(String::from))
        .collect()
}

fn fake(cluster: FakeCluster) -> Option<Arc<dyn ClusterAccess>> {
    Some(Arc::new(cluster))
}

async fn server_with_namespaces() -> TestServer {
    let cluster = FakeCluster::new()
        .with_simple_runtime_class("gvisor", "runsc")
        .with_simple_runtime_class("kata-qemu", "kata-qemu")
        .with_namespace("locked", &[(&format!("{P}isolation"), "enforce")])
        .with_namespace("team", &[]);
    TestServer::start_full(test_config(), None, fake(cluster), false).await
}

/// A pod with no Sandbox marks at all, as a Deployment or a user would create it.
fn plain_pod(namespace: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "escapee", "namespace": namespace, "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}
    })
}

#[tokio::test]
async fn enforce_namespace_mutates_and_validates_every_pod() {
    let server = server_with_namespaces().await;
    let pod = plain_pod("locked");
    let response = server
        .review("/mutate", request_for(&pod, "CREATE", "locked"))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(response["auditAnnotations"]["isolation"], "enforce");
    let patched = apply_patch(&pod, &response);
    assert_eq!(patched["spec"]["runtimeClassName"], "gvisor");
    assert_eq!(
        patched["spec"]["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        patched["metadata"]["labels"][format!("{P}network-profile")],
        "default"
    );
    let again = server
        .review("/mutate", request_for(&patched, "CREATE", "locked"))
        .await;
    assert!(again.get("patch").is_none(), "{again}");

    // Validated as a Sandbox pod: arriving without a sandboxed runtime (mutation skipped) is denied,
    // and so is a privileged container, which no mutation fixes.
    let response = server
        .review("/validate", request_for(&pod, "CREATE", "locked"))
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    assert!(
        !lines_of(&response, "sandbox-runtime-class").is_empty(),
        "{response}"
    );
    let mut privileged = patched.clone();
    privileged["spec"]["containers"][0]["securityContext"]["privileged"] = json!(true);
    let response = server
        .review("/validate", request_for(&privileged, "CREATE", "locked"))
        .await;
    assert!(
        !lines_of(&response, "sandbox-privileged").is_empty(),
        "{response}"
    );

    // The same pods in an ordinary namespace are not Sandbox pods: untouched and not judged.
    let pod = plain_pod("team");
    let response = server
        .review("/mutate", request_for(&pod, "CREATE", "team"))
        .await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
    let mut privileged = pod.clone();
    privileged["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
    let response = server
        .review("/validate", request_for(&privileged, "CREATE", "team"))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    server.stop().await;
}

#[tokio::test]
async fn pods_dropping_one_mark_are_still_sandbox_pods() {
    let server = server_with_namespaces().await;
    let full = controller_pod("box", json!({}), json!({}));
    let mut owner_only = full.clone();
    owner_only["metadata"]["labels"] = json!({"app": "x"});
    let mut label_only = full.clone();
    label_only["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    for (what, pod) in [("owner only", owner_only), ("label only", label_only)] {
        let response = server
            .review("/mutate", request_for(&pod, "CREATE", "team"))
            .await;
        let patched = apply_patch(&pod, &response);
        assert_eq!(patched["spec"]["runtimeClassName"], "gvisor", "{what}");
        let mut privileged = patched.clone();
        privileged["spec"]["containers"][0]["securityContext"]["privileged"] = json!(true);
        let response = server
            .review("/validate", request_for(&privileged, "CREATE", "team"))
            .await;
        assert!(
            !lines_of(&response, "sandbox-privileged").is_empty(),
            "{what}: {response}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn enforce_mode_is_decided_by_the_server_and_fails_closed() {
    // A plain pod reaching /mutate while the namespace cache is not usable is refused: the
    // server cannot tell whether its namespace enforces isolation, so it does not guess.
    let cluster = FakeCluster::new().unavailable("namespace cache not synced");
    let server = TestServer::start_full(test_config(), None, fake(cluster), false).await;
    let response = server
        .review(
            "/mutate",
            request_for(&plain_pod("locked"), "CREATE", "locked"),
        )
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().unwrap_or("");
    assert!(message.contains("enforce mode"), "{message}");
    server.stop().await;
}

/// The server's own namespace cache decides: a real `KubeCluster` (reflector over recorded API
/// responses, one namespace labelled for enforce mode) behind the HTTPS server.
#[tokio::test]
async fn enforce_mode_from_the_recorded_namespace_cache() {
    use kube_mock::{Reply, fixture, mock_api};
    let api = mock_api(|seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", _) if seen.is_watch() => Reply::OpenWatch,
        ("GET", "/apis/node.k8s.io/v1/runtimeclasses") => {
            Reply::Json(200, fixture("runtimeclasses-list.json"))
        }
        ("GET", "/api/v1/namespaces") => Reply::Json(200, fixture("namespaces-enforce-list.json")),
        ("PATCH", _) => Reply::Json(200, fixture("networkpolicy-apply-200.json")),
        _ => Reply::Json(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": "NotFound", "code": 404})
            .to_string(),
        ),
    });
    let cluster = KubeCluster::start(
        api.client.clone(),
        KubeClusterOptions {
            sync_wait: std::time::Duration::from_secs(5),
            ..Default::default()
        },
    );
    let server = TestServer::start_full(test_config(), None, Some(Arc::new(cluster)), false).await;
    // "agents" is labelled sandbox-admission.io/isolation=enforce; "team-a" is not.
    let pod = plain_pod("agents");
    let response = server
        .review("/mutate", request_for(&pod, "CREATE", "agents"))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(
        apply_patch(&pod, &response)["spec"]["runtimeClassName"],
        "gvisor"
    );
    let response = server
        .review("/validate", request_for(&pod, "CREATE", "agents"))
        .await;
    assert!(
        !lines_of(&response, "sandbox-runtime-class").is_empty(),
        "judged as a Sandbox pod: {response}"
    );
    let pod = plain_pod("team-a");
    let response = server
        .review("/mutate", request_for(&pod, "CREATE", "team-a"))
        .await;
    assert!(response.get("patch").is_none(), "{response}");
    assert!(
        api.direct()
            .iter()
            .all(|s| !s.path.starts_with("/api/v1/namespaces/")),
        "answered from the cache: {:?}",
        api.direct()
    );
    server.stop().await;
}
