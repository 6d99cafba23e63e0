//! `sandbox-admission certs` output, served by `serve --tls-cert/--tls-key`, verified the way the
//! API server verifies it: against the printed caBundle, for the Service's DNS name.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use clap::Parser;
use rustls_pki_types::ServerName;
use sandbox_admission::certs;
use sandbox_admission::cli::{self, Cli};
use sandbox_admission::server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const SERVICE: &str = "hook";
const NAMESPACE: &str = "guard";

fn run_certs(out: &Path) -> Vec<u8> {
    let output = Command::new(env!("CARGO_BIN_EXE_sandbox-admission"))
        .args([
            "certs",
            "--service",
            SERVICE,
            "--namespace",
            NAMESPACE,
            "--out",
        ])
        .arg(out)
        .args(["--days", "2", "--kustomize-patch"])
        .arg(out.join("ca-bundle-patch.yaml"))
        .output()
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(printed.trim())
        .expect("stdout is the base64 caBundle")
}

/// Handshake with `name` as the server name (SNI and verification), trusting only `ca_bundle`,
/// then send one admission review over HTTP/1.1; returns the status line.
async fn call(port: u16, name: &str, ca_bundle: &[u8]) -> Result<String, String> {
    let config = common::trusting(&[ca_bundle]);
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let body = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","operation":"CREATE","namespace":"d","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}}}"#;
    let request = format!(
        "POST /validate HTTP/1.1\r\nhost: {name}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert!(answer.contains("\"uid\":\"u1\""), "{answer}");
    Ok(answer.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn certs_output_serves_tls_for_the_service_name() {
    certs::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let ca_bundle = run_certs(&out);
    assert_eq!(ca_bundle, std::fs::read(out.join("ca.crt")).unwrap());
    let patch = std::fs::read_to_string(out.join("ca-bundle-patch.yaml")).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&ca_bundle);
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&patch).unwrap();
    assert_eq!(docs.len(), 2);
    for doc in &docs {
        assert_eq!(
            doc["metadata"]["name"], SERVICE,
            "configurations are named like the Service"
        );
        for w in doc["webhooks"].as_array().unwrap() {
            assert_eq!(w["clientConfig"]["caBundle"], encoded.as_str());
        }
    }

    let cert = out.join("tls.crt");
    let key = out.join("tls.key");
    let cli = Cli::try_parse_from([
        "sandbox-admission",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--health-listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .unwrap();
    let cli::Command::Serve(args) = cli.command else {
        panic!("serve");
    };
    let mut settings = cli::serve_settings(args).unwrap();
    settings.decision_log = false;
    let running = server::start(settings).await.unwrap();
    let port = running.addr.port();

    for name in [
        format!("{SERVICE}.{NAMESPACE}.svc"),
        format!("{SERVICE}.{NAMESPACE}.svc.cluster.local"),
        format!("{SERVICE}.{NAMESPACE}"),
        SERVICE.to_string(),
    ] {
        let status = call(port, &name, &ca_bundle).await.unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK", "{name}");
    }
    // Another Service's name does not verify, nor does another CA.
    let err = call(port, &format!("other.{NAMESPACE}.svc"), &ca_bundle)
        .await
        .unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
    let other_ca = certs::generate_ca("other", 1).unwrap();
    let err = call(
        port,
        &format!("{SERVICE}.{NAMESPACE}.svc"),
        other_ca.cert.as_bytes(),
    )
    .await
    .unwrap_err();
    assert!(err.contains("invalid peer certificate"), "{err}");
    running.shutdown().await;
}

#[test]
fn certs_with_an_existing_ca_keeps_the_ca_and_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let bundle = run_certs(&first);
    let second = dir.path().join("second");
    let output = Command::new(env!("CARGO_BIN_EXE_sandbox-admission"))
        .args([
            "certs",
            "--service",
            SERVICE,
            "--namespace",
            NAMESPACE,
            "--out",
        ])
        .arg(&second)
        .arg("--ca-cert")
        .arg(first.join("ca.crt"))
        .arg("--ca-key")
        .arg(first.join("ca.key"))
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = base64::engine::general_purpose::STANDARD
        .decode(String::from_utf8(output.stdout).unwrap().trim())
        .unwrap();
    assert_eq!(printed, bundle, "same CA, same caBundle");
    assert!(
        !second.join("ca.key").exists(),
        "the CA key is not copied around"
    );
    let names = vec![format!("{SERVICE}.{NAMESPACE}.svc")];
    assert!(certs::covers(
        &std::fs::read(second.join("tls.crt")).unwrap(),
        &names
    ));
}

#[test]
fn manage_certs_serves_from_the_cert_dir_it_fills() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("tls");
    let parse = |extra: &[&str]| {
        let mut argv = vec!["sandbox-admission", "serve", "--manage-certs"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv)
    };
    let cli = parse(&["--cert-dir", empty.to_str().unwrap()]).unwrap();
    let cli::Command::Serve(args) = cli.command else {
        panic!("serve");
    };
    let settings = cli::serve_settings(args).unwrap();
    // Not a self-signed directory: the files do not exist yet, --manage-certs writes them.
    match settings.tls {
        server::TlsSource::Files(files) => {
            assert_eq!(files.cert, empty.join("tls.crt"));
            assert_eq!(files.key, empty.join("tls.key"));
        }
        other => panic!("expected files, got {other:?}"),
    }
    assert!(parse(&["--tls-cert", "a", "--tls-key", "b"]).is_err());
    assert!(Cli::try_parse_from(["sandbox-admission", "serve", "--cert-secret", "s"]).is_err());
}
