//! The Rego unit tests of the shipped `policies/` run with `cargo test`.

use std::path::PathBuf;

use sandbox_admission::policy::{TestOutcome, run_tests};

#[test]
fn shipped_policy_unit_tests_all_pass() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies");
    let report = match run_tests(&[dir], None, true) {
        Ok(r) => r,
        Err(e) => panic!("policies/ does not load:\n{e}"),
    };
    let failures: Vec<String> = report
        .results
        .iter()
        .filter(|r| r.outcome != TestOutcome::Pass)
        .map(|r| format!("{}:{}: {} {:?}", r.file, r.line, r.name, r.outcome))
        .collect();
    assert!(
        failures.is_empty(),
        "failing Rego tests:\n{}",
        failures.join("\n")
    );
    assert!(
        report.results.len() >= 40,
        "only {} Rego tests found",
        report.results.len()
    );
    for file in &report.coverage {
        assert!(
            file.percent() > 0.0,
            "{} is never exercised by a test",
            file.file
        );
    }
}
