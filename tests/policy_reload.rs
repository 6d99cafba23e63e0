//! Hot reload at the store level: a watched directory changes, the verdict follows; a broken
//! change is refused and the last good set keeps serving.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sandbox_admission::admission::AdmissionRequest;
use sandbox_admission::metrics::Metrics;
use sandbox_admission::policy::{PolicyConfig, PolicySource, PolicyStore};
use serde_json::json;

const META: &str = "kinds: [{group: agents.x-k8s.io, kind: Sandbox}]\n";

fn policy(msg: &str) -> String {
    format!(
        "package t.p\nviolation contains {{\"msg\": \"{msg}\"}} if input.review.object.spec.x == 1\n"
    )
}

fn request() -> AdmissionRequest {
    AdmissionRequest::from_value(json!({
        "uid": "u", "kind": {"group": "agents.x-k8s.io", "version": "v1beta1", "kind": "Sandbox"},
        "resource": {"group": "agents.x-k8s.io", "version": "v1beta1", "resource": "sandboxes"},
        "operation": "CREATE", "namespace": "team", "name": "sb",
        "object": {"metadata": {"name": "sb"}, "spec": {"x": 1}},
    }))
    .unwrap()
}

fn messages(store: &PolicyStore) -> Vec<String> {
    store
        .evaluate(&request(), None)
        .into_iter()
        .map(|h| h.message)
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn failures(metrics: &Metrics) -> bool {
    metrics
        .encode()
        .contains("sandbox_admission_policy_reload_total{result=\"failure\"} 1")
}

/// Replace a file the way editors and `kubectl cp` do: write aside, then rename over.
fn replace(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[test]
fn reload_follows_good_changes_and_refuses_broken_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.rego"), policy("first")).unwrap();
    std::fs::write(dir.path().join("p.yaml"), META).unwrap();
    let metrics = Arc::new(Metrics::new());
    let config = PolicyConfig {
        reload_debounce_ms: 50,
        ..PolicyConfig::default()
    };
    let source = PolicySource::Dir(dir.path().into());
    let store = PolicyStore::load(&source, &config, metrics.clone()).unwrap();
    let _guard = store.watch(dir.path()).unwrap();
    assert_eq!(messages(&store), vec!["first"]);

    // A client keeps asking throughout; every answer must be a verdict from a whole set.
    let stop = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(AtomicUsize::new(0));
    let client = {
        let (store, stop, asked) = (store.clone(), stop.clone(), asked.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let m = messages(&store);
                assert_eq!(m.len(), 1, "{m:?}");
                assert!(["first", "second"].contains(&m[0].as_str()), "{m:?}");
                asked.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    replace(dir.path(), "p.rego", &policy("second"));
    wait_for("the new verdict", || messages(&store) == vec!["second"]);
    assert!(store.status().last_error.is_none());

    replace(
        dir.path(),
        "p.rego",
        "package t.p\nviolation contains msg if {\n",
    );
    wait_for("the reload failure", || store.status().last_error.is_some());
    wait_for("the failure metric", || failures(&metrics));
    let error = store.status().last_error.unwrap_or_default();
    assert!(error.contains("p.rego:"), "{error}");
    assert_eq!(
        messages(&store),
        vec!["second"],
        "the last good set keeps serving"
    );

    stop.store(true, Ordering::Relaxed);
    client.join().expect("no request failed during reloads");
    assert!(asked.load(Ordering::Relaxed) > 0);

    // Fixing the file clears the error.
    replace(dir.path(), "p.rego", &policy("first"));
    wait_for("recovery", || store.status().last_error.is_none());
    assert_eq!(messages(&store), vec!["first"]);
}

#[cfg(unix)]
#[test]
fn a_configmap_style_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let generation = |name: &str, msg: &str| {
        let g = root.join(name);
        std::fs::create_dir(&g).unwrap();
        std::fs::write(g.join("p.rego"), policy(msg)).unwrap();
        std::fs::write(g.join("p.yaml"), META).unwrap();
    };
    generation("..gen1", "first");
    symlink("..gen1", root.join("..data")).unwrap();
    symlink("..data/p.rego", root.join("p.rego")).unwrap();
    symlink("..data/p.yaml", root.join("p.yaml")).unwrap();
    let config = PolicyConfig {
        reload_debounce_ms: 50,
        ..PolicyConfig::default()
    };
    let store = PolicyStore::load(
        &PolicySource::Dir(root.into()),
        &config,
        Arc::new(Metrics::new()),
    )
    .unwrap();
    let _guard = store.watch(root).unwrap();
    assert_eq!(messages(&store), vec!["first"]);

    // What the kubelet does: new generation, new link beside, rename over `..data`.
    generation("..gen2", "second");
    symlink("..gen2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..gen1")).unwrap();
    wait_for("the new generation", || messages(&store) == vec!["second"]);
}

fn reloads(metrics: &Metrics) -> String {
    metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("sandbox_admission_policy_reload_total"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A ConfigMap volume as the kubelet writes it: each generation in a hidden `..<version>`
/// directory, `..data` pointing at the live one, visible files as symlinks through `..data`.
#[test]
fn configmap_staging_writes_do_not_reload_and_the_swap_does() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let stage = |version: &str, msg: &str| {
        let generation = root.join(version);
        std::fs::create_dir(&generation).unwrap();
        std::fs::write(generation.join("p.rego"), policy(msg)).unwrap();
        std::fs::write(generation.join("p.yaml"), META).unwrap();
    };
    let swap = |version: &str| {
        let tmp = root.join("..data_tmp");
        std::os::unix::fs::symlink(version, &tmp).unwrap();
        std::fs::rename(&tmp, root.join("..data")).unwrap();
    };
    stage("..v1", "first");
    swap("..v1");
    for name in ["p.rego", "p.yaml"] {
        std::os::unix::fs::symlink(Path::new("..data").join(name), root.join(name)).unwrap();
    }
    let metrics = Arc::new(Metrics::new());
    let config = PolicyConfig {
        reload_debounce_ms: 50,
        ..PolicyConfig::default()
    };
    let store =
        PolicyStore::load(&PolicySource::Dir(root.into()), &config, metrics.clone()).unwrap();
    let _guard = store.watch(root).unwrap();
    assert_eq!(messages(&store), vec!["first"]);
    let before = reloads(&metrics);

    // The kubelet's staging writes change nothing that is read: no reload for them.
    stage("..v2", "second");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(reloads(&metrics), before, "staging writes caused a reload");
    assert_eq!(messages(&store), vec!["first"]);

    // The swap does.
    swap("..v2");
    wait_for("the swapped set", || messages(&store) == vec!["second"]);
    assert!(!failures(&metrics));
}
