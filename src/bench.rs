//! `bench`: what each policy costs, like `gator bench` and `kwctl bench`.
//!
//! The server evaluates all matching policies in one query, so a policy's own cost is measured by
//! compiling a set with only that policy (plus the shared libraries) and timing it on the same
//! reviews; the whole set is timed too, which is what a review really pays.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::admission::{self, AdmissionRequest, Operation};
use crate::policy::{
    EvaluatorChoice, EvaluatorKind, PolicyConfig, PolicySet, PolicySource, SourceFile,
};
use crate::request::{self, RequestDefaults};

#[derive(Args)]
#[command(
    after_help = "Example:\n  sandbox-admission bench --policies policies/ tests/fixtures/agent-sandbox/examples/jupyterlab/jupyterlab.yaml"
)]
pub struct BenchArgs {
    /// Policy directory [default: the embedded policies]
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// Objects or AdmissionReviews (YAML or JSON) to evaluate
    #[arg(required = true)]
    pub fixtures: Vec<PathBuf>,
    /// Evaluations of each set per review
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub iterations: u32,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Time only the whole set (what a review pays), not each policy alone: for large sets, and
    /// under `valgrind --tool=callgrind`, where compiling a set per policy would dominate
    #[arg(long)]
    pub whole_set: bool,
    /// Add renamed copies of the policies that judge the first review until N policies judge it
    /// (the cost curve in matching policies)
    #[arg(long, value_name = "N")]
    pub matching: Option<usize>,
    /// Add trivial ConfigMap policies until the set holds N policies (loaded but not matching)
    #[arg(long, value_name = "N")]
    pub loaded: Option<usize>,
    /// Per-evaluation time limit in ms [default: the server's]; raise it under valgrind, where
    /// a large set runs long enough to hit it and the failures would be timed instead
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// What runs the policies (`policy.evaluator`): to compare the compiled evaluator with the
    /// interpreter on the same set
    #[arg(long, value_enum, default_value_t = EvaluatorArg::Compiled)]
    pub evaluator: EvaluatorArg,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum EvaluatorArg {
    Compiled,
    Interpreter,
}

/// Timings of one set over every review.
struct Timing {
    name: String,
    samples: Vec<Duration>,
}

impl Timing {
    fn mean_us(&self) -> f64 {
        let total: Duration = self.samples.iter().sum();
        total.as_secs_f64() * 1e6 / self.samples.len().max(1) as f64
    }

    fn p99_us(&mut self) -> f64 {
        self.samples.sort_unstable();
        let i = (self.samples.len() * 99 / 100).min(self.samples.len().saturating_sub(1));
        self.samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    }
}

fn reviews(args: &BenchArgs) -> anyhow::Result<Vec<AdmissionRequest>> {
    let defaults = RequestDefaults {
        operation: Operation::Create,
        namespace: None,
        user: "bench".into(),
        groups: Vec::new(),
        uid: Some("bench".into()),
    };
    let mut out = Vec::new();
    for path in &args.fixtures {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let docs =
            request::documents(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        for doc in docs {
            let prepared = request::prepare(doc, &defaults)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let body = serde_json::to_vec(&prepared.review)?;
            out.push(
                admission::decode(&body).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            );
        }
    }
    anyhow::ensure!(!out.is_empty(), "no objects in the fixtures");
    Ok(out)
}

/// The whole set, then one set per policy: its `.rego` and metadata plus every module that has
/// no metadata (libraries).
fn sets(
    files: &[SourceFile],
    config: &PolicyConfig,
    whole_only: bool,
) -> anyhow::Result<Vec<(String, PolicySet)>> {
    let origin = "bench".to_string();
    let whole =
        PolicySet::compile(files, origin.clone(), config).map_err(|e| anyhow::anyhow!("{e}"))?;
    if whole_only {
        return Ok(vec![("(whole set)".to_string(), whole)]);
    }
    let stem = |p: &str| {
        p.rsplit_once('.')
            .map_or(p.to_string(), |(s, _)| s.to_string())
    };
    let has_meta = |rego: &str| {
        let s = stem(rego);
        files
            .iter()
            .any(|f| f.path == format!("{s}.yaml") || f.path == format!("{s}.yml"))
    };
    let policies: Vec<&SourceFile> = files
        .iter()
        .filter(|f| {
            f.path.ends_with(".rego") && !f.path.ends_with("_test.rego") && has_meta(&f.path)
        })
        .collect();
    let mut out = vec![("(whole set)".to_string(), whole)];
    for policy in policies {
        let own = stem(&policy.path);
        let subset: Vec<SourceFile> = files
            .iter()
            .filter(|f| {
                let s = stem(&f.path);
                s == own || (f.path.ends_with(".rego") && !has_meta(&f.path))
            })
            .cloned()
            .collect();
        let set = PolicySet::compile(&subset, origin.clone(), config)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let name = set
            .policy_names()
            .first()
            .map_or(own.clone(), |n| (*n).to_string());
        out.push((name, set));
    }
    Ok(out)
}

fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let reqs = reviews(args)?;
    let source = match &args.policies {
        Some(dir) => PolicySource::Dir(dir.clone()),
        None => PolicySource::Embedded,
    };
    let mut files = source.read().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut config = PolicyConfig::default();
    if let Some(ms) = args.timeout_ms {
        config.evaluation_timeout_ms = ms;
    }
    config.evaluator = match args.evaluator {
        EvaluatorArg::Compiled => EvaluatorChoice::Compiled,
        EvaluatorArg::Interpreter => EvaluatorChoice::Interpreter,
    };
    if args.matching.is_some() || args.loaded.is_some() {
        let first = reqs
            .first()
            .ok_or_else(|| anyhow::anyhow!("no objects in the fixtures"))?;
        files = scaled(files, first, args.matching, args.loaded, &config)?;
    }
    let mut timings = Vec::new();
    for (index, (mut name, set)) in sets(&files, &config, args.whole_set)?
        .into_iter()
        .enumerate()
    {
        if let (0, Some(first)) = (index, reqs.first()) {
            let judging = set.reference_cases(first, &Default::default())?.len();
            name = format!("(whole set: {} loaded, {judging} match)", set.len());
            match set.evaluator() {
                EvaluatorKind::Compiled => eprintln!("evaluator: compiled (RVM)"),
                EvaluatorKind::Interpreter(why) => eprintln!("evaluator: interpreter ({why})"),
            }
        }
        let mut samples = Vec::with_capacity(reqs.len() * args.iterations as usize);
        for req in &reqs {
            let _ = set.evaluate(req, None); // warm
            for _ in 0..args.iterations {
                let t = Instant::now();
                std::hint::black_box(set.evaluate(std::hint::black_box(req), None));
                samples.push(t.elapsed());
            }
        }
        timings.push(Timing { name, samples });
    }
    let rows: Vec<_> = timings
        .iter_mut()
        .map(|t| {
            let (mean, p99) = (t.mean_us(), t.p99_us());
            json!({"policy": t.name, "mean_us": mean, "p99_us": p99, "reviews_per_s": 1e6 / mean.max(1e-9)})
        })
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"reviews": reqs.len(), "iterations": args.iterations, "results": rows})
            )?
        );
    } else {
        println!("{} reviews x {} iterations", reqs.len(), args.iterations);
        println!(
            "{:<40} {:>10} {:>10} {:>12}",
            "policy", "mean µs", "p99 µs", "reviews/s"
        );
        for r in &rows {
            println!(
                "{:<40} {:>10.1} {:>10.1} {:>12.0}",
                r["policy"].as_str().unwrap_or(""),
                r["mean_us"].as_f64().unwrap_or(0.0),
                r["p99_us"].as_f64().unwrap_or(0.0),
                r["reviews_per_s"].as_f64().unwrap_or(0.0)
            );
        }
        println!(
            "(each policy alone includes the per-query overhead; the whole set is what a review pays)"
        );
    }
    Ok(())
}

/// `files` grown to `matching` policies that judge `req` and `loaded` policies in all.
///
/// Copies get a package and name of their own (`_cN`, `-cN`) and keep everything else, so each
/// costs what its original costs; the padding policies match ConfigMaps only, so they cost a
/// review exactly what being loaded costs.
pub fn scaled(
    mut files: Vec<SourceFile>,
    req: &AdmissionRequest,
    matching: Option<usize>,
    loaded: Option<usize>,
    config: &PolicyConfig,
) -> anyhow::Result<Vec<SourceFile>> {
    let base =
        PolicySet::compile(&files, "bench".into(), config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let cases = base.reference_cases(req, &Default::default())?;
    let mut originals = Vec::new();
    for case in &cases {
        let package = case.package.strip_prefix("data.").unwrap_or(&case.package);
        let rego = files
            .iter()
            .find(|f| {
                f.path.ends_with(".rego")
                    && f.text
                        .lines()
                        .any(|l| l.trim() == format!("package {package}"))
            })
            .ok_or_else(|| anyhow::anyhow!("no .rego file holds package {package}"))?;
        let stem = rego.path.strip_suffix(".rego").unwrap_or(&rego.path);
        let meta = [format!("{stem}.yaml"), format!("{stem}.yml")]
            .into_iter()
            .find_map(|p| files.iter().find(|f| f.path == p))
            .ok_or_else(|| anyhow::anyhow!("{} has no metadata file", rego.path))?;
        originals.push((package.to_string(), rego.clone(), meta.clone()));
    }
    let want = matching.unwrap_or(cases.len());
    anyhow::ensure!(
        want <= cases.len() || !originals.is_empty(),
        "no policy judges the first review, so none can be copied"
    );
    for i in 0..want.saturating_sub(cases.len()) {
        let (package, rego, meta) = &originals[i % originals.len()];
        let copy = i / originals.len() + 1;
        let stem = rego.path.strip_suffix(".rego").unwrap_or(&rego.path);
        let rego_text = rego.text.replacen(
            &format!("package {package}"),
            &format!("package {package}_c{copy}"),
            1,
        );
        let mut named = false;
        let mut meta_text: String = meta
            .text
            .lines()
            .map(|l| match l.strip_prefix("name:") {
                Some(name) if !named => {
                    named = true;
                    format!("name: {}-c{copy}\n", name.trim())
                }
                _ => format!("{l}\n"),
            })
            .collect();
        if !named {
            let own = stem.rsplit('/').next().unwrap_or(stem).replace('_', "-");
            meta_text = format!("name: {own}-c{copy}\n{meta_text}");
        }
        files.push(SourceFile::new(format!("{stem}_c{copy}.rego"), rego_text));
        files.push(SourceFile::new(format!("{stem}_c{copy}.yaml"), meta_text));
    }
    let have = base.len() + want.saturating_sub(cases.len());
    for i in 0..loaded.unwrap_or(0).saturating_sub(have) {
        files.push(SourceFile::new(
            format!("generated/unmatched_{i:04}.rego"),
            format!("package generated.unmatched_{i:04}\n\nimport rego.v1\n\nviolation contains {{\"msg\": \"bad name\"}} if input.review.object.metadata.name == \"bad\"\n"),
        ));
        files.push(SourceFile::new(
            format!("generated/unmatched_{i:04}.yaml"),
            format!("name: unmatched-{i:04}\nkinds:\n  - {{group: \"\", kind: ConfigMap}}\n"),
        ));
    }
    Ok(files)
}

pub fn run(args: BenchArgs) -> ExitCode {
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
