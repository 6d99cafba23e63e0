//! The Helm chart `charts/sandbox-admission`, rendered and linted by the real Helm engine (PyPI
//! helm-python-sdk: Helm's Go SDK as a library, driven by tests/helm/render.py; no helm binary,
//! no cluster). For a matrix of values: `helm lint --strict` is clean, every rendered object
//! matches the Kubernetes schema (as the manifests do), and the default render equals
//! `kubectl kustomize manifests/` object for object (each certificate mode its overlay).
//!
//! Without helm-python-sdk these tests fail under CI=true (.ci/run installs it) and say
//! "skipped" otherwise.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::{Value, json};

use super::kustomize::{self, manifests_dir};
use super::schema::{check_object, parse_docs};
use super::server::serve_args;

/// The cases every test below draws on: name, values, release namespace.
fn matrix() -> Vec<(&'static str, Value)> {
    vec![
        ("default", json!({})),
        // The overlays build on base/ alone, without manifests/audit.
        (
            "cert-manager",
            json!({"certificates": {"mode": "cert-manager"}, "audit": {"reports": false}}),
        ),
        (
            "self-managed",
            json!({"certificates": {"mode": "self-managed"}, "audit": {"reports": false}}),
        ),
        (
            "sized",
            json!({"replicas": 3, "resources": {"requests": {"cpu": "250m", "memory": "128Mi"},
                   "limits": {"cpu": "2", "memory": "512Mi"}},
                   "webhooks": {"failurePolicy": "Ignore", "timeoutSeconds": 10}}),
        ),
        ("strict", json!({"policies": {"profile": "strict"}})),
        (
            "user-policies",
            json!({"policies": {"source": "configMap", "configMapName": "my-policies"}}),
        ),
        (
            "audit",
            json!({"audit": {"decisionLog": false, "includeObjects": true, "events": false},
                   "config": {"logFormat": "text"}}),
        ),
        (
            "metrics",
            json!({"metrics": {"serviceMonitor": {"enabled": true, "labels": {"release": "prom"}}}}),
        ),
        (
            "other-namespace",
            json!({"namespace": {"name": "platform-admission"},
                   "certificates": {"mode": "cert-manager"}}),
        ),
        (
            "existing-namespace",
            json!({"namespace": {"name": "", "create": false}}),
        ),
        (
            "no-enforce-mode",
            json!({"webhooks": {"enforceMode": false}}),
        ),
        ("ca-bundle", json!({"certificates": {"caBundle": "QUJD"}})),
        (
            "runtime-classes",
            json!({"runtimeClasses": {"create": true}}),
        ),
    ]
}

/// Values the schema must refuse.
fn refused() -> Vec<(&'static str, Value)> {
    vec![
        ("zero-replicas", json!({"replicas": 0})),
        (
            "failure-policy",
            json!({"webhooks": {"failurePolicy": "Maybe"}}),
        ),
        ("cert-mode", json!({"certificates": {"mode": "none"}})),
        ("profile", json!({"policies": {"profile": "lenient"}})),
        (
            "configmap-without-name",
            json!({"policies": {"source": "configMap"}}),
        ),
        ("unknown-key", json!({"replica": 2})),
        ("timeout", json!({"webhooks": {"timeoutSeconds": 31}})),
    ]
}

struct Rendered {
    /// Objects of every template, NOTES.txt left out.
    objects: Vec<Value>,
    notes: String,
    lint: Value,
    schema_error: Option<String>,
    render_error: Option<String>,
}

/// Every case rendered once per test binary (the engine takes a few seconds to load).
fn rendered() -> Option<&'static BTreeMap<String, Rendered>> {
    static RESULT: OnceLock<Option<BTreeMap<String, Rendered>>> = OnceLock::new();
    RESULT.get_or_init(render_all).as_ref()
}

fn render_all() -> Option<BTreeMap<String, Rendered>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cases: Vec<Value> = matrix()
        .into_iter()
        .chain(refused())
        .map(|(name, values)| json!({"name": name, "values": values, "namespace": "default"}))
        .collect();
    let package_dir = tempfile::tempdir().unwrap();
    let request = json!({"chart": root.join("charts/sandbox-admission"), "kubeVersion": "1.33.0",
                         "packageDir": package_dir.path(), "cases": cases});
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let spawned = Command::new(&python)
        .arg(root.join("tests/helm/render.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let missing = |why: String| {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "{why}: the Helm chart tests need it under CI (.ci/run installs it)"
        );
        eprintln!("skipped: {why} (pip install helm-python-sdk)");
        None
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return missing(format!("{python} cannot run: {e}")),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.code() == Some(3) {
        return missing("helm-python-sdk is not installed".into());
    }
    assert!(
        out.status.success(),
        "tests/helm/render.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("render.py answers JSON");
    eprintln!("rendered with Helm {}", answer["helm"]);
    let mut all = BTreeMap::new();
    let packaged = json!({"name": "packaged", "manifests": answer["packaged"], "lint": {"messages": [], "errors": []}});
    for case in answer["cases"]
        .as_array()
        .unwrap()
        .iter()
        .chain([&packaged])
    {
        let name = case["name"].as_str().unwrap().to_owned();
        let mut objects = Vec::new();
        let mut notes = String::new();
        for (template, text) in case["manifests"].as_object().into_iter().flatten() {
            let text = text.as_str().unwrap();
            if template.ends_with("NOTES.txt") {
                notes = text.to_owned();
            } else {
                objects.extend(parse_docs(text, template));
            }
        }
        let text = |k: &str| case[k].as_str().map(String::from);
        all.insert(
            name,
            Rendered {
                objects,
                notes,
                lint: case["lint"].clone(),
                schema_error: text("schemaError"),
                render_error: text("renderError"),
            },
        );
    }
    Some(all)
}

fn case(name: &str) -> Option<&'static Rendered> {
    rendered().map(|all| &all[name])
}

/// (apiVersion, kind, namespace, name) → object, with kustomize's hash suffix of the config
/// ConfigMap (and the chart's equivalent) replaced by `<hash>`: the two tools hash differently,
/// both so that a changed configuration rolls the Deployment.
fn by_identity(objects: &[Value]) -> BTreeMap<String, Value> {
    let re = regex::Regex::new(r"sandbox-admission-config-[a-z0-9]{10}").unwrap();
    objects
        .iter()
        .map(|o| {
            let text = re
                .replace_all(&o.to_string(), "sandbox-admission-config-<hash>")
                .into_owned();
            let o: Value = serde_json::from_str(&text).unwrap();
            let key = format!(
                "{} {} {}/{}",
                o["apiVersion"].as_str().unwrap_or(""),
                o["kind"].as_str().unwrap_or(""),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            );
            (key, o)
        })
        .collect()
}

fn assert_same_objects(chart: &[Value], entry: &str) {
    let kustomized = kustomize::render(&manifests_dir().join(entry));
    let (chart, kustomized) = (by_identity(chart), by_identity(&kustomized));
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        kustomized.keys().collect::<Vec<_>>(),
        "manifests/{entry}: not the same objects"
    );
    for (key, k) in &kustomized {
        let c = &chart[key];
        if c != k {
            let (c, k) = (
                serde_json::to_string_pretty(c).unwrap(),
                serde_json::to_string_pretty(k).unwrap(),
            );
            let first = c
                .lines()
                .zip(k.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!(
                "{key} differs from manifests/{entry} at line {first}:\nchart:     {}\nkustomize: {}",
                c.lines().nth(first).unwrap_or(""),
                k.lines().nth(first).unwrap_or("")
            );
        }
    }
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn webhooks(objects: &[Value]) -> Vec<&Value> {
    objects
        .iter()
        .filter(|o| {
            o["kind"]
                .as_str()
                .is_some_and(|k| k.ends_with("WebhookConfiguration"))
        })
        .flat_map(|o| o["webhooks"].as_array().unwrap().iter())
        .collect()
}

#[test]
fn default_render_equals_kustomize_and_each_certificate_mode_its_overlay() {
    let Some(_) = rendered() else { return };
    if !kustomize::kubectl_available() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "kubectl is needed under CI"
        );
        eprintln!("skipped: kubectl not installed");
        return;
    }
    for (name, entry) in [
        ("default", ""),
        // The packaged chart carries the symlinked policies and configuration.
        ("packaged", ""),
        ("cert-manager", "overlays/cert-manager"),
        ("self-managed", "overlays/manage-certs"),
    ] {
        assert_same_objects(&case(name).unwrap().objects, entry);
    }
    // runtimeClasses.create adds exactly the objects of manifests/runtimeclasses.
    let extra: Vec<Value> = case("runtime-classes")
        .unwrap()
        .objects
        .iter()
        .filter(|o| o["kind"] == "RuntimeClass")
        .cloned()
        .collect();
    assert_same_objects(&extra, "runtimeclasses");
    assert!(
        case("default")
            .unwrap()
            .objects
            .iter()
            .all(|o| o["kind"] != "RuntimeClass")
    );
}

#[test]
fn every_case_lints_strict_and_matches_the_kubernetes_schema() {
    let Some(all) = rendered() else { return };
    for (name, _) in matrix() {
        let r = &all[name];
        assert_eq!(r.schema_error, None, "{name}");
        assert_eq!(r.render_error, None, "{name}");
        // Strict lint fails on warnings (severity 2) and errors (3); info (1) is advice.
        let bad: Vec<&Value> = r.lint["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["severity"].as_i64().unwrap_or(3) >= 2)
            .collect();
        assert!(bad.is_empty(), "{name}: helm lint --strict: {bad:?}");
        assert_eq!(r.lint["errors"], json!([]), "{name}");
        assert!(r.objects.len() >= 10, "{name}: {} objects", r.objects.len());
        for o in &r.objects {
            if let Err(errors) = check_object(o) {
                panic!(
                    "{name}: {} {}: {errors:?}",
                    o["kind"], o["metadata"]["name"]
                );
            }
        }
        // The configuration the server will read is valid for it.
        let cm = r
            .objects
            .iter()
            .find(|o| {
                o["kind"] == "ConfigMap"
                    && o["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("sandbox-admission-config-"))
            })
            .unwrap_or_else(|| panic!("{name}: no config ConfigMap"));
        let text = cm["data"]["config.yaml"].as_str().unwrap();
        sandbox_admission::config::Config::parse(text, name)
            .unwrap_or_else(|e| panic!("{name}: config.yaml does not load: {e}"));
        // The Deployment's arguments parse with the real CLI.
        let d = find(&r.objects, "Deployment", "sandbox-admission").unwrap();
        let _ = serve_args(&d["spec"]["template"]["spec"]["containers"][0]);
        assert!(
            r.notes
                .contains("kubectl delete mutatingwebhookconfiguration sandbox-admission")
                && r.notes
                    .contains("kubectl delete validatingwebhookconfiguration sandbox-admission"),
            "{name}: NOTES.txt gives the emergency command:\n{}",
            r.notes
        );
    }
}

#[test]
fn the_schema_refuses_bad_values() {
    let Some(all) = rendered() else { return };
    for (name, values) in refused() {
        let r = &all[name];
        assert!(r.schema_error.is_some(), "{name}: {values} accepted");
        assert!(r.render_error.is_some(), "{name}: rendered anyway");
        let errors = r.lint["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["severity"] == 3)
            .count();
        assert!(errors > 0, "{name}: lint passed: {}", r.lint);
    }
}

#[test]
fn values_reach_the_objects() {
    let Some(all) = rendered() else { return };
    let objects = |name: &str| &all[name].objects;
    let deployment = |name: &str| find(objects(name), "Deployment", "sandbox-admission").unwrap();
    let container =
        |name: &str| deployment(name)["spec"]["template"]["spec"]["containers"][0].clone();

    let sized = deployment("sized");
    assert_eq!(sized["spec"]["replicas"], 3);
    assert_eq!(container("sized")["resources"]["limits"]["memory"], "512Mi");
    for w in webhooks(objects("sized")) {
        assert_eq!(w["failurePolicy"], "Ignore", "{}", w["name"]);
        assert_eq!(w["timeoutSeconds"], 10, "{}", w["name"]);
    }

    let args = serve_args(&container("strict"));
    assert_eq!(args.profile.as_deref(), Some("strict"));

    let user = objects("user-policies");
    assert!(find(user, "ConfigMap", "sandbox-admission-policies").is_none());
    let volumes = &deployment("user-policies")["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "policies" && v["configMap"]["name"] == "my-policies"),
        "{volumes}"
    );

    let audit = objects("audit")
        .iter()
        .find(|o| {
            o["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("sandbox-admission-config-"))
        })
        .unwrap();
    let config = sandbox_admission::config::Config::parse(
        audit["data"]["config.yaml"].as_str().unwrap(),
        "audit",
    )
    .unwrap();
    assert!(!config.decision_log.stdout);
    assert!(config.decision_log.include_objects);
    assert!(!config.events.enabled);
    // A changed configuration is a new ConfigMap name: the Deployment rolls.
    let default_config_name = |name: &str| {
        deployment(name)["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "config")
            .unwrap()["configMap"]["name"]
            .clone()
    };
    assert_ne!(default_config_name("audit"), default_config_name("default"));

    let metrics = objects("metrics");
    let monitor = find(metrics, "ServiceMonitor", "sandbox-admission").expect("ServiceMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    let service = find(metrics, "Service", "sandbox-admission-metrics").expect("metrics Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "health");
    assert!(find(objects("default"), "ServiceMonitor", "sandbox-admission").is_none());

    // Another namespace: every namespaced object, the webhooks' exclusion and service, the
    // server's own configuration and the certificate's names follow it.
    let other = objects("other-namespace");
    for o in other {
        if let Some(ns) = o["metadata"]["namespace"].as_str() {
            assert_eq!(
                ns, "platform-admission",
                "{} {}",
                o["kind"], o["metadata"]["name"]
            );
        }
    }
    assert!(find(other, "Namespace", "platform-admission").is_some());
    for w in webhooks(other) {
        assert_eq!(
            w["clientConfig"]["service"]["namespace"],
            "platform-admission"
        );
        let excluded = &w["namespaceSelector"]["matchExpressions"];
        assert!(
            excluded
                .to_string()
                .contains("\"platform-admission\",\"kube-system\""),
            "{excluded}"
        );
    }
    let cert = find(other, "Certificate", "sandbox-admission-tls").unwrap();
    assert!(
        cert["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .contains(&json!("sandbox-admission.platform-admission.svc"))
    );
    let cm = other
        .iter()
        .find(|o| {
            o["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("sandbox-admission-config-"))
        })
        .unwrap();
    let config =
        sandbox_admission::config::Config::parse(cm["data"]["config.yaml"].as_str().unwrap(), "ns")
            .unwrap();
    assert_eq!(config.service.namespace, "platform-admission");

    // An existing namespace: the release namespace, not created.
    let existing = objects("existing-namespace");
    assert!(existing.iter().all(|o| o["kind"] != "Namespace"));
    assert_eq!(
        deployment("existing-namespace")["metadata"]["namespace"],
        "default"
    );

    assert_eq!(webhooks(objects("no-enforce-mode")).len(), 3);
    assert_eq!(webhooks(objects("default")).len(), 5);
    for w in webhooks(objects("ca-bundle")) {
        assert_eq!(w["clientConfig"]["caBundle"], "QUJD");
    }
}

/// The chart's policies are the repository's: a symlink, so there is nothing to keep in sync.
#[test]
fn chart_policies_are_the_repository_policies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let link = root.join("charts/sandbox-admission/policies");
    let target = std::fs::read_link(&link).expect("charts/sandbox-admission/policies is a symlink");
    assert_eq!(target, Path::new("../../policies"));
    assert_eq!(
        link.canonicalize().unwrap(),
        root.join("policies").canonicalize().unwrap()
    );
    assert_eq!(
        root.join("charts/sandbox-admission/files/runtimeclasses")
            .canonicalize()
            .unwrap(),
        manifests_dir()
            .join("runtimeclasses")
            .canonicalize()
            .unwrap()
    );
    let config = root.join("charts/sandbox-admission/files/config.yaml");
    assert_eq!(
        config.canonicalize().unwrap(),
        manifests_dir()
            .join("base/config/config.yaml")
            .canonicalize()
            .unwrap()
    );
    let Some(all) = rendered() else { return };
    let cm = find(
        &all["default"].objects,
        "ConfigMap",
        "sandbox-admission-policies",
    )
    .unwrap();
    let keys: Vec<&String> = cm["data"].as_object().unwrap().keys().collect();
    assert!(keys.iter().any(|k| *k == "reserved_metadata.rego"));
    assert!(
        keys.iter()
            .all(|k| !k.ends_with("_test.rego") && *k != "kustomization.yaml")
    );
}
