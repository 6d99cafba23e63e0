//! The shadow set over HTTPS: answers are exactly those of a server without it, each
//! disagreement is counted by policy and direction and logged as an `endpoint: shadow` record
//! (which `audit` keeps apart), and editing the shadow directory hot-reloads it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestServer, request_for, test_config};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_sandbox-admission");

fn sandbox(name: &str, privileged: bool, limits: bool) -> Value {
    let mut container = json!({"name": "c", "image": "registry.k8s.io/pause:3.9"});
    if limits {
        container["resources"] = json!({"limits": {"cpu": "1", "memory": "1Gi"}});
    }
    if privileged {
        container["securityContext"] = json!({"privileged": true});
    }
    json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
           "metadata": {"name": name, "namespace": "team-a"},
           "spec": {"podTemplate": {"spec": {"securityContext": {"runAsNonRoot": true}, "containers": [container]}}}})
}

fn copy_policies(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir.to_path_buf()
}

fn set_action(dir: &Path, file: &str, from: &str, to: &str) {
    let meta = dir.join(file);
    let text = std::fs::read_to_string(&meta).unwrap();
    assert!(text.contains(from), "{file}");
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text.replace(from, to)).unwrap();
    std::fs::rename(tmp, meta).unwrap();
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn wait_metric(server: &TestServer, line_start: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = server.get_health("/metrics").await;
        if metric(&text, line_start) == Some(want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{line_start} never reached {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shadow_answers_unchanged_disagreements_counted_logged_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let shadow_dir = copy_policies(&dir.path().join("shadow"));
    // The candidate: resource limits deny instead of warning; no privileged policy.
    set_action(
        &shadow_dir,
        "resource_limits.yaml",
        "\nenforcementAction: warn\n",
        "\nenforcementAction: deny\n",
    );
    for f in ["privileged.rego", "privileged.yaml", "privileged_test.rego"] {
        std::fs::remove_file(shadow_dir.join(f)).unwrap();
    }
    let log = dir.path().join("decisions.log");
    let mut config = test_config();
    config.decision_log.file = Some(log.clone());
    config.policy.reload_debounce_ms = 50;
    config.shadow.policies = Some(shadow_dir.clone());
    let server = TestServer::start_full(config, None, None, true).await;
    let control = TestServer::start_full(test_config(), None, None, false).await;

    let objects = [
        sandbox("ok", false, true),
        sandbox("nolimits", false, false),
        sandbox("priv", true, true),
    ];
    for object in &objects {
        let request = request_for(object, "CREATE", "team-a");
        let with_shadow = server.review("/validate", request.clone()).await;
        let without = control.review("/validate", request).await;
        assert_eq!(
            with_shadow, without,
            "the shadow set never changes an answer"
        );
    }
    assert_eq!(
        server
            .review(
                "/validate",
                request_for(&sandbox("nolimits", false, false), "CREATE", "team-a")
            )
            .await["allowed"],
        true
    );
    let metrics = wait_metric(&server, "sandbox_admission_shadow_evaluations_total ", 4.0).await;
    let count = |policy: &str, direction: &str| {
        metric(
            &metrics,
            &format!(
                "sandbox_admission_shadow_disagreements_total{{policy=\"{policy}\",direction=\"{direction}\"}} "
            ),
        )
    };
    assert_eq!(count("sandbox-resource-limits", "new_denial"), Some(2.0));
    assert_eq!(count("sandbox-resource-limits", "gone_warning"), Some(4.0));
    assert_eq!(count("sandbox-privileged", "gone_denial"), Some(1.0));
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.starts_with("sandbox_admission_shadow_disagreements_total{"))
            .count(),
        3,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "sandbox_admission_shadow_dropped_total "),
        Some(0.0)
    );
    let (_, control_metrics) = control.get_health("/metrics").await;
    assert_eq!(
        metric(&metrics, "sandbox_admission_policies_loaded "),
        metric(&control_metrics, "sandbox_admission_policies_loaded "),
        "the shadow set's size is not the serving set's"
    );

    // The decision log: 4 live records and 3 shadow records (one per disagreeing review).
    let deadline = Instant::now() + Duration::from_secs(10);
    let records: Vec<Value> = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let records: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if records.len() >= 7 {
            break records;
        }
        assert!(Instant::now() < deadline, "log has {}", records.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let shadows: Vec<&Value> = records
        .iter()
        .filter(|r| r["endpoint"] == "shadow")
        .collect();
    assert_eq!(shadows.len(), 3);
    let priv_record = shadows
        .iter()
        .find(|r| r["name"] == "priv")
        .expect("priv disagreement");
    assert_eq!(priv_record["decision"], "allowed");
    assert_eq!(priv_record["shadow"]["liveDecision"], "denied");
    assert_eq!(priv_record["shadow"]["flip"], "denied_to_allowed");
    assert_eq!(
        priv_record["shadow"]["changes"][0]["policy"],
        "sandbox-privileged"
    );
    assert_eq!(
        priv_record["shadow"]["changes"][0]["direction"],
        "gone_denial"
    );
    let nolimits = shadows.iter().find(|r| r["name"] == "nolimits").unwrap();
    assert_eq!(nolimits["decision"], "denied");
    assert_eq!(nolimits["shadow"]["liveDecision"], "warned");
    assert_eq!(nolimits["shadow"]["flip"], "allowed_to_denied");

    // `audit` keeps shadow records apart from decisions.
    let audit = |extra: &[&str]| -> Vec<Value> {
        let out = Command::new(BIN)
            .arg("audit")
            .arg("--log")
            .arg(&log)
            .args(["-o", "json"])
            .args(extra)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(audit(&[]).len(), 4);
    assert_eq!(audit(&["--endpoint", "shadow"]).len(), 3);

    // Hot reload of the shadow directory: limits back to a warning, so nolimits agrees again.
    set_action(
        &shadow_dir,
        "resource_limits.yaml",
        "\nenforcementAction: deny\n",
        "\nenforcementAction: warn\n",
    );
    wait_metric(
        &server,
        "sandbox_admission_shadow_policy_reload_total{result=\"success\"} ",
        1.0,
    )
    .await;
    server
        .review(
            "/validate",
            request_for(&sandbox("nolimits", false, false), "CREATE", "team-a"),
        )
        .await;
    let metrics = wait_metric(&server, "sandbox_admission_shadow_evaluations_total ", 5.0).await;
    assert_eq!(
        metric(
            &metrics,
            "sandbox_admission_shadow_disagreements_total{policy=\"sandbox-resource-limits\",direction=\"new_denial\"} "
        ),
        Some(2.0),
        "the reloaded shadow set agrees on nolimits"
    );
    assert_eq!(
        metric(
            &metrics,
            "sandbox_admission_policy_reload_total{result=\"success\"} "
        ),
        None,
        "the serving set was not reloaded"
    );
    server.stop().await;
    control.stop().await;
}
