//! Evaluation cost of the shipped policy set: the figure the design's `/validate` budget rests on.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use sandbox_admission::admission::AdmissionRequest;
use sandbox_admission::metrics::Metrics;
use sandbox_admission::policy::{PolicyConfig, PolicySet, PolicySource, PolicyStore};
use serde_json::{Value, json};

/// Same allocator as the server binary: regorus allocates per evaluation, so glibc's malloc
/// would make these figures slower than what `serve` pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn sandbox_review(spec: Value) -> AdmissionRequest {
    AdmissionRequest::from_value(json!({
        "uid": "bench",
        "kind": {"group": "agents.x-k8s.io", "version": "v1beta1", "kind": "Sandbox"},
        "resource": {"group": "agents.x-k8s.io", "version": "v1beta1", "resource": "sandboxes"},
        "operation": "CREATE", "namespace": "team", "name": "sb",
        "userInfo": {"username": "alice", "groups": ["dev"]},
        "object": {
            "apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
            "metadata": {"name": "sb", "namespace": "team", "labels": {"app": "agent"}},
            "spec": {"podTemplate": {"metadata": {"labels": {"app": "agent"}}, "spec": spec}},
        },
    }))
    .unwrap_or_else(|e| panic!("bench request: {e}"))
}

fn hardened() -> Value {
    json!({
        "runtimeClassName": "gvisor",
        "automountServiceAccountToken": false,
        "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "agent", "image": "registry.k8s.io/agent:1.0",
            "command": ["python", "-m", "agent"],
            "env": [{"name": "MODEL", "value": "x"}, {"name": "PORT", "value": "8080"}],
            "ports": [{"containerPort": 8080}],
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            "resources": {"limits": {"cpu": "2", "memory": "4Gi"}, "requests": {"cpu": "1", "memory": "2Gi"}},
            "volumeMounts": [{"name": "work", "mountPath": "/work"}],
        }],
        "volumes": [{"name": "work", "emptyDir": {}}],
    })
}

fn bench(c: &mut Criterion) {
    let store = PolicyStore::load(
        &PolicySource::Embedded,
        &PolicyConfig::default(),
        Arc::new(Metrics::new()),
    )
    .unwrap_or_else(|e| panic!("embedded policies: {e}"));
    let compliant = sandbox_review(hardened());
    let mut bare = hardened();
    bare["containers"][0]["securityContext"] = json!({});
    bare["runtimeClassName"] = json!("runc");
    let violating = sandbox_review(bare);
    assert!(store.evaluate(&compliant, None).is_empty());
    assert!(!store.evaluate(&violating, None).is_empty());

    c.bench_function("policy/sandbox_compliant", |b| {
        b.iter(|| black_box(store.evaluate(black_box(&compliant), None)));
    });
    c.bench_function("policy/sandbox_violating", |b| {
        b.iter(|| black_box(store.evaluate(black_box(&violating), None)));
    });
    // The curve: cost per review in matching policies (renamed copies of those that judge the
    // review) and in loaded-but-unmatched ones (ConfigMap-only padding), as `sandbox-admission
    // bench --matching N --loaded N` builds them.
    let embedded = PolicySource::Embedded
        .read()
        .unwrap_or_else(|e| panic!("embedded policies: {e}"));
    // The shipped set's own share of matching policies (17 of its 28 on this review) is
    // `shipped`; `shipped_of_200_loaded` is the same with ConfigMap-only padding up to 200.
    for (label, matching, loaded) in [
        ("shipped", None, None),
        ("50_matching", Some(50), None),
        ("100_matching", Some(100), None),
        ("200_matching", Some(200), None),
        ("shipped_of_200_loaded", None, Some(200)),
    ] {
        let config = PolicyConfig::default();
        let files = sandbox_admission::bench::scaled(
            embedded.clone(),
            &violating,
            matching,
            loaded,
            &config,
        )
        .unwrap_or_else(|e| panic!("{label}: {e}"));
        let set = PolicySet::compile(&files, label.into(), &config)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        c.bench_function(&format!("policy/curve/{label}"), |b| {
            b.iter(|| black_box(set.evaluate(black_box(&compliant), None)));
        });
    }
    c.bench_function("policy/load_embedded_set", |b| {
        b.iter(|| {
            black_box(
                PolicyStore::load(
                    &PolicySource::Embedded,
                    &PolicyConfig::default(),
                    Arc::new(Metrics::new()),
                )
                .ok(),
            )
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
