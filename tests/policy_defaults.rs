//! The shipped policy set against real manifests: upstream examples and crafted violations.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use sandbox_admission::admission::AdmissionRequest;
use sandbox_admission::metrics::Metrics;
use sandbox_admission::policy::{PolicyConfig, PolicySource, PolicyStore};
use serde_json::{Value, json};

fn store() -> Arc<PolicyStore> {
    static STORE: OnceLock<Arc<PolicyStore>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            match PolicyStore::load(
                &PolicySource::Embedded,
                &PolicyConfig::default(),
                Arc::new(Metrics::new()),
            ) {
                Ok(s) => s,
                Err(e) => panic!("embedded policies do not load:\n{e}"),
            }
        })
        .clone()
}

fn examples(rel: &str) -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agent-sandbox/examples")
        .join(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter().filter(|d| d.is_object()).collect()
}

fn example(rel: &str, kind: &str) -> Value {
    examples(rel)
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {rel}"))
}

fn review(object: &Value, op: &str) -> AdmissionRequest {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    AdmissionRequest::from_value(json!({
        "uid": "u",
        "kind": {"group": group, "version": version, "kind": object["kind"]},
        "resource": {"group": group, "version": version, "resource": "x"},
        "operation": op,
        "namespace": object["metadata"]["namespace"].as_str().unwrap_or("default"),
        "name": object["metadata"]["name"],
        "object": object,
    }))
    .unwrap()
}

/// Names of the policies that fire, sorted and deduplicated.
fn fired(object: &Value, op: &str) -> Vec<String> {
    let mut names: Vec<String> = store()
        .evaluate(&review(object, op), None)
        .into_iter()
        .map(|h| h.policy)
        .collect();
    names.sort();
    names.dedup();
    names
}

fn hardened_spec() -> Value {
    json!({
        "runtimeClassName": "gvisor",
        "automountServiceAccountToken": false,
        "securityContext": {"runAsNonRoot": true},
        "containers": [{
            "name": "app", "image": "registry.k8s.io/pause:3.9",
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
        }],
    })
}

fn sandbox(version: &str, spec: Value) -> Value {
    json!({
        "apiVersion": format!("agents.x-k8s.io/{version}"), "kind": "Sandbox",
        "metadata": {"name": "sb", "namespace": "team"},
        "spec": {"podTemplate": {"spec": spec}},
    })
}

#[test]
fn the_unhardened_hello_world_sandbox_as_written_fires_exactly_these_policies() {
    // As written (no effective pod): the runtime is missing; limits and runAsNonRoot are hygiene
    // warnings. Automount and drop-ALL are left to the mutation.
    let sb = example("hello-world-sandbox/hello-world.yaml", "Sandbox");
    assert_eq!(
        fired(&sb, "CREATE"),
        [
            "sandbox-resource-limits",
            "sandbox-run-as-non-root",
            "sandbox-runtime-class",
        ]
    );
}

#[test]
fn the_secure_template_misses_only_what_it_does_not_set() {
    let t = example(
        "warmpool-quickstart/secure-sandboxtemplate.yaml",
        "SandboxTemplate",
    );
    assert_eq!(fired(&t, "CREATE"), ["sandbox-resource-limits"]);
}

#[test]
fn upstream_warm_pool_and_claim_are_allowed() {
    let pool = example(
        "warmpool-quickstart/sandboxwarmpool.yaml",
        "SandboxWarmPool",
    );
    assert!(fired(&pool, "CREATE").is_empty());
    let claim = example("warmpool-quickstart/sandbox-claim.yaml", "SandboxClaim");
    assert!(fired(&claim, "CREATE").is_empty());
}

#[test]
fn a_hardened_sandbox_passes_in_both_versions_and_a_v1alpha1_violation_is_caught() {
    for version in ["v1alpha1", "v1beta1"] {
        assert!(
            fired(&sandbox(version, hardened_spec()), "CREATE").is_empty(),
            "{version}"
        );
        assert!(
            fired(&sandbox(version, hardened_spec()), "UPDATE").is_empty(),
            "{version}"
        );
    }
    let mut spec = hardened_spec();
    spec["hostNetwork"] = json!(true);
    assert_eq!(
        fired(&sandbox("v1alpha1", spec), "CREATE"),
        ["sandbox-host-namespaces"]
    );
}

#[test]
fn a_sandbox_without_a_pod_spec_fails_closed() {
    let sb = json!({
        "apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
        "metadata": {"name": "sb", "namespace": "team"}, "spec": {},
    });
    assert_eq!(
        fired(&sb, "CREATE"),
        [
            "sandbox-capabilities",
            "sandbox-privileged",
            "sandbox-resource-limits",
            "sandbox-run-as-non-root",
            "sandbox-runtime-class",
        ]
    );
}

#[test]
fn a_sandbox_pod_without_runtime_class_is_denied_and_a_plain_pod_is_not_judged() {
    let mut spec = hardened_spec();
    spec.as_object_mut().unwrap().remove("runtimeClassName");
    let pod = |labels: Value| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "sb", "namespace": "team", "labels": labels},
            "spec": spec,
        })
    };
    let sandbox_pod = pod(json!({"agents.x-k8s.io/sandbox-name-hash": "0a1b2c3d"}));
    assert_eq!(fired(&sandbox_pod, "CREATE"), ["sandbox-runtime-class"]);
    assert!(fired(&pod(json!({"app": "web"})), "CREATE").is_empty());
    assert!(
        store()
            .evaluate(&review(&sandbox_pod, "DELETE"), None)
            .is_empty()
    );
}

#[test]
fn crafted_violations_name_their_policy() {
    let cases: Vec<(&str, Value)> = vec![
        ("sandbox-host-namespaces", json!({"hostPID": true})),
        (
            "sandbox-host-path",
            json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}),
        ),
        (
            "sandbox-sysctls",
            json!({"securityContext": {"runAsNonRoot": true, "sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]}}),
        ),
        (
            "sandbox-projected-token",
            json!({"volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]}),
        ),
        (
            "sandbox-automount-token",
            json!({"automountServiceAccountToken": true}),
        ),
        ("sandbox-runtime-class", json!({"runtimeClassName": "runc"})),
    ];
    for (policy, patch) in cases {
        let mut spec = hardened_spec();
        if let (Some(spec), Some(patch)) = (spec.as_object_mut(), patch.as_object()) {
            spec.extend(patch.clone());
        }
        assert_eq!(fired(&sandbox("v1beta1", spec), "CREATE"), [policy]);
    }
    let container_cases: Vec<(&str, Value)> = vec![
        (
            "sandbox-privileged",
            json!({"privileged": true, "capabilities": {"drop": ["ALL"]}}),
        ),
        (
            "sandbox-proc-mount",
            json!({"procMount": "Unmasked", "capabilities": {"drop": ["ALL"]}}),
        ),
        (
            "sandbox-capabilities",
            json!({"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}),
        ),
        (
            "sandbox-run-as-non-root",
            json!({"runAsNonRoot": false, "capabilities": {"drop": ["ALL"]}}),
        ),
    ];
    for (policy, security) in container_cases {
        let mut spec = hardened_spec();
        spec["containers"][0]["securityContext"] = security;
        assert_eq!(fired(&sandbox("v1beta1", spec), "CREATE"), [policy]);
    }
    let mut spec = hardened_spec();
    spec["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 80}]);
    assert_eq!(
        fired(&sandbox("v1beta1", spec), "CREATE"),
        ["sandbox-host-ports"]
    );
}

#[test]
fn sandbox_level_rules() {
    let mut sb = sandbox("v1beta1", hardened_spec());
    sb["spec"]["volumeClaimTemplates"] =
        json!([{"metadata": {"name": "w"}}, {"metadata": {"name": "w"}}]);
    assert_eq!(fired(&sb, "CREATE"), ["sandbox-volume-claim-templates"]);

    let mut sb = sandbox("v1beta1", hardened_spec());
    sb["metadata"]["name"] = json!("a".repeat(64));
    sb["spec"]["service"] = json!(true);
    assert_eq!(fired(&sb, "CREATE"), ["sandbox-service-name-length"]);

    let mut t = sandbox("v1beta1", hardened_spec());
    t["apiVersion"] = json!("extensions.agents.x-k8s.io/v1alpha1");
    t["kind"] = json!("SandboxTemplate");
    t["spec"]["networkPolicyManagement"] = json!("Unmanaged");
    t["spec"]["envVarsInjectionPolicy"] = json!("Overrides");
    assert_eq!(
        fired(&t, "UPDATE"),
        [
            "sandbox-env-injection-policy",
            "sandbox-network-policy-management"
        ]
    );
}

#[test]
fn warm_pool_and_claim_rules() {
    let mut pool = example(
        "warmpool-quickstart/sandboxwarmpool.yaml",
        "SandboxWarmPool",
    );
    pool["spec"]["replicas"] = json!(1000);
    pool["spec"]["sandboxTemplateRef"] = json!({});
    assert_eq!(
        fired(&pool, "CREATE"),
        ["warmpool-replicas", "warmpool-template-ref"]
    );

    let mut claim = example("warmpool-quickstart/sandbox-claim.yaml", "SandboxClaim");
    claim["spec"]["env"] = json!([{"name": "LD_PRELOAD", "value": "/evil.so"}]);
    claim["spec"]["additionalPodMetadata"] = json!({"labels": {"app": "sandbox-router"}});
    claim["spec"]["lifecycle"]["shutdownTime"] = json!("2020-01-01T00:00:00Z");
    assert_eq!(
        fired(&claim, "CREATE"),
        ["claim-env", "claim-pod-metadata", "claim-shutdown-time"]
    );
    // A past shutdown time only matters when the claim is created.
    assert_eq!(fired(&claim, "UPDATE"), ["claim-env", "claim-pod-metadata"]);
}

/// The shipped set runs on the compiled evaluator under both shipped profiles: the RVM compiles
/// it whole and agrees with the interpreter on the load probe (a fallback would be silent to
/// every other test, which judge verdicts, not the evaluator).
#[test]
fn the_shipped_set_runs_compiled_under_every_profile() {
    use sandbox_admission::policy::EvaluatorKind;
    assert_eq!(store().current().evaluator(), EvaluatorKind::Compiled);
    let strict = PolicyConfig {
        profile: "strict".into(),
        ..PolicyConfig::default()
    };
    let set = PolicyStore::load(&PolicySource::Embedded, &strict, Arc::new(Metrics::new()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.current().evaluator(), EvaluatorKind::Compiled);
    let interpreted = PolicyConfig {
        evaluator: sandbox_admission::policy::EvaluatorChoice::Interpreter,
        ..PolicyConfig::default()
    };
    let set = PolicyStore::load(
        &PolicySource::Embedded,
        &interpreted,
        Arc::new(Metrics::new()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(set.current().evaluator(), EvaluatorKind::Interpreter(why) if why.contains("policy.evaluator"))
    );
}
