//! `sandbox-admission audit`: the cluster admin's questions about the decision log, answered from
//! the log files themselves (plain or gzip'd rotations, or a pipe from `kubectl logs`).

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use chrono::Utc;
use clap::{Args, ValueEnum};

use super::query::{self, Filter, Malformed, Source};
use super::report;

/// Malformed lines reported one by one per file; beyond this only their count is given, so
/// piping in a log mixed with other output stays readable.
const REPORT_MALFORMED: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DecisionArg {
    Allowed,
    Warned,
    Denied,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EndpointArg {
    Mutate,
    Validate,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum AuditOutput {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Decision log files (plain or .gz, in any order) or `-` for standard input [default: -]
    #[arg(long = "log", value_name = "FILE", num_args = 1.., action = clap::ArgAction::Append)]
    pub logs: Vec<String>,
    /// Only decisions at or after this time: RFC 3339, a date, or an age like 30m, 1h, 2d
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only decisions at or before this time (same forms as --since)
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only decisions where this policy fired (repeatable: any of them)
    #[arg(long, value_name = "NAME")]
    pub policy: Vec<String>,
    /// Only decisions in this namespace (repeatable)
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Vec<String>,
    /// Only decisions on requests by this user (repeatable)
    #[arg(long, value_name = "USER")]
    pub user: Vec<String>,
    /// Only decisions on this kind, any case (repeatable)
    #[arg(long, value_name = "KIND")]
    pub kind: Vec<String>,
    /// Only decisions with this outcome (repeatable)
    #[arg(long, value_enum)]
    pub decision: Vec<DecisionArg>,
    /// Only decisions of this endpoint (repeatable)
    #[arg(long, value_enum)]
    pub endpoint: Vec<EndpointArg>,
    /// Counts per decision, policy, namespace and user, and the top denial messages
    #[arg(long)]
    pub summary: bool,
    /// How many denial messages --summary ranks
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,
    /// At most this many decisions (newest first)
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Output format
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: AuditOutput,
    /// Read the background audit's PolicyReports instead of the decision log: from these files
    /// (`kubectl get policyreports -A -o yaml` output; `-` for stdin)
    #[arg(long = "reports", value_name = "FILE", num_args = 0.., conflicts_with = "logs")]
    pub reports: Option<Vec<String>>,
    /// With --reports and no file: read them from the cluster (kubeconfig or in-cluster access)
    #[arg(long, requires = "reports")]
    pub from_cluster: bool,
}

pub const AFTER_HELP: &str = "\
Examples:
  # Denials of the last hour, newest first
  sandbox-admission audit --log /var/log/sandbox-admission/decisions.log --decision denied --since 1h

  # Summary over the current file and every rotated generation
  sandbox-admission audit --log decisions.log decisions.log.*.gz --summary

  # Straight from the pods, as JSON for jq
  kubectl logs -n sandbox-admission deploy/sandbox-admission | sandbox-admission audit -o json --policy runtime-class

  # What the background audit found (PolicyReports), offline or from the cluster
  kubectl get policyreports -A -o yaml | sandbox-admission audit --reports -
  sandbox-admission audit --reports --from-cluster -o json

A malformed line is reported on stderr (file:line) and skipped.";

impl AuditArgs {
    fn filter(&self) -> Result<Filter, String> {
        let now = Utc::now();
        let time = |flag: &str, v: &Option<String>| {
            v.as_deref()
                .map(|t| query::parse_time(t, now).map_err(|e| format!("--{flag}: {e}")))
                .transpose()
        };
        Ok(Filter {
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            policies: self.policy.clone(),
            namespaces: self.namespace.clone(),
            users: self.user.clone(),
            kinds: self.kind.clone(),
            decisions: self
                .decision
                .iter()
                .map(|d| value_name(*d).to_owned())
                .collect(),
            endpoints: self
                .endpoint
                .iter()
                .map(|e| value_name(*e).to_owned())
                .collect(),
        })
    }

    fn sources(&self) -> Vec<Source> {
        if self.logs.is_empty() {
            vec![Source::Stdin]
        } else {
            self.logs.iter().map(|l| Source::parse(l)).collect()
        }
    }
}

fn value_name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_default()
}

/// Prints up to [`REPORT_MALFORMED`] lines per source, then counts the rest.
struct MalformedReporter {
    source: String,
    seen: usize,
}

impl MalformedReporter {
    fn report(&mut self, m: Malformed) {
        self.seen += 1;
        if self.seen <= REPORT_MALFORMED {
            eprintln!(
                "audit: {}:{}: skipped malformed record: {}",
                m.source, m.line, m.error
            );
        }
    }

    fn finish(self) {
        if self.seen > REPORT_MALFORMED {
            eprintln!(
                "audit: {}: {} more malformed lines skipped",
                self.source,
                self.seen - REPORT_MALFORMED
            );
        }
    }
}

pub fn run(args: AuditArgs) -> ExitCode {
    match run_inner(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_reports(args: &AuditArgs, files: &[String]) -> Result<(), String> {
    let reports = match (files.is_empty(), args.from_cluster) {
        (true, true) => super::reports::from_cluster()?,
        (false, false) => super::reports::read(files)?,
        (true, false) => super::reports::read(&["-".to_string()])?,
        (false, true) => return Err("--from-cluster reads no files; give one or the other".into()),
    };
    let mut view = super::reports::view(&reports);
    if !args.namespace.is_empty() {
        view.rows.retain(|r| args.namespace.contains(&r.namespace));
    }
    if !args.policy.is_empty() {
        view.rows.retain(|r| args.policy.contains(&r.policy));
    }
    let text = match args.output {
        AuditOutput::Table => super::reports::table(&view),
        AuditOutput::Json => to_json(&view)?,
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

fn run_inner(args: &AuditArgs) -> Result<(), String> {
    if let Some(files) = &args.reports {
        return run_reports(args, files);
    }
    let filter = args.filter()?;
    let sources = args.sources();
    if sources.contains(&Source::Stdin) && std::io::stdin().is_terminal() {
        return Err(
            "no --log given and standard input is a terminal; pass --log FILE or pipe a log in"
                .into(),
        );
    }
    let mut records = Vec::new();
    for source in &sources {
        let mut reporter = MalformedReporter {
            source: source.describe(),
            seen: 0,
        };
        let read = query::read_source(source, &|r| filter.matches(r), &mut |m| reporter.report(m));
        reporter.finish();
        records.extend(read.map_err(|e| e.to_string())?);
    }
    let mut selected = records;
    query::newest_first(&mut selected);
    let mut out = std::io::stdout().lock();
    let text = if args.summary {
        let summary = query::summarize(&selected, args.top);
        match args.output {
            AuditOutput::Table => report::summary_text(&summary),
            AuditOutput::Json => to_json(&summary)?,
        }
    } else {
        if let Some(n) = args.limit {
            selected.truncate(n);
        }
        match args.output {
            AuditOutput::Table if selected.is_empty() => "No matching decisions.\n".into(),
            AuditOutput::Table => report::decisions_table(&selected),
            AuditOutput::Json => to_json(&selected)?,
        }
    };
    // A closed pipe (`| head`) is not an error worth reporting.
    let _ = out.write_all(text.as_bytes());
    Ok(())
}

fn to_json(value: &impl serde::Serialize) -> Result<String, String> {
    serde_json::to_string_pretty(value)
        .map(|mut s| {
            s.push('\n');
            s
        })
        .map_err(|e| format!("cannot encode JSON: {e}"))
}
