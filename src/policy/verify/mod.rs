//! `policy verify`: Gatekeeper `gator verify` Suite files, run on this engine.
//!
//! A suite names a template and a constraint per test and objects per case; each case's
//! assertions count the constraint's violations (optionally only those whose message matches a
//! regular expression). Paths in a suite are relative to the suite file, as in gator.

mod case;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::{PolicyConfig, PolicySet, SourceFile};

pub const SUITE_API_VERSION: &str = "test.gatekeeper.sh/v1alpha1";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Suite {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    tests: Vec<Test>,
    #[serde(default)]
    skip: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Test {
    #[serde(default)]
    name: String,
    template: String,
    constraint: String,
    #[serde(default)]
    cases: Vec<case::Case>,
    /// The template or constraint is expected not to load.
    #[serde(default)]
    invalid: bool,
    #[serde(default)]
    skip: bool,
}

/// The outcome of one case (or of a test that could not run its cases).
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// `suite-file: test / case`.
    pub name: String,
    /// `None` when it passed; otherwise what was expected and what came.
    pub failure: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub results: Vec<CaseResult>,
}

impl VerifyReport {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.failure.is_none()).count()
    }
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }
}

/// Run every suite; a suite that cannot be read is one failed result, never a skipped one.
pub fn verify(suites: &[PathBuf]) -> VerifyReport {
    let mut report = VerifyReport::default();
    for path in suites {
        let shown = path.display().to_string();
        match read_suite(path) {
            Ok(suite) if suite.skip => {}
            Ok(suite) => {
                let dir = path.parent().unwrap_or(Path::new("."));
                for test in suite.tests.iter().filter(|t| !t.skip) {
                    run_test(&shown, dir, test, &mut report);
                }
            }
            Err(e) => report.results.push(CaseResult {
                name: shown.clone(),
                failure: Some(e),
            }),
        }
    }
    report
}

fn read_suite(path: &Path) -> Result<Suite, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let value: Value = serde_saphyr::from_str(&text).map_err(|e| format!("invalid YAML: {e}"))?;
    let suite: Suite =
        serde_json::from_value(value).map_err(|e| format!("not a gator Suite: {e}"))?;
    if suite.kind != "Suite" || suite.api_version != SUITE_API_VERSION {
        return Err(format!(
            "not a gator Suite: expected apiVersion {SUITE_API_VERSION} and kind Suite, got {:?} {:?}",
            suite.api_version, suite.kind
        ));
    }
    Ok(suite)
}

/// A path from a suite, relative to the suite's directory.
pub(super) fn resolve(dir: &Path, rel: &str) -> PathBuf {
    let p = Path::new(rel);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

fn run_test(suite: &str, dir: &Path, test: &Test, report: &mut VerifyReport) {
    let label = format!("{suite}: {}", display_name(&test.name, "test"));
    let loaded = load_set(dir, test);
    if test.invalid {
        report.results.push(CaseResult {
            name: format!("{label} (invalid template/constraint)"),
            failure: loaded
                .is_ok()
                .then(|| "expected the template or constraint to be refused, but it loaded".into()),
        });
        return;
    }
    let set = match loaded {
        Ok(set) => set,
        Err(e) => {
            report.results.push(CaseResult {
                name: label,
                failure: Some(format!("template/constraint does not load:\n{e}")),
            });
            return;
        }
    };
    for c in test.cases.iter().filter(|c| !c.skip) {
        let name = format!("{label} / {}", display_name(&c.name, "case"));
        report.results.push(CaseResult {
            name,
            failure: c.run(dir, &set).err(),
        });
    }
}

fn display_name(name: &str, fallback: &str) -> String {
    if name.is_empty() {
        format!("({fallback} without a name)")
    } else {
        name.to_owned()
    }
}

/// Compile the test's template and constraint exactly as a policy directory holding the two
/// files would be compiled (the same loader `serve` uses).
fn load_set(dir: &Path, test: &Test) -> Result<PolicySet, String> {
    let mut files = Vec::new();
    for rel in [&test.template, &test.constraint] {
        let path = resolve(dir, rel);
        let shown = path.display().to_string();
        if files.iter().any(|f: &SourceFile| f.path == shown) {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
        files.push(SourceFile { path: shown, text });
    }
    let origin = files
        .iter()
        .map(|f| f.path.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let set =
        PolicySet::compile(&files, origin, &PolicyConfig::default()).map_err(|e| e.to_string())?;
    if set.is_empty() {
        return Err(format!(
            "{}: no constraint found (expected a Constraint of the template's kind)",
            test.constraint
        ));
    }
    Ok(set)
}
