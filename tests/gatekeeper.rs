//! Gatekeeper ConstraintTemplates and Constraints as a policy source, and the policy author's
//! commands run as the real binary: `policy verify` on gator suites, `policy check`, `policy test`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{TestServer, request_for, test_config};
use serde_json::{Value, json};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gatekeeper")
        .join(rel)
}

fn run(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_sandbox-admission"))
        .args(args)
        .output()
        .expect("run the binary");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or("")
}

fn verify(suite: &str) -> (i32, String, String) {
    let path = fixture(suite);
    run(&["policy", "verify", path.to_str().unwrap()])
}

#[test]
fn project_suite_passes() {
    let (code, out, err) = verify("suite.yaml");
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(last_line(&out), "7 passed, 0 failed", "{out}");
    for case in [
        "required-runtime / runc-denied",
        "required-runtime / update-changes-runtime",
        "allowed-repos-v1 / foreign-repo",
    ] {
        assert!(out.contains(&format!("suite.yaml: {case}")), "{out}");
    }
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn a_broken_assertion_fails_the_suite() {
    let (code, out, _) = verify("suite-broken.yaml");
    assert_ne!(code, 0, "{out}");
    assert_eq!(last_line(&out), "6 passed, 1 failed", "{out}");
    assert!(
        out.contains("FAIL ")
            && out.contains("required-runtime / gvisor-allowed")
            && out.contains("expected at least 1 violation, got 0"),
        "{out}"
    );
}

#[test]
fn upstream_example_runs_unchanged_with_and_without_inventory() {
    let (code, out, err) = verify("suite-upstream.yaml");
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(last_line(&out), "2 passed, 0 failed", "{out}");
}

#[test]
fn upstream_example_directory_loads_as_a_policy_directory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agent-sandbox/examples/policy/opa-gatekeeper");
    let (code, out, err) = run(&["policy", "check", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("prevent-active-sa-binding"), "{out}");
    assert!(out.contains("1 policies"), "{out}");
    assert!(out.contains("evaluator: rvm (compiled)"), "{out}");
}

#[test]
fn a_missing_suite_or_object_is_a_failure_not_a_pass() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("suite.yaml");
    let text = std::fs::read_to_string(fixture("suite.yaml"))
        .unwrap()
        .replace("template-", &format!("{}/template-", fixture("").display()))
        .replace(
            "constraint-",
            &format!("{}/constraint-", fixture("").display()),
        );
    std::fs::write(&suite, text).unwrap();
    let (code, out, _) = run(&["policy", "verify", suite.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("cannot read"), "{out}");
    assert_eq!(last_line(&out), "0 passed, 7 failed", "{out}");
    let (code, out, _) = run(&["policy", "verify", "/nonexistent/suite.yaml"]);
    assert_ne!(code, 0);
    assert_eq!(last_line(&out), "0 passed, 1 failed", "{out}");
}

#[test]
fn a_cel_only_template_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("template-cel-only.yaml"),
        dir.path().join("cel.yaml"),
    )
    .unwrap();
    let (code, _, err) = run(&["policy", "check", dir.path().to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("cel.yaml: document 1: ConstraintTemplate K8sSandboxCelOnly is unsupported")
            && err.contains("K8sNativeValidation"),
        "{err}"
    );
}

#[test]
fn templates_sit_beside_native_policies() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "template-required-runtime.yaml",
        "constraint-required-runtime.yaml",
    ] {
        std::fs::copy(fixture(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("native.rego"),
        "package native\nviolation contains {\"msg\": \"x\"} if input.review.object.spec.x\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("native.yaml"),
        "kinds: [{group: agents.x-k8s.io, kind: Sandbox}]\n",
    )
    .unwrap();
    let (code, out, err) = run(&["policy", "check", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("native ") && out.contains("sandbox-required-runtime"),
        "{out}"
    );
    // A template and a native policy compile together: no `with` in the generated module.
    assert!(out.contains("evaluator: rvm (compiled)"), "{out}");
    // Metadata beside a .rego stays metadata: a `kind` key there is an error, not a constraint.
    std::fs::write(
        dir.path().join("native.yaml"),
        "kind: K8sSandboxRequiredRuntime\nkinds: [{group: agents.x-k8s.io, kind: Sandbox}]\n",
    )
    .unwrap();
    let (code, _, err) = run(&["policy", "check", dir.path().to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("native.yaml") && err.contains("invalid metadata"),
        "{err}"
    );
}

#[test]
fn policy_test_fails_on_a_failing_rego_test() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t_test.rego"),
        "package t\n\ntest_two_is_one if 2 == 1\n",
    )
    .unwrap();
    let (code, out, err) = run(&["policy", "test", dir.path().to_str().unwrap()]);
    assert_ne!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(last_line(&out), "0 passed, 1 failed", "{out}");
    assert!(
        out.contains("t_test.rego:3: data.t.test_two_is_one FAIL"),
        "{out}"
    );
}

fn sandbox(name: &str, runtime: &str, image: &str) -> Value {
    json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
           "metadata": {"name": name, "namespace": "team-a"},
           "spec": {"podTemplate": {"spec": {"runtimeClassName": runtime,
               "containers": [{"name": "agent", "image": image}]}}}})
}

#[tokio::test]
async fn served_constraints_deny_warn_and_admit_over_https() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "template-required-runtime.yaml",
        "constraint-required-runtime.yaml",
        "template-allowed-repos.yaml",
    ] {
        std::fs::copy(fixture(f), dir.path().join(f)).unwrap();
    }
    // Two constraints of one template in a multi-document file, one of them only warning.
    std::fs::write(
        dir.path().join("repos.yaml"),
        "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sSandboxAllowedRepos\n\
         metadata: {name: repos-warn}\nspec:\n  enforcementAction: warn\n  match:\n    kinds: [{apiGroups: [agents.x-k8s.io], kinds: [Sandbox]}]\n  parameters: {repos: [registry.example.com/]}\n\
         ---\n\
         apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sSandboxAllowedRepos\n\
         metadata: {name: repos-deny-elsewhere}\nspec:\n  match:\n    namespaces: [prod-*]\n  parameters: {repos: [nothing.example.com/]}\n",
    )
    .unwrap();
    let server = TestServer::start_with(test_config(), Some(dir.path().to_path_buf())).await;

    let bad = sandbox("unsafe", "runc", "registry.example.com/a:1");
    let response = server
        .review("/validate", request_for(&bad, "CREATE", "team-a"))
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("[sandbox-required-runtime] Sandbox unsafe must set spec.podTemplate.spec.runtimeClassName to one of [\"gvisor\", \"kata\"], got \"runc\""),
        "{message}"
    );

    let good = sandbox("coder", "gvisor", "registry.example.com/a:1");
    let response = server
        .review("/validate", request_for(&good, "CREATE", "team-a"))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    assert!(
        response.get("warnings").is_none_or(Value::is_null),
        "{response}"
    );

    let foreign = sandbox("coder", "gvisor", "quay.io/x/a:1");
    let response = server
        .review("/validate", request_for(&foreign, "CREATE", "team-a"))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    let warnings = response["warnings"].to_string();
    assert!(
        warnings.contains(
            "[repos-warn] container agent image quay.io/x/a:1 is not from an allowed repository"
        ),
        "{response}"
    );
    // The second constraint of the template only judges prod-* namespaces, with its own parameters.
    let response = server
        .review("/validate", request_for(&foreign, "CREATE", "prod-eu"))
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("[repos-deny-elsewhere]") && message.contains("nothing.example.com/"),
        "{message}"
    );
    server.stop().await;
}

#[test]
fn a_reload_picks_up_changed_constraints_and_keeps_the_last_good_set() {
    use sandbox_admission::admission::AdmissionRequest;
    use sandbox_admission::metrics::Metrics;
    use sandbox_admission::policy::{PolicyConfig, PolicySource, PolicyStore};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("template-required-runtime.yaml"),
        dir.path().join("template.yaml"),
    )
    .unwrap();
    let constraint = std::fs::read_to_string(fixture("constraint-required-runtime.yaml")).unwrap();
    std::fs::write(dir.path().join("constraint.yaml"), &constraint).unwrap();
    let source = PolicySource::Dir(dir.path().to_path_buf());
    let store =
        PolicyStore::load(&source, &PolicyConfig::default(), Arc::new(Metrics::new())).unwrap();
    let req = AdmissionRequest::from_value(request_for(
        &sandbox("s", "kata", "registry.example.com/a:1"),
        "CREATE",
        "team-a",
    ))
    .unwrap();
    assert!(store.evaluate(&req, None).is_empty());

    std::fs::write(
        dir.path().join("constraint.yaml"),
        constraint.replace("\"gvisor\", \"kata\"", "\"gvisor\""),
    )
    .unwrap();
    assert_eq!(store.reload(&source).unwrap(), 1);
    let hits = store.evaluate(&req, None);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].policy, "sandbox-required-runtime");

    // A constraint of an unknown kind is refused; the previous set keeps serving.
    std::fs::write(
        dir.path().join("constraint.yaml"),
        constraint.replace("kind: K8sSandboxRequiredRuntime", "kind: K8sMissing"),
    )
    .unwrap();
    let err = store.reload(&source).unwrap_err().to_string();
    assert!(
        err.contains("constraint.yaml#1") && err.contains("K8sMissing"),
        "{err}"
    );
    assert_eq!(store.evaluate(&req, None).len(), 1);
}
