//! `--profile-passes N`: the `/mutate` workload (or, with `--profile-validate`, the Sandbox
//! `/validate` workload) through `Admitter::handle` in this process, without TLS or HTTP, for
//! `valgrind --tool=callgrind`.
//!
//! The Admitter is the one `serve` starts (embedded configuration and policies, decision log on,
//! as the spawned server runs it), and each pass sends every Sandbox pod of the workload once,
//! exactly the bodies the load test sends. Instructions per review are
//! `(total with N passes − total with 1 pass) / ((N − 1) × reviews)`, so start-up cancels out.

use std::hint::black_box;
use std::time::Duration;

use sandbox_admission::config::Config;
use sandbox_admission::pipeline::{Answer, Endpoint};
use sandbox_admission::server::{self, ServeSettings, TlsSource};

use crate::workload::Workload;

pub async fn run(w: &Workload, passes: u32, validate: bool) -> anyhow::Result<()> {
    let (endpoint, reviews, path) = if validate {
        (Endpoint::Validate, &w.validate_sandbox, "/validate")
    } else {
        (Endpoint::Mutate, &w.mutate, "/mutate")
    };
    anyhow::ensure!(
        !reviews.is_empty(),
        "no {path} reviews built from the fixtures"
    );
    let dir = tempfile::tempdir()?;
    let mut config = Config::embedded()?;
    config.listen = "127.0.0.1:0".parse()?;
    config.health_listen = "127.0.0.1:0".parse()?;
    let running = server::start(ServeSettings {
        config,
        config_origin: "loadgen --profile-passes".into(),
        tls: TlsSource::SelfSigned {
            dir: dir.path().join("certs"),
        },
        policies_dir: None,
        decision_log: true,
        cluster: None,
    })
    .await?;
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
