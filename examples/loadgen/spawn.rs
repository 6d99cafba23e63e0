//! Child processes: the real server binary (`--spawn`) and the no-op responder, each parsed from
//! its ready line on stderr, plus peak-RSS sampling from `/proc/<pid>/status`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A started child and what its ready line said.
pub struct Spawned {
    pub child: Child,
    pub addr: SocketAddr,
    /// Health/metrics address (real server only).
    pub health: Option<SocketAddr>,
    /// Wall time from spawn to the ready line.
    pub wall: Duration,
    /// The "ready in Nms" the server reports itself.
    pub reported_ms: Option<u64>,
    /// Later stderr lines (drained so the child never blocks on a full pipe).
    pub _lines: mpsc::Receiver<String>,
}

/// Spawn `cmd`, drain its stderr, wait (bounded) for a line containing `marker`.
pub fn start(mut cmd: Command, marker: &str) -> anyhow::Result<Spawned> {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains(marker) => break line,
            Ok(_) => continue,
            Err(_) => {
                let _ = child.kill();
                bail!("{cmd:?} printed no {marker:?} line");
            }
        }
    };
    let wall = started.elapsed();
    let addr_after = |scheme: &str| -> Option<SocketAddr> {
        ready
            .split(scheme)
            .nth(1)?
            .split(|c: char| c.is_whitespace() || c == ')' || c == ';')
            .next()?
            .parse()
            .ok()
    };
    let addr = addr_after("https://").context("no https:// address in the ready line")?;
    let reported_ms = ready
        .split("ready in ")
        .nth(1)
        .and_then(|r| r.split("ms").next())
        .and_then(|n| n.parse().ok());
    Ok(Spawned {
        child,
        addr,
        health: addr_after("http://"),
        wall,
        reported_ms,
        _lines: rx,
    })
}

/// The real server on loopback ports with its certificates in `cert_dir`.
pub fn server(binary: &Path, cert_dir: &Path, extra: &[String]) -> anyhow::Result<Spawned> {
    let mut cmd = Command::new(binary);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--health-listen",
        "127.0.0.1:0",
    ])
    .arg("--cert-dir")
    .arg(cert_dir)
    .args(extra);
    start(cmd, "ready in")
}

/// Ask a child to stop with SIGTERM (graceful), then wait; kill if it does not go.
pub fn stop(mut s: Spawned) {
    let _ = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status();
    for _ in 0..100 {
        if let Ok(Some(_)) = s.child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = s.child.kill();
    let _ = s.child.wait();
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat` (`self` works).
pub fn cpu_time(pid: &str) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the first, utime the 12th.
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// `getconf CLK_TCK` (100 on Linux nearly always).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// `VmHWM` (peak resident) and `VmRSS` in KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// Samples RSS every 50 ms while alive; keeps the maxima.
pub struct RssSampler {
    pub peak_hwm_kib: Arc<AtomicU64>,
    pub peak_rss_kib: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let s = RssSampler {
            peak_hwm_kib: Arc::default(),
            peak_rss_kib: Arc::default(),
            stop: Arc::default(),
        };
        let (hwm, rss, stop) = (
            s.peak_hwm_kib.clone(),
            s.peak_rss_kib.clone(),
            s.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some((h, r)) = memory_kib(pid) {
                    hwm.fetch_max(h, Ordering::Relaxed);
                    rss.fetch_max(r, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        s
    }

    /// (peak VmHWM, peak sampled VmRSS) in MiB.
    pub fn peaks_mib(&self) -> (f64, f64) {
        (
            self.peak_hwm_kib.load(Ordering::Relaxed) as f64 / 1024.0,
            self.peak_rss_kib.load(Ordering::Relaxed) as f64 / 1024.0,
        )
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
