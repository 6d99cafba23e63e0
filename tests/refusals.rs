//! Every refusal of the HTTPS port, over HTTP/1.1 and h2, with a real TLS client that keeps
//! sending its body while the answer comes back: 404, 405, 413 (declared and streamed), 429
//! (body budgets, per-connection share), 408 (slow body), 503 (no decision slot in time).
//!
//! "Arrives whole and the stream closes cleanly" is checked by what cannot happen otherwise: the
//! answer is parsed whole while the client still holds most of its body; then the client sends
//! the rest, more than the server's h2 windows (64 KiB stream, 256 KiB connection) could buffer,
//! which only gets through if the server reads it (a reset would fail the send); then the same
//! connection serves another request (over HTTP/1.1 only possible when the body was consumed).
//! Waits are bounded guards, never assertions on time.

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::{TestServer, request_for, test_config, wrap};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::{http1, http2};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use sandbox_admission::config::Config;
use sandbox_admission::server::limits::Class;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

/// Guard against a hang; never reached when the server behaves.
const GUARD: Duration = Duration::from_secs(20);
const CHUNK: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Proto {
    H1,
    H2,
}

const BOTH: [Proto; 2] = [Proto::H1, Proto::H2];

/// A request body the test feeds chunk by chunk.
struct ChanBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

enum Sender {
    H1(http1::SendRequest<ChanBody>),
    H2(http2::SendRequest<ChanBody>),
}

impl Sender {
    async fn send(&mut self, req: Request<ChanBody>) -> hyper::Result<Response<Incoming>> {
        match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }
}

async fn connect(server: &TestServer, proto: Proto) -> Sender {
    let pem = std::fs::read(server.running.ca_file.as_ref().unwrap()).unwrap();
    let mut tls = common::trusting(&[&pem]);
    tls.alpn_protocols = vec![match proto {
        Proto::H1 => b"http/1.1".to_vec(),
        Proto::H2 => b"h2".to_vec(),
    }];
    let tcp = tokio::net::TcpStream::connect(server.running.addr)
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let stream = TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let io = TokioIo::new(stream);
    match proto {
        Proto::H1 => {
            let (s, conn) = http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Sender::H1(s)
        }
        Proto::H2 => {
            let (s, conn) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
            tokio::spawn(conn);
            Sender::H2(s)
        }
    }
}

/// A request whose body the test sends through the returned channel.
fn request(
    proto: Proto,
    method: Method,
    path: &str,
    content_length: Option<usize>,
) -> (Request<ChanBody>, mpsc::Sender<Bytes>) {
    let (tx, rx) = mpsc::channel(1);
    let uri = match proto {
        Proto::H1 => path.to_string(),
        Proto::H2 => format!("https://localhost{path}"),
    };
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if proto == Proto::H1 {
        b = b.header("host", "localhost");
    }
    if let Some(n) = content_length {
        b = b.header("content-length", n);
    }
    (b.body(ChanBody { rx }).unwrap(), tx)
}

/// Status, headers and JSON of an answer, read whole.
async fn read_whole(resp: Response<Incoming>) -> (StatusCode, HeaderMap, Value) {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = tokio::time::timeout(GUARD, resp.into_body().collect())
        .await
        .expect("answer body within the guard")
        .expect("the answer arrives whole")
        .to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {bytes:?}"));
    (status, headers, json)
}

async fn send_chunks(tx: &mpsc::Sender<Bytes>, bytes: usize, what: &str) {
    let mut sent = 0;
    while sent < bytes {
        let n = CHUNK.min(bytes - sent);
        let ok = tokio::time::timeout(GUARD, tx.send(Bytes::from(vec![b' '; n]))).await;
        assert!(
            matches!(ok, Ok(Ok(()))),
            "{what}: the server stopped reading after {sent} of {bytes} bytes (reset or closed)"
        );
        sent += n;
    }
}

/// One ordinary review on `sender`: it must be an AdmissionReview echoing the uid.
async fn ordinary_review(sender: &mut Sender, proto: Proto, path: &str, uid: &str) -> StatusCode {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "plain", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let mut req = request_for(&pod, "CREATE", "default");
    req["uid"] = json!(uid);
    let body = serde_json::to_vec(&wrap(req)).unwrap();
    let (request, tx) = request(proto, Method::POST, path, Some(body.len()));
    tx.send(Bytes::from(body)).await.unwrap();
    drop(tx);
    let resp = tokio::time::timeout(GUARD, sender.send(request))
        .await
        .expect("answer within the guard")
        .expect("request answered");
    let (status, _, json) = read_whole(resp).await;
    if status == StatusCode::OK {
        assert_eq!(json["kind"], "AdmissionReview");
        assert_eq!(json["response"]["uid"], uid);
    }
    status
}

fn config_with(edit: impl FnOnce(&mut Config)) -> Config {
    let mut c = test_config();
    edit(&mut c);
    c
}

/// The server's own metric line value, 0 when absent.
fn metric(server: &TestServer, line_prefix: &str) -> f64 {
    server
        .running
        .admitter
        .metrics
        .encode()
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Wait (bounded) until a metric reaches a value.
async fn wait_metric(server: &TestServer, line_prefix: &str, value: f64) {
    for _ in 0..1000 {
        if metric(server, line_prefix) == value {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{line_prefix} never reached {value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answers_arrive_whole_while_the_client_is_still_sending() {
    const MAX: usize = 512 * 1024;
    let server = TestServer::start_with(config_with(|c| c.max_body_bytes = MAX), None).await;
    let total = MAX + MAX / 2; // 768 KiB: far more than the h2 windows hold unread
    let cases: [(Method, &str, Option<usize>, StatusCode, &str); 4] = [
        (
            Method::POST,
            "/nothing",
            Some(total),
            StatusCode::NOT_FOUND,
            "no such endpoint",
        ),
        (
            Method::PUT,
            "/mutate",
            Some(total),
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        ),
        (
            Method::POST,
            "/validate",
            Some(total),
            StatusCode::PAYLOAD_TOO_LARGE,
            "524288-byte limit",
        ),
        // No length: refused once the body grows past the limit.
        (
            Method::POST,
            "/mutate",
            None,
            StatusCode::PAYLOAD_TOO_LARGE,
            "524288-byte limit",
        ),
    ];
    for proto in BOTH {
        for (method, path, length, expected, text) in cases.clone() {
            let what = format!("{proto:?} {method} {path} (length {length:?})");
            let mut sender = connect(&server, proto).await;
            let (req, tx) = request(proto, method.clone(), path, length);
            // Declared bodies: the first chunk only, then the answer. Undeclared: enough to pass
            // the limit (the server must read that far to know).
            let first = if length.is_some() { CHUNK } else { MAX + CHUNK };
            let feeder = tokio::spawn(async move {
                send_chunks(&tx, first, "first part").await;
                tx
            });
            let resp = tokio::time::timeout(GUARD, sender.send(req))
                .await
                .expect("answer within the guard")
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let (status, headers, json) = read_whole(resp).await;
            assert_eq!(status, expected, "{what}: {json}");
            assert_eq!(json["code"], expected.as_u16(), "{what}");
            assert_eq!(json["kind"], "Status", "{what}");
            assert!(
                json["error"].as_str().unwrap().contains(text),
                "{what}: {json}"
            );
            if expected == StatusCode::METHOD_NOT_ALLOWED {
                assert_eq!(headers["allow"], "POST");
            }
            // The rest of the body: the server reads it (a reset fails these sends).
            let tx = feeder.await.unwrap();
            send_chunks(&tx, total - first, &what).await;
            drop(tx);
            // The same connection still serves.
            assert_eq!(
                ordinary_review(&mut sender, proto, "/mutate", "after-early-answer").await,
                StatusCode::OK,
                "{what}: connection unusable after the early answer"
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_the_h2_windows_is_reviewed() {
    let server = TestServer::start().await;
    // ~1.3 MiB: a pod with 500 containers, past the small-body size and the h2 windows.
    let containers: Vec<Value> = (0..500)
        .map(|i| json!({"name": format!("c{i}"), "image": "busybox",
            "env": (0..20).map(|j| json!({"name": format!("V{j}"), "value": "x".repeat(100)})).collect::<Vec<_>>()}))
        .collect();
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "wide", "namespace": "default"}, "spec": {"containers": containers}});
    let body = serde_json::to_vec(&wrap(request_for(&pod, "CREATE", "default"))).unwrap();
    assert!(body.len() > 1024 * 1024, "{}", body.len());
    for proto in BOTH {
        let mut sender = connect(&server, proto).await;
        let (req, tx) = request(proto, Method::POST, "/validate", Some(body.len()));
        let chunks: Vec<Bytes> = body.chunks(CHUNK).map(Bytes::copy_from_slice).collect();
        tokio::spawn(async move {
            for c in chunks {
                if tx.send(c).await.is_err() {
                    break;
                }
            }
        });
        let resp = tokio::time::timeout(GUARD * 3, sender.send(req))
            .await
            .expect("answer within the guard")
            .unwrap();
        let (status, _, json) = read_whole(resp).await;
        assert_eq!(status, StatusCode::OK, "{proto:?}: {json}");
        assert_eq!(json["kind"], "AdmissionReview", "{proto:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_budgets_are_refused_at_once_with_retry_after() {
    const KIB: usize = 1024;
    let server = TestServer::start_with(
        config_with(|c| {
            c.max_body_bytes = 512 * KIB;
            c.limits.small_body_bytes = 64 * KIB;
            c.limits.small_bodies_bytes = 64 * KIB;
            c.limits.large_bodies_bytes = 512 * KIB;
        }),
        None,
    )
    .await;
    for proto in BOTH {
        // A small body declared and only begun holds the whole small budget.
        let mut holder = connect(&server, proto).await;
        let (held, held_tx) = request(proto, Method::POST, "/validate", Some(64 * KIB));
        held_tx.send(Bytes::from(vec![b'x'; KIB])).await.unwrap();
        let held = tokio::spawn(async move { holder.send(held).await });
        wait_metric(
            &server,
            r#"sandbox_admission_body_bytes_held{class="small"}"#,
            (64 * KIB) as f64,
        )
        .await;
        let mut other = connect(&server, proto).await;
        let status = ordinary_review(&mut other, proto, "/mutate", "refused").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{proto:?}");

        // A large body: its own budget, untouched by the small one.
        let (big, big_tx) = request(proto, Method::POST, "/validate", Some(300 * KIB));
        big_tx.send(Bytes::from(vec![b'x'; KIB])).await.unwrap();
        let mut big_sender = connect(&server, proto).await;
        let big = tokio::spawn(async move {
            let r = big_sender.send(big).await;
            (r, big_sender)
        });
        wait_metric(
            &server,
            r#"sandbox_admission_body_bytes_held{class="large"}"#,
            (300 * KIB) as f64,
        )
        .await;
        // Another large body from another connection: the large budget is taken.
        let mut third = connect(&server, proto).await;
        let (req, tx) = request(proto, Method::POST, "/validate", Some(300 * KIB));
        tx.send(Bytes::from(vec![b'x'; KIB])).await.unwrap();
        let resp = tokio::time::timeout(GUARD, third.send(req))
            .await
            .unwrap()
            .unwrap();
        let (status, headers, json) = read_whole(resp).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{proto:?}: {json}");
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(json["reason"], "TooManyRequests");
        assert!(
            json["message"]
                .as_str()
                .unwrap()
                .contains("large request bodies"),
            "{json}"
        );
        drop(tx);

        // The held bodies complete and are answered (not JSON: 400), then budgets are free.
        send_chunks(&held_tx, 63 * KIB, "held small body").await;
        drop(held_tx);
        let (status, _, _) = read_whole(held.await.unwrap().unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        send_chunks(&big_tx, 299 * KIB, "held large body").await;
        drop(big_tx);
        let (resp, _) = big.await.unwrap();
        let (status, _, _) = read_whole(resp.unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let mut fresh = connect(&server, proto).await;
        assert_eq!(
            ordinary_review(&mut fresh, proto, "/mutate", "after").await,
            StatusCode::OK,
            "{proto:?}"
        );
    }
    assert!(
        metric(
            &server,
            r#"sandbox_admission_overload_rejected_total{reason="small_body_budget"}"#
        ) >= 2.0
    );
    assert!(
        metric(
            &server,
            r#"sandbox_admission_overload_rejected_total{reason="large_body_budget"}"#
        ) >= 2.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_h2_connection_holds_one_large_body_at_a_time() {
    let server = TestServer::start().await;
    let mut sender = connect(&server, Proto::H2).await;
    let Sender::H2(h2) = &sender else {
        unreachable!()
    };
    let mut second_stream = Sender::H2(h2.clone());
    let (first, first_tx) = request(Proto::H2, Method::POST, "/validate", Some(1024 * 1024));
    first_tx.send(Bytes::from(vec![b'x'; 1024])).await.unwrap();
    let first = tokio::spawn(async move { sender.send(first).await });
    wait_metric(
        &server,
        r#"sandbox_admission_body_bytes_held{class="large"}"#,
        (1024 * 1024) as f64,
    )
    .await;
    let (req, tx) = request(Proto::H2, Method::POST, "/validate", Some(1024 * 1024));
    tx.send(Bytes::from(vec![b'x'; 1024])).await.unwrap();
    let resp = tokio::time::timeout(GUARD, second_stream.send(req))
        .await
        .unwrap()
        .unwrap();
    let (status, _, json) = read_whole(resp).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("this connection"),
        "{json}"
    );
    // Another connection may still send a large body.
    let mut other = connect(&server, Proto::H2).await;
    let (req, other_tx) = request(Proto::H2, Method::POST, "/validate", Some(300 * 1024));
    let feeder = tokio::spawn(async move { send_chunks(&other_tx, 300 * 1024, "other").await });
    let (status, _, _) = read_whole(other.send(req).await.unwrap()).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "its garbage is read and refused"
    );
    feeder.await.unwrap();
    drop((tx, first_tx));
    let _ = first.await;
    assert_eq!(
        metric(
            &server,
            r#"sandbox_admission_overload_rejected_total{reason="connection_share"}"#
        ),
        1.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_cut_off_by_the_body_deadline() {
    let server = TestServer::start_with(
        config_with(|c| c.limits.body_read_timeout_seconds = 1),
        None,
    )
    .await;
    for proto in BOTH {
        let mut sender = connect(&server, proto).await;
        let (req, tx) = request(proto, Method::POST, "/validate", Some(3000));
        // A few bytes, then silence (the one-byte-a-second client, compressed).
        tx.send(Bytes::from_static(b"{\"apiVersion\""))
            .await
            .unwrap();
        let resp = tokio::time::timeout(GUARD, sender.send(req))
            .await
            .expect("answer within the guard")
            .unwrap();
        let (status, _, json) = read_whole(resp).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{proto:?}: {json}");
        assert!(
            json["error"]
                .as_str()
                .unwrap()
                .contains("not received within")
        );
        drop(tx);
        // Its reservation is given back.
        wait_metric(
            &server,
            r#"sandbox_admission_body_bytes_held{class="small"}"#,
            0.0,
        )
        .await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_still_queued_at_its_deadline_is_refused_not_decided() {
    let server = TestServer::start_with(
        config_with(|c| {
            c.limits.max_reviews = 1;
            c.limits.max_large_reviews = 1;
        }),
        None,
    )
    .await;
    for proto in BOTH {
        // Hold the only decision slot.
        let far = tokio::time::Instant::now() + Duration::from_secs(60);
        let slot = server.running.limits.slot(Class::Small, far).await.unwrap();
        let decided = metric(&server, "sandbox_admission_requests_total");
        let mut sender = connect(&server, proto).await;
        let status = ordinary_review(&mut sender, proto, "/mutate?timeout=1s", "late").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{proto:?}");
        assert_eq!(
            metric(&server, "sandbox_admission_requests_total"),
            decided,
            "nothing was decided for the late review"
        );
        drop(slot);
        assert_eq!(
            ordinary_review(&mut sender, proto, "/mutate?timeout=1s", "in-time").await,
            StatusCode::OK
        );
    }
    assert_eq!(
        metric(
            &server,
            r#"sandbox_admission_overload_rejected_total{reason="queue_deadline"}"#
        ),
        2.0
    );
    server.stop().await;
}

/// The decision log holds what waits in bytes: a record bigger than its queue is dropped and
/// counted, never queued.
#[tokio::test]
async fn decision_records_past_the_queue_bytes_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with(|c| {
        c.decision_log.file = Some(dir.path().join("d.log"));
        c.decision_log.include_objects = true;
        c.decision_log.max_queue_bytes = 64 * 1024;
    });
    let server = TestServer::start_full(config, None, None, true).await;
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "big", "namespace": "default", "annotations": {"a": "x".repeat(100 * 1024)}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let (status, _) = server
        .post(
            "/validate",
            serde_json::to_vec(&wrap(request_for(&pod, "CREATE", "default"))).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        metric(&server, "sandbox_admission_decision_log_dropped_total"),
        1.0
    );
    pod["metadata"]["annotations"] = json!({});
    let (status, _) = server
        .post(
            "/validate",
            serde_json::to_vec(&wrap(request_for(&pod, "CREATE", "default"))).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        metric(&server, "sandbox_admission_decision_log_dropped_total"),
        1.0,
        "an ordinary record is written"
    );
    server.stop().await;
}
