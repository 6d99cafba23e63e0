//! `sandbox-admission review`: the server's decision, offline. Each document goes through the
//! same [`Admitter::handle`] the HTTPS endpoints call, so the answer is the server's answer.

mod render;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::admission::{AdmissionRequest, Operation};
use crate::audit::DecisionLog;
use crate::audit::events::Events;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::mutate::Refusal;
use crate::pipeline::{Admitter, Answer, Endpoint};
use crate::request::{self, Prepared, RequestDefaults};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum EndpointChoice {
    Mutate,
    Validate,
    /// Mutate (Pods), then validate the patched object, as the API server does.
    #[default]
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPERCASE")]
pub enum OperationArg {
    Create,
    Update,
    Delete,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ReviewOutput {
    #[default]
    Text,
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// AdmissionReviews or Kubernetes objects (YAML, multi-document, or JSON); `-` for stdin
    /// [default: -]
    #[arg(value_name = "FILE")]
    pub files: Vec<String>,
    /// Which endpoint to run
    #[arg(long, value_enum, default_value_t)]
    pub endpoint: EndpointChoice,
    /// Operation of the request built around a bare object
    #[arg(long, value_enum, ignore_case = true, default_value_t = OperationArg::Create)]
    pub operation: OperationArg,
    /// Namespace of the request built around a bare object without one [default: default]
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// User of the request built around a bare object
    #[arg(long, default_value = "kubernetes-admin")]
    pub user: String,
    /// Groups of that user (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "system:authenticated")]
    pub groups: Vec<String>,
    /// uid of the request built around a bare object [default: a random UUID]
    #[arg(long)]
    pub uid: Option<String>,
    /// Also print the object as it is after the mutation patch
    #[arg(long)]
    pub patched: bool,
    /// For a Sandbox or SandboxTemplate, also print the pod the controller will create from it,
    /// as the mutation will leave it: the effective pod validation judges
    #[arg(long)]
    pub pod: bool,
    /// Policy directory, as `serve --policies` [default: the embedded policies]
    #[arg(long, env = "SANDBOX_ADMISSION_POLICIES")]
    pub policies: Option<PathBuf>,
    /// Configuration file, as `serve --config` [default: embedded]
    #[arg(long, env = "SANDBOX_ADMISSION_CONFIG")]
    pub config: Option<PathBuf>,
    /// Policy profile, as `serve --profile` (`default` or `strict`)
    #[arg(long, env = "SANDBOX_ADMISSION_PROFILE")]
    pub profile: Option<String>,
    /// Judge Sandboxes and templates as the pod they become or as written, as `serve --judge`
    #[arg(long, value_enum)]
    pub judge: Option<crate::config::Judge>,
    /// Output: text for people; yaml for a readable report; json for exactly the AdmissionReview
    /// the server answers (with --endpoint both: {"allowed", "mutate", "validate"})
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: ReviewOutput,
}

pub const AFTER_HELP: &str = "\
Examples:
  # Would this Sandbox be admitted? What would the webhook change in this pod?
  sandbox-admission review examples/sandbox.yaml
  sandbox-admission review pod.yaml --patched -o yaml

  # A captured AdmissionReview: print exactly what the server would answer
  sandbox-admission review review.json --endpoint mutate -o json

  # Every object a kustomization renders, with the policies under development
  kustomize build overlays/prod | sandbox-admission review - --policies policies/ --user alice

Exit code: 0 when every document is allowed, 1 when one is denied, 2 on bad input.";

/// What the pipeline answered for one document.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub label: String,
    /// The AdmissionReview `/mutate` answered, when it ran.
    pub mutate: Option<Value>,
    /// The RFC 6902 operations of the mutation patch.
    pub patch: Vec<Value>,
    /// The AdmissionReview `/validate` answered, when it ran.
    pub validate: Option<Value>,
    /// The object after the patch (absent on DELETE).
    pub patched: Option<Value>,
    /// A Sandbox's or template's effective pod (`--pod`), or why there is none.
    pub effective_pod: Option<Result<Value, String>>,
    pub allowed: bool,
}

fn allowed(answer: &Value) -> bool {
    answer.pointer("/response/allowed") == Some(&Value::Bool(true))
}

async fn call(
    admitter: &Admitter,
    endpoint: Endpoint,
    review: &Value,
    deadline: Duration,
) -> Result<Value, String> {
    let body = serde_json::to_vec(review).map_err(|e| e.to_string())?;
    match admitter.handle(endpoint, &body, deadline).await {
        Answer::Review(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("the pipeline answered invalid JSON: {e}")),
        Answer::BadRequest(reason) => Err(format!(
            "the server would answer HTTP 400 (no decision): {reason}"
        )),
    }
}

fn decode_patch(answer: &Value) -> Result<Vec<Value>, String> {
    let Some(b64) = answer.pointer("/response/patch").and_then(Value::as_str) else {
        return Ok(Vec::new());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("patch is not base64: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("patch is not a JSON array: {e}"))
}

/// Run one document through the pipeline as the API server would: mutation first (Pods, or
/// whatever `--endpoint mutate` is given), then validation of the patched object.
pub async fn review_one(
    admitter: &Admitter,
    prepared: Prepared,
    endpoint: EndpointChoice,
    deadline: Duration,
) -> Result<Outcome, String> {
    let Prepared {
        label,
        mut review,
        mutable,
    } = prepared;
    let run_mutate = match endpoint {
        EndpointChoice::Mutate => true,
        EndpointChoice::Validate => false,
        EndpointChoice::Both => mutable,
    };
    let mut patched = review
        .pointer("/request/object")
        .filter(|v| v.is_object())
        .cloned();
    let mut patch = Vec::new();
    let mut mutate = None;
    if run_mutate {
        let answer = call(admitter, Endpoint::Mutate, &review, deadline).await?;
        patch = decode_patch(&answer)?;
        if let Some(object) = patched.as_mut()
            && !patch.is_empty()
        {
            let ops: Vec<json_patch::PatchOperation> =
                serde_json::from_value(Value::Array(patch.clone()))
                    .map_err(|e| format!("patch is not RFC 6902: {e}"))?;
            json_patch::patch(object, &ops)
                .map_err(|e| format!("the mutation patch does not apply: {e}"))?;
            if let Some(slot) = review.pointer_mut("/request/object") {
                *slot = object.clone();
            }
        }
        mutate = Some(answer);
    }
    let mut validate = None;
    if endpoint != EndpointChoice::Mutate && mutate.as_ref().is_none_or(allowed) {
        validate = Some(call(admitter, Endpoint::Validate, &review, deadline).await?);
    }
    let effective_pod = match review
        .get("request")
        .cloned()
        .map(AdmissionRequest::from_value)
    {
        Some(Ok(req)) => admitter
            .mutator
            .effective_pod(&req)
            .await
            .map(|r| r.map(|e| e.pod).map_err(|Refusal(m)| m)),
        _ => None,
    };
    Ok(Outcome {
        label,
        allowed: mutate.as_ref().is_none_or(allowed) && validate.as_ref().is_none_or(allowed),
        effective_pod,
        mutate,
        patch,
        validate,
        patched,
    })
}

fn read_input(file: &str) -> Result<String, String> {
    if file == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read stdin: {e}"))
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))
    }
}

/// The pipeline `serve` would run with the same `--config` and `--policies`, writing no log.
pub fn admitter(config: Option<&PathBuf>, policies: Option<&PathBuf>) -> anyhow::Result<Admitter> {
    admitter_with(config, policies, None, None)
}

/// [`admitter`] with `serve`'s `--profile` and `--judge` on top of the configuration.
pub fn admitter_with(
    config: Option<&PathBuf>,
    policies: Option<&PathBuf>,
    profile: Option<&str>,
    judge: Option<crate::config::Judge>,
) -> anyhow::Result<Admitter> {
    let mut config = match config {
        Some(path) => Config::load(path)?,
        None => Config::embedded()?,
    };
    if let Some(p) = profile {
        config.policy.profile = p.to_owned();
        config.policy.validate().map_err(anyhow::Error::msg)?;
    }
    if judge.is_some() {
        config.validation.judge = judge;
    }
    let metrics = Arc::new(Metrics::new());
    Admitter::build(
        Arc::new(config),
        policies.map(PathBuf::as_path),
        // Offline: profiles' configured scheduling, no Namespace lookups, like a server without
        // cluster access.
        None,
        metrics.clone(),
        DecisionLog::disabled(metrics.clone()),
        Events::disabled(metrics),
    )
}

/// Run an offline command (`review`, `scan`, `replay`, `explain`) on a single-threaded runtime;
/// exit 2 when none can be started.
pub fn run_offline(command: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(command),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::from(2)
        }
    }
}

pub fn run(args: ReviewArgs) -> ExitCode {
    if args.output == ReviewOutput::Json && args.patched && args.endpoint != EndpointChoice::Both {
        eprintln!(
            "error: -o json prints exactly the server's AdmissionReview; use --endpoint both \
             or -o yaml to see the patched object"
        );
        return ExitCode::from(2);
    }
    run_offline(run_async(args))
}

async fn run_async(args: ReviewArgs) -> ExitCode {
    let admitter = match admitter_with(
        args.config.as_ref(),
        args.policies.as_ref(),
        args.profile.as_deref(),
        args.judge,
    ) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let files = if args.files.is_empty() {
        vec!["-".to_string()]
    } else {
        args.files.clone()
    };
    let mut docs = Vec::new();
    for file in &files {
        match read_input(file).and_then(|t| request::documents(&t)) {
            Ok(d) if d.is_empty() => {
                eprintln!("error: {file}: no documents");
                return ExitCode::from(2);
            }
            Ok(d) => docs.extend(d.into_iter().enumerate().map(|(i, d)| (file, i + 1, d))),
            Err(e) => {
                eprintln!("error: {file}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let defaults = RequestDefaults {
        operation: match args.operation {
            OperationArg::Create => Operation::Create,
            OperationArg::Update => Operation::Update,
            OperationArg::Delete => Operation::Delete,
        },
        namespace: args.namespace.clone(),
        user: args.user.clone(),
        groups: args.groups.clone(),
        uid: args.uid.clone(),
    };
    let deadline = Duration::from_secs(admitter.config.default_timeout_seconds);
    let (mut bad, mut denied) = (false, false);
    let mut printed = false;
    for (file, number, doc) in docs {
        let outcome = match request::prepare(doc, &defaults) {
            Ok(p) => review_one(&admitter, p, args.endpoint, deadline).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(o) => {
                denied |= !o.allowed;
                render::print(&o, &args, printed);
                printed = true;
            }
            Err(e) => {
                bad = true;
                eprintln!("error: {file} document {number}: {e}");
            }
        }
    }
    match (bad, denied) {
        (true, _) => ExitCode::from(2),
        (false, true) => ExitCode::from(1),
        (false, false) => ExitCode::SUCCESS,
    }
}
