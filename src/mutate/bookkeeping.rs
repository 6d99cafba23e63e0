//! Labels and annotations under the product's prefix, for the controller's identity and idle
//! tracking and for selecting pods by runtime and network profile.
//!
//! Everything under the prefix belongs to this product. The upstream controller copies a
//! Sandbox's `podTemplate.metadata` to its pod, so a Sandbox author can pre-set any of these keys;
//! each is therefore set to the value computed now, or removed when there is none, and keys under
//! the prefix that the webhook does not write are removed. The only keys a pod may bring are the
//! profile choices ([`INPUT_ANNOTATIONS`]). The admission time is the one value that must survive
//! a reinvocation: it is kept only under a valid [`Seal`](super::seal::Seal).

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Map, Value};

use super::labels::is_label_value;
use super::patch::{Refusal, metadata_map, remove, set_string};
use super::sandbox_pod::SandboxIdentity;
use super::seal::Seal;

/// Annotations under the prefix that a pod (or its Sandbox's template) sets to choose profiles.
pub const INPUT_ANNOTATIONS: [&str; 2] = ["runtime", "network-profile"];

/// Labels the webhook writes (under the prefix).
pub const LABELS: [&str; 6] = [
    "sandbox-name",
    "sandbox-uid",
    "pool",
    "claimed",
    "runtime",
    "network-profile",
];

/// Annotations the webhook writes (under the prefix).
pub const ANNOTATIONS: [&str; 4] = [
    "sandbox-name",
    "idle-timeout",
    "admitted-at",
    "admitted-at-seal",
];

/// How old a sealed admission time may be and still be kept: one API request, with every
/// webhook's timeout and a reinvocation, ends well within it.
const KEPT_FOR: Duration = Duration::minutes(5);
/// Replicas' clocks may differ a little; a reinvocation may reach another replica.
const CLOCK_SKEW: Duration = Duration::minutes(1);

pub struct Bookkeeping<'a> {
    pub prefix: &'a str,
    pub identity: &'a SandboxIdentity,
    /// `None` when the pod does not run under a configured profile.
    pub runtime_profile: Option<&'a str>,
    pub network_profile: &'a str,
    pub idle_timeout: &'a str,
    pub now: DateTime<Utc>,
    pub seal: &'a Seal,
    /// What the seal binds the admission time to: the pod's namespace and name.
    pub pod: PodRef<'a>,
}

/// The pod as it is known at CREATE (no UID yet; `name` may be empty with `generateName`).
#[derive(Debug, Clone, Copy)]
pub struct PodRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub generate_name: &'a str,
}

/// The sealed message: the pod, its Sandbox's UID, and the admission time.
fn seal_message(b: &Bookkeeping<'_>, admitted_at: &str) -> String {
    let p = b.pod;
    format!(
        "{}\n{}\n{}\n{}\n{}",
        p.namespace,
        p.name,
        p.generate_name,
        b.identity.uid.as_deref().unwrap_or_default(),
        admitted_at
    )
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
        put(map, &[b.prefix, name].concat(), value, "label", changes);
    }
    remove_foreign(map, b.prefix, &LABELS, &[], "label", changes);

    let map = metadata_map(pod, "annotations")?;
    // A name too long (or otherwise unfit) for a label value is kept whole as an annotation.
    let long_name = id.name.as_deref().filter(|_| !name_fits);
    put(
        map,
        &[b.prefix, "sandbox-name"].concat(),
        long_name,
        "annotation",
        changes,
    );
    put(
        map,
        &[b.prefix, "idle-timeout"].concat(),
        Some(b.idle_timeout),
        "annotation",
        changes,
    );
    // The idle clock starts at the first admission; a reinvocation must not restart it, and a
    // value the webhook did not write (copied, or made up to stop the clock) must not survive.
    let admitted_key = [b.prefix, "admitted-at"].concat();
    let seal_key = [b.prefix, "admitted-at-seal"].concat();
    let ours = match (
        map.get(&admitted_key).and_then(Value::as_str),
        map.get(&seal_key).and_then(Value::as_str),
    ) {
        (Some(at), Some(tag)) => {
            let fresh = DateTime::parse_from_rfc3339(at).is_ok_and(|t| {
                let t = t.with_timezone(&Utc);
                t <= b.now + CLOCK_SKEW && t >= b.now - KEPT_FOR
            });
            fresh && b.seal.verify(&seal_message(b, at), tag)
        }
        _ => false,
    };
    if !ours {
        let now = b.now.to_rfc3339_opts(SecondsFormat::Secs, true);
        let tag = b.seal.sign(&seal_message(b, &now));
        put(map, &admitted_key, Some(&now), "annotation", changes);
        put(map, &seal_key, Some(&tag), "annotation", changes);
    }
    remove_foreign(
        map,
        b.prefix,
        &ANNOTATIONS,
        &INPUT_ANNOTATIONS,
        "annotation",
        changes,
    );
    Ok(())
}

/// Remove every key under `prefix` that is neither written here (`ours`) nor an input.
fn remove_foreign(
    map: &mut Map<String, Value>,
    prefix: &str,
    ours: &[&str],
    inputs: &[&str],
    what: &str,
    changes: &mut Vec<String>,
) {
    let foreign: Vec<String> = map
        .keys()
        .filter(|k| {
            k.strip_prefix(prefix)
                .is_some_and(|rest| !ours.contains(&rest) && !inputs.contains(&rest))
        })
        .cloned()
        .collect();
    for key in foreign {
        map.remove(&key);
        changes.push(format!("removed {what} {key} (not set by this webhook)"));
    }
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

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
    }

    fn book<'a>(id: &'a SandboxIdentity, seal: &'a Seal) -> Bookkeeping<'a> {
        Bookkeeping {
            prefix: "p.io/",
            identity: id,
            runtime_profile: Some("gvisor"),
            network_profile: "default",
            idle_timeout: "1h",
            now: at("2026-01-02T03:04:05Z"),
            seal,
            pod: PodRef {
                namespace: "team",
                name: "box",
                generate_name: "",
            },
        }
    }

    #[test]
    fn writes_identity_profiles_and_clock() {
        let id = identity("box");
        let seal = Seal::from_material(b"k");
        let mut pod = json!({"metadata": {"labels": {"p.io/claimed": "true"}}});
        let mut changes = Vec::new();
        record(&mut pod, &book(&id, &seal), &mut changes).unwrap();
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
        assert_eq!(a["p.io/admitted-at-seal"].as_str().unwrap().len(), 43);
        assert_eq!(a["p.io/idle-timeout"], "1h");
        assert!(changes.iter().any(|c| c == "removed label p.io/claimed"));

        // A reinvocation seconds later, possibly on another replica (same key), keeps it all.
        let before = pod.clone();
        let mut again = Vec::new();
        let mut later = book(&id, &seal);
        later.now = at("2026-01-02T03:04:35Z");
        record(&mut pod, &later, &mut again).unwrap();
        assert_eq!(pod, before, "second pass changes nothing, admitted-at kept");
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn forged_or_copied_admission_times_do_not_survive() {
        let id = identity("box");
        let seal = Seal::from_material(b"k");
        let b = book(&id, &seal);
        // What the webhook wrote on a running pod of this very Sandbox an hour ago.
        let mut old = book(&id, &seal);
        old.now = at("2026-01-02T02:00:00Z");
        let mut running = json!({"metadata": {}});
        record(&mut running, &old, &mut Vec::new()).unwrap();
        let copied = running["metadata"]["annotations"].clone();
        // The same, for another pod (another Sandbox UID) a moment ago.
        let other_id = SandboxIdentity {
            uid: Some("another".into()),
            ..identity("box")
        };
        let mut other = json!({"metadata": {}});
        record(&mut other, &book(&other_id, &seal), &mut Vec::new()).unwrap();
        let other_copy = other["metadata"]["annotations"].clone();
        let future_seal = seal.sign(&seal_message(&b, "2030-01-01T00:00:00Z"));

        for (what, annotations) in [
            (
                "made up",
                json!({"p.io/admitted-at": "2030-01-01T00:00:00Z"}),
            ),
            (
                "made up with a seal from elsewhere",
                json!({"p.io/admitted-at": "2030-01-01T00:00:00Z",
                       "p.io/admitted-at-seal": copied["p.io/admitted-at-seal"]}),
            ),
            ("copied from this Sandbox's old pod", copied.clone()),
            ("copied from another Sandbox's pod", other_copy.clone()),
            (
                "sealed, but in the future",
                json!({"p.io/admitted-at": "2030-01-01T00:00:00Z", "p.io/admitted-at-seal": future_seal}),
            ),
            (
                "sealed by another installation",
                json!({"p.io/admitted-at": "2026-01-02T03:04:05Z",
                       "p.io/admitted-at-seal": Seal::from_material(b"other").sign(&seal_message(&b, "2026-01-02T03:04:05Z"))}),
            ),
        ] {
            let mut pod = json!({"metadata": {"annotations": annotations}});
            record(&mut pod, &b, &mut Vec::new()).unwrap();
            let a = &pod["metadata"]["annotations"];
            assert_eq!(a["p.io/admitted-at"], "2026-01-02T03:04:05Z", "{what}");
            assert_eq!(
                a["p.io/admitted-at-seal"],
                seal.sign(&seal_message(&b, "2026-01-02T03:04:05Z")),
                "{what}"
            );
        }
    }

    #[test]
    fn foreign_keys_under_the_prefix_are_removed_inputs_kept() {
        let id = identity("box");
        let seal = Seal::from_material(b"k");
        let mut pod = json!({"metadata": {
            "labels": {"p.io/trusted": "yes", "p.io/runtime": "none", "app": "x", "p.io.other/x": "y"},
            "annotations": {"p.io/runtime": "kata", "p.io/network-profile": "isolated",
                            "p.io/exempt": "true", "other.io/keep": "1"}}});
        let mut changes = Vec::new();
        record(&mut pod, &book(&id, &seal), &mut changes).unwrap();
        let (l, a) = (&pod["metadata"]["labels"], &pod["metadata"]["annotations"]);
        assert!(l.get("p.io/trusted").is_none());
        assert_eq!(
            l["p.io/runtime"], "gvisor",
            "overwritten with the real profile"
        );
        assert_eq!(l["app"], "x");
        assert_eq!(l["p.io.other/x"], "y", "another prefix is not ours");
        assert!(a.get("p.io/exempt").is_none());
        assert_eq!(a["p.io/runtime"], "kata", "profile choices are inputs");
        assert_eq!(a["p.io/network-profile"], "isolated");
        assert_eq!(a["other.io/keep"], "1");
        assert!(
            changes
                .iter()
                .any(|c| c == "removed annotation p.io/exempt (not set by this webhook)"),
            "{changes:?}"
        );
    }

    #[test]
    fn long_names_move_to_an_annotation() {
        let long = "n".repeat(70);
        let id = identity(&long);
        let seal = Seal::random();
        let mut pod = json!({"metadata": {}});
        record(&mut pod, &book(&id, &seal), &mut Vec::new()).unwrap();
        assert!(pod["metadata"]["labels"].get("p.io/sandbox-name").is_none());
        assert_eq!(
            pod["metadata"]["annotations"]["p.io/sandbox-name"],
            long.as_str()
        );
    }
}
