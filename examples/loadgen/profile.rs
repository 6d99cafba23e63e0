//! `--profile-passes N`: the `/mutate` workload (or, with `--profile-validate`, the Sandbox
//! `/validate` workload) through `Admitter::handle` in this process, without TLS or HTTP, for
//! `valgrind --tool=callgrind`.
//!
//! The Admitter is the one `serve` starts (embedded configuration and policies, decision log on,
//! as the spawned server runs it), and each pass sends every Sandbox pod of the workload once,
//! exactly the bodies the load test sends. Instructions per review are
//! `(total with N passes − total with 1 pass) / ((N − 1) × reviews)`, so start-up cancels out.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sandbox_admission::config::Config;
use sandbox_admission::pipeline::{Answer, Endpoint};
use sandbox_admission::server::{self, ServeSettings, TlsSource};

use crate::workload::{Review, Workload};

/// The endpoint and reviews a profile sends.
fn workload(w: &Workload, validate: bool) -> anyhow::Result<(Endpoint, &[Review], &'static str)> {
    let (endpoint, reviews, path) = if validate {
        (Endpoint::Validate, &w.validate_sandbox, "/validate")
    } else {
        (Endpoint::Mutate, &w.mutate, "/mutate")
    };
    anyhow::ensure!(
        !reviews.is_empty(),
        "no {path} reviews built from the fixtures"
    );
    Ok((endpoint, reviews, path))
}

/// What a profile runs: how many passes, which workload, and the policies (the embedded set, or
/// a directory as `serve --policies` reads it, to compare a policy change without a rebuild).
pub struct Profile {
    pub passes: u32,
    pub validate: bool,
    pub policies: Option<PathBuf>,
}

/// The server `serve` starts, its certificates in `dir`.
async fn start(dir: &Path, policies: Option<PathBuf>) -> anyhow::Result<server::Running> {
    let mut config = Config::embedded()?;
    config.listen = "127.0.0.1:0".parse()?;
    config.health_listen = "127.0.0.1:0".parse()?;
    server::start(ServeSettings {
        config,
        config_origin: "loadgen --profile-passes".into(),
        tls: TlsSource::SelfSigned {
            dir: dir.join("certs"),
        },
        policies_dir: policies,
        decision_log: true,
        cluster: None,
    })
    .await
}

pub async fn run(w: &Workload, p: Profile) -> anyhow::Result<()> {
    let Profile {
        passes, validate, ..
    } = p;
    let (endpoint, reviews, path) = workload(w, validate)?;
    let dir = tempfile::tempdir()?;
    let running = start(dir.path(), p.policies).await?;
    let deadline = Duration::from_secs(10);
    let mut answered = 0u64;
    for _ in 0..passes {
        for review in reviews {
            let answer = running
                .admitter
                .handle(endpoint, black_box(&review.body), deadline)
                .await;
            match black_box(answer) {
                Answer::Review(_) => answered += 1,
                Answer::BadRequest(e) => anyhow::bail!("review {} refused: {e}", review.uid),
            }
        }
    }
    running.shutdown().await;
    eprintln!(
        "profiled {answered} {path} reviews ({passes} passes of {})",
        reviews.len()
    );
    Ok(())
}

/// `--profile-each`: every review alone, `passes` times in a row after one warm-up, its median
/// wall time; costliest first. A load test's p99 is the slowest 1% of its reviews, so on a mix
/// of 68 reviews it is set by the one or two costliest of them.
pub async fn each(w: &Workload, p: Profile) -> anyhow::Result<()> {
    let Profile {
        passes, validate, ..
    } = p;
    let (endpoint, reviews, path) = workload(w, validate)?;
    let dir = tempfile::tempdir()?;
    let running = start(dir.path(), p.policies).await?;
    let deadline = Duration::from_secs(10);
    let mut rows = Vec::new();
    for review in reviews {
        let mut times = Vec::new();
        let mut verdict = String::new();
        for pass in 0..=passes {
            let start = Instant::now();
            let answer = running
                .admitter
                .handle(endpoint, black_box(&review.body), deadline)
                .await;
            let took = start.elapsed();
            match black_box(answer) {
                Answer::Review(body) => {
                    if pass == 0 {
                        verdict = verdict_of(&body);
                        if std::env::var_os("LOADGEN_SHOW_ANSWERS").is_some() {
                            eprintln!("{}: {}", review.uid, String::from_utf8_lossy(&body));
                        }
                    } else {
                        times.push(took);
                    }
                }
                Answer::BadRequest(e) => anyhow::bail!("review {} refused: {e}", review.uid),
            }
        }
        times.sort();
        let median = times.get(times.len() / 2).copied().unwrap_or_default();
        rows.push((median, review, verdict));
    }
    running.shutdown().await;
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    let total: Duration = rows.iter().map(|r| r.0).sum();
    eprintln!(
        "{path}: {} reviews, mean of medians {:.1} µs",
        rows.len(),
        total.as_secs_f64() * 1e6 / rows.len().max(1) as f64
    );
    for (median, review, verdict) in rows {
        eprintln!(
            "{:>9.1} µs  {:>6} B  {:<8} {}",
            median.as_secs_f64() * 1e6,
            review.body.len(),
            verdict,
            review.uid
        );
    }
    Ok(())
}

/// `allowed` or `denied`, from an answer.
fn verdict_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match v
        .pointer("/response/allowed")
        .and_then(serde_json::Value::as_bool)
    {
        Some(true) => "allowed".into(),
        Some(false) => "denied".into(),
        None => "?".into(),
    }
}
