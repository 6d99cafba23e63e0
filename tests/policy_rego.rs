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

#[test]
fn shipped_and_configmap_policy_directories_pass_check() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // The ConfigMap volume holds exactly the files policies/kustomization.yaml lists.
    let generator: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(root.join("policies/kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let configmap = tempfile::tempdir().unwrap();
    for f in generator["configMapGenerator"][0]["files"]
        .as_array()
        .unwrap()
    {
        let f = f.as_str().unwrap();
        std::fs::copy(root.join("policies").join(f), configmap.path().join(f)).unwrap();
    }
    for dir in [root.join("policies"), configmap.path().to_path_buf()] {
        match sandbox_admission::policy::check(&dir) {
            Ok(summary) => assert!(
                summary.policies.len() >= 20,
                "{}: {summary:?}",
                dir.display()
            ),
            Err(e) => panic!("{} does not load:\n{e}", dir.display()),
        }
    }
    for profile in ["default", "strict"] {
        let code = sandbox_admission::policy::cli::run(
            sandbox_admission::policy::cli::PolicyCommand::Check {
                dir: root.join("policies"),
                profile: profile.into(),
            },
        );
        assert_eq!(code, std::process::ExitCode::SUCCESS, "{profile}");
    }
    let strict =
        sandbox_admission::policy::check_profile(&root.join("policies"), "strict").unwrap();
    let default = sandbox_admission::policy::check(&root.join("policies")).unwrap();
    assert_eq!(
        strict.policies.len(),
        default.policies.len() + 1,
        "strict adds sandbox-strict"
    );
    assert!(
        sandbox_admission::policy::check_profile(&root.join("policies"), "nonesuch").is_err(),
        "a profile no policy names is refused"
    );
}
