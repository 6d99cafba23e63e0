//! A flood of large reviews, on loopback with real TLS: 64 connections (half HTTP/1.1, half h2)
//! each POSTing ~2 MiB AdmissionReviews (a Sandbox pod with 700 containers) to `/validate`,
//! while two ordinary clients (one HTTP/1.1, one h2 connection, as the API server keeps) send
//! the controller's Sandbox pods to `/mutate`.
//!
//! What must hold: every ordinary review gets its AdmissionReview; every large one gets either an
//! AdmissionReview or a documented refusal (429/503 with `Retry-After` and a JSON Status, or the
//! body-read deadline's 408);
//! nothing else, and the server serves on afterwards. Bounded in count (each flooder sends at
//! most 12 reviews, the ordinary clients 25 each) and in time (the flood stops when the ordinary
//! clients are done; waits are guards). Nothing here asserts how fast anything is: peak RSS and
//! latency under the flood are figures of `examples/loadgen --flood` (docs/performance.md).

mod common;
#[path = "../examples/loadgen/workload.rs"]
mod workload;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::TestServer;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio_rustls::TlsConnector;

const FLOODERS: usize = 64;
const PER_FLOODER: usize = 12;
const ORDINARY_PER_CLIENT: usize = 25;
const GUARD: Duration = Duration::from_secs(60);

/// A Sandbox pod as the controller makes it, with `n` containers of ~3 KB each.
fn wide_sandbox_pod(n: usize) -> Value {
    let containers: Vec<Value> = (0..n)
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
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "default",
            "labels": {"agents.x-k8s.io/sandbox-name-hash": workload::fnv1a32(name)},
            "ownerReferences": [{"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox", "name": name,
                "uid": "00000000-0000-4000-8000-00000000f100", "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {"containers": containers, "volumes": [{"name": "work", "emptyDir": {}}]}
    })
}

fn connector(ca: &std::path::Path, h2: bool) -> TlsConnector {
    let pem = std::fs::read(ca).unwrap();
    let mut tls = common::trusting(&[&pem]);
    tls.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    TlsConnector::from(Arc::new(tls))
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

async fn open(addr: std::net::SocketAddr, tls: &TlsConnector, h2: bool) -> std::io::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let io = TokioIo::new(stream);
    Ok(if h2 {
        let (s, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Sender::H2(s)
    } else {
        let (s, conn) = http1::handshake(io).await.map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Sender::H1(s)
    })
}

/// How one request ended, from the client's side.
enum Outcome {
    /// HTTP 200 with an AdmissionReview echoing the uid.
    Answered(Value),
    /// The documented refusal: 429 or 503, `Retry-After`, a JSON Status naming the reason.
    Refused,
    /// The connection was found closed before the request went out (the server closes an
    /// HTTP/1.1 connection after refusing an unread body): reconnect and send again.
    Closed,
    Failed(String),
}

async fn send(sender: &mut Sender, path: &str, uid: &str, body: Bytes) -> Outcome {
    let ready = match sender {
        Sender::H1(s) => s.ready().await,
        Sender::H2(s) => s.ready().await,
    };
    if ready.is_err() {
        return Outcome::Closed;
    }
    let h2 = matches!(sender, Sender::H2(_));
    let uri = if h2 {
        format!("https://localhost{path}")
    } else {
        path.to_string()
    };
    let mut b = Request::post(uri).header("content-type", "application/json");
    if !h2 {
        b = b.header("host", "localhost");
    }
    let req = b.body(Full::new(body)).unwrap();
    let resp = match sender {
        Sender::H1(s) => s.send_request(req).await,
        Sender::H2(s) => s.send_request(req).await,
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("no answer: {e}")),
    };
    let status = resp.status();
    let retry_after = resp.headers().get("retry-after").cloned();
    let bytes = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Outcome::Failed(format!("truncated answer ({status}): {e}")),
    };
    let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    match status {
        StatusCode::OK if json["kind"] == "AdmissionReview" && json["response"]["uid"] == uid => {
            Outcome::Answered(json)
        }
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            if retry_after.is_some()
                && json["kind"] == "Status"
                && json["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("server busy")) =>
        {
            Outcome::Refused
        }
        // The body-read deadline: a body that did not arrive in time (on this loaded machine,
        // a 2 MiB upload from a client sharing two cores with 63 others).
        StatusCode::REQUEST_TIMEOUT
            if json["kind"] == "Status"
                && json["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("request body not received within")) =>
        {
            Outcome::Refused
        }
        _ => Outcome::Failed(format!("HTTP {status}: {json}")),
    }
}

#[derive(Debug, Default)]
struct Tally {
    answered: usize,
    refused: usize,
    failures: Vec<String>,
}

async fn flood(
    addr: std::net::SocketAddr,
    tls: TlsConnector,
    h2: bool,
    uid: String,
    body: Bytes,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut sender = None;
    let mut sent = 0;
    // Every attempt counts, so a flooder whose connections keep closing still ends.
    for _ in 0..PER_FLOODER * 4 {
        if sent >= PER_FLOODER || stop.load(Ordering::Relaxed) {
            break;
        }
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match open(addr, &tls, h2).await {
                Ok(s) => sender.insert(s),
                Err(e) => {
                    tally.failures.push(format!("connect: {e}"));
                    break;
                }
            },
        };
        match send(s, "/validate?timeout=5s", &uid, body.clone()).await {
            Outcome::Answered(_) => {
                sent += 1;
                tally.answered += 1;
            }
            Outcome::Refused => {
                sent += 1;
                tally.refused += 1;
                // An unfriendly client: it does not wait the Retry-After second, only a little.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Outcome::Closed => sender = None,
            Outcome::Failed(e) => {
                sent += 1;
                tally
                    .failures
                    .push(format!("{}: {e}", if h2 { "h2" } else { "HTTP/1.1" }));
                sender = None;
            }
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_reviews_are_answered_through_a_flood_of_large_ones() {
    let server = TestServer::start().await;
    let addr = server.running.addr;
    let ca = server.running.ca_file.clone().unwrap();
    let metrics = server.running.admitter.metrics.clone();

    let big_uid = "flood-large".to_string();
    let mut request = common::request_for(&wide_sandbox_pod(700), "CREATE", "default");
    request["uid"] = json!(big_uid);
    let big = Bytes::from(serde_json::to_vec(&common::wrap(request)).unwrap());
    assert!(
        (1900 * 1024..3 * 1024 * 1024).contains(&big.len()),
        "large review is {} bytes",
        big.len()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|i| {
            let h2 = i % 2 == 1;
            tokio::spawn(flood(
                addr,
                connector(&ca, h2),
                h2,
                big_uid.clone(),
                big.clone(),
                stop.clone(),
            ))
        })
        .collect();
    // The flood is on once the large budget is in use or refusals are counted (bounded wait).
    for _ in 0..2000 {
        let text = metrics.encode();
        if text.contains("sandbox_admission_overload_rejected_total")
            || text.lines().any(|l| {
                l.starts_with(r#"sandbox_admission_body_bytes_held{class="large"}"#)
                    && !l.ends_with(" 0")
            })
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The ordinary clients: the controller's Sandbox pods, one keep-alive connection each.
    let w = workload::Workload::from_fixtures(&workload::default_fixtures());
    assert!(!w.mutate.is_empty());
    let ordinary: Vec<_> = [false, true]
        .into_iter()
        .map(|h2| {
            let reviews = w.mutate.clone();
            let tls = connector(&ca, h2);
            tokio::spawn(async move {
                let mut sender = open(addr, &tls, h2)
                    .await
                    .expect("ordinary client connects");
                let mut answers = Vec::new();
                for i in 0..ORDINARY_PER_CLIENT {
                    let r = &reviews[i % reviews.len()];
                    let outcome = tokio::time::timeout(
                        GUARD,
                        send(
                            &mut sender,
                            "/mutate?timeout=10s",
                            &r.uid,
                            Bytes::from(r.body.clone()),
                        ),
                    )
                    .await
                    .unwrap_or(Outcome::Failed("no answer within the guard".into()));
                    answers.push(match outcome {
                        Outcome::Answered(json) => Ok(json),
                        Outcome::Refused => Err(format!("{}: refused for load", r.uid)),
                        Outcome::Closed => Err(format!("{}: connection closed", r.uid)),
                        Outcome::Failed(e) => Err(format!("{}: {e}", r.uid)),
                    });
                }
                answers
            })
        })
        .collect();
    let mut ordinary_answers = Vec::new();
    for client in ordinary {
        ordinary_answers.extend(client.await.expect("ordinary client does not panic"));
    }
    stop.store(true, Ordering::Relaxed);
    let mut flood_tally = Tally::default();
    for f in flooders {
        let t = tokio::time::timeout(GUARD, f)
            .await
            .expect("flooders stop")
            .expect("flooder does not panic");
        flood_tally.answered += t.answered;
        flood_tally.refused += t.refused;
        flood_tally.failures.extend(t.failures);
    }
    let rejected: Vec<String> = metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("sandbox_admission_overload_rejected_total"))
        .map(str::to_owned)
        .collect();
    eprintln!(
        "flood: {} large answered, {} refused, {} failed; {} ordinary reviews; {rejected:?}",
        flood_tally.answered,
        flood_tally.refused,
        flood_tally.failures.len(),
        ordinary_answers.len()
    );

    // Every ordinary review got its AdmissionReview, with the mutation.
    assert_eq!(ordinary_answers.len(), 2 * ORDINARY_PER_CLIENT);
    let failed: Vec<&String> = ordinary_answers
        .iter()
        .filter_map(|a| a.as_ref().err())
        .collect();
    assert!(
        failed.is_empty(),
        "ordinary reviews not answered: {failed:?}"
    );
    for answer in ordinary_answers.iter().flatten() {
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        assert!(answer["response"]["patch"].is_string(), "{answer}");
    }
    // Every large review got an answer or the documented refusal, nothing else.
    assert!(
        flood_tally.failures.is_empty(),
        "large reviews neither answered nor refused: {:?}",
        &flood_tally.failures[..flood_tally.failures.len().min(10)]
    );
    assert!(flood_tally.answered + flood_tally.refused > 0);
    assert!(
        flood_tally.refused > 0,
        "64 connections of 2 MiB bodies must exceed the default budgets"
    );
    // The server is still there.
    let mut after = open(addr, &connector(&ca, false), false).await.unwrap();
    let r = &w.mutate[0];
    assert!(matches!(
        send(&mut after, "/mutate", &r.uid, Bytes::from(r.body.clone())).await,
        Outcome::Answered(_)
    ));
    server.stop().await;
}
