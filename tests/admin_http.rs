//! The admin page over plain HTTP from a real client, against the real server:
//! - off loopback it demands the bearer token from its file (none or a wrong one: 401, the right
//!   one: 200 and the page), and refuses to start with a token file too short, missing, or absent;
//! - with the background audit running over a recorded cluster, it shows whether this replica
//!   holds the audit Lease and the last round's PolicyReports summed by namespace and policy,
//!   with messages built from hostile label values escaped.

mod common;
mod kube_mock;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{TestServer, test_config};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube_mock::{Reply, Seen, fixture, mock_api};
use sandbox_admission::cluster::{ClusterAccess, KubeCluster, KubeClusterOptions};
use sandbox_admission::server::{self, ServeSettings, TlsSource};
use serde_json::{Value, json};

type Http = Client<HttpConnector, Full<Bytes>>;

const TOKEN: &str = "s3cret-admin-token-0123456789";
const HOSTILE: &str = "<script>alert(1)</script>\"quoted\" 'single' &amp;";

fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET with an optional `Authorization` header: status, `WWW-Authenticate`, body.
async fn get(http: &Http, url: &str, auth: Option<&str>) -> (u16, Option<String>, String) {
    let mut req = hyper::Request::get(url);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let resp = http
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("GET");
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        challenge,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The text of an element's content with its tags removed (then unescaped).
fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    unescape(&out)
}

/// The rows of the table with this id, each as its cells' text; the header row is left out.
fn table(page: &str, id: &str) -> Vec<Vec<String>> {
    let start = page
        .find(&format!("<table id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no table #{id} in the page: {page}"));
    let body = &page[start..];
    let body = &body[..body.find("</table>").unwrap()];
    body.split("<tr>")
        .skip(1)
        .filter(|row| !row.starts_with("<th>"))
        .map(|row| {
            row.split("</td>")
                .filter(|c| c.contains("<td"))
                .map(text_of)
                .collect()
        })
        .collect()
}

/// The text of the element with this id (a `<p>`).
fn paragraph(page: &str, id: &str) -> String {
    let start = page
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page: {page}"));
    let rest = &page[start..];
    let open = rest.find('>').unwrap() + 1;
    text_of(&rest[open..rest.find("</p>").unwrap()])
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

async fn start_err(config: sandbox_admission::config::Config) -> String {
    let dir = tempfile::tempdir().unwrap();
    let started = server::start(ServeSettings {
        config,
        config_origin: "test".into(),
        tls: TlsSource::SelfSigned {
            dir: dir.path().join("certs"),
        },
        policies_dir: None,
        decision_log: false,
        cluster: None,
    })
    .await;
    match started {
        Ok(running) => {
            running.shutdown().await;
            panic!("the server started");
        }
        Err(e) => {
            // Refused before anything started: not even the self-signed certificate was made.
            assert!(
                !dir.path().join("certs").exists(),
                "start-up did work before refusing: {e:#}"
            );
            format!("{e:#}")
        }
    }
}

#[tokio::test]
async fn off_loopback_the_page_needs_the_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    // Surrounding whitespace (a trailing newline from `echo`) is not part of the token.
    std::fs::write(&token_file, format!("  {TOKEN}\n")).unwrap();
    let mut config = test_config();
    config.admin.listen = Some("0.0.0.0:0".parse().unwrap());
    config.admin.token_file = Some(token_file.clone());
    let server = TestServer::start_with(config, None).await;
    let admin = server.running.admin_addr.expect("admin page on");
    assert!(admin.ip().is_unspecified(), "{admin}");
    let base = format!("http://127.0.0.1:{}", admin.port());
    let http = http();

    let wrong_same_length = format!("{}X", &TOKEN[..TOKEN.len() - 1]);
    let refused = [
        None,
        Some("".to_owned()),
        Some("Bearer ".to_owned()),
        Some("Bearer wrong".to_owned()),
        Some(format!("Bearer {wrong_same_length}")),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("bearer {TOKEN}")),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_owned()),
    ];
    for path in ["/", "/decision/0", "/nowhere"] {
        for auth in &refused {
            let (status, challenge, body) =
                get(&http, &format!("{base}{path}"), auth.as_deref()).await;
            assert_eq!(status, 401, "{path} with {auth:?}: {body}");
            assert_eq!(
                challenge.as_deref(),
                Some("Bearer realm=\"sandbox-admission admin\""),
                "{path} with {auth:?}"
            );
            assert_eq!(body, "a bearer token is required\n");
            assert!(!body.contains("sandbox-admission: this replica"));
        }
    }

    let bearer = format!("Bearer {TOKEN}");
    let (status, _, page) = get(&http, &format!("{base}/"), Some(&bearer)).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("<h1>sandbox-admission: this replica</h1>"),
        "{page}"
    );
    assert!(page.contains("<table id=\"decisions\">"), "{page}");
    assert_eq!(
        paragraph(&page, "audit-lease"),
        "No background audit runs on this replica: audit.enabled is false (serve --audit)."
    );
    // Past the token the pages behave as on loopback.
    let (status, _, _) = get(&http, &format!("{base}/decision/999"), Some(&bearer)).await;
    assert_eq!(status, 404);
    let (status, _, _) = get(&http, &format!("{base}/nowhere"), Some(&bearer)).await;
    assert_eq!(status, 404);
    server.stop().await;

    // Start-up refuses what would leave the page open or unusable, before serving anything.
    let public = |token_file: Option<&Path>| {
        let mut c = test_config();
        c.admin.listen = Some("0.0.0.0:0".parse().unwrap());
        c.admin.token_file = token_file.map(Path::to_path_buf);
        c
    };
    let short = dir.path().join("short-token");
    std::fs::write(&short, "  fifteen-chars-\n").unwrap();
    let err = start_err(public(Some(&short))).await;
    assert!(
        err.contains(&format!(
            "the admin token in {} is shorter than 16 characters",
            short.display()
        )),
        "{err}"
    );
    let err = start_err(public(Some(&dir.path().join("missing")))).await;
    assert!(err.contains("cannot read the admin token file"), "{err}");
    let err = start_err(public(None)).await;
    assert!(
        err.contains("is not a loopback address: it needs --admin-token-file FILE"),
        "{err}"
    );
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/sandbox-admission/leases";
const LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/sandbox-admission/leases/sandbox-admission-audit";
const REPORTS: &str = "/apis/wgpolicyk8s.io/v1alpha2/namespaces";

fn sandbox(namespace: &str, name: &str, privileged: bool, note: Option<&str>) -> Value {
    let mut container = json!({"name": "agent", "image": "python:3.12-slim"});
    if privileged {
        container["securityContext"] = json!({"privileged": true});
    }
    let mut s = json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                     "resourceVersion": "7"},
        "spec": {"podTemplate": {"spec": {"containers": [container]}}}});
    if let Some(note) = note {
        s["metadata"]["labels"] = json!({"note": note});
    }
    s
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Reply {
    Reply::Json(
        200,
        json!({"apiVersion": api_version, "kind": format!("{kind}List"),
            "metadata": {"resourceVersion": "500"}, "items": items})
        .to_string(),
    )
}

/// The recorded cluster: three Sandboxes, nothing else audited, and a Lease shared with
/// another replica.
struct Cluster {
    lease: Mutex<Value>,
    applied: Mutex<Vec<Value>>,
}

impl Cluster {
    fn route(&self, seen: &Seen) -> Reply {
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", _) if seen.is_watch() => Reply::OpenWatch,
            ("GET", LEASE) => Reply::Json(200, self.lease.lock().unwrap().to_string()),
            ("POST", LEASES) => Reply::Json(409, fixture("lease-409-conflict.json")),
            ("PUT", LEASE) => {
                let mut stored = self.lease.lock().unwrap();
                let mut lease: Value = serde_json::from_slice(&seen.body).unwrap();
                if lease["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
                    return Reply::Json(409, fixture("lease-409-conflict.json"));
                }
                let rv: u64 = lease["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                lease["metadata"]["resourceVersion"] = json!((rv + 1).to_string());
                *stored = lease.clone();
                Reply::Json(200, lease.to_string())
            }
            ("PATCH", p) if p.starts_with(REPORTS) => {
                let report: Value = serde_json::from_slice(&seen.body).unwrap();
                self.applied.lock().unwrap().push(report.clone());
                Reply::Json(200, report.to_string())
            }
            ("GET", "/apis/node.k8s.io/v1/runtimeclasses") => {
                Reply::Json(200, fixture("runtimeclasses-list.json"))
            }
            ("GET", "/api/v1/namespaces") => Reply::Json(200, fixture("namespaces-list.json")),
            ("GET", "/apis/agents.x-k8s.io/v1beta1/sandboxes") => list(
                "Sandbox",
                "agents.x-k8s.io/v1beta1",
                vec![
                    sandbox("team-a", "good-box", false, None),
                    sandbox("team-a", "bad-box", true, None),
                    sandbox("team-b", "noted-box", true, Some(HOSTILE)),
                ],
            ),
            ("GET", "/apis/extensions.agents.x-k8s.io/v1beta1/sandboxclaims") => list(
                "SandboxClaim",
                "extensions.agents.x-k8s.io/v1beta1",
                vec![],
            ),
            ("GET", "/apis/extensions.agents.x-k8s.io/v1beta1/sandboxwarmpools") => list(
                "SandboxWarmPool",
                "extensions.agents.x-k8s.io/v1beta1",
                vec![],
            ),
            ("GET", "/apis/extensions.agents.x-k8s.io/v1beta1/sandboxtemplates") => list(
                "SandboxTemplate",
                "extensions.agents.x-k8s.io/v1beta1",
                vec![],
            ),
            ("GET", "/api/v1/services") => list("Service", "v1", vec![]),
            ("GET", "/api/v1/pods") => list("Pod", "v1", vec![]),
            _ => Reply::Json(
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                    "message": format!("{} {} not recorded", seen.method, seen.path), "code": 404})
                .to_string(),
            ),
        }
    }
}

fn other_replicas_lease(renewed: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "sandbox-admission-audit", "namespace": "sandbox-admission",
                     "resourceVersion": "10"},
        "spec": {"holderIdentity": "replica-other", "leaseDurationSeconds": 3600,
                 "acquireTime": renewed, "renewTime": renewed, "leaseTransitions": 0}})
}

const NO_PRIVILEGED: &str = r#"package test.no_privileged
import rego.v1
violation contains {"msg": sprintf("container %s is privileged", [c.name])} if {
	some c in input.review.object.spec.podTemplate.spec.containers
	c.securityContext.privileged == true
}
"#;

/// Its message carries a label value, as real policies' messages often do.
const NOTE_ECHO: &str = r#"package test.note_echo
import rego.v1
violation contains {"msg": sprintf("note: %s", [input.review.object.metadata.labels.note])} if {
	input.review.object.metadata.labels.note
}
"#;

/// Poll the page until `done` holds (the audit runs in the background), or fail with the page.
async fn page_until(http: &Http, url: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, page) = get(http, url, None).await;
        assert_eq!(status, 200, "{page}");
        if done(&page) {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "the page never got there: {page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_page_shows_the_audit_round_and_the_lease() {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let state = Arc::new(Cluster {
        lease: Mutex::new(other_replicas_lease(&now)),
        applied: Mutex::new(Vec::new()),
    });
    let s = state.clone();
    let api = mock_api(move |seen| s.route(seen));

    let policies = tempfile::tempdir().unwrap();
    let p = policies.path();
    std::fs::write(p.join("no_privileged.rego"), NO_PRIVILEGED).unwrap();
    std::fs::write(
        p.join("no_privileged.yaml"),
        "kinds: [{group: agents.x-k8s.io, kind: Sandbox}]\n",
    )
    .unwrap();
    std::fs::write(p.join("note_echo.rego"), NOTE_ECHO).unwrap();
    std::fs::write(
        p.join("note_echo.yaml"),
        "kinds: [{group: agents.x-k8s.io, kind: Sandbox}]\nenforcementAction: warn\n",
    )
    .unwrap();

    let mut config = test_config();
    config.audit.enabled = true;
    config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    let cluster: Arc<dyn ClusterAccess> = Arc::new(KubeCluster::start(
        api.client.clone(),
        KubeClusterOptions {
            sync_wait: Duration::from_secs(5),
            watches: sandbox_admission::background::watches(&config),
            ..Default::default()
        },
    ));
    let server = TestServer::start_full(config, Some(p.to_path_buf()), Some(cluster), false).await;
    let url = format!(
        "http://{}/",
        server.running.admin_addr.expect("admin page on")
    );
    let http = http();
    let holder = sandbox_admission::background::audit::holder_identity();

    // Another replica holds the Lease: this one says so and has audited nothing.
    let page = page_until(&http, &url, |p| p.contains("Another replica holds")).await;
    let lease = paragraph(&page, "audit-lease");
    assert!(
        lease.starts_with("Another replica holds the audit Lease sandbox-admission-audit (as of "),
        "{lease}"
    );
    assert!(
        lease.contains(&format!("this replica ({holder}) does not audit")),
        "{lease}"
    );
    assert!(
        page.contains("<p>This replica has not audited a round yet.</p>"),
        "{page}"
    );
    assert!(state.applied.lock().unwrap().is_empty());

    // The holder stops renewing; a policy reload makes this replica audit again, and it takes
    // the Lease over.
    *state.lease.lock().unwrap() = other_replicas_lease("2020-01-01T00:00:00.000000Z");
    std::fs::write(
        p.join("pools.rego"),
        "package test.pools\nimport rego.v1\nviolation contains {\"msg\": \"no pools\"} if true\n",
    )
    .unwrap();
    std::fs::write(
        p.join("pools.yaml"),
        "kinds: [{group: extensions.agents.x-k8s.io, kind: SandboxWarmPool}]\n",
    )
    .unwrap();
    let page = page_until(&http, &url, |p| p.contains("id=\"audit-round\"")).await;
    assert_eq!(
        state.lease.lock().unwrap()["spec"]["holderIdentity"],
        holder
    );
    let lease = paragraph(&page, "audit-lease");
    assert!(
        lease.starts_with(&format!(
            "This replica ({holder}) holds the audit Lease sandbox-admission-audit (as of "
        )),
        "{lease}"
    );
    let round = paragraph(&page, "audit-round");
    assert!(
        round.starts_with("The last round by this replica finished at "),
        "{round}"
    );
    assert!(
        round.ends_with(
            ": 3 objects judged, 0 skipped (they do not decode), 2 reports applied, 0 failed."
        ),
        "{round}"
    );
    // Summed as the applied reports sum them.
    let applied = state.applied.lock().unwrap().clone();
    assert_eq!(applied.len(), 2, "{applied:?}");
    assert_eq!(
        applied[0]["summary"],
        json!({"pass": 1, "fail": 1, "warn": 0, "error": 0, "skip": 0})
    );
    assert_eq!(
        table(&page, "audit-namespaces"),
        [
            row(&["team-a", "1", "1", "0", "0"]),
            row(&["team-b", "0", "1", "1", "0"]),
        ]
    );
    assert_eq!(
        table(&page, "audit-policies"),
        [
            row(&["team-a", "no-privileged", "1", "0", "0"]),
            row(&["team-b", "no-privileged", "1", "0", "0"]),
            row(&["team-b", "note-echo", "0", "1", "0"]),
        ]
    );
    let results = table(&page, "audit-results");
    assert_eq!(
        results,
        [
            row(&[
                "team-a",
                "Sandbox bad-box",
                "no-privileged",
                "fail",
                "container agent is privileged"
            ]),
            row(&[
                "team-b",
                "Sandbox noted-box",
                "no-privileged",
                "fail",
                "container agent is privileged"
            ]),
            row(&[
                "team-b",
                "Sandbox noted-box",
                "note-echo",
                "warn",
                &format!("note: {HOSTILE}")
            ]),
        ]
    );
    // The hostile value is text: escaped once in the markup, never raw.
    assert!(!page.contains("<script>"), "{page}");
    assert!(
        page.contains("note: &lt;script&gt;alert(1)&lt;/script&gt;&quot;quoted&quot; &#39;single&#39; &amp;amp;"),
        "{page}"
    );
    server.stop().await;
}
