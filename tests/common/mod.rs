//! Test support: the real server on a loopback port with real TLS, and a real HTTPS client that
//! trusts only the CA the server generated.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sandbox_admission::config::Config;
use sandbox_admission::server::{self, Running, ServeSettings, TlsSource};
use serde_json::{Value, json};

pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct TestServer {
    pub running: Running,
    pub client: HttpsClient,
    pub base: String,
    pub health: String,
    pub dir: tempfile::TempDir,
}

/// A configuration for tests: loopback ports chosen by the OS, no decision log on stdout.
pub fn test_config() -> Config {
    let mut config = Config::embedded().expect("embedded config");
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.health_listen = "127.0.0.1:0".parse().unwrap();
    config.decision_log.stdout = false;
    config
}

/// An HTTPS client (HTTP/1.1 and h2) that trusts exactly the CA in `ca_pem`.
pub fn https_client(ca_file: &Path) -> HttpsClient {
    let pem = std::fs::read(ca_file).expect("CA file");
    let tls = trusting(&[&pem]);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_all_versions()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A TLS client configuration (ring) that trusts exactly the CA certificates in these PEM bundles.
pub fn trusting(bundles: &[&[u8]]) -> rustls::ClientConfig {
    sandbox_admission::certs::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for pem in bundles {
        for cert in sandbox_admission::certs::parse_certs(Path::new("CA bundle"), pem).unwrap() {
            roots.add(cert).unwrap();
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(test_config(), None).await
    }

    pub async fn start_with(config: Config, policies_dir: Option<PathBuf>) -> TestServer {
        Self::start_full(config, policies_dir, None, true).await
    }

    /// Everything `serve` can be given: a policy directory, cluster access, the decision log.
    pub async fn start_full(
        config: Config,
        policies_dir: Option<PathBuf>,
        cluster: Option<Arc<dyn sandbox_admission::cluster::ClusterAccess>>,
        decision_log: bool,
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let running = server::start(ServeSettings {
            config,
            config_origin: "test".into(),
            tls: TlsSource::SelfSigned {
                dir: dir.path().join("certs"),
            },
            policies_dir,
            decision_log,
            cluster,
        })
        .await
        .expect("server starts");
        let ca = running.ca_file.clone().expect("self-signed CA");
        TestServer {
            base: format!("https://localhost:{}", running.addr.port()),
            health: format!("http://127.0.0.1:{}", running.health_addr.port()),
            client: https_client(&ca),
            running,
            dir,
        }
    }

    /// POST raw bytes; returns the status and the JSON body (Null when not JSON).
    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> (StatusCode, Value) {
        let req = hyper::Request::post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(body.into()))
            .unwrap();
        let resp = self.client.request(req).await.expect("HTTPS request");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Send an AdmissionReview with this request; assert the envelope; return `response`.
    pub async fn review(&self, path: &str, request: Value) -> Value {
        let uid = request["uid"].clone();
        let (status, body) = self
            .post(path, serde_json::to_vec(&wrap(request)).unwrap())
            .await;
        assert_eq!(status, StatusCode::OK, "body: {body}");
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(body["kind"], "AdmissionReview");
        assert_eq!(body["response"]["uid"], uid);
        body["response"].clone()
    }

    pub async fn get_health(&self, path: &str) -> (StatusCode, String) {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let resp = client
            .get(format!("{}{path}", self.health).parse().unwrap())
            .await
            .expect("health request");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    pub async fn stop(self) {
        self.running.shutdown().await;
    }
}

/// Wrap a request in an AdmissionReview v1 envelope.
pub fn wrap(request: Value) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// The AdmissionRequest the API server sends for `object` (CREATE unless told otherwise).
pub fn request_for(object: &Value, operation: &str, namespace: &str) -> Value {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let kind = object["kind"].as_str().unwrap_or("Pod");
    let resource = format!("{}s", kind.to_lowercase()).replace("sandboxs", "sandboxes");
    let name = object["metadata"]["name"].as_str().unwrap_or("");
    let mut req = json!({
        "uid": format!("uid-{kind}-{name}-{operation}"),
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "system:serviceaccount:agent-sandbox-system:controller", "groups": ["system:serviceaccounts"]},
        "object": object,
        "oldObject": null,
        "dryRun": false,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
    });
    if operation == "DELETE" {
        req["oldObject"] = object.clone();
        req["object"] = Value::Null;
    }
    if operation == "UPDATE" {
        req["oldObject"] = object.clone();
    }
    req
}

/// Every YAML document in a fixture file under `tests/fixtures/`.
pub fn fixture_docs(relative: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|v| v.is_object())
        .collect()
}

/// Every `.yaml`/`.yml` file under `dir`, sorted, recursively (fixture trees).
pub fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}
