//! The shadow set's cost to live answers: the same review mix, at the same rate, against two
//! servers started alike except that one judges a shadow set (`--shadow-policies`): the shipped
//! policies with every `warn` turned into `deny`, so that warned reviews disagree and the
//! shadow path records as well as evaluates. Rounds alternate between the two servers, so that
//! other load on a shared machine falls on both.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde_json::{Value, json};

use crate::client::{self, Item, LoadSettings, Target};
use crate::reload::http_get;
use crate::spawn;
use crate::stats::Stats;

fn metric_sum(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The shipped policies (tests left out) with every warning made a denial.
fn tightened(dir: &Path, repo_policies: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for e in std::fs::read_dir(repo_policies)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with("_test.rego") || !(name.ends_with(".rego") || name.ends_with(".yaml")) {
            continue;
        }
        let text = std::fs::read_to_string(e.path())?;
        let text = if name.ends_with(".yaml") {
            text.replace("enforcementAction: warn", "enforcementAction: deny")
        } else {
            text
        };
        std::fs::write(dir.join(&name), text)?;
    }
    Ok(())
}

pub async fn measure(
    binary: &Path,
    repo_policies: &Path,
    extra: &[String],
    items: Arc<Vec<Item>>,
    settings: &LoadSettings,
    h2: bool,
    rounds: usize,
) -> anyhow::Result<Value> {
    let tmp = tempfile::tempdir()?;
    let shadow_dir = tmp.path().join("shadow");
    tightened(&shadow_dir, repo_policies)?;
    let plain = spawn::server(binary, &tmp.path().join("plain-certs"), extra)?;
    let mut with_args = extra.to_vec();
    with_args.extend(["--shadow-policies".into(), shadow_dir.display().to_string()]);
    let shadowed = spawn::server(binary, &tmp.path().join("shadow-certs"), &with_args)?;
    let target = |s: &spawn::Spawned, certs: &str| -> anyhow::Result<Target> {
        Ok(Target {
            name: "sandbox-admission".into(),
            addr: s.addr,
            connector: client::connector(&tmp.path().join(certs).join("ca.crt"), h2)?,
            check_uid: true,
        })
    };
    let (t_plain, t_shadow) = (
        target(&plain, "plain-certs")?,
        target(&shadowed, "shadow-certs")?,
    );
    let (p_pid, s_pid) = (plain.child.id(), shadowed.child.id());
    let mut without = Stats::new();
    let mut with = Stats::new();
    for _ in 0..rounds.max(1) {
        without.merge_run(client::run(&t_plain, items.clone(), settings, Some(p_pid)).await?);
        with.merge_run(client::run(&t_shadow, items.clone(), settings, Some(s_pid)).await?);
    }
    let health = shadowed.health.context("no health address")?;
    let metrics = http_get(health, "/metrics")?;
    spawn::stop(plain);
    spawn::stop(shadowed);
    Ok(json!({
        "rate": settings.rate,
        "without_shadow": without.to_json(),
        "with_shadow": with.to_json(),
        "p99_us_without": without.us(0.99),
        "p99_us_with": with.us(0.99),
        "shadow_evaluations": metric_sum(&metrics, "sandbox_admission_shadow_evaluations_total "),
        "shadow_dropped": metric_sum(&metrics, "sandbox_admission_shadow_dropped_total "),
        "shadow_disagreements": metric_sum(&metrics, "sandbox_admission_shadow_disagreements_total{"),
    }))
}
