//! Strict schema checks for manifests: each object is deserialised into its k8s-openapi type
//! (generated from the OpenAPI schema of Kubernetes 1.33, the lowest supported version) and
//! serialised back. k8s-openapi ignores unknown fields, so a key of the original that the round
//! trip lost is a field the schema does not have: a typo the API server would drop silently
//! (or, with `kubectl apply --validate=strict`, refuse).

use std::path::Path;

use k8s_openapi::Resource;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Every YAML document of a file, as JSON values (empty documents dropped).
pub fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_docs(&text, &path.display().to_string())
}

pub fn parse_docs(text: &str, origin: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("{origin}: not valid YAML: {e}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// Check one object; `Err` lists what is wrong with it.
pub fn check_object(doc: &Value) -> Result<(), Vec<String>> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    macro_rules! typed {
        ($($t:ty),* $(,)?) => {
            $(
                if api_version == <$t as Resource>::API_VERSION && kind == <$t as Resource>::KIND {
                    return round_trip::<$t>(doc);
                }
            )*
        };
    }
    typed!(
        Namespace,
        ServiceAccount,
        Service,
        ConfigMap,
        Secret,
        ClusterRole,
        ClusterRoleBinding,
        Role,
        RoleBinding,
        Deployment,
        CustomResourceDefinition,
        PodDisruptionBudget,
        MutatingWebhookConfiguration,
        ValidatingWebhookConfiguration,
        RuntimeClass,
        NetworkPolicy,
    );
    match (api_version, kind) {
        ("cert-manager.io/v1", "Issuer") => check_issuer(doc),
        ("cert-manager.io/v1", "Certificate") => check_certificate(doc),
        ("monitoring.coreos.com/v1", "ServiceMonitor") => check_service_monitor(doc),
        _ => Err(vec![format!(
            "unexpected kind {kind:?} of apiVersion {api_version:?}: add it to the schema check"
        )]),
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<(), Vec<String>> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| vec![e.to_string()])?;
    let back = serde_json::to_value(&typed).map_err(|e| vec![e.to_string()])?;
    let mut lost = Vec::new();
    lost_keys(doc, &back, "", &mut lost);
    if lost.is_empty() {
        Ok(())
    } else {
        Err(lost
            .into_iter()
            .map(|p| format!("unknown field {p}"))
            .collect())
    }
}

/// Keys of `original` that `back` does not have, as JSON pointers. A `null` is allowed to vanish
/// (it means "unset"); anything else that vanished was not in the schema.
fn lost_keys(original: &Value, back: &Value, path: &str, out: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (key, value) in o {
                let here = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
                match b.get(key) {
                    Some(v) => lost_keys(value, v, &here, out),
                    None if value.is_null() => {}
                    None => out.push(here),
                }
            }
        }
        (Value::Array(o), Value::Array(b)) => {
            if o.len() != b.len() {
                out.push(format!("{path} (list of {} became {})", o.len(), b.len()));
            }
            for (i, (ov, bv)) in o.iter().zip(b).enumerate() {
                lost_keys(ov, bv, &format!("{path}/{i}"), out);
            }
        }
        (Value::Object(o), _) if !o.is_empty() => out.push(format!("{path} (not an object)")),
        _ => {}
    }
}

/// Keys of an object outside `allowed`, and `required` keys missing, as errors.
fn keys(value: &Value, path: &str, allowed: &[&str], required: &[&str], out: &mut Vec<String>) {
    let Some(map) = value.as_object() else {
        out.push(format!("{path} must be an object"));
        return;
    };
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            out.push(format!("unknown field {path}/{key}"));
        }
    }
    for key in required {
        if !map.contains_key(*key) {
            out.push(format!("missing field {path}/{key}"));
        }
    }
}

fn check_meta(doc: &Value, out: &mut Vec<String>) {
    keys(
        doc,
        "",
        &["apiVersion", "kind", "metadata", "spec"],
        &["metadata", "spec"],
        out,
    );
    keys(
        &doc["metadata"],
        "/metadata",
        &["name", "namespace", "labels", "annotations"],
        &["name", "namespace"],
        out,
    );
}

/// The Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1): the subset the Helm chart
/// uses, with the operator's field names.
fn check_service_monitor(doc: &Value) -> Result<(), Vec<String>> {
    let mut out = Vec::new();
    check_meta(doc, &mut out);
    let spec = &doc["spec"];
    keys(
        spec,
        "/spec",
        &["selector", "namespaceSelector", "endpoints"],
        &["selector", "endpoints"],
        &mut out,
    );
    keys(
        &spec["selector"],
        "/spec/selector",
        &["matchLabels", "matchExpressions"],
        &[],
        &mut out,
    );
    if let Some(ns) = spec.get("namespaceSelector") {
        keys(
            ns,
            "/spec/namespaceSelector",
            &["matchNames", "any"],
            &[],
            &mut out,
        );
    }
    match spec["endpoints"].as_array() {
        Some(endpoints) if !endpoints.is_empty() => {
            for (i, e) in endpoints.iter().enumerate() {
                keys(
                    e,
                    &format!("/spec/endpoints/{i}"),
                    &["port", "path", "scheme", "interval", "scrapeTimeout"],
                    &["port"],
                    &mut out,
                );
            }
        }
        _ => out.push("spec.endpoints must be a non-empty list".into()),
    }
    if out.is_empty() { Ok(()) } else { Err(out) }
}

/// cert-manager's Issuer (cert-manager.io/v1): the subset these manifests use.
fn check_issuer(doc: &Value) -> Result<(), Vec<String>> {
    let mut out = Vec::new();
    check_meta(doc, &mut out);
    let spec = &doc["spec"];
    keys(spec, "/spec", &["selfSigned", "ca"], &[], &mut out);
    let kinds = ["selfSigned", "ca"]
        .iter()
        .filter(|k| spec.get(**k).is_some())
        .count();
    if kinds != 1 {
        out.push("spec needs exactly one of selfSigned, ca".into());
    }
    if let Some(ca) = spec.get("ca") {
        keys(ca, "/spec/ca", &["secretName"], &["secretName"], &mut out);
    }
    if let Some(s) = spec.get("selfSigned") {
        keys(s, "/spec/selfSigned", &[], &[], &mut out);
    }
    if out.is_empty() { Ok(()) } else { Err(out) }
}

/// cert-manager's Certificate (cert-manager.io/v1): the subset these manifests use.
fn check_certificate(doc: &Value) -> Result<(), Vec<String>> {
    let mut out = Vec::new();
    check_meta(doc, &mut out);
    let spec = &doc["spec"];
    keys(
        spec,
        "/spec",
        &[
            "secretName",
            "commonName",
            "dnsNames",
            "duration",
            "renewBefore",
            "isCA",
            "usages",
            "privateKey",
            "issuerRef",
        ],
        &["secretName", "issuerRef"],
        &mut out,
    );
    keys(
        &spec["issuerRef"],
        "/spec/issuerRef",
        &["name", "kind", "group"],
        &["name"],
        &mut out,
    );
    if let Some(key) = spec.get("privateKey") {
        keys(
            key,
            "/spec/privateKey",
            &["algorithm", "size", "encoding", "rotationPolicy"],
            &[],
            &mut out,
        );
        let algorithm = key["algorithm"].as_str().unwrap_or("RSA");
        if !["RSA", "ECDSA", "Ed25519"].contains(&algorithm) {
            out.push(format!(
                "privateKey.algorithm {algorithm:?} is not one cert-manager knows"
            ));
        }
    }
    const USAGES: &[&str] = &[
        "signing",
        "digital signature",
        "content commitment",
        "key encipherment",
        "key agreement",
        "data encipherment",
        "cert sign",
        "crl sign",
        "encipher only",
        "decipher only",
        "any",
        "server auth",
        "client auth",
        "code signing",
        "email protection",
        "s/mime",
        "ipsec end system",
        "ipsec tunnel",
        "ipsec user",
        "timestamping",
        "ocsp signing",
        "microsoft sgc",
        "netscape sgc",
    ];
    for usage in spec["usages"].as_array().into_iter().flatten() {
        if !usage.as_str().is_some_and(|u| USAGES.contains(&u)) {
            out.push(format!("unknown usage {usage}"));
        }
    }
    for duration in ["duration", "renewBefore"] {
        if let Some(d) = spec.get(duration)
            && !d.as_str().is_some_and(|s| {
                s.strip_suffix('h')
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
        {
            out.push(format!(
                "{duration} {d} must be a Go duration in hours, e.g. 2160h"
            ));
        }
    }
    if out.is_empty() { Ok(()) } else { Err(out) }
}

#[test]
fn unknown_fields_are_found_with_their_path() {
    let doc: Value = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "s", "lables": {"a": "b"}},
        "spec": {"ports": [{"port": 443, "targtPort": 8443}], "selector": {"a": "b"}}
    });
    let errors = check_object(&doc).unwrap_err();
    assert!(
        errors.contains(&"unknown field /metadata/lables".to_string()),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"unknown field /spec/ports/0/targtPort".to_string()),
        "{errors:?}"
    );
    let wrong_type: Value = serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": [{"port": "443"}]}
    });
    assert!(check_object(&wrong_type).is_err());
    let unknown_kind: Value = serde_json::json!({"apiVersion": "v1", "kind": "Podd"});
    assert!(check_object(&unknown_kind).is_err());
    let typo_certificate: Value = serde_json::json!({
        "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
        "metadata": {"name": "c", "namespace": "n"},
        "spec": {"secretName": "s", "issuerRef": {"name": "i"}, "dnsName": ["x"]}
    });
    assert!(check_object(&typo_certificate).is_err());
}
