//! Fixture Sandbox pods through the real server's `/mutate` over HTTPS.

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::{TestServer, request_for, test_config};
use sandbox_admission::cluster::{ClusterAccess, FakeCluster};
use sandbox_admission::mutate::labels::name_hash;
use serde_json::{Value, json};

async fn start(cluster: Arc<FakeCluster>) -> TestServer {
    let cluster: Arc<dyn ClusterAccess> = cluster;
    TestServer::start_full(test_config(), None, Some(cluster), false).await
}

/// The pod the upstream controller creates for the first Sandbox or SandboxTemplate in `file`.
fn fixture_pod(file: &str) -> Value {
    let doc = common::fixture_docs(&format!("agent-sandbox/examples/{file}"))
        .into_iter()
        .find(|d| d["spec"]["podTemplate"]["spec"]["containers"].is_array())
        .unwrap_or_else(|| panic!("{file}: no pod template"));
    let name = format!("{}-1", doc["metadata"]["name"].as_str().unwrap());
    let template = &doc["spec"]["podTemplate"];
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels["agents.x-k8s.io/sandbox-name-hash"] = json!(name_hash(&name));
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "team-a", "labels": labels,
            "ownerReferences": [{"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
                "name": name, "uid": "7e0d1c2b-0000-4000-8000-00000000000a", "controller": true}]},
        "spec": template["spec"].clone()
    })
}

fn patch_of(response: &Value) -> json_patch::Patch {
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let b64 = response["patch"]
        .as_str()
        .expect("patch is a base64 string");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn fixture_pods_are_mutated_over_https() {
    let cluster = Arc::new(
        FakeCluster::new()
            .with_simple_runtime_class("gvisor", "runsc")
            .with_simple_runtime_class("kata-qemu", "kata-qemu"),
    );
    let server = start(cluster.clone()).await;
    for file in [
        "hello-world-sandbox/hello-world.yaml",
        "kata-aks/sandboxtemplate.yaml",
        "warmpool-quickstart/secure-sandboxtemplate.yaml",
        "jupyterlab/jupyterlab.yaml",
    ] {
        let pod = fixture_pod(file);
        let response = server
            .review("/mutate", request_for(&pod, "CREATE", "team-a"))
            .await;
        assert_eq!(response["allowed"], true, "{file}: {response}");
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &patch_of(&response)).unwrap();
        let expected_class = pod["spec"]["runtimeClassName"].as_str().unwrap_or("gvisor");
        assert_eq!(
            patched["spec"]["runtimeClassName"], expected_class,
            "{file}"
        );
        assert!(
            patched["spec"]["securityContext"]["seccompProfile"].is_object(),
            "{file}"
        );
        assert_eq!(
            patched["metadata"]["labels"]["sandbox-admission.io/network-profile"],
            "default"
        );
        let annotations = &response["auditAnnotations"];
        assert_eq!(annotations["network-profile"], "default", "{file}");
        assert!(annotations["mutations"].as_str().is_some(), "{file}");
        let _: k8s_openapi::api::core::v1::Pod = serde_json::from_value(patched.clone()).unwrap();

        let again = server
            .review("/mutate", request_for(&patched, "CREATE", "team-a"))
            .await;
        assert_eq!(again["allowed"], true);
        assert!(
            again.get("patch").is_none(),
            "{file}: second pass patched: {again}"
        );
    }
    // One NetworkPolicy apply per pod reached the cluster (the fake does not cache).
    assert_eq!(cluster.applied().len(), 8);
    server.stop().await;
}

#[tokio::test]
async fn refusals_and_dry_run_over_https() {
    let cluster = Arc::new(FakeCluster::new().with_simple_runtime_class("gvisor", "runsc"));
    let server = start(cluster.clone()).await;

    let mut pod = fixture_pod("hello-world-sandbox/hello-world.yaml");
    pod["metadata"]["annotations"] = json!({"sandbox-admission.io/runtime": "kata"});
    let response = server
        .review("/mutate", request_for(&pod, "CREATE", "team-a"))
        .await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("[mutation] ") && message.contains("kata-qemu"),
        "{message}"
    );
    assert!(response.get("patch").is_none());

    let mut request = request_for(
        &fixture_pod("hello-world-sandbox/hello-world.yaml"),
        "CREATE",
        "team-a",
    );
    request["dryRun"] = json!(true);
    let response = server.review("/mutate", request).await;
    assert_eq!(response["allowed"], true);
    assert!(!patch_of(&response).0.is_empty());
    assert!(cluster.applied().is_empty(), "dry-run applied nothing");
    server.stop().await;
}

#[tokio::test]
async fn a_pod_as_the_api_server_sends_it() {
    let cluster = Arc::new(FakeCluster::new().with_simple_runtime_class("gvisor", "runsc"));
    let server = start(cluster).await;
    let body =
        std::fs::read("tests/fixtures/api-server/admissionreview-sandbox-pod-create.json").unwrap();
    let review: Value = serde_json::from_slice(&body).unwrap();
    let (status, answer) = server.post("/mutate", body).await;
    assert_eq!(status, 200, "{answer}");
    let response = &answer["response"];
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], true, "{response}");
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch_of(response)).unwrap();
    let spec = &pod["spec"];
    assert_eq!(spec["runtimeClassName"], "gvisor");
    assert_eq!(spec["automountServiceAccountToken"], false);
    // The token the ServiceAccount plugin mounted before us is gone, not just switched off.
    assert!(spec.get("volumes").is_none(), "{spec}");
    assert!(spec["containers"][0].get("volumeMounts").is_none());
    assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
    assert_eq!(
        pod["metadata"]["labels"]["sandbox-admission.io/sandbox-name"],
        "hello-world"
    );
    assert_eq!(
        pod["metadata"]["managedFields"],
        review["request"]["object"]["metadata"]["managedFields"]
    );
    let typed: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), pod);
    server.stop().await;
}
