//! The background audit over recorded watch data: the right PolicyReports are applied for a set
//! of objects (server-side apply, one per namespace), a policy reload re-audits, a second replica
//! stays out while the first holds the Lease (and when it loses the race for it: 409), a watch
//! error and a PolicyReport apply conflict are survived, and a cached object that does not decode
//! is skipped and counted. The policies are the test's own, so the shipped posture can change
//! without touching this test.

mod kube_mock;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube_mock::{MockApi, Reply, Seen, fixture, mock_api};
use sandbox_admission::audit::DecisionLog;
use sandbox_admission::audit::events::Events;
use sandbox_admission::background::audit::{AuditSettings, Auditor, Round};
use sandbox_admission::cluster::{ClusterAccess, KubeCluster, KubeClusterOptions};
use sandbox_admission::config::Config;
use sandbox_admission::metrics::Metrics;
use sandbox_admission::pipeline::Admitter;
use sandbox_admission::policy::PolicySource;
use serde_json::{Value, json};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/sandbox-admission/leases";
const REPORTS: &str = "/apis/wgpolicyk8s.io/v1alpha2/namespaces";

/// The recorded cluster, with a Lease the replicas share and a log of applied reports.
#[derive(Default)]
struct Cluster {
    lease: Mutex<Option<Value>>,
    /// The next Lease update loses a race (409), as when another replica wrote first.
    lose_next_update: AtomicBool,
    /// Applies of team-b's report that fail with a field-manager conflict.
    team_b_conflicts: AtomicUsize,
    claim_watches: AtomicUsize,
    /// The latest applied report of each namespace, for list calls.
    applied: Mutex<Vec<Value>>,
}

impl Cluster {
    fn route(&self, seen: &Seen) -> Reply {
        let lease_path = format!("{LEASES}/sandbox-admission-audit");
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", "/apis/extensions.agents.x-k8s.io/v1beta1/sandboxclaims") if seen.is_watch() => {
                // The first watch fails; the cache keeps its list and watches again.
                if self.claim_watches.fetch_add(1, Ordering::SeqCst) == 0 {
                    Reply::Json(500, fixture("watch-500-internal-error.json"))
                } else {
                    Reply::OpenWatch
                }
            }
            ("GET", _) if seen.is_watch() => Reply::OpenWatch,
            ("GET", p) if p == lease_path => match &*self.lease.lock().unwrap() {
                Some(lease) => Reply::Json(200, lease.to_string()),
                None => Reply::Json(404, fixture("lease-404.json")),
            },
            ("POST", LEASES) => {
                let mut slot = self.lease.lock().unwrap();
                if slot.is_some() {
                    return Reply::Json(409, fixture("lease-409-conflict.json"));
                }
                let mut lease: Value = serde_json::from_slice(&seen.body).unwrap();
                lease["metadata"]["resourceVersion"] = json!("1");
                *slot = Some(lease.clone());
                Reply::Json(201, lease.to_string())
            }
            ("PUT", p) if p == lease_path => {
                let mut slot = self.lease.lock().unwrap();
                let lease: Value = serde_json::from_slice(&seen.body).unwrap();
                let stored = slot.as_ref().map(|l| l["metadata"]["resourceVersion"].clone());
                if self.lose_next_update.swap(false, Ordering::SeqCst)
                    || stored != Some(lease["metadata"]["resourceVersion"].clone())
                {
                    return Reply::Json(409, fixture("lease-409-conflict.json"));
                }
                let rv: u64 = lease["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
                let mut lease = lease;
                lease["metadata"]["resourceVersion"] = json!((rv + 1).to_string());
                *slot = Some(lease.clone());
                Reply::Json(200, lease.to_string())
            }
            ("PATCH", p) if p.starts_with(REPORTS) => {
                if p.contains("/team-b/") && self.team_b_conflicts.load(Ordering::SeqCst) > 0 {
                    self.team_b_conflicts.fetch_sub(1, Ordering::SeqCst);
                    return Reply::Json(409, fixture("policyreport-apply-409-conflict.json"));
                }
                let report: Value = serde_json::from_slice(&seen.body).unwrap();
                let mut applied = self.applied.lock().unwrap();
                applied.retain(|r| r["metadata"]["namespace"] != report["metadata"]["namespace"]);
                applied.push(report.clone());
                Reply::Json(200, report.to_string())
            }
            ("GET", "/apis/wgpolicyk8s.io/v1alpha2/policyreports") => {
                assert!(
                    seen.query.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dsandbox-admission"),
                    "{}",
                    seen.query
                );
                // What was applied, as the apiserver lists it (items without kind/apiVersion).
                let items: Vec<Value> = self
                    .applied
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        let mut r = r.clone();
                        r.as_object_mut().unwrap().remove("kind");
                        r.as_object_mut().unwrap().remove("apiVersion");
                        r
                    })
                    .collect();
                Reply::Json(
                    200,
                    json!({"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReportList",
                        "metadata": {"resourceVersion": "400000"}, "items": items})
                    .to_string(),
                )
            }
            ("GET", "/apis/wgpolicyk8s.io/v1alpha2/clusterpolicyreports") => Reply::Json(
                200,
                json!({"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "ClusterPolicyReportList",
                    "metadata": {"resourceVersion": "400000"}, "items": []})
                .to_string(),
            ),
            ("GET", "/apis/node.k8s.io/v1/runtimeclasses") => {
                Reply::Json(200, fixture("runtimeclasses-list.json"))
            }
            ("GET", "/api/v1/namespaces") => Reply::Json(200, fixture("namespaces-list.json")),
            ("GET", "/apis/agents.x-k8s.io/v1beta1/sandboxes") => {
                Reply::Json(200, fixture("sandboxes-list.json"))
            }
            ("GET", "/apis/extensions.agents.x-k8s.io/v1beta1/sandboxclaims") => {
                Reply::Json(200, fixture("sandboxclaims-list.json"))
            }
            ("GET", "/apis/extensions.agents.x-k8s.io/v1beta1/sandboxwarmpools") => {
                Reply::Json(200, fixture("sandboxwarmpools-list.json"))
            }
            ("GET", "/apis/extensions.agents.x-k8s.io/v1beta1/sandboxtemplates") => {
                Reply::Json(200, fixture("sandboxtemplates-list.json"))
            }
            ("GET", "/api/v1/services") => Reply::Json(200, fixture("services-list.json")),
            ("GET", "/api/v1/pods") => {
                assert!(
                    seen.query.contains("labelSelector=agents.x-k8s.io%2Fsandbox-name-hash"),
                    "pods are watched by the controller's label only: {}",
                    seen.query
                );
                Reply::Json(200, fixture("pods-sandbox-list.json"))
            }
            _ => Reply::Json(
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                    "message": format!("{} {} not recorded", seen.method, seen.path), "code": 404})
                .to_string(),
            ),
        }
    }
}

const NO_PRIVILEGED: &str = r#"package test.no_privileged
import rego.v1
violation contains {"msg": sprintf("container %s is privileged", [c.name])} if {
	some c in input.review.object.spec.podTemplate.spec.containers
	c.securityContext.privileged == true
}
"#;

const TEAM_LABEL: &str = r#"package test.team_label
import rego.v1
violation contains {"msg": "no team label"} if not input.review.object.metadata.labels.team
"#;

fn write_policies(dir: &Path) {
    std::fs::write(dir.join("no_privileged.rego"), NO_PRIVILEGED).unwrap();
    std::fs::write(
        dir.join("no_privileged.yaml"),
        "kinds: [{group: agents.x-k8s.io, kind: Sandbox}]\n",
    )
    .unwrap();
    std::fs::write(dir.join("team_label.rego"), TEAM_LABEL).unwrap();
    std::fs::write(
        dir.join("team_label.yaml"),
        "kinds: [{group: agents.x-k8s.io, kind: Sandbox}, {group: extensions.agents.x-k8s.io, kind: SandboxClaim}]\nenforcementAction: warn\n",
    )
    .unwrap();
}

struct Replica {
    cluster: Arc<KubeCluster>,
    admitter: Arc<Admitter>,
    auditor: Arc<Auditor>,
}

fn config() -> Config {
    let mut config = Config::embedded().unwrap();
    config.audit.enabled = true;
    config.decision_log.stdout = false;
    config
}

async fn replica(api: &MockApi, policies: &Path, holder: &str) -> Replica {
    let config = config();
    let cluster = Arc::new(KubeCluster::start(
        api.client.clone(),
        KubeClusterOptions {
            sync_wait: Duration::from_secs(5),
            watches: sandbox_admission::background::watches(&config),
            ..Default::default()
        },
    ));
    let dyn_cluster: Arc<dyn ClusterAccess> = cluster.clone();
    let metrics = Arc::new(Metrics::new());
    let admitter = Arc::new(
        Admitter::build(
            Arc::new(config.clone()),
            Some(policies),
            Some(dyn_cluster.clone()),
            metrics.clone(),
            DecisionLog::disabled(metrics.clone()),
            Events::disabled(metrics),
        )
        .unwrap(),
    );
    let settings = AuditSettings::from_config(&config, holder.into());
    let auditor = Arc::new(Auditor::new(admitter.clone(), dyn_cluster, settings));
    for _ in 0..500 {
        if cluster.is_synced() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cluster.is_synced(), "{:?}", cluster.readiness());
    Replica {
        cluster,
        admitter,
        auditor,
    }
}

fn applied_reports(api: &MockApi) -> Vec<(String, Value)> {
    api.seen()
        .into_iter()
        .filter(|s| s.method == "PATCH" && s.path.starts_with(REPORTS))
        .map(|s| {
            assert_eq!(
                s.content_type.as_deref(),
                Some("application/apply-patch+yaml")
            );
            let mut q: Vec<&str> = s.query.split('&').filter(|q| !q.is_empty()).collect();
            q.sort_unstable();
            assert_eq!(q, ["fieldManager=sandbox-admission", "force=true"]);
            (s.path.clone(), serde_json::from_slice(&s.body).unwrap())
        })
        .collect()
}

fn results_of(report: &Value) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["resources"][0]["name"].as_str().unwrap().to_owned(),
                r["policy"].as_str().unwrap().to_owned(),
                r["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn t(a: &str, b: &str, c: &str) -> (String, String, String) {
    (a.into(), b.into(), c.into())
}

#[tokio::test]
async fn the_audit_reports_what_runs_one_replica_at_a_time() {
    let state = Arc::new(Cluster::default());
    state.team_b_conflicts.store(1, Ordering::SeqCst);
    let s = state.clone();
    let api = mock_api(move |seen| s.route(seen));
    let dir = tempfile::tempdir().unwrap();
    write_policies(dir.path());
    let a = replica(&api, dir.path(), "replica-a").await;
    let b = replica(&api, dir.path(), "replica-b").await;

    // Replica a takes the Lease and audits.
    let Round::Audited(round) = a.auditor.run_once().await else {
        panic!("replica a did not audit");
    };
    // 3 Sandboxes + 1 claim + 1 Sandbox pod + 2 templates + 2 pools; broken-box does not decode.
    assert_eq!(round.judged, 9, "{round:?}");
    assert_eq!(round.skipped, 1);
    assert_eq!(a.admitter.metrics.audit_skipped.get(), 1);
    // team-b's apply met a field-manager conflict; team-a's went through.
    assert_eq!(round.applied, 1);
    assert_eq!(round.failed.len(), 1);
    assert_eq!(round.failed[0].0, "team-b");
    assert!(round.failed[0].1.contains("409"), "{:?}", round.failed);
    let lease = state.lease.lock().unwrap().clone().unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");

    let applied = applied_reports(&api);
    let team_a = &applied
        .iter()
        .find(|(p, _)| p == &format!("{REPORTS}/team-a/policyreports/sandbox-admission"))
        .expect("team-a report applied")
        .1;
    assert_eq!(team_a["apiVersion"], "wgpolicyk8s.io/v1alpha2");
    assert_eq!(team_a["kind"], "PolicyReport");
    assert_eq!(team_a["metadata"]["namespace"], "team-a");
    assert_eq!(
        results_of(team_a),
        [
            t("bad-box", "no-privileged", "fail"),
            t("claim-1", "team-label", "warn")
        ]
    );
    assert_eq!(
        team_a["summary"],
        json!({"pass": 6, "fail": 1, "warn": 1, "error": 0, "skip": 0})
    );
    assert_eq!(
        team_a["results"][0]["resources"][0]["uid"],
        "3f1a0000-0000-4000-8000-000000000502"
    );

    // Replica b stays out while a holds the Lease.
    assert!(matches!(b.auditor.run_once().await, Round::NotLeader));
    // a renews and audits again: team-b's report now applies.
    let Round::Audited(round) = a.auditor.run_once().await else {
        panic!("replica a lost its own Lease");
    };
    assert!(round.failed.is_empty(), "{:?}", round.failed);
    let team_b = applied_reports(&api)
        .into_iter()
        .rfind(|(p, _)| p.contains("/team-b/"))
        .unwrap()
        .1;
    assert_eq!(
        results_of(&team_b),
        [
            t("other-box", "no-privileged", "fail"),
            t("other-box", "team-label", "warn")
        ]
    );
    assert_eq!(team_b["summary"]["pass"], 0);

    // The holder goes silent (its Lease expires); b tries to take it but another replica
    // writes first (409): b still stays out. Then b takes it.
    {
        let mut slot = state.lease.lock().unwrap();
        let lease = slot.as_mut().unwrap();
        lease["spec"]["renewTime"] = json!("2020-01-01T00:00:00.000000Z");
    }
    state.lose_next_update.store(true, Ordering::SeqCst);
    assert!(matches!(b.auditor.run_once().await, Round::NotLeader));
    assert!(matches!(b.auditor.run_once().await, Round::Audited(_)));
    let lease = state.lease.lock().unwrap().clone().unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert!(matches!(a.auditor.run_once().await, Round::NotLeader));

    // The claims watch failed once and was retried; the audit judged the claim regardless.
    let claims = b
        .cluster
        .cache_status()
        .into_iter()
        .find(|c| c.kind.ends_with("SandboxClaim"))
        .unwrap();
    assert!(claims.synced && claims.objects == 1, "{claims:?}");
    assert!(state.claim_watches.load(Ordering::SeqCst) >= 1);

    // `audit --reports --from-cluster` reads them back through the same cluster access.
    let listed = b.cluster.list_policy_reports().await.unwrap();
    let parsed: Vec<sandbox_admission::policyreport::PolicyReport> = listed
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    let view = sandbox_admission::audit::reports::view(&parsed);
    assert_eq!(view.reports, 2);
    assert!(
        view.rows.iter().any(|r| r.namespace == "team-b"
            && r.name == "other-box"
            && r.policy == "no-privileged"),
        "{view:?}"
    );

    let metrics = a.admitter.metrics.encode();
    assert!(
        metrics.contains(
            "sandbox_admission_audit_violations{policy=\"no-privileged\",action=\"deny\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("sandbox_admission_audit_runs_total{result=\"not_leader\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sandbox_admission_audit_skipped_objects_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sandbox_admission_audit_last_run_timestamp_seconds"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_policy_reload_audits_again() {
    let state = Arc::new(Cluster::default());
    let s = state.clone();
    let api = mock_api(move |seen| s.route(seen));
    let dir = tempfile::tempdir().unwrap();
    write_policies(dir.path());
    let a = replica(&api, dir.path(), "replica-a").await;
    let task = a.auditor.clone().spawn();
    let rounds = |n: usize| {
        let api = &api;
        async move {
            for _ in 0..500 {
                if applied_reports(api).len() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!(
                "fewer than {n} reports applied: {}",
                applied_reports(api).len()
            );
        }
    };
    // The first round runs at start: two namespaces.
    rounds(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        applied_reports(&api).len(),
        2,
        "no second round before the interval or a reload"
    );

    std::fs::write(dir.path().join("pools.rego"), "package test.pools\nimport rego.v1\nviolation contains {\"msg\": \"pools are audited\"} if true\n").unwrap();
    std::fs::write(dir.path().join("pools.yaml"), "kinds: [{group: extensions.agents.x-k8s.io, kind: SandboxWarmPool}]\nenforcementAction: dryrun\n").unwrap();
    a.admitter
        .policies
        .reload(&PolicySource::Dir(dir.path().to_path_buf()))
        .unwrap();
    rounds(4).await;
    let team_a = applied_reports(&api)
        .into_iter()
        .rfind(|(p, _)| p.contains("/team-a/"))
        .unwrap()
        .1;
    let pools: Vec<_> = results_of(&team_a)
        .into_iter()
        .filter(|(_, p, _)| p == "pools")
        .collect();
    assert_eq!(
        pools,
        [
            t("big-pool", "pools", "fail"),
            t("python-pool", "pools", "fail")
        ]
    );
    task.abort();
}
