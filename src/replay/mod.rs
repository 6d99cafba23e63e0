//! `sandbox-admission replay`: recorded `/validate` decisions re-judged by a candidate policy set,
//! through the same [`Admitter`] the server runs, and what would flip.
//!
//! The baseline is the record itself (what was answered then), so a replay against the serving
//! set's own files shows the drift since the log was written, and against a candidate set shows
//! what deploying it would change.

mod render;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::{Value, json};

use crate::admission::AdmissionRequest;
use crate::audit::DecisionRecord;
use crate::audit::query::{self, Source};
use crate::disagreement::{self, Change, Direction, Flip};
use crate::pipeline::{Admitter, Endpoint};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Exit 1 when a recorded admission would now be denied
    #[default]
    NewDenials,
    /// Exit 1 on any flip or warning change
    AnyChange,
    /// Exit 0 whatever changes (bad input still exits 2)
    Never,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ReplayOutput {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Decision log files (plain or .gz) or `-` for standard input
    #[arg(long = "log", value_name = "FILE", num_args = 1.., action = clap::ArgAction::Append, required = true)]
    pub logs: Vec<String>,
    /// The candidate policy directory
    #[arg(long, value_name = "DIR")]
    pub policies: PathBuf,
    /// Configuration file, as `serve --config` [default: embedded]
    #[arg(long, env = "SANDBOX_ADMISSION_CONFIG")]
    pub config: Option<PathBuf>,
    /// Policy profile, as `serve --profile`
    #[arg(long)]
    pub profile: Option<String>,
    /// Judge Sandboxes and templates as the pod they become or as written, as `serve --judge`
    #[arg(long, value_enum)]
    pub judge: Option<crate::config::Judge>,
    /// When the exit code is 1
    #[arg(long, value_enum, default_value_t)]
    pub fail_on: FailOn,
    /// Examples shown per policy and direction in text output
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub examples: usize,
    /// Output format
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: ReplayOutput,
}

pub const AFTER_HELP: &str = "\
Examples:
  # What would deploying my edited policies change, on yesterday's traffic?
  sandbox-admission replay --log decisions.log decisions.log.1.gz --policies my-policies/

  # In CI: fail when a recorded admission would be denied; JSON for the job's artefacts
  sandbox-admission replay --log recorded.log --policies policies/ -o json > replay.json

Only records written with --log-objects (decisionLog.includeObjects) carry the object and can be
replayed; the others are listed as not replayable. UPDATE records carry no old object, so a
policy comparing old and new sees none.

Exit code: 0 when nothing fails --fail-on (default new-denials), 1 when something does,
2 on bad input (an unreadable log, a candidate set that does not load).";

/// One replayed record's outcome.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replayed {
    pub uid: String,
    pub time: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub operation: String,
    pub user: String,
    pub recorded: String,
    pub replayed: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flip: Option<Flip>,
    pub changes: Vec<Change>,
    /// The candidate's denial message, when it denies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What the replay could not reproduce (an UPDATE's old object).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caveat: Option<String>,
}

/// A record that could not be replayed, and why.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotReplayed {
    pub uid: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub allowed_to_denied: usize,
    pub denied_to_allowed: usize,
    pub new_warnings: usize,
    pub gone_warnings: usize,
    /// Records whose verdict and warnings are the same.
    pub unchanged: usize,
}

/// Per policy: how many records each direction touched, with the first examples.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyChanges {
    pub new_denials: usize,
    pub gone_denials: usize,
    pub new_warnings: usize,
    pub gone_warnings: usize,
    /// `uid`s of the records, first ones first (at most `--examples` per direction in text).
    pub examples: BTreeMap<Direction, Vec<Example>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Example {
    pub uid: String,
    pub object: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub policies: String,
    /// Lines read that are decision records.
    pub records: usize,
    /// `/validate` records replayed.
    pub replayed: usize,
    /// `/validate` records without their object (logged without `--log-objects`).
    pub without_object: usize,
    /// Records of other kinds, not judged by policies (`mutate`, `shadow`), by endpoint.
    pub skipped: BTreeMap<String, usize>,
    pub counts: Counts,
    pub by_policy: BTreeMap<String, PolicyChanges>,
    pub by_namespace: BTreeMap<String, Counts>,
    /// Every record whose verdict or warnings changed.
    pub changed: Vec<Replayed>,
    pub not_replayed: Vec<NotReplayed>,
    /// Lines that are not decision records (`file:line: error`).
    pub malformed: Vec<String>,
}

impl Report {
    /// Whether `fail_on` makes this report exit 1.
    pub fn fails(&self, fail_on: FailOn) -> bool {
        let c = &self.counts;
        match fail_on {
            FailOn::NewDenials => c.allowed_to_denied > 0,
            FailOn::AnyChange => !self.changed.is_empty(),
            FailOn::Never => false,
        }
    }
}

/// The AdmissionRequest a record stands for, as the API server sent it to `/validate`, or why
/// there is none. A record keeps the object only (the old object on DELETE), not `oldObject`.
pub fn request_of(record: &DecisionRecord) -> Result<(AdmissionRequest, Option<String>), String> {
    let Some(object) = record.object.clone() else {
        return Err(
            "the record has no object (logged without --log-objects / decisionLog.includeObjects)"
                .into(),
        );
    };
    let mut req = json!({
        "uid": record.uid,
        "kind": {"group": record.group, "version": record.version, "kind": record.kind},
        "resource": {
            "group": record.group,
            "version": record.version,
            "resource": crate::request::plural(&record.kind),
        },
        "name": record.name,
        "namespace": record.namespace,
        "operation": record.operation,
        "userInfo": {"username": record.user, "groups": record.groups},
        "dryRun": record.dry_run,
    });
    let mut caveat = None;
    match record.operation.as_str() {
        "DELETE" => req["oldObject"] = object,
        "UPDATE" => {
            req["object"] = object;
            caveat = Some("UPDATE replayed without its old object (not in the record)".into());
        }
        _ => req["object"] = object,
    }
    AdmissionRequest::from_value(req)
        .map(|r| (r, caveat))
        .map_err(|e| format!("the record does not make a request: {e}"))
}

fn object_name(r: &DecisionRecord) -> String {
    let name = if r.name.is_empty() {
        r.object
            .as_ref()
            .and_then(|o| o.pointer("/metadata/generateName"))
            .and_then(Value::as_str)
            .map(|g| format!("{g}*"))
            .unwrap_or_default()
    } else {
        r.name.clone()
    };
    if r.namespace.is_empty() {
        format!("{} {name}", r.kind)
    } else {
        format!("{} {}/{name}", r.kind, r.namespace)
    }
}

/// Re-judge `records` with `admitter` (the candidate set) and add up what changed.
pub async fn replay(admitter: &Admitter, records: &[DecisionRecord], policies: &str) -> Report {
    let mut report = Report {
        policies: policies.to_owned(),
        records: records.len(),
        ..Report::default()
    };
    for record in records {
        if record.endpoint != Endpoint::Validate.as_str() {
            *report.skipped.entry(record.endpoint.clone()).or_default() += 1;
            continue;
        }
        let (req, caveat) = match request_of(record) {
            Ok(r) => r,
            Err(reason) => {
                if record.object.is_none() {
                    report.without_object += 1;
                }
                report.not_replayed.push(NotReplayed {
                    uid: record.uid.clone(),
                    kind: record.kind.clone(),
                    namespace: record.namespace.clone(),
                    name: record.name.clone(),
                    reason,
                });
                continue;
            }
        };
        report.replayed += 1;
        let decision = admitter.decide(Endpoint::Validate, &req).await;
        let flip = Flip::between(record.allowed, decision.response.allowed);
        let changes = disagreement::changes(&record.policies, &decision.hits);
        let ns = report
            .by_namespace
            .entry(record.namespace.clone())
            .or_default();
        match flip {
            Some(Flip::AllowedToDenied) => {
                report.counts.allowed_to_denied += 1;
                ns.allowed_to_denied += 1;
            }
            Some(Flip::DeniedToAllowed) => {
                report.counts.denied_to_allowed += 1;
                ns.denied_to_allowed += 1;
            }
            None => {}
        }
        let new_w = changes
            .iter()
            .filter(|c| c.direction == Direction::NewWarning)
            .count();
        let gone_w = changes
            .iter()
            .filter(|c| c.direction == Direction::GoneWarning)
            .count();
        report.counts.new_warnings += new_w;
        report.counts.gone_warnings += gone_w;
        ns.new_warnings += new_w;
        ns.gone_warnings += gone_w;
        if flip.is_none() && changes.is_empty() {
            report.counts.unchanged += 1;
            continue;
        }
        let object = object_name(record);
        for c in &changes {
            let p = report.by_policy.entry(c.policy.clone()).or_default();
            match c.direction {
                Direction::NewDenial => p.new_denials += 1,
                Direction::GoneDenial => p.gone_denials += 1,
                Direction::NewWarning => p.new_warnings += 1,
                Direction::GoneWarning => p.gone_warnings += 1,
            }
            p.examples.entry(c.direction).or_default().push(Example {
                uid: record.uid.clone(),
                object: object.clone(),
                message: c.message.clone(),
            });
        }
        report.changed.push(Replayed {
            uid: record.uid.clone(),
            time: record
                .time
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            kind: record.kind.clone(),
            namespace: record.namespace.clone(),
            name: record.name.clone(),
            operation: record.operation.clone(),
            user: record.user.clone(),
            recorded: record.decision.clone(),
            replayed: decision.label().to_owned(),
            flip,
            changes,
            message: decision.response.status.as_ref().map(|s| s.message.clone()),
            caveat,
        });
    }
    report
}

pub fn run(args: ReplayArgs) -> ExitCode {
    crate::review::run_offline(run_async(args))
}

async fn run_async(args: ReplayArgs) -> ExitCode {
    let admitter = match crate::review::admitter_with(
        args.config.as_ref(),
        Some(&args.policies),
        args.profile.as_deref(),
        args.judge,
    ) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut records = Vec::new();
    let mut malformed = Vec::new();
    for log in &args.logs {
        let source = Source::parse(log);
        match query::read_source(&source, &|_| true, &mut |m| {
            malformed.push(format!("{}:{}: {}", m.source, m.line, m.error));
        }) {
            Ok(r) => records.extend(r),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    // Oldest first, in log order within the same instant.
    records.sort_by_key(|r| r.time);
    let mut report = replay(&admitter, &records, &args.policies.display().to_string()).await;
    report.malformed = malformed;
    match args.output {
        ReplayOutput::Json => match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: cannot encode the report: {e}");
                return ExitCode::from(2);
            }
        },
        ReplayOutput::Text => print!("{}", render::text(&report, args.examples)),
    }
    if report.fails(args.fail_on) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
