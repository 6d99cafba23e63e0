//! Text and JSON output: each figure next to the no-op ceiling, and the DESIGN budgets.

use serde_json::{Value, json};

use crate::stats::Stats;

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

/// CPU (responder + load generator) per review: on a machine this harness saturates alone, the
/// throughput ratio tends to the inverse ratio of these; other tenants disturb it far less.
fn cpu_total(s: &Stats) -> Option<f64> {
    Some(
        Stats::cpu_us_per_review(s.server_cpu, s.ok())?
            + Stats::cpu_us_per_review(s.client_cpu, s.ok())?,
    )
}

fn cpu_ratio(ours: &Stats, noop: &Stats) -> Option<f64> {
    ratio(cpu_total(noop)?, cpu_total(ours)?)
}

pub fn scenario_json(name: &str, rate: Option<f64>, ours: &Stats, noop: Option<&Stats>) -> Value {
    let ratios = noop.map(|n| {
        json!({
            "throughput": ratio(ours.throughput(), n.throughput()),
            "throughput_from_cpu": cpu_ratio(ours, n),
            "p50": ratio(ours.us(0.5), n.us(0.5)),
            "p99": ratio(ours.us(0.99), n.us(0.99)),
        })
    });
    json!({
        "name": name,
        "rate": rate,
        "server": ours.to_json(),
        "noop": noop.map(Stats::to_json),
        "ratio_server_to_noop": ratios,
    })
}

pub fn scenario_text(name: &str, ours: &Stats, noop: Option<&Stats>) -> String {
    let mut out = format!("{name}\n  server {}", ours.line());
    if let Some(n) = noop {
        out.push_str(&format!("\n  no-op  {}", n.line()));
        out.push_str(&format!(
            "\n  ratio  throughput {:.2} (from CPU per review {:.2})  p50 {:.2}x  p99 {:.2}x",
            ratio(ours.throughput(), n.throughput()).unwrap_or(0.0),
            cpu_ratio(ours, n).unwrap_or(f64::NAN),
            ratio(ours.us(0.5), n.us(0.5)).unwrap_or(0.0),
            ratio(ours.us(0.99), n.us(0.99)).unwrap_or(0.0),
        ));
    }
    if !ours.errors.is_empty() {
        out.push_str(&format!("\n  errors {:?}", ours.errors));
    }
    out
}

fn scenario<'a>(report: &'a Value, prefix: &str) -> Option<&'a Value> {
    report["scenarios"].as_array()?.iter().find(|s| {
        s["name"]
            .as_str()
            .is_some_and(|n| n == prefix || n.starts_with(&format!("{prefix}@")))
    })
}

fn check(name: &str, value: Option<f64>, limit: f64, at_least: bool, unit: &str) -> Value {
    let verdict = value.map(|v| if at_least { v >= limit } else { v < limit });
    json!({
        "budget": name,
        "value": value,
        "limit": limit,
        "unit": unit,
        "met": verdict,
    })
}

/// The DESIGN.md budgets, each with the measured value (None when not measured in this run).
pub fn budgets(report: &Value) -> Value {
    let thr = |p: &str| {
        scenario(report, p)
            .filter(|s| s["rate"].is_null())
            .and_then(|s| s["ratio_server_to_noop"]["throughput"].as_f64())
    };
    let rate_p99 = report["scenarios"].as_array().and_then(|all| {
        all.iter()
            .filter(|s| s["rate"].as_f64().is_some_and(|r| r >= 1000.0))
            .filter_map(|s| s["server"]["latency_us"]["p99"].as_f64())
            .reduce(f64::max)
    });
    json!([
        check(
            "/mutate throughput vs no-op",
            thr("mutate"),
            0.60,
            true,
            "ratio"
        ),
        check(
            "/validate Sandbox (default policies) vs no-op",
            thr("validate-sandbox"),
            0.35,
            true,
            "ratio"
        ),
        check(
            "p99 at 1,000 reviews/s",
            rate_p99.map(|us| us / 1000.0),
            1.0,
            false,
            "ms"
        ),
        check(
            "peak RSS (VmHWM)",
            report["memory"]["server_peak_vmhwm_mib"].as_f64(),
            40.0,
            false,
            "MiB"
        ),
        check(
            "time to ready (reported, median)",
            report["time_to_ready"]["reported_ms_median"].as_f64(),
            200.0,
            false,
            "ms"
        ),
        check(
            "reload of 100 policies (median)",
            report["reload"]["reload_median_ms"].as_f64(),
            500.0,
            false,
            "ms"
        ),
    ])
}

pub fn summary_text(report: &Value, budgets: &Value) -> String {
    let mut out = String::new();
    let r = &report["time_to_ready"];
    if !r.is_null() {
        out.push_str(&format!(
            "time to ready: reported {} ms median ({} max), wall {:.1} ms median, over {} starts\n",
            r["reported_ms_median"],
            r["reported_ms_max"],
            r["wall_ms_median"].as_f64().unwrap_or(0.0),
            r["runs"]
        ));
    }
    let m = &report["memory"];
    out.push_str(&format!(
        "peak RSS: server VmHWM {:.1} MiB (sampled VmRSS {:.1}), no-op {:.1} MiB\n",
        m["server_peak_vmhwm_mib"].as_f64().unwrap_or(f64::NAN),
        m["server_peak_vmrss_mib"].as_f64().unwrap_or(f64::NAN),
        m["noop_peak_vmhwm_mib"].as_f64().unwrap_or(f64::NAN),
    ));
    let rl = &report["reload"];
    if let Some(e) = rl["error"].as_str() {
        out.push_str(&format!("reload of 100 policies: not measured: {e}\n"));
    } else if !rl.is_null() {
        out.push_str(&format!(
            "reload of 100 policies: median {:.1} ms, max {:.1} ms (ready with 100 policies in {} ms)\n",
            rl["reload_median_ms"].as_f64().unwrap_or(0.0),
            rl["reload_max_ms"].as_f64().unwrap_or(0.0),
            rl["ready_with_100_policies_ms"],
        ));
    }
    out.push_str("budgets (DESIGN.md):\n");
    for b in budgets.as_array().into_iter().flatten() {
        let verdict = match b["met"].as_bool() {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        let value = b["value"]
            .as_f64()
            .map_or("-".to_string(), |v| format!("{v:.2}"));
        let cmp = if b["budget"].as_str().unwrap_or("").contains("vs no-op") {
            "≥"
        } else {
            "<"
        };
        out.push_str(&format!(
            "  {:<48} {:>8} {} (limit {cmp} {} {})\n",
            b["budget"].as_str().unwrap_or(""),
            value,
            verdict,
            b["limit"],
            b["unit"].as_str().unwrap_or("")
        ));
    }
    out
}
