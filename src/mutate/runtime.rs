//! Runtime profiles: choosing one, and copying its RuntimeClass's scheduling and overhead.
//!
//! The built-in RuntimeClass admission plugin runs before webhooks, so a class injected here
//! never had its `scheduling` and `overhead` applied: without the copy, pods miss the runtime's
//! nodes or fail the plugin's overhead check when it runs again on reinvocation.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{Map, Value};

use super::config::RuntimeProfile;
use super::patch::{Refusal, child_map};

/// Where a profile choice came from (reported in warnings and the decision log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Annotation,
    Namespace,
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Annotation => "pod annotation",
            Source::Namespace => "namespace label",
            Source::Default => "configured default",
        })
    }
}

/// Pick a profile: the pod's annotation, then the namespace's label, then the default. A name
/// that is not configured is a refusal: guessing would put the pod somewhere nobody asked for.
pub fn choose<'a, P>(
    what: &str,
    key: &str,
    annotation: Option<&'a str>,
    namespace_label: Option<&'a str>,
    default: &'a str,
    profiles: &'a BTreeMap<String, P>,
) -> Result<(&'a str, &'a P, Source), Refusal> {
    let (name, source) = match (annotation, namespace_label) {
        (Some(a), _) => (a, Source::Annotation),
        (None, Some(n)) => (n, Source::Namespace),
        (None, None) => (default, Source::Default),
    };
    match profiles.get_key_value(name) {
        Some((name, profile)) => Ok((name.as_str(), profile, source)),
        None => Err(Refusal::new(format!(
            "{source} {key}={name:?} names no configured {what} profile (configured: {})",
            profiles
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// What the pod must carry to run under a RuntimeClass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub overhead: BTreeMap<String, Quantity>,
}

impl Placement {
    /// From the live RuntimeClass.
    pub fn from_class(class: &RuntimeClass) -> Self {
        let scheduling = class.scheduling.clone().unwrap_or_default();
        Placement {
            node_selector: scheduling.node_selector.unwrap_or_default(),
            tolerations: scheduling.tolerations.unwrap_or_default(),
            overhead: class
                .overhead
                .clone()
                .and_then(|o| o.pod_fixed)
                .unwrap_or_default(),
        }
    }

    /// From configuration, when the cluster cannot be asked.
    pub fn from_profile(profile: &RuntimeProfile) -> Self {
        Placement {
            node_selector: profile.node_selector.clone(),
            tolerations: profile.tolerations.clone(),
            overhead: profile.overhead.clone(),
        }
    }
}

/// Merge `placement` into the pod spec. A nodeSelector or overhead entry the pod already sets to
/// another value is a refusal: the pod could never run on the runtime's nodes, or the API server
/// would reject it later with a less helpful message.
pub fn apply_placement(
    spec: &mut Map<String, Value>,
    placement: &Placement,
    class: &str,
    changes: &mut Vec<String>,
) -> Result<(), Refusal> {
    merge_strings(
        spec,
        "nodeSelector",
        placement.node_selector.iter().map(|(k, v)| (k, v.as_str())),
        class,
        "scheduling.nodeSelector",
        changes,
    )?;
    merge_strings(
        spec,
        "overhead",
        placement.overhead.iter().map(|(k, v)| (k, v.0.as_str())),
        class,
        "overhead.podFixed",
        changes,
    )?;
    add_tolerations(spec, &placement.tolerations, changes)
}

fn merge_strings<'a>(
    spec: &mut Map<String, Value>,
    field: &str,
    wanted: impl Iterator<Item = (&'a String, &'a str)>,
    class: &str,
    class_field: &str,
    changes: &mut Vec<String>,
) -> Result<(), Refusal> {
    for (key, value) in wanted {
        let map = child_map(spec, field, &format!("spec.{field}"))?;
        match map.get(key) {
            Some(Value::String(have)) if have == value => {}
            Some(have) => {
                let have = have
                    .as_str()
                    .map_or_else(|| have.to_string(), str::to_owned);
                return Err(Refusal::new(format!(
                    "pod spec.{field} {key}={have} conflicts with RuntimeClass {class:?} {class_field} {key}={value}; remove it from the pod template or choose another runtime profile"
                )));
            }
            None => {
                map.insert(key.clone(), Value::String(value.to_owned()));
                changes.push(format!("{field} {key}={value}"));
            }
        }
    }
    Ok(())
}

fn add_tolerations(
    spec: &mut Map<String, Value>,
    wanted: &[Toleration],
    changes: &mut Vec<String>,
) -> Result<(), Refusal> {
    for toleration in wanted {
        let value = serde_json::to_value(toleration)
            .map_err(|e| Refusal::new(format!("cannot encode a toleration: {e}")))?;
        let list = spec
            .entry("tolerations".to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if list.is_null() {
            *list = Value::Array(Vec::new());
        }
        let list = list
            .as_array_mut()
            .ok_or_else(|| Refusal::new("pod field spec.tolerations is not a list"))?;
        if !list.contains(&value) {
            changes.push(format!("toleration {value}"));
            list.push(value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn profiles() -> BTreeMap<String, u8> {
        BTreeMap::from([("gvisor".to_owned(), 1), ("kata".to_owned(), 2)])
    }

    #[test]
    fn first_match_wins() {
        let p = profiles();
        let c = choose("runtime", "k", Some("kata"), Some("gvisor"), "gvisor", &p).unwrap();
        assert_eq!((c.0, c.2), ("kata", Source::Annotation));
        let c = choose("runtime", "k", None, Some("kata"), "gvisor", &p).unwrap();
        assert_eq!((c.0, c.2), ("kata", Source::Namespace));
        let c = choose("runtime", "k", None, None, "gvisor", &p).unwrap();
        assert_eq!((c.0, c.2), ("gvisor", Source::Default));
        let err = choose("runtime", "k", Some("runc"), None, "gvisor", &p).unwrap_err();
        assert!(
            err.0.contains("\"runc\"") && err.0.contains("gvisor, kata"),
            "{}",
            err.0
        );
    }

    fn placement() -> Placement {
        serde_json::from_value::<RuntimeClass>(json!({
            "metadata": {"name": "kata-qemu"}, "handler": "kata-qemu",
            "scheduling": {"nodeSelector": {"katacontainers.io/kata-runtime": "true"},
                           "tolerations": [{"key": "kata", "operator": "Exists", "effect": "NoSchedule"}]},
            "overhead": {"podFixed": {"cpu": "250m", "memory": "160Mi"}}
        }))
        .map(|c| Placement::from_class(&c))
        .unwrap()
    }

    #[test]
    fn merges_without_duplicates() {
        let mut spec = json!({"nodeSelector": {"zone": "a"},
            "tolerations": [{"key": "kata", "operator": "Exists", "effect": "NoSchedule"}]});
        let spec = spec.as_object_mut().unwrap();
        let mut changes = Vec::new();
        apply_placement(spec, &placement(), "kata-qemu", &mut changes).unwrap();
        assert_eq!(spec["nodeSelector"]["zone"], "a");
        assert_eq!(
            spec["nodeSelector"]["katacontainers.io/kata-runtime"],
            "true"
        );
        assert_eq!(spec["tolerations"].as_array().unwrap().len(), 1);
        assert_eq!(spec["overhead"]["memory"], "160Mi");
        assert_eq!(changes.len(), 3, "{changes:?}");
        let before = spec.clone();
        let mut again = Vec::new();
        apply_placement(spec, &placement(), "kata-qemu", &mut again).unwrap();
        assert!(again.is_empty());
        assert_eq!(*spec, before);
    }

    #[test]
    fn conflicting_selector_is_refused() {
        let mut spec = json!({"nodeSelector": {"katacontainers.io/kata-runtime": "false"}});
        let err = apply_placement(
            spec.as_object_mut().unwrap(),
            &placement(),
            "kata-qemu",
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(
            err.0.contains("katacontainers.io/kata-runtime=false"),
            "{}",
            err.0
        );
        assert!(err.0.contains("\"kata-qemu\""), "{}", err.0);
    }

    #[test]
    fn empty_placement_adds_nothing() {
        let mut spec = json!({});
        let spec = spec.as_object_mut().unwrap();
        apply_placement(spec, &Placement::default(), "gvisor", &mut Vec::new()).unwrap();
        assert!(spec.is_empty());
    }
}
