//! `--manage-certs` through kube's real client against a stand-in API server: it keeps the Secret
//! and the two webhook configurations as state and answers in kube-apiserver's JSON (the bodies in
//! `tests/fixtures/api-server/`, hand-written in its format). Every request's method, path, query
//! and body is checked, and the files written are served by the real TLS stack.

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use sandbox_admission::certs::manage::kube_api::KubeCertApi;
use sandbox_admission::certs::manage::plan::{BUNDLE, Lifetimes, TLS_CERT, TLS_KEY};
use sandbox_admission::certs::manage::{ManageSettings, Outcome, WebhookKind, reconcile};
use sandbox_admission::certs::{self, TlsFiles};
use serde_json::{Value, json};

const SECRET_PATH: &str = "/api/v1/namespaces/sandbox-admission/secrets/sandbox-admission-tls";
const SECRETS_PATH: &str = "/api/v1/namespaces/sandbox-admission/secrets";
const MUTATING_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/sandbox-admission";
const VALIDATING_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/sandbox-admission";

fn recorded(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/api-server")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// One request as the API server received it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

/// The API server's state for the objects involved, and what it was sent.
#[derive(Default)]
struct ApiServer {
    secret: Option<Value>,
    mutating: Value,
    validating: Value,
    /// Answers queued ahead of the normal behaviour, e.g. a 409 from a concurrent writer,
    /// with the Secret the other writer left behind.
    interrupts: VecDeque<(Method, Value, Option<Value>)>,
    seen: Vec<Seen>,
    next_rv: u64,
}

impl ApiServer {
    fn new() -> Arc<Mutex<ApiServer>> {
        Arc::new(Mutex::new(ApiServer {
            mutating: recorded("mutatingwebhookconfiguration-sandbox-admission.json"),
            validating: recorded("validatingwebhookconfiguration-sandbox-admission.json"),
            next_rv: 2000,
            ..Default::default()
        }))
    }

    fn store_secret(&mut self, mut object: Value) -> Value {
        self.next_rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.next_rv.to_string());
        object["metadata"]["uid"] = json!("6f1d2c3b-0000-4000-8000-000000000001");
        object["metadata"]["creationTimestamp"] = json!("2026-11-28T17:02:12Z");
        self.secret = Some(object.clone());
        object
    }

    fn answer(&mut self, seen: Seen) -> (StatusCode, Value) {
        self.seen.push(seen.clone());
        if let Some(pos) = self
            .interrupts
            .iter()
            .position(|(m, _, _)| *m == seen.method)
        {
            let (_, status, left_behind) = self.interrupts.remove(pos).unwrap();
            if let Some(secret) = left_behind {
                self.store_secret(secret);
            }
            let code = StatusCode::from_u16(status["code"].as_u64().unwrap() as u16).unwrap();
            return (code, status);
        }
        match (seen.method.clone(), seen.path.as_str()) {
            (Method::GET, SECRET_PATH) => match &self.secret {
                Some(s) => (StatusCode::OK, s.clone()),
                None => (
                    StatusCode::NOT_FOUND,
                    recorded("secret-sandbox-admission-tls-404.json"),
                ),
            },
            (Method::POST, SECRETS_PATH) => {
                if self.secret.is_some() {
                    return (
                        StatusCode::CONFLICT,
                        recorded("secret-sandbox-admission-tls-409-exists.json"),
                    );
                }
                (StatusCode::CREATED, self.store_secret(seen.body))
            }
            (Method::PUT, SECRET_PATH) => {
                let current = self.secret.as_ref().unwrap()["metadata"]["resourceVersion"].clone();
                if seen.body["metadata"]["resourceVersion"] != current {
                    return (
                        StatusCode::CONFLICT,
                        recorded("secret-sandbox-admission-tls-409-conflict.json"),
                    );
                }
                (StatusCode::OK, self.store_secret(seen.body))
            }
            (Method::GET, MUTATING_PATH) => (StatusCode::OK, self.mutating.clone()),
            (Method::GET, VALIDATING_PATH) => (StatusCode::OK, self.validating.clone()),
            (Method::PATCH, MUTATING_PATH) => {
                merge_webhooks(&mut self.mutating, &seen.body);
                (StatusCode::OK, self.mutating.clone())
            }
            (Method::PATCH, VALIDATING_PATH) => {
                merge_webhooks(&mut self.validating, &seen.body);
                (StatusCode::OK, self.validating.clone())
            }
            _ => panic!("unexpected request {} {}", seen.method, seen.path),
        }
    }
}

/// Strategic merge of `webhooks` by name, as the API server does for this list.
fn merge_webhooks(config: &mut Value, patch: &Value) {
    for p in patch["webhooks"].as_array().unwrap() {
        let hooks = config["webhooks"].as_array_mut().unwrap();
        let hook = hooks
            .iter_mut()
            .find(|h| h["name"] == p["name"])
            .unwrap_or_else(|| panic!("patch names an unknown webhook {}", p["name"]));
        hook["clientConfig"]["caBundle"] = p["clientConfig"]["caBundle"].clone();
    }
}

fn client(server: Arc<Mutex<ApiServer>>) -> kube::Client {
    let service = tower::service_fn(move |req: Request<kube::client::Body>| {
        let server = server.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let seen = Seen {
                method: parts.method,
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                content_type: parts
                    .headers
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (status, body) = server.lock().unwrap().answer(seen);
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    kube::Client::new(service, "default")
}

fn settings(dir: &Path) -> ManageSettings {
    ManageSettings {
        namespace: "sandbox-admission".into(),
        secret: "sandbox-admission-tls".into(),
        webhook_configuration: "sandbox-admission".into(),
        names: vec![
            "sandbox-admission.sandbox-admission.svc".into(),
            "sandbox-admission.sandbox-admission.svc.cluster.local".into(),
        ],
        cert_dir: dir.to_path_buf(),
        lifetimes: Lifetimes::default(),
        interval: Duration::from_secs(3600),
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

fn requests(server: &Arc<Mutex<ApiServer>>) -> Vec<(Method, String)> {
    let mut s = server.lock().unwrap();
    s.seen
        .drain(..)
        .map(|r| (r.method, r.path))
        .collect::<Vec<_>>()
}

fn get(path: &str) -> (Method, String) {
    (Method::GET, path.to_owned())
}

#[tokio::test]
async fn creates_the_secret_patches_both_configurations_and_writes_the_files() {
    certs::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::new();
    let api = KubeCertApi::new(client(server.clone()));
    let s = settings(dir.path());

    let outcome = reconcile(&api, &s).await.unwrap();
    assert_eq!(
        outcome.patched,
        vec![WebhookKind::Mutating, WebhookKind::Validating]
    );
    assert!(outcome.files_written);

    let seen = server.lock().unwrap().seen.clone();
    let calls: Vec<(Method, &str)> = seen
        .iter()
        .map(|r| (r.method.clone(), r.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        vec![
            (Method::GET, SECRET_PATH),
            (Method::GET, MUTATING_PATH),
            (Method::GET, VALIDATING_PATH),
            (Method::POST, SECRETS_PATH),
            (Method::PATCH, MUTATING_PATH),
            (Method::PATCH, VALIDATING_PATH),
        ]
    );
    // The Secret: a TLS Secret with the CA, bundle and serving pair, written by our field manager.
    let create = &seen[3];
    assert!(
        create.query.contains("fieldManager=sandbox-admission"),
        "{}",
        create.query
    );
    assert_eq!(create.body["kind"], "Secret");
    assert_eq!(create.body["type"], "kubernetes.io/tls");
    assert_eq!(create.body["metadata"]["name"], "sandbox-admission-tls");
    let data = &create.body["data"];
    for key in ["ca.crt", "ca.key", BUNDLE, TLS_CERT, TLS_KEY] {
        assert!(data[key].is_string(), "{key} in {data}");
    }
    let bundle = decode(&data[BUNDLE]);
    // Both configurations: a strategic merge patch that sets caBundle on every webhook by name.
    for (patch, names) in [
        (
            &seen[4],
            vec![
                "pods.mutate.sandbox-admission.io",
                "enforced-pods.mutate.sandbox-admission.io",
            ],
        ),
        (
            &seen[5],
            vec![
                "sandboxes.validate.sandbox-admission.io",
                "pods.validate.sandbox-admission.io",
                "enforced-pods.validate.sandbox-admission.io",
            ],
        ),
    ] {
        assert_eq!(patch.content_type, "application/strategic-merge-patch+json");
        assert!(
            patch.query.contains("fieldManager=sandbox-admission"),
            "{}",
            patch.query
        );
        let hooks = patch.body["webhooks"].as_array().unwrap();
        let patched: Vec<&str> = hooks.iter().map(|h| h["name"].as_str().unwrap()).collect();
        assert_eq!(patched, names);
        for h in hooks {
            assert_eq!(h["clientConfig"]["caBundle"], b64(&bundle));
            assert_eq!(
                h.as_object().unwrap().len(),
                2,
                "only name and clientConfig.caBundle: {h}"
            );
        }
    }
    // The files: the serving pair loads, and the cert dir's ca.crt is the bundle.
    let files = TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        client_ca: None,
    };
    certs::server_config(&files).expect("the written pair loads");
    assert_eq!(std::fs::read(dir.path().join("ca.crt")).unwrap(), bundle);
    assert!(certs::covers(
        &std::fs::read(&files.cert).unwrap(),
        &s.names
    ));

    // A second round changes nothing and writes nothing.
    server.lock().unwrap().seen.clear();
    let outcome = reconcile(&api, &s).await.unwrap();
    assert_eq!(outcome, Outcome::default());
    assert_eq!(
        requests(&server),
        vec![get(SECRET_PATH), get(MUTATING_PATH), get(VALIDATING_PATH)]
    );
}

#[tokio::test]
async fn a_concurrent_create_is_adopted() {
    certs::install_crypto_provider();
    // Another replica creates the Secret between our GET and our POST.
    let other_dir = tempfile::tempdir().unwrap();
    let other = ApiServer::new();
    reconcile(
        &KubeCertApi::new(client(other.clone())),
        &settings(other_dir.path()),
    )
    .await
    .unwrap();
    let theirs = other.lock().unwrap().secret.clone().unwrap();

    let server = ApiServer::new();
    server.lock().unwrap().interrupts.push_back((
        Method::POST,
        recorded("secret-sandbox-admission-tls-409-exists.json"),
        Some(theirs.clone()),
    ));
    let dir = tempfile::tempdir().unwrap();
    reconcile(
        &KubeCertApi::new(client(server.clone())),
        &settings(dir.path()),
    )
    .await
    .unwrap();
    let calls = requests(&server);
    assert_eq!(
        calls.iter().filter(|c| c.0 == Method::POST).count(),
        1,
        "one create, then re-read: {calls:?}"
    );
    assert!(!calls.iter().any(|c| c.0 == Method::PUT), "{calls:?}");
    assert_eq!(
        std::fs::read(dir.path().join("tls.crt")).unwrap(),
        decode(&theirs["data"][TLS_CERT]),
        "the other replica's certificate is served"
    );
}

#[tokio::test]
async fn a_stale_update_rereads_and_renews_on_the_latest_version() {
    certs::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::new();
    let api = KubeCertApi::new(client(server.clone()));
    let mut s = settings(dir.path());
    reconcile(&api, &s).await.unwrap();
    // A new Service name: the serving certificate must be renewed (PUT with resourceVersion),
    // and the first PUT loses a race with another writer.
    s.names.push("sandbox-admission".into());
    server.lock().unwrap().seen.clear();
    server.lock().unwrap().interrupts.push_back((
        Method::PUT,
        recorded("secret-sandbox-admission-tls-409-conflict.json"),
        None,
    ));
    let outcome = reconcile(&api, &s).await.unwrap();
    assert_eq!(
        outcome.secret_changes,
        vec!["issued a new serving certificate"]
    );
    assert!(
        outcome.patched.is_empty(),
        "the CA did not change: no caBundle patch"
    );
    let seen = server.lock().unwrap().seen.clone();
    let puts: Vec<&Seen> = seen.iter().filter(|r| r.method == Method::PUT).collect();
    assert_eq!(puts.len(), 2, "retried after the conflict");
    let stored = server.lock().unwrap().secret.clone().unwrap();
    assert_eq!(puts[1].body["metadata"]["resourceVersion"], json!("2001"));
    assert!(certs::covers(&decode(&stored["data"][TLS_CERT]), &s.names));
    assert_eq!(
        std::fs::read(dir.path().join("tls.crt")).unwrap(),
        decode(&stored["data"][TLS_CERT])
    );
}

#[tokio::test]
async fn api_errors_are_reported_not_retried_forever() {
    certs::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::new();
    let forbidden = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
        "message":"secrets \"sandbox-admission-tls\" is forbidden: User \"system:serviceaccount:sandbox-admission:sandbox-admission\" cannot get resource \"secrets\" in API group \"\" in the namespace \"sandbox-admission\"",
        "reason":"Forbidden","details":{"name":"sandbox-admission-tls","kind":"secrets"},"code":403});
    server
        .lock()
        .unwrap()
        .interrupts
        .push_back((Method::GET, forbidden, None));
    let err = reconcile(
        &KubeCertApi::new(client(server.clone())),
        &settings(dir.path()),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("forbidden"), "{err}");
    assert!(!dir.path().join("tls.crt").exists());
}

/// The certificate the server presents to a new connection that trusts `ca_bundle`.
async fn presented(port: u16, name: &str, ca_bundle: &[u8]) -> Vec<u8> {
    let config = common::trusting(&[ca_bundle]);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let server_name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .expect("handshake verifies against the caBundle");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &[u8]) -> Vec<u8> {
    certs::parse_certs(Path::new("tls.crt"), pem).unwrap()[0].to_vec()
}

#[tokio::test]
async fn the_server_serves_what_it_manages_and_picks_up_renewals() {
    certs::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServer::new();
    let api = KubeCertApi::new(client(server.clone()));
    let mut s = settings(dir.path());
    reconcile(&api, &s).await.unwrap();

    let mut config = sandbox_admission::config::Config::embedded().unwrap();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.health_listen = "127.0.0.1:0".parse().unwrap();
    let running = sandbox_admission::server::start(sandbox_admission::server::ServeSettings {
        config,
        config_origin: "test".into(),
        tls: sandbox_admission::server::TlsSource::Files(TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            client_ca: None,
        }),
        policies_dir: None,
        decision_log: false,
        cluster: None,
    })
    .await
    .unwrap();
    let port = running.addr.port();
    let name = "sandbox-admission.sandbox-admission.svc";
    let bundle = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let first = presented(port, name, &bundle).await;
    assert_eq!(
        first,
        der(&std::fs::read(dir.path().join("tls.crt")).unwrap())
    );

    // A renewal (new names) lands in the directory; new connections get it without a restart.
    s.names.push("sandbox-admission".into());
    let outcome = reconcile(&api, &s).await.unwrap();
    assert!(outcome.files_written);
    let renewed = der(&std::fs::read(dir.path().join("tls.crt")).unwrap());
    assert_ne!(renewed, first);
    let mut served = Vec::new();
    for _ in 0..600 {
        served = presented(port, name, &bundle).await;
        if served == renewed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served, renewed, "the renewed certificate is served");
    // Written in one step (..data swap): the watcher never saw a new certificate with an old key.
    let metrics = health_get(running.health_addr.port(), "/metrics").await;
    assert!(
        metrics.contains("sandbox_admission_certificate_reload_total{result=\"success\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("sandbox_admission_certificate_reload_total{result=\"failure\"}"),
        "{metrics}"
    );
    running.shutdown().await;
}

async fn health_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    answer
}
