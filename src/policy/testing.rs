//! `policy test` and `policy check` as library functions: Rego unit tests like `opa test`, and
//! a load-only check of a policy directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use regex::Regex;
use regorus::Engine;

use super::compile;
use super::{LoadIssue, PolicyConfig, PolicyLoadError, PolicySet, PolicySource, SourceFile};

/// A unit test that takes longer than this is stopped and reported as an error.
const TEST_TIMEOUT_MS: u64 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    Pass,
    /// The test rule was false or undefined.
    Fail,
    /// Evaluation failed (an error, or the time limit).
    Error(String),
}

#[derive(Debug, Clone)]
pub struct TestResult {
    /// `data.<package>.<rule>`.
    pub name: String,
    pub file: String,
    pub line: u32,
    pub outcome: TestOutcome,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub struct FileCoverage {
    pub file: String,
    pub covered: usize,
    pub not_covered: Vec<u32>,
}

impl FileCoverage {
    pub fn percent(&self) -> f64 {
        let total = self.covered + self.not_covered.len();
        if total == 0 {
            return 100.0;
        }
        // Line counts are far below 2^52, so the conversions are exact.
        #[allow(clippy::cast_precision_loss)]
        let pct = self.covered as f64 * 100.0 / total as f64;
        pct
    }
}

#[derive(Debug, Clone, Default)]
pub struct TestReport {
    pub results: Vec<TestResult>,
    /// Per policy/library file; empty unless coverage was asked for.
    pub coverage: Vec<FileCoverage>,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.outcome == TestOutcome::Pass)
            .count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    pub fn ok(&self) -> bool {
        self.failed() == 0
    }
}

/// Run every `test_*` rule of every `*_test.rego` under `dirs` (filtered by `filter` on the
/// full rule name). The policy sets must load cleanly first: a test run over a set the server
/// would refuse is not a pass.
pub fn run_tests(
    dirs: &[PathBuf],
    filter: Option<&Regex>,
    coverage: bool,
) -> Result<TestReport, PolicyLoadError> {
    let files = read_all(dirs)?;
    let origin = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    PolicySet::compile(&files, origin, &PolicyConfig::default())?;
    let mut engine = Engine::new();
    engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
        limit: Duration::from_millis(TEST_TIMEOUT_MS),
        check_interval: std::num::NonZeroU32::MIN,
    });
    let mut issues = Vec::new();
    let mut tests = Vec::new();
    for file in files.iter().filter(|f| compile::is_rego(&f.path)) {
        match compile::add_module(&mut engine, file) {
            Ok(package) if compile::is_test_file(&file.path) => {
                for (rule, line) in test_rules(&file.text) {
                    tests.push((format!("{package}.{rule}"), file.path.clone(), line));
                }
            }
            Ok(_) => {}
            Err(issue) => issues.push(issue),
        }
    }
    if !issues.is_empty() {
        return Err(PolicyLoadError { issues });
    }
    engine.set_enable_coverage(coverage);
    let mut report = TestReport::default();
    for (name, file, line) in tests {
        if filter.is_some_and(|re| !re.is_match(&name)) {
            continue;
        }
        let started = Instant::now();
        let outcome = match engine.eval_rule(name.clone()) {
            Ok(regorus::Value::Bool(true)) => TestOutcome::Pass,
            Ok(_) => TestOutcome::Fail,
            Err(e) => TestOutcome::Error(format!("{e:#}")),
        };
        report.results.push(TestResult {
            name,
            file,
            line,
            outcome,
            duration: started.elapsed(),
        });
    }
    if coverage {
        let cov = engine
            .get_coverage_report()
            .map_err(|e| PolicyLoadError::one("(coverage)", None, format!("{e:#}")))?;
        report.coverage = cov
            .files
            .into_iter()
            .filter(|f| !compile::is_test_file(&f.path))
            .map(|f| FileCoverage {
                file: f.path,
                covered: f.covered.len(),
                not_covered: f.not_covered.into_iter().collect(),
            })
            .collect();
    }
    Ok(report)
}

/// What `policy check` found in a directory that loads cleanly.
#[derive(Debug, Clone)]
pub struct CheckSummary {
    /// `(name, file, enforcementAction)` of each policy.
    pub policies: Vec<(String, String, String)>,
    pub test_files: usize,
    /// What would run the set in the server.
    pub evaluator: super::EvaluatorKind,
}

/// Load `dir` exactly as `serve --policies` would, and parse its test files too.
pub fn check(dir: &Path) -> Result<CheckSummary, PolicyLoadError> {
    check_profile(dir, super::meta::DEFAULT_PROFILE)
}

/// [`check`] under a profile (`policy check --profile strict`).
pub fn check_profile(dir: &Path, profile: &str) -> Result<CheckSummary, PolicyLoadError> {
    let files = read_all(&[dir.to_path_buf()])?;
    let config = PolicyConfig {
        profile: profile.to_owned(),
        ..PolicyConfig::default()
    };
    let set = PolicySet::compile(&files, dir.display().to_string(), &config);
    let mut issues = match &set {
        Ok(_) => Vec::new(),
        Err(e) => e.issues.clone(),
    };
    let mut engine = Engine::new();
    let mut test_files = 0;
    for file in files.iter().filter(|f| compile::is_test_file(&f.path)) {
        test_files += 1;
        if let Err(issue) = compile::add_module(&mut engine, file) {
            issues.push(issue);
        }
    }
    match set {
        Ok(set) if issues.is_empty() => Ok(CheckSummary {
            policies: set
                .policies
                .iter()
                .map(|p| (p.name.clone(), p.file.clone(), p.action.to_string()))
                .collect(),
            test_files,
            evaluator: set.evaluator(),
        }),
        _ => Err(PolicyLoadError { issues }),
    }
}

/// Files of several directories; paths are shown with their directory so they can be opened.
fn read_all(dirs: &[PathBuf]) -> Result<Vec<SourceFile>, PolicyLoadError> {
    let mut all = Vec::new();
    let mut issues: Vec<LoadIssue> = Vec::new();
    for dir in dirs {
        match PolicySource::Dir(dir.clone()).read() {
            Ok(files) => all.extend(files.into_iter().map(|f| SourceFile {
                path: dir.join(&f.path).display().to_string(),
                text: f.text,
            })),
            Err(e) => issues.extend(e.issues),
        }
    }
    if issues.is_empty() {
        Ok(all)
    } else {
        Err(PolicyLoadError { issues })
    }
}

/// `test_*` rule names defined at the start of a line, with the line of their first definition.
fn test_rules(text: &str) -> Vec<(String, u32)> {
    let mut found: Vec<(String, u32)> = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        if !line.starts_with("test_") {
            continue;
        }
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !found.iter().any(|(n, _)| *n == name) {
            found.push((name, u32::try_from(idx + 1).unwrap_or(u32::MAX)));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_test_rules_once_each() {
        let text = "package x_test\ntest_a if true\ntest_a if false\n  test_indented if true\ntest_b := true\n";
        assert_eq!(
            test_rules(text),
            vec![("test_a".into(), 2), ("test_b".into(), 5)]
        );
    }

    #[test]
    fn passing_failing_and_erroring_tests_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t_test.rego"),
            "package t\ntest_pass if 1 == 1\ntest_fail if 1 == 2\ntest_err if { x := 1 / 0; x }\n",
        )
        .unwrap();
        let report = run_tests(&[dir.path().to_path_buf()], None, false).unwrap();
        let outcomes: Vec<_> = report
            .results
            .iter()
            .map(|r| (r.name.as_str(), &r.outcome))
            .collect();
        assert_eq!(outcomes[0], ("data.t.test_pass", &TestOutcome::Pass));
        assert_eq!(outcomes[1], ("data.t.test_fail", &TestOutcome::Fail));
        assert!(
            matches!(outcomes[2].1, TestOutcome::Error(_)),
            "{outcomes:?}"
        );
        assert_eq!((report.passed(), report.failed()), (1, 2));
        let re = Regex::new("pass").unwrap();
        let only = run_tests(&[dir.path().to_path_buf()], Some(&re), false).unwrap();
        assert_eq!(only.results.len(), 1);
    }
}
