//! `data.inventory` from watch caches over recorded API server responses, judged over real HTTPS:
//! the four shipped referential policies against recorded warm pools, templates and Services;
//! `/readyz` waiting for the caches; a Service watch that ends in 410 Gone re-lists, picks up
//! what changed meanwhile, and says so in `/readyz` and the metrics.

mod common;
mod kube_mock;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{TestServer, request_for, test_config};
use kube_mock::{MockApi, Reply, Seen, fixture, mock_api};
use sandbox_admission::cluster::{ClusterAccess, KubeCluster, KubeClusterOptions};
use serde_json::{Value, json};

const POOLS: &str = "/apis/extensions.agents.x-k8s.io/v1beta1/sandboxwarmpools";
const TEMPLATES: &str = "/apis/extensions.agents.x-k8s.io/v1beta1/sandboxtemplates";
const SERVICES: &str = "/api/v1/services";

/// The recorded cluster; `services` answers the Service list and watch calls.
fn api(services: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> MockApi {
    mock_api(
        move |seen| {
            match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", SERVICES) => services(seen),
        ("GET", _) if seen.is_watch() => Reply::OpenWatch,
        ("GET", "/apis/node.k8s.io/v1/runtimeclasses") => {
            Reply::Json(200, fixture("runtimeclasses-list.json"))
        }
        ("GET", "/api/v1/namespaces") => Reply::Json(200, fixture("namespaces-list.json")),
        ("GET", POOLS) => Reply::Json(200, fixture("sandboxwarmpools-list.json")),
        ("GET", TEMPLATES) => Reply::Json(200, fixture("sandboxtemplates-list.json")),
        _ => Reply::Json(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                "message": format!("{} {} not recorded", seen.method, seen.path), "code": 404})
            .to_string(),
        ),
    }
        },
    )
}

fn steady_services(seen: &Seen) -> Reply {
    if seen.is_watch() {
        Reply::OpenWatch
    } else {
        Reply::Json(200, fixture("services-list.json"))
    }
}

async fn server_on(api: &MockApi) -> TestServer {
    let config = test_config();
    let cluster: Arc<dyn ClusterAccess> = Arc::new(KubeCluster::start(
        api.client.clone(),
        KubeClusterOptions {
            sync_wait: Duration::from_secs(5),
            watches: sandbox_admission::background::watches(&config),
            ..Default::default()
        },
    ));
    TestServer::start_full(config, None, Some(cluster), false).await
}

/// `/readyz` once it answers 200 (the caches have listed), as JSON.
async fn ready(server: &TestServer) -> Value {
    for _ in 0..500 {
        let (status, body) = server.get_health("/readyz").await;
        if status == 200 && server.running.admitter.metrics.inventory_objects.get() > 0 {
            return serde_json::from_str(&body).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never ready: {:?}", server.get_health("/readyz").await);
}

fn names_in(response: &Value) -> Vec<String> {
    let mut text: Vec<String> = response["warnings"]
        .as_array()
        .map(|w| w.iter().map(|w| w.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    text.extend(
        response["status"]["message"]
            .as_str()
            .unwrap_or("")
            .lines()
            .map(str::to_owned),
    );
    text.iter()
        .filter_map(|l| {
            l.strip_prefix('[')?
                .split_once(']')
                .map(|(n, _)| n.to_owned())
        })
        .collect()
}

fn claim(pool: &str) -> Value {
    json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
        "metadata": {"name": format!("claim-{pool}"), "namespace": "team-a"},
        "spec": {"warmPoolRef": {"name": pool}}})
}

fn pool(name: &str, replicas: u32, template: &str) -> Value {
    json!({"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": template}}})
}

fn sandbox(name: &str, uid: Option<&str>) -> Value {
    let mut s = json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {"service": true, "podTemplate": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    if let Some(uid) = uid {
        s["metadata"]["uid"] = json!(uid);
    }
    s
}

#[tokio::test]
async fn referential_policies_read_the_recorded_inventory_over_https() {
    let api = api(steady_services);
    let server = server_on(&api).await;
    let readyz = ready(&server).await;
    let detail = readyz["checks"]["cluster"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("extensions.agents.x-k8s.io/v1beta1 SandboxWarmPool: 2 objects"),
        "{detail}"
    );
    assert!(detail.contains("v1 Service: 2 objects"), "{detail}");
    assert_eq!(server.running.admitter.metrics.inventory_objects.get(), 6);

    let check = |obj: Value, op: &'static str| {
        let server = &server;
        async move {
            server
                .review("/validate", request_for(&obj, op, "team-a"))
                .await
        }
    };
    // SandboxClaim -> SandboxWarmPool
    let r = check(claim("python-pool"), "CREATE").await;
    assert!(
        !names_in(&r).contains(&"claim-warm-pool-exists".into()),
        "{r}"
    );
    let r = check(claim("missing"), "CREATE").await;
    assert_eq!(r["allowed"], true, "a warning, not a denial: {r}");
    assert!(
        r["warnings"][0]
            .as_str()
            .unwrap()
            .contains("[claim-warm-pool-exists] SandboxWarmPool \"missing\" does not exist in namespace team-a"),
        "{r}"
    );
    // SandboxWarmPool -> SandboxTemplate
    let r = check(pool("new", 1, "python-template"), "CREATE").await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(
        !names_in(&r).contains(&"warmpool-template-exists".into()),
        "{r}"
    );
    let r = check(pool("new", 1, "nope"), "CREATE").await;
    assert!(
        names_in(&r).contains(&"warmpool-template-exists".into()),
        "{r}"
    );
    assert!(
        !names_in(&r).contains(&"warmpool-template-admitted".into()),
        "{r}"
    );
    // A template that would be refused as it stands (hostNetwork): the pool is warned.
    let r = check(pool("new", 1, "host-network-template"), "CREATE").await;
    assert_eq!(r["allowed"], true, "{r}");
    let warning = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|w| w.starts_with("[warmpool-template-admitted]"))
        .unwrap_or_else(|| panic!("no warmpool-template-admitted warning: {r}"));
    assert!(
        warning.contains("SandboxTemplate host-network-template would be refused"),
        "{warning}"
    );
    // The namespace's replica total: 10 + 35 recorded, ceiling 50.
    let r = check(pool("new", 5, "python-template"), "CREATE").await;
    assert_eq!(r["allowed"], true, "{r}");
    let r = check(pool("new", 6, "python-template"), "CREATE").await;
    assert_eq!(r["allowed"], false, "{r}");
    assert!(
        r["status"]["message"].as_str().unwrap().contains(
            "[warmpool-namespace-replicas] warm pools in namespace team-a would keep 51 sandboxes warm; the ceiling is 50"
        ),
        "{r}"
    );
    // An update of a recorded pool replaces its own count: 10 + 15, not 10 + 35 + 15.
    let r = check(pool("big-pool", 15, "python-template"), "UPDATE").await;
    assert_eq!(r["allowed"], true, "{r}");
    // Sandbox service names
    let r = check(sandbox("jupyter", None), "CREATE").await;
    assert!(
        r["status"]["message"].as_str().unwrap_or("").contains(
            "[sandbox-service-owner] spec.service is true but Service team-a/jupyter already exists and is not this Sandbox's"
        ),
        "{r}"
    );
    let own = sandbox("owned-box", Some("9a8b0000-0000-4000-8000-000000000401"));
    let r = check(own, "UPDATE").await;
    assert!(
        !names_in(&r).contains(&"sandbox-service-owner".into()),
        "{r}"
    );
    let r = check(sandbox("fresh-name", None), "CREATE").await;
    assert!(
        !names_in(&r).contains(&"sandbox-service-owner".into()),
        "{r}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_watch_that_ends_in_410_gone_relists_and_says_so() {
    let lists = Arc::new(AtomicUsize::new(0));
    let watches = Arc::new(AtomicUsize::new(0));
    let (l, w) = (lists.clone(), watches.clone());
    let api = api(move |seen| {
        if seen.is_watch() {
            if w.fetch_add(1, Ordering::SeqCst) == 0 {
                let bookmark = json!({"type": "BOOKMARK", "object": {"kind": "Service", "apiVersion": "v1",
                    "metadata": {"resourceVersion": "200120"}}});
                Reply::Watch {
                    events: vec![bookmark.to_string(), fixture("watch-410-gone.json")],
                    then_close: true,
                }
            } else {
                Reply::OpenWatch
            }
        } else if l.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::Json(200, fixture("services-list.json"))
        } else {
            Reply::Json(200, fixture("services-list-after-410.json"))
        }
    });
    let server = server_on(&api).await;
    ready(&server).await;
    // The Service created while the watch was gone arrives with the re-list.
    let mut detail = String::new();
    for _ in 0..600 {
        let (_, body) = server.get_health("/readyz").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        detail = v["checks"]["cluster"]["detail"]
            .as_str()
            .unwrap()
            .to_owned();
        if detail.contains("v1 Service: 3 objects")
            && server.running.admitter.metrics.inventory_objects.get() == 7
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        detail.contains("v1 Service: 3 objects, re-listed 1 times"),
        "{detail}"
    );
    assert!(
        detail.contains("410") || detail.contains("too old"),
        "{detail}"
    );
    assert_eq!(lists.load(Ordering::SeqCst), 2);
    let r = server
        .review(
            "/validate",
            request_for(&sandbox("late-arrival", None), "CREATE", "team-a"),
        )
        .await;
    assert!(
        names_in(&r).contains(&"sandbox-service-owner".into()),
        "{r}"
    );
    // The metrics say it too (refreshed with the inventory).
    let (_, metrics) = server.get_health("/metrics").await;
    assert!(
        metrics.contains("sandbox_admission_watch_cache_relists{kind=\"v1 Service\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}
