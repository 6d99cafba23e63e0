//! `wgpolicyk8s.io/v1alpha2` PolicyReports: the format Kyverno and Kubewarden write and Policy
//! Reporter reads, so the background audit's results (and `scan`'s, for CI) show up in the
//! tools cluster admins already use.
//!
//! One report per namespace (a `ClusterPolicyReport` for cluster-scoped objects). A result is
//! one violation of one policy by one object; objects without any count as `pass` in the
//! summary only, so a report stays small in a healthy namespace. A report holds at most `cap`
//! results; when there are more it keeps the first ones (failures before warnings), still counts
//! all of them in its summary, and says so in an annotation.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::policy::{Action, PolicyHit};

pub const API_VERSION: &str = "wgpolicyk8s.io/v1alpha2";
pub const NAMESPACED_KIND: &str = "PolicyReport";
pub const CLUSTER_KIND: &str = "ClusterPolicyReport";
/// `results[].source` and the report's name.
pub const SOURCE: &str = "sandbox-admission";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    pub api_version: String,
    pub kind: String,
    pub metadata: ReportMetadata,
    #[serde(default)]
    pub summary: Summary,
    #[serde(default)]
    pub results: Vec<ReportResult>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportMetadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    #[serde(default)]
    pub pass: u64,
    #[serde(default)]
    pub fail: u64,
    #[serde(default)]
    pub warn: u64,
    #[serde(default)]
    pub error: u64,
    #[serde(default)]
    pub skip: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub policy: String,
    /// `pass`, `fail`, `warn`, `error` or `skip`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scored: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceRef>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    pub seconds: i64,
    #[serde(default)]
    pub nanos: i32,
}

/// The judged object, as an ObjectReference.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRef {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

impl ResourceRef {
    /// The reference of a Kubernetes object (missing fields left empty).
    pub fn of(object: &serde_json::Value) -> ResourceRef {
        let at = |p: &str| {
            object
                .pointer(p)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        ResourceRef {
            api_version: at("/apiVersion"),
            kind: at("/kind"),
            namespace: at("/metadata/namespace"),
            name: at("/metadata/name"),
            uid: at("/metadata/uid"),
        }
    }
}

/// One object and what the policies found in it.
#[derive(Debug, Clone)]
pub struct Judged {
    pub resource: ResourceRef,
    pub hits: Vec<PolicyHit>,
}

/// The PolicyReport `result` of one hit: a deny violation fails, a warn violation warns, a
/// dry-run violation fails too (recording it is what dry-run is for; the enforcement action is
/// in `properties`), and a policy that could not be evaluated is an error.
pub fn result_of(hit: &PolicyHit) -> &'static str {
    if hit.is_evaluation_failure() {
        return "error";
    }
    match hit.action {
        Action::Deny | Action::Dryrun => "fail",
        Action::Warn => "warn",
    }
}

/// Options of [`build`].
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Most results per report.
    pub cap: usize,
    /// The product's label/annotation prefix (`sandbox-admission.io/`).
    pub prefix: String,
    pub now: DateTime<Utc>,
}

/// The reports for `judged`, one per namespace, sorted by namespace (the cluster report, if
/// any, first). `namespaces` names namespaces that get a report even with nothing in them, so a
/// namespace whose last violation was fixed gets an empty report instead of a stale one.
pub fn build<'a>(
    judged: impl IntoIterator<Item = &'a Judged>,
    namespaces: impl IntoIterator<Item = String>,
    options: &BuildOptions,
) -> Vec<PolicyReport> {
    let mut by_namespace: BTreeMap<String, (Summary, Vec<ReportResult>)> = namespaces
        .into_iter()
        .map(|ns| (ns, Default::default()))
        .collect();
    let timestamp = Timestamp {
        seconds: options.now.timestamp(),
        nanos: 0,
    };
    for judged in judged {
        let (summary, results) = by_namespace
            .entry(judged.resource.namespace.clone())
            .or_default();
        if judged.hits.is_empty() {
            summary.pass += 1;
            continue;
        }
        for hit in &judged.hits {
            let result = result_of(hit);
            match result {
                "fail" => summary.fail += 1,
                "warn" => summary.warn += 1,
                _ => summary.error += 1,
            }
            results.push(ReportResult {
                source: Some(SOURCE.into()),
                policy: hit.policy.clone(),
                result: result.into(),
                message: Some(hit.message.clone()),
                scored: Some(true),
                timestamp: Some(timestamp),
                resources: vec![judged.resource.clone()],
                properties: BTreeMap::from([(
                    "enforcementAction".to_owned(),
                    hit.action.as_str().to_owned(),
                )]),
            });
        }
    }
    by_namespace
        .into_iter()
        .map(|(namespace, (summary, mut results))| {
            let mut annotations = BTreeMap::new();
            if results.len() > options.cap {
                let total = results.len();
                // Failures and errors first: what is kept is what matters most.
                results.sort_by_key(|r| u8::from(r.result == "warn"));
                results.truncate(options.cap);
                annotations.insert(
                    format!("{}results-truncated", options.prefix),
                    format!(
                        "{} of {total} results kept (audit.maxResultsPerReport); the summary counts all",
                        options.cap
                    ),
                );
            }
            PolicyReport {
                api_version: API_VERSION.into(),
                kind: if namespace.is_empty() {
                    CLUSTER_KIND
                } else {
                    NAMESPACED_KIND
                }
                .into(),
                metadata: ReportMetadata {
                    name: SOURCE.into(),
                    namespace: (!namespace.is_empty()).then_some(namespace),
                    labels: BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_owned(),
                        SOURCE.to_owned(),
                    )]),
                    annotations,
                },
                summary,
                results,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(policy: &str, action: Action, message: &str) -> PolicyHit {
        PolicyHit {
            policy: policy.into(),
            action,
            message: message.into(),
        }
    }

    fn object(ns: &str, name: &str, hits: Vec<PolicyHit>) -> Judged {
        Judged {
            resource: ResourceRef {
                api_version: "agents.x-k8s.io/v1beta1".into(),
                kind: "Sandbox".into(),
                namespace: ns.into(),
                name: name.into(),
                uid: String::new(),
            },
            hits,
        }
    }

    fn options(cap: usize) -> BuildOptions {
        BuildOptions {
            cap,
            prefix: "sandbox-admission.io/".into(),
            now: DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
        }
    }

    #[test]
    fn one_report_per_namespace_with_summary() {
        let judged = vec![
            object("a", "ok", vec![]),
            object(
                "a",
                "bad",
                vec![
                    hit("p", Action::Deny, "no"),
                    hit("w", Action::Warn, "careful"),
                    hit(
                        "e",
                        Action::Deny,
                        "policy evaluation failed, refused (fail closed): x",
                    ),
                ],
            ),
            object("b", "quiet", vec![hit("d", Action::Dryrun, "noted")]),
        ];
        let reports = build(&judged, ["c".to_string()], &options(100));
        let names: Vec<_> = reports
            .iter()
            .map(|r| r.metadata.namespace.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        let a = &reports[0];
        assert_eq!(a.kind, "PolicyReport");
        assert_eq!(
            a.summary,
            Summary {
                pass: 1,
                fail: 1,
                warn: 1,
                error: 1,
                skip: 0
            }
        );
        assert_eq!(a.results[0].resources[0].name, "bad");
        assert_eq!(reports[1].results[0].result, "fail");
        assert_eq!(
            reports[1].results[0].properties["enforcementAction"],
            "dryrun"
        );
        assert!(reports[2].results.is_empty());
        assert_eq!(reports[2].summary, Summary::default());
    }

    #[test]
    fn a_report_over_the_cap_says_so() {
        let hits: Vec<PolicyHit> = (0..5)
            .map(|i| hit(&format!("w{i}"), Action::Warn, "w"))
            .chain([hit("deny", Action::Deny, "d")])
            .collect();
        let reports = build(&[object("a", "x", hits)], [], &options(2));
        let a = &reports[0];
        assert_eq!(a.results.len(), 2);
        assert_eq!(a.results[0].policy, "deny", "failures are kept first");
        assert_eq!(a.summary.warn, 5);
        assert!(
            a.metadata.annotations["sandbox-admission.io/results-truncated"]
                .starts_with("2 of 6 results kept")
        );
    }
}
