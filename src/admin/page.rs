//! HTML of the admin page, rendered on the server. Every value from a record goes through
//! [`esc`]; nothing is ever inserted raw.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::audit::DecisionRecord;
use crate::background::audit::AuditState;
use crate::disagreement::SHADOW_ENDPOINT;
use crate::metrics::ResultLabels;
use crate::pipeline::Admitter;
use crate::policy::PolicyStore;

/// Escape for HTML text and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The filters of the recent-decisions table (query parameters of `/`).
#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    pub decision: Option<String>,
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    /// `mutate`, `validate` or `shadow`; empty: the decisions (not shadow records).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Substring of the name, user, uid or a message.
    #[serde(default)]
    pub q: Option<String>,
}

fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl Filters {
    fn matches(&self, r: &DecisionRecord) -> bool {
        let endpoint_ok = match set(&self.endpoint) {
            Some(e) => r.endpoint == e,
            None => r.endpoint != SHADOW_ENDPOINT,
        };
        endpoint_ok
            && set(&self.decision).is_none_or(|d| r.decision == d)
            && set(&self.policy).is_none_or(|p| r.policies.iter().any(|h| h.policy == p))
            && set(&self.namespace).is_none_or(|n| r.namespace == n)
            && set(&self.kind).is_none_or(|k| r.kind.eq_ignore_ascii_case(k))
            && set(&self.q).is_none_or(|q| {
                r.name.contains(q)
                    || r.user.contains(q)
                    || r.uid.contains(q)
                    || r.policies.iter().any(|h| h.message.contains(q))
            })
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.denied{color:#b00020;font-weight:600}.warned{color:#9a6700}.allowed{color:#1a7f37}\
.err{color:#b00020;white-space:pre-wrap}td.n{text-align:right}pre{background:#f6f8fa;padding:.5em;overflow:auto;max-height:30em}\
form label{margin-right:.75em}h2{margin-top:1.5em;border-bottom:1px solid #ddd}nav a{margin-right:1em}";

fn shell(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head>\
         <body><nav><a href=\"/\">sandbox-admission</a></nav>{body}</body></html>",
        esc(title)
    )
}

pub fn not_found(message: &str) -> String {
    shell("not found", &format!("<p>{}</p>", esc(message)))
}

pub(super) fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn object(r: &DecisionRecord) -> String {
    if r.namespace.is_empty() {
        r.name.clone()
    } else {
        format!("{}/{}", r.namespace, r.name)
    }
}

fn store_section(out: &mut String, title: &str, store: &PolicyStore, reloads: (i64, i64)) {
    let status = store.status();
    let _ = write!(
        out,
        "<h2>{}</h2><table><tr><th>source</th><td>{}</td></tr><tr><th>policies</th><td>{}</td></tr>\
         <tr><th>reloads</th><td>{} succeeded, {} failed</td></tr><tr><th>last reload error</th><td class=\"err\">{}</td></tr></table>",
        esc(title),
        esc(&status.source),
        esc(&store.current().policy_names().join(", ")),
        reloads.0,
        reloads.1,
        esc(status.last_error.as_deref().unwrap_or("none")),
    );
}

fn count(
    family: &prometheus_client::metrics::family::Family<
        ResultLabels,
        prometheus_client::metrics::counter::Counter,
    >,
    result: &str,
) -> i64 {
    let n = family
        .get_or_create(&ResultLabels {
            result: result.into(),
        })
        .get();
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn decision_rows(out: &mut String, rows: &[(u64, DecisionRecord)]) {
    out.push_str(
        "<table id=\"decisions\"><tr><th>time</th><th>decision</th><th>endpoint</th><th>op</th><th>kind</th>\
         <th>object</th><th>user</th><th>policies</th></tr>",
    );
    for (seq, r) in rows {
        let policies: Vec<String> = r
            .policies
            .iter()
            .map(|h| format!("{}({})", esc(&h.policy), h.action.as_str()))
            .collect();
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"{}\"><a class=\"decision\" data-uid=\"{}\" href=\"/decision/{seq}\">{}</a></td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(&r.time),
            esc(&r.decision),
            esc(&r.uid),
            esc(&r.decision),
            esc(&r.endpoint),
            esc(&r.operation),
            esc(&r.kind),
            esc(&object(r)),
            esc(&r.user),
            policies.join(", "),
        );
    }
    out.push_str("</table>");
}

/// Rows shown at most in each table.
const MAX_ROWS: usize = 200;

pub fn index(a: &Admitter, audit: Option<&AuditState>, f: &Filters, now: DateTime<Utc>) -> String {
    let records = a.recent.as_ref().map(|r| r.snapshot()).unwrap_or_default();
    let mut out = String::from("<h1>sandbox-admission: this replica</h1>");
    let denials: Vec<&DecisionRecord> = records
        .iter()
        .map(|(_, r)| r)
        .filter(|r| r.endpoint != SHADOW_ENDPOINT)
        .collect();
    out.push_str("<h2>Denials over the last hour, by policy</h2>");
    out.push_str(&super::chart::denials_svg(&denials, now));

    let _ = write!(
        out,
        "<h2>Recent decisions</h2><form method=\"get\" action=\"/\">{}{}{}{}{}{}<button type=\"submit\">filter</button></form>",
        field("decision", &f.decision),
        field("policy", &f.policy),
        field("namespace", &f.namespace),
        field("kind", &f.kind),
        field("endpoint", &f.endpoint),
        field("q", &f.q),
    );
    let shown: Vec<(u64, DecisionRecord)> = records
        .iter()
        .filter(|(_, r)| f.matches(r))
        .take(MAX_ROWS)
        .cloned()
        .collect();
    let _ = write!(
        out,
        "<p>{} shown of {} kept in memory (newest first; this replica only).</p>",
        shown.len(),
        records.len()
    );
    decision_rows(&mut out, &shown);

    let m = &a.metrics;
    store_section(
        &mut out,
        "Serving policy set",
        &a.policies,
        (
            count(&m.policy_reloads, "success"),
            count(&m.policy_reloads, "failure"),
        ),
    );
    match &a.shadow {
        Some(shadow) => {
            store_section(
                &mut out,
                "Shadow policy set",
                &shadow.store,
                (
                    count(&m.shadow_policy_reloads, "success"),
                    count(&m.shadow_policy_reloads, "failure"),
                ),
            );
            let _ = write!(
                out,
                "<p>{} evaluations, {} skipped (all slots busy).</p><h3>Disagreements</h3>",
                m.shadow_evaluations.get(),
                m.shadow_dropped.get()
            );
            let rows: Vec<(u64, DecisionRecord)> = records
                .iter()
                .filter(|(_, r)| r.endpoint == SHADOW_ENDPOINT)
                .take(MAX_ROWS)
                .cloned()
                .collect();
            out.push_str("<table id=\"shadow\"><tr><th>time</th><th>object</th><th>live</th><th>shadow</th><th>changes</th></tr>");
            for (seq, r) in rows {
                let (live, changes) = match &r.shadow {
                    Some(d) => (
                        d.live_decision.clone(),
                        d.changes
                            .iter()
                            .map(|c| format!("{} {}", esc(&c.policy), c.direction.as_str()))
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    None => (String::new(), String::new()),
                };
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td><a href=\"/decision/{seq}\">{} {}</a></td><td class=\"{}\">{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                    time(&r.time),
                    esc(&r.kind),
                    esc(&object(&r)),
                    esc(&live),
                    esc(&live),
                    esc(&r.decision),
                    esc(&r.decision),
                    changes
                );
            }
            out.push_str("</table>");
        }
        None => out.push_str("<h2>Shadow policy set</h2><p>none (serve --shadow-policies DIR)</p>"),
    }
    super::audit::section(&mut out, audit, &a.config, a.cluster.is_some());
    shell("sandbox-admission", &out)
}

fn field(name: &str, value: &Option<String>) -> String {
    format!(
        "<label>{name} <input name=\"{name}\" value=\"{}\" size=\"12\"></label>",
        esc(value.as_deref().unwrap_or(""))
    )
}

pub fn detail(
    seq: u64,
    r: &DecisionRecord,
    explained: Option<&[Result<crate::policy::PolicyExplanation, String>]>,
) -> String {
    let mut out = format!(
        "<h1>Decision {seq}: <span class=\"{}\">{}</span></h1><table id=\"fields\">",
        esc(&r.decision),
        esc(&r.decision)
    );
    let rows = [
        ("time", time(&r.time)),
        ("uid", r.uid.clone()),
        ("endpoint", r.endpoint.clone()),
        ("operation", r.operation.clone()),
        ("kind", format!("{}/{} {}", r.group, r.version, r.kind)),
        ("object", object(r)),
        ("user", r.user.clone()),
        ("groups", r.groups.join(", ")),
        ("dry run", r.dry_run.to_string()),
        ("latency", format!("{} µs", r.latency_us)),
        ("message", r.message.clone().unwrap_or_default()),
        ("mutations", r.mutations.join(", ")),
    ];
    for (k, v) in rows {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    out.push_str("</table><h2>Policies that fired</h2>");
    if r.policies.is_empty() {
        out.push_str("<p>none</p>");
    } else {
        out.push_str("<table id=\"hits\"><tr><th>policy</th><th>action</th><th>message</th></tr>");
        for h in &r.policies {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&h.policy),
                h.action.as_str(),
                esc(&h.message)
            );
        }
        out.push_str("</table>");
    }
    if let Some(explained) = explained {
        out.push_str(
            "<h2>Explanation</h2><p>The serving policy set, re-run now on the logged object.</p><div id=\"explanation\">",
        );
        for e in explained {
            match e {
                Err(err) => {
                    let _ = write!(out, "<p class=\"err\">{}</p>", esc(err));
                }
                Ok(p) => {
                    for f in &p.firings {
                        let _ = write!(
                            out,
                            "<h3>{} at <code class=\"where\">{}:{}</code></h3><pre>{}</pre><table><tr><th>line</th><th>expression</th><th>values</th></tr>",
                            esc(&p.policy),
                            esc(&f.file),
                            f.line,
                            esc(&f.rule)
                        );
                        for x in &f.expressions {
                            let values: Vec<String> = x
                                .values
                                .iter()
                                .map(|(k, v)| format!("{} = {}", esc(k), esc(&v.to_string())))
                                .collect();
                            let _ = write!(
                                out,
                                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                                x.line,
                                esc(&x.text),
                                values.join("<br>")
                            );
                        }
                        out.push_str("</table>");
                        if !f.inputs.is_empty() {
                            let _ = write!(
                                out,
                                "<p>message built from: <code>{}</code></p>",
                                esc(&f.inputs.join(", "))
                            );
                        }
                    }
                }
            }
        }
        out.push_str("</div>");
    }
    if let Some(d) = &r.shadow {
        let _ = write!(
            out,
            "<h2>Shadow set versus the live answer</h2><p>live: {}; shadow: {}</p><table><tr><th>policy</th><th>direction</th><th>message</th></tr>",
            esc(&d.live_decision),
            esc(&r.decision)
        );
        for c in &d.changes {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.policy),
                c.direction.as_str(),
                esc(&c.message)
            );
        }
        out.push_str("</table>");
    }
    match &r.object {
        Some(object) => {
            out.push_str("<h2>Labels</h2>");
            match object
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
            {
                Some(labels) if !labels.is_empty() => {
                    out.push_str("<table id=\"labels\"><tr><th>key</th><th>value</th></tr>");
                    for (k, v) in labels {
                        let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                        let _ = write!(out, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(&v));
                    }
                    out.push_str("</table>");
                }
                _ => out.push_str("<p>none</p>"),
            }
            let pretty = serde_json::to_string_pretty(object).unwrap_or_default();
            let _ = write!(
                out,
                "<h2>Object</h2><pre id=\"object\">{}</pre>",
                esc(&pretty)
            );
        }
        None => out.push_str(
            "<p>The object is not kept: the server logs objects only with --log-objects.</p>",
        ),
    }
    shell(&format!("decision {seq}"), &out)
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escapes_everything_markup_needs() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}
