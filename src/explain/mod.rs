//! `sandbox-admission explain`: why a `/validate` decision was made, down to the rule's line.
//! The decision is re-made through the server's [`Admitter`], then each policy that fired is
//! evaluated alone with the engine's explanation trace (see `policy::explain`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::admission::AdmissionRequest;
use crate::audit::query::{self, Source};
use crate::pipeline::Admitter;
use crate::policy::PolicyExplanation;
use crate::request::{self, RequestDefaults};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ExplainOutput {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// An object or AdmissionReview (YAML or JSON; `-` for stdin). Or give --uid and --log
    #[arg(value_name = "FILE", required_unless_present = "uid")]
    pub file: Option<String>,
    /// The uid of a decision in the decision log (needs a record written with --log-objects)
    #[arg(long, requires = "logs")]
    pub uid: Option<String>,
    /// Decision log files to find --uid in (plain or .gz)
    #[arg(long = "log", value_name = "FILE", num_args = 1.., action = clap::ArgAction::Append)]
    pub logs: Vec<String>,
    /// Explain this policy, whether it fired or not (for one that did not: the first
    /// expression that failed in each of its `violation` bodies)
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// Policy directory, as `serve --policies` [default: the embedded policies]
    #[arg(long, env = "SANDBOX_ADMISSION_POLICIES")]
    pub policies: Option<PathBuf>,
    /// Configuration file, as `serve --config` [default: embedded]
    #[arg(long, env = "SANDBOX_ADMISSION_CONFIG")]
    pub config: Option<PathBuf>,
    /// Policy profile, as `serve --profile`
    #[arg(long)]
    pub profile: Option<String>,
    /// Namespace of a bare object without one [default: default]
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Output format
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: ExplainOutput,
}

pub const AFTER_HELP: &str = "\
Examples:
  # Why is this Sandbox refused? Rule, file:line, each expression with its values
  sandbox-admission explain sandbox.yaml

  # A decision from the log (recorded with --log-objects)
  sandbox-admission explain --uid 5f0c0e2a-… --log decisions.log

  # Why does this policy NOT fire? The first expression that failed
  sandbox-admission explain sandbox.yaml --policy sandbox-privileged -o json

Exit code: 0 allowed, 1 denied, 2 on bad input.";

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 100 {
        let cut: String = text.chars().take(99).collect();
        format!("{cut}…")
    } else {
        text
    }
}

fn request_from_file(file: &str, ns: Option<&String>) -> Result<AdmissionRequest, String> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read stdin: {e}"))?
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?
    };
    let mut docs = request::documents(&text)?;
    if docs.len() != 1 {
        return Err(format!(
            "{file}: explain takes one document, found {}",
            docs.len()
        ));
    }
    let defaults = RequestDefaults {
        operation: crate::admission::Operation::Create,
        namespace: ns.cloned(),
        user: "kubernetes-admin".into(),
        groups: vec!["system:authenticated".into()],
        uid: None,
    };
    let prepared = request::prepare(docs.remove(0), &defaults)?;
    let raw = prepared
        .review
        .get("request")
        .cloned()
        .ok_or("no request in the review")?;
    AdmissionRequest::from_value(raw).map_err(|e| e.to_string())
}

fn request_from_log(uid: &str, logs: &[String]) -> Result<AdmissionRequest, String> {
    let mut found = None;
    for log in logs {
        let records = query::read_source(
            &Source::parse(log),
            &|r| r.uid == uid && r.endpoint == "validate",
            &mut |_| {},
        )
        .map_err(|e| e.to_string())?;
        if let Some(r) = records.into_iter().next_back() {
            found = Some(r);
        }
    }
    let record = found.ok_or_else(|| format!("no /validate decision with uid {uid} in the log"))?;
    crate::replay::request_of(&record).map(|(r, _)| r)
}

pub fn text(
    req: &AdmissionRequest,
    allowed: bool,
    message: Option<&str>,
    explained: &[Result<PolicyExplanation, String>],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}: {}",
        req.kind.kind,
        req.display_name(),
        if allowed { "ALLOWED" } else { "DENIED" }
    );
    if let Some(m) = message {
        let _ = writeln!(out, "  {m}");
    }
    for e in explained {
        match e {
            Err(err) => {
                let _ = writeln!(out, "\n  cannot explain: {err}");
            }
            Ok(p) => {
                let _ = writeln!(out, "\n[{}] {}", p.policy, p.file);
                if !p.applies {
                    let _ = writeln!(
                        out,
                        "  does not apply to this request (kind, operation or namespace)"
                    );
                }
                for f in &p.firings {
                    let _ = writeln!(out, "  fired: {}:{}  {}", f.file, f.line, f.rule);
                    if let Some(m) = &f.message {
                        let _ = writeln!(out, "    message: {m}");
                    }
                    for x in &f.expressions {
                        let _ = writeln!(out, "    {}:{}  {}", f.file, x.line, x.text);
                        for (k, v) in &x.values {
                            let _ = writeln!(out, "        {k} = {}", short(v));
                        }
                    }
                    if !f.inputs.is_empty() {
                        let _ = writeln!(out, "    message built from: {}", f.inputs.join(", "));
                    }
                }
                if p.firings.is_empty() {
                    for m in &p.misses {
                        match &m.first_failed {
                            Some(x) => {
                                let _ = writeln!(
                                    out,
                                    "  not fired: {}:{}  {}\n    first failed: {}:{}  {}",
                                    m.file, m.line, m.rule, m.file, x.line, x.text
                                );
                            }
                            None => {
                                let _ = writeln!(
                                    out,
                                    "  not fired: {}:{}  {} (no iteration)",
                                    m.file, m.line, m.rule
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

pub fn run(args: ExplainArgs) -> ExitCode {
    crate::review::run_offline(async move {
        let admitter: Admitter = match crate::review::admitter_with(
            args.config.as_ref(),
            args.policies.as_ref(),
            args.profile.as_deref(),
            None,
        ) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        };
        let req = match (&args.uid, &args.file) {
            (Some(uid), _) => request_from_log(uid, &args.logs),
            (None, Some(file)) => request_from_file(file, args.namespace.as_ref()),
            (None, None) => Err("give a FILE or --uid with --log".into()),
        };
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let (decision, explained) = admitter.explain(&req, args.policy.as_deref()).await;
        let allowed = decision.response.allowed;
        let message = decision.response.status.as_ref().map(|s| s.message.clone());
        match args.output {
            ExplainOutput::Json => {
                let policies: Vec<Value> = explained
                    .iter()
                    .map(|e| match e {
                        Ok(p) => serde_json::to_value(p).unwrap_or(Value::Null),
                        Err(err) => json!({"error": err}),
                    })
                    .collect();
                let doc = json!({
                    "uid": req.uid, "kind": req.kind.kind, "object": req.display_name(),
                    "allowed": allowed, "decision": decision.label(), "message": message,
                    "hits": decision.hits, "policies": policies,
                });
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            }
            ExplainOutput::Text => {
                print!("{}", text(&req, allowed, message.as_deref(), &explained))
            }
        }
        if allowed {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    })
}
