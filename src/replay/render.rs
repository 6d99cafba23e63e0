//! The text report of `replay`: totals first, then per policy and namespace, then examples.

use std::fmt::Write as _;

use super::Report;
use crate::disagreement::Direction;

fn table(rows: &[Vec<String>]) -> String {
    let mut widths = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(old) if *old < w => *old = w,
                Some(_) => {}
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn heading(d: Direction) -> &'static str {
    match d {
        Direction::NewDenial => "would newly deny",
        Direction::GoneDenial => "would no longer deny",
        Direction::NewWarning => "new warning",
        Direction::GoneWarning => "warning gone",
    }
}

pub fn text(r: &Report, examples: usize) -> String {
    let mut out = String::new();
    let c = &r.counts;
    let _ = writeln!(
        out,
        "replayed {} /validate record(s) of {} against {}",
        r.replayed, r.records, r.policies
    );
    if r.without_object > 0 {
        let _ = writeln!(
            out,
            "{} /validate record(s) carry no object and were NOT replayed (log with --log-objects / decisionLog.includeObjects)",
            r.without_object
        );
    }
    for (endpoint, n) in &r.skipped {
        let _ = writeln!(
            out,
            "{n} {endpoint} record(s) skipped (not judged by policies)"
        );
    }
    let _ = writeln!(
        out,
        "allowed→denied: {}  denied→allowed: {}  new warnings: {}  gone warnings: {}  unchanged: {}",
        c.allowed_to_denied, c.denied_to_allowed, c.new_warnings, c.gone_warnings, c.unchanged
    );
    if !r.by_policy.is_empty() {
        out.push('\n');
        let mut rows = vec![vec![
            "POLICY".to_string(),
            "NEW DENIALS".into(),
            "GONE DENIALS".into(),
            "NEW WARNINGS".into(),
            "GONE WARNINGS".into(),
        ]];
        for (policy, p) in &r.by_policy {
            rows.push(vec![
                policy.clone(),
                p.new_denials.to_string(),
                p.gone_denials.to_string(),
                p.new_warnings.to_string(),
                p.gone_warnings.to_string(),
            ]);
        }
        out.push_str(&table(&rows));
    }
    let touched: Vec<_> = r
        .by_namespace
        .iter()
        .filter(|(_, n)| {
            n.allowed_to_denied + n.denied_to_allowed + n.new_warnings + n.gone_warnings > 0
        })
        .collect();
    if !touched.is_empty() {
        out.push('\n');
        let mut rows = vec![vec![
            "NAMESPACE".to_string(),
            "ALLOWED→DENIED".into(),
            "DENIED→ALLOWED".into(),
            "NEW WARNINGS".into(),
            "GONE WARNINGS".into(),
        ]];
        for (ns, n) in touched {
            let shown = if ns.is_empty() { "(cluster)" } else { ns };
            rows.push(vec![
                shown.to_string(),
                n.allowed_to_denied.to_string(),
                n.denied_to_allowed.to_string(),
                n.new_warnings.to_string(),
                n.gone_warnings.to_string(),
            ]);
        }
        out.push_str(&table(&rows));
    }
    for (policy, p) in &r.by_policy {
        for (direction, list) in &p.examples {
            let _ = writeln!(
                out,
                "\n[{policy}] {} ({}):",
                heading(*direction),
                list.len()
            );
            for e in list.iter().take(examples) {
                let _ = writeln!(out, "  {} (uid {}): {}", e.object, e.uid, e.message);
            }
            if list.len() > examples {
                let _ = writeln!(out, "  … and {} more", list.len() - examples);
            }
        }
    }
    let flips: Vec<_> = r.changed.iter().filter(|x| x.flip.is_some()).collect();
    if !flips.is_empty() {
        out.push_str("\nFLIPS\n");
        for x in flips {
            let flip = x.flip.map(|f| f.as_str()).unwrap_or_default();
            let name = if x.namespace.is_empty() {
                x.name.clone()
            } else {
                format!("{}/{}", x.namespace, x.name)
            };
            let _ = writeln!(
                out,
                "  {flip}  {} {name} {} by {} (uid {})",
                x.kind, x.operation, x.user, x.uid
            );
            if let Some(caveat) = &x.caveat {
                let _ = writeln!(out, "    note: {caveat}");
            }
        }
    }
    if !r.not_replayed.is_empty() {
        out.push_str("\nNOT REPLAYED\n");
        for n in &r.not_replayed {
            let name = if n.namespace.is_empty() {
                n.name.clone()
            } else {
                format!("{}/{}", n.namespace, n.name)
            };
            let _ = writeln!(out, "  {} {name} (uid {}): {}", n.kind, n.uid, n.reason);
        }
    }
    for m in &r.malformed {
        let _ = writeln!(out, "skipped malformed line {m}");
    }
    out
}
