//! `explain` names the rule body, file and line of every shipped policy on a crafted violation,
//! with the expressions and the values they saw; `--policy` on a policy that did not fire shows
//! the first expression that failed; the command reads a decision from the log by uid.

use std::path::{Path, PathBuf};
use std::process::Command;

use sandbox_admission::admission::AdmissionRequest;
use sandbox_admission::pipeline::Admitter;
use sandbox_admission::policy::PolicyExplanation;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_sandbox-admission");

fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
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

fn sandbox(spec: Value) -> Value {
    json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
           "metadata": {"name": "sb", "namespace": "team"}, "spec": {"podTemplate": {"spec": spec}}})
}

fn with(spec_patch: Value) -> Value {
    let mut spec = hardened_spec();
    if let (Some(s), Some(p)) = (spec.as_object_mut(), spec_patch.as_object()) {
        s.extend(p.clone());
    }
    sandbox(spec)
}

fn with_container_security(security: Value) -> Value {
    let mut spec = hardened_spec();
    spec["containers"][0]["securityContext"] = security;
    sandbox(spec)
}

fn example(rel: &str, kind: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agent-sandbox/examples")
        .join(rel);
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap();
    docs.into_iter().find(|d| d["kind"] == kind).unwrap()
}

fn request(object: &Value, op: &str) -> AdmissionRequest {
    let api_version = object["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap();
    let mut req = json!({
        "uid": "u", "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": sandbox_admission::request::plural(kind)},
        "operation": op, "namespace": object["metadata"]["namespace"].as_str().unwrap_or("team"),
        "name": object["metadata"]["name"], "userInfo": {"username": "alice"}, "object": object,
    });
    if op == "UPDATE" {
        req["oldObject"] = object.clone();
    }
    AdmissionRequest::from_value(req).unwrap()
}

fn line_of(dir: &Path, file: &str, line: u32) -> String {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    text.lines()
        .nth(line as usize - 1)
        .unwrap_or_default()
        .to_owned()
}

/// Every hit of `policy` is explained by a `violation` body of its own file, at a line that is
/// a `violation` rule, with expressions after it that passed.
async fn assert_explained(admitter: &Admitter, dir: &Path, object: &Value, op: &str, policy: &str) {
    let req = request(object, op);
    let (decision, explained) = admitter.explain(&req, None).await;
    let hits: Vec<&str> = decision
        .hits
        .iter()
        .filter(|h| h.policy == policy)
        .map(|h| h.message.as_str())
        .collect();
    assert!(
        !hits.is_empty(),
        "{policy} did not fire: {:?}",
        decision.hits
    );
    let e: &PolicyExplanation = explained
        .iter()
        .filter_map(|e| e.as_ref().ok())
        .find(|e| e.policy == policy)
        .unwrap_or_else(|| panic!("{policy} not explained: {explained:?}"));
    let stem = e.file.trim_end_matches(".rego");
    assert_eq!(
        stem.replace('_', "-"),
        policy
            .trim_start_matches("sandbox-")
            .replace("strict", "strict-sandbox"),
        "{policy}: file {}",
        e.file
    );
    assert!(!e.firings.is_empty(), "{policy}: no firing: {e:?}");
    for message in hits {
        let firing = e
            .firings
            .iter()
            .find(|f| match &f.message {
                Some(m) => m == message,
                // A message built in the rule head (no `msg` variable): the head's text, or
                // its format string, names it.
                None => {
                    line_of(dir, &f.file, f.line).contains(message) || f.rule.contains("sprintf(")
                }
            })
            .unwrap_or_else(|| panic!("{policy}: no firing for {message:?}: {:#?}", e.firings));
        assert_eq!(firing.file, e.file);
        let rule_line = line_of(dir, &firing.file, firing.line);
        assert!(
            rule_line.trim_start().starts_with("violation"),
            "{policy}: {}:{} is {rule_line:?}",
            firing.file,
            firing.line
        );
        // The expressions are the body's own: below the rule line, before the next rule.
        let text = std::fs::read_to_string(dir.join(&firing.file)).unwrap();
        let next_rule = text
            .lines()
            .enumerate()
            .skip(firing.line as usize)
            .find(|(_, l)| !l.starts_with(['\t', ' ', '}']) && !l.trim().is_empty())
            .map_or(u32::MAX, |(i, _)| i as u32 + 1);
        for x in &firing.expressions {
            assert!(
                x.line >= firing.line && x.line < next_rule,
                "{policy}: expression {}:{} outside the body {}..{next_rule}",
                firing.file,
                x.line,
                firing.line
            );
            let first = x.text.lines().next().unwrap();
            assert!(
                line_of(dir, &firing.file, x.line).contains(first),
                "{policy}: {}:{} does not hold {first:?}",
                firing.file,
                x.line
            );
        }
    }
}

#[tokio::test]
async fn every_shipped_policy_is_explained_to_its_rule_line() {
    let dir = policies_dir();
    let admitter = sandbox_admission::review::admitter_with(None, None, None, None).unwrap();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "sandbox-host-namespaces",
            with(json!({"hostPID": true})),
            "CREATE",
        ),
        (
            "sandbox-host-path",
            with(json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]})),
            "CREATE",
        ),
        (
            "sandbox-sysctls",
            with(
                json!({"securityContext": {"runAsNonRoot": true, "sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]}}),
            ),
            "CREATE",
        ),
        (
            "sandbox-projected-token",
            with(
                json!({"volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]}),
            ),
            "CREATE",
        ),
        (
            "sandbox-automount-token",
            with(json!({"automountServiceAccountToken": true})),
            "CREATE",
        ),
        (
            "sandbox-runtime-class",
            with(json!({"runtimeClassName": "runc"})),
            "CREATE",
        ),
        (
            "sandbox-privileged",
            with_container_security(json!({"privileged": true, "capabilities": {"drop": ["ALL"]}})),
            "CREATE",
        ),
        (
            "sandbox-proc-mount",
            with_container_security(
                json!({"procMount": "Unmasked", "capabilities": {"drop": ["ALL"]}}),
            ),
            "CREATE",
        ),
        (
            "sandbox-capabilities",
            with_container_security(
                json!({"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}),
            ),
            "CREATE",
        ),
        (
            "sandbox-run-as-non-root",
            with_container_security(
                json!({"runAsNonRoot": false, "capabilities": {"drop": ["ALL"]}}),
            ),
            "CREATE",
        ),
    ];
    for (policy, object, op) in &cases {
        assert_explained(&admitter, &dir, object, op, policy).await;
    }
    let mut spec = hardened_spec();
    spec["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 80}]);
    assert_explained(
        &admitter,
        &dir,
        &sandbox(spec),
        "CREATE",
        "sandbox-host-ports",
    )
    .await;
    let mut spec = hardened_spec();
    spec["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("resources");
    assert_explained(
        &admitter,
        &dir,
        &sandbox(spec),
        "CREATE",
        "sandbox-resource-limits",
    )
    .await;

    let mut sb = sandbox(hardened_spec());
    sb["spec"]["volumeClaimTemplates"] =
        json!([{"metadata": {"name": "w"}}, {"metadata": {"name": "w"}}]);
    assert_explained(
        &admitter,
        &dir,
        &sb,
        "CREATE",
        "sandbox-volume-claim-templates",
    )
    .await;
    let mut sb = sandbox(hardened_spec());
    sb["metadata"]["name"] = json!("a".repeat(64));
    sb["spec"]["service"] = json!(true);
    assert_explained(
        &admitter,
        &dir,
        &sb,
        "CREATE",
        "sandbox-service-name-length",
    )
    .await;
    let mut t = sandbox(hardened_spec());
    t["apiVersion"] = json!("extensions.agents.x-k8s.io/v1alpha1");
    t["kind"] = json!("SandboxTemplate");
    t["spec"]["networkPolicyManagement"] = json!("Unmanaged");
    t["spec"]["envVarsInjectionPolicy"] = json!("Overrides");
    assert_explained(
        &admitter,
        &dir,
        &t,
        "UPDATE",
        "sandbox-env-injection-policy",
    )
    .await;
    assert_explained(
        &admitter,
        &dir,
        &t,
        "UPDATE",
        "sandbox-network-policy-management",
    )
    .await;

    let mut pool = example(
        "warmpool-quickstart/sandboxwarmpool.yaml",
        "SandboxWarmPool",
    );
    pool["spec"]["replicas"] = json!(1000);
    pool["spec"]["sandboxTemplateRef"] = json!({});
    assert_explained(&admitter, &dir, &pool, "CREATE", "warmpool-replicas").await;
    assert_explained(&admitter, &dir, &pool, "CREATE", "warmpool-template-ref").await;
    let mut claim = example("warmpool-quickstart/sandbox-claim.yaml", "SandboxClaim");
    claim["spec"]["env"] = json!([{"name": "LD_PRELOAD", "value": "/evil.so"}]);
    claim["spec"]["additionalPodMetadata"] = json!({"labels": {"app": "sandbox-router"}});
    claim["spec"]["lifecycle"]["shutdownTime"] = json!("2020-01-01T00:00:00Z");
    assert_explained(&admitter, &dir, &claim, "CREATE", "claim-env").await;
    assert_explained(&admitter, &dir, &claim, "CREATE", "claim-pod-metadata").await;
    assert_explained(&admitter, &dir, &claim, "CREATE", "claim-shutdown-time").await;
    let mut claim = example("warmpool-quickstart/sandbox-claim.yaml", "SandboxClaim");
    claim["spec"]["sandboxTemplateRef"] = json!({});
    claim["spec"]["warmPoolRef"] = json!({});
    assert_explained(&admitter, &dir, &claim, "CREATE", "claim-template-ref").await;

    // Image registries: only with an allowlist (the shipped one is empty), set in a copy.
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    let meta = tmp.path().join("image_registries.yaml");
    let text = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(
        &meta,
        text.replace(
            "allowedRegistries: []",
            "allowedRegistries: [registry.k8s.io]",
        ),
    )
    .unwrap();
    let listed =
        sandbox_admission::review::admitter_with(None, Some(&tmp.path().to_path_buf()), None, None)
            .unwrap();
    let mut spec = hardened_spec();
    spec["containers"][0]["image"] = json!("docker.io/evil/x:1");
    assert_explained(
        &listed,
        tmp.path(),
        &sandbox(spec),
        "CREATE",
        "sandbox-image-registries",
    )
    .await;

    // The strict profile's policy: each of its rules on its own line.
    let strict =
        sandbox_admission::review::admitter_with(None, None, Some("strict"), None).unwrap();
    assert_explained(
        &strict,
        &dir,
        &with(json!({"hostNetwork": true})),
        "CREATE",
        "sandbox-strict",
    )
    .await;
}

#[tokio::test]
async fn a_policy_that_did_not_fire_shows_its_first_failed_expression() {
    let admitter = sandbox_admission::review::admitter_with(None, None, None, None).unwrap();
    let req = request(&sandbox(hardened_spec()), "CREATE");
    let (decision, explained) = admitter.explain(&req, Some("sandbox-privileged")).await;
    assert!(decision.response.allowed);
    let e = explained[0].as_ref().unwrap();
    assert!(e.firings.is_empty(), "{:?}", e.firings);
    let miss = e.misses.first().expect("a miss");
    assert_eq!(miss.file, "privileged.rego");
    let failed = miss.first_failed.as_ref().expect("first failed expression");
    assert!(failed.text.contains("privileged == true"), "{failed:?}");
    assert_eq!(
        line_of(&policies_dir(), "privileged.rego", failed.line).trim(),
        failed.text
    );
}

#[test]
fn the_command_explains_a_file_and_a_logged_decision() {
    let dir = tempfile::tempdir().unwrap();
    let object =
        with_container_security(json!({"privileged": true, "capabilities": {"drop": ["ALL"]}}));
    let file = dir.path().join("sb.json");
    std::fs::write(&file, object.to_string()).unwrap();
    let out = Command::new(BIN)
        .arg("explain")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("[sandbox-privileged] privileged.rego"),
        "{text}"
    );
    assert!(text.contains("  fired: privileged.rego:"), "{text}");
    assert!(
        text.contains("c.spec.securityContext.privileged == true"),
        "{text}"
    );

    // A decision record written with --log-objects, found by uid.
    let record = json!({"time": "2026-03-04T10:00:00Z", "uid": "uid-7", "endpoint": "validate",
        "user": "alice", "operation": "CREATE", "group": "agents.x-k8s.io", "version": "v1beta1",
        "kind": "Sandbox", "namespace": "team", "name": "sb", "allowed": false, "decision": "denied",
        "object": object});
    let log = dir.path().join("decisions.log");
    std::fs::write(&log, format!("{record}\n")).unwrap();
    let out = Command::new(BIN)
        .args(["explain", "--uid", "uid-7", "--log"])
        .arg(&log)
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["uid"], "uid-7");
    assert_eq!(doc["policies"][0]["policy"], "sandbox-privileged");
    assert_eq!(doc["policies"][0]["firings"][0]["file"], "privileged.rego");
    let out = Command::new(BIN)
        .args(["explain", "--uid", "nope", "--log"])
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The gatekeeper-library templates the suites use: the firing is the template's `violation`
/// rule, at its line in the template's YAML file (the embedded Rego keeps its file lines).
#[tokio::test]
async fn gatekeeper_templates_are_explained_to_their_rule_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gatekeeper-library/library/pod-security-policy");
    for (dir, sample, constraint_name) in [
        (
            "privileged-containers",
            "psp-privileged-container",
            "psp-privileged-container",
        ),
        (
            "host-namespaces",
            "psp-host-namespace",
            "psp-host-namespace",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let template = std::fs::read_to_string(root.join(dir).join("template.yaml")).unwrap();
        std::fs::write(tmp.path().join("template.yaml"), &template).unwrap();
        let samples = root.join(dir).join("samples").join(sample);
        std::fs::copy(
            samples.join("constraint.yaml"),
            tmp.path().join("constraint.yaml"),
        )
        .unwrap();
        let doc: Value = serde_saphyr::from_str(&template).unwrap();
        let target = &doc["spec"]["targets"][0];
        let rego = target["rego"]
            .as_str()
            .or_else(|| {
                target["code"]
                    .as_array()?
                    .iter()
                    .find(|c| c["engine"] == "Rego")?["source"]["rego"]
                    .as_str()
            })
            .unwrap()
            .to_owned();
        let admitter = sandbox_admission::review::admitter_with(
            None,
            Some(&tmp.path().to_path_buf()),
            None,
            None,
        )
        .unwrap();
        let text = std::fs::read_to_string(samples.join("example_disallowed.yaml")).unwrap();
        let mut object: Value = serde_saphyr::from_str(&text).unwrap();
        if object["metadata"]["namespace"].is_null() {
            object["metadata"]["namespace"] = json!("default");
        }
        let req = request(&object, "CREATE");
        let (decision, explained) = admitter.explain(&req, None).await;
        assert!(!decision.response.allowed, "{dir}: {:?}", decision.hits);
        let e = explained
            .iter()
            .filter_map(|e| e.as_ref().ok())
            .find(|e| e.policy == constraint_name)
            .unwrap_or_else(|| panic!("{dir}: {explained:?}"));
        assert!(e.file.starts_with("template.yaml"), "{dir}: {}", e.file);
        assert!(!e.firings.is_empty(), "{dir}: {e:?}");
        for f in &e.firings {
            let line = template
                .lines()
                .nth(f.line as usize - 1)
                .unwrap_or_default();
            assert!(
                rego.contains(line.trim()),
                "{dir}: {line:?} is not in the template's Rego"
            );
            assert!(
                line.trim_start().starts_with("violation"),
                "{dir}: line {} is {line:?}",
                f.line
            );
            assert!(f.message.is_some(), "{dir}: {f:?}");
            for x in &f.expressions {
                let l = template
                    .lines()
                    .nth(x.line as usize - 1)
                    .unwrap_or_default();
                assert!(
                    l.contains(x.text.lines().next().unwrap()),
                    "{dir}: {}:{} {l:?} vs {:?}",
                    f.file,
                    x.line,
                    x.text
                );
            }
        }
    }
}
