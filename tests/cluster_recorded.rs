//! `KubeCluster` against API server responses: the watch caches, the not-found path, and
//! server-side apply of NetworkPolicies (success and RBAC refusal), down to the request shape.

mod kube_mock;

use std::sync::Arc;
use std::time::Duration;

use kube_mock::{MockApi, Reply, Seen, fixture, mock_api};
use sandbox_admission::admission::AdmissionRequest;
use sandbox_admission::cluster::{
    ClusterAccess, ClusterError, Ensured, KubeCluster, KubeClusterOptions, Lookup,
};
use sandbox_admission::config::Config;
use sandbox_admission::mutate::Mutator;
use sandbox_admission::mutate::labels::name_hash;
use sandbox_admission::mutate::network::network_policy;
use serde_json::{Value, json};

const RC: &str = "/apis/node.k8s.io/v1/runtimeclasses";
const NS: &str = "/api/v1/namespaces";
const NP: &str =
    "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/sandbox-admission-isolated";

/// The list and watch calls of both caches, plus `extra` for everything else.
fn api(extra: impl Fn(&Seen) -> Option<Reply> + Send + Sync + 'static) -> MockApi {
    mock_api(move |seen| {
        if let Some(reply) = extra(seen) {
            return reply;
        }
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", _) if seen.is_watch() => Reply::OpenWatch,
            ("GET", RC) => Reply::Json(200, fixture("runtimeclasses-list.json")),
            ("GET", NS) => Reply::Json(200, fixture("namespaces-list.json")),
            _ => Reply::Json(
                500,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": format!("unexpected {} {}", seen.method, seen.path), "code": 500})
                .to_string(),
            ),
        }
    })
}

fn start(api: &MockApi) -> KubeCluster {
    KubeCluster::start(
        api.client.clone(),
        KubeClusterOptions {
            sync_wait: Duration::from_secs(5),
            ..Default::default()
        },
    )
}

fn sandbox_pod_request(runtime: &str) -> AdmissionRequest {
    AdmissionRequest::from_value(json!({
        "uid": "r1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "team-a", "name": "box", "operation": "CREATE",
        "object": {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "box", "namespace": "team-a",
                "labels": {"agents.x-k8s.io/sandbox-name-hash": name_hash("box")},
                "annotations": {"sandbox-admission.io/runtime": runtime}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    }))
    .unwrap()
}

#[tokio::test]
async fn runtime_classes_and_namespaces_come_from_the_watch_caches() {
    let api = api(|_| None);
    let cluster = start(&api);
    let Lookup::Found(gvisor) = cluster.runtime_class("gvisor").await else {
        panic!("gvisor not found in the cache");
    };
    let scheduling = gvisor.scheduling.clone().unwrap();
    assert_eq!(
        scheduling.node_selector.unwrap()["sandbox.gke.io/runtime"],
        "gvisor"
    );
    assert!(
        gvisor
            .metadata
            .managed_fields
            .as_ref()
            .is_none_or(|m| m.is_empty())
    );
    let Lookup::Found(ns) = cluster.namespace("team-a").await else {
        panic!("team-a not found in the cache");
    };
    assert_eq!(
        ns.metadata.labels.as_ref().unwrap()["sandbox-admission.io/network-profile"],
        "isolated"
    );
    assert!(cluster.is_synced());
    assert!(
        api.direct().is_empty(),
        "answered from the caches: {:?}",
        api.direct()
    );
    let seen = api.seen();
    assert!(seen.iter().any(|s| s.path == RC && !s.is_watch()));
    assert!(seen.iter().any(|s| s.path == RC && s.is_watch()));
}

#[tokio::test]
async fn live_scheduling_is_copied_into_the_pod() {
    let api = api(|s| {
        (s.method == "PATCH").then(|| Reply::Json(200, fixture("networkpolicy-apply-200.json")))
    });
    let cluster: Arc<dyn ClusterAccess> = Arc::new(start(&api));
    let mutator = mutator_of(cluster);
    let req = sandbox_pod_request("gvisor");
    let out = mutator.mutate(&req).await;
    assert_eq!(out.denial, None);
    let mut pod = req.object().unwrap().clone();
    json_patch::patch(&mut pod, &out.patch).unwrap();
    assert_eq!(pod["spec"]["runtimeClassName"], "gvisor");
    assert_eq!(
        pod["spec"]["nodeSelector"]["sandbox.gke.io/runtime"],
        "gvisor"
    );
    assert_eq!(
        pod["spec"]["tolerations"][0]["key"],
        "sandbox.gke.io/runtime"
    );
    // The namespace label chose the network profile.
    assert_eq!(
        pod["metadata"]["labels"]["sandbox-admission.io/network-profile"],
        "isolated"
    );
}

#[tokio::test]
async fn missing_runtime_class_is_confirmed_with_the_api_server_then_denied() {
    let api = api(|s| {
        (s.method == "GET" && s.path == format!("{RC}/kata-qemu"))
            .then(|| Reply::Json(404, fixture("runtimeclass-kata-qemu-404.json")))
    });
    let cluster = Arc::new(start(&api));
    assert!(matches!(
        cluster.runtime_class("kata-qemu").await,
        Lookup::Missing
    ));
    let direct = api.direct();
    assert_eq!(direct.len(), 1, "{direct:?}");
    assert_eq!(direct[0].path, format!("{RC}/kata-qemu"));

    let dyn_cluster: Arc<dyn ClusterAccess> = cluster;
    let mutator = mutator_of(dyn_cluster);
    let out = mutator.mutate(&sandbox_pod_request("kata")).await;
    let denial = out.denial.expect("denied");
    assert!(denial.contains("RuntimeClass \"kata-qemu\""), "{denial}");
    assert!(denial.contains("handler kata-qemu"), "{denial}");
    assert!(denial.contains("onMissingRuntimeClass: warn"), "{denial}");
    assert!(
        !api.seen().iter().any(|s| s.method == "PATCH"),
        "a refused pod applies no NetworkPolicy"
    );
}

#[tokio::test]
async fn api_errors_are_unavailable_not_missing() {
    let api = api(|s| {
        (s.path == format!("{RC}/kata-qemu")).then(|| {
            Reply::Json(
                500,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500})
                .to_string(),
            )
        })
    });
    let cluster = start(&api);
    match cluster.runtime_class("kata-qemu").await {
        Lookup::Unavailable(reason) => assert!(reason.contains("etcdserver"), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn isolated_policy() -> k8s_openapi::api::networking::v1::NetworkPolicy {
    let config = Config::embedded().unwrap();
    network_policy(
        &config.label_prefix,
        "isolated",
        &config.mutation.network_profiles["isolated"],
        "team-a",
    )
}

#[tokio::test]
async fn network_policy_is_server_side_applied_once() {
    let api = api(|s| {
        (s.method == "PATCH").then(|| Reply::Json(200, fixture("networkpolicy-apply-200.json")))
    });
    let cluster = start(&api);
    let policy = isolated_policy();
    assert_eq!(
        cluster.ensure_network_policy(&policy).await,
        Ok(Ensured::Applied)
    );
    assert_eq!(
        cluster.ensure_network_policy(&policy).await,
        Ok(Ensured::Cached)
    );

    let patches: Vec<Seen> = api
        .seen()
        .into_iter()
        .filter(|s| s.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1, "applied once, then cached");
    let p = &patches[0];
    assert_eq!(p.path, NP);
    let mut query: Vec<&str> = p.query.split('&').filter(|q| !q.is_empty()).collect();
    query.sort_unstable();
    assert_eq!(query, ["fieldManager=sandbox-admission", "force=true"]);
    assert_eq!(
        p.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let body: Value = serde_json::from_slice(&p.body).unwrap();
    assert_eq!(body["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(body["kind"], "NetworkPolicy");
    assert_eq!(body["metadata"]["name"], "sandbox-admission-isolated");
    assert_eq!(
        body["spec"]["podSelector"]["matchLabels"]["sandbox-admission.io/network-profile"],
        "isolated"
    );

    // A changed spec is applied again at once.
    let mut changed = policy.clone();
    if let Some(spec) = changed.spec.as_mut() {
        spec.egress = Some(Vec::new());
    }
    assert_eq!(
        cluster.ensure_network_policy(&changed).await,
        Ok(Ensured::Applied)
    );
}

#[tokio::test]
async fn forbidden_apply_is_a_clear_denial() {
    let api = api(|s| {
        (s.method == "PATCH").then(|| Reply::Json(403, fixture("networkpolicy-apply-403.json")))
    });
    let cluster = Arc::new(start(&api));
    let err = cluster
        .ensure_network_policy(&isolated_policy())
        .await
        .unwrap_err();
    let ClusterError::Api {
        code,
        reason,
        message,
    } = &err
    else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!((*code, reason.as_str()), (403, "Forbidden"));
    assert!(message.contains("cannot patch resource \"networkpolicies\""));

    let dyn_cluster: Arc<dyn ClusterAccess> = cluster;
    let mutator = mutator_of(dyn_cluster);
    let denial = mutator
        .mutate(&sandbox_pod_request("gvisor"))
        .await
        .denial
        .expect("denied");
    assert!(
        denial.contains("team-a/sandbox-admission-isolated"),
        "{denial}"
    );
    assert!(denial.contains("403 Forbidden"), "{denial}");
    assert!(denial.contains("patch on networkpolicies"), "{denial}");
}

#[tokio::test]
async fn dry_run_sends_no_apply() {
    let api = api(|s| {
        (s.method == "PATCH").then(|| Reply::Json(200, fixture("networkpolicy-apply-200.json")))
    });
    let cluster: Arc<dyn ClusterAccess> = Arc::new(start(&api));
    let mutator = mutator_of(cluster);
    let mut req = sandbox_pod_request("gvisor");
    req.dry_run = true;
    let out = mutator.mutate(&req).await;
    assert_eq!(out.denial, None);
    assert!(!out.patch.is_empty());
    assert!(!api.seen().iter().any(|s| s.method == "PATCH"));
}

#[tokio::test]
async fn a_cache_that_cannot_sync_falls_back_to_direct_reads_without_waiting_each_time() {
    let forbidden_list = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "runtimeclasses.node.k8s.io is forbidden: User \"system:serviceaccount:sandbox-admission:sandbox-admission\" cannot list resource \"runtimeclasses\" in API group \"node.k8s.io\" at the cluster scope",
        "reason": "Forbidden", "details": {"group": "node.k8s.io", "kind": "runtimeclasses"}, "code": 403})
    .to_string();
    let list: Value = serde_json::from_str(&fixture("runtimeclasses-list.json")).unwrap();
    let gvisor = list["items"][0].to_string();
    let api = api(move |s| match (s.method.as_str(), s.path.as_str()) {
        ("GET", RC) if !s.is_watch() => Some(Reply::Json(403, forbidden_list.clone())),
        ("GET", p) if p == format!("{RC}/gvisor") => Some(Reply::Json(200, gvisor.clone())),
        _ => None,
    });
    let cluster = KubeCluster::start(
        api.client.clone(),
        KubeClusterOptions {
            sync_wait: Duration::from_millis(300),
            ..Default::default()
        },
    );
    assert!(matches!(
        cluster.runtime_class("gvisor").await,
        Lookup::Found(_)
    ));
    assert!(!cluster.is_synced());
    let started = std::time::Instant::now();
    assert!(matches!(
        cluster.runtime_class("gvisor").await,
        Lookup::Found(_)
    ));
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "the second lookup waited for the cache again"
    );
    assert_eq!(api.direct().len(), 2);
}

fn mutator_of(cluster: Arc<dyn ClusterAccess>) -> Mutator {
    let config = Config::embedded().unwrap();
    Mutator::new(&config.mutation, &config.label_prefix, Some(cluster))
}
