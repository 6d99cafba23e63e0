//! Denials over the last hour by policy, as an inline SVG drawn on the server (no script, nothing
//! fetched): one stacked bar per minute, one colour per policy, a `<title>` on each segment.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};

use super::page::esc;
use crate::audit::DecisionRecord;
use crate::policy::Action;

const BUCKETS: i64 = 60;
const PALETTE: [&str; 8] = [
    "#b00020", "#1f6feb", "#9a6700", "#8250df", "#1a7f37", "#cf222e", "#0969da", "#6e7781",
];
const W: i64 = 720;
const H: i64 = 160;

pub fn denials_svg(records: &[&DecisionRecord], now: DateTime<Utc>) -> String {
    let start = now - Duration::minutes(BUCKETS);
    // bucket -> policy -> denials
    let mut buckets: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); BUCKETS as usize];
    let mut policies: BTreeMap<String, u64> = BTreeMap::new();
    for r in records.iter().filter(|r| !r.allowed && r.time > start) {
        let minute = (r.time - start).num_minutes().clamp(0, BUCKETS - 1);
        let Some(bucket) = buckets.get_mut(usize::try_from(minute).unwrap_or(0)) else {
            continue;
        };
        let denying: Vec<&str> = r
            .policies
            .iter()
            .filter(|h| h.action == Action::Deny)
            .map(|h| h.policy.as_str())
            .collect();
        // A denial no policy claims (mutation refused, deadline) still counts, as "(other)".
        let names = if denying.is_empty() {
            vec!["(other)"]
        } else {
            denying
        };
        for name in names {
            *bucket.entry(name.to_owned()).or_default() += 1;
            *policies.entry(name.to_owned()).or_default() += 1;
        }
    }
    let colour: BTreeMap<&str, &str> = policies
        .keys()
        .enumerate()
        .map(|(i, p)| (p.as_str(), PALETTE[i % PALETTE.len()]))
        .collect();
    let max = buckets
        .iter()
        .map(|b| b.values().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let (left, bottom) = (40, 20);
    let plot_h = H - bottom - 10;
    let bar_w = (W - left) / BUCKETS;
    let mut svg = format!(
        "<svg id=\"denials-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"denials per minute by policy\">\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{W}\" y2=\"{}\" stroke=\"#999\"/>\
         <text x=\"{}\" y=\"16\" font-size=\"11\" text-anchor=\"end\">{max}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">0</text>",
        H - bottom,
        H - bottom,
        left - 4,
        left - 4,
        H - bottom
    );
    for (i, bucket) in buckets.iter().enumerate() {
        let x = left + i64::try_from(i).unwrap_or(0) * bar_w;
        let mut y = H - bottom;
        for (policy, n) in bucket {
            let n_i = i64::try_from(*n).unwrap_or(i64::MAX);
            let max_i = i64::try_from(max).unwrap_or(i64::MAX);
            let h = (n_i.saturating_mul(plot_h) / max_i).max(2);
            y -= h;
            let minute = start + Duration::minutes(i64::try_from(i).unwrap_or(0));
            let _ = write!(
                svg,
                "<rect class=\"bar\" x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{h}\" fill=\"{}\"><title>{} at {}: {n}</title></rect>",
                (bar_w - 1).max(1),
                colour.get(policy.as_str()).copied().unwrap_or("#6e7781"),
                esc(policy),
                minute.format("%H:%M"),
            );
        }
    }
    for (i, label) in [
        (0, start),
        (BUCKETS / 2, start + Duration::minutes(BUCKETS / 2)),
        (BUCKETS, now),
    ] {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{}</text>",
            left + i * bar_w,
            H - 4,
            label.format("%H:%M")
        );
    }
    svg.push_str("</svg><p id=\"legend\">");
    if policies.is_empty() {
        svg.push_str("no denials in the last hour");
    }
    for (policy, n) in &policies {
        let _ = write!(
            svg,
            "<span style=\"color:{}\">&#9632;</span> {} ({n}) ",
            colour.get(policy.as_str()).copied().unwrap_or("#6e7781"),
            esc(policy)
        );
    }
    svg.push_str("</p>");
    svg
}
