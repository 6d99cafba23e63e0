//! The background audit: what already runs, judged against the current policy set.
//!
//! Every cached Sandbox, SandboxTemplate, SandboxWarmPool, SandboxClaim and Sandbox pod is
//! judged as `/validate` would judge an UPDATE of it (the object as both `object` and
//! `oldObject`), through the same [`Admitter::decide_within`] the server answers with, every
//! `audit.intervalSeconds` and after every policy reload. Results become one
//! `wgpolicyk8s.io/v1alpha2` PolicyReport per namespace, server-side applied. Only the replica
//! holding the audit Lease audits, so N replicas do not write the same reports N times.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::admission::{AdmissionRequest, Operation};
use crate::cluster::{CachedObject, ClusterAccess, LeaseRequest};
use crate::metrics::ViolationLabels;
use crate::pipeline::{Admitter, Endpoint};
use crate::policyreport::{self, Judged, PolicyReport, ReportResult, ResourceRef, Summary};
use crate::request::{RequestDefaults, request_for};

use super::{SANDBOX_POD_LABEL, audited_kinds};

/// Who the audit's requests are made as (the server's own service account).
pub const AUDIT_USER: &str = "system:serviceaccount:sandbox-admission:sandbox-admission";

#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub interval: Duration,
    pub max_results: usize,
    pub lease: LeaseRequest,
    pub prefix: String,
    pub deadline: Duration,
}

impl AuditSettings {
    /// From configuration; `holder` names this replica (its pod name).
    pub fn from_config(config: &crate::config::Config, holder: String) -> AuditSettings {
        let interval = Duration::from_secs(config.audit.interval_seconds);
        AuditSettings {
            interval,
            max_results: config.audit.max_results_per_report,
            lease: LeaseRequest {
                namespace: config.service.namespace.clone(),
                name: config.audit.lease_name.clone(),
                holder,
                // Held across the interval, so the same replica keeps auditing; a holder that
                // stops renewing is replaced one missed round (plus the grace) later.
                duration: interval + Duration::from_secs(config.audit.lease_duration_seconds),
            },
            prefix: config.label_prefix.clone(),
            deadline: Duration::from_secs(config.default_timeout_seconds),
        }
    }
}

/// This replica's name for the Lease: the pod name (`HOSTNAME` in a pod).
pub fn holder_identity() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("sandbox-admission-{}", std::process::id()))
}

/// What one audit round did.
#[derive(Debug, Clone, Default)]
pub struct RoundReport {
    pub judged: usize,
    /// Cached objects that could not be judged (they do not decode).
    pub skipped: usize,
    pub violations: usize,
    pub applied: usize,
    /// Reports whose apply failed: `(namespace, error)`.
    pub failed: Vec<(String, String)>,
    pub reports: Vec<PolicyReport>,
}

#[derive(Debug, Clone)]
pub enum Round {
    Audited(RoundReport),
    /// Another replica holds the Lease.
    NotLeader,
    /// The Lease could not be read or written; nothing was audited.
    LeaseError(String),
}

/// The outcome of this replica's last attempt at the audit Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    Held,
    /// Another replica holds it and writes the reports.
    HeldElsewhere,
    /// The Lease could not be read or written.
    Error(String),
}

/// One namespace's part of a round (`""`: cluster-scoped objects).
#[derive(Debug, Clone)]
pub struct NamespaceSummary {
    pub namespace: String,
    /// The report's summary: `pass` counts objects with no violation at all.
    pub summary: Summary,
    /// Violations by policy (`fail`/`warn`/`error`), all of them, not only the results kept.
    pub policies: BTreeMap<String, Summary>,
    /// The report's results as applied (at most `audit.maxResultsPerReport`, failures first).
    pub results: Vec<ReportResult>,
}

/// What one audited round produced, as the admin page shows it.
#[derive(Debug, Clone)]
pub struct RoundSummary {
    pub finished: chrono::DateTime<chrono::Utc>,
    pub duration: Duration,
    pub judged: usize,
    pub skipped: usize,
    pub applied: usize,
    /// Reports whose apply failed: `(namespace, error)`.
    pub failed: Vec<(String, String)>,
    pub namespaces: Vec<NamespaceSummary>,
}

/// The audit as this replica last saw it: a read-only copy for the admin page, written by the
/// [`Auditor`] at the end of every round.
#[derive(Debug, Clone)]
pub struct AuditState {
    pub lease_name: String,
    pub holder: String,
    /// The last Lease attempt and when it was made; `None` before the first round.
    pub lease: Option<(chrono::DateTime<chrono::Utc>, LeaseState)>,
    /// The last round this replica audited; it stays when the Lease has moved on since.
    pub last_round: Option<RoundSummary>,
}

/// Shared between the [`Auditor`] (writer) and the admin page (reader).
#[derive(Debug)]
pub struct AuditStatus {
    state: Mutex<AuditState>,
}

impl AuditStatus {
    fn new(settings: &AuditSettings) -> AuditStatus {
        AuditStatus {
            state: Mutex::new(AuditState {
                lease_name: settings.lease.name.clone(),
                holder: settings.lease.holder.clone(),
                lease: None,
                last_round: None,
            }),
        }
    }

    pub fn snapshot(&self) -> AuditState {
        match self.state.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut AuditState)) {
        match self.state.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

/// Violations of each policy in each namespace, counted as the reports count them.
fn policy_counts(judged: &[Judged]) -> BTreeMap<String, BTreeMap<String, Summary>> {
    let mut out: BTreeMap<String, BTreeMap<String, Summary>> = BTreeMap::new();
    for j in judged {
        for hit in &j.hits {
            let s = out
                .entry(j.resource.namespace.clone())
                .or_default()
                .entry(hit.policy.clone())
                .or_default();
            match policyreport::result_of(hit) {
                "fail" => s.fail += 1,
                "warn" => s.warn += 1,
                _ => s.error += 1,
            }
        }
    }
    out
}

pub struct Auditor {
    admitter: Arc<Admitter>,
    cluster: Arc<dyn ClusterAccess>,
    settings: AuditSettings,
    status: Arc<AuditStatus>,
    /// Namespaces reported last round: one that is empty now gets an empty report, not a stale one.
    reported: Mutex<BTreeSet<String>>,
}

/// Whether a cached object is one the audit judges: the audited kinds, and of pods only those
/// the Sandbox controller made.
fn audited(object: &CachedObject) -> bool {
    let kinds = audited_kinds();
    let entry = &object.entry;
    if !kinds
        .iter()
        .any(|k| k.entry.group == entry.group && k.entry.kind == entry.kind)
    {
        return false;
    }
    if entry.group.is_empty() && entry.kind == "Pod" {
        let v = object.object.value();
        let labelled = v
            .pointer("/metadata/labels")
            .and_then(|l| l.get(SANDBOX_POD_LABEL))
            .is_some();
        let owned = v
            .pointer("/metadata/ownerReferences")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|refs| {
                refs.iter().any(|r| {
                    r.get("controller") == Some(&serde_json::Value::Bool(true))
                        && r.get("kind").and_then(serde_json::Value::as_str) == Some("Sandbox")
                })
            });
        return labelled || owned;
    }
    true
}

impl Auditor {
    pub fn new(
        admitter: Arc<Admitter>,
        cluster: Arc<dyn ClusterAccess>,
        settings: AuditSettings,
    ) -> Auditor {
        Auditor {
            admitter,
            cluster,
            status: Arc::new(AuditStatus::new(&settings)),
            settings,
            reported: Mutex::new(BTreeSet::new()),
        }
    }

    /// What the admin page reads of this auditor.
    pub fn status(&self) -> Arc<AuditStatus> {
        self.status.clone()
    }

    /// The UPDATE request for a cached object, or why it cannot be judged.
    fn request_of(&self, object: &CachedObject) -> Result<AdmissionRequest, String> {
        if let Some(reason) = object.object.decode_error() {
            return Err(reason.to_owned());
        }
        let value = object.object.value().clone();
        let uid = value
            .pointer("/metadata/uid")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("unknown");
        let defaults = RequestDefaults {
            operation: Operation::Update,
            namespace: None,
            user: AUDIT_USER.into(),
            groups: vec![
                "system:serviceaccounts".into(),
                "system:authenticated".into(),
            ],
            uid: Some(format!("audit-{uid}")),
        };
        let request = request_for(value, &defaults)?;
        AdmissionRequest::from_value(request).map_err(|e| e.to_string())
    }

    /// One round: take or renew the Lease, judge every cached object, apply the reports.
    pub async fn run_once(&self) -> Round {
        let metrics = &self.admitter.metrics;
        let round = |result: &str| {
            metrics
                .audit_runs
                .get_or_create(&crate::metrics::ResultLabels {
                    result: result.into(),
                })
                .inc();
        };
        let lease = self.cluster.try_lease(&self.settings.lease).await;
        let attempted = chrono::Utc::now();
        let lease_state = match &lease {
            Ok(true) => LeaseState::Held,
            Ok(false) => LeaseState::HeldElsewhere,
            Err(e) => LeaseState::Error(e.to_string()),
        };
        self.status
            .update(|s| s.lease = Some((attempted, lease_state)));
        match lease {
            Ok(true) => {}
            Ok(false) => {
                round("not_leader");
                tracing::debug!(lease = %self.settings.lease.name, "another replica holds the audit Lease");
                return Round::NotLeader;
            }
            Err(e) => {
                round("lease_error");
                tracing::warn!(error = %e, "cannot take the audit Lease; not auditing this round");
                return Round::LeaseError(e.to_string());
            }
        }
        let started = Instant::now();
        let mut out = RoundReport::default();
        let mut judged = Vec::new();
        let mut violations: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
        for object in self.cluster.cached_objects().iter().filter(|o| audited(o)) {
            let req = match self.request_of(object) {
                Ok(r) => r,
                Err(reason) => {
                    out.skipped += 1;
                    metrics.audit_skipped.inc();
                    tracing::warn!(kind = %object.entry, namespace = object.object.namespace(), name = object.object.name(), %reason, "audit skipped a cached object that does not decode");
                    continue;
                }
            };
            let decision = self
                .admitter
                .decide_within(Endpoint::Validate, &req, self.settings.deadline)
                .await;
            for hit in &decision.hits {
                *violations
                    .entry((hit.policy.clone(), hit.action.as_str()))
                    .or_default() += 1;
            }
            out.violations += decision.hits.len();
            judged.push(Judged {
                resource: ResourceRef::of(object.object.value()),
                hits: decision.hits,
            });
        }
        out.judged = judged.len();
        let mut by_policy = policy_counts(&judged);
        let previous = self.reported.lock().map(|r| r.clone()).unwrap_or_default();
        let reports = policyreport::build(
            &judged,
            previous,
            &policyreport::BuildOptions {
                cap: self.settings.max_results,
                prefix: self.settings.prefix.clone(),
                now: chrono::Utc::now(),
            },
        );
        let mut reported = BTreeSet::new();
        for report in &reports {
            let namespace = report.metadata.namespace.clone().unwrap_or_default();
            let applied = match serde_json::to_value(report) {
                Ok(body) => self
                    .cluster
                    .apply_policy_report(&body)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("cannot encode the PolicyReport: {e}")),
            };
            match applied {
                Ok(()) => {
                    out.applied += 1;
                    if !report.results.is_empty() || report.summary.pass > 0 {
                        reported.insert(namespace);
                    }
                }
                Err(e) => {
                    metrics.audit_apply_failures.inc();
                    tracing::warn!(namespace = %namespace, error = %e, "cannot apply the PolicyReport; the next round tries again");
                    // Still ours to report next round.
                    reported.insert(namespace.clone());
                    out.failed.push((namespace, e));
                }
            }
        }
        if let Ok(mut slot) = self.reported.lock() {
            *slot = reported;
        }
        let finished = chrono::Utc::now();
        let summary = RoundSummary {
            finished,
            duration: started.elapsed(),
            judged: out.judged,
            skipped: out.skipped,
            applied: out.applied,
            failed: out.failed.clone(),
            namespaces: reports
                .iter()
                .map(|r| {
                    let namespace = r.metadata.namespace.clone().unwrap_or_default();
                    NamespaceSummary {
                        policies: by_policy.remove(&namespace).unwrap_or_default(),
                        namespace,
                        summary: r.summary,
                        results: r.results.clone(),
                    }
                })
                .collect(),
        };
        self.status.update(|s| s.last_round = Some(summary));
        out.reports = reports;
        metrics.audit_violations.clear();
        for ((policy, action), n) in violations {
            metrics
                .audit_violations
                .get_or_create(&ViolationLabels {
                    policy,
                    action: action.into(),
                })
                .set(n);
        }
        metrics
            .audit_objects
            .set(i64::try_from(out.judged).unwrap_or(i64::MAX));
        metrics.audit_duration.set(started.elapsed().as_secs_f64());
        metrics.audit_last_run.set(finished.timestamp());
        round(if out.failed.is_empty() {
            "success"
        } else {
            "partial"
        });
        tracing::info!(
            judged = out.judged,
            skipped = out.skipped,
            violations = out.violations,
            reports = out.applied,
            failed = out.failed.len(),
            "background audit done"
        );
        Round::Audited(out)
    }

    /// Audit every interval and after every policy reload, until the task is aborted. The first
    /// round waits for the caches' first sync.
    pub fn spawn(self: Arc<Self>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut reloads = self.admitter.policies.subscribe_reloads();
            while self.cluster.readiness().is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // Let the inventory catch up with the caches before judging against it.
            tokio::time::sleep(super::inventory::DEBOUNCE * 2).await;
            let mut tick = tokio::time::interval(self.settings.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    changed = reloads.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        tracing::info!("policy set reloaded: auditing again");
                    }
                }
                self.run_once().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Action, PolicyHit};

    #[test]
    fn policy_counts_count_every_violation_as_the_report_does() {
        let judged = |ns: &str, hits: Vec<(&str, Action, &str)>| Judged {
            resource: ResourceRef {
                namespace: ns.into(),
                ..ResourceRef::default()
            },
            hits: hits
                .into_iter()
                .map(|(p, action, m)| PolicyHit {
                    policy: p.into(),
                    action,
                    message: m.into(),
                })
                .collect(),
        };
        let failed = "policy evaluation failed, refused (fail closed): boom";
        let counts = policy_counts(&[
            judged(
                "a",
                vec![("p", Action::Deny, "x"), ("w", Action::Warn, "y")],
            ),
            judged(
                "a",
                vec![("p", Action::Dryrun, "x"), ("p", Action::Deny, failed)],
            ),
            judged("b", vec![]),
            judged("", vec![("w", Action::Warn, "z")]),
        ]);
        assert_eq!(
            counts["a"]["p"],
            Summary {
                fail: 2,
                error: 1,
                ..Summary::default()
            }
        );
        assert_eq!(counts["a"]["w"].warn, 1);
        assert_eq!(counts[""]["w"].warn, 1);
        assert!(!counts.contains_key("b"), "no violations, no policy rows");
    }
}
