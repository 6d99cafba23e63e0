//! `certs --kustomize-patch FILE`: the caBundle as a kustomize strategic-merge patch for both
//! webhook configurations of `manifests/`, so installing with self-made certificates is one
//! `patches: [{path: FILE}]` line in an overlay.
//!
//! Webhooks merge by `name`, so the patch names every webhook; `tests/manifests` checks these
//! names against `manifests/base/webhooks.yaml`.

use serde_json::{Value, json};

/// The webhooks of the MutatingWebhookConfiguration in `manifests/`.
pub const MUTATING_WEBHOOKS: &[&str] = &[
    "pods.mutate.sandbox-admission.io",
    "enforced-pods.mutate.sandbox-admission.io",
];
/// The webhooks of the ValidatingWebhookConfiguration in `manifests/`.
pub const VALIDATING_WEBHOOKS: &[&str] = &[
    "sandboxes.validate.sandbox-admission.io",
    "pods.validate.sandbox-admission.io",
    "enforced-pods.validate.sandbox-admission.io",
];

/// Both configurations (named `configuration`) with `ca_bundle_b64` on every webhook, as YAML.
pub fn ca_bundle_patch(configuration: &str, ca_bundle_b64: &str) -> Result<String, String> {
    let doc = |kind: &str, hooks: &[&str]| -> Value {
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": configuration},
            "webhooks": hooks
                .iter()
                .map(|h| json!({"name": h, "clientConfig": {"caBundle": ca_bundle_b64}}))
                .collect::<Vec<_>>(),
        })
    };
    let docs = [
        doc("MutatingWebhookConfiguration", MUTATING_WEBHOOKS),
        doc("ValidatingWebhookConfiguration", VALIDATING_WEBHOOKS),
    ];
    let yaml = serde_saphyr::to_string_multiple(&docs).map_err(|e| e.to_string())?;
    Ok(format!(
        "# Written by `sandbox-admission certs`: the caBundle of both webhook configurations.\n\
         # Use it from a kustomize overlay of manifests/: patches: [{{path: THIS_FILE}}]\n{yaml}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_names_every_webhook_with_the_bundle() {
        let yaml = ca_bundle_patch("hook", "QUJD").unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["kind"], "MutatingWebhookConfiguration");
        assert_eq!(docs[1]["metadata"]["name"], "hook");
        let hooks = docs[1]["webhooks"].as_array().unwrap();
        assert_eq!(hooks.len(), VALIDATING_WEBHOOKS.len());
        assert!(
            hooks
                .iter()
                .all(|h| h["clientConfig"]["caBundle"] == "QUJD")
        );
    }
}
