//! A steady stream of admission requests over our own TLS connections, for the fault tests.
//!
//! Each worker owns one connection at a time (hyper's low-level client over tokio-rustls), so the
//! test knows exactly which failures are "the server never read this request" (the connection was
//! closed under it) and which are real failures (a non-200, a truncated or malformed answer).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A TLS client configuration that trusts exactly the CA in `ca`.
pub fn connector(ca: &Path) -> TlsConnector {
    sandbox_admission::certs::install_crypto_provider();
    let pem = std::fs::read(ca).expect("CA file");
    let mut roots = rustls::RootCertStore::empty();
    for c in sandbox_admission::certs::parse_certs(ca, &pem).expect("CA parses") {
        roots.add(c).expect("CA usable");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// TCP connect and TLS handshake (server name `localhost`).
pub async fn tls(addr: SocketAddr, tls: &TlsConnector) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").expect("static name");
    tls.connect(name, tcp).await
}

/// An HTTP/1.1 keep-alive connection.
pub async fn open(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> std::io::Result<http1::SendRequest<Full<Bytes>>> {
    let stream = tls(addr, connector).await?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// What happened to one request.
#[derive(Debug)]
pub enum Outcome {
    /// HTTP 200 with an AdmissionReview echoing the uid.
    Answered(Value),
    /// The connection closed before the request was read: the server never accepted it.
    NotAccepted(String),
    /// Anything else: a failure.
    Failed(String),
}

/// POST one review and classify the result.
pub async fn post(
    sender: &mut http1::SendRequest<Full<Bytes>>,
    path: &str,
    uid: &str,
    body: &[u8],
) -> Outcome {
    if sender.ready().await.is_err() {
        return Outcome::NotAccepted("connection closed while idle".into());
    }
    let req = hyper::Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request builds");
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) if e.is_canceled() || e.is_closed() || e.is_incomplete_message() || reset(&e) => {
            return Outcome::NotAccepted(e.to_string());
        }
        Err(e) => return Outcome::Failed(format!("send: {e}")),
    };
    let status = resp.status();
    let bytes = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Outcome::Failed(format!("truncated answer ({status}): {e}")),
    };
    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status != hyper::StatusCode::OK {
        return Outcome::Failed(format!("HTTP {status}: {json}"));
    }
    if json["response"]["uid"] != uid || json["kind"] != "AdmissionReview" {
        return Outcome::Failed(format!("answer does not echo uid {uid}: {json}"));
    }
    Outcome::Answered(json)
}

/// The peer reset or closed the connection under our write: whether the server had read the
/// request is settled by comparing answers with the server's own count of decided reviews.
fn reset(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = s.source();
    }
    false
}

/// Totals of one stream worker.
#[derive(Debug, Default)]
pub struct Tally {
    pub answered: u64,
    pub not_accepted: u64,
    /// Connections that could not be opened (expected only once the server stops listening).
    pub connect_errors: Vec<String>,
    pub failures: Vec<String>,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.answered += other.answered;
        self.not_accepted += other.not_accepted;
        self.connect_errors.extend(other.connect_errors);
        self.failures.extend(other.failures);
    }
}

/// Send reviews round-robin until `stop` is set (or `max` requests), reconnecting every
/// `reconnect_every` requests so that new handshakes happen during the run. A connection that
/// cannot be opened ends the worker (the server is gone).
pub async fn worker(
    addr: SocketAddr,
    connector: TlsConnector,
    reviews: Arc<Vec<(String, String, Vec<u8>)>>,
    reconnect_every: usize,
    max: usize,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut sender = None;
    let mut on_conn = 0usize;
    for i in 0..max {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if sender.is_none() || on_conn >= reconnect_every {
            match open(addr, &connector).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    tally.connect_errors.push(e.to_string());
                    break;
                }
            }
            on_conn = 0;
        }
        let Some(s) = sender.as_mut() else { break };
        let (path, uid, body) = &reviews[i % reviews.len()];
        on_conn += 1;
        match post(s, path, uid, body).await {
            Outcome::Answered(_) => tally.answered += 1,
            Outcome::NotAccepted(_) => {
                tally.not_accepted += 1;
                sender = None;
            }
            Outcome::Failed(f) => {
                tally.failures.push(f);
                sender = None;
            }
        }
    }
    tally
}

/// Sum of `sandbox_admission_requests_total` over all labels: reviews the pipeline decided.
pub fn decided(metrics_text: &str) -> u64 {
    metrics_text
        .lines()
        .filter(|l| l.starts_with("sandbox_admission_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}
