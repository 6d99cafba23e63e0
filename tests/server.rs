//! The server over real TLS: the wire contract, every kind of bad input, health endpoints.

mod common;

use std::time::Duration;

use common::{TestServer, request_for, test_config, wrap};
use hyper::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn plain_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

async fn assert_still_serving(server: &TestServer) {
    let response = server
        .review("/mutate", request_for(&plain_pod(), "CREATE", "default"))
        .await;
    assert_eq!(response["allowed"], true);
}

#[tokio::test]
async fn valid_review_gets_a_well_formed_answer() {
    let server = TestServer::start().await;
    for path in ["/mutate", "/validate"] {
        let response = server
            .review(path, request_for(&plain_pod(), "CREATE", "default"))
            .await;
        assert_eq!(response["allowed"], true, "{path}: {response}");
        assert!(
            response.get("patch").is_none(),
            "a plain pod is not patched"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn envelope_errors_are_400_with_a_json_reason() {
    let server = TestServer::start().await;
    let mut no_uid = request_for(&plain_pod(), "CREATE", "default");
    no_uid.as_object_mut().unwrap().remove("uid");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not json", b"{not json".to_vec(), "not valid JSON"),
        ("not a review", b"[1,2,3]".to_vec(), "not an AdmissionReview"),
        (
            "wrong apiVersion",
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}"#.to_vec(),
            "admission.k8s.io/v1 only",
        ),
        (
            "wrong kind",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#.to_vec(),
            "kind must be",
        ),
        (
            "missing request",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            "no \"request\"",
        ),
        ("missing uid", serde_json::to_vec(&wrap(no_uid)).unwrap(), "no \"uid\""),
        ("non-UTF-8", vec![0xff, 0xfe, 0x00, 0x7b], "not valid JSON"),
    ];
    for (what, body, expect) in cases {
        for path in ["/mutate", "/validate"] {
            let (status, answer) = server.post(path, body.clone()).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{what} on {path}: {answer}"
            );
            let message = answer["error"].as_str().unwrap_or_default();
            assert!(message.contains(expect), "{what}: {message}");
            assert!(answer.pointer("/response/allowed").is_none());
        }
        assert_still_serving(&server).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn malformed_request_with_a_uid_is_denied_by_review() {
    let server = TestServer::start().await;
    let mut wrong_object = request_for(&plain_pod(), "CREATE", "default");
    wrong_object["object"] = json!("a string, not an object");
    let mut no_object = request_for(&plain_pod(), "CREATE", "default");
    no_object.as_object_mut().unwrap().remove("object");
    let mut bad_op = request_for(&plain_pod(), "CREATE", "default");
    bad_op["operation"] = json!("PATCH");
    let mut bad_kind = request_for(&plain_pod(), "CREATE", "default");
    bad_kind["kind"] = json!("Pod");
    for (what, request) in [
        ("object of the wrong shape", wrong_object),
        ("CREATE without object", no_object),
        ("unknown operation", bad_op),
        ("kind of the wrong shape", bad_kind),
    ] {
        for path in ["/mutate", "/validate"] {
            let response = server.review(path, request.clone()).await;
            assert_eq!(response["allowed"], false, "{what} on {path}");
            assert_eq!(response["status"]["code"], 400, "{what}");
            assert!(
                response["status"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("malformed request"),
                "{what}: {response}"
            );
            assert!(response.get("patch").is_none());
        }
    }
    assert_still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let mut config = test_config();
    config.max_body_bytes = 64 * 1024;
    let server = TestServer::start_with(config, None).await;
    let mut pod = plain_pod();
    pod["metadata"]["annotations"] = json!({"big": "x".repeat(100 * 1024)});
    let body = serde_json::to_vec(&wrap(request_for(&pod, "CREATE", "default"))).unwrap();
    let (status, answer) = server.post("/mutate", body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("65536-byte limit")
    );
    assert_still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn wrong_method_and_path() {
    let server = TestServer::start().await;
    let req = hyper::Request::get(format!("{}/mutate", server.base))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = server.client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "POST");
    let (status, answer) = server.post("/admit", b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("/mutate or /validate")
    );
    assert_still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_a_clear_400() {
    let server = TestServer::start().await;
    let mut stream = TcpStream::connect(server.running.addr).await.unwrap();
    stream
        .write_all(b"POST /mutate HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("speaks HTTPS only"), "{answer}");
    assert_still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_cut_off_and_others_are_served() {
    let mut config = test_config();
    config.header_timeout_seconds = 1;
    let server = TestServer::start_with(config, None).await;
    let mut silent = TcpStream::connect(server.running.addr).await.unwrap();
    // Meanwhile another client is served.
    assert_still_serving(&server).await;
    let mut buf = [0u8; 16];
    // The server closes the silent connection after its header timeout; bounded wait.
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf))
        .await
        .expect("the server closes a silent connection");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "connection closed, got {read:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn health_ready_and_metrics_answer() {
    let server = TestServer::start().await;
    let (status, body) = server.get_health("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.trim(), "ok");
    let (status, body) = server.get_health("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["checks"]["tls"]["ok"], true);
    assert_eq!(ready["checks"]["policies"]["ok"], true);
    assert_still_serving(&server).await;
    let _ = server.post("/validate", b"garbage".to_vec()).await;
    let (status, metrics) = server.get_health("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains(
            r#"sandbox_admission_requests_total{endpoint="mutate",kind="Pod",operation="CREATE",decision="allowed"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"sandbox_admission_rejected_input_total{reason="not_json"} 1"#));
    assert!(metrics.contains("sandbox_admission_request_duration_seconds_bucket"));
    assert!(metrics.contains("sandbox_admission_in_flight_requests 0"));
    server.stop().await;
}

#[tokio::test]
async fn h2_and_http1_both_work() {
    let server = TestServer::start().await;
    let body = serde_json::to_vec(&wrap(request_for(&plain_pod(), "CREATE", "default"))).unwrap();
    let req = hyper::Request::post(format!("{}/mutate", server.base))
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = server.client.request(req).await.unwrap();
    // The client offers h2 and http/1.1; the server prefers h2.
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    server.stop().await;
}
