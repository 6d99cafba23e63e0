//! `sandbox-admission policy test|check`: the policy author's loop, without a cluster.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use regex::Regex;

use super::{TestOutcome, TestReport, check_profile, run_tests, verify};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum PolicyCommand {
    /// Run the Rego unit tests (`test_*` rules in `*_test.rego`), like `opa test`.
    ///
    /// Example: sandbox-admission policy test policies/ --coverage --run 'runtime_class'
    Test {
        /// Policy directories (default: ./policies).
        #[arg(default_value = "policies")]
        dirs: Vec<PathBuf>,
        /// Only run tests whose full name (data.pkg.test_x) matches this regular expression.
        #[arg(long = "run", value_name = "REGEX")]
        run: Option<String>,
        /// Print every test, not only failures.
        #[arg(short, long)]
        verbose: bool,
        /// Print line coverage of each policy and library file.
        #[arg(long)]
        coverage: bool,
    },
    /// Run Gatekeeper `gator verify` Suite files (template, constraint, cases, assertions).
    ///
    /// Example: sandbox-admission policy verify tests/fixtures/gatekeeper/suite.yaml
    Verify {
        /// Suite files (`apiVersion: test.gatekeeper.sh/v1alpha1`, `kind: Suite`).
        #[arg(required = true)]
        suites: Vec<PathBuf>,
    },
    /// Load a policy directory exactly as `serve --policies DIR` would, and report problems.
    ///
    /// Example: sandbox-admission policy check policies/
    Check {
        #[arg(default_value = "policies")]
        dir: PathBuf,
        /// The profile to load, as `serve --profile` (default: default).
        #[arg(long, default_value = "default")]
        profile: String,
    },
}

pub fn run(cmd: PolicyCommand) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match cmd {
        PolicyCommand::Test {
            dirs,
            run,
            verbose,
            coverage,
        } => {
            let filter = match run.as_deref().map(Regex::new).transpose() {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("error: --run: {e}");
                    return ExitCode::from(2);
                }
            };
            match run_tests(&dirs, filter.as_ref(), coverage) {
                Ok(report) => {
                    let _ = print_report(&mut out, &report, verbose, coverage);
                    if report.ok() && !report.results.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(err) => {
                    eprintln!("policy set does not load:\n{err}");
                    ExitCode::from(2)
                }
            }
        }
        PolicyCommand::Verify { suites } => {
            let report = verify(&suites);
            for r in &report.results {
                let _ = match &r.failure {
                    None => writeln!(out, "PASS {}", r.name),
                    Some(why) => {
                        writeln!(out, "FAIL {}\n    {}", r.name, why.replace('\n', "\n    "))
                    }
                };
            }
            if report.results.is_empty() {
                let _ = writeln!(out, "no cases found");
            }
            let _ = writeln!(
                out,
                "{} passed, {} failed",
                report.passed(),
                report.failed()
            );
            if report.failed() == 0 && report.passed() > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        PolicyCommand::Check { dir, profile } => match check_profile(&dir, &profile) {
            Ok(summary) => {
                for (name, file, action) in &summary.policies {
                    let _ = writeln!(out, "{name:40} {action:7} {file}");
                }
                let _ = writeln!(
                    out,
                    "{}: {} policies, {} test files: OK",
                    dir.display(),
                    summary.policies.len(),
                    summary.test_files
                );
                let _ = match &summary.evaluator {
                    super::EvaluatorKind::Compiled => writeln!(out, "evaluator: rvm (compiled)"),
                    super::EvaluatorKind::Interpreter(why) => {
                        writeln!(out, "evaluator: interpreter ({why})")
                    }
                };
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                eprintln!("{}: {} problem(s)", dir.display(), err.issues.len());
                ExitCode::FAILURE
            }
        },
    }
}

fn print_report(
    out: &mut impl std::io::Write,
    report: &TestReport,
    verbose: bool,
    coverage: bool,
) -> std::io::Result<()> {
    for r in &report.results {
        let (label, detail) = match &r.outcome {
            TestOutcome::Pass if !verbose => continue,
            TestOutcome::Pass => ("PASS", String::new()),
            TestOutcome::Fail => ("FAIL", String::new()),
            TestOutcome::Error(e) => ("ERROR", format!("\n    {}", e.replace('\n', "\n    "))),
        };
        writeln!(
            out,
            "{}:{}: {} {label} ({:.1?}){detail}",
            r.file, r.line, r.name, r.duration
        )?;
    }
    if coverage {
        for f in &report.coverage {
            writeln!(out, "coverage {:6.1}% {}", f.percent(), f.file)?;
            if verbose && !f.not_covered.is_empty() {
                let lines: Vec<String> = f.not_covered.iter().map(u32::to_string).collect();
                writeln!(out, "    not covered: lines {}", lines.join(", "))?;
            }
        }
    }
    if report.results.is_empty() {
        writeln!(out, "no tests found")?;
    }
    writeln!(
        out,
        "{} passed, {} failed",
        report.passed(),
        report.failed()
    )
}
