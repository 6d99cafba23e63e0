//! `replay` on a decision log written by the real server over HTTPS with `--log-objects`: a
//! tightened and a loosened candidate set report exactly the flips expected, records without an
//! object (another server, without `--log-objects`) are named as not replayed, and the exit
//! code follows `--fail-on`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestServer, request_for, test_config};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_sandbox-admission");

fn sandbox(name: &str, ns: &str, runtime: Option<&str>, privileged: bool, limits: bool) -> Value {
    let mut container = json!({"name": "c", "image": "registry.k8s.io/pause:3.9"});
    if limits {
        container["resources"] = json!({"limits": {"cpu": "1", "memory": "1Gi"}});
    }
    if privileged {
        container["securityContext"] = json!({"privileged": true});
    }
    let mut spec = json!({"securityContext": {"runAsNonRoot": true}, "containers": [container]});
    if let Some(r) = runtime {
        spec["runtimeClassName"] = json!(r);
    }
    json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
           "metadata": {"name": name, "namespace": ns}, "spec": {"podTemplate": {"spec": spec}}})
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// The decision log writer batches off the request path: wait for the lines to land.
async fn wait_for_lines(path: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines(path) < n {
        assert!(Instant::now() < deadline, "{} lines never written", n);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A copy of the shipped policies with `edit` applied.
fn candidate(dir: &Path, edit: impl Fn(&Path)) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    edit(dir);
    dir.to_path_buf()
}

fn replay(logs: &[&Path], policies: &Path, extra: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("replay").arg("--log");
    for l in logs {
        cmd.arg(l);
    }
    cmd.arg("--policies").arg(policies).args(extra);
    let out = cmd.output().unwrap();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[tokio::test]
async fn replay_reports_exactly_the_flips_of_a_tightened_and_a_loosened_set() {
    let dir = tempfile::tempdir().unwrap();
    let with_objects = dir.path().join("decisions.log");
    let without_objects = dir.path().join("plain.log");

    let mut config = test_config();
    config.decision_log.file = Some(with_objects.clone());
    config.decision_log.include_objects = true;
    let server = TestServer::start_full(config, None, None, true).await;
    let cases = [
        (sandbox("ok", "team-a", None, false, true), "allowed"),
        (sandbox("nolimits", "team-a", None, false, false), "warned"),
        (sandbox("priv", "team-b", None, true, true), "denied"),
        (
            sandbox("runc", "team-b", Some("runc"), false, true),
            "denied",
        ),
    ];
    for (object, expected) in &cases {
        let ns = object["metadata"]["namespace"].as_str().unwrap();
        let response = server
            .review("/validate", request_for(object, "CREATE", ns))
            .await;
        let label = match (&response["allowed"], response.get("warnings")) {
            (Value::Bool(false), _) => "denied",
            (_, Some(Value::Array(w))) if !w.is_empty() => "warned",
            _ => "allowed",
        };
        assert_eq!(label, *expected, "{response}");
    }
    // A pod through /mutate: its record is not judged by policies, so replay skips it.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team-a"},
                     "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    server
        .review("/mutate", request_for(&pod, "CREATE", "team-a"))
        .await;
    wait_for_lines(&with_objects, 5).await;
    server.stop().await;

    // Another replica, logging without objects: its record cannot be replayed, and says so.
    let mut config = test_config();
    config.decision_log.file = Some(without_objects.clone());
    let server = TestServer::start_full(config, None, None, true).await;
    let mut lean = request_for(
        &sandbox("lean", "team-c", None, false, true),
        "CREATE",
        "team-c",
    );
    lean["uid"] = json!("uid-lean");
    server.review("/validate", lean).await;
    wait_for_lines(&without_objects, 1).await;
    server.stop().await;
    let logs = [with_objects.as_path(), without_objects.as_path()];

    // Against the shipped set itself: nothing changes.
    let same = candidate(&dir.path().join("same"), |_| {});
    let (code, out) = replay(&logs, &same, &["-o", "json", "--fail-on", "any-change"]);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["records"], 6);
    assert_eq!(report["replayed"], 4);
    assert_eq!(report["withoutObject"], 1);
    assert_eq!(report["skipped"], json!({"mutate": 1}));
    assert_eq!(report["counts"]["unchanged"], 4);
    assert_eq!(report["changed"], json!([]));
    assert_eq!(report["notReplayed"][0]["uid"], "uid-lean");
    assert!(
        report["notReplayed"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("--log-objects")
    );

    // Tightened: resource limits deny instead of warning.
    let tight = candidate(&dir.path().join("tight"), |d| {
        let meta = d.join("resource_limits.yaml");
        let text = std::fs::read_to_string(&meta).unwrap();
        std::fs::write(
            &meta,
            text.replace("\nenforcementAction: warn\n", "\nenforcementAction: deny\n"),
        )
        .unwrap();
    });
    let (code, out) = replay(&logs, &tight, &["-o", "json"]);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code, 1, "a new denial fails by default: {report:#}");
    assert_eq!(
        report["counts"],
        json!({"allowedToDenied": 1, "deniedToAllowed": 0, "newWarnings": 0, "goneWarnings": 2, "unchanged": 3})
    );
    let changed = report["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["name"], "nolimits");
    assert_eq!(changed[0]["flip"], "allowed_to_denied");
    assert_eq!(changed[0]["recorded"], "warned");
    assert_eq!(changed[0]["replayed"], "denied");
    let policies = report["byPolicy"].as_object().unwrap();
    assert_eq!(
        policies.keys().collect::<Vec<_>>(),
        vec!["sandbox-resource-limits"]
    );
    let limits = &report["byPolicy"]["sandbox-resource-limits"];
    assert_eq!(
        (
            &limits["newDenials"],
            &limits["goneDenials"],
            &limits["newWarnings"],
            &limits["goneWarnings"]
        ),
        (&json!(1), &json!(0), &json!(0), &json!(2))
    );
    assert_eq!(
        limits["examples"]["new_denial"][0]["object"],
        "Sandbox team-a/nolimits"
    );
    assert_eq!(report["byNamespace"]["team-a"]["allowedToDenied"], 1);
    assert_eq!(report["byNamespace"]["team-b"]["allowedToDenied"], 0);
    let (code, _) = replay(&logs, &tight, &["--fail-on", "never"]);
    assert_eq!(code, 0);

    // Loosened: no privileged policy, and the runtime class only warns.
    let loose = candidate(&dir.path().join("loose"), |d| {
        std::fs::remove_file(d.join("privileged.rego")).unwrap();
        std::fs::remove_file(d.join("privileged.yaml")).unwrap();
        std::fs::remove_file(d.join("privileged_test.rego")).unwrap();
        let meta = d.join("runtime_class.yaml");
        let text = std::fs::read_to_string(&meta).unwrap();
        std::fs::write(&meta, format!("{}enforcementAction: warn\n", text)).unwrap();
    });
    let (code, out) = replay(&logs, &loose, &["-o", "json"]);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code, 0, "nothing newly denied: {report:#}");
    assert_eq!(
        report["counts"],
        json!({"allowedToDenied": 0, "deniedToAllowed": 2, "newWarnings": 1, "goneWarnings": 0, "unchanged": 2})
    );
    let flipped: Vec<(&str, &str)> = report["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["flip"].as_str().unwrap()))
        .collect();
    assert_eq!(
        flipped,
        vec![("priv", "denied_to_allowed"), ("runc", "denied_to_allowed")]
    );
    assert_eq!(report["byPolicy"]["sandbox-privileged"]["goneDenials"], 1);
    assert_eq!(
        report["byPolicy"]["sandbox-runtime-class"]["goneDenials"],
        1
    );
    assert_eq!(
        report["byPolicy"]["sandbox-runtime-class"]["newWarnings"],
        1
    );
    assert_eq!(report["byNamespace"]["team-b"]["deniedToAllowed"], 2);
    let (code, text) = replay(&logs, &loose, &["--fail-on", "any-change"]);
    assert_eq!(code, 1);
    for expected in [
        "replayed 4 /validate record(s) of 6",
        "1 /validate record(s) carry no object and were NOT replayed",
        "1 mutate record(s) skipped",
        "allowed→denied: 0  denied→allowed: 2  new warnings: 1  gone warnings: 0  unchanged: 2",
        "[sandbox-privileged] would no longer deny (1):",
        "  Sandbox team-b/priv (uid uid-Sandbox-priv-CREATE): containers[c]: privileged containers are not allowed",
        "denied→allowed  Sandbox team-b/runc CREATE by",
        "NOT REPLAYED\n  Sandbox team-c/lean (uid uid-lean): the record has no object",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}
