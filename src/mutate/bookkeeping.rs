//! Labels and annotations under the product's prefix, for the controller's identity and idle
//! tracking and for selecting pods by runtime and network profile.
//!
//! Labels under the prefix belong to this product: each is set to the value computed now, or
//! removed when there is none, so a pod template cannot pre-set them to mislead selectors.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use super::labels::is_label_value;
use super::patch::{Refusal, metadata_map, remove, set_string};
use super::sandbox_pod::SandboxIdentity;

pub struct Bookkeeping<'a> {
    pub prefix: &'a str,
    pub identity: &'a SandboxIdentity,
    /// `None` when the pod does not run under a configured profile.
    pub runtime_profile: Option<&'a str>,
    pub network_profile: &'a str,
    pub idle_timeout: &'a str,
    pub now: DateTime<Utc>,
}

pub fn record(
    pod: &mut Value,
    b: &Bookkeeping<'_>,
    changes: &mut Vec<String>,
) -> Result<(), Refusal> {
    let id = b.identity;
    let name_fits = id.name.as_deref().is_some_and(is_label_value);
    let labels: [(&str, Option<&str>); 6] = [
        ("sandbox-name", id.name.as_deref().filter(|_| name_fits)),
        (
            "sandbox-uid",
            id.uid.as_deref().filter(|u| is_label_value(u)),
        ),
        (
            "pool",
            id.warm_pool.as_deref().filter(|p| is_label_value(p)),
        ),
        ("claimed", id.claim_uid.as_ref().map(|_| "true")),
        ("runtime", b.runtime_profile),
        ("network-profile", Some(b.network_profile)),
    ];
    let map = metadata_map(pod, "labels")?;
    for (name, value) in labels {
        put(map, &format!("{}{name}", b.prefix), value, "label", changes);
    }

    let map = metadata_map(pod, "annotations")?;
    // A name too long (or otherwise unfit) for a label value is kept whole as an annotation.
    let long_name = id.name.as_deref().filter(|_| !name_fits);
    put(
        map,
        &format!("{}sandbox-name", b.prefix),
        long_name,
        "annotation",
        changes,
    );
    put(
        map,
        &format!("{}idle-timeout", b.prefix),
        Some(b.idle_timeout),
        "annotation",
        changes,
    );
    // The idle clock starts at the first admission; a reinvocation must not restart it.
    let admitted_key = format!("{}admitted-at", b.prefix);
    let valid_time = map
        .get(&admitted_key)
        .and_then(Value::as_str)
        .is_some_and(|t| DateTime::parse_from_rfc3339(t).is_ok());
    if !valid_time {
        let now = b.now.to_rfc3339_opts(SecondsFormat::Secs, true);
        put(map, &admitted_key, Some(&now), "annotation", changes);
    }
    Ok(())
}

fn put(
    map: &mut Map<String, Value>,
    key: &str,
    value: Option<&str>,
    what: &str,
    changes: &mut Vec<String>,
) {
    match value {
        Some(v) => {
            if set_string(map, key, v) {
                changes.push(format!("{what} {key}={v}"));
            }
        }
        None => {
            if remove(map, key) {
                changes.push(format!("removed {what} {key}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identity(name: &str) -> SandboxIdentity {
        SandboxIdentity {
            name: Some(name.into()),
            uid: Some("0b7c5f4e-1111-2222-3333-444455556666".into()),
            warm_pool: Some("1a2b3c4d".into()),
            claim_uid: None,
        }
    }

    fn book<'a>(id: &'a SandboxIdentity) -> Bookkeeping<'a> {
        Bookkeeping {
            prefix: "p.io/",
            identity: id,
            runtime_profile: Some("gvisor"),
            network_profile: "default",
            idle_timeout: "1h",
            now: DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn writes_identity_profiles_and_clock() {
        let id = identity("box");
        let mut pod = json!({"metadata": {"labels": {"p.io/claimed": "true"}}});
        let mut changes = Vec::new();
        record(&mut pod, &book(&id), &mut changes).unwrap();
        let l = &pod["metadata"]["labels"];
        assert_eq!(l["p.io/sandbox-name"], "box");
        assert_eq!(
            l["p.io/sandbox-uid"],
            "0b7c5f4e-1111-2222-3333-444455556666"
        );
        assert_eq!(l["p.io/pool"], "1a2b3c4d");
        assert!(l.get("p.io/claimed").is_none(), "pre-set label removed");
        assert_eq!(l["p.io/runtime"], "gvisor");
        assert_eq!(l["p.io/network-profile"], "default");
        let a = &pod["metadata"]["annotations"];
        assert_eq!(a["p.io/admitted-at"], "2026-01-02T03:04:05Z");
        assert_eq!(a["p.io/idle-timeout"], "1h");
        assert!(changes.iter().any(|c| c == "removed label p.io/claimed"));

        let before = pod.clone();
        let mut again = Vec::new();
        let mut later = book(&id);
        later.now = Utc::now();
        record(&mut pod, &later, &mut again).unwrap();
        assert_eq!(pod, before, "second pass changes nothing, admitted-at kept");
        assert!(again.is_empty());
    }

    #[test]
    fn long_names_move_to_an_annotation() {
        let long = "n".repeat(70);
        let id = identity(&long);
        let mut pod = json!({"metadata": {}});
        record(&mut pod, &book(&id), &mut Vec::new()).unwrap();
        assert!(pod["metadata"]["labels"].get("p.io/sandbox-name").is_none());
        assert_eq!(
            pod["metadata"]["annotations"]["p.io/sandbox-name"],
            long.as_str()
        );
    }
}
