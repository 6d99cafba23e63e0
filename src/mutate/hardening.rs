//! Hardening that fills in what a pod leaves unset and never loosens what it asks for.
//!
//! Two combinations the API server rejects are avoided rather than produced: a privileged
//! container (or one adding `SYS_ADMIN`) cannot have `allowPrivilegeEscalation: false`, and a
//! Windows pod cannot carry Linux-only seccomp or capability settings. Those are left for
//! validation to judge, with a warning.
//!
//! The ServiceAccount admission plugin runs before webhooks: by the time this code sets
//! `automountServiceAccountToken: false`, the token volume is already in the pod. Setting the
//! field alone would change nothing, so the volume that plugin injected is taken out as well.

use serde_json::{Map, Value};

use super::config::HardeningConfig;
use super::patch::{Refusal, Touched, child_map};

const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// Name prefix of the projected token volume the ServiceAccount admission plugin injects.
const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";

pub fn harden(
    spec: &mut Map<String, Value>,
    config: &HardeningConfig,
    changes: &mut Vec<String>,
    warnings: &mut Vec<String>,
    touched: &mut Touched,
) -> Result<(), Refusal> {
    if config.disable_service_account_token && is_unset(spec.get("automountServiceAccountToken")) {
        spec.insert("automountServiceAccountToken".into(), Value::Bool(false));
        touched.mark(&["spec", "automountServiceAccountToken"]);
        changes.push("automountServiceAccountToken=false".into());
        remove_injected_token(spec, changes, touched);
    }
    let windows = spec
        .get("os")
        .and_then(|os| os.get("name"))
        .and_then(Value::as_str)
        == Some("windows");
    if windows {
        if config.seccomp || config.disallow_privilege_escalation || config.drop_all_capabilities {
            warnings.push(
                "Windows pod: seccomp, allowPrivilegeEscalation and capabilities left unset".into(),
            );
        }
        return Ok(());
    }
    if config.seccomp {
        let has_profile = spec
            .get("securityContext")
            .and_then(|sc| sc.get("seccompProfile"))
            .is_some_and(|p| !p.is_null());
        if !has_profile {
            let profile = serde_json::to_value(&config.seccomp_profile)
                .map_err(|e| Refusal::new(format!("cannot encode seccompProfile: {e}")))?;
            let sc = child_map(spec, "securityContext", "spec.securityContext")?;
            sc.insert("seccompProfile".into(), profile);
            touched.mark(&["spec", "securityContext"]);
            changes.push(format!("seccompProfile {}", config.seccomp_profile.type_));
        }
    }
    for list in CONTAINER_LISTS {
        let Some(containers) = spec.get_mut(list) else {
            continue;
        };
        if containers.is_null() {
            continue;
        }
        let containers = containers
            .as_array_mut()
            .ok_or_else(|| Refusal::new(format!("pod field spec.{list} is not a list")))?;
        for (i, container) in containers.iter_mut().enumerate() {
            let path = format!("spec.{list}[{i}]");
            let container = container
                .as_object_mut()
                .ok_or_else(|| Refusal::new(format!("pod field {path} is not an object")))?;
            let name = container
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned();
            if harden_container(container, &name, &path, config, changes, warnings)? {
                touched.mark(&["spec", list, &i.to_string(), "securityContext"]);
            }
        }
    }
    Ok(())
}

/// Returns whether the container's `securityContext` was set.
fn harden_container(
    container: &mut Map<String, Value>,
    name: &str,
    path: &str,
    config: &HardeningConfig,
    changes: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<bool, Refusal> {
    let mut set = false;
    let sc = container.get("securityContext");
    let privileged = sc
        .and_then(|sc| sc.get("privileged"))
        .and_then(Value::as_bool)
        == Some(true);
    let adds_sys_admin = sc
        .and_then(|sc| sc.pointer("/capabilities/add"))
        .and_then(Value::as_array)
        .is_some_and(|add| {
            add.iter()
                .any(|c| matches!(c.as_str(), Some("SYS_ADMIN" | "CAP_SYS_ADMIN")))
        });
    let escalation_unset = is_unset(sc.and_then(|sc| sc.get("allowPrivilegeEscalation")));
    let drop_has_all = sc
        .and_then(|sc| sc.pointer("/capabilities/drop"))
        .and_then(Value::as_array)
        .is_some_and(|drop| drop.iter().any(|c| c.as_str() == Some("ALL")));

    if config.disallow_privilege_escalation && escalation_unset {
        if privileged || adds_sys_admin {
            let why = if privileged {
                "is privileged"
            } else {
                "adds SYS_ADMIN"
            };
            warnings.push(format!(
                "container {name} {why}: allowPrivilegeEscalation left unset"
            ));
        } else {
            let sc = child_map(
                container,
                "securityContext",
                &format!("{path}.securityContext"),
            )?;
            sc.insert("allowPrivilegeEscalation".into(), Value::Bool(false));
            set = true;
            changes.push(format!("container {name}: allowPrivilegeEscalation=false"));
        }
    }
    if config.drop_all_capabilities && !drop_has_all {
        let sc = child_map(
            container,
            "securityContext",
            &format!("{path}.securityContext"),
        )?;
        let caps = child_map(
            sc,
            "capabilities",
            &format!("{path}.securityContext.capabilities"),
        )?;
        let drop = caps
            .entry("drop".to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if drop.is_null() {
            *drop = Value::Array(Vec::new());
        }
        drop.as_array_mut()
            .ok_or_else(|| {
                Refusal::new(format!(
                    "pod field {path}.securityContext.capabilities.drop is not a list"
                ))
            })?
            .push(Value::String("ALL".into()));
        set = true;
        changes.push(format!("container {name}: capabilities.drop+=ALL"));
    }
    Ok(set)
}

/// Remove the plugin's projected token volume (recognised by name and by its
/// `serviceAccountToken` source, so a user's own volume is never touched) and its mounts.
fn remove_injected_token(
    spec: &mut Map<String, Value>,
    changes: &mut Vec<String>,
    touched: &mut Touched,
) {
    let Some(Value::Array(volumes)) = spec.get_mut("volumes") else {
        return;
    };
    let is_injected = |v: &Value| {
        v.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.starts_with(TOKEN_VOLUME_PREFIX))
            && v.pointer("/projected/sources")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|src| src.get("serviceAccountToken").is_some()))
    };
    let names: Vec<String> = volumes
        .iter()
        .filter(|v| is_injected(v))
        .filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    if names.is_empty() {
        return;
    }
    volumes.retain(|v| !is_injected(v));
    if volumes.is_empty() {
        spec.remove("volumes");
    }
    touched.mark(&["spec", "volumes"]);
    for list in CONTAINER_LISTS {
        let Some(Value::Array(containers)) = spec.get_mut(list) else {
            continue;
        };
        for (i, container) in containers.iter_mut().enumerate() {
            let Some(Value::Array(mounts)) = container.get_mut("volumeMounts") else {
                continue;
            };
            touched.mark(&["spec", list, &i.to_string(), "volumeMounts"]);
            mounts.retain(|m| {
                !m.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| names.iter().any(|x| x == n))
            });
            if mounts.is_empty()
                && let Some(c) = container.as_object_mut()
            {
                c.remove("volumeMounts");
            }
        }
    }
    for name in names {
        changes.push(format!(
            "removed injected service account token volume {name}"
        ));
    }
}

fn is_unset(v: Option<&Value>) -> bool {
    v.is_none_or(Value::is_null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(mut spec: Value) -> (Value, Vec<String>, Vec<String>) {
        let (mut changes, mut warnings) = (Vec::new(), Vec::new());
        harden(
            spec.as_object_mut().unwrap(),
            &HardeningConfig::default(),
            &mut changes,
            &mut warnings,
            &mut Touched::default(),
        )
        .unwrap();
        (spec, changes, warnings)
    }

    #[test]
    fn fills_in_every_container_kind() {
        let (spec, changes, _) = run(json!({
            "containers": [{"name": "a"}],
            "initContainers": [{"name": "i", "securityContext": {}}],
            "ephemeralContainers": [{"name": "e"}]
        }));
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(
            spec["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        for list in ["containers", "initContainers", "ephemeralContainers"] {
            let sc = &spec[list][0]["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{list}");
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{list}");
        }
        assert_eq!(changes.len(), 2 + 2 * 3);
    }

    #[test]
    fn stricter_settings_are_kept() {
        let original = json!({
            "automountServiceAccountToken": true,
            "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}},
            "containers": [{"name": "a", "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["NET_RAW", "ALL"], "add": ["NET_BIND_SERVICE"]}}}]
        });
        let (spec, changes, _) = run(original.clone());
        assert_eq!(spec, original);
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn partial_drop_list_gains_all() {
        let (spec, _, _) = run(json!({"containers": [{"name": "a",
            "securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}]}));
        assert_eq!(
            spec["containers"][0]["securityContext"]["capabilities"]["drop"],
            json!(["NET_RAW", "ALL"])
        );
    }

    #[test]
    fn privileged_and_windows_are_not_made_invalid() {
        let (spec, _, warnings) = run(json!({"containers": [
            {"name": "p", "securityContext": {"privileged": true}},
            {"name": "s", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}));
        for i in 0..2 {
            assert!(
                spec["containers"][i]["securityContext"]
                    .get("allowPrivilegeEscalation")
                    .is_none()
            );
        }
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        let (spec, _, warnings) =
            run(json!({"os": {"name": "windows"}, "containers": [{"name": "w"}]}));
        assert!(spec.get("securityContext").is_none());
        assert!(spec["containers"][0].get("securityContext").is_none());
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn injected_token_volume_is_removed_with_its_mounts() {
        let token_volume = json!({"name": "kube-api-access-x2x9k", "projected": {"defaultMode": 420,
            "sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}});
        let mount = json!({"name": "kube-api-access-x2x9k", "readOnly": true,
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"});
        let data_mount = json!({"name": "data", "mountPath": "/data"});
        let (spec, changes, _) = run(json!({
            "volumes": [{"name": "data", "emptyDir": {}}, token_volume],
            "containers": [{"name": "a", "volumeMounts": [data_mount, mount]}],
            "initContainers": [{"name": "i", "volumeMounts": [mount]}]
        }));
        assert_eq!(spec["volumes"], json!([{"name": "data", "emptyDir": {}}]));
        assert_eq!(spec["containers"][0]["volumeMounts"], json!([data_mount]));
        assert!(spec["initContainers"][0].get("volumeMounts").is_none());
        assert!(changes.iter().any(|c| c.contains("kube-api-access-x2x9k")));

        // A pod that asks for its token keeps it; a look-alike volume of the user's stays.
        let asked = json!({"automountServiceAccountToken": true, "volumes": [token_volume],
            "containers": [{"name": "a", "volumeMounts": [mount]}]});
        let (spec, _, _) = run(asked.clone());
        assert_eq!(spec["volumes"], asked["volumes"]);
        let own = json!({"name": "kube-api-access-mine", "emptyDir": {}});
        let (spec, _, _) = run(json!({"volumes": [own], "containers": [{"name": "a"}]}));
        assert_eq!(spec["volumes"], json!([own]));
    }

    #[test]
    fn switches_turn_steps_off() {
        let mut spec = json!({"containers": [{"name": "a"}]});
        let config = HardeningConfig {
            seccomp: false,
            disallow_privilege_escalation: false,
            drop_all_capabilities: false,
            disable_service_account_token: false,
            ..Default::default()
        };
        let mut changes = Vec::new();
        harden(
            spec.as_object_mut().unwrap(),
            &config,
            &mut changes,
            &mut Vec::new(),
            &mut Touched::default(),
        )
        .unwrap();
        assert_eq!(spec, json!({"containers": [{"name": "a"}]}));
        assert!(changes.is_empty());
    }
}
