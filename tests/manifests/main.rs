//! `manifests/`: every object matches the Kubernetes 1.33 schema, the kustomizations resolve, and
//! the webhook configurations and Deployment agree with what the server actually serves; their pod
//! selection is evaluated (`match_conditions`); the Helm chart renders the same objects (`helm`).

#[path = "../common/mod.rs"]
mod common;
mod helm;
mod kustomize;
mod match_conditions;
mod policies;
mod schema;
mod server;

use std::path::PathBuf;

use serde_json::Value;

use kustomize::{ENTRY_POINTS, input_files, is_kustomization, manifests_dir, refs, yaml_files};
use schema::{check_object, yaml_docs};

/// Every object in `manifests/` (not kustomizations, not generator inputs), with its file.
fn source_objects() -> Vec<(PathBuf, Value)> {
    let inputs = input_files();
    yaml_files(&manifests_dir())
        .into_iter()
        .filter(|p| !is_kustomization(p) && !inputs.contains(p))
        .flat_map(|p| yaml_docs(&p).into_iter().map(move |d| (p.clone(), d)))
        .collect()
}

/// The one object of `kind` named `name` in the files under `manifests/<under>`.
fn object(under: &str, kind: &str, name: &str) -> Value {
    let dir = manifests_dir().join(under);
    let found: Vec<Value> = source_objects()
        .into_iter()
        .filter(|(p, d)| p.starts_with(&dir) && d["kind"] == kind && d["metadata"]["name"] == name)
        .map(|(_, d)| d)
        .collect();
    assert_eq!(found.len(), 1, "{kind} {name} under manifests/{under}");
    found.into_iter().next().unwrap()
}

#[test]
fn every_manifest_matches_the_kubernetes_schema() {
    let objects = source_objects();
    assert!(objects.len() >= 15, "found only {} objects", objects.len());
    let mut failures = Vec::new();
    for (path, doc) in &objects {
        if let Err(errors) = check_object(doc) {
            let name = doc["metadata"]["name"].as_str().unwrap_or("?");
            for e in errors {
                failures.push(format!("{} ({} {name}): {e}", path.display(), doc["kind"]));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rendered_entry_points_match_the_schema() {
    if !kustomize::kubectl_available() {
        eprintln!("kubectl not installed: rendering skipped (the source files are still checked)");
        return;
    }
    let mut failures = Vec::new();
    for entry in ENTRY_POINTS {
        let rendered = kustomize::render(&manifests_dir().join(entry));
        assert!(!rendered.is_empty(), "{entry}: renders nothing");
        for doc in &rendered {
            if let Err(errors) = check_object(doc) {
                failures.push(format!(
                    "{entry}: {} {}: {errors:?}",
                    doc["kind"], doc["metadata"]["name"]
                ));
            }
        }
        if entry.is_empty() || entry.starts_with("overlays") {
            let kinds: Vec<&str> = rendered.iter().filter_map(|d| d["kind"].as_str()).collect();
            for kind in [
                "Namespace",
                "Deployment",
                "Service",
                "ConfigMap",
                "PodDisruptionBudget",
                "MutatingWebhookConfiguration",
                "ValidatingWebhookConfiguration",
            ] {
                assert!(kinds.contains(&kind), "{entry}: no {kind} rendered");
            }
            for doc in &rendered {
                let namespaced = doc["metadata"]["namespace"].as_str();
                if let Some(ns) = namespaced {
                    assert_eq!(
                        ns, "sandbox-admission",
                        "{entry}: {}",
                        doc["metadata"]["name"]
                    );
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn kustomizations_reference_files_inside_their_root() {
    let kustomizations: Vec<PathBuf> = yaml_files(&manifests_dir())
        .into_iter()
        .filter(|p| is_kustomization(p))
        .collect();
    for entry in ENTRY_POINTS {
        let k = manifests_dir().join(entry).join("kustomization.yaml");
        assert!(kustomizations.contains(&k), "{} missing", k.display());
    }
    for k in &kustomizations {
        let root = k.parent().unwrap();
        let refs = refs(k);
        for r in &refs.resources {
            assert!(
                r.is_file() || r.join("kustomization.yaml").is_file(),
                "{}: resource {} is neither a file nor a kustomization",
                k.display(),
                r.display()
            );
        }
        for input in &refs.inputs {
            assert!(
                input.is_file(),
                "{}: {} missing",
                k.display(),
                input.display()
            );
            // kustomize's default load restrictor: generator and patch files must be under the root.
            let canonical = input.canonicalize().unwrap();
            assert!(
                canonical.starts_with(root.canonicalize().unwrap()),
                "{}: {} is outside the kustomization root; `kubectl apply -k` refuses it",
                k.display(),
                input.display()
            );
        }
    }
}

fn selector_excludes(webhook: &Value) -> Vec<String> {
    webhook["namespaceSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
        .flat_map(|e| e["values"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

fn webhooks() -> Vec<(String, Value)> {
    [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ]
    .iter()
    .flat_map(|kind| {
        let config = object("base", kind, "sandbox-admission");
        config["webhooks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(move |w| (kind.to_string(), w))
    })
    .collect()
}

#[test]
fn webhook_configurations_are_safe_to_operate() {
    let hooks = webhooks();
    assert_eq!(hooks.len(), 5);
    let service = object("base", "Service", "sandbox-admission");
    for (kind, w) in &hooks {
        let name = &w["name"];
        let excluded = selector_excludes(w);
        for ns in ["sandbox-admission", "kube-system"] {
            assert!(
                excluded.iter().any(|e| e == ns),
                "{kind} {name} must exclude {ns}"
            );
        }
        assert_eq!(w["sideEffects"], "NoneOnDryRun", "{name}");
        assert!(
            w["admissionReviewVersions"]
                .as_array()
                .unwrap()
                .contains(&"v1".into()),
            "{name}"
        );
        assert_eq!(w["failurePolicy"], "Fail", "{name}");
        assert_eq!(w["matchPolicy"], "Equivalent", "{name}");
        let timeout = w["timeoutSeconds"].as_i64().unwrap();
        assert!(
            (1..=10).contains(&timeout),
            "{name}: short timeout, got {timeout}"
        );
        let svc = &w["clientConfig"]["service"];
        assert_eq!(svc["name"], service["metadata"]["name"], "{name}");
        assert_eq!(svc["namespace"], service["metadata"]["namespace"], "{name}");
        assert_eq!(svc["port"], service["spec"]["ports"][0]["port"], "{name}");
        // A pod could opt out of an objectSelector by leaving its label off.
        assert!(w.get("objectSelector").is_none(), "{name}: objectSelector");
        for rule in w["rules"].as_array().unwrap() {
            if rule["resources"]
                .as_array()
                .unwrap()
                .contains(&"pods".into())
            {
                // Pods: only Sandbox pods and enforce-mode namespaces are sent, so an outage
                // cannot block other pods (match_conditions.rs evaluates the selection).
                assert!(
                    w["matchConditions"]
                        .as_array()
                        .is_some_and(|c| !c.is_empty()),
                    "{name}"
                );
            }
        }
        if kind == "MutatingWebhookConfiguration" {
            assert_eq!(w["reinvocationPolicy"], "IfNeeded");
            assert_eq!(svc["path"], "/mutate");
            assert_eq!(w["rules"][0]["operations"], serde_json::json!(["CREATE"]));
        } else {
            assert_eq!(svc["path"], "/validate");
        }
    }
}

#[test]
fn validation_covers_every_sandbox_kind_in_both_versions() {
    let mut covered = Vec::new();
    for (kind, w) in webhooks() {
        if kind != "ValidatingWebhookConfiguration" {
            continue;
        }
        for rule in w["rules"].as_array().unwrap() {
            let ops = &rule["operations"];
            assert_eq!(*ops, serde_json::json!(["CREATE", "UPDATE"]));
            for group in rule["apiGroups"].as_array().unwrap() {
                for version in rule["apiVersions"].as_array().unwrap() {
                    for resource in rule["resources"].as_array().unwrap() {
                        covered.push(format!(
                            "{}/{}/{}",
                            group.as_str().unwrap(),
                            version.as_str().unwrap(),
                            resource.as_str().unwrap()
                        ));
                    }
                }
            }
        }
    }
    covered.sort();
    covered.dedup();
    let mut expected = vec![
        "/v1/pods".to_string(),
        "/v1/pods/ephemeralcontainers".to_string(),
    ];
    for version in ["v1alpha1", "v1beta1"] {
        expected.push(format!("agents.x-k8s.io/{version}/sandboxes"));
        for r in ["sandboxtemplates", "sandboxclaims", "sandboxwarmpools"] {
            expected.push(format!("extensions.agents.x-k8s.io/{version}/{r}"));
        }
    }
    expected.sort();
    assert_eq!(covered, expected);
}

#[test]
fn certs_kustomize_patch_names_every_webhook_of_the_manifests() {
    use sandbox_admission::certs::patch::{MUTATING_WEBHOOKS, VALIDATING_WEBHOOKS};
    let names = |kind: &str| -> Vec<String> {
        webhooks()
            .into_iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, w)| w["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("MutatingWebhookConfiguration"), MUTATING_WEBHOOKS);
    assert_eq!(names("ValidatingWebhookConfiguration"), VALIDATING_WEBHOOKS);

    // Applied by kustomize, the patch sets the caBundle of every webhook and nothing else.
    if !kustomize::kubectl_available() {
        eprintln!("kubectl not installed: patch rendering skipped");
        return;
    }
    // kustomize refuses absolute resource paths: the overlay lives under target/tmp, inside the
    // repository, and names manifests/ relatively.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let Ok(below) = tmp.strip_prefix(root) else {
        eprintln!("target dir outside the repository: patch rendering skipped");
        return;
    };
    let overlay = tempfile::tempdir_in(tmp).unwrap();
    let up = "../".repeat(below.components().count() + 1);
    let patch =
        sandbox_admission::certs::patch::ca_bundle_patch("sandbox-admission", "QUJD").unwrap();
    std::fs::write(overlay.path().join("ca-bundle.yaml"), patch).unwrap();
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!("resources: [{up}manifests]\npatches:\n  - path: ca-bundle.yaml\n"),
    )
    .unwrap();
    let rendered = kustomize::render(overlay.path());
    let mut patched = 0;
    for doc in rendered.iter().filter(|d| {
        d["kind"] == "MutatingWebhookConfiguration" || d["kind"] == "ValidatingWebhookConfiguration"
    }) {
        for w in doc["webhooks"].as_array().unwrap() {
            assert_eq!(w["clientConfig"]["caBundle"], "QUJD", "{}", w["name"]);
            assert!(
                w["clientConfig"]["service"]["path"].is_string(),
                "service kept"
            );
            assert!(w["rules"].is_array(), "rules kept");
            patched += 1;
        }
        assert!(check_object(doc).is_ok());
    }
    assert_eq!(patched, 5);
}
