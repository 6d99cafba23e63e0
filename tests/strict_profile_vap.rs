//! The strict profile against upstream's ValidatingAdmissionPolicy example, evaluated by a real
//! CEL interpreter: the policy file itself (`examples/policy/vap/secure-sandbox-policy.yaml`)
//! is the reference. Each scenario (a compliant Sandbox, one violation of each of its 16
//! validations, and every upstream v1beta1 example Sandbox) gets the same verdict from
//! `serve --profile strict` over HTTPS as from the VAP, and every validation the VAP fails is
//! named by its own message.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use cel_interpreter::{Context, Program};
use common::{TestServer, request_for, test_config};
use serde_json::{Value, json};

struct Vap {
    all_containers: Program,
    /// (expression, message) in the policy's order.
    validations: Vec<(Program, String)>,
}

fn vap() -> Vap {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agent-sandbox/examples/policy/vap/secure-sandbox-policy.yaml");
    let policy: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let spec = &policy["spec"];
    let variables = spec["variables"].as_array().unwrap();
    assert_eq!(variables.len(), 1, "the test binds one variable");
    assert_eq!(variables[0]["name"], "allContainers");
    let compile = |e: &Value| Program::compile(e.as_str().unwrap().trim()).unwrap();
    Vap {
        all_containers: compile(&variables[0]["expression"]),
        validations: spec["validations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    compile(&v["expression"]),
                    v["message"].as_str().unwrap().to_owned(),
                )
            })
            .collect(),
    }
}

/// What the API server would do with the VAP: `None` when admitted, otherwise the messages of
/// the failed validations (an evaluation error fails the request: failurePolicy Fail).
fn vap_verdict(vap: &Vap, object: &Value) -> Option<BTreeSet<String>> {
    let mut context = Context::default();
    context.add_variable("object", object).unwrap();
    let mut failed = BTreeSet::new();
    // A variable that fails to evaluate fails each validation that reads it; the others still
    // run and report their own messages, as the API server does.
    match vap.all_containers.execute(&context) {
        Ok(all) => {
            let mut variables = HashMap::new();
            variables.insert("allContainers".to_string(), all);
            context.add_variable_from_value("variables", variables);
        }
        Err(e) => {
            failed.insert(format!("error: variables.allContainers: {e}"));
        }
    }
    for (program, message) in &vap.validations {
        match program.execute(&context) {
            Ok(cel_interpreter::Value::Bool(true)) => {}
            Ok(cel_interpreter::Value::Bool(false)) => {
                failed.insert(message.clone());
            }
            other => {
                failed.insert(format!("error: {other:?}"));
            }
        }
    }
    (!failed.is_empty()).then_some(failed)
}

fn compliant() -> Value {
    json!({
        "apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
        "metadata": {"name": "strict-ok", "namespace": "team-a"},
        "spec": {"podTemplate": {"spec": {
            "runtimeClassName": "gvisor",
            "automountServiceAccountToken": false,
            "nodeSelector": {"sandbox.gke.io/runtime": "gvisor"},
            "tolerations": [{"key": "sandbox.gke.io/runtime", "operator": "Equal", "value": "gvisor", "effect": "NoSchedule"}],
            "securityContext": {"runAsNonRoot": true},
            "containers": [{
                "name": "app", "image": "registry.k8s.io/pause:3.9",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
            }],
        }}},
    })
}

/// A change to the compliant pod spec.
type Edit = Box<dyn Fn(&mut Value)>;

/// One scenario per VAP validation (in its order), each breaking just that one, plus edge
/// cases of the CEL semantics (explicit false, empty lists, container-level overrides).
fn crafted() -> Vec<(String, Value)> {
    let edits: Vec<(&str, Edit)> = vec![
        (
            "1-runtime-kata",
            Box::new(|s| s["runtimeClassName"] = json!("kata-qemu")),
        ),
        (
            "1-runtime-missing",
            Box::new(|s| {
                s.as_object_mut().unwrap().remove("runtimeClassName");
            }),
        ),
        (
            "2-host-network",
            Box::new(|s| s["hostNetwork"] = json!(true)),
        ),
        (
            "2-host-network-false",
            Box::new(|s| s["hostNetwork"] = json!(false)),
        ),
        (
            "3-automount-missing",
            Box::new(|s| {
                s.as_object_mut()
                    .unwrap()
                    .remove("automountServiceAccountToken");
            }),
        ),
        (
            "3-automount-true",
            Box::new(|s| s["automountServiceAccountToken"] = json!(true)),
        ),
        (
            "4-privileged",
            Box::new(|s| s["containers"][0]["securityContext"]["privileged"] = json!(true)),
        ),
        (
            "4-privileged-false",
            Box::new(|s| s["containers"][0]["securityContext"]["privileged"] = json!(false)),
        ),
        (
            "5-no-drop",
            Box::new(|s| s["containers"][0]["securityContext"]["capabilities"] = json!({})),
        ),
        (
            "5-init-without-context",
            Box::new(
                |s| s["initContainers"] = json!([{"name": "init", "image": "busybox", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]),
            ),
        ),
        (
            "6-no-memory-limit",
            Box::new(|s| s["containers"][0]["resources"] = json!({"limits": {"cpu": "1"}})),
        ),
        (
            "7-container-root",
            Box::new(|s| s["containers"][0]["securityContext"]["runAsNonRoot"] = json!(false)),
        ),
        (
            "7-pod-unset-container-true",
            Box::new(|s| {
                s.as_object_mut().unwrap().remove("securityContext");
                s["containers"][0]["securityContext"]["runAsNonRoot"] = json!(true);
            }),
        ),
        (
            "7-pod-unset",
            Box::new(|s| {
                s.as_object_mut().unwrap().remove("securityContext");
            }),
        ),
        (
            "8-projected-token",
            Box::new(
                |s| s["volumes"] = json!([{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]),
            ),
        ),
        (
            "8-projected-configmap",
            Box::new(|s| {
                s["volumes"] =
                    json!([{"name": "c", "projected": {"sources": [{"configMap": {"name": "x"}}]}}])
            }),
        ),
        (
            "9-host-path",
            Box::new(|s| s["volumes"] = json!([{"name": "h", "hostPath": {"path": "/"}}])),
        ),
        (
            "10-cap-add",
            Box::new(|s| {
                s["containers"][0]["securityContext"]["capabilities"]["add"] =
                    json!(["NET_BIND_SERVICE"])
            }),
        ),
        (
            "10-cap-add-empty",
            Box::new(|s| s["containers"][0]["securityContext"]["capabilities"]["add"] = json!([])),
        ),
        ("11-host-pid", Box::new(|s| s["hostPID"] = json!(true))),
        ("11-host-ipc", Box::new(|s| s["hostIPC"] = json!(true))),
        (
            "12-host-port",
            Box::new(|s| {
                s["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 8080}])
            }),
        ),
        (
            "12-container-port",
            Box::new(|s| s["containers"][0]["ports"] = json!([{"containerPort": 80}])),
        ),
        (
            "13-sysctl",
            Box::new(|s| {
                s["securityContext"]["sysctls"] =
                    json!([{"name": "net.ipv4.tcp_syncookies", "value": "1"}])
            }),
        ),
        (
            "13-sysctls-empty",
            Box::new(|s| s["securityContext"]["sysctls"] = json!([])),
        ),
        (
            "14-unmasked",
            Box::new(|s| s["containers"][0]["securityContext"]["procMount"] = json!("Unmasked")),
        ),
        (
            "14-default",
            Box::new(|s| s["containers"][0]["securityContext"]["procMount"] = json!("Default")),
        ),
        (
            "15-no-node-selector",
            Box::new(|s| {
                s.as_object_mut().unwrap().remove("nodeSelector");
            }),
        ),
        (
            "16-wrong-toleration",
            Box::new(|s| s["tolerations"][0]["effect"] = json!("NoExecute")),
        ),
        (
            "no-containers",
            Box::new(|s| {
                s.as_object_mut().unwrap().remove("containers");
            }),
        ),
    ];
    edits
        .into_iter()
        .map(|(name, edit)| {
            let mut sandbox = compliant();
            sandbox["metadata"]["name"] = json!(format!("strict-{name}"));
            edit(&mut sandbox["spec"]["podTemplate"]["spec"]);
            (name.to_owned(), sandbox)
        })
        .collect()
}

fn upstream_v1beta1_sandboxes() -> Vec<(String, Value)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent-sandbox/examples");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if !matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                continue;
            }
            let Ok(docs) =
                serde_saphyr::from_multiple::<Value>(&std::fs::read_to_string(&path).unwrap())
            else {
                continue;
            };
            for doc in docs {
                if doc["kind"] == "Sandbox" && doc["apiVersion"] == "agents.x-k8s.io/v1beta1" {
                    let rel = path.strip_prefix(&root).unwrap().display().to_string();
                    out.push((rel, doc));
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test]
async fn the_strict_profile_gives_the_vap_verdict_on_every_scenario() {
    let vap = vap();
    let mut config = test_config();
    config.policy.profile = "strict".into();
    let server = TestServer::start_full(
        config,
        None,
        None::<Arc<dyn sandbox_admission::cluster::ClusterAccess>>,
        true,
    )
    .await;
    let mut scenarios = crafted();
    let upstream = upstream_v1beta1_sandboxes();
    assert!(
        upstream.len() >= 20,
        "upstream v1beta1 Sandboxes: {}",
        upstream.len()
    );
    scenarios.extend(upstream);
    let (mut admitted, mut refused) = (0, 0);
    for (name, sandbox) in &scenarios {
        let expected = vap_verdict(&vap, sandbox);
        let response = server
            .review("/validate", request_for(sandbox, "CREATE", "team-a"))
            .await;
        match &expected {
            None => {
                admitted += 1;
                assert_eq!(
                    response["allowed"], true,
                    "{name}: the VAP admits it: {response}"
                );
            }
            Some(failed) => {
                refused += 1;
                assert_eq!(
                    response["allowed"], false,
                    "{name}: the VAP refuses {failed:?}: {response}"
                );
                let message = response["status"]["message"].as_str().unwrap();
                for m in failed.iter().filter(|m| !m.starts_with("error:")) {
                    assert!(
                        message.contains(&format!("[sandbox-strict] {m}")),
                        "{name}: VAP message {m:?} missing from {message}"
                    );
                }
                // The strict rule names no more VAP validations than the VAP failed.
                let strict_lines = message
                    .lines()
                    .filter_map(|l| l.strip_prefix("[sandbox-strict] "))
                    .filter(|l| vap.validations.iter().any(|(_, m)| m == l))
                    .count();
                assert_eq!(
                    strict_lines,
                    failed.iter().filter(|m| !m.starts_with("error:")).count(),
                    "{name}: {message}"
                );
            }
        }
    }
    // The compliant scenario is admitted, every single violation refused.
    assert!(admitted >= 8, "admitted {admitted}");
    assert!(refused >= 20, "refused {refused}");
    eprintln!(
        "strict vs VAP: {} scenarios, {admitted} admitted, {refused} refused, all agreeing",
        scenarios.len()
    );
    server.stop().await;
}

/// The default profile leaves the strict rule out entirely.
#[tokio::test]
async fn the_default_profile_does_not_run_the_strict_rule() {
    let server = TestServer::start().await;
    let mut sandbox = compliant();
    sandbox["spec"]["podTemplate"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("nodeSelector");
    let response = server
        .review("/validate", request_for(&sandbox, "CREATE", "team-a"))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    server.stop().await;
}
