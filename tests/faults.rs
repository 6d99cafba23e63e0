//! Faults under load, on loopback with real TLS: policy reloads (one broken), certificate rotation
//! and shutdown while a steady stream of reviews flows, many idle connections, and a slowloris
//! client.
//!
//! Every loop is bounded by a request count or an iteration count; sleeps only pace the scenario.
//! Nothing here asserts how fast anything is (figures belong to `examples/loadgen`).

mod common;
mod stream;
#[path = "../examples/loadgen/workload.rs"]
mod workload;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{TestServer, test_config};
use sandbox_admission::certs::{self, PemPair, TlsFiles};
use sandbox_admission::policy::PolicySource;
use stream::{Outcome, Tally};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A bounded mix of real reviews: Sandbox pods for `/mutate`, mixed kinds for `/validate`.
fn reviews() -> Arc<Vec<(String, String, Vec<u8>)>> {
    let w = workload::Workload::from_fixtures(&workload::default_fixtures());
    assert!(!w.mutate.is_empty() && !w.validate.is_empty());
    let mutate = w.mutate.iter().take(8).map(|r| ("/mutate", r));
    let validate = w.validate.iter().take(16).map(|r| ("/validate", r));
    Arc::new(
        mutate
            .chain(validate)
            .map(|(p, r)| (p.to_string(), r.uid.clone(), r.body.clone()))
            .collect(),
    )
}

/// Start `n` stream workers; half keep one connection, half reconnect every 3 requests.
fn spawn_stream(
    server: &TestServer,
    n: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Tally>> {
    let ca = server.running.ca_file.clone().expect("self-signed CA");
    let connector = stream::connector(&ca);
    let reviews = reviews();
    (0..n)
        .map(|i| {
            let reconnect = if i % 2 == 0 { usize::MAX } else { 3 };
            tokio::spawn(stream::worker(
                server.running.addr,
                connector.clone(),
                reviews.clone(),
                reconnect,
                200_000,
                stop.clone(),
            ))
        })
        .collect()
}

async fn join(handles: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    let mut total = Tally::default();
    for h in handles {
        total.add(h.await.expect("worker does not panic"));
    }
    total
}

/// Wait (bounded) until the server has decided at least `n` more reviews than `from`.
async fn wait_for_progress(server: &TestServer, from: u64, n: u64) -> u64 {
    for _ in 0..600 {
        let now = stream::decided(&server.running.admitter.metrics.encode());
        if now >= from + n {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the stream made no progress");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotated_twice_under_load_fails_no_request() {
    let server = TestServer::start().await;
    let cert_dir = server.dir.path().join("certs");
    let ca = PemPair {
        cert: std::fs::read_to_string(cert_dir.join(certs::CA_FILE)).unwrap(),
        key: std::fs::read_to_string(cert_dir.join(certs::CA_KEY_FILE)).unwrap(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let workers = spawn_stream(&server, 4, &stop);
    let mut seen = wait_for_progress(&server, 0, 20).await;
    let connector = stream::connector(&cert_dir.join(certs::CA_FILE));
    for round in 0..2 {
        // Renew the serving certificate (same CA, as cert-manager does) and swap it in.
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let serving = certs::generate_serving(&ca, &names, 1).unwrap();
        let dir = server.dir.path().join(format!("rotated-{round}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tls.crt"), &serving.cert).unwrap();
        std::fs::write(dir.join("tls.key"), &serving.key).unwrap();
        let files = TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            client_ca: None,
        };
        let config = certs::server_config(&files).unwrap();
        server.running.tls.store(Arc::new(config));

        // A new connection is served with the new certificate.
        let fresh = stream::tls(server.running.addr, &connector).await.unwrap();
        let presented = fresh.get_ref().1.peer_certificates().unwrap()[0].clone();
        let expected = certs::parse_certs(&files.cert, serving.cert.as_bytes()).unwrap()[0].clone();
        assert_eq!(
            presented, expected,
            "round {round}: new handshakes use the new certificate"
        );
        seen = wait_for_progress(&server, seen, 30).await;
    }
    stop.store(true, Ordering::Relaxed);
    let tally = join(workers).await;
    eprintln!("rotation: {tally:?}");
    assert!(tally.failures.is_empty(), "failed: {:?}", tally.failures);
    assert!(
        tally.connect_errors.is_empty(),
        "{:?}",
        tally.connect_errors
    );
    assert_eq!(tally.not_accepted, 0, "no request may be dropped");
    assert!(tally.answered >= 80, "answered {}", tally.answered);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_answers_every_accepted_request() {
    let server = TestServer::start().await;
    let metrics = server.running.admitter.metrics.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let workers = spawn_stream(&server, 6, &stop);
    wait_for_progress(&server, 0, 30).await;
    let TestServer { running, dir, .. } = server;
    running.shutdown().await;
    stop.store(true, Ordering::Relaxed);
    let tally = join(workers).await;
    drop(dir);
    eprintln!("shutdown: {tally:?}");
    // Every review the pipeline decided reached its client intact; nothing failed half-way.
    assert!(tally.failures.is_empty(), "failed: {:?}", tally.failures);
    let decided = stream::decided(&metrics.encode());
    assert_eq!(
        tally.answered, decided,
        "answered {} of {} decided (not accepted: {})",
        tally.answered, decided, tally.not_accepted
    );
    assert!(decided >= 30);
}

const FAULT_META: &str =
    "name: fault-version\nkinds:\n  - {group: agents.x-k8s.io, kind: Sandbox}\n";

fn write_policy_set(dir: &std::path::Path, version: Option<u32>) {
    let rego = match version {
        Some(v) => format!(
            "package faults.version\n\nimport rego.v1\n\nviolation contains {{\"msg\": \"version {v}\"}} if {{\n\tinput.review.object.metadata.labels[\"fault-test\"] == \"deny\"\n}}\n"
        ),
        None => "package faults.version\n\nviolation contains {\"msg\": \n".to_string(),
    };
    // Write aside and rename, as editors and ConfigMap swaps do.
    for (name, text) in [("fault.rego", rego.as_str()), ("fault.yaml", FAULT_META)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

/// The message the server gives a Sandbox labelled for denial, over HTTPS.
async fn probe(server: &TestServer, n: u32) -> String {
    let mut sandbox = serde_json::json!({
        "apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
        "metadata": {"name": format!("probe-{n}"), "namespace": "default", "labels": {"fault-test": "deny"}},
        "spec": {"podTemplate": {"spec": {"runtimeClassName": "gvisor", "containers": [{"name": "c", "image": "busybox"}]}}}
    });
    sandbox["metadata"]["uid"] = serde_json::json!(n);
    let response = server
        .review(
            "/validate",
            common::request_for(&sandbox, "CREATE", "default"),
        )
        .await;
    response["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_reloaded_ten_times_with_a_broken_set_fail_no_request() {
    let server = TestServer::start().await;
    let dir = server.dir.path().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    write_policy_set(&dir, Some(0));
    let store = server.running.admitter.policies.clone();
    store.reload(&PolicySource::Dir(dir.clone())).unwrap();
    assert!(
        probe(&server, 0)
            .await
            .contains("[fault-version] version 0")
    );

    let stop = Arc::new(AtomicBool::new(false));
    let workers = spawn_stream(&server, 4, &stop);
    let mut seen = wait_for_progress(&server, 0, 20).await;
    let mut serving = 0;
    for round in 1..=10u32 {
        let broken = round == 6;
        write_policy_set(&dir, if broken { None } else { Some(round) });
        let result = store.reload(&PolicySource::Dir(dir.clone()));
        if broken {
            assert!(result.is_err(), "a broken set is refused");
        } else {
            result.unwrap();
            serving = round;
        }
        // The last good set serves, including right after the broken one.
        let message = probe(&server, round).await;
        assert!(
            message.contains(&format!("[fault-version] version {serving}")),
            "round {round}: {message}"
        );
        seen = wait_for_progress(&server, seen, 10).await;
    }
    stop.store(true, Ordering::Relaxed);
    let tally = join(workers).await;
    assert!(tally.failures.is_empty(), "failed: {:?}", tally.failures);
    assert!(
        tally.connect_errors.is_empty(),
        "{:?}",
        tally.connect_errors
    );
    assert_eq!(tally.not_accepted, 0, "no request may be dropped");
    let status = store.status();
    assert!(status.last_error.is_none(), "{:?}", status.last_error);
    server.stop().await;
}

/// The soft limit on open files, from `/proc/self/limits` (Linux); None elsewhere.
fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_block_a_new_client() {
    // Both ends live in this process, so each connection costs two descriptors. With the common
    // 1024 soft limit we hold fewer than 1,000 (and say so) rather than fail on EMFILE.
    let limit = open_file_limit().unwrap_or(1024);
    let n = 1000.min((limit.saturating_sub(200) / 2) as usize);
    if n < 1000 {
        eprintln!("open-file soft limit {limit}: holding {n} idle connections instead of 1000");
    }
    let server = TestServer::start().await;
    let addr = server.running.addr;
    let ca = server.running.ca_file.clone().unwrap();
    let connector = stream::connector(&ca);
    let mut tcp_only = Vec::new();
    let mut with_tls = Vec::new();
    for batch in 0..n.div_ceil(50) {
        let count = 50.min(n - batch * 50);
        let opens = (0..count).map(|i| {
            let connector = connector.clone();
            async move {
                if i % 2 == 0 {
                    Err(tokio::net::TcpStream::connect(addr).await.unwrap())
                } else {
                    Ok(stream::tls(addr, &connector).await.unwrap())
                }
            }
        });
        for conn in futures::future::join_all(opens).await {
            match conn {
                Err(tcp) => tcp_only.push(tcp),
                Ok(tls) => with_tls.push(tls),
            }
        }
    }
    assert_eq!(tcp_only.len() + with_tls.len(), n);

    let mut sender = stream::open(addr, &connector).await.unwrap();
    let reviews = reviews();
    let (path, uid, body) = &reviews[0];
    match stream::post(&mut sender, path, uid, body).await {
        Outcome::Answered(json) => assert_eq!(json["response"]["uid"], uid.as_str()),
        other => panic!("new client not served while {n} connections idle: {other:?}"),
    }
    drop((tcp_only, with_tls));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_by_the_header_timeout() {
    let mut config = test_config();
    config.header_timeout_seconds = 1;
    let server = TestServer::start_with(config, None).await;
    let ca = server.running.ca_file.clone().unwrap();
    let connector = stream::connector(&ca);
    let mut slow = stream::tls(server.running.addr, &connector).await.unwrap();
    slow.write_all(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\nx-slow: ")
        .await
        .unwrap();
    slow.flush().await.unwrap();
    // One header byte every 500 ms, for at most 30 bytes (15 s, fifteen times the timeout).
    let mut cut_off = None;
    for sent in 0..30 {
        if slow.write_all(b"a").await.is_err() || slow.flush().await.is_err() {
            cut_off = Some(sent);
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(500), slow.read(&mut buf)).await {
            Err(_) => continue,
            // EOF, a reset, or an error answer (408/400) then close: the server let go.
            Ok(_) => {
                cut_off = Some(sent);
                break;
            }
        }
    }
    eprintln!("slowloris cut off after {cut_off:?} paced bytes");
    assert!(
        cut_off.is_some(),
        "the slow client was never cut off (sent 30 bytes over 15 s with a 1 s header timeout)"
    );
    // And the server keeps serving everyone else.
    let mut sender = stream::open(server.running.addr, &connector).await.unwrap();
    let reviews = reviews();
    let (path, uid, body) = &reviews[0];
    assert!(matches!(
        stream::post(&mut sender, path, uid, body).await,
        Outcome::Answered(_)
    ));
    server.stop().await;
}
