//! Serving certificate rotation over real TLS: files replaced the way Kubernetes updates a Secret
//! volume (a new directory, then an atomic `..data` symlink swap), watched clients on both sides.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{request_for, test_config, wrap};
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sandbox_admission::certs::{self, Bundle, PemPair, TlsFiles};
use sandbox_admission::server::{self, Running, ServeSettings, TlsSource};
use serde_json::json;

/// Writes files as the kubelet's AtomicWriter does: `..<gen>/` holds the data, `..data` points
/// at it, and each visible file is a symlink through `..data`. An update is one rename.
struct SecretVolume {
    dir: PathBuf,
    generation: u32,
}

impl SecretVolume {
    fn new(dir: &Path) -> SecretVolume {
        std::fs::create_dir_all(dir).unwrap();
        SecretVolume {
            dir: dir.to_path_buf(),
            generation: 0,
        }
    }

    fn write(&mut self, files: &[(&str, &str)]) {
        self.generation += 1;
        let data = format!("..gen_{}", self.generation);
        std::fs::create_dir(self.dir.join(&data)).unwrap();
        for (name, contents) in files {
            std::fs::write(self.dir.join(&data).join(name), contents).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&data, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        for (name, _) in files {
            let link = self.dir.join(name);
            if link.symlink_metadata().is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(name), &link).unwrap();
            }
        }
        if self.generation > 1 {
            let old = self.dir.join(format!("..gen_{}", self.generation - 1));
            std::fs::remove_dir_all(old).unwrap();
        }
    }

    fn write_pair(&mut self, serving: &PemPair, ca: &PemPair) {
        self.write(&[
            ("tls.crt", &serving.cert),
            ("tls.key", &serving.key),
            ("ca.crt", &ca.cert),
        ]);
    }
}

fn bundle() -> Bundle {
    certs::generate_bundle(&["localhost".into(), "127.0.0.1".into()], 2).unwrap()
}

/// A client trusting exactly `cas`; `fresh` makes every request a new connection (handshake).
fn client(cas: &[&PemPair], fresh: bool) -> common::HttpsClient {
    let pems: Vec<&[u8]> = cas.iter().map(|ca| ca.cert.as_bytes()).collect();
    let tls = common::trusting(&pems);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let mut builder = Client::builder(TokioExecutor::new());
    if fresh {
        builder.pool_max_idle_per_host(0);
    }
    builder.build(connector)
}

async fn admit(client: &common::HttpsClient, running: &Running) -> Result<(), String> {
    admit_at(client, running.addr.port()).await
}

async fn health(running: &Running, path: &str) -> String {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("http://127.0.0.1:{}{path}", running.health_addr.port());
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn reloads(running: &Running, result: &str) -> u64 {
    let metrics = health(running, "/metrics").await;
    let prefix = format!("sandbox_admission_certificate_reload_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Poll `check` until it holds; bounded, so a broken watcher fails instead of hanging.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gave up waiting: {what}");
}

async fn start(dir: &Path) -> Running {
    let mut config = test_config();
    config.decision_log.stdout = false;
    server::start(ServeSettings {
        config,
        config_origin: "test".into(),
        tls: TlsSource::Files(TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            client_ca: None,
        }),
        policies_dir: None,
        decision_log: false,
        cluster: None,
    })
    .await
    .expect("server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_to_a_new_ca_without_failing_a_request() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (bundle(), bundle());
    let mut volume = SecretVolume::new(&tmp.path().join("tls"));
    volume.write_pair(&a.serving, &a.ca);
    let running = start(&volume.dir).await;

    admit(&client(&[&a.ca], true), &running).await.unwrap();
    assert!(admit(&client(&[&b.ca], true), &running).await.is_err());

    // A client trusting both CAs loops requests, each on a new connection, through the rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let background = {
        let (stop, done) = (stop.clone(), done.clone());
        let client = client(&[&a.ca, &b.ca], true);
        let port = running.addr.port();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..100_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Err(e) = admit_at(&client, port).await {
                    failures.push(e);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            failures
        })
    };
    let before = done.load(Ordering::SeqCst);
    eventually("the background client runs", || async {
        done.load(Ordering::SeqCst) > before + 5
    })
    .await;

    volume.write_pair(&b.serving, &b.ca);
    eventually("new connections verify against CA B", || async {
        admit(&client(&[&b.ca], true), &running).await.is_ok()
    })
    .await;
    let err = admit(&client(&[&a.ca], true), &running).await.unwrap_err();
    assert!(
        err.contains("InvalidCertificate"),
        "a client trusting only CA A is refused for the certificate: {err}"
    );
    let after = done.load(Ordering::SeqCst);
    eventually("the background client runs after the rotation", || async {
        done.load(Ordering::SeqCst) > after + 5
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let failures = background.await.unwrap();
    assert!(
        failures.is_empty(),
        "requests failed during rotation: {failures:?}"
    );
    assert!(reloads(&running, "success").await >= 1);

    // A corrupt replacement: a key that does not belong to the certificate, then garbage.
    let c = bundle();
    let failed = reloads(&running, "failure").await;
    volume.write(&[
        ("tls.crt", &c.serving.cert),
        ("tls.key", &b.serving.key),
        ("ca.crt", &c.ca.cert),
    ]);
    eventually("the mismatched pair is refused", || async {
        reloads(&running, "failure").await > failed
    })
    .await;
    admit(&client(&[&b.ca], true), &running)
        .await
        .expect("B still serves");
    assert!(admit(&client(&[&c.ca], true), &running).await.is_err());
    let ready = health(&running, "/readyz").await;
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["ready"], true, "the old pair serves: still ready");
    let detail = ready["checks"]["tls"]["detail"].as_str().unwrap();
    assert!(detail.contains("last reload failed"), "{detail}");
    assert!(
        detail.contains("valid until"),
        "the expiry of what serves: {detail}"
    );

    let failed = reloads(&running, "failure").await;
    volume.write(&[("tls.crt", "not a certificate"), ("tls.key", "nor a key")]);
    eventually("the garbage pair is refused", || async {
        reloads(&running, "failure").await > failed
    })
    .await;
    admit(&client(&[&b.ca], true), &running)
        .await
        .expect("B still serves");
    running.shutdown().await;
}

async fn admit_at(client: &common::HttpsClient, port: u16) -> Result<(), String> {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "d"},
                     "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let body = serde_json::to_vec(&wrap(request_for(&pod, "CREATE", "d"))).unwrap();
    let req = hyper::Request::post(format!("https://localhost:{port}/mutate"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}
