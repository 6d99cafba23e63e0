//! Policy reload time for a set of 100 policies: generate them (the repository's own `policies/`
//! first, then generated Gatekeeper-style policies up to 100) in the layout of a ConfigMap
//! volume, start the server with `--policies DIR`, then publish a new version the way the kubelet
//! does (write it into a fresh `..<version>` directory, then atomically re-point the `..data`
//! symlink) and time from that swap until `sandbox_admission_policy_reload_total{result="success"}`
//! moves on `/metrics`. Timing from the swap, not from the first file written, keeps the disk's
//! write speed out of the figure: the kubelet's swap is one rename.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::spawn;

/// Does this metadata file make its policy one the default profile serves? A missing file
/// (a helper module) or `profiles.default.enabled: false` (the strict profile's own policy)
/// does not: counted as served, it left the set one short of 100.
fn served_by_default(yaml: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(yaml) else {
        return false;
    };
    let meta: Value = serde_saphyr::from_str(&text).unwrap_or(Value::Null);
    meta.pointer("/profiles/default/enabled") != Some(&Value::Bool(false))
}

/// Fill `dir` with 100 policies (`.rego` + `.yaml`); returns the generated file stems.
pub fn generate(dir: &Path, repo_policies: &Path, version: u32) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut served = 0usize;
    if let Ok(entries) = std::fs::read_dir(repo_policies) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with("_test.rego") || !(name.ends_with(".rego") || name.ends_with(".yaml"))
            {
                continue;
            }
            std::fs::copy(e.path(), dir.join(&name))?;
            let is_policy = name.ends_with(".rego")
                && served_by_default(&repo_policies.join(name.replace(".rego", ".yaml")));
            served += usize::from(is_policy);
        }
    }
    let mut stems = Vec::new();
    for i in 0..100usize.saturating_sub(served) {
        let stem = format!("generated_{i:03}");
        let rego = format!(
            "# version {version}\npackage generated.p{i:03}\n\nimport rego.v1\n\n\
             violation contains {{\"msg\": msg, \"details\": {{\"label\": key}}}} if {{\n\
             \tkey := input.parameters.label\n\
             \tnot input.review.object.metadata.labels[key]\n\
             \tmsg := sprintf(\"label %s is required\", [key])\n}}\n"
        );
        let yaml = format!(
            "name: generated-{i:03}\nkinds:\n  - {{group: \"*\", kind: \"*\"}}\n\
             enforcementAction: dryrun\nparameters:\n  label: example.com/l{i:03}\n"
        );
        std::fs::write(dir.join(format!("{stem}.rego")), rego)?;
        std::fs::write(dir.join(format!("{stem}.yaml")), yaml)?;
        stems.push(stem);
    }
    Ok(stems)
}

/// GET a path on the plain-HTTP health port.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nhost: localhost\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

fn reloads(metrics: &str, result: &str) -> u64 {
    let key = format!("sandbox_admission_policy_reload_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Write version `version` of the set into `dir/..v{version}` and point `dir/..data` at it; the
/// first call also creates the visible per-file symlinks `dir/NAME -> ..data/NAME`.
fn publish(dir: &Path, repo_policies: &Path, version: u32) -> anyhow::Result<Vec<String>> {
    let generation = format!("..v{version}");
    let stems = generate(&dir.join(&generation), repo_policies, version)?;
    swap_data(dir, &generation)?;
    if version == 0 {
        for entry in std::fs::read_dir(dir.join(&generation))? {
            let name = entry?.file_name();
            std::os::unix::fs::symlink(Path::new("..data").join(&name), dir.join(&name))?;
        }
    }
    Ok(stems)
}

/// Re-point `dir/..data` at `generation` in one rename, as the kubelet does.
fn swap_data(dir: &Path, generation: &str) -> anyhow::Result<()> {
    let staged = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(generation, &staged)?;
    std::fs::rename(&staged, dir.join("..data"))?;
    Ok(())
}

/// Measure `rounds` reloads of a 100-policy set. Err when this build cannot load policies.
pub fn measure(binary: &Path, repo_policies: &Path, rounds: usize) -> anyhow::Result<Value> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("policies");
    std::fs::create_dir_all(&dir)?;
    let stems = publish(&dir, repo_policies, 0)?;
    let extra = vec!["--policies".to_string(), dir.display().to_string()];
    let server = spawn::server(binary, &tmp.path().join("certs"), &extra)
        .context("the server did not start with --policies (is the policy engine merged?)")?;
    let health = server
        .health
        .context("no health address in the ready line")?;
    let ready_ms = server.reported_ms;
    let status = http_get(health, "/readyz").unwrap_or_default();
    let mut times = Vec::new();
    let mut outcome = Ok(());
    for round in 1..=rounds {
        // Write the next version beside the live one, then swap `..data` (timed from the swap).
        let version = round as u32;
        let generation = format!("..v{version}");
        generate(&dir.join(&generation), repo_policies, version)?;
        // The server ignores writes into a `..` generation directory, as it must for the kubelet's
        // staging writes; a pause anyway, so that a server that did not would not skew the figure.
        std::thread::sleep(Duration::from_millis(800));
        let before = http_get(health, "/metrics")?;
        let (ok0, fail0) = (reloads(&before, "success"), reloads(&before, "failure"));
        let t0 = Instant::now();
        swap_data(&dir, &generation)?;
        let mut done = None;
        for _ in 0..5000 {
            let m = http_get(health, "/metrics")?;
            if reloads(&m, "success") > ok0 {
                done = Some(t0.elapsed());
                break;
            }
            if reloads(&m, "failure") > fail0 {
                outcome = Err(anyhow::anyhow!("reload {round} failed: see the server log"));
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        match done {
            Some(t) => times.push(t.as_secs_f64() * 1000.0),
            None => {
                if outcome.is_ok() {
                    outcome = Err(anyhow::anyhow!("reload {round} never reported success"));
                }
                break;
            }
        }
        // Let the watcher settle before the next round.
        std::thread::sleep(Duration::from_millis(300));
    }
    spawn::stop(server);
    outcome?;
    if times.is_empty() {
        bail!("no reload measured");
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(json!({
        "policies": 100,
        "generated": stems.len(),
        "ready_with_100_policies_ms": ready_ms,
        "reload_ms": times,
        "reload_median_ms": sorted[sorted.len() / 2],
        "reload_max_ms": sorted[sorted.len() - 1],
        "readyz": status.split("\r\n\r\n").nth(1).unwrap_or_default(),
    }))
}
