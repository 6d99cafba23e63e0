//! The policy store end to end below HTTP: loading, rejecting bad sets, evaluating, time limits.

use std::path::Path;
use std::sync::Arc;

use sandbox_admission::admission::AdmissionRequest;
use sandbox_admission::metrics::Metrics;
use sandbox_admission::policy::{
    Action, EvaluatorChoice, PolicyConfig, PolicyHit, PolicySource, PolicyStore,
};
use serde_json::{Value, json};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn request(kind: &str, op: &str, ns: &str, object: Value) -> AdmissionRequest {
    AdmissionRequest::from_value(json!({
        "uid": "u1",
        "kind": {"group": "agents.x-k8s.io", "version": "v1beta1", "kind": kind},
        "resource": {"group": "agents.x-k8s.io", "version": "v1beta1", "resource": "sandboxes"},
        "operation": op, "namespace": ns, "name": "sb",
        "object": object,
    }))
    .unwrap()
}

fn sandbox(x: Value) -> AdmissionRequest {
    request(
        "Sandbox",
        "CREATE",
        "team",
        json!({"metadata": {"name": "sb"}, "spec": {"x": x}}),
    )
}

fn load(dir: &Path) -> Arc<PolicyStore> {
    load_with(dir, &PolicyConfig::default())
}

fn load_with(dir: &Path, config: &PolicyConfig) -> Arc<PolicyStore> {
    match PolicyStore::load(
        &PolicySource::Dir(dir.into()),
        config,
        Arc::new(Metrics::new()),
    ) {
        Ok(s) => s,
        Err(e) => panic!("load failed:\n{e}"),
    }
}

fn load_err(dir: &Path) -> String {
    match PolicyStore::load(
        &PolicySource::Dir(dir.into()),
        &PolicyConfig::default(),
        Arc::new(Metrics::new()),
    ) {
        Ok(_) => panic!("a broken set loaded"),
        Err(e) => e.to_string(),
    }
}

const SANDBOX_KIND: &str = "kinds: [{group: agents.x-k8s.io, kind: Sandbox}]\n";

/// A v1 policy that fires when `spec.x` equals its `bad` parameter.
fn equals_policy(dir: &Path, name: &str, extra_meta: &str) {
    write(
        dir,
        &format!("{name}.rego"),
        &format!(
            "package t.{name}\nviolation contains {{\"msg\": sprintf(\"x is %v\", [input.review.object.spec.x])}} if input.review.object.spec.x == input.parameters.bad\n"
        ),
    );
    write(
        dir,
        &format!("{name}.yaml"),
        &format!("{SANDBOX_KIND}{extra_meta}"),
    );
}

fn names(hits: &[PolicyHit]) -> Vec<&str> {
    hits.iter().map(|h| h.policy.as_str()).collect()
}

#[test]
fn v0_and_v1_policies_each_see_their_own_parameters() {
    let dir = tempfile::tempdir().unwrap();
    equals_policy(dir.path(), "one", "parameters: {bad: 1}\n");
    write(
        dir.path(),
        "two.rego",
        // The comment's bare `input` keeps this module on the `with input.parameters` path.
        "package t.two\n# compares input to a parameter\nviolation[{\"msg\": msg}] {\n  input.review.object.spec.x == input.parameters.bad\n  msg := \"two\"\n}\n",
    );
    write(
        dir.path(),
        "two.yaml",
        &format!("{SANDBOX_KIND}parameters: {{bad: 2}}\n"),
    );
    let store = load(dir.path());
    assert_eq!(store.status().policies, 2);
    assert_eq!(
        names(&store.evaluate(&sandbox(json!(1)), None)),
        vec!["one"]
    );
    let hits = store.evaluate(&sandbox(json!(2)), None);
    assert_eq!(
        hits,
        vec![PolicyHit {
            policy: "two".into(),
            action: Action::Deny,
            message: "two".into()
        }]
    );
    assert!(store.evaluate(&sandbox(json!(3)), None).is_empty());
}

#[test]
fn only_matching_policies_run_and_delete_is_never_judged() {
    let dir = tempfile::tempdir().unwrap();
    equals_policy(
        dir.path(),
        "one",
        "parameters: {bad: 1}\nexcludedNamespaces: [kube-*]\n",
    );
    let store = load(dir.path());
    let obj = json!({"metadata": {"name": "sb"}, "spec": {"x": 1}});
    assert!(
        store
            .evaluate(
                &request("Sandbox", "CREATE", "kube-system", obj.clone()),
                None
            )
            .is_empty()
    );
    assert!(
        store
            .evaluate(
                &request("SandboxTemplate", "CREATE", "team", obj.clone()),
                None
            )
            .is_empty()
    );
    assert!(
        store
            .evaluate(&request("Sandbox", "DELETE", "team", obj.clone()), None)
            .is_empty()
    );
    assert_eq!(
        store
            .evaluate(&request("Sandbox", "UPDATE", "team", obj), None)
            .len(),
        1
    );
}

#[test]
fn warn_and_dryrun_actions_are_carried_on_the_hits() {
    let dir = tempfile::tempdir().unwrap();
    equals_policy(
        dir.path(),
        "w",
        "parameters: {bad: 1}\nenforcementAction: warn\n",
    );
    equals_policy(
        dir.path(),
        "d",
        "parameters: {bad: 1}\nenforcementAction: dryrun\n",
    );
    let store = load(dir.path());
    let hits = store.evaluate(&sandbox(json!(1)), None);
    let actions: Vec<(&str, Action)> = hits.iter().map(|h| (h.policy.as_str(), h.action)).collect();
    assert_eq!(actions, vec![("d", Action::Dryrun), ("w", Action::Warn)]);
}

#[test]
fn namespace_object_reaches_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "ns.rego",
        "package t.ns\nviolation contains {\"msg\": \"untrusted namespace\"} if input.review.namespaceObject.metadata.labels.trust == \"low\"\n",
    );
    write(dir.path(), "ns.yaml", SANDBOX_KIND);
    let store = load(dir.path());
    let ns = json!({"metadata": {"name": "team", "labels": {"trust": "low"}}});
    assert_eq!(store.evaluate(&sandbox(json!(0)), Some(&ns)).len(), 1);
    assert!(store.evaluate(&sandbox(json!(0)), None).is_empty());
}

#[test]
fn a_parse_error_rejects_the_set_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    equals_policy(dir.path(), "good", "parameters: {bad: 1}\n");
    write(
        dir.path(),
        "broken.rego",
        "package t.broken\n\nviolation contains msg if {\n  msg := \n}\n",
    );
    write(dir.path(), "broken.yaml", SANDBOX_KIND);
    let err = load_err(dir.path());
    assert!(
        err.contains("broken.rego:4:") || err.contains("broken.rego:5:"),
        "{err}"
    );
    assert!(!err.contains("good"), "{err}");
}

#[test]
fn invalid_or_missing_metadata_rejects_the_set() {
    let dir = tempfile::tempdir().unwrap();
    equals_policy(dir.path(), "one", "enforcementAction: block\n");
    let err = load_err(dir.path());
    assert!(err.contains("one.yaml") && err.contains("block"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "lonely.rego",
        "package t.lonely\nviolation contains 1 if false\n",
    );
    let err = load_err(dir.path());
    assert!(
        err.contains("lonely.rego: policy has no metadata file"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "orphan.yaml", SANDBOX_KIND);
    let err = load_err(dir.path());
    assert!(
        err.contains("orphan.yaml: metadata file without a policy"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "noviolation.rego",
        "package t.nv\nallow := true\n",
    );
    write(dir.path(), "noviolation.yaml", SANDBOX_KIND);
    let err = load_err(dir.path());
    assert!(err.contains("defines no `violation` rule"), "{err}");
}

#[test]
fn a_parameter_of_the_wrong_type_is_rejected_at_load() {
    let dir = tempfile::tempdir().unwrap();
    equals_policy(
        dir.path(),
        "typed",
        "parameters: {bad: \"1\"}\nparametersSchema:\n  type: object\n  properties:\n    bad: {type: integer}\n",
    );
    let err = load_err(dir.path());
    assert!(
        err.contains("typed.yaml") && err.contains("parameters.bad must be of type integer"),
        "{err}"
    );
}

#[test]
fn an_undefined_reference_is_a_compile_error() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "u.rego",
        "package t.u\nviolation contains {\"msg\": m} if m := no_such_function(1)\n",
    );
    write(dir.path(), "u.yaml", SANDBOX_KIND);
    let err = load_err(dir.path());
    assert!(
        err.contains("u.rego:2:") && err.contains("no_such_function"),
        "{err}"
    );
}

#[test]
fn a_policy_that_errors_on_an_empty_review_is_named_at_load() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "good.rego",
        "package t.good\nviolation contains {\"msg\": \"x\"} if input.review.object.spec.x == 1\n",
    );
    write(dir.path(), "good.yaml", SANDBOX_KIND);
    write(
        dir.path(),
        "bad.rego",
        "package t.bad\nviolation contains {\"msg\": m} if m := concat(\",\", 1)\n",
    );
    write(dir.path(), "bad.yaml", SANDBOX_KIND);
    let err = load_err(dir.path());
    assert!(
        err.contains("bad.rego") && err.contains("fails on an empty review"),
        "{err}"
    );
    assert!(!err.contains("good.rego"), "{err}");
}

/// A policy that would run for hours: two nested loops of 10^5 (small memory, huge time).
const ENDLESS: &str = "package t.endless\nviolation contains {\"msg\": \"never\"} if {\n  input.review.object.spec.x == 1\n  some i in numbers.range(1, 100000)\n  some j in numbers.range(1, 100000)\n  i == j + 100000\n}\n";

#[test]
fn a_policy_that_never_finishes_hits_the_time_limit_and_denies() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "endless.rego", ENDLESS);
    write(dir.path(), "endless.yaml", SANDBOX_KIND);
    equals_policy(dir.path(), "other", "parameters: {bad: 1}\n");
    let config = PolicyConfig {
        evaluation_timeout_ms: 50,
        ..PolicyConfig::default()
    };
    let store = load_with(dir.path(), &config);
    let started = std::time::Instant::now();
    let hits = store.evaluate(&sandbox(json!(1)), None);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let endless = hits
        .iter()
        .find(|h| h.policy == "endless")
        .expect("endless reported");
    assert_eq!(endless.action, Action::Deny);
    assert!(
        endless.message.contains("fail closed"),
        "{}",
        endless.message
    );
    // The other policy's verdict survives the failed combined evaluation.
    assert!(
        hits.iter()
            .any(|h| h.policy == "other" && h.message == "x is 1"),
        "{hits:?}"
    );
}

#[test]
fn failure_policy_ignore_turns_an_error_into_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "endless.rego", ENDLESS);
    write(
        dir.path(),
        "endless.yaml",
        &format!("{SANDBOX_KIND}failurePolicy: ignore\n"),
    );
    let config = PolicyConfig {
        evaluation_timeout_ms: 20,
        ..PolicyConfig::default()
    };
    let hits = load_with(dir.path(), &config).evaluate(&sandbox(json!(1)), None);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].action, Action::Warn);
    assert!(
        hits[0].message.contains("failurePolicy: ignore"),
        "{}",
        hits[0].message
    );
}

#[test]
fn a_runtime_error_denies_naming_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "div.rego",
        "package t.div\nviolation contains {\"msg\": sprintf(\"%v\", [1 / input.review.object.spec.x])} if true\n",
    );
    write(dir.path(), "div.yaml", SANDBOX_KIND);
    let hits = load(dir.path()).evaluate(&sandbox(json!(0)), None);
    assert_eq!(names(&hits), vec!["div"]);
    assert_eq!(hits[0].action, Action::Deny);
    assert!(
        hits[0].message.starts_with("policy evaluation failed"),
        "{}",
        hits[0].message
    );
}

#[test]
fn libraries_are_shared_and_tests_are_not_served() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "lib.rego",
        "package lib.util\nis_bad(x) if x == 7\n",
    );
    write(
        dir.path(),
        "uses.rego",
        "package t.uses\nimport data.lib.util\nviolation contains {\"msg\": \"seven\"} if util.is_bad(input.review.object.spec.x)\n",
    );
    write(dir.path(), "uses.yaml", SANDBOX_KIND);
    write(
        dir.path(),
        "uses_test.rego",
        "package t.uses\ntest_x if false\n",
    );
    let store = load(dir.path());
    assert_eq!(store.status().policies, 1);
    assert_eq!(store.evaluate(&sandbox(json!(7)), None).len(), 1);
}

#[test]
fn a_recursive_policy_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "rec.rego",
        "package t.rec\nf(x) := y if y := f(x + 1)\nviolation contains {\"msg\": \"r\"} if f(input.review.object.spec.x)\n",
    );
    write(dir.path(), "rec.yaml", SANDBOX_KIND);
    let err = load_err(dir.path());
    assert!(err.contains("rec.rego:2: recursive function"), "{err}");
}

#[test]
fn a_recursive_rule_denies_at_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "rec.rego",
        "package t.rec\na := b if input.review.object.spec.x\nb := a if true\nviolation contains {\"msg\": \"r\"} if a\n",
    );
    write(dir.path(), "rec.yaml", SANDBOX_KIND);
    let hits = load(dir.path()).evaluate(&sandbox(json!(1)), None);
    assert_eq!(names(&hits), vec!["rec"]);
    assert_eq!(hits[0].action, Action::Deny);
    assert!(hits[0].message.contains("recursion"), "{}", hits[0].message);
}

/// A v1 policy `name` (package `t.NAME`) with `body`, judging Sandboxes.
fn sandbox_policy(dir: &Path, name: &str, body: &str) {
    let rego = format!("package t.{name}\nimport rego.v1\n{body}\n");
    write(dir, &format!("{name}.rego"), &rego);
    write(dir, &format!("{name}.yaml"), SANDBOX_KIND);
}

/// A chain of `n` rules, each reading the next, the last the request's `spec.x`.
fn rule_chain(dir: &Path, n: usize) {
    let mut body = String::new();
    for i in 0..n {
        body.push_str(&format!("r{i} := x if {{ x := r{} }}\n", i + 1));
    }
    body.push_str(&format!("r{n} := input.review.object.spec.x\n"));
    body.push_str("violation contains {\"msg\": sprintf(\"x is %v\", [r0])} if r0 == 7");
    sandbox_policy(dir, "chain", &body);
}

/// Regorus patch 18: rule evaluations nest on the native stack. A chain of rules thousands
/// long aborted the process (stack overflow) at load, and 512 deep on a request (a tokio
/// worker's 2 MiB stack); now either evaluator stops at 128 nested calls with an error, the
/// set is refused at load, and a chain well inside the bound is judged as OPA judges it.
#[test]
fn a_rule_chain_nests_within_a_bound_on_either_evaluator() {
    on_evaluation_stack(rule_chains_on_either_evaluator);
}

/// As the server's threads that evaluate policies run (`EVALUATION_STACK_BYTES`); the test
/// harness's own threads have 2 MiB.
fn on_evaluation_stack(f: fn()) {
    std::thread::Builder::new()
        .stack_size(sandbox_admission::policy::EVALUATION_STACK_BYTES)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

fn rule_chains_on_either_evaluator() {
    for evaluator in [EvaluatorChoice::Compiled, EvaluatorChoice::Interpreter] {
        let config = PolicyConfig {
            evaluator,
            ..PolicyConfig::default()
        };
        let shallow = tempfile::tempdir().unwrap();
        rule_chain(shallow.path(), 60);
        let store = load_with(shallow.path(), &config);
        let hits = store.evaluate(&sandbox(json!(7)), None);
        assert_eq!(names(&hits), vec!["chain"], "{evaluator:?}");
        assert_eq!(hits[0].message, "x is 7", "{evaluator:?}");
        assert!(store.evaluate(&sandbox(json!(8)), None).is_empty());

        for n in [200, 5000] {
            let deep = tempfile::tempdir().unwrap();
            rule_chain(deep.path(), n);
            let err = match PolicyStore::load(
                &PolicySource::Dir(deep.path().into()),
                &config,
                Arc::new(Metrics::new()),
            ) {
                Ok(_) => panic!("a chain of {n} rules loaded ({evaluator:?})"),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains("nested deeper than 128"),
                "{evaluator:?}, {n}: {err}"
            );
        }
    }
}

/// Regorus patch 17: nested collection literals parse once per level (they took 2^depth
/// parses: 18 levels 14 s, 24 levels hours) and count towards the parser's nesting limit
/// (unbounded, they overflowed the stack).
#[test]
fn nested_literals_parse_in_one_pass_and_within_the_nesting_limit() {
    on_evaluation_stack(nested_literals);
}

fn nested_literals() {
    let dir = tempfile::tempdir().unwrap();
    let depth = 24;
    let literal = format!("{}7{}", "[".repeat(depth), "]".repeat(depth));
    sandbox_policy(
        dir.path(),
        "nest",
        &format!(
            "want := {literal}\nviolation contains {{\"msg\": \"nested\"}} if input.review.object.spec.x == want"
        ),
    );
    let store = load(dir.path());
    let mut x = json!(7);
    for _ in 0..depth {
        x = json!([x]);
    }
    assert_eq!(names(&store.evaluate(&sandbox(x), None)), vec!["nest"]);
    assert!(store.evaluate(&sandbox(json!([7])), None).is_empty());

    for (what, text) in [
        (
            "arrays",
            format!("{}1{}", "[".repeat(20_000), "]".repeat(20_000)),
        ),
        (
            "arrays, one per line",
            format!("{}1{}", "[\n".repeat(2_000), "\n]".repeat(2_000)),
        ),
        (
            "objects",
            format!("{}1{}", "{\"a\": ".repeat(2_000), "}".repeat(2_000)),
        ),
        ("unary minus", format!("{}1", "- ".repeat(3_000))),
    ] {
        let dir = tempfile::tempdir().unwrap();
        sandbox_policy(
            dir.path(),
            "deep",
            &format!("x := {text}\nviolation contains {{\"msg\": \"d\"}} if x"),
        );
        let err = load_err(dir.path());
        assert!(err.contains("expression nesting too deep"), "{what}: {err}");
    }
}
