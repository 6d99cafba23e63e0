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
use crate::policy::{PolicyConfig, PolicySet, PolicySource, SourceFile};
use crate::review::request::{self, RequestDefaults};

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
fn sets(files: &[SourceFile], config: &PolicyConfig) -> anyhow::Result<Vec<(String, PolicySet)>> {
    let origin = "bench".to_string();
    let whole =
        PolicySet::compile(files, origin.clone(), config).map_err(|e| anyhow::anyhow!("{e}"))?;
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
    let files = source.read().map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = PolicyConfig::default();
    let mut timings = Vec::new();
    for (name, set) in sets(&files, &config)? {
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

pub fn run(args: BenchArgs) -> ExitCode {
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
