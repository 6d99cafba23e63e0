//! The pod webhooks' selection, evaluated: each entry's namespaceSelector and its matchConditions
//! (CEL, with the `cel-interpreter` crate; Kubernetes evaluates the same expressions with cel-go) against
//! sample pods, in ordinary, enforce-mode and excluded namespaces.
//!
//! What must hold: every pod the server treats as a Sandbox pod is sent, wherever it is; in an
//! enforce namespace every pod is sent, by exactly one entry of each configuration; nothing is
//! sent from the product's own namespace or kube-system.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sandbox_admission::mutate::labels::name_hash;
use sandbox_admission::mutate::sandbox_pod;
use serde_json::{Value, json};

use super::webhooks;

/// Whether a label selector's `matchExpressions` (and `matchLabels`) select these labels.
fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let exprs_ok = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap();
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let value = labels.get(key).map(String::as_str);
            match e["operator"].as_str().unwrap() {
                "In" => value.is_some_and(|v| values.contains(&v)),
                "NotIn" => !value.is_some_and(|v| values.contains(&v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                other => panic!("operator {other}"),
            }
        });
    let labels_ok = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    exprs_ok && labels_ok
}

/// Every matchCondition of `webhook` true for this request (they are ANDed). An evaluation
/// error fails the test: with failurePolicy Fail the API server would refuse the pod.
fn conditions_hold(webhook: &Value, request: &Value) -> bool {
    webhook["matchConditions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|c| {
            let expression = c["expression"].as_str().unwrap();
            let program = cel_interpreter::Program::compile(expression).unwrap_or_else(|e| {
                panic!("{}: {} does not parse: {e:?}", webhook["name"], c["name"])
            });
            let mut context = cel_interpreter::Context::default();
            for var in ["object", "oldObject", "request"] {
                let value = match var {
                    "request" => request.clone(),
                    _ => request[var].clone(),
                };
                context.add_variable(var, value).unwrap();
            }
            match program.execute(&context) {
                Ok(cel_interpreter::Value::Bool(b)) => b,
                other => panic!(
                    "{} {}: {other:?} for {}",
                    webhook["name"], c["name"], request["object"]
                ),
            }
        })
}

fn namespace_labels(name: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([("kubernetes.io/metadata.name".into(), name.into())]);
    for (k, v) in extra {
        labels.insert((*k).into(), (*v).into());
    }
    labels
}

/// Names of the pod entries of `kind` that this pod CREATE is sent to.
fn sent_to(kind: &str, pod: &Value, ns: &BTreeMap<String, String>) -> Vec<String> {
    let request = json!({"operation": "CREATE", "object": pod, "oldObject": null,
        "namespace": ns["kubernetes.io/metadata.name"], "kind": {"group": "", "version": "v1", "kind": "Pod"}});
    webhooks()
        .into_iter()
        .filter(|(k, w)| {
            k == kind
                && w["rules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["resources"].as_array().unwrap().contains(&"pods".into()))
        })
        .filter(|(_, w)| selects(&w["namespaceSelector"], ns) && conditions_hold(w, &request))
        .map(|(_, w)| w["name"].as_str().unwrap().to_owned())
        .collect()
}

fn owner(api_version: &str, kind: &str, controller: Option<bool>) -> Value {
    let mut r = json!({"apiVersion": api_version, "kind": kind, "name": "box", "uid": "u-1"});
    if let Some(c) = controller {
        r["controller"] = json!(c);
    }
    r
}

fn pod(labels: Option<Value>, owners: Option<Vec<Value>>) -> Value {
    let mut metadata = json!({"name": "box"});
    if let Some(l) = labels {
        metadata["labels"] = l;
    }
    if let Some(o) = owners {
        metadata["ownerReferences"] = json!(o);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
}

/// Sample pods: what the controller makes, and each way a pod might try to slip past.
fn samples() -> Vec<(&'static str, Value)> {
    let hash = json!({"agents.x-k8s.io/sandbox-name-hash": name_hash("box")});
    let sandbox = |v: &str| owner(&format!("agents.x-k8s.io/{v}"), "Sandbox", Some(true));
    vec![
        (
            "controller-made",
            pod(Some(hash.clone()), Some(vec![sandbox("v1beta1")])),
        ),
        (
            "label removed, ownerReference kept",
            pod(Some(json!({"app": "x"})), Some(vec![sandbox("v1beta1")])),
        ),
        (
            "no labels at all, v1alpha1 owner",
            pod(None, Some(vec![sandbox("v1alpha1")])),
        ),
        (
            "owner among others",
            pod(
                None,
                Some(vec![
                    owner("apps/v1", "ReplicaSet", Some(false)),
                    sandbox("v1beta1"),
                ]),
            ),
        ),
        ("label only", pod(Some(hash.clone()), None)),
        (
            "label with an empty value",
            pod(Some(json!({"agents.x-k8s.io/sandbox-name-hash": ""})), None),
        ),
        ("plain pod", pod(Some(json!({"app": "x"})), None)),
        ("no metadata maps", pod(None, None)),
        (
            "non-controller Sandbox owner",
            pod(
                None,
                Some(vec![owner(
                    "agents.x-k8s.io/v1beta1",
                    "Sandbox",
                    Some(false),
                )]),
            ),
        ),
        (
            "owner without controller field",
            pod(
                None,
                Some(vec![owner("agents.x-k8s.io/v1beta1", "Sandbox", None)]),
            ),
        ),
        (
            "Sandbox of another group",
            pod(
                None,
                Some(vec![owner("example.com/v1", "Sandbox", Some(true))]),
            ),
        ),
        (
            "ReplicaSet pod",
            pod(
                Some(json!({"app": "x"})),
                Some(vec![owner("apps/v1", "ReplicaSet", Some(true))]),
            ),
        ),
    ]
}

fn is_sandbox_pod_for_the_server(pod: &Value) -> bool {
    let meta: ObjectMeta = serde_json::from_value(pod["metadata"].clone()).unwrap();
    sandbox_pod::identify(&meta).is_some()
}

#[test]
fn every_sandbox_pod_is_sent_and_no_other_outside_enforce_mode() {
    let ordinary = namespace_labels("team", &[]);
    let not_enforced = namespace_labels("team", &[("sandbox-admission.io/isolation", "audit")]);
    let mut sent = 0;
    for (what, pod) in samples() {
        let server_says = is_sandbox_pod_for_the_server(&pod);
        for ns in [&ordinary, &not_enforced] {
            for kind in [
                "MutatingWebhookConfiguration",
                "ValidatingWebhookConfiguration",
            ] {
                let to = sent_to(kind, &pod, ns);
                if server_says {
                    // Each Sandbox pod reaches the server, which then treats it as one.
                    assert_eq!(to.len(), 1, "{what}: {kind} {to:?}");
                    assert!(to[0].starts_with("pods."), "{what}: {to:?}");
                    sent += 1;
                } else {
                    // Other pods are not sent: an outage cannot block ordinary workloads.
                    assert!(to.is_empty(), "{what}: {kind} sent to {to:?}");
                }
            }
        }
    }
    assert_eq!(
        sent,
        6 * 4,
        "six sample Sandbox pods, two namespaces, two configurations"
    );
}

#[test]
fn enforce_mode_sends_every_pod_exactly_once() {
    let enforce = namespace_labels("team", &[("sandbox-admission.io/isolation", "enforce")]);
    for (what, pod) in samples() {
        for kind in [
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ] {
            let to = sent_to(kind, &pod, &enforce);
            assert_eq!(to.len(), 1, "{what}: {kind} {to:?}");
            let expected = if is_sandbox_pod_for_the_server(&pod) {
                "pods."
            } else {
                "enforced-pods."
            };
            assert!(to[0].starts_with(expected), "{what}: {to:?}");
        }
    }
}

#[test]
fn own_namespace_and_kube_system_are_never_sent() {
    for ns in ["sandbox-admission", "kube-system"] {
        for extra in [
            &[][..],
            &[("sandbox-admission.io/isolation", "enforce")][..],
        ] {
            let labels = namespace_labels(ns, extra);
            for (what, pod) in samples() {
                for kind in [
                    "MutatingWebhookConfiguration",
                    "ValidatingWebhookConfiguration",
                ] {
                    let to = sent_to(kind, &pod, &labels);
                    assert!(to.is_empty(), "{ns} {what}: {to:?}");
                }
            }
        }
    }
}

#[test]
fn the_enforce_label_key_is_the_servers() {
    assert_eq!(
        sandbox_pod::isolation_label("sandbox-admission.io/"),
        "sandbox-admission.io/isolation"
    );
    assert_eq!(sandbox_pod::ENFORCE, "enforce");
    // Every enforced entry selects that exact label and value.
    for (_, w) in webhooks() {
        if w["name"].as_str().unwrap().starts_with("enforced-") {
            let exprs = &w["namespaceSelector"]["matchExpressions"];
            assert!(
                exprs
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["key"] == "sandbox-admission.io/isolation"
                        && e["operator"] == "In"
                        && e["values"] == json!(["enforce"])),
                "{}",
                w["name"]
            );
        }
    }
}
