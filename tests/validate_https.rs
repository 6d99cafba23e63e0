//! `/validate` over real HTTPS: the shipped policies on upstream fixtures, and a watched policy
//! directory with warn and dryrun policies, hot-reloaded while a client keeps asking.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, fixture_docs, request_for, test_config};
use serde_json::{Value, json};

fn example(relative: &str, kind: &str) -> Value {
    fixture_docs(&format!("agent-sandbox/examples/{relative}"))
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {relative}"))
}

/// `[name]` of each line of a deny message.
fn denied_policies(response: &Value) -> Vec<String> {
    let message = response["status"]["message"].as_str().unwrap_or("");
    let mut names: Vec<String> = message
        .lines()
        .filter_map(|l| {
            l.strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .map(|(n, _)| n.to_owned())
        })
        .collect();
    names.dedup();
    names
}

#[tokio::test]
async fn shipped_policies_judge_upstream_examples_over_https() {
    let server = TestServer::start().await;
    let hello = example("hello-world-sandbox/hello-world.yaml", "Sandbox");
    // Judged as the pod it will become: admitted, with the hygiene warnings kubectl prints.
    let response = server
        .review("/validate", request_for(&hello, "CREATE", "team-a"))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    let warnings: Vec<&str> = response["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(
        warnings,
        [
            "[sandbox-resource-limits] containers[my-container]: resources.limits.cpu must be set",
            "[sandbox-resource-limits] containers[my-container]: resources.limits.memory must be set",
            "[sandbox-run-as-non-root] containers[my-container]: runAsNonRoot must be true",
        ]
    );
    assert_eq!(
        response["auditAnnotations"]["policies-warn"],
        "sandbox-resource-limits,sandbox-run-as-non-root"
    );

    // What the author writes is judged as written, and the message says so.
    let mut runc = hello.clone();
    runc["spec"]["podTemplate"]["spec"]["runtimeClassName"] = json!("runc");
    runc["spec"]["podTemplate"]["spec"]["automountServiceAccountToken"] = json!(true);
    let response = server
        .review("/validate", request_for(&runc, "CREATE", "team-a"))
        .await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(
        denied_policies(&response),
        // Policies report in file order.
        ["sandbox-automount-token", "sandbox-runtime-class"]
    );
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "runtimeClassName \"runc\" is not a sandboxed runtime (as written in the Sandbox)"
        ),
        "{message}"
    );
    assert!(
        response["auditAnnotations"]["policies-deny"]
            .as_str()
            .unwrap_or("")
            .contains("sandbox-runtime-class")
    );

    for (file, kind) in [
        (
            "warmpool-quickstart/sandboxwarmpool.yaml",
            "SandboxWarmPool",
        ),
        ("warmpool-quickstart/sandbox-claim.yaml", "SandboxClaim"),
    ] {
        let object = example(file, kind);
        let response = server
            .review("/validate", request_for(&object, "CREATE", "default"))
            .await;
        assert_eq!(response["allowed"], true, "{file}: {response}");
    }
    // DELETE is never judged.
    let response = server
        .review("/validate", request_for(&hello, "DELETE", "team-a"))
        .await;
    assert_eq!(response["allowed"], true);
    let (_, ready) = server.get_health("/readyz").await;
    assert!(ready.contains("policies serving"), "{ready}");
    server.stop().await;
}

const META: &str = "kinds: [{group: agents.x-k8s.io, kind: Sandbox}]\n";

fn policy(pkg: &str, msg: &str) -> String {
    format!(
        "package t.{pkg}\nviolation contains {{\"msg\": \"{msg}\"}} if input.review.object.spec.x == 1\n"
    )
}

fn sandbox() -> Value {
    json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
           "metadata": {"name": "sb", "namespace": "team"}, "spec": {"x": 1}})
}

#[tokio::test]
async fn warn_dryrun_and_hot_reload_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let tmp = dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.path().join(name)).unwrap();
    };
    write("w.rego", &policy("w", "careful"));
    write("w.yaml", &format!("{META}enforcementAction: warn\n"));
    write("d.rego", &policy("d", "quiet"));
    write("d.yaml", &format!("{META}enforcementAction: dryrun\n"));
    let mut config = test_config();
    config.policy.reload_debounce_ms = 50;
    let server = TestServer::start_with(config, Some(dir.path().to_path_buf())).await;
    let request = request_for(&sandbox(), "CREATE", "team");

    let response = server.review("/validate", request.clone()).await;
    assert_eq!(response["allowed"], true);
    assert_eq!(response["warnings"], json!(["[w] careful"]));
    assert_eq!(response["auditAnnotations"]["policies-dryrun"], "d");

    // Turn the warn policy into a deny; then break it; the client never sees a failure.
    write("w.yaml", META);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = server.review("/validate", request.clone()).await;
        if response["allowed"] == false {
            assert_eq!(response["status"]["message"], "[w] careful");
            break;
        }
        assert!(Instant::now() < deadline, "reload not seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    write("w.rego", "package t.w\nviolation contains msg if {\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, ready) = server.get_health("/readyz").await;
        let response = server.review("/validate", request.clone()).await;
        assert_eq!(
            response["status"]["message"], "[w] careful",
            "the last good set serves"
        );
        if ready.contains("w.rego:") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload failure not reported: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}
