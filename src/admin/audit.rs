//! The admin page's view of the background audit: whether this replica holds the audit Lease,
//! and the PolicyReports of the last round it ran, summed by namespace and by policy, with the
//! results each report kept. Names, namespaces and messages come from cluster objects and are
//! escaped like everything else on the page.

use std::fmt::Write as _;

use crate::background::audit::{AuditState, LeaseState, NamespaceSummary};
use crate::config::Config;
use crate::policyreport::Summary;

use super::page::{esc, time};

/// Results listed at most (the reports themselves keep up to `audit.maxResultsPerReport` each).
const MAX_RESULTS: usize = 200;

fn namespace_label(ns: &NamespaceSummary) -> String {
    if ns.namespace.is_empty() {
        "(cluster-scoped)".to_owned()
    } else {
        esc(&ns.namespace)
    }
}

fn counts(s: &Summary) -> String {
    format!(
        "<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
        s.pass, s.fail, s.warn, s.error
    )
}

/// Why no audit runs here, in the words of the setting that would turn it on.
fn why_off(config: &Config, has_cluster: bool) -> &'static str {
    if !config.audit.enabled {
        "No background audit runs on this replica: audit.enabled is false (serve --audit)."
    } else if !has_cluster {
        "No background audit runs on this replica: it needs cluster access, and this server has none."
    } else {
        "No background audit runs on this replica."
    }
}

/// The "Background audit" section; `state` is `None` when this replica runs no audit.
pub fn section(out: &mut String, state: Option<&AuditState>, config: &Config, has_cluster: bool) {
    out.push_str("<h2>Background audit (PolicyReports)</h2><div id=\"audit\">");
    let Some(state) = state else {
        let _ = write!(
            out,
            "<p id=\"audit-lease\">{}</p></div>",
            esc(why_off(config, has_cluster))
        );
        return;
    };
    let lease = esc(&state.lease_name);
    let holder = esc(&state.holder);
    match &state.lease {
        None => {
            let _ = write!(
                out,
                "<p id=\"audit-lease\">The audit is on, but its first round has not run yet: it starts once the watch caches have synced. This replica is {holder}; the Lease is {lease}.</p>"
            );
        }
        Some((at, LeaseState::Held)) => {
            let _ = write!(
                out,
                "<p id=\"audit-lease\">This replica ({holder}) holds the audit Lease {lease} (as of {}): it audits and writes the PolicyReports.</p>",
                time(at)
            );
        }
        Some((at, LeaseState::HeldElsewhere)) => {
            let _ = write!(
                out,
                "<p id=\"audit-lease\">Another replica holds the audit Lease {lease} (as of {}): it writes the PolicyReports, and this replica ({holder}) does not audit. The current reports are in the cluster (sandbox-admission audit --reports --from-cluster).</p>",
                time(at)
            );
        }
        Some((at, LeaseState::Error(e))) => {
            let _ = write!(
                out,
                "<p id=\"audit-lease\" class=\"err\">The audit Lease {lease} could not be read or written at {}; nothing was audited: {}</p>",
                time(at),
                esc(e)
            );
        }
    }
    let Some(round) = &state.last_round else {
        out.push_str("<p>This replica has not audited a round yet.</p></div>");
        return;
    };
    let stale = !matches!(state.lease, Some((_, LeaseState::Held)));
    let _ = write!(
        out,
        "<p id=\"audit-round\">{} round by this replica finished at {} in {} ms: {} objects judged, {} skipped (they do not decode), {} reports applied, {} failed.</p>",
        if stale { "Its last" } else { "The last" },
        time(&round.finished),
        round.duration.as_millis(),
        round.judged,
        round.skipped,
        round.applied,
        round.failed.len(),
    );
    if !round.failed.is_empty() {
        out.push_str("<table id=\"audit-failed\"><tr><th>namespace</th><th>apply error</th></tr>");
        for (ns, e) in &round.failed {
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"err\">{}</td></tr>",
                if ns.is_empty() {
                    "(cluster-scoped)".to_owned()
                } else {
                    esc(ns)
                },
                esc(e)
            );
        }
        out.push_str("</table>");
    }
    if round.namespaces.is_empty() {
        out.push_str("<p>No audited objects: no report was written.</p></div>");
        return;
    }
    out.push_str(
        "<h3>By namespace</h3><p>pass: objects with no violation; fail, warn, error: violations.</p>\
         <table id=\"audit-namespaces\"><tr><th>namespace</th><th>pass</th><th>fail</th><th>warn</th><th>error</th></tr>",
    );
    for ns in &round.namespaces {
        let _ = write!(
            out,
            "<tr><td>{}</td>{}</tr>",
            namespace_label(ns),
            counts(&ns.summary)
        );
    }
    out.push_str("</table><h3>By policy</h3>");
    let by_policy: Vec<(&NamespaceSummary, &String, &Summary)> = round
        .namespaces
        .iter()
        .flat_map(|ns| ns.policies.iter().map(move |(p, s)| (ns, p, s)))
        .collect();
    if by_policy.is_empty() {
        out.push_str("<p>No violations.</p>");
    } else {
        out.push_str(
            "<table id=\"audit-policies\"><tr><th>namespace</th><th>policy</th><th>fail</th><th>warn</th><th>error</th></tr>",
        );
        for (ns, policy, s) in by_policy {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                namespace_label(ns),
                esc(policy),
                s.fail,
                s.warn,
                s.error
            );
        }
        out.push_str("</table>");
    }
    let results: Vec<(&NamespaceSummary, &crate::policyreport::ReportResult)> = round
        .namespaces
        .iter()
        .flat_map(|ns| ns.results.iter().map(move |r| (ns, r)))
        .collect();
    if !results.is_empty() {
        let _ = write!(
            out,
            "<h3>Results</h3><p>{} shown of {} kept in the reports.</p>\
             <table id=\"audit-results\"><tr><th>namespace</th><th>object</th><th>policy</th><th>result</th><th>message</th></tr>",
            results.len().min(MAX_RESULTS),
            results.len()
        );
        for (ns, r) in results.into_iter().take(MAX_RESULTS) {
            let object = r
                .resources
                .iter()
                .map(|o| format!("{} {}", esc(&o.kind), esc(&o.name)))
                .collect::<Vec<_>>()
                .join(", ");
            let class = match r.result.as_str() {
                "fail" | "error" => "denied",
                _ => "warned",
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{object}</td><td>{}</td><td class=\"{class}\">{}</td><td>{}</td></tr>",
                namespace_label(ns),
                esc(&r.policy),
                esc(&r.result),
                esc(r.message.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</div>");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::background::audit::RoundSummary;
    use crate::policyreport::{ReportResult, ResourceRef};

    fn state(lease: Option<LeaseState>, round: Option<RoundSummary>) -> AuditState {
        AuditState {
            lease_name: "sandbox-admission-audit".into(),
            holder: "pod-<1>".into(),
            lease: lease.map(|l| (chrono::DateTime::UNIX_EPOCH, l)),
            last_round: round,
        }
    }

    fn render(state: Option<&AuditState>, config: &Config, has_cluster: bool) -> String {
        let mut out = String::new();
        section(&mut out, state, config, has_cluster);
        out
    }

    #[test]
    fn says_plainly_when_no_audit_runs_and_why() {
        let mut config = Config::embedded().unwrap();
        assert!(render(None, &config, true).contains("audit.enabled is false (serve --audit)"));
        config.audit.enabled = true;
        assert!(render(None, &config, false).contains("it needs cluster access"));
        let waiting = render(Some(&state(None, None)), &config, true);
        assert!(
            waiting.contains("its first round has not run yet"),
            "{waiting}"
        );
        assert!(waiting.contains("pod-&lt;1&gt;"), "{waiting}");
    }

    #[test]
    fn a_lease_error_and_a_lost_lease_are_shown_escaped() {
        let config = Config::embedded().unwrap();
        let error = render(
            Some(&state(Some(LeaseState::Error("<b>403</b>".into())), None)),
            &config,
            true,
        );
        assert!(error.contains("class=\"err\""), "{error}");
        assert!(error.contains("&lt;b&gt;403&lt;/b&gt;"), "{error}");
        assert!(!error.contains("<b>"), "{error}");

        let round = RoundSummary {
            finished: chrono::DateTime::UNIX_EPOCH,
            duration: Duration::from_millis(12),
            judged: 1,
            skipped: 0,
            applied: 0,
            failed: vec![("team-<a>".into(), "409 \"conflict\"".into())],
            namespaces: vec![NamespaceSummary {
                namespace: String::new(),
                summary: Summary {
                    fail: 1,
                    ..Summary::default()
                },
                policies: BTreeMap::from([(
                    "p<x>".to_owned(),
                    Summary {
                        fail: 1,
                        ..Summary::default()
                    },
                )]),
                results: vec![ReportResult {
                    source: None,
                    policy: "p<x>".into(),
                    result: "fail".into(),
                    message: Some("m & <i>".into()),
                    scored: None,
                    timestamp: None,
                    resources: vec![ResourceRef {
                        kind: "Namespace".into(),
                        name: "n\"1".into(),
                        ..ResourceRef::default()
                    }],
                    properties: BTreeMap::new(),
                }],
            }],
        };
        let lost = render(
            Some(&state(Some(LeaseState::HeldElsewhere), Some(round))),
            &config,
            true,
        );
        assert!(
            lost.contains("Another replica holds the audit Lease"),
            "{lost}"
        );
        assert!(lost.contains("Its last round by this replica"), "{lost}");
        assert!(
            lost.contains("<td>team-&lt;a&gt;</td><td class=\"err\">409 &quot;conflict&quot;</td>"),
            "{lost}"
        );
        assert!(lost.contains("<td>(cluster-scoped)</td>"), "{lost}");
        assert!(lost.contains("<td>p&lt;x&gt;</td>"), "{lost}");
        assert!(lost.contains("Namespace n&quot;1"), "{lost}");
        assert!(lost.contains("m &amp; &lt;i&gt;"), "{lost}");
        assert!(
            !lost.contains("<i>") && !lost.contains("<x>") && !lost.contains("<a>"),
            "{lost}"
        );
    }
}
