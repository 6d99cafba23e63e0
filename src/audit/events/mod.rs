//! Kubernetes Events for denials and warnings, so `kubectl describe` and `kubectl events` show
//! *why* an object was refused, next to the object (or its namespace while it does not exist yet).
//!
//! Off the request path: a decision becomes a [`PolicyEvent`] and is queued without waiting; a
//! task rate-limits the queue and hands events to an [`EventSink`] (the API server in `serve`,
//! a recorder in tests). Whatever is dropped (queue full, rate limit, API error) is counted in
//! `sandbox_admission_events_dropped_total`.

pub mod kube_sink;
pub mod limit;

use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::admission::{AdmissionRequest, Operation};
use crate::decision::{Decision, Endpoint};
use crate::metrics::Metrics;
use crate::policy::Action;
use limit::TokenBucket;

/// The API server's limit on `note`.
const MAX_NOTE_BYTES: usize = 1024;

pub const REASON_VIOLATION: &str = "PolicyViolation";
pub const REASON_WARNING: &str = "PolicyWarning";

/// The `events:` section of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventsConfig {
    /// Emit Events (needs cluster access and RBAC to create `events.k8s.io` events).
    #[serde(default)]
    pub enabled: bool,
    /// Sustained Events per second, across all objects.
    #[serde(default = "default_rate")]
    pub rate_per_second: f64,
    /// Events that may go out at once after a quiet spell.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Events waiting to be sent; beyond this they are dropped (and counted).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// `reportingInstance` [default: $POD_NAME, else the host name].
    #[serde(default)]
    pub reporting_instance: Option<String>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            enabled: false,
            rate_per_second: default_rate(),
            burst: default_burst(),
            queue: default_queue(),
            reporting_instance: None,
        }
    }
}

fn default_rate() -> f64 {
    10.0
}
fn default_burst() -> u32 {
    50
}
fn default_queue() -> usize {
    1024
}

impl EventsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !self.rate_per_second.is_finite() || self.rate_per_second <= 0.0 {
            return Err("events.ratePerSecond must be a positive number".into());
        }
        if self.burst == 0 || self.queue == 0 {
            return Err("events.burst and events.queue must be at least 1".into());
        }
        Ok(())
    }

    /// Who reports: the pod's name in a cluster (Downward API), the host name elsewhere.
    pub fn instance(&self) -> String {
        self.reporting_instance
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|s| !s.is_empty())
            .map(|s| s.chars().take(128).collect())
            .unwrap_or_else(|| "sandbox-admission".into())
    }
}

/// The object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regarding {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub uid: Option<String>,
}

/// One Event to emit, independent of how it is delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyEvent {
    /// Namespace the Event is created in.
    pub namespace: String,
    pub regarding: Regarding,
    /// [`REASON_VIOLATION`] or [`REASON_WARNING`].
    pub reason: &'static str,
    pub note: String,
    pub time: DateTime<Utc>,
}

/// Where events go. `serve` uses [`kube_sink::KubeSink`]; tests inject recorders.
pub trait EventSink: Send + Sync + 'static {
    fn emit(&self, event: &PolicyEvent) -> impl Future<Output = Result<(), String>> + Send;
}

/// Shorten to `max` bytes on a character boundary.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn regarding_of(req: &AdmissionRequest) -> Regarding {
    if req.operation == Operation::Create && !req.namespace.is_empty() {
        // The object does not exist yet: an Event about it would dangle, so it goes on the
        // namespace, where `kubectl events -n NS` finds it.
        return Regarding {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            name: req.namespace.clone(),
            namespace: None,
            uid: None,
        };
    }
    let api_version = if req.kind.group.is_empty() {
        req.kind.version.clone()
    } else {
        format!("{}/{}", req.kind.group, req.kind.version)
    };
    let uid = req
        .object()
        .or_else(|| req.old_object())
        .and_then(|o| o.pointer("/metadata/uid"))
        .and_then(|u| u.as_str())
        .map(str::to_owned);
    Regarding {
        api_version,
        kind: req.kind.kind.clone(),
        name: req.name.clone(),
        namespace: (!req.namespace.is_empty()).then(|| req.namespace.clone()),
        uid,
    }
}

/// The Event a decision deserves: one per denial or warning, none for allowed or dry-run
/// requests (an Event is a side effect, which a dry run must not have).
pub fn event_for(
    endpoint: Endpoint,
    req: &AdmissionRequest,
    d: &Decision,
    now: DateTime<Utc>,
) -> Option<PolicyEvent> {
    if req.dry_run {
        return None;
    }
    let (reason, verdict, lines): (_, _, Vec<String>) = match d.label() {
        "denied" => {
            let mut lines: Vec<String> = d
                .hits
                .iter()
                .filter(|h| h.action == Action::Deny)
                .map(|h| format!("[{}] {}", h.policy, h.message))
                .collect();
            if lines.is_empty() {
                lines.extend(d.response.status.iter().map(|s| s.message.clone()));
            }
            (REASON_VIOLATION, "denied", lines)
        }
        "warned" => (
            REASON_WARNING,
            "admitted with warnings",
            d.response.warnings.clone(),
        ),
        _ => return None,
    };
    let user = if req.user_info.username.is_empty() {
        "an unknown user"
    } else {
        &req.user_info.username
    };
    let note = format!(
        "{} {} {} by {user} {verdict} at /{}: {}",
        req.kind.kind,
        req.display_name(),
        req.operation,
        endpoint.as_str(),
        lines.join("; ")
    );
    Some(PolicyEvent {
        namespace: if req.namespace.is_empty() {
            "default".into()
        } else {
            req.namespace.clone()
        },
        regarding: regarding_of(req),
        reason,
        note: clip(&note, MAX_NOTE_BYTES),
        time: now,
    })
}

/// The pipeline's handle: cheap to clone, never blocks, does nothing when events are off.
#[derive(Clone)]
pub struct Events {
    tx: Option<mpsc::Sender<PolicyEvent>>,
    metrics: Arc<Metrics>,
}

impl Events {
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        Events { tx: None, metrics }
    }

    /// Start delivering to `sink` on a task of the current runtime.
    pub fn spawn<S: EventSink>(sink: S, config: &EventsConfig, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let bucket = TokenBucket::new(
            config.rate_per_second,
            config.burst,
            tokio::time::Instant::now(),
        );
        tokio::spawn(deliver(rx, sink, bucket, metrics.clone()));
        Events {
            tx: Some(tx),
            metrics,
        }
    }

    /// Events to the API server this process runs against (in-cluster or kubeconfig).
    pub async fn to_cluster(config: &EventsConfig, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!("events are enabled but there is no cluster access: {e}")
        })?;
        let sink = kube_sink::KubeSink::new(client, config.instance());
        Ok(Self::spawn(sink, config, metrics))
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queue the Event for this decision, if it deserves one.
    pub fn observe(&self, endpoint: Endpoint, req: &AdmissionRequest, d: &Decision) {
        let Some(tx) = &self.tx else { return };
        let Some(event) = event_for(endpoint, req, d, Utc::now()) else {
            return;
        };
        match tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.metrics.event_dropped("queue_full"),
            Err(TrySendError::Closed(_)) => self.metrics.event_dropped("closed"),
        }
    }
}

async fn deliver<S: EventSink>(
    mut rx: mpsc::Receiver<PolicyEvent>,
    sink: S,
    mut bucket: TokenBucket,
    metrics: Arc<Metrics>,
) {
    while let Some(event) = rx.recv().await {
        if !bucket.try_take(tokio::time::Instant::now()) {
            metrics.event_dropped("rate_limited");
            continue;
        }
        match sink.emit(&event).await {
            Ok(()) => {
                metrics.events_sent.inc();
            }
            Err(error) => {
                metrics.event_dropped("api_error");
                tracing::warn!(%error, namespace = %event.namespace, reason = event.reason, "cannot create an Event");
            }
        }
    }
}

#[cfg(test)]
mod tests;
