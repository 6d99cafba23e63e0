//! The load client: N keep-alive TLS connections (HTTP/1.1, or h2 with several streams each),
//! closed-loop as fast as possible or open-loop at a fixed rate, for a bounded time or count.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::stats::Stats;

/// Where to send the load.
#[derive(Clone)]
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    pub connector: TlsConnector,
    /// The real server echoes our uids; the no-op answers a fixed one.
    pub check_uid: bool,
}

/// One request of the mix: path, uid to expect, body.
#[derive(Clone)]
pub struct Item {
    pub path: &'static str,
    pub uid: String,
    pub body: Bytes,
}

#[derive(Clone)]
pub struct LoadSettings {
    pub connections: usize,
    pub h2: bool,
    /// Concurrent streams per h2 connection.
    pub streams: usize,
    /// Total reviews per second; None = as fast as possible.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub duration: Duration,
    /// Stop after this many measured requests (in addition to the duration).
    pub max_requests: Option<u64>,
}

/// A TLS client configuration trusting exactly the CA in `ca`, offering h2 when asked.
pub fn connector(ca: &Path, h2: bool) -> anyhow::Result<TlsConnector> {
    let pem = std::fs::read(ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in sandbox_admission::certs::parse_certs(ca, &pem)? {
        roots.add(c)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

#[derive(Clone)]
pub enum Sender {
    H1(Arc<tokio::sync::Mutex<http1::SendRequest<Full<Bytes>>>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

pub async fn open(target: &Target, h2: bool) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("cannot connect to {} at {}", target.name, target.addr))?;
    tcp.set_nodelay(true)?;
    let tls = target
        .connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let io = TokioIo::new(tls);
    if h2 {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) = http1::handshake(io).await?;
        tokio::spawn(conn);
        Ok(Sender::H1(Arc::new(tokio::sync::Mutex::new(sender))))
    }
}

/// Send one item; Ok(answer JSON) for a 200, Err(reason) otherwise.
async fn send(sender: &Sender, item: &Item) -> Result<Value, String> {
    let builder = match sender {
        Sender::H1(_) => hyper::Request::post(item.path).header("host", "localhost"),
        Sender::H2(_) => hyper::Request::post(format!("https://localhost{}", item.path)),
    };
    let req = builder
        .header("content-type", "application/json")
        .body(Full::new(item.body.clone()))
        .map_err(|e| e.to_string())?;
    let resp = match sender {
        Sender::H1(s) => {
            let mut s = s.lock().await;
            s.ready().await.map_err(|e| format!("connection: {e}"))?;
            s.send_request(req).await
        }
        Sender::H2(s) => {
            let mut s = s.clone();
            s.ready().await.map_err(|e| format!("connection: {e}"))?;
            s.send_request(req).await
        }
    }
    .map_err(|e| format!("send: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if status != hyper::StatusCode::OK {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    serde_json::from_slice(&body).map_err(|_| "answer is not JSON".to_string())
}

fn classify(target: &Target, item: &Item, answer: &Value, stats: &mut Stats) -> Result<(), String> {
    let response = &answer["response"];
    if answer["kind"] != "AdmissionReview" || !response["allowed"].is_boolean() {
        return Err("malformed AdmissionReview".into());
    }
    if target.check_uid && response["uid"] != item.uid.as_str() {
        return Err("uid not echoed".into());
    }
    if response["allowed"] == true {
        stats.allowed += 1;
    } else {
        stats.denied += 1;
    }
    if response.get("patch").is_some() {
        stats.patched += 1;
    }
    Ok(())
}

/// Run one load against `target`; returns the merged statistics of the measured window.
///
/// `pid` is the responder's process: its CPU time (and ours) over the measured window is
/// recorded, a figure that other load on a shared machine disturbs far less than throughput.
pub async fn run(
    target: &Target,
    items: Arc<Vec<Item>>,
    s: &LoadSettings,
    pid: Option<u32>,
) -> anyhow::Result<Stats> {
    let cpu = move || {
        (
            pid.and_then(|p| crate::spawn::cpu_time(&p.to_string())),
            crate::spawn::cpu_time("self"),
        )
    };
    let mut senders = Vec::new();
    for _ in 0..s.connections {
        senders.push(open(target, s.h2).await?);
    }
    let per_conn = if s.h2 { s.streams.max(1) } else { 1 };
    let start = Instant::now();
    let measure_from = start + s.warmup;
    let end = measure_from + s.duration;
    let ticket = Arc::new(AtomicU64::new(0));
    let measured = Arc::new(AtomicU64::new(0));
    let cpu_at_start = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from).await;
        cpu()
    });
    let mut tasks = Vec::new();
    for (c, sender) in senders.into_iter().enumerate() {
        for k in 0..per_conn {
            let (target, items, s) = (target.clone(), items.clone(), s.clone());
            let (sender, ticket, measured) = (sender.clone(), ticket.clone(), measured.clone());
            let offset = c * per_conn + k;
            tasks.push(tokio::spawn(async move {
                let mut stats = Stats::new();
                for _ in 0..u64::MAX {
                    let n = ticket.fetch_add(1, Ordering::Relaxed);
                    if let Some(rate) = s.rate {
                        let due = start + Duration::from_secs_f64(n as f64 / rate);
                        if due >= end {
                            break;
                        }
                        tokio::time::sleep_until(due).await;
                        if Instant::now().duration_since(due) > Duration::from_millis(5) {
                            stats.late += 1;
                        }
                    }
                    let sent = Instant::now();
                    if sent >= end
                        || s.max_requests
                            .is_some_and(|m| measured.load(Ordering::Relaxed) >= m)
                    {
                        break;
                    }
                    let item = &items[(n as usize + offset) % items.len()];
                    let result =
                        tokio::time::timeout(Duration::from_secs(10), send(&sender, item)).await;
                    let took = sent.elapsed();
                    if sent < measure_from {
                        continue;
                    }
                    measured.fetch_add(1, Ordering::Relaxed);
                    let outcome = match result {
                        Err(_) => Err("timeout (10 s)".to_string()),
                        Ok(Err(e)) => Err(e),
                        Ok(Ok(answer)) => classify(&target, item, &answer, &mut stats),
                    };
                    match outcome {
                        Ok(()) => stats.record(took),
                        Err(e) => stats.error(e),
                    }
                }
                stats
            }));
        }
    }
    let mut total = Stats::new();
    for t in tasks {
        total.merge(t.await?);
    }
    // Tasks stop starting requests at `end` and finish the one in flight.
    total.elapsed = Instant::now().saturating_duration_since(measure_from);
    let (server0, client0) = cpu_at_start.await?;
    let (server1, client1) = cpu();
    let diff = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
    total.server_cpu = diff(server0, server1);
    total.client_cpu = diff(client0, client1);
    Ok(total)
}
