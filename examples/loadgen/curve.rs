//! `--curve`: what a review costs the server as its policy set grows. For each set the server is
//! started with `--policies DIR` holding the set, and the Sandbox `/validate` mix runs against
//! it as fast as it goes and at the fixed `--curve-rate`. The sets are the ones `sandbox-admission
//! bench --matching N --loaded N` and `cargo bench --bench policy` (`policy/curve/*`) build
//! (`sandbox_admission::bench::scaled`): renamed copies of the shipped policies that judge the
//! first Sandbox review until N judge it, and ConfigMap-only padding that is loaded but never
//! matches. The copies match by kind, as their originals do, so they judge every review of the
//! mix.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use sandbox_admission::policy::{PolicyConfig, PolicySet, PolicySource};
use serde_json::{Value, json};

use crate::client::{self, Item, LoadSettings, Target};
use crate::spawn;
use crate::stats::Stats;
use crate::workload::Review;

/// The points of the curve: a label, the matching policies wanted and the policies loaded.
pub const SETS: [(&str, Option<usize>, Option<usize>); 5] = [
    ("shipped", None, None),
    ("50_matching", Some(50), None),
    ("100_matching", Some(100), None),
    ("200_matching", Some(200), None),
    ("shipped_of_200_loaded", None, Some(200)),
];

/// Write the set for one point into `dir`, as a policy directory the server reads; returns
/// how many policies it holds and how many of them judge `first`.
fn write_set(
    dir: &Path,
    first: &Review,
    matching: Option<usize>,
    loaded: Option<usize>,
) -> anyhow::Result<(usize, usize)> {
    let req = sandbox_admission::admission::decode(&first.body)
        .map_err(|e| anyhow::anyhow!("review {}: {e}", first.uid))?;
    let files = PolicySource::Embedded
        .read()
        .map_err(|e| anyhow::anyhow!("embedded policies: {e}"))?;
    let config = PolicyConfig::default();
    let files = sandbox_admission::bench::scaled(files, &req, matching, loaded, &config)?;
    let set = PolicySet::compile(&files, "curve".into(), &config)
        .map_err(|e| anyhow::anyhow!("the scaled set does not load: {e}"))?;
    let judging = set.reference_cases(&req, &Default::default())?.len();
    for f in &files {
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &f.text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok((set.len(), judging))
}

/// Run the curve with `args`' binary, server arguments, protocol and `--curve-rate`; `settings`
/// are the saturated runs' (connections, durations).
pub async fn measure(
    args: &crate::Args,
    sandbox_reviews: &[Review],
    items: Arc<Vec<Item>>,
    settings: &LoadSettings,
) -> anyhow::Result<Value> {
    let (binary, rate) = (&args.binary, args.curve_rate);
    let first = sandbox_reviews
        .first()
        .context("no Sandbox review built from the fixtures")?;
    let tmp = tempfile::tempdir()?;
    let mut points = Vec::new();
    for (label, matching, loaded) in SETS {
        let dir = tmp.path().join(label).join("policies");
        let (policies, judging) = write_set(&dir, first, matching, loaded)?;
        let mut server_args = vec!["--policies".to_string(), dir.display().to_string()];
        server_args.extend(args.server_args.iter().cloned());
        let certs = tmp.path().join(label).join("certs");
        let server = spawn::server(binary, &certs, &server_args)?;
        let target = Target {
            name: "sandbox-admission".into(),
            addr: server.addr,
            connector: client::connector(&certs.join("ca.crt"), args.h2)?,
            check_uid: true,
        };
        let pid = Some(server.child.id());
        let rss = spawn::RssSampler::start(server.child.id());
        let saturated = client::run(&target, items.clone(), settings, pid).await;
        let fixed = LoadSettings {
            rate: Some(rate),
            ..settings.clone()
        };
        let at_rate = client::run(&target, items.clone(), &fixed, pid).await;
        let (peak_hwm_mib, _) = rss.peaks_mib();
        drop(rss);
        spawn::stop(server);
        let (saturated, at_rate): (Stats, Stats) = (saturated?, at_rate?);
        if !args.json {
            eprintln!(
                "curve {label} ({judging} of {policies} policies judge the first review, peak RSS {peak_hwm_mib:.1} MiB): saturated {}\n  at {rate}/s {}",
                saturated.line(),
                at_rate.line()
            );
        }
        points.push(json!({
            "set": label,
            "matching": matching,
            "loaded": loaded,
            "policies": policies,
            "judging_first_review": judging,
            "saturated": saturated.to_json(),
            "at_rate": at_rate.to_json(),
            "server_peak_vmhwm_mib": peak_hwm_mib,
        }));
    }
    Ok(json!({"rate": rate, "points": points}))
}
