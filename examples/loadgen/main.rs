//! Load harness: drives sandbox-admission over TLS with keep-alive and compares it, in the same
//! run, with a no-op responder on the same TLS/HTTP stack (the machine's ceiling).
//!
//! ```text
//! cargo build --release && cargo run --release --example loadgen -- --spawn
//! cargo run --release --example loadgen -- --spawn --reload --json > figures.json
//! cargo run --release --example loadgen -- --target 127.0.0.1:8443 --ca certs/ca.crt --pid $(pidof sandbox-admission)
//! ```
//!
//! Loopback only: every address it talks to is one it started or one given with `--target`.

mod client;
mod curve;
mod flood;
mod noop;
mod profile;
mod reload;
mod report;
mod shadow;
mod spawn;
mod stats;
mod workload;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use client::{Item, LoadSettings, Target};
use serde_json::{Value, json};

#[derive(Parser, Clone)]
#[command(about = "Load harness for sandbox-admission, with a no-op TLS responder as the ceiling")]
pub struct Args {
    /// Start the release binary itself (the default when no --target is given)
    #[arg(long)]
    spawn: bool,
    /// The server binary for --spawn
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/sandbox-admission"))]
    binary: PathBuf,
    /// Extra argument for the spawned server (repeat), e.g. --server-arg=--policies --server-arg=DIR
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// A running server's HTTPS address (loopback), instead of --spawn
    #[arg(long, requires = "ca")]
    target: Option<SocketAddr>,
    /// CA that signed the --target's certificate
    #[arg(long)]
    ca: Option<PathBuf>,
    /// PID of the --target server, for its RSS
    #[arg(long)]
    pid: Option<u32>,
    /// Skip the no-op baseline
    #[arg(long)]
    no_noop: bool,
    /// Scenarios: mutate, validate-sandbox, validate, mixed; `NAME@RATE` runs at a fixed rate
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mutate,validate-sandbox,validate,mixed@1000"
    )]
    scenarios: Vec<String>,
    /// Run every scenario at this many reviews/s instead (0 = as fast as possible)
    #[arg(long)]
    rate: Option<f64>,
    /// Concurrent keep-alive connections
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Use h2 (ALPN) instead of HTTP/1.1
    #[arg(long)]
    h2: bool,
    /// Concurrent streams per h2 connection
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Measured seconds per run
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Unmeasured seconds at the start of each run
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Stop each run after this many measured requests
    #[arg(long)]
    requests: Option<u64>,
    /// Alternate server and no-op this many times per scenario (merged)
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Extra start-ups to time (with --spawn)
    #[arg(long, default_value_t = 5)]
    ready_runs: usize,
    /// Also time the reload of a 100-policy set (needs the policy engine)
    #[arg(long)]
    reload: bool,
    #[arg(long, default_value_t = 3)]
    reload_rounds: usize,
    /// Also measure the cost curve: Sandbox /validate against the shipped set, 50, 100 and
    /// 200 matching policies, and the shipped set among 200 loaded (saturated and at
    /// --curve-rate)
    #[arg(long)]
    curve: bool,
    /// Reviews/s of the --curve's fixed-rate runs
    #[arg(long, default_value_t = 1000.0)]
    curve_rate: f64,
    /// Also measure p99 of validate-sandbox at --shadow-rate with and without a shadow set
    #[arg(long)]
    shadow: bool,
    /// Reviews/s of the --shadow measurement
    #[arg(long, default_value_t = 1000.0)]
    shadow_rate: f64,
    /// The repository's policies, copied into the 100-policy set
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/policies"))]
    policies_src: PathBuf,
    /// Manifests the reviews are built from
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// Flood scenario: this many connections POST large reviews back to back while the first
    /// scenario (e.g. `--scenarios mutate@100`) runs; reports peak RSS and its latency
    #[arg(long, default_value_t = 0)]
    flood: usize,
    /// Containers in the flood's Sandbox pod (700 ≈ 2 MiB)
    #[arg(long, default_value_t = 700)]
    flood_containers: usize,
    /// Flood over h2 instead of HTTP/1.1
    #[arg(long)]
    flood_h2: bool,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
    /// No load test: send the /mutate workload N times through the server's pipeline in this
    /// process (no TLS, no HTTP), for `valgrind --tool=callgrind` (see profile.rs)
    #[arg(long, value_name = "N")]
    profile_passes: Option<u32>,
    /// With --profile-passes: the Sandbox /validate workload (validate-sandbox) instead of /mutate
    #[arg(long, requires = "profile_passes")]
    profile_validate: bool,
    /// With --profile-passes: time each review of the workload alone (N passes each, median)
    /// and print them costliest first on stderr (stdout is the decision log), to see which
    /// reviews make the tail of a load test
    #[arg(long, requires = "profile_passes")]
    profile_each: bool,
    /// With --profile-passes: only the review with this uid (repeat), e.g. the costliest that
    /// --profile-each found, to profile it alone
    #[arg(
        long = "profile-review",
        requires = "profile_passes",
        value_name = "UID"
    )]
    profile_reviews: Vec<String>,
    /// With --profile-passes: the policies of this directory (as `serve --policies DIR` reads
    /// it) instead of the embedded set, to profile a policy change without rebuilding
    #[arg(long, requires = "profile_passes", value_name = "DIR")]
    profile_policies: Option<PathBuf>,
    /// Internal: run the no-op responder with certificates in DIR
    #[arg(long, hide = true)]
    serve_noop: Option<PathBuf>,
    /// Internal: be the flooding process (against --target, for --warmup + --duration seconds)
    #[arg(long, hide = true)]
    flood_child: bool,
}

/// The same allocator as the server binary: this process is also the no-op responder, and the
/// ceiling must not be lowered by a slower malloc than the server gets.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A scenario: a name, its review mix and its rate.
struct Scenario {
    name: String,
    items: Arc<Vec<Item>>,
    rate: Option<f64>,
}

fn items(w: &workload::Workload, name: &str) -> anyhow::Result<Vec<Item>> {
    let tag = |path: &'static str, rs: &[workload::Review]| -> Vec<Item> {
        rs.iter()
            .map(|r| Item {
                path,
                uid: r.uid.clone(),
                body: Bytes::from(r.body.clone()),
            })
            .collect()
    };
    let list = match name {
        "mutate" => tag("/mutate", &w.mutate),
        "validate-sandbox" => tag("/validate", &w.validate_sandbox),
        "validate" => tag("/validate", &w.validate),
        "mixed" => {
            let (m, v) = (tag("/mutate", &w.mutate), tag("/validate", &w.validate));
            let n = m.len().max(v.len());
            (0..n)
                .flat_map(|i| [m[i % m.len()].clone(), v[i % v.len()].clone()])
                .collect()
        }
        other => bail!("unknown scenario {other:?} (mutate, validate-sandbox, validate, mixed)"),
    };
    if list.is_empty() {
        bail!("scenario {name}: no reviews built from the fixtures");
    }
    Ok(list)
}

fn scenarios(args: &Args, w: &workload::Workload) -> anyhow::Result<Vec<Scenario>> {
    args.scenarios
        .iter()
        .map(|spec| {
            let (name, rate) = match spec.split_once('@') {
                Some((n, r)) => (n, Some(r.parse::<f64>().context("rate after @")?)),
                None => (spec.as_str(), None),
            };
            let rate = match args.rate {
                Some(r) if r > 0.0 => Some(r),
                Some(_) => None,
                None => rate.filter(|r| *r > 0.0),
            };
            let label = rate.map_or(name.to_string(), |r| format!("{name}@{r}"));
            Ok(Scenario {
                name: label,
                items: Arc::new(items(w, name)?),
                rate,
            })
        })
        .collect()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Time `runs` start-ups of the binary (certificates already in `cert_dir`).
fn time_to_ready(args: &Args, cert_dir: &Path, runs: usize) -> anyhow::Result<Value> {
    let mut reported = Vec::new();
    let mut wall = Vec::new();
    for _ in 0..runs {
        let s = spawn::server(&args.binary, cert_dir, &args.server_args)?;
        reported.extend(s.reported_ms);
        wall.push(s.wall.as_secs_f64() * 1000.0);
        spawn::stop(s);
    }
    reported.sort_unstable();
    wall.sort_by(f64::total_cmp);
    Ok(json!({
        "runs": runs,
        "reported_ms_median": reported.get(reported.len() / 2),
        "reported_ms_max": reported.last(),
        "wall_ms_median": wall.get(wall.len() / 2),
        "wall_ms_max": wall.last(),
    }))
}

/// What every mode needs first: the TLS provider installed and the workload built from the
/// fixtures (`--fixtures`, or the repository's).
fn setup(args: &Args) -> workload::Workload {
    sandbox_admission::certs::install_crypto_provider();
    let fixtures = args
        .fixtures
        .clone()
        .unwrap_or_else(workload::default_fixtures);
    workload::Workload::from_fixtures(&fixtures)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let w = setup(&args);
    let scenarios = scenarios(&args, &w)?;
    let tmp = tempfile::tempdir()?;
    let settings = LoadSettings {
        connections: args.connections.max(1),
        h2: args.h2,
        streams: args.streams,
        rate: None,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        max_requests: args.requests,
    };

    // The server under test.
    let spawn_it = args.spawn || args.target.is_none();
    let mut ready = Value::Null;
    let (server, ours) = if spawn_it {
        if !args.binary.exists() {
            bail!(
                "{} not found: run `cargo build --release` first",
                args.binary.display()
            );
        }
        let cert_dir = tmp.path().join("server-certs");
        let s = spawn::server(&args.binary, &cert_dir, &args.server_args)?;
        let first = json!({"reported_ms": s.reported_ms, "wall_ms": s.wall.as_secs_f64() * 1000.0});
        spawn::stop(s);
        if args.flood == 0 {
            ready = time_to_ready(&args, &cert_dir, args.ready_runs)?;
            ready["first_start_generating_certs"] = first;
        }
        let s = spawn::server(&args.binary, &cert_dir, &args.server_args)?;
        let connector = client::connector(&cert_dir.join("ca.crt"), args.h2)?;
        let _ = FLOOD_CA.set(cert_dir.join("ca.crt"));
        let target = Target {
            name: "sandbox-admission".into(),
            addr: s.addr,
            connector,
            check_uid: true,
        };
        (Some(s), target)
    } else {
        let (Some(addr), Some(ca)) = (args.target, args.ca.as_ref()) else {
            bail!("--target needs --ca");
        };
        if !addr.ip().is_loopback() {
            bail!("--target must be a loopback address");
        }
        let connector = client::connector(ca, args.h2)?;
        (
            None,
            Target {
                name: "sandbox-admission".into(),
                addr,
                connector,
                check_uid: true,
            },
        )
    };
    let server_pid = server.as_ref().map(|s| s.child.id()).or(args.pid);
    if args.flood > 0 {
        let health = server.as_ref().and_then(|s| s.health);
        let result = flood_mode(&args, &ours, server_pid, health, &scenarios, &settings).await;
        if let Some(s) = server {
            spawn::stop(s);
        }
        return result;
    }

    // The ceiling: the no-op responder in its own process.
    let noop = if args.no_noop {
        None
    } else {
        let dir = tmp.path().join("noop-certs");
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("--serve-noop").arg(&dir);
        let s = spawn::start(cmd, "noop ready")?;
        let connector = client::connector(&dir.join("ca.crt"), args.h2)?;
        let t = Target {
            name: "noop".into(),
            addr: s.addr,
            connector,
            check_uid: false,
        };
        Some((s, t))
    };

    let server_rss = server_pid.map(spawn::RssSampler::start);
    let noop_rss = noop
        .as_ref()
        .map(|(s, _)| spawn::RssSampler::start(s.child.id()));
    let mut results = Vec::new();
    for sc in &scenarios {
        let s = LoadSettings {
            rate: sc.rate,
            ..settings.clone()
        };
        let mut ours_stats = stats::Stats::new();
        let mut noop_stats = noop.as_ref().map(|_| stats::Stats::new());
        let noop_pid = noop.as_ref().map(|(s, _)| s.child.id());
        for _ in 0..args.rounds.max(1) {
            ours_stats.merge_run(client::run(&ours, sc.items.clone(), &s, server_pid).await?);
            if let (Some((_, t)), Some(ns)) = (&noop, noop_stats.as_mut()) {
                ns.merge_run(client::run(t, sc.items.clone(), &s, noop_pid).await?);
            }
        }
        if !args.json {
            eprintln!(
                "{}",
                report::scenario_text(&sc.name, &ours_stats, noop_stats.as_ref())
            );
        }
        results.push(report::scenario_json(
            &sc.name,
            sc.rate,
            &ours_stats,
            noop_stats.as_ref(),
        ));
    }
    let memory = json!({
        "server_peak_vmhwm_mib": server_rss.as_ref().map(|r| r.peaks_mib().0),
        "server_peak_vmrss_mib": server_rss.as_ref().map(|r| r.peaks_mib().1),
        "noop_peak_vmhwm_mib": noop_rss.as_ref().map(|r| r.peaks_mib().0),
    });
    drop((server_rss, noop_rss));
    if let Some(s) = server {
        spawn::stop(s);
    }
    if let Some((s, _)) = noop {
        spawn::stop(s);
    }
    let reload = if args.reload {
        match reload::measure(&args.binary, &args.policies_src, args.reload_rounds) {
            Ok(v) => v,
            Err(e) => json!({"error": format!("{e:#}")}),
        }
    } else {
        Value::Null
    };
    let shadow = if args.shadow {
        let s = LoadSettings {
            rate: Some(args.shadow_rate).filter(|r| *r > 0.0),
            ..settings.clone()
        };
        let items = Arc::new(items(&w, "validate-sandbox")?);
        let measured = shadow::measure(
            &args.binary,
            &args.policies_src,
            &args.server_args,
            items,
            &s,
            args.h2,
            args.rounds,
        )
        .await;
        match measured {
            Ok(v) => {
                if !args.json {
                    let side = |key: &str| {
                        let s = &v[key];
                        format!(
                            "p50 {:.1} µs, p99 {:.1} µs, {:.0} rev/s",
                            s["latency_us"]["p50"].as_f64().unwrap_or(0.0),
                            s["latency_us"]["p99"].as_f64().unwrap_or(0.0),
                            s["throughput_rps"].as_f64().unwrap_or(0.0),
                        )
                    };
                    eprintln!(
                        "shadow set, validate-sandbox@{}: without {}; with {} ({} shadow evaluations, {} dropped)",
                        args.shadow_rate,
                        side("without_shadow"),
                        side("with_shadow"),
                        v["shadow_evaluations"],
                        v["shadow_dropped"],
                    );
                }
                v
            }
            Err(e) => json!({"error": format!("{e:#}")}),
        }
    } else {
        Value::Null
    };
    let curve = if args.curve {
        let s = LoadSettings {
            rate: None,
            ..settings.clone()
        };
        let items = Arc::new(items(&w, "validate-sandbox")?);
        let measured = curve::measure(&args, &w.validate_sandbox, items, &s).await;
        measured.unwrap_or_else(|e| json!({"error": format!("{e:#}")}))
    } else {
        Value::Null
    };
    let report = json!({
        "curve": curve,
        "shadow": shadow,
        "machine": {"cores": cores()},
        "settings": {
            "connections": settings.connections, "protocol": if args.h2 { "h2" } else { "http/1.1" },
            "h2_streams_per_connection": if args.h2 { Some(args.streams) } else { None },
            "duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
            "reviews": {"mutate": w.mutate.len(), "validate": w.validate.len(), "validate_sandbox": w.validate_sandbox.len()},
        },
        "time_to_ready": ready,
        "scenarios": results,
        "memory": memory,
        "reload": reload,
    });
    let budgets = report::budgets(&report);
    if args.json {
        let mut out = report;
        out["budgets"] = budgets;
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", report::summary_text(&report, &budgets));
    }
    Ok(())
}

/// The CA file that signed the server's certificate (what `client::connector` was built from).
fn flood_ca(args: &Args) -> Option<PathBuf> {
    args.ca.clone().or_else(|| FLOOD_CA.get().cloned())
}

/// The spawned server's CA, recorded by `run` for the flooding child.
static FLOOD_CA: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// `--flood-child`: flood `--target` and print the outcomes as JSON.
async fn flood_child(args: Args) -> anyhow::Result<()> {
    sandbox_admission::certs::install_crypto_provider();
    let (Some(addr), Some(ca)) = (args.target, args.ca.as_ref()) else {
        bail!("--flood-child needs --target and --ca");
    };
    if !addr.ip().is_loopback() {
        bail!("--target must be a loopback address");
    }
    let target = Target {
        name: "sandbox-admission".into(),
        addr,
        connector: client::connector(ca, args.flood_h2)?,
        check_uid: true,
    };
    let (_, body) = flood::large_review(args.flood_containers);
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(args.duration);
    let tally = flood::run(&target, args.flood, args.flood_h2, "/validate", body, end).await;
    println!("{}", serde_json::to_string(&tally.to_json())?);
    Ok(())
}

/// `--flood N`: the flood and, meanwhile, the first scenario at its rate.
async fn flood_mode(
    args: &Args,
    ours: &Target,
    server_pid: Option<u32>,
    health: Option<SocketAddr>,
    scenarios: &[Scenario],
    settings: &LoadSettings,
) -> anyhow::Result<()> {
    let Some(sc) = scenarios.first() else {
        bail!("--flood needs a scenario for the ordinary reviews, e.g. --scenarios mutate@100");
    };
    let (_, body) = flood::large_review(args.flood_containers);
    let large_bytes = body.len();
    let rss = server_pid.map(spawn::RssSampler::start);
    let s = LoadSettings {
        rate: sc.rate,
        ..settings.clone()
    };
    // The flood runs in its own process, so that its TLS work (encrypting megabytes for every
    // attempt) competes with the ordinary client only for CPU, as another pod's would, and not
    // for this process's async workers.
    let seconds = s.warmup.as_secs_f64() + s.duration.as_secs_f64();
    let Some(ca) = flood_ca(args) else {
        bail!("--flood needs the server's CA (--spawn, or --target with --ca)");
    };
    let child = std::process::Command::new(std::env::current_exe()?)
        .arg("--flood-child")
        .arg("--target")
        .arg(ours.addr.to_string())
        .arg("--ca")
        .arg(&ca)
        .args(["--flood", &args.flood.to_string()])
        .args(["--flood-containers", &args.flood_containers.to_string()])
        .args(["--warmup", "0", "--duration", &seconds.to_string()])
        .args(if args.flood_h2 {
            vec!["--flood-h2"]
        } else {
            vec![]
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("cannot start the flooding process")?;
    let ordinary = client::run(ours, sc.items.clone(), &s, server_pid).await?;
    let child_out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    let tally: Value = serde_json::from_slice(&child_out.stdout).unwrap_or(Value::Null);
    let metrics = match health {
        Some(h) => flood::overload_metrics(h).await,
        None => Vec::new(),
    };
    let (hwm, peak_rss) = rss.as_ref().map_or((f64::NAN, f64::NAN), |r| r.peaks_mib());
    let report = json!({
        "machine": {"cores": cores()},
        "flood": {
            "connections": args.flood,
            "protocol": if args.flood_h2 { "h2" } else { "http/1.1" },
            "large_review_bytes": large_bytes,
            "containers": args.flood_containers,
            "seconds": s.warmup.as_secs_f64() + s.duration.as_secs_f64(),
            "outcomes": tally,
            "server_metrics": metrics,
        },
        "ordinary": {
            "scenario": sc.name,
            "connections": s.connections,
            "protocol": if args.h2 { "h2" } else { "http/1.1" },
            "stats": ordinary.to_json(),
        },
        "memory": {"server_peak_vmhwm_mib": hwm, "server_peak_vmrss_mib": peak_rss},
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "flood: {} {} connections x {} KiB reviews for {seconds:.0} s: {} answered, refused {}, errors {}, {} connections opened",
            args.flood,
            if args.flood_h2 { "h2" } else { "HTTP/1.1" },
            large_bytes / 1024,
            tally["answered"],
            tally["refused_by_status"],
            tally["errors"],
            tally["connections_opened"],
        );
        println!("ordinary {}: {}", sc.name, ordinary.line());
        if !ordinary.errors.is_empty() {
            println!("  ordinary errors {:?}", ordinary.errors);
        }
        println!("server peak RSS: VmHWM {hwm:.1} MiB (sampled VmRSS {peak_rss:.1} MiB)");
        for m in metrics {
            println!("  {m}");
        }
    }
    Ok(())
}

/// `--profile-passes N` (see profile.rs).
async fn profile_mode(args: &Args) -> anyhow::Result<()> {
    let mut w = setup(args);
    if !args.profile_reviews.is_empty() {
        let keep = |r: &workload::Review| args.profile_reviews.contains(&r.uid);
        w.mutate.retain(keep);
        w.validate_sandbox.retain(keep);
    }
    let p = profile::Profile {
        passes: args.profile_passes.unwrap_or(1),
        validate: args.profile_validate,
        policies: args.profile_policies.clone(),
    };
    if args.profile_each {
        return profile::each(&w, p).await;
    }
    profile::run(&w, p).await
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = match args.serve_noop.clone() {
        Some(dir) => runtime.block_on(noop::serve(&dir)),
        None if args.flood_child => runtime.block_on(flood_child(args)),
        None if args.profile_passes.is_some() => runtime.block_on(profile_mode(&args)),
        None => runtime.block_on(run(args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
