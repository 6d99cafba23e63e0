//! Prometheus metrics under `sandbox_admission_`, served on the health port's `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub kind: String,
    pub operation: String,
    pub decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViolationLabels {
    pub policy: String,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvaluatorLabels {
    /// `serving` or `shadow`.
    pub set: String,
    /// `rvm` (compiled) or `interpreter`.
    pub evaluator: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SetLabels {
    pub set: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowLabels {
    pub policy: String,
    /// `new_denial`, `gone_denial`, `new_warning`, `gone_warning` (the shadow set's view).
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: String,
}

/// Distinct `kind` label values kept; later kinds are counted as `other`. The kind comes from
/// the request, so without a cap a client could grow the metric families without bound.
const MAX_KINDS: usize = 32;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<EndpointLabels, Histogram>,
    pub in_flight: Gauge,
    pub rejected_input: Family<ReasonLabels, Counter>,
    pub violations: Family<ViolationLabels, Counter>,
    pub policy_reloads: Family<ResultLabels, Counter>,
    pub policies: Gauge,
    pub cert_reloads: Family<ResultLabels, Counter>,
    pub decision_log_dropped: Counter,
    pub events_sent: Counter,
    pub events_dropped: Family<ReasonLabels, Counter>,
    pub shadow_disagreements: Family<ShadowLabels, Counter>,
    pub shadow_evaluations: Counter,
    pub shadow_dropped: Counter,
    pub shadow_policy_reloads: Family<ResultLabels, Counter>,
    pub shadow_policies: Gauge,
    /// 1 for the evaluator each set (serving, shadow) runs on, 0 for the other.
    pub policy_evaluator: Family<EvaluatorLabels, Gauge>,
    /// Sets loaded on the interpreter because the compiled evaluator could not take them.
    pub policy_evaluator_fallbacks: Family<SetLabels, Counter>,
    pub overload_rejected: Family<ReasonLabels, Counter>,
    pub body_bytes: Family<ClassLabels, Gauge>,
    pub queued: Family<ClassLabels, Gauge>,
    kinds: std::sync::Mutex<std::collections::BTreeSet<String>>,
    pub inventory_objects: Gauge,
    pub cache_synced: Family<KindLabels, Gauge>,
    pub cache_relists: Family<KindLabels, Gauge>,
    pub cache_errors: Family<KindLabels, Gauge>,
    pub audit_last_run: Gauge,
    pub audit_duration: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub audit_objects: Gauge,
    pub audit_violations: Family<ViolationLabels, Gauge>,
    pub audit_runs: Family<ResultLabels, Counter>,
    pub audit_skipped: Counter,
    pub audit_apply_failures: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~1.6 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sandbox_admission");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<EndpointLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let in_flight = Gauge::default();
        let rejected_input = Family::<ReasonLabels, Counter>::default();
        let violations = Family::<ViolationLabels, Counter>::default();
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        let policies = Gauge::default();
        let cert_reloads = Family::<ResultLabels, Counter>::default();
        let decision_log_dropped = Counter::default();
        let events_sent = Counter::default();
        let events_dropped = Family::<ReasonLabels, Counter>::default();
        let overload_rejected = Family::<ReasonLabels, Counter>::default();
        let body_bytes = Family::<ClassLabels, Gauge>::default();
        let queued = Family::<ClassLabels, Gauge>::default();
        let inventory_objects = Gauge::default();
        let cache_synced = Family::<KindLabels, Gauge>::default();
        let cache_relists = Family::<KindLabels, Gauge>::default();
        let cache_errors = Family::<KindLabels, Gauge>::default();
        let audit_last_run = Gauge::default();
        let audit_duration = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let audit_objects = Gauge::default();
        let audit_violations = Family::<ViolationLabels, Gauge>::default();
        let audit_runs = Family::<ResultLabels, Counter>::default();
        let audit_skipped = Counter::default();
        let audit_apply_failures = Counter::default();
        registry.register(
            "audit_last_run_timestamp_seconds",
            "When the last background audit finished (Unix time)",
            audit_last_run.clone(),
        );
        registry.register(
            "audit_last_run_duration_seconds",
            "How long the last background audit took",
            audit_duration.clone(),
        );
        registry.register(
            "audit_objects",
            "Objects judged by the last background audit",
            audit_objects.clone(),
        );
        registry.register(
            "audit_violations",
            "Violations found by the last background audit, by policy and enforcement action",
            audit_violations.clone(),
        );
        registry.register(
            "audit_runs",
            "Background audit rounds, by result (success, partial, not_leader, lease_error)",
            audit_runs.clone(),
        );
        registry.register(
            "audit_skipped_objects",
            "Cached objects the background audit could not judge (they do not decode) and skipped",
            audit_skipped.clone(),
        );
        registry.register(
            "audit_report_apply_failures",
            "PolicyReports the background audit could not apply",
            audit_apply_failures.clone(),
        );
        registry.register(
            "inventory_objects",
            "Objects in data.inventory (the sync list's kinds)",
            inventory_objects.clone(),
        );
        registry.register(
            "watch_cache_synced",
            "1 when the watch cache of a kind has listed, by kind",
            cache_synced.clone(),
        );
        registry.register(
            "watch_cache_relists",
            "Times a watch cache re-listed after losing its watch (e.g. 410 Gone), by kind",
            cache_relists.clone(),
        );
        registry.register(
            "watch_cache_errors",
            "Watch or list errors of a watch cache (each retried with backoff), by kind",
            cache_errors.clone(),
        );
        registry.register(
            "requests",
            "Admission reviews answered, by endpoint, kind, operation and decision",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from body received to answer encoded",
            latency.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Reviews being processed",
            in_flight.clone(),
        );
        registry.register(
            "rejected_input",
            "Requests refused because they could not be understood, by reason",
            rejected_input.clone(),
        );
        registry.register(
            "policy_violations",
            "Violations found, by policy and enforcement action",
            violations.clone(),
        );
        registry.register(
            "policy_reload",
            "Policy set reloads, by result",
            policy_reloads.clone(),
        );
        registry.register(
            "policies_loaded",
            "Policies in the serving set",
            policies.clone(),
        );
        registry.register(
            "certificate_reload",
            "Serving certificate reloads, by result",
            cert_reloads.clone(),
        );
        registry.register(
            "decision_log_dropped",
            "Decision records dropped because the log writer fell behind",
            decision_log_dropped.clone(),
        );
        registry.register(
            "events_sent",
            "Kubernetes Events created for denials and warnings",
            events_sent.clone(),
        );
        registry.register(
            "events_dropped",
            "Kubernetes Events not created, by reason (queue_full, rate_limited, api_error)",
            events_dropped.clone(),
        );
        let shadow_disagreements = Family::<ShadowLabels, Counter>::default();
        let shadow_evaluations = Counter::default();
        let shadow_dropped = Counter::default();
        let shadow_policy_reloads = Family::<ResultLabels, Counter>::default();
        let shadow_policies = Gauge::default();
        let policy_evaluator = Family::<EvaluatorLabels, Gauge>::default();
        let policy_evaluator_fallbacks = Family::<SetLabels, Counter>::default();
        registry.register(
            "policy_evaluator",
            "The evaluator each policy set runs on (1): rvm (compiled) or interpreter",
            policy_evaluator.clone(),
        );
        registry.register(
            "policy_evaluator_fallbacks",
            "Policy sets loaded on the interpreter because the RVM could not compile or run them (reason in the log and /readyz)",
            policy_evaluator_fallbacks.clone(),
        );
        registry.register(
            "shadow_disagreements",
            "Shadow-set verdicts that differ from the live set's, by policy and direction",
            shadow_disagreements.clone(),
        );
        registry.register(
            "shadow_evaluations",
            "Reviews the shadow set judged after the live answer was sent",
            shadow_evaluations.clone(),
        );
        registry.register(
            "shadow_dropped",
            "Reviews the shadow set skipped because its evaluation slots were full",
            shadow_dropped.clone(),
        );
        registry.register(
            "shadow_policy_reload",
            "Shadow policy set reloads, by result",
            shadow_policy_reloads.clone(),
        );
        registry.register(
            "shadow_policies_loaded",
            "Policies in the shadow set",
            shadow_policies.clone(),
        );
        registry.register(
            "overload_rejected",
            "Requests refused for load (HTTP 429/503 with Retry-After), by reason: small_body_budget, large_body_budget, connection_share, queue_deadline",
            overload_rejected.clone(),
        );
        registry.register(
            "body_bytes_held",
            "Request body bytes reserved (being read, queued or decided), by size class",
            body_bytes.clone(),
        );
        registry.register(
            "reviews_queued",
            "Reviews waiting for a decision slot, by size class",
            queued.clone(),
        );
        Metrics {
            shadow_disagreements,
            shadow_evaluations,
            shadow_dropped,
            shadow_policy_reloads,
            shadow_policies,
            policy_evaluator,
            policy_evaluator_fallbacks,
            registry,
            requests,
            latency,
            in_flight,
            rejected_input,
            violations,
            policy_reloads,
            policies,
            cert_reloads,
            decision_log_dropped,
            events_sent,
            events_dropped,
            overload_rejected,
            body_bytes,
            queued,
            kinds: Default::default(),
            inventory_objects,
            cache_synced,
            cache_relists,
            cache_errors,
            audit_last_run,
            audit_duration,
            audit_objects,
            audit_violations,
            audit_runs,
            audit_skipped,
            audit_apply_failures,
        }
    }

    /// One watch cache's health (set from its status, so the values are absolute).
    pub fn cache_status(&self, kind: &str, synced: bool, relists: u64, errors: u64) {
        let labels = KindLabels {
            kind: kind.to_owned(),
        };
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.cache_synced
            .get_or_create(&labels)
            .set(i64::from(synced));
        self.cache_relists
            .get_or_create(&labels)
            .set(gauge(relists));
        self.cache_errors.get_or_create(&labels).set(gauge(errors));
    }

    /// Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn reject(&self, reason: &str) {
        self.rejected_input
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn overload_rejected(&self, reason: &str) {
        self.overload_rejected
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn body_bytes_held(&self, class: &str) -> Gauge {
        self.body_bytes
            .get_or_create(&ClassLabels {
                class: class.to_owned(),
            })
            .clone()
    }

    pub fn reviews_queued(&self, class: &str) -> Gauge {
        self.queued
            .get_or_create(&ClassLabels {
                class: class.to_owned(),
            })
            .clone()
    }

    /// The `kind` label for a request's kind: itself for the first [`MAX_KINDS`] kinds seen,
    /// `other` after that.
    pub fn kind_label(&self, kind: &str) -> String {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        if kinds.contains(kind) {
            return kind.to_owned();
        }
        if kinds.len() < MAX_KINDS {
            kinds.insert(kind.to_owned());
            return kind.to_owned();
        }
        "other".to_owned()
    }

    pub fn event_dropped(&self, reason: &str) {
        self.events_dropped
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn reload(&self, family: &Family<ResultLabels, Counter>, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        family
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_kinds_are_capped() {
        let m = super::Metrics::new();
        for i in 0..100 {
            let _ = m.kind_label(&format!("Kind{i}"));
        }
        assert_eq!(m.kind_label("Kind0"), "Kind0");
        assert_eq!(m.kind_label("Kind99"), "other");
    }
}
