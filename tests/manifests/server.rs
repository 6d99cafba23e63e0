//! The Deployment, Service, RBAC and certificate manifests against the real server and CLI.

use std::path::PathBuf;

use clap::Parser;
use hyper::StatusCode;
use sandbox_admission::cli::{Cli, Command};
use sandbox_admission::config::{Config, LogFormat};
use serde_json::{Value, json};

use super::common::{TestServer, request_for};
use super::kustomize::manifests_dir;
use super::schema::yaml_docs;
use super::{object, webhooks};

fn deployment() -> Value {
    object("base", "Deployment", "sandbox-admission")
}

fn container(deployment: &Value) -> Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    containers[0].clone()
}

fn container_port(c: &Value, name: &str) -> i64 {
    c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_i64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

fn mount_path(c: &Value, volume: &str) -> String {
    c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume)
        .and_then(|m| m["mountPath"].as_str())
        .unwrap_or_else(|| panic!("no mount of volume {volume}"))
        .to_owned()
}

fn deployed_config() -> Config {
    Config::load(&manifests_dir().join("base/config/config.yaml")).expect("config.yaml is valid")
}

pub fn serve_args(c: &Value) -> sandbox_admission::cli::ServeArgs {
    let args: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let cli = Cli::try_parse_from(std::iter::once("sandbox-admission".to_owned()).chain(args))
        .unwrap_or_else(|e| panic!("Deployment args do not parse: {e}"));
    match cli.command {
        Command::Serve(args) => args,
        _ => panic!("the Deployment must run `serve`"),
    }
}

/// The base Deployment with the manage-certs overlay's JSON patch applied, as kustomize does.
fn manage_certs_deployment() -> Value {
    let k = yaml_docs(&manifests_dir().join("overlays/manage-certs/kustomization.yaml")).remove(0);
    let patch = k["patches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["target"]["kind"] == "Deployment")
        .expect("a Deployment patch");
    let ops = super::schema::parse_docs(patch["patch"].as_str().unwrap(), "patch").remove(0);
    let ops: json_patch::Patch = serde_json::from_value(ops).unwrap();
    let mut d = deployment();
    json_patch::patch(&mut d, &ops).expect("the overlay patch applies to the base");
    d
}

#[test]
fn deployment_args_parse_and_point_at_the_mounts() {
    let c = container(&deployment());
    let args = serve_args(&c);
    assert_eq!(args.log_format, Some(LogFormat::Json));
    assert_eq!(args.cert_dir, Some(PathBuf::from(mount_path(&c, "tls"))));
    assert_eq!(
        args.policies,
        Some(PathBuf::from(mount_path(&c, "policies")))
    );
    assert_eq!(
        args.config,
        Some(PathBuf::from(mount_path(&c, "config")).join("config.yaml"))
    );
    // The config ConfigMap's key is config.yaml.
    let k = yaml_docs(&manifests_dir().join("base/kustomization.yaml")).remove(0);
    assert_eq!(
        k["configMapGenerator"][0]["files"][0],
        "config.yaml=config/config.yaml"
    );
    let volumes = &deployment()["spec"]["template"]["spec"]["volumes"];
    assert_eq!(volumes[0]["secret"]["secretName"], "sandbox-admission-tls");
    assert!(args.tls_cert.is_none() && args.tls_key.is_none());
}

#[test]
fn manage_certs_overlay_runs_with_a_writable_cert_dir() {
    let d = manage_certs_deployment();
    let c = container(&d);
    let args = serve_args(&c);
    assert!(
        c["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--manage-certs"))
    );
    assert_eq!(args.cert_dir, Some(PathBuf::from(mount_path(&c, "tls"))));
    let tls_volume = &d["spec"]["template"]["spec"]["volumes"][0];
    assert_eq!(tls_volume["name"], "tls");
    assert!(tls_volume["emptyDir"].is_object(), "{tls_volume}");
    let mount = &c["volumeMounts"][0];
    assert_eq!(mount["name"], "tls");
    assert_ne!(mount["readOnly"], true);
    assert!(super::schema::check_object(&d).is_ok());
}

#[test]
fn ports_agree_between_service_deployment_and_config() {
    let config = deployed_config();
    let c = container(&deployment());
    assert_eq!(container_port(&c, "https"), i64::from(config.listen.port()));
    assert_eq!(
        container_port(&c, "health"),
        i64::from(config.health_listen.port())
    );
    let service = object("base", "Service", "sandbox-admission");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "https");
    assert_eq!(
        service["spec"]["selector"],
        deployment()["spec"]["template"]["metadata"]["labels"]
    );
    assert_eq!(config.service.name, "sandbox-admission");
    assert_eq!(config.service.namespace, "sandbox-admission");
    // The server gives up before the API server does.
    for (_, w) in webhooks() {
        assert!(config.default_timeout_seconds <= w["timeoutSeconds"].as_u64().unwrap());
    }
    let grace = deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(config.shutdown_grace_seconds < grace);
}

#[tokio::test]
async fn webhook_paths_are_served() {
    let server = TestServer::start().await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "sb", "namespace": "team-a",
                     "labels": {"agents.x-k8s.io/sandbox-name-hash": "1a2b3c4d"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let sandbox = json!({"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
        "metadata": {"name": "sb", "namespace": "team-a"},
        "spec": {"podTemplate": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    for (_, w) in webhooks() {
        let path = w["clientConfig"]["service"]["path"].as_str().unwrap();
        for object in [&pod, &sandbox] {
            // `review` asserts 200 and an AdmissionReview v1 answer echoing the uid.
            let response = server
                .review(path, request_for(object, "CREATE", "team-a"))
                .await;
            assert!(response["allowed"].is_boolean(), "{path}: {response}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn deployment_probes_answer_on_the_health_port() {
    let server = TestServer::start().await;
    let c = container(&deployment());
    let health = container_port(&c, "health");
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["port"], "health", "{probe}");
        assert_eq!(health, 9090);
        let path = get["path"].as_str().unwrap();
        let (status, body) = server.get_health(path).await;
        assert_eq!(status, StatusCode::OK, "{probe} {path}: {body}");
    }
    server.stop().await;
}

#[test]
fn deployment_is_hardened_and_highly_available() {
    let d = deployment();
    let spec = &d["spec"]["template"]["spec"];
    assert!(d["spec"]["replicas"].as_i64().unwrap() >= 2);
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let anti = &spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0]["podAffinityTerm"];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        anti["labelSelector"]["matchLabels"],
        d["spec"]["selector"]["matchLabels"]
    );
    let c = container(&d);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(sc["capabilities"].get("add").is_none());
    for key in ["cpu", "memory"] {
        assert!(c["resources"]["requests"][key].is_string(), "request {key}");
    }
    assert!(c["resources"]["limits"]["memory"].is_string());
    let pdb = object("base", "PodDisruptionBudget", "sandbox-admission");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        d["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(pdb["spec"]["minAvailable"], 1);
}

fn rules(kind: &str, name: &str, under: &str) -> Vec<(String, String, String)> {
    let role = object(under, kind, name);
    let mut out = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    let (g, r, v) = (group.as_str(), resource.as_str(), verb.as_str());
                    out.push((g.unwrap().into(), r.unwrap().into(), v.unwrap().into()));
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn rbac_grants_only_what_the_server_uses() {
    let mut expected: Vec<(String, String, String)> = Vec::new();
    let mut add = |g: &str, r: &str, verbs: &[&str]| {
        for v in verbs {
            expected.push((g.into(), r.into(), (*v).into()));
        }
    };
    add("node.k8s.io", "runtimeclasses", &["get", "list", "watch"]);
    add("", "namespaces", &["get", "list", "watch"]);
    add(
        "networking.k8s.io",
        "networkpolicies",
        &["get", "list", "watch", "create", "patch"],
    );
    add("events.k8s.io", "events", &["create", "patch"]);
    add("", "events", &["create", "patch"]);
    expected.sort();
    assert_eq!(rules("ClusterRole", "sandbox-admission", "base"), expected);

    // --manage-certs: its Secret by name (create cannot be limited by name: namespaced Role),
    // and the two webhook configurations by name.
    let role = object("overlays/manage-certs", "Role", "sandbox-admission-certs");
    assert_eq!(role["metadata"]["namespace"], "sandbox-admission");
    for rule in role["rules"].as_array().unwrap() {
        assert_eq!(rule["resources"], json!(["secrets"]));
        if rule["verbs"] != json!(["create"]) {
            assert_eq!(rule["resourceNames"], json!(["sandbox-admission-tls"]));
        }
    }
    let webhook_ca = object(
        "overlays/manage-certs",
        "ClusterRole",
        "sandbox-admission-webhook-ca",
    );
    for rule in webhook_ca["rules"].as_array().unwrap() {
        assert_eq!(rule["resourceNames"], json!(["sandbox-admission"]));
        assert_eq!(rule["verbs"], json!(["get", "patch"]));
    }
}

#[test]
fn cert_manager_overlay_issues_the_mounted_secret() {
    let cert = object(
        "overlays/cert-manager",
        "Certificate",
        "sandbox-admission-tls",
    );
    assert_eq!(cert["spec"]["secretName"], "sandbox-admission-tls");
    let names: Vec<String> = cert["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, deployed_config().service.dns_names());
    let issuer = cert["spec"]["issuerRef"]["name"].as_str().unwrap();
    let ca_issuer = object("overlays/cert-manager", "Issuer", issuer);
    let ca_secret = ca_issuer["spec"]["ca"]["secretName"].as_str().unwrap();
    let ca = object(
        "overlays/cert-manager",
        "Certificate",
        "sandbox-admission-ca",
    );
    assert_eq!(ca["spec"]["secretName"], ca_secret);
    assert_eq!(ca["spec"]["isCA"], true);
    let k = yaml_docs(&manifests_dir().join("overlays/cert-manager/kustomization.yaml")).remove(0);
    let patches = k["patches"].as_array().unwrap();
    assert_eq!(patches.len(), 2);
    for p in patches {
        let body = super::schema::parse_docs(p["patch"].as_str().unwrap(), "patch").remove(0);
        assert_eq!(
            body["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "sandbox-admission/sandbox-admission-tls"
        );
        assert_eq!(body["metadata"]["name"], p["target"]["name"]);
    }
}

#[test]
fn example_networkpolicy_is_what_the_server_applies() {
    // The same object the server applies (and `network-policies` prints) for the deployed
    // configuration's `default` profile in the example namespace.
    let config = deployed_config();
    let profile = config
        .mutation
        .network_profiles
        .get("default")
        .expect("a default network profile");
    let rendered = sandbox_admission::mutate::network::network_policy(
        &config.label_prefix,
        "default",
        profile,
        "sandbox-example",
    );
    let example = object("examples", "NetworkPolicy", "sandbox-admission-default");
    assert_eq!(example, serde_json::to_value(&rendered).unwrap());
}

#[test]
fn events_are_reported_by_the_pod_name() {
    assert!(deployed_config().events.enabled);
    let c = container(&deployment());
    let env = c["env"].as_array().unwrap();
    let pod_name = env.iter().find(|e| e["name"] == "POD_NAME").unwrap();
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
}
