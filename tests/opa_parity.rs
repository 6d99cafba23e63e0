//! Rego as OPA and Gatekeeper evaluate it (issue 12): gator's review defaults in `policy verify`
//! and `review`, the seven reproductions of the issue on the patched engine, and
//! gatekeeper-library's pod-security-policy suites run unchanged through the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures/opa-parity").join(rel)
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

#[test]
fn verify_reviews_cases_as_gator_does() {
    let suite = fixture("suite-review-defaults.yaml");
    let (code, out, err) = run(&["policy", "verify", suite.to_str().unwrap()]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(last_line(&out), "2 passed, 0 failed", "{out}");
}

#[test]
fn review_takes_an_admission_review_as_given() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["template-echo.yaml", "constraint-echo.yaml"] {
        std::fs::copy(fixture(f), dir.path().join(f)).unwrap();
    }
    let review = fixture("update-no-kind.yaml");
    let (code, out, err) = run(&[
        "review",
        review.to_str().unwrap(),
        "--endpoint",
        "validate",
        "-o",
        "json",
        "--policies",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    // The operation and the old object reach the policy; the constraint's dotted name is served.
    assert!(message.contains("[echo-review-1.16]"), "{message}");
    assert!(message.contains(r#"operation="UPDATE""#), "{message}");
    assert!(message.contains("old=1"), "{message}");
}

/// gatekeeper-library's pod-security-policy suites, unchanged (tests/fixtures/gatekeeper-library,
/// Apache-2.0): every one of the 19 suites and all 140 of their cases pass, as under gator.
#[test]
fn gatekeeper_library_pod_security_suites_pass_unchanged() {
    let dir = root().join("tests/fixtures/gatekeeper-library/library/pod-security-policy");
    let mut suites: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path().join("suite.yaml"))
        .filter(|p| p.is_file())
        .collect();
    suites.sort();
    assert_eq!(suites.len(), 19, "{suites:?}");
    let mut args = vec!["policy".to_string(), "verify".to_string()];
    args.extend(suites.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(last_line(&out), "140 passed, 0 failed", "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    for suite in &suites {
        let shown = suite.display().to_string();
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("PASS {shown}: "))),
            "no case of {shown} ran:\n{out}"
        );
    }
}
