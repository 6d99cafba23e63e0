use serde_json::json;

use super::super::{PolicyConfig, PolicySet, SourceFile};
use crate::admission::AdmissionRequest;

const TEMPLATE: &str = r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8slabel
spec:
  crd:
    spec:
      names:
        kind: K8sLabel
      validation:
        openAPIV3Schema:
          type: object
          properties:
            label: {type: string}
  targets:
    - target: admission.k8s.gatekeeper.sh
      libs:
        - |
          package lib.labels
          has(obj, l) if obj.metadata.labels[l]
      rego: |
        package k8slabel
        import data.lib.labels
        violation contains {"msg": sprintf("missing label %v", [input.parameters.label])} if {
          not labels.has(input.review.object, input.parameters.label)
        }
"#;

fn constraint(name: &str, label: &str, extra: &str) -> String {
    format!(
        "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sLabel\nmetadata: {{name: {name}}}\n\
         spec:\n  parameters: {{label: {label}}}\n{extra}"
    )
}

fn file(path: &str, text: &str) -> SourceFile {
    SourceFile {
        path: path.into(),
        text: text.into(),
    }
}

fn compile(files: &[SourceFile]) -> Result<PolicySet, String> {
    PolicySet::compile(files, "t".into(), &PolicyConfig::default()).map_err(|e| e.to_string())
}

fn refused(files: &[SourceFile]) -> String {
    match compile(files) {
        Ok(set) => panic!("loaded: {:?}", set.policy_names()),
        Err(e) => e,
    }
}

fn req(labels: serde_json::Value) -> AdmissionRequest {
    AdmissionRequest::from_value(json!({
        "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "operation": "CREATE", "namespace": "ns", "name": "p",
        "object": {"metadata": {"name": "p", "labels": labels}}
    }))
    .unwrap()
}

#[test]
fn constraints_of_one_template_keep_their_own_parameters() {
    let docs = format!(
        "{}---\n{}",
        constraint("need-a", "a", ""),
        constraint("need-b", "b", "  enforcementAction: warn\n")
    );
    let set = compile(&[file("t.yaml", TEMPLATE), file("c.yaml", &docs)]).unwrap();
    assert_eq!(set.policy_names(), ["need-a", "need-b"]);
    let hits = set.evaluate(&req(json!({"a": "1"})), None);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].policy, "need-b");
    assert_eq!(hits[0].message, "missing label b");
    assert_eq!(hits[0].action, crate::policy::Action::Warn);
    // One constraint: its parameters are read from data directly, with the same verdict.
    let set = compile(&[
        file("t.yaml", TEMPLATE),
        file("c.yaml", &constraint("need-a", "a", "")),
    ])
    .unwrap();
    assert!(set.evaluate(&req(json!({"a": "1"})), None).is_empty());
    assert_eq!(set.evaluate(&req(json!({})), None).len(), 1);
}

#[test]
fn what_cannot_be_evaluated_is_refused_with_its_location() {
    let cases = [
        (
            constraint("c", "a", "  enforcementAction: scoped\n"),
            "scoped",
        ),
        (
            constraint("c", "a", "  scopedEnforcementActions: []\n"),
            "scopedEnforcementActions",
        ),
        (constraint("c", "7", ""), "openAPIV3Schema"),
        (constraint("c_d", "a", ""), "a constraint name must be"),
        (
            constraint("c", "a", "  match:\n    namespaceSelector: {}\n"),
            "namespaceSelector",
        ),
        (
            constraint("c", "a", "").replace("K8sLabel", "K8sOther"),
            "no ConstraintTemplate in the set defines kind K8sOther",
        ),
    ];
    for (text, needle) in cases {
        let err = refused(&[file("t.yaml", TEMPLATE), file("c.yaml", &text)]);
        assert!(
            err.contains("c.yaml") && err.contains(needle),
            "{needle}: {err}"
        );
    }
    let renamed = TEMPLATE.replace("name: k8slabel", "name: other");
    let err = refused(&[file("t.yaml", &renamed)]);
    assert!(
        err.contains("t.yaml: document 1") && err.contains("k8slabel"),
        "{err}"
    );
}

#[test]
fn clashing_template_libraries_are_refused() {
    let other = TEMPLATE
        .replace("k8slabel", "k8sother")
        .replace("K8sLabel", "K8sOther")
        .replace(
            "has(obj, l) if obj.metadata.labels[l]",
            "has(obj, l) if obj.metadata.annotations[l]",
        );
    let err = refused(&[file("a.yaml", TEMPLATE), file("b.yaml", &other)]);
    assert!(
        err.contains("library package data.lib.labels is also defined"),
        "{err}"
    );
    // The very same library in two templates is shared, not a clash.
    let same = TEMPLATE
        .replace("k8slabel", "k8sother")
        .replace("K8sLabel", "K8sOther");
    compile(&[file("a.yaml", TEMPLATE), file("b.yaml", &same)]).unwrap();
}

#[test]
fn rego_errors_point_at_the_yaml_line() {
    let broken = TEMPLATE.replace(
        "not labels.has(input.review.object, input.parameters.label)",
        "not labels.has(input.review.object,",
    );
    let err = refused(&[file("t.yaml", &broken)]);
    let line = TEMPLATE
        .lines()
        .position(|l| l.contains("not labels.has"))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("t.yaml#1:{line}:"))
            || err.contains(&format!("t.yaml#1:{}:", line + 1)),
        "{err}"
    );
}
