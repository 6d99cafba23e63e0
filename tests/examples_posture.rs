//! The default posture on every upstream example, over real HTTPS: each Sandbox and
//! SandboxTemplate goes to `/validate`; each Sandbox's pod, built the way the upstream controller
//! builds it, goes to `/mutate` and then, patched, to `/validate`.
//!
//! The expected verdict is read off each manifest by this test (what host-level privilege it
//! asks for), never listed by hand: an example that asks for none is admitted (with hygiene
//! warnings where it lacks limits or runAsNonRoot) and its pod lands in a sandboxed runtime and
//! is admitted; one that asks is refused, naming each rule it breaks.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use base64::Engine as _;
use common::{TestServer, request_for};
use serde_json::{Value, json};

const EXAMPLES: &str = "tests/fixtures/agent-sandbox/examples";

/// Sandbox runtime classes known without a cluster: the shipped policy's own parameter, read
/// from its metadata so the test follows the shipped file.
fn known_sandboxed_classes() -> BTreeSet<String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/runtime_class.yaml"),
    )
    .unwrap();
    let meta: Value = serde_saphyr::from_str(&text).unwrap();
    meta["parameters"]["sandboxedRuntimeClasses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Kubernetes' safe sysctls (Pod Security Standards, baseline).
const SAFE_SYSCTLS: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Every Sandbox and SandboxTemplate with containers in the examples, with its file.
fn examples() -> Vec<(String, Value)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(EXAMPLES);
    let mut files = Vec::new();
    common::yaml_files(&root, &mut files);
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let Ok(docs) = serde_saphyr::from_multiple::<Value>(&text) else {
            continue;
        };
        let rel = file.strip_prefix(&root).unwrap().display().to_string();
        for mut doc in docs {
            integral_floats_as_integers(&mut doc);
            let kind = doc["kind"].as_str().unwrap_or("");
            let containers = &doc["spec"]["podTemplate"]["spec"]["containers"];
            if matches!(kind, "Sandbox" | "SandboxTemplate")
                && containers.as_array().is_some_and(|c| !c.is_empty())
            {
                found.push((rel.clone(), doc));
            }
        }
    }
    found
}

/// The YAML reader gives `defaultMode: 0400` as the float 400.0; kubectl sends integers, and
/// the API server would refuse a float in an integer field. Make the fixture what it sends.
fn integral_floats_as_integers(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 1e15
            {
                *v = json!(f as i64);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(o) => o.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

fn containers(spec: &Value) -> Vec<&Value> {
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|f| spec[*f].as_array())
        .flatten()
        .collect()
}

/// The deny policies a pod spec must trip, from what it asks of the host.
fn host_privilege_asked(spec: &Value, known: &BTreeSet<String>) -> BTreeSet<&'static str> {
    let mut rules = BTreeSet::new();
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[field] == true {
            rules.insert("sandbox-host-namespaces");
        }
    }
    if spec["automountServiceAccountToken"] == true {
        rules.insert("sandbox-automount-token");
        // Nothing takes the ServiceAccount plugin's token volume out of such a pod.
    }
    if let Some(class) = spec["runtimeClassName"].as_str()
        && !known.contains(class)
    {
        rules.insert("sandbox-runtime-class");
    }
    for volume in spec["volumes"].as_array().into_iter().flatten() {
        if volume.get("hostPath").is_some() {
            rules.insert("sandbox-host-path");
        }
    }
    for sysctl in spec["securityContext"]["sysctls"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if !SAFE_SYSCTLS.contains(&sysctl["name"].as_str().unwrap_or("")) {
            rules.insert("sandbox-sysctls");
        }
    }
    for c in containers(spec) {
        let sc = &c["securityContext"];
        if sc["privileged"] == true {
            rules.insert("sandbox-privileged");
        }
        if sc["capabilities"]["add"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            rules.insert("sandbox-capabilities");
        }
        if sc["procMount"].as_str().is_some_and(|m| m != "Default") {
            rules.insert("sandbox-proc-mount");
        }
        for port in c["ports"].as_array().into_iter().flatten() {
            if port["hostPort"].as_u64().is_some_and(|p| p > 0) {
                rules.insert("sandbox-host-ports");
            }
        }
    }
    rules
}

/// The hygiene warnings an object must get: its pod spec's, and a template's opt-outs of
/// controller-managed settings (warned by default, refused under the strict profile).
fn hygiene_missing(object: &Value) -> BTreeSet<&'static str> {
    let mut rules = BTreeSet::new();
    let spec = &object["spec"]["podTemplate"]["spec"];
    if object["kind"] == "SandboxTemplate" {
        if object["spec"]["networkPolicyManagement"] == "Unmanaged" {
            rules.insert("sandbox-network-policy-management");
        }
        if object["spec"]["envVarsInjectionPolicy"] == "Overrides" {
            rules.insert("sandbox-env-injection-policy");
        }
    }
    let pod_non_root = spec["securityContext"]["runAsNonRoot"] == true;
    for c in containers(spec) {
        let limits = &c["resources"]["limits"];
        if limits.get("cpu").is_none() || limits.get("memory").is_none() {
            rules.insert("sandbox-resource-limits");
        }
        let own = &c["securityContext"]["runAsNonRoot"];
        let non_root = match own {
            Value::Bool(b) => *b,
            _ => pod_non_root,
        };
        if !non_root {
            rules.insert("sandbox-run-as-non-root");
        }
    }
    rules
}

fn policies_in(lines: impl Iterator<Item = String>) -> BTreeSet<String> {
    lines
        .filter_map(|l| {
            l.strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .map(|(n, _)| n.to_owned())
        })
        .collect()
}

fn denied(response: &Value) -> BTreeSet<String> {
    let message = response["status"]["message"].as_str().unwrap_or("");
    policies_in(message.lines().map(str::to_owned))
}

fn warned(response: &Value) -> BTreeSet<String> {
    policies_in(
        response["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str().map(str::to_owned)),
    )
}

/// FNV-1a, 32 bits, as 8 hex digits: the controller's `sandbox-name-hash` label.
fn fnv1a(name: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

/// The Pod the upstream controller creates for a Sandbox (DESIGN.md: one pod, named after the
/// Sandbox, with its template's metadata, the name-hash label and a controller ownerReference).
fn controller_pod(sandbox: &Value, namespace: &str) -> Value {
    let name = sandbox["metadata"]["name"].as_str().unwrap();
    let template = &sandbox["spec"]["podTemplate"];
    let mut labels = template["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels.insert(
        "agents.x-k8s.io/sandbox-name-hash".into(),
        json!(fnv1a(name)),
    );
    let mut metadata = json!({
        "name": name, "namespace": namespace, "labels": labels,
        "ownerReferences": [{"apiVersion": sandbox["apiVersion"], "kind": "Sandbox", "name": name,
            "uid": "0b8c7d1e-2f3a-4b5c-8d9e-0f1a2b3c4d5e", "controller": true, "blockOwnerDeletion": true}],
    });
    if let Some(a) = template["metadata"]["annotations"].as_object() {
        metadata["annotations"] = json!(a);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
}

fn patched(pod: &Value, response: &Value) -> Value {
    let mut out = pod.clone();
    if let Some(b64) = response["patch"].as_str() {
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        json_patch::patch(&mut out, &patch).unwrap();
    }
    out
}

#[tokio::test]
async fn every_upstream_example_gets_the_verdict_its_manifest_asks_for() {
    let known = known_sandboxed_classes();
    let server = TestServer::start().await;
    let all = examples();
    let sandboxes = all.iter().filter(|(_, d)| d["kind"] == "Sandbox").count();
    assert!(
        sandboxes >= 31,
        "expected the upstream Sandboxes, found {sandboxes}"
    );
    let (mut admitted, mut refused) = (0, 0);
    for (file, object) in &all {
        let kind = object["kind"].as_str().unwrap();
        let name = object["metadata"]["name"].as_str().unwrap_or("");
        let at = format!("{file} {kind}/{name}");
        let spec = &object["spec"]["podTemplate"]["spec"];
        let asks = host_privilege_asked(spec, &known);
        let hygiene = hygiene_missing(object);
        let namespace = "team-a";

        let response = server
            .review("/validate", request_for(object, "CREATE", namespace))
            .await;
        if asks.is_empty() {
            admitted += 1;
            assert_eq!(response["allowed"], true, "{at}: {response}");
            assert_eq!(
                warned(&response),
                hygiene.iter().map(|s| s.to_string()).collect(),
                "{at}: hygiene warnings {response}"
            );
        } else {
            refused += 1;
            assert_eq!(response["allowed"], false, "{at}: {response}");
            assert_eq!(response["status"]["code"], 403, "{at}");
            assert_eq!(
                denied(&response),
                asks.iter().map(|s| s.to_string()).collect(),
                "{at}: {response}"
            );
            // The author wrote what was refused, and the message says so.
            assert!(
                response["status"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("(as written in the {kind})")),
                "{at}: {response}"
            );
        }
        if kind != "Sandbox" {
            continue;
        }

        let pod = controller_pod(object, namespace);
        let mutation = server
            .review("/mutate", request_for(&pod, "CREATE", namespace))
            .await;
        assert_eq!(mutation["allowed"], true, "{at}: /mutate {mutation}");
        let pod = patched(&pod, &mutation);
        let class = pod["spec"]["runtimeClassName"].as_str().unwrap_or("");
        let response = server
            .review("/validate", request_for(&pod, "CREATE", namespace))
            .await;
        if asks.is_empty() {
            assert!(
                known.contains(class),
                "{at}: the pod runs in {class:?}, not a sandboxed runtime"
            );
            assert_eq!(pod["spec"]["automountServiceAccountToken"], false, "{at}");
            assert_eq!(response["allowed"], true, "{at}: pod {response}");
        } else {
            assert_eq!(response["allowed"], false, "{at}: pod {response}");
            let on_pod = denied(&response);
            for rule in &asks {
                assert!(
                    on_pod.contains(*rule),
                    "{at}: pod not refused by {rule}: {response}"
                );
            }
        }
    }
    eprintln!("examples: {admitted} admitted, {refused} refused");
    assert!(
        admitted > 0 && refused > 0,
        "admitted {admitted}, refused {refused}"
    );
    server.stop().await;
}

/// A malformed template is refused with a clear message, and no effective pod is built from it.
#[tokio::test]
async fn a_template_that_does_not_decode_is_refused_clearly() {
    let server = TestServer::start().await;
    for (spec, expect) in [
        (json!({"containers": {"name": "x"}}), "containers"),
        (
            json!({"containers": [{"name": "a", "image": "x", "ports": "80"}]}),
            "ports",
        ),
    ] {
        let sandbox = json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
            "metadata": {"name": "bad", "namespace": "team-a"},
            "spec": {"podTemplate": {"spec": spec}}});
        let response = server
            .review("/validate", request_for(&sandbox, "CREATE", "team-a"))
            .await;
        assert_eq!(response["allowed"], false, "{response}");
        let message = response["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("[sandbox-effective-pod]")
                && message.contains("is not a valid pod spec")
                && message.contains(expect),
            "{message}"
        );
    }
    server.stop().await;
}

/// With cluster access, a RuntimeClass is recognised by its handler: a class name no list knows
/// is admitted when its handler is sandboxed (`kata-*`, `runsc`), refused when it is `runc`.
#[tokio::test]
async fn runtime_classes_are_recognised_by_handler_with_cluster_access() {
    use sandbox_admission::cluster::{ClusterAccess, FakeCluster};
    use std::sync::Arc;
    let cluster: Arc<dyn ClusterAccess> = Arc::new(
        FakeCluster::new()
            .with_simple_runtime_class("gvisor", "runsc")
            .with_simple_runtime_class("confidential", "kata-qemu-snp")
            .with_simple_runtime_class("secure-gvisor", "runsc")
            .with_simple_runtime_class("fast", "runc"),
    );
    let server = TestServer::start_full(common::test_config(), None, Some(cluster), false).await;
    for (class, admitted) in [
        ("confidential", true),
        ("secure-gvisor", true),
        ("fast", false),
        ("missing-class", false),
    ] {
        let sandbox = json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
            "metadata": {"name": format!("rc-{class}"), "namespace": "team-a"},
            "spec": {"podTemplate": {"spec": {"runtimeClassName": class,
                "containers": [{"name": "app", "image": "busybox"}]}}}});
        let response = server
            .review("/validate", request_for(&sandbox, "CREATE", "team-a"))
            .await;
        assert_eq!(response["allowed"], admitted, "{class}: {response}");
        if !admitted {
            assert!(
                denied(&response).contains("sandbox-runtime-class"),
                "{class}: {response}"
            );
        }
        // The controller's pod is judged the same way.
        let pod = controller_pod(&sandbox, "team-a");
        let response = server
            .review("/validate", request_for(&pod, "CREATE", "team-a"))
            .await;
        assert_eq!(response["allowed"], admitted, "pod {class}: {response}");
    }
    server.stop().await;
}
