//! Rendering `audit` results for people: aligned tables, UTC times to the second.

use std::fmt::Write as _;

use super::DecisionRecord;
use super::query::{GroupCount, Summary};

/// Columns padded to their widest cell; the last column is never padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ");
            }
        }
        out.push('\n');
    }
    out
}

fn dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

/// The policies that fired, `name(action)`; for a refusal no policy explains, its message.
fn policies_cell(r: &DecisionRecord) -> String {
    if !r.policies.is_empty() {
        let names: Vec<String> = r
            .policies
            .iter()
            .map(|h| format!("{}({})", h.policy, h.action))
            .collect();
        return names.join(",");
    }
    match (&r.message, r.mutations.is_empty()) {
        (Some(m), _) => m.lines().next().unwrap_or_default().to_owned(),
        (None, false) => format!("mutated: {}", r.mutations.join(", ")),
        (None, true) => "-".into(),
    }
}

fn object_cell(r: &DecisionRecord) -> String {
    match (r.namespace.is_empty(), r.name.is_empty()) {
        (true, _) => dash(&r.name),
        (false, true) => format!("{}/-", r.namespace),
        (false, false) => format!("{}/{}", r.namespace, r.name),
    }
}

/// The default `audit` output: one row per decision.
pub fn decisions_table(records: &[DecisionRecord]) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                r.decision.clone(),
                r.endpoint.clone(),
                r.operation.clone(),
                dash(&r.kind),
                object_cell(r),
                dash(&r.user),
                policies_cell(r),
            ]
        })
        .collect();
    table(
        &[
            "TIME", "DECISION", "ENDPOINT", "OP", "KIND", "OBJECT", "USER", "POLICIES",
        ],
        &rows,
    )
}

fn groups_table(title: &str, groups: &[GroupCount]) -> String {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                dash(&g.name),
                g.total.to_string(),
                g.denied.to_string(),
                g.warned.to_string(),
                g.allowed.to_string(),
            ]
        })
        .collect();
    table(&[title, "TOTAL", "DENIED", "WARNED", "ALLOWED"], &rows)
}

/// `audit --summary`: totals, then per policy, namespace and user, then the top denial messages.
pub fn summary_text(s: &Summary) -> String {
    let mut out = String::new();
    let span = match (s.first, s.last) {
        (Some(a), Some(b)) => format!(
            " from {} to {}",
            a.format("%Y-%m-%dT%H:%M:%SZ"),
            b.format("%Y-%m-%dT%H:%M:%SZ")
        ),
        _ => String::new(),
    };
    let count = |k: &str| s.decisions.get(k).copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "{} decisions{span}: {} denied, {} warned, {} allowed\n",
        s.total,
        count("denied"),
        count("warned"),
        count("allowed")
    );
    let policy_rows: Vec<Vec<String>> = s
        .policies
        .iter()
        .map(|p| {
            vec![
                p.policy.clone(),
                p.total.to_string(),
                p.deny.to_string(),
                p.warn.to_string(),
                p.dryrun.to_string(),
            ]
        })
        .collect();
    if policy_rows.is_empty() {
        out.push_str("No policy fired.\n");
    } else {
        out.push_str(&table(
            &["POLICY", "HITS", "DENY", "WARN", "DRYRUN"],
            &policy_rows,
        ));
    }
    out.push('\n');
    out.push_str(&groups_table("NAMESPACE", &s.namespaces));
    out.push('\n');
    out.push_str(&groups_table("USER", &s.users));
    out.push('\n');
    if s.top_denials.is_empty() {
        out.push_str("No denials.\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .top_denials
            .iter()
            .map(|m| vec![m.count.to_string(), m.message.replace('\n', " ")])
            .collect();
        out.push_str(&table(&["COUNT", "TOP DENIAL MESSAGES"], &rows));
    }
    out
}
