//! `audit` over a decision log written the way the server writes it: rotated gzip generations,
//! a corrupt line, every filter, the summary's exact counts; and `serve --decision-log` end to end.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use chrono::{TimeZone, Utc};
use sandbox_admission::audit::DecisionRecord;
use sandbox_admission::audit::log::RotatingFile;
use sandbox_admission::policy::{Action, PolicyHit};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_sandbox-admission");
const RUNC: &str = "runtime class \"runc\" is not allowed";

fn hit(policy: &str, action: Action, message: &str) -> PolicyHit {
    PolicyHit {
        policy: policy.into(),
        action,
        message: message.into(),
    }
}

/// user, namespace, kind, endpoint, decision, policies hit.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Vec<PolicyHit>,
);

/// Ten decisions, one minute apart from 10:01, with hand-counted totals (see the summary test).
fn records() -> Vec<DecisionRecord> {
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        ("alice", "team-a", "Sandbox", "validate", "denied", vec![hit("runtime-class", Action::Deny, RUNC)]),
        ("alice", "team-a", "Sandbox", "validate", "denied", vec![hit("runtime-class", Action::Deny, RUNC), hit("privileged", Action::Deny, "container c is privileged")]),
        ("bob", "team-b", "Pod", "validate", "warned", vec![hit("image-registry", Action::Warn, "image docker.io/x is outside the allowlist")]),
        ("bob", "team-a", "SandboxClaim", "validate", "allowed", vec![]),
        ("carol", "team-b", "Sandbox", "validate", "denied", vec![hit("runtime-class", Action::Deny, RUNC)]),
        ("carol", "team-b", "Pod", "validate", "allowed", vec![hit("limits", Action::Dryrun, "no cpu limit")]),
        ("alice", "team-b", "SandboxTemplate", "validate", "warned", vec![hit("image-registry", Action::Warn, "image docker.io/x is outside the allowlist")]),
        ("bob", "team-b", "Pod", "mutate", "denied", vec![]),
        ("alice", "team-a", "Pod", "mutate", "allowed", vec![]),
        ("carol", "team-a", "SandboxWarmPool", "validate", "allowed", vec![]),
    ];
    rows.into_iter()
        .enumerate()
        .map(|(i, (user, ns, kind, endpoint, decision, policies))| {
            let n = i + 1;
            DecisionRecord {
                time: Utc.with_ymd_and_hms(2026, 3, 4, 10, n as u32, 0).unwrap(),
                uid: format!("uid-{n}"),
                endpoint: endpoint.into(),
                user: user.into(),
                groups: vec!["system:authenticated".into()],
                operation: "CREATE".into(),
                group: if kind == "Pod" { "" } else { "agents.x-k8s.io" }.into(),
                version: "v1beta1".into(),
                kind: kind.into(),
                namespace: ns.into(),
                name: format!("obj-{n}"),
                dry_run: false,
                allowed: decision != "denied",
                decision: decision.into(),
                message: (n == 8).then(|| "no such runtime profile \"kata\"".to_string()),
                policies,
                mutations: if n == 9 {
                    vec!["runtimeClassName=gvisor".into()]
                } else {
                    vec![]
                },
                latency_us: 100,
                // Padding so that a few records fill the 1 KiB rotation size.
                object: Some(json!({"padding": "x".repeat(300)})),
                shadow: None,
            }
        })
        .collect()
}

/// Write the records through the server's own rotating writer, then a corrupt line and the last
/// record straight into the current file. Returns every file and the corrupt line's number.
fn write_log(dir: &Path) -> (Vec<PathBuf>, usize) {
    let path = dir.join("decisions.log");
    let all = records();
    let (head, tail) = all.split_at(all.len() - 1);
    let mut file = RotatingFile::open(path.clone(), 1024, 10).unwrap();
    for r in head {
        let mut line = serde_json::to_vec(r).unwrap();
        line.push(b'\n');
        file.write_line(&line).unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let before = std::fs::read_to_string(&path).unwrap().lines().count();
    let mut plain = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(plain, "{{\"time\": \"not a time\", truncated").unwrap();
    writeln!(plain, "{}", serde_json::to_string(&tail[0]).unwrap()).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files
            .iter()
            .filter(|f| f.to_string_lossy().ends_with(".gz"))
            .count()
            >= 2,
        "the log rotated into gzip generations: {files:?}"
    );
    (files, before + 1)
}

fn audit(args: &[&str], files: &[PathBuf]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("audit");
    if !files.is_empty() {
        cmd.arg("--log").args(files);
    }
    cmd.args(args).stdin(Stdio::null()).output().unwrap()
}

fn json_out(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn uids(out: &Output) -> Vec<String> {
    json_out(out)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uid"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn summary_counts_are_exact_and_the_corrupt_line_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (files, corrupt_line) = write_log(dir.path());
    let out = audit(&["--summary", "-o", "json"], &files);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "decisions.log:{corrupt_line}: skipped malformed record"
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let s = json_out(&out);
    assert_eq!(s["total"], 10);
    assert_eq!(
        s["decisions"],
        json!({"allowed": 4, "denied": 4, "warned": 2})
    );
    assert_eq!(
        s["policies"],
        json!([
            {"policy": "runtime-class", "total": 3, "deny": 3, "warn": 0, "dryrun": 0},
            {"policy": "image-registry", "total": 2, "deny": 0, "warn": 2, "dryrun": 0},
            {"policy": "limits", "total": 1, "deny": 0, "warn": 0, "dryrun": 1},
            {"policy": "privileged", "total": 1, "deny": 1, "warn": 0, "dryrun": 0},
        ])
    );
    assert_eq!(
        s["namespaces"],
        json!([
            {"name": "team-a", "total": 5, "denied": 2, "warned": 0, "allowed": 3},
            {"name": "team-b", "total": 5, "denied": 2, "warned": 2, "allowed": 1},
        ])
    );
    assert_eq!(
        s["users"],
        json!([
            {"name": "alice", "total": 4, "denied": 2, "warned": 1, "allowed": 1},
            {"name": "bob", "total": 3, "denied": 1, "warned": 1, "allowed": 1},
            {"name": "carol", "total": 3, "denied": 1, "warned": 0, "allowed": 2},
        ])
    );
    assert_eq!(
        s["topDenials"],
        json!([
            {"message": format!("[runtime-class] {RUNC}"), "count": 3},
            {"message": "[privileged] container c is privileged", "count": 1},
            {"message": "no such runtime profile \"kata\"", "count": 1},
        ])
    );
    assert_eq!(s["first"], "2026-03-04T10:01:00Z");
    assert_eq!(s["last"], "2026-03-04T10:10:00Z");

    let text = audit(&["--summary"], &files);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.starts_with("10 decisions from 2026-03-04T10:01:00Z to 2026-03-04T10:10:00Z: 4 denied, 2 warned, 4 allowed"),
        "{text}"
    );
    assert!(
        text.contains("runtime-class   3     3     0     0"),
        "{text}"
    );
}

#[test]
fn filters_select_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = write_log(dir.path());
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec![],
            vec!["10", "9", "8", "7", "6", "5", "4", "3", "2", "1"],
        ),
        (vec!["--decision", "denied"], vec!["8", "5", "2", "1"]),
        (
            vec![
                "--decision",
                "warned",
                "--decision",
                "denied",
                "--namespace",
                "team-b",
            ],
            vec!["8", "7", "5", "3"],
        ),
        (vec!["--policy", "image-registry"], vec!["7", "3"]),
        (
            vec!["--namespace", "team-a", "--user", "alice"],
            vec!["9", "2", "1"],
        ),
        (vec!["--kind", "pod"], vec!["9", "8", "6", "3"]),
        (vec!["--endpoint", "mutate"], vec!["9", "8"]),
        (
            vec![
                "--since",
                "2026-03-04T10:05:00Z",
                "--until",
                "2026-03-04T12:07:00+02:00",
            ],
            vec!["7", "6", "5"],
        ),
        (vec!["--since", "2026-03-05"], vec![]),
        (vec!["--limit", "2"], vec!["10", "9"]),
        (vec!["--user", "nobody"], vec![]),
    ];
    for (args, want) in cases {
        let mut full = args.clone();
        full.extend(["-o", "json"]);
        let want: Vec<String> = want.iter().map(|n| format!("uid-{n}")).collect();
        assert_eq!(uids(&audit(&full, &files)), want, "{args:?}");
    }
    // A relative --since: every record is years old by the clock, so nothing is that recent.
    assert!(uids(&audit(&["--since", "1h", "-o", "json"], &files)).is_empty());

    let table = audit(&["--decision", "denied"], &files);
    let table = String::from_utf8(table.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("TIME"), "{table}");
    assert!(
        lines[1].starts_with("2026-03-04T10:08:00Z  denied"),
        "{table}"
    );
    assert!(lines[1].contains("team-b/obj-8"), "{table}");
    assert!(
        lines[1].ends_with("no such runtime profile \"kata\""),
        "{table}"
    );
    assert!(
        lines[3].ends_with("runtime-class(deny),privileged(deny)"),
        "{table}"
    );
}

#[test]
fn reads_standard_input_and_rejects_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = write_log(dir.path());
    let plain = std::fs::read(dir.path().join("decisions.log")).unwrap();
    let mut child = Command::new(BIN)
        .args(["audit", "--log", "-", "-o", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&plain).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(uids(&out).contains(&"uid-10".to_string()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("<stdin>:"));

    let bad_time = audit(&["--since", "yesterday"], &files);
    assert_eq!(bad_time.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_time.stderr).contains("--since"));
    let missing = audit(&[], &[dir.path().join("nope.log")]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.log"));
    let help = Command::new(BIN)
        .args(["audit", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("Examples:"));
}

#[tokio::test]
async fn serve_writes_a_decision_log_that_audit_reads() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("d.log");
    let settings = sandbox_admission::cli::serve_settings(sandbox_admission::cli::ServeArgs {
        decision_log: Some(log.clone()),
        no_decision_log_stdout: true,
        log_objects: true,
        ..Default::default()
    })
    .unwrap();
    assert!(!settings.config.decision_log.stdout);
    assert!(settings.config.decision_log.include_objects);
    let mut config = common::test_config();
    config.decision_log = settings.config.decision_log;
    let server = common::TestServer::start_with(config, None).await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "team-a"},
                     "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
    let mut req = common::request_for(&pod, "CREATE", "team-a");
    req["userInfo"]["username"] = json!("dave");
    server.review("/validate", req).await;
    server.stop().await;
    // The writer thread flushes after each batch; wait (boundedly) until the line is there.
    for _ in 0..200 {
        if std::fs::read_to_string(&log).is_ok_and(|t| t.ends_with('\n')) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let records = json_out(&audit(&["--user", "dave", "-o", "json"], &[log]));
    assert_eq!(records.as_array().unwrap().len(), 1, "{records}");
    assert_eq!(records[0]["kind"], "Pod");
    assert_eq!(records[0]["namespace"], "team-a");
    assert_eq!(records[0]["decision"], "allowed");
    assert_eq!(records[0]["object"]["metadata"]["name"], "web");
}
