//! Network profiles as NetworkPolicies.
//!
//! Each profile becomes one NetworkPolicy per namespace, selecting the pods that carry the
//! profile's label. Both policy types are always listed, so a profile with no ingress (or egress)
//! rules denies that direction instead of leaving it open.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::NetworkProfile;

/// The label the upstream sandbox-router pods carry (see the upstream router manifests).
pub const ROUTER_LABEL: (&str, &str) = ("app", "sandbox-router");

/// Private, shared, link-local (cloud metadata) and CGNAT ranges: where cluster and internal
/// services live. Sandboxes reach the public internet, not these.
pub const BLOCKED_V4: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
];
/// Unique-local and link-local IPv6.
pub const BLOCKED_V6: [&str; 2] = ["fc00::/7", "fe80::/10"];

/// The label selecting the pods of a network profile.
pub fn profile_label_key(prefix: &str) -> String {
    format!("{prefix}network-profile")
}

/// The NetworkPolicy for `profile` in `namespace`.
pub fn network_policy(
    prefix: &str,
    name: &str,
    profile: &NetworkProfile,
    namespace: &str,
) -> NetworkPolicy {
    let key = profile_label_key(prefix);
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(profile.policy_name(name)),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    "sandbox-admission".to_owned(),
                ),
                (key.clone(), name.to_owned()),
            ])),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(match_labels(&[(&key, name)])),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(profile.ingress.clone()),
            egress: Some(profile.egress.clone()),
        }),
    }
}

/// The embedded profiles: `default` (router in, DNS and public internet out) and `isolated`
/// (router in, DNS only out).
pub fn default_network_profiles() -> BTreeMap<String, NetworkProfile> {
    let from_router = NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            pod_selector: Some(match_labels(&[ROUTER_LABEL])),
            ..Default::default()
        }]),
        ports: None,
    };
    let default = NetworkProfile {
        policy_name: None,
        ingress: vec![from_router.clone()],
        egress: vec![dns_rule(), public_internet_rule()],
    };
    let isolated = NetworkProfile {
        policy_name: None,
        ingress: vec![from_router],
        egress: vec![dns_rule()],
    };
    BTreeMap::from([
        ("default".to_owned(), default),
        ("isolated".to_owned(), isolated),
    ])
}

fn match_labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        match_expressions: None,
    }
}

fn dns_rule() -> NetworkPolicyEgressRule {
    let port = |protocol: &str| NetworkPolicyPort {
        protocol: Some(protocol.to_owned()),
        port: Some(IntOrString::Int(53)),
        end_port: None,
    };
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(match_labels(&[(
                "kubernetes.io/metadata.name",
                "kube-system",
            )])),
            pod_selector: Some(match_labels(&[("k8s-app", "kube-dns")])),
            ip_block: None,
        }]),
        ports: Some(vec![port("UDP"), port("TCP")]),
    }
}

fn public_internet_rule() -> NetworkPolicyEgressRule {
    let block = |cidr: &str, except: &[&str]| NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_owned(),
            except: Some(except.iter().map(|s| (*s).to_owned()).collect()),
        }),
        ..Default::default()
    };
    NetworkPolicyEgressRule {
        to: Some(vec![
            block("0.0.0.0/0", &BLOCKED_V4),
            block("::/0", &BLOCKED_V6),
        ]),
        ports: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_policy_shape() {
        let profiles = default_network_profiles();
        let np = network_policy("p.io/", "default", &profiles["default"], "team-a");
        let v = serde_json::to_value(&np).unwrap();
        assert_eq!(v["apiVersion"], "networking.k8s.io/v1");
        assert_eq!(v["kind"], "NetworkPolicy");
        assert_eq!(v["metadata"]["name"], "sandbox-admission-default");
        assert_eq!(v["metadata"]["namespace"], "team-a");
        assert_eq!(
            v["spec"]["podSelector"]["matchLabels"]["p.io/network-profile"],
            "default"
        );
        assert_eq!(
            v["spec"]["policyTypes"],
            serde_json::json!(["Ingress", "Egress"])
        );
        assert_eq!(
            v["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app"],
            "sandbox-router"
        );
        let egress = &v["spec"]["egress"];
        assert_eq!(egress[0]["ports"][0]["port"], 53);
        assert_eq!(egress[1]["to"][0]["ipBlock"]["cidr"], "0.0.0.0/0");
        let except = egress[1]["to"][0]["ipBlock"]["except"].as_array().unwrap();
        assert!(except.iter().any(|c| c == "169.254.0.0/16"));
        assert_eq!(egress[1]["to"][1]["ipBlock"]["cidr"], "::/0");
    }

    #[test]
    fn isolated_has_no_internet() {
        let profiles = default_network_profiles();
        let np = network_policy("p.io/", "isolated", &profiles["isolated"], "ns");
        let egress = np.spec.unwrap().egress.unwrap();
        assert_eq!(egress.len(), 1);
        assert!(egress[0].to.as_ref().unwrap()[0].ip_block.is_none());
    }
}
