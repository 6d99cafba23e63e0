//! SIGTERM to the real binary while requests are in flight: none is lost, exit code 0.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{request_for, wrap};
use rustls_pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn connector(ca: &std::path::Path) -> TlsConnector {
    let pem = std::fs::read(ca).unwrap();
    TlsConnector::from(Arc::new(common::trusting(&[&pem])))
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox-admission"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--health-listen",
            "127.0.0.1:0",
        ])
        .arg("--cert-dir")
        .arg(dir.path().join("certs"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server prints its ready line");
        if line.contains("ready in") {
            break line;
        }
    };
    let addr = ready
        .split("https://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("address in ready line")
        .to_string();
    let tls = connector(&dir.path().join("certs/ca.crt"));

    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}});
    let mut in_flight = Vec::new();
    for i in 0..5 {
        let mut request = request_for(&pod, "CREATE", "default");
        request["uid"] = json!(format!("in-flight-{i}"));
        let body = serde_json::to_vec(&wrap(request)).unwrap();
        let tcp = TcpStream::connect(&addr).await.unwrap();
        let mut stream = tls
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let head = format!(
            "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let (first, rest) = body.split_at(10);
        stream.write_all(first).await.unwrap();
        stream.flush().await.unwrap();
        in_flight.push((stream, rest.to_vec(), i));
    }
    // Let the server read the headers, then signal while every body is half sent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (mut stream, rest, i) in in_flight {
        stream.write_all(&rest).await.unwrap();
        stream.flush().await.unwrap();
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 200"), "request {i}: {text}");
        assert!(
            text.contains(&format!("\"uid\":\"in-flight-{i}\"")),
            "request {i}: {text}"
        );
        assert!(text.contains("\"allowed\":true"), "request {i}: {text}");
    }
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}
