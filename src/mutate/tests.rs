//! Mutator behaviour end to end, through `Mutator::mutate` with a fake cluster.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::cluster::{ClusterError, FakeCluster};
use crate::config::Config;
use crate::mutate::labels::name_hash;

mod outline;

const P: &str = "sandbox-admission.io/";
const ENFORCE_LABEL: &str = "sandbox-admission.io/isolation";

fn config() -> Config {
    Config::embedded().unwrap()
}

fn mutator_of(config: &Config, cluster: Option<Arc<dyn ClusterAccess>>) -> Mutator {
    Mutator::new(&config.mutation, &config.label_prefix, cluster)
}

fn sandbox_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "box", "namespace": "team",
            "labels": {"agents.x-k8s.io/sandbox-name-hash": name_hash("box"), "app": "x"},
            "ownerReferences": [{"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
                "name": "box", "uid": "9f1c2d3e-0000-4000-8000-000000000001", "controller": true,
                "blockOwnerDeletion": true}]
        },
        "spec": {"containers": [{"name": "main", "image": "busybox", "futureField": {"x": 1}}]}
    })
}

fn request(object: Value, operation: &str, dry_run: bool) -> AdmissionRequest {
    AdmissionRequest::from_value(json!({
        "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "team", "name": "box", "operation": operation, "dryRun": dry_run,
        "object": object, "oldObject": if operation == "UPDATE" { sandbox_pod() } else { Value::Null }
    }))
    .unwrap()
}

async fn run(m: &Mutator, pod: Value) -> (MutationOutcome, Value) {
    let out = m.mutate(&request(pod.clone(), "CREATE", false)).await;
    let mut patched = pod;
    json_patch::patch(&mut patched, &out.patch).unwrap();
    (out, patched)
}

fn offline() -> Mutator {
    mutator_of(&config(), None)
}

fn with(cluster: FakeCluster) -> (Mutator, Arc<FakeCluster>) {
    let cluster = Arc::new(cluster);
    let dyn_cluster: Arc<dyn ClusterAccess> = cluster.clone();
    (mutator_of(&config(), Some(dyn_cluster)), cluster)
}

fn both_classes() -> FakeCluster {
    FakeCluster::new()
        .with_simple_runtime_class("gvisor", "runsc")
        .with_simple_runtime_class("kata-qemu", "kata-qemu")
}

#[tokio::test]
async fn default_profile_full_mutation_and_idempotence() {
    let m = offline();
    let (out, pod) = run(&m, sandbox_pod()).await;
    assert_eq!(out.denial, None);
    assert_eq!(pod["spec"]["runtimeClassName"], "gvisor");
    assert_eq!(
        pod["spec"]["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["futureField"], json!({"x": 1}), "unknown fields survive");
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels[format!("{P}runtime")], "gvisor");
    assert_eq!(labels[format!("{P}network-profile")], "default");
    assert_eq!(labels[format!("{P}sandbox-name")], "box");
    assert_eq!(
        labels[format!("{P}sandbox-uid")],
        "9f1c2d3e-0000-4000-8000-000000000001"
    );
    assert_eq!(labels["app"], "x");
    let admitted = pod["metadata"]["annotations"][format!("{P}admitted-at")]
        .as_str()
        .unwrap();
    chrono::DateTime::parse_from_rfc3339(admitted).unwrap();
    assert_eq!(
        pod["metadata"]["annotations"][format!("{P}idle-timeout")],
        "1h"
    );
    assert_eq!(out.audit_annotations["runtime"], "gvisor");
    assert_eq!(out.audit_annotations["network-profile"], "default");
    assert!(out.mutations.iter().any(|m| m == "runtimeClassName=gvisor"));

    let (again, _) = run(&m, pod).await;
    assert!(again.patch.is_empty(), "{:?}", again.patch);
    assert!(again.mutations.is_empty(), "{:?}", again.mutations);
}

#[tokio::test]
async fn profile_from_annotation_then_namespace_then_default() {
    let cluster = both_classes().with_namespace(
        "team",
        &[
            ("sandbox-admission.io/runtime", "kata"),
            ("sandbox-admission.io/network-profile", "isolated"),
        ],
    );
    let (m, _) = with(cluster);
    let (_, pod) = run(&m, sandbox_pod()).await;
    assert_eq!(pod["spec"]["runtimeClassName"], "kata-qemu");
    assert_eq!(
        pod["metadata"]["labels"][format!("{P}network-profile")],
        "isolated"
    );

    let mut annotated = sandbox_pod();
    annotated["metadata"]["annotations"] = json!({
        "sandbox-admission.io/runtime": "gvisor", "sandbox-admission.io/network-profile": "default"});
    let (_, pod) = run(&m, annotated).await;
    assert_eq!(pod["spec"]["runtimeClassName"], "gvisor");
    assert_eq!(
        pod["metadata"]["labels"][format!("{P}network-profile")],
        "default"
    );

    let (m, _) = with(both_classes().with_namespace("team", &[]));
    let (_, pod) = run(&m, sandbox_pod()).await;
    assert_eq!(pod["spec"]["runtimeClassName"], "gvisor");
}

#[tokio::test]
async fn unknown_profile_is_denied() {
    let mut pod = sandbox_pod();
    pod["metadata"]["annotations"] = json!({"sandbox-admission.io/runtime": "runc"});
    let out = offline().mutate(&request(pod, "CREATE", false)).await;
    let denial = out.denial.unwrap();
    assert!(
        denial.contains("\"runc\"") && denial.contains("gvisor, kata"),
        "{denial}"
    );
    let mut pod = sandbox_pod();
    pod["metadata"]["annotations"] = json!({"sandbox-admission.io/network-profile": "open"});
    assert!(
        offline()
            .mutate(&request(pod, "CREATE", false))
            .await
            .denial
            .is_some()
    );
}

fn kata_class() -> k8s_openapi::api::node::v1::RuntimeClass {
    serde_json::from_value(json!({
        "metadata": {"name": "kata-qemu"}, "handler": "kata-qemu",
        "scheduling": {"nodeSelector": {"katacontainers.io/kata-runtime": "true"},
            "tolerations": [{"key": "sandbox.kata", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]},
        "overhead": {"podFixed": {"cpu": "250m", "memory": "160Mi"}}
    }))
    .unwrap()
}

fn kata_pod() -> Value {
    let mut pod = sandbox_pod();
    pod["metadata"]["annotations"] = json!({"sandbox-admission.io/runtime": "kata"});
    pod
}

#[tokio::test]
async fn kata_scheduling_and_overhead_from_the_live_class() {
    let (m, _) = with(FakeCluster::new().with_runtime_class(kata_class()));
    let mut pod = kata_pod();
    pod["spec"]["tolerations"] = json!([{"key": "other", "operator": "Exists"}]);
    let (out, patched) = run(&m, pod).await;
    assert_eq!(out.denial, None);
    let spec = &patched["spec"];
    assert_eq!(spec["runtimeClassName"], "kata-qemu");
    assert_eq!(
        spec["nodeSelector"]["katacontainers.io/kata-runtime"],
        "true"
    );
    assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
    assert_eq!(spec["overhead"], json!({"cpu": "250m", "memory": "160Mi"}));
    let (again, _) = run(&m, patched).await;
    assert!(again.patch.is_empty());
}

#[tokio::test]
async fn kata_scheduling_from_configuration_without_cluster() {
    let mut cfg = config();
    let kata = cfg.mutation.runtimes.get_mut("kata").unwrap();
    kata.node_selector.insert("runtime".into(), "kata".into());
    kata.tolerations =
        serde_json::from_value(json!([{"key": "kata", "operator": "Exists"}])).unwrap();
    kata.overhead.insert(
        "memory".into(),
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("120Mi".into()),
    );
    let m = mutator_of(&cfg, None);
    let (_, pod) = run(&m, kata_pod()).await;
    assert_eq!(pod["spec"]["nodeSelector"], json!({"runtime": "kata"}));
    assert_eq!(
        pod["spec"]["tolerations"],
        json!([{"key": "kata", "operator": "Exists"}])
    );
    assert_eq!(pod["spec"]["overhead"], json!({"memory": "120Mi"}));
}

#[tokio::test]
async fn conflicting_node_selector_is_denied() {
    let (m, cluster) = with(FakeCluster::new().with_runtime_class(kata_class()));
    let mut pod = kata_pod();
    pod["spec"]["nodeSelector"] = json!({"katacontainers.io/kata-runtime": "false"});
    let out = m.mutate(&request(pod, "CREATE", false)).await;
    let denial = out.denial.unwrap();
    assert!(
        denial.contains("katacontainers.io/kata-runtime=false"),
        "{denial}"
    );
    assert!(out.patch.is_empty());
    assert!(
        cluster.applied().is_empty(),
        "a refused pod causes no side effect"
    );
}

#[tokio::test]
async fn existing_runtime_class_is_kept() {
    let (m, _) = with(both_classes());
    let mut pod = sandbox_pod();
    pod["spec"]["runtimeClassName"] = json!("kata-vm-isolation");
    let (out, patched) = run(&m, pod).await;
    assert_eq!(out.denial, None);
    assert_eq!(patched["spec"]["runtimeClassName"], "kata-vm-isolation");
    assert!(
        patched["metadata"]["labels"]
            .get(format!("{P}runtime"))
            .is_none()
    );
    assert_eq!(out.audit_annotations["runtime-class"], "kata-vm-isolation");

    let mut pod = sandbox_pod();
    pod["spec"]["runtimeClassName"] = json!("kata-qemu");
    let (_, patched) = run(&m, pod).await;
    assert_eq!(patched["spec"]["runtimeClassName"], "kata-qemu");
    assert_eq!(patched["metadata"]["labels"][format!("{P}runtime")], "kata");
}

#[tokio::test]
async fn stricter_security_context_is_kept() {
    let mut pod = sandbox_pod();
    pod["spec"]["securityContext"] =
        json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "agent.json"}});
    pod["spec"]["automountServiceAccountToken"] = json!(false);
    pod["spec"]["containers"][0]["securityContext"] = json!({
        "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["NET_RAW", "ALL", "SYS_PTRACE"]}});
    let (_, patched) = run(&offline(), pod.clone()).await;
    assert_eq!(
        patched["spec"]["securityContext"],
        pod["spec"]["securityContext"]
    );
    assert_eq!(patched["spec"]["containers"], pod["spec"]["containers"]);
}

#[tokio::test]
async fn missing_runtime_class_denies_or_warns() {
    let (m, _) = with(FakeCluster::new().with_simple_runtime_class("gvisor", "runsc"));
    let out = m.mutate(&request(kata_pod(), "CREATE", false)).await;
    let denial = out.denial.unwrap();
    assert!(
        denial.contains("RuntimeClass \"kata-qemu\"") && denial.contains("onMissingRuntimeClass"),
        "{denial}"
    );

    let mut cfg = config();
    cfg.mutation.on_missing_runtime_class = OnFailure::Warn;
    let m = mutator_of(&cfg, Some(Arc::new(FakeCluster::new())));
    let (out, patched) = run(&m, kata_pod()).await;
    assert_eq!(out.denial, None);
    assert!(out.warnings[0].contains("kata-qemu"), "{:?}", out.warnings);
    assert!(patched["spec"].get("runtimeClassName").is_none());
    assert_eq!(
        patched["spec"]["automountServiceAccountToken"], false,
        "hardening still applies"
    );
    assert_eq!(out.audit_annotations["runtime"], "none");
}

#[tokio::test]
async fn unsynced_cluster_fails_closed() {
    let (m, _) = with(FakeCluster::new().unavailable("cache not synced"));
    let denial = m
        .mutate(&request(sandbox_pod(), "CREATE", false))
        .await
        .denial
        .unwrap();
    assert!(denial.contains("cache not synced"), "{denial}");
}

#[tokio::test]
async fn network_policy_applied_except_on_dry_run() {
    let (m, cluster) = with(both_classes());
    let dry = m.mutate(&request(sandbox_pod(), "CREATE", true)).await;
    assert!(cluster.applied().is_empty(), "dry-run has no side effect");
    let wet = m.mutate(&request(sandbox_pod(), "CREATE", false)).await;
    let applied = cluster.applied();
    assert_eq!(applied.len(), 1);
    assert_eq!(
        applied[0].metadata.name.as_deref(),
        Some("sandbox-admission-default")
    );
    assert_eq!(applied[0].metadata.namespace.as_deref(), Some("team"));
    assert!(
        wet.mutations
            .iter()
            .any(|m| m.contains("applied NetworkPolicy team/"))
    );
    // Same patch, apart from the admission time.
    let strip = |ops: &[json_patch::PatchOperation]| {
        let mut v = serde_json::to_value(ops).unwrap();
        v.as_array_mut().unwrap().iter_mut().for_each(|op| {
            if let Some(a) = op.pointer_mut("/value/sandbox-admission.io~1admitted-at") {
                *a = json!("t");
            }
        });
        v
    };
    assert_eq!(strip(&dry.patch), strip(&wet.patch));
}

#[tokio::test]
async fn network_policy_failure_denies_or_warns() {
    let forbidden = ClusterError::Api {
        code: 403,
        reason: "Forbidden".into(),
        message: "networkpolicies.networking.k8s.io is forbidden".into(),
    };
    let (m, _) = with(both_classes().failing_apply(forbidden.clone()));
    let denial = m
        .mutate(&request(sandbox_pod(), "CREATE", false))
        .await
        .denial
        .unwrap();
    assert!(
        denial.contains("team/sandbox-admission-default") && denial.contains("403"),
        "{denial}"
    );

    let mut cfg = config();
    cfg.mutation.on_network_policy_failure = OnFailure::Warn;
    let cluster: Arc<dyn ClusterAccess> = Arc::new(both_classes().failing_apply(forbidden));
    let out = mutator_of(&cfg, Some(cluster))
        .mutate(&request(sandbox_pod(), "CREATE", false))
        .await;
    assert_eq!(out.denial, None);
    assert_eq!(out.warnings.len(), 1);
}

#[tokio::test]
async fn other_requests_pass_untouched() {
    let m = offline();
    let mut plain = sandbox_pod();
    plain["metadata"] = json!({"name": "web", "ownerReferences": [{"apiVersion": "apps/v1",
        "kind": "ReplicaSet", "name": "web", "uid": "1", "controller": true}]});
    let out = m.mutate(&request(plain, "CREATE", false)).await;
    assert!(out.patch.is_empty() && out.denial.is_none() && out.mutations.is_empty());

    let out = m.mutate(&request(sandbox_pod(), "UPDATE", false)).await;
    assert!(out.patch.is_empty() && out.denial.is_none());

    let mut req = request(sandbox_pod(), "CREATE", false);
    req.sub_resource = Some("ephemeralcontainers".into());
    assert!(m.mutate(&req).await.patch.is_empty());

    let mut req = request(sandbox_pod(), "CREATE", false);
    req.kind.kind = "Sandbox".into();
    req.kind.group = "agents.x-k8s.io".into();
    assert!(m.mutate(&req).await.patch.is_empty());

    let mut cfg = config();
    cfg.mutation.enabled = false;
    assert!(
        mutator_of(&cfg, None)
            .mutate(&request(sandbox_pod(), "CREATE", false))
            .await
            .patch
            .is_empty()
    );
}

#[tokio::test]
async fn unreadable_pod_is_denied() {
    let mut pod = sandbox_pod();
    pod["metadata"]["labels"] = json!("not a map");
    let denial = offline()
        .mutate(&request(pod, "CREATE", false))
        .await
        .denial
        .unwrap();
    assert!(denial.contains("cannot be read"), "{denial}");

    // The spec is only read where mutation edits it, and a wrong shape there is named.
    let mut pod = sandbox_pod();
    pod["spec"]["containers"] = json!("not a list");
    let denial = offline()
        .mutate(&request(pod, "CREATE", false))
        .await
        .denial
        .unwrap();
    assert!(denial.contains("spec.containers is not a list"), "{denial}");
}

#[tokio::test]
async fn label_keys_with_slash_and_tilde_patch_correctly() {
    let mut cfg = config();
    cfg.label_prefix = "ex~ample.io/".into();
    let m = mutator_of(&cfg, None);
    let mut pod = sandbox_pod();
    pod["metadata"]["labels"]["a~b/c"] = json!("kept");
    let out = m.mutate(&request(pod.clone(), "CREATE", false)).await;
    let text = serde_json::to_string(&out.patch).unwrap();
    assert!(
        text.contains("/metadata/labels/ex~0ample.io~1runtime"),
        "{text}"
    );
    let mut patched = pod;
    json_patch::patch(&mut patched, &out.patch).unwrap();
    assert_eq!(
        patched["metadata"]["labels"]["ex~ample.io/runtime"],
        "gvisor"
    );
    assert_eq!(patched["metadata"]["labels"]["a~b/c"], "kept");
    assert!(
        m.mutate(&request(patched, "CREATE", false))
            .await
            .patch
            .is_empty()
    );
}

/// A pod with no Sandbox marks at all: no ownerReference, no name-hash label.
fn plain_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "box", "namespace": "team", "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}
    })
}

#[tokio::test]
async fn enforce_namespace_isolates_every_pod() {
    let (m, _) = with(both_classes().with_namespace("team", &[(ENFORCE_LABEL, "enforce")]));
    let (out, pod) = run(&m, plain_pod()).await;
    assert_eq!(out.denial, None);
    assert_eq!(pod["spec"]["runtimeClassName"], "gvisor");
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    assert_eq!(
        pod["metadata"]["labels"][format!("{P}network-profile")],
        "default"
    );
    assert!(
        pod["metadata"]["labels"]
            .get(format!("{P}sandbox-name"))
            .is_none()
    );
    assert_eq!(out.audit_annotations["isolation"], "enforce");
    let (again, _) = run(&m, pod).await;
    assert!(again.patch.is_empty(), "{:?}", again.patch);

    // The same pod elsewhere is no Sandbox pod; neither is it where the label says anything else.
    let (m, _) = with(both_classes().with_namespace("team", &[(ENFORCE_LABEL, "audit")]));
    assert!(run(&m, plain_pod()).await.0.patch.is_empty());
    let (m, _) = with(both_classes());
    assert!(run(&m, plain_pod()).await.0.patch.is_empty());
    assert!(
        offline()
            .mutate(&request(plain_pod(), "CREATE", false))
            .await
            .patch
            .is_empty()
    );
}

#[tokio::test]
async fn enforce_mode_fails_closed_when_the_namespace_cannot_be_read() {
    let (m, _) = with(FakeCluster::new().unavailable("cache not synced"));
    let out = m.mutate(&request(plain_pod(), "CREATE", false)).await;
    let denial = out.denial.expect("refused");
    assert!(denial.contains("enforce mode"), "{denial}");
}

#[tokio::test]
async fn a_pod_escaping_by_its_marks_is_still_isolated() {
    // Owned by a Sandbox but without the label: still a Sandbox pod.
    let mut owned = sandbox_pod();
    owned["metadata"]["labels"] = json!({"app": "x"});
    let (_, pod) = run(&offline(), owned).await;
    assert_eq!(pod["spec"]["runtimeClassName"], "gvisor");
    // The label without the owner: still a Sandbox pod.
    let mut labelled = sandbox_pod();
    labelled["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    let (_, pod) = run(&offline(), labelled).await;
    assert_eq!(pod["spec"]["runtimeClassName"], "gvisor");
}

#[tokio::test]
async fn forged_bookkeeping_does_not_survive_and_reinvocation_is_empty() {
    let m = offline();
    let mut forged = sandbox_pod();
    forged["metadata"]["annotations"] = json!({
        format!("{P}admitted-at"): "2030-01-01T00:00:00Z",
        format!("{P}idle-timeout"): "87600h",
        format!("{P}exempt"): "true",
        format!("{P}runtime"): "gvisor"
    });
    forged["metadata"]["labels"][format!("{P}trusted")] = json!("true");
    let (out, pod) = run(&m, forged).await;
    let a = &pod["metadata"]["annotations"];
    let admitted =
        chrono::DateTime::parse_from_rfc3339(a[format!("{P}admitted-at")].as_str().unwrap())
            .unwrap();
    assert!(admitted.timestamp() <= Utc::now().timestamp(), "{admitted}");
    assert_eq!(a[format!("{P}idle-timeout")], "1h");
    assert!(a.get(format!("{P}exempt")).is_none());
    assert_eq!(
        a[format!("{P}runtime")],
        "gvisor",
        "the profile choice is kept"
    );
    assert!(
        pod["metadata"]["labels"]
            .get(format!("{P}trusted"))
            .is_none()
    );
    assert!(
        out.mutations
            .iter()
            .any(|m| m.contains("not set by this webhook"))
    );

    // Reinvoked on its own output: nothing to do.
    let (again, _) = run(&m, pod.clone()).await;
    assert!(again.patch.is_empty(), "{:?}", again.patch);
    // Another replica with the same serving key verifies the seal too.
    let replica = offline();
    replica.seal().rotate(b"shared serving key");
    m.seal().rotate(b"shared serving key");
    let (_, sealed) = run(&m, sandbox_pod()).await;
    assert!(run(&replica, sealed.clone()).await.0.patch.is_empty());
    // An installation with another key does not.
    assert!(!run(&offline(), sealed).await.0.patch.is_empty());
}
