//! The flood scenario (`--flood N`): N connections each POSTing a ~2 MiB AdmissionReview (a
//! Sandbox pod with `--flood-containers` containers) to `/validate`, back to back, without
//! honouring `Retry-After`, while the ordinary scenario runs at its fixed rate. The report gives
//! the server's peak RSS during the flood and the ordinary reviews' latency (docs/performance.md,
//! "Under a flood"). Loopback only, bounded by `--duration`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::client::{self, Sender, Target};
use crate::workload;

/// What the flooding connections got back.
#[derive(Debug, Default)]
pub struct FloodTally {
    pub answered: u64,
    /// By status (429, 503).
    pub refused: BTreeMap<u16, u64>,
    pub errors: BTreeMap<String, u64>,
    pub connections_opened: u64,
}

impl FloodTally {
    fn merge(&mut self, other: FloodTally) {
        self.answered += other.answered;
        self.connections_opened += other.connections_opened;
        for (k, v) in other.refused {
            *self.refused.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "answered": self.answered,
            "refused_by_status": self.refused,
            "errors": self.errors,
            "connections_opened": self.connections_opened,
        })
    }
}

/// A Sandbox pod as the controller makes it, with `n` containers of ~3 KB each, as a review.
pub fn large_review(containers: usize) -> (String, Bytes) {
    let list: Vec<Value> = (0..containers)
        .map(|i| {
            json!({
                "name": format!("worker-{i}"),
                "image": format!("registry.example.com/agents/worker:{i}"),
                "args": ["--serve", "--port", "8080"],
                "env": (0..12).map(|j| json!({"name": format!("SETTING_{j}"), "value": "v".repeat(200)})).collect::<Vec<_>>(),
                "ports": [{"containerPort": 8080 + (i % 100), "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "50m", "memory": "32Mi"}},
                "volumeMounts": [{"name": "work", "mountPath": "/work"}]
            })
        })
        .collect();
    let name = "flood-sandbox";
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "default",
            "labels": {"agents.x-k8s.io/sandbox-name-hash": workload::fnv1a32(name)},
            "ownerReferences": [{"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox", "name": name,
                "uid": "00000000-0000-4000-8000-00000000f100", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {"containers": list, "volumes": [{"name": "work", "emptyDir": {}}]}
    });
    let uid = "flood-large".to_string();
    let body = serde_json::to_vec(&workload::wrap(workload::request_for(&pod, "CREATE", &uid)))
        .unwrap_or_default();
    (uid, Bytes::from(body))
}

/// One flooding request: Ok(status) when an answer came back whole.
async fn send(sender: &Sender, path: &str, body: Bytes) -> Result<u16, String> {
    let (builder, h2) = match sender {
        Sender::H1(_) => (
            hyper::Request::post(path).header("host", "localhost"),
            false,
        ),
        Sender::H2(_) => (
            hyper::Request::post(format!("https://localhost{path}")),
            true,
        ),
    };
    let req = builder
        .header("content-type", "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = match sender {
        Sender::H1(s) => {
            let mut s = s.lock().await;
            s.ready().await.map_err(|_| "closed".to_string())?;
            s.send_request(req).await
        }
        Sender::H2(s) => {
            let mut s = s.clone();
            s.ready().await.map_err(|_| "closed".to_string())?;
            s.send_request(req).await
        }
    }
    .map_err(|e| {
        if h2 {
            format!("h2 send: {e}")
        } else {
            format!("send: {e}")
        }
    })?;
    let status = resp.status().as_u16();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(status)
}

/// Flood `target` from `connections` connections until `end`.
pub async fn run(
    target: &Target,
    connections: usize,
    h2: bool,
    path: &'static str,
    body: Bytes,
    end: Instant,
) -> FloodTally {
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (target, body) = (target.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = FloodTally::default();
            let mut sender: Option<Sender> = None;
            while Instant::now() < end {
                let s = match &sender {
                    Some(s) => s,
                    None => match client::open(&target, h2).await {
                        Ok(s) => {
                            tally.connections_opened += 1;
                            sender.insert(s)
                        }
                        Err(e) => {
                            *tally.errors.entry(format!("connect: {e}")).or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    },
                };
                let left = end.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, send(s, path, body.clone())).await {
                    Err(_) => break,
                    Ok(Ok(200)) => tally.answered += 1,
                    Ok(Ok(status @ (429 | 503))) => {
                        *tally.refused.entry(status).or_default() += 1;
                    }
                    Ok(Ok(status)) => {
                        *tally.errors.entry(format!("HTTP {status}")).or_default() += 1;
                    }
                    Ok(Err(e)) if e == "closed" => sender = None,
                    Ok(Err(e)) => {
                        *tally.errors.entry(e).or_default() += 1;
                        sender = None;
                    }
                }
            }
            tally
        }));
    }
    let mut total = FloodTally::default();
    for t in tasks {
        if let Ok(t) = t.await {
            total.merge(t);
        }
    }
    total
}

/// `GET /metrics` on the health port (plain HTTP), the `overload_rejected` lines.
pub async fn overload_metrics(health: SocketAddr) -> Vec<String> {
    let Ok(mut s) = tokio::net::TcpStream::connect(health).await else {
        return Vec::new();
    };
    if s.write_all(b"GET /metrics HTTP/1.0\r\nhost: localhost\r\n\r\n")
        .await
        .is_err()
    {
        return Vec::new();
    }
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut text)).await;
    text.lines()
        .filter(|l| {
            l.starts_with("sandbox_admission_overload_rejected_total")
                || l.starts_with("sandbox_admission_decision_log_dropped_total")
                || l.starts_with("sandbox_admission_rejected_input_total")
        })
        .map(str::to_owned)
        .collect()
}
