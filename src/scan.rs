//! `sandbox-admission scan PATH...`: judge a tree of manifests before it is applied (GitOps CI).
//!
//! Every object is turned into the AdmissionRequest the API server would send (the same code as
//! `review`), decoded by the server's decoder and judged by the server's pipeline at `/validate`,
//! so a scan's verdict is the server's verdict. `data.inventory` is built from the objects read,
//! filtered by the configuration's `sync` list, as the server builds it from its watch caches:
//! a claim whose warm pool is in the same tree finds it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::Value;

use crate::admission::{self, Operation};
use crate::cluster::inventory;
use crate::pipeline::{Admitter, Endpoint};
use crate::policy::PolicyHit;
use crate::policyreport::{self, Judged, ResourceRef};
use crate::request::{self, RequestDefaults};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ScanOutput {
    /// One line per object, then a summary
    #[default]
    Table,
    /// Every object with its verdict and policy hits
    Json,
    /// wgpolicyk8s.io/v1alpha2 PolicyReports (one per namespace), YAML
    PolicyReport,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Exit 1 when an object would be denied
    #[default]
    Denied,
    /// Exit 1 when an object would be denied or admitted with warnings
    Warned,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPERCASE")]
pub enum ScanOperation {
    /// As when the objects are created (every CREATE-only rule applies)
    #[default]
    Create,
    /// As when they already exist and are applied again (as the background audit judges)
    Update,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files, directories (recursively: *.yaml, *.yml, *.json; hidden entries skipped) or `-`
    /// for standard input
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<String>,
    /// Output format
    #[arg(long, short = 'o', value_enum, default_value_t)]
    pub output: ScanOutput,
    /// What makes the exit code 1
    #[arg(long, value_enum, default_value_t)]
    pub fail_on: FailOn,
    /// Operation the objects are judged as
    #[arg(long, value_enum, ignore_case = true, default_value_t)]
    pub operation: ScanOperation,
    /// Namespace of objects that name none [default: default]
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// User the requests are made as
    #[arg(long, default_value = "kubernetes-admin")]
    pub user: String,
    /// Groups of that user (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "system:authenticated")]
    pub groups: Vec<String>,
    /// Policy directory, as `serve --policies` [default: the embedded policies]
    #[arg(long, env = "SANDBOX_ADMISSION_POLICIES")]
    pub policies: Option<PathBuf>,
    /// Configuration file, as `serve --config` (its `sync` list chooses what data.inventory
    /// holds) [default: embedded]
    #[arg(long, env = "SANDBOX_ADMISSION_CONFIG")]
    pub config: Option<PathBuf>,
}

pub const AFTER_HELP: &str = "\
Examples:
  # GitOps CI: fail the pipeline when anything in the repository would be refused
  sandbox-admission scan clusters/prod/ apps/
  # ... or when anything would even warn, with the policies under review in the same commit
  sandbox-admission scan --fail-on warned --policies policies/ clusters/prod/

  # What a kustomization renders, as the cluster would judge it
  kustomize build overlays/prod | sandbox-admission scan -

  # Everything in a namespace today, judged as the background audit would, as PolicyReports
  kubectl get sandboxes,sandboxtemplates,sandboxwarmpools,sandboxclaims -n team-a -o yaml \\
    | sandbox-admission scan - --operation update -o policy-report

A GitHub Actions step:
  - run: sandbox-admission scan --policies policies/ -o table deploy/

Documents that are not Kubernetes objects (no apiVersion or kind) are listed as skipped.
Exit code: 0 when nothing would be refused, 1 when something would (see --fail-on),
2 on unreadable input or a policy set that does not load.";

/// One judged object.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScannedObject {
    pub file: String,
    /// 1-based document number in the file (items of a List count one each).
    pub document: usize,
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `allowed`, `warned` or `denied`.
    pub verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub policies: Vec<PolicyHit>,
}

/// A document that was not judged, and why.
#[derive(Debug, Clone, Serialize)]
pub struct NotJudged {
    pub file: String,
    pub document: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ScanSummary {
    pub objects: usize,
    pub allowed: usize,
    pub warned: usize,
    pub denied: usize,
    pub skipped: usize,
    pub errors: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanReport {
    pub objects: Vec<ScannedObject>,
    pub skipped: Vec<NotJudged>,
    pub errors: Vec<NotJudged>,
    pub summary: ScanSummary,
}

/// One document read from the input.
struct Document {
    file: String,
    number: usize,
    value: Value,
}

/// The files under `path`: itself when a file, its YAML and JSON files (sorted, recursively,
/// hidden entries skipped) when a directory.
fn files_under(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            files_under(&entry, out)?;
        } else if entry
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(entry);
        }
    }
    Ok(())
}

/// Every document of every path; unreadable files and unparsable documents become errors.
fn read_documents(paths: &[String], errors: &mut Vec<NotJudged>) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut add =
        |file: String, text: Result<String, String>, errors: &mut Vec<NotJudged>| match text
            .and_then(|t| request::documents(&t))
        {
            Ok(values) => docs.extend(values.into_iter().enumerate().map(|(i, value)| Document {
                file: file.clone(),
                number: i + 1,
                value,
            })),
            Err(reason) => errors.push(NotJudged {
                file,
                document: 0,
                reason,
            }),
        };
    for path in paths {
        if path == "-" {
            let text = std::io::read_to_string(std::io::stdin())
                .map_err(|e| format!("cannot read stdin: {e}"));
            add("-".into(), text, errors);
            continue;
        }
        let mut files = Vec::new();
        if let Err(reason) = files_under(Path::new(path), &mut files) {
            errors.push(NotJudged {
                file: path.clone(),
                document: 0,
                reason,
            });
            continue;
        }
        for file in files {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()));
            add(file.display().to_string(), text, errors);
        }
    }
    docs
}

/// API groups of files tools read on the client side (kustomize, kind, kpt): they look like
/// objects but never reach an API server, so they are skipped rather than judged.
const CLIENT_SIDE_GROUPS: &[&str] = &["kustomize.config.k8s.io", "kind.x-k8s.io", "kpt.dev"];

fn is_client_side(v: &Value) -> bool {
    let api_version = v.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    CLIENT_SIDE_GROUPS.contains(&group)
}

fn is_kubernetes_object(v: &Value) -> bool {
    ["apiVersion", "kind"].iter().all(|k| {
        v.get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    })
}

/// Judge every document under `paths` with `admitter` (whose policy set gets the inventory of
/// what was read).
pub async fn scan(admitter: &Admitter, args: &ScanArgs) -> ScanReport {
    let mut report = ScanReport::default();
    let docs = read_documents(&args.paths, &mut report.errors);
    let defaults = RequestDefaults {
        operation: match args.operation {
            ScanOperation::Create => Operation::Create,
            ScanOperation::Update => Operation::Update,
        },
        namespace: args.namespace.clone(),
        user: args.user.clone(),
        groups: args.groups.clone(),
        uid: None,
    };
    let mut prepared = Vec::new();
    for doc in docs {
        if !is_kubernetes_object(&doc.value) {
            report.skipped.push(NotJudged {
                file: doc.file,
                document: doc.number,
                reason: "not a Kubernetes object (no apiVersion or kind)".into(),
            });
            continue;
        }
        if is_client_side(&doc.value) {
            report.skipped.push(NotJudged {
                file: doc.file,
                document: doc.number,
                reason: "client-side tool configuration (never sent to an API server)".into(),
            });
            continue;
        }
        match request::prepare(doc.value, &defaults) {
            Ok(p) => prepared.push((doc.file, doc.number, p)),
            Err(reason) => report.errors.push(NotJudged {
                file: doc.file,
                document: doc.number,
                reason,
            }),
        }
    }
    // The objects as the API server would hold them (namespace filled in), as the watch caches
    // would hand them to the inventory.
    let objects: Vec<&Value> = prepared
        .iter()
        .filter_map(|(_, _, p)| {
            p.review
                .pointer("/request/object")
                .or_else(|| p.review.pointer("/request/oldObject"))
                .filter(|o| o.is_object())
        })
        .collect();
    let inventory = inventory::build(inventory::synced(
        &admitter.config.sync,
        objects.iter().copied(),
    ));
    if let Err(reason) = admitter.policies.set_inventory(Arc::new(inventory)) {
        report.errors.push(NotJudged {
            file: "(inventory)".into(),
            document: 0,
            reason,
        });
        return finish(report);
    }
    let deadline = Duration::from_secs(admitter.config.default_timeout_seconds);
    for (file, number, p) in prepared {
        let body = match serde_json::to_vec(&p.review) {
            Ok(b) => b,
            Err(e) => {
                report.errors.push(NotJudged {
                    file,
                    document: number,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let req = match admission::decode(&body) {
            Ok(r) => r,
            Err(e) => {
                report.errors.push(NotJudged {
                    file,
                    document: number,
                    reason: format!("the server would refuse this request: {e}"),
                });
                continue;
            }
        };
        let decision = admitter
            .decide_within(Endpoint::Validate, &req, deadline)
            .await;
        let object = req.object().or_else(|| req.old_object());
        let at = |p: &str| {
            object
                .and_then(|o| o.pointer(p))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        report.objects.push(ScannedObject {
            file,
            document: number,
            api_version: at("/apiVersion"),
            kind: req.kind.kind.clone(),
            namespace: req.namespace.clone(),
            name: req.name.clone(),
            verdict: decision.label().into(),
            message: decision.response.status.as_ref().map(|s| s.message.clone()),
            warnings: decision.response.warnings.clone(),
            policies: decision.hits,
        });
    }
    finish(report)
}

fn finish(mut report: ScanReport) -> ScanReport {
    let count = |v: &str| report.objects.iter().filter(|o| o.verdict == v).count();
    report.summary = ScanSummary {
        objects: report.objects.len(),
        allowed: count("allowed"),
        warned: count("warned"),
        denied: count("denied"),
        skipped: report.skipped.len(),
        errors: report.errors.len(),
    };
    report
}

/// The table: one row per object, policies as `name(action)`.
pub fn table(report: &ScanReport) -> String {
    let rows: Vec<[String; 5]> = report
        .objects
        .iter()
        .map(|o| {
            let mut names: Vec<String> = Vec::new();
            for hit in &o.policies {
                let cell = format!("{}({})", hit.policy, hit.action);
                if !names.contains(&cell) {
                    names.push(cell);
                }
            }
            let object = if o.namespace.is_empty() {
                o.name.clone()
            } else {
                format!("{}/{}", o.namespace, o.name)
            };
            [
                format!("{}#{}", o.file, o.document),
                o.kind.clone(),
                object,
                o.verdict.clone(),
                if names.is_empty() {
                    "-".into()
                } else {
                    names.join(",")
                },
            ]
        })
        .collect();
    let header = ["SOURCE", "KIND", "OBJECT", "VERDICT", "POLICIES"].map(String::from);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i == row.len() - 1 {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push('\n');
    }
    let s = &report.summary;
    out.push_str(&format!(
        "\n{} objects: {} allowed, {} warned, {} denied; {} documents skipped, {} errors\n",
        s.objects, s.allowed, s.warned, s.denied, s.skipped, s.errors
    ));
    out
}

/// The PolicyReports of a scan (YAML, one document per namespace).
pub fn policy_reports(report: &ScanReport, admitter: &Admitter) -> Result<String, String> {
    let judged: Vec<Judged> = report
        .objects
        .iter()
        .map(|o| Judged {
            resource: ResourceRef {
                api_version: o.api_version.clone(),
                kind: o.kind.clone(),
                namespace: o.namespace.clone(),
                name: o.name.clone(),
                uid: String::new(),
            },
            hits: o.policies.clone(),
        })
        .collect();
    let reports = policyreport::build(
        &judged,
        [],
        &policyreport::BuildOptions {
            cap: admitter.config.audit.max_results_per_report,
            prefix: admitter.config.label_prefix.clone(),
            now: chrono::Utc::now(),
        },
    );
    serde_saphyr::to_string_multiple(&reports).map_err(|e| format!("cannot encode YAML: {e}"))
}

pub fn run(args: ScanArgs) -> ExitCode {
    crate::review::run_offline(run_async(args))
}

async fn run_async(args: ScanArgs) -> ExitCode {
    let admitter = match crate::review::admitter(args.config.as_ref(), args.policies.as_ref()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let report = scan(&admitter, &args).await;
    for e in &report.errors {
        if e.document == 0 {
            eprintln!("error: {}: {}", e.file, e.reason);
        } else {
            eprintln!("error: {} document {}: {}", e.file, e.document, e.reason);
        }
    }
    let text = match args.output {
        ScanOutput::Table => Ok(table(&report)),
        ScanOutput::Json => serde_json::to_string_pretty(&report)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| e.to_string()),
        ScanOutput::PolicyReport => policy_reports(&report, &admitter),
    };
    match text {
        // A closed pipe (`| head`) is not worth reporting.
        Ok(text) => {
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let s = report.summary;
    let refused = match args.fail_on {
        FailOn::Denied => s.denied > 0,
        FailOn::Warned => s.denied + s.warned > 0,
    };
    if s.errors > 0 {
        ExitCode::from(2)
    } else if refused {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
