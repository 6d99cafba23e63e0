//! Hot paths of one review, without the network: decode, mutate (+ patch encode), validate with
//! whatever policy set `serve` loads by default, encode, and the whole `Admitter::handle`.
//!
//! The Admitter is taken from a started server (loopback ports, decision log off) so the bench
//! measures exactly what `serve` runs, whatever the mutation and policy work has merged.
//! Run: `cargo bench --bench hot_paths` (add `-- --quick` for a short pass).

#[path = "../examples/loadgen/workload.rs"]
mod workload;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sandbox_admission::admission::{self, Response};
use sandbox_admission::config::Config;
use sandbox_admission::pipeline::{Admitter, Endpoint};
use sandbox_admission::server::{self, ServeSettings, TlsSource};
use serde_json::json;

/// Same allocator as the server binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Fixture {
    rt: tokio::runtime::Runtime,
    admitter: Arc<Admitter>,
    pod: Vec<u8>,
    sandbox: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::embedded().expect("embedded config");
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.health_listen = "127.0.0.1:0".parse().expect("addr");
    let running = rt
        .block_on(server::start(ServeSettings {
            config,
            config_origin: "bench".into(),
            tls: TlsSource::SelfSigned {
                dir: dir.path().join("certs"),
            },
            policies_dir: None,
            decision_log: false,
            cluster: None,
        }))
        .expect("server starts");
    let w = workload::Workload::from_fixtures(&workload::default_fixtures());
    // The richest Sandbox pod and Sandbox in the fixtures (most bytes), as a realistic worst case.
    let biggest = |rs: &[workload::Review]| {
        rs.iter()
            .filter(|r| !r.uid.contains("insecure"))
            .max_by_key(|r| r.body.len())
            .map(|r| r.body.clone())
            .expect("fixtures hold reviews")
    };
    Fixture {
        admitter: running.admitter.clone(),
        pod: biggest(&w.mutate),
        sandbox: biggest(&w.validate_sandbox),
        rt,
        _dir: dir,
    }
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    let deadline = Duration::from_secs(10);
    let pod = admission::decode(&f.pod).expect("pod review decodes");
    let sandbox = admission::decode(&f.sandbox).expect("sandbox review decodes");

    let mut g = c.benchmark_group("decode");
    g.bench_function("sandbox_pod", |b| {
        b.iter(|| admission::decode(black_box(&f.pod)))
    });
    g.bench_function("sandbox", |b| {
        b.iter(|| admission::decode(black_box(&f.sandbox)))
    });
    g.finish();

    let mut g = c.benchmark_group("mutate");
    g.bench_function("sandbox_pod_decide_and_encode", |b| {
        b.iter(|| {
            let d =
                f.rt.block_on(f.admitter.decide(Endpoint::Mutate, black_box(&pod)));
            d.response.to_review_json()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("validate");
    g.bench_function("sandbox_default_policies", |b| {
        b.iter(|| {
            f.rt.block_on(f.admitter.decide(Endpoint::Validate, black_box(&sandbox)))
        })
    });
    g.bench_function("sandbox_pod_default_policies", |b| {
        b.iter(|| {
            f.rt.block_on(f.admitter.decide(Endpoint::Validate, black_box(&pod)))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("encode");
    let mut patched = Response::allow("0f0e0d0c-0000-4000-8000-000000000001");
    patched.patch = serde_json::from_value(json!([
        {"op": "add", "path": "/spec/runtimeClassName", "value": "gvisor"},
        {"op": "add", "path": "/spec/nodeSelector", "value": {"sandbox.gke.io/runtime": "gvisor"}},
        {"op": "add", "path": "/spec/tolerations", "value": [{"key": "sandbox.gke.io/runtime", "operator": "Equal", "value": "gvisor", "effect": "NoSchedule"}]},
        {"op": "add", "path": "/spec/securityContext/seccompProfile", "value": {"type": "RuntimeDefault"}},
        {"op": "add", "path": "/spec/containers/0/securityContext", "value": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}},
        {"op": "add", "path": "/spec/automountServiceAccountToken", "value": false},
        {"op": "add", "path": "/metadata/labels/sandbox-admission.io~1runtime", "value": "gvisor"},
        {"op": "add", "path": "/metadata/labels/sandbox-admission.io~1network", "value": "default"},
        {"op": "add", "path": "/metadata/annotations/sandbox-admission.io~1admitted-at", "value": "2026-11-28T18:00:00Z"},
    ]))
    .expect("patch");
    g.bench_function("allow_with_9_op_patch", |b| {
        b.iter(|| black_box(&patched).to_review_json())
    });
    let denied = Response::deny(
        "u",
        403,
        "[sandbox-runtime-class] runtimeClassName is not set\n[sandbox-privileged] container c is privileged",
    );
    g.bench_function("deny_two_policies", |b| {
        b.iter(|| black_box(&denied).to_review_json())
    });
    g.finish();

    let mut g = c.benchmark_group("handle");
    g.bench_function("mutate_sandbox_pod", |b| {
        b.iter(|| {
            f.rt.block_on(
                f.admitter
                    .handle(Endpoint::Mutate, black_box(&f.pod), deadline),
            )
        })
    });
    g.bench_function("validate_sandbox", |b| {
        b.iter(|| {
            f.rt.block_on(
                f.admitter
                    .handle(Endpoint::Validate, black_box(&f.sandbox), deadline),
            )
        })
    });
    g.finish();
}

criterion_group! {
    name = hot_paths;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(hot_paths);
