//! Events: what each decision becomes, what reaches the API server (recorded responses), and how
//! the rate limit and the queue drop the excess, all without waiting on a real clock.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeZone;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use super::kube_sink::KubeSink;
use super::*;
use crate::mutate::MutationOutcome;
use crate::pipeline::{decide_mutation, decide_validation};
use crate::policy::PolicyHit;

fn request(operation: &str, dry_run: bool) -> AdmissionRequest {
    let object = json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
                        "metadata": {"name": "coder", "namespace": "team-a", "uid": "obj-uid"}});
    AdmissionRequest::from_value(json!({
        "uid": "req-1", "operation": operation, "name": "coder", "namespace": "team-a",
        "kind": {"group": "agents.x-k8s.io", "version": "v1beta1", "kind": "Sandbox"},
        "resource": {"group": "agents.x-k8s.io", "version": "v1beta1", "resource": "sandboxes"},
        "userInfo": {"username": "alice"}, "dryRun": dry_run,
        "object": object, "oldObject": object
    }))
    .unwrap()
}

fn hit(policy: &str, action: Action, message: &str) -> PolicyHit {
    PolicyHit {
        policy: policy.into(),
        action,
        message: message.into(),
    }
}

fn denied(req: &AdmissionRequest) -> Decision {
    decide_validation(
        req,
        vec![
            hit(
                "runtime-class",
                Action::Deny,
                "runtime class runc is not allowed",
            ),
            hit("privileged", Action::Deny, "container c is privileged"),
            hit("image-registry", Action::Warn, "docker.io is not allowed"),
        ],
    )
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 4, 10, 0, 0).unwrap()
}

#[test]
fn a_denied_create_is_reported_on_the_namespace() {
    let req = request("CREATE", false);
    let e = event_for(Endpoint::Validate, &req, &denied(&req), now()).unwrap();
    assert_eq!(e.reason, REASON_VIOLATION);
    assert_eq!(e.namespace, "team-a");
    assert_eq!(
        e.regarding,
        Regarding {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            name: "team-a".into(),
            namespace: None,
            uid: None
        }
    );
    assert_eq!(
        e.note,
        "Sandbox team-a/coder CREATE by alice denied at /validate: \
         [runtime-class] runtime class runc is not allowed; [privileged] container c is privileged"
    );
}

#[test]
fn an_update_is_reported_on_the_object_and_warnings_too() {
    let req = request("UPDATE", false);
    let warned = decide_validation(&req, vec![hit("image-registry", Action::Warn, "docker.io")]);
    let e = event_for(Endpoint::Validate, &req, &warned, now()).unwrap();
    assert_eq!(e.reason, REASON_WARNING);
    assert_eq!(e.regarding.kind, "Sandbox");
    assert_eq!(e.regarding.api_version, "agents.x-k8s.io/v1beta1");
    assert_eq!(e.regarding.namespace.as_deref(), Some("team-a"));
    assert_eq!(e.regarding.uid.as_deref(), Some("obj-uid"));
    assert!(
        e.note
            .ends_with("admitted with warnings at /validate: [image-registry] docker.io")
    );
}

#[test]
fn no_event_for_allowed_dry_run_or_dryrun_policies() {
    let req = request("CREATE", false);
    let quiet = decide_validation(&req, vec![hit("limits", Action::Dryrun, "no limits")]);
    assert!(event_for(Endpoint::Validate, &req, &quiet, now()).is_none());
    let dry = request("CREATE", true);
    assert!(event_for(Endpoint::Validate, &dry, &denied(&dry), now()).is_none());
}

#[test]
fn a_mutation_refusal_gives_its_message_and_long_notes_are_clipped() {
    let req = request("CREATE", false);
    let refused = decide_mutation(
        &req,
        MutationOutcome {
            denial: Some(format!("runtime profile kata: {}", "é".repeat(2000))),
            ..Default::default()
        },
    );
    let e = event_for(Endpoint::Mutate, &req, &refused, now()).unwrap();
    assert!(
        e.note
            .contains("denied at /mutate: runtime profile kata: é")
    );
    assert!(e.note.len() <= MAX_NOTE_BYTES);
    assert!(e.note.ends_with('…'));
}

type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A client whose "API server" answers every request with `status` and `body`, recording what
/// it was sent.
fn recorded_api(status: u16, body: Value) -> (kube::Client, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let (log, body) = (log.clone(), body.clone());
        async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_owned();
            let bytes = req.into_body().collect().await.unwrap().to_bytes();
            let sent = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            log.lock().unwrap().push((method, path, sent));
            let response = http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(bytes::Bytes::from(body.to_string())))
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    (kube::Client::new(service, "default"), seen)
}

fn event() -> PolicyEvent {
    let req = request("CREATE", false);
    event_for(Endpoint::Validate, &req, &denied(&req), now()).unwrap()
}

#[tokio::test]
async fn the_api_server_gets_an_events_k8s_io_event() {
    // As recorded from kube-apiserver v1.33 for a create in namespace team-a.
    let created = json!({
        "kind": "Event", "apiVersion": "events.k8s.io/v1",
        "metadata": {"name": "team-a.1843a9c2d3e4f5a6", "generateName": "team-a.", "namespace": "team-a",
                     "uid": "0b5c3a7e-8a55-4d0e-9c55-2f1f0a3c9e11", "resourceVersion": "4711",
                     "creationTimestamp": "2026-03-04T10:00:00Z"},
        "eventTime": "2026-03-04T10:00:00.000000Z", "reportingController": "sandbox-admission",
        "reportingInstance": "sandbox-admission-7c9f-abcde", "action": "Admit", "reason": "PolicyViolation",
        "regarding": {"kind": "Namespace", "name": "team-a", "apiVersion": "v1"},
        "note": "…", "type": "Warning"
    });
    let (client, seen) = recorded_api(201, created);
    let sink = KubeSink::new(client, "sandbox-admission-7c9f-abcde".into());
    sink.emit(&event()).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (method, path, body) = &seen[0];
    assert_eq!(method, "POST");
    assert_eq!(path, "/apis/events.k8s.io/v1/namespaces/team-a/events");
    assert_eq!(body["apiVersion"], "events.k8s.io/v1");
    assert_eq!(body["kind"], "Event");
    assert_eq!(body["metadata"]["generateName"], "team-a.");
    assert_eq!(body["metadata"]["namespace"], "team-a");
    assert_eq!(body["type"], "Warning");
    assert_eq!(body["reason"], "PolicyViolation");
    assert_eq!(body["action"], "Admit");
    assert_eq!(body["reportingController"], "sandbox-admission");
    assert_eq!(body["reportingInstance"], "sandbox-admission-7c9f-abcde");
    assert_eq!(body["eventTime"], "2026-03-04T10:00:00.000000Z");
    assert_eq!(
        body["regarding"],
        json!({"apiVersion": "v1", "kind": "Namespace", "name": "team-a"})
    );
    let note = body["note"].as_str().unwrap();
    assert!(note.contains("[runtime-class] runtime class runc is not allowed"));
    assert!(note.contains("[privileged] container c is privileged"));
}

#[tokio::test]
async fn a_forbidden_answer_is_an_error_and_is_counted() {
    let forbidden = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "events.events.k8s.io is forbidden: User \"system:serviceaccount:sandbox-admission:sandbox-admission\" cannot create resource \"events\" in API group \"events.k8s.io\" in the namespace \"team-a\"",
        "reason": "Forbidden", "details": {"group": "events.k8s.io", "kind": "events"}, "code": 403
    });
    let (client, seen) = recorded_api(403, forbidden.clone());
    let sink = KubeSink::new(client, "i".into());
    let err = sink.emit(&event()).await.unwrap_err();
    assert!(err.contains("forbidden"), "{err}");

    // Through the delivery task: counted as an API error, and the task keeps going.
    let (client, _) = recorded_api(403, forbidden);
    let metrics = Arc::new(Metrics::new());
    let events = Events::spawn(
        KubeSink::new(client, "i".into()),
        &EventsConfig::default(),
        metrics.clone(),
    );
    let req = request("CREATE", false);
    events.observe(Endpoint::Validate, &req, &denied(&req));
    events.observe(Endpoint::Validate, &req, &denied(&req));
    wait_for(|| dropped(&metrics, "api_error") == 2).await;
    assert_eq!(metrics.events_sent.get(), 0);
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// A sink that records, or holds every emit until released.
#[derive(Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<PolicyEvent>>>,
    hold: Option<Arc<tokio::sync::Semaphore>>,
}

impl EventSink for Recorder {
    async fn emit(&self, event: &PolicyEvent) -> Result<(), String> {
        self.events.lock().unwrap().push(event.clone());
        if let Some(gate) = &self.hold {
            let _permit = gate.acquire().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn dropped(metrics: &Metrics, reason: &str) -> u64 {
    metrics
        .events_dropped
        .get_or_create(&crate::metrics::ReasonLabels {
            reason: reason.into(),
        })
        .get()
}

/// Let the delivery task run until `done` holds (no clock involved: it only yields).
async fn wait_for(done: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the delivery task did not get there");
}

#[tokio::test(start_paused = true)]
async fn a_storm_is_rate_limited_and_the_excess_counted() {
    let metrics = Arc::new(Metrics::new());
    let sink = Recorder::default();
    let config = EventsConfig {
        enabled: true,
        rate_per_second: 10.0,
        burst: 5,
        ..Default::default()
    };
    let events = Events::spawn(sink.clone(), &config, metrics.clone());
    let req = request("CREATE", false);
    let decision = denied(&req);
    for _ in 0..20 {
        events.observe(Endpoint::Validate, &req, &decision);
    }
    wait_for(|| metrics.events_sent.get() + dropped(&metrics, "rate_limited") == 20).await;
    assert_eq!(metrics.events_sent.get(), 5, "the burst");
    assert_eq!(dropped(&metrics, "rate_limited"), 15);

    // 300 ms of (paused, advanced) time at 10/s: three more tokens.
    tokio::time::advance(Duration::from_millis(300)).await;
    for _ in 0..10 {
        events.observe(Endpoint::Validate, &req, &decision);
    }
    wait_for(|| metrics.events_sent.get() + dropped(&metrics, "rate_limited") == 30).await;
    assert_eq!(metrics.events_sent.get(), 8);
    assert_eq!(sink.events.lock().unwrap().len(), 8);
    assert!(
        metrics
            .encode()
            .contains("sandbox_admission_events_dropped_total{reason=\"rate_limited\"} 22")
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_drops_without_blocking_the_request() {
    let metrics = Arc::new(Metrics::new());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let sink = Recorder {
        hold: Some(gate.clone()),
        ..Default::default()
    };
    let config = EventsConfig {
        queue: 2,
        ..Default::default()
    };
    let events = Events::spawn(sink.clone(), &config, metrics.clone());
    let req = request("CREATE", false);
    let decision = denied(&req);
    events.observe(Endpoint::Validate, &req, &decision);
    // The task takes the first and is held in emit; two more fill the queue; the rest drop.
    wait_for(|| sink.events.lock().unwrap().len() == 1).await;
    for _ in 0..5 {
        events.observe(Endpoint::Validate, &req, &decision);
    }
    assert_eq!(dropped(&metrics, "queue_full"), 3);
    gate.add_permits(10);
    wait_for(|| metrics.events_sent.get() == 3).await;
    assert!(!Events::disabled(metrics).enabled());
}
