//! Latency histogram (HdrHistogram, nanoseconds) and counters of one load run.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

pub struct Stats {
    pub latency: Histogram<u64>,
    pub allowed: u64,
    pub denied: u64,
    pub patched: u64,
    /// Errors by reason: non-200, malformed answers, timeouts, connection failures.
    pub errors: BTreeMap<String, u64>,
    /// Fixed-rate sends that left more than 5 ms after their slot (the client fell behind).
    pub late: u64,
    pub elapsed: Duration,
    /// CPU time the responding process spent during the run (from /proc), when known.
    pub server_cpu: Option<Duration>,
    /// CPU time the load generator itself spent.
    pub client_cpu: Option<Duration>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            // 1 ns .. 60 s at 3 significant digits.
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .expect("constant histogram bounds are valid"),
            allowed: 0,
            denied: 0,
            patched: 0,
            errors: BTreeMap::new(),
            late: 0,
            elapsed: Duration::ZERO,
            server_cpu: None,
            client_cpu: None,
        }
    }

    pub fn record(&mut self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.latency.saturating_record(ns);
    }

    pub fn error(&mut self, reason: String) {
        *self.errors.entry(reason).or_default() += 1;
    }

    pub fn merge(&mut self, other: Stats) {
        let _ = self.latency.add(&other.latency);
        self.allowed += other.allowed;
        self.denied += other.denied;
        self.patched += other.patched;
        self.late += other.late;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.elapsed = self.elapsed.max(other.elapsed);
        let add = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.server_cpu = add(self.server_cpu, other.server_cpu);
        self.client_cpu = add(self.client_cpu, other.client_cpu);
    }

    /// CPU microseconds per answered review (robust to other load on a shared machine).
    pub fn cpu_us_per_review(cpu: Option<Duration>, ok: u64) -> Option<f64> {
        cpu.filter(|_| ok > 0)
            .map(|c| c.as_secs_f64() * 1e6 / ok as f64)
    }

    /// Add a whole run (its window adds to ours), for alternating rounds.
    pub fn merge_run(&mut self, run: Stats) {
        let elapsed = self.elapsed + run.elapsed;
        self.merge(run);
        self.elapsed = elapsed;
    }

    pub fn ok(&self) -> u64 {
        self.latency.len()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Answered reviews per second over the measured window.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok() as f64 / secs
        } else {
            0.0
        }
    }

    /// A latency quantile in microseconds.
    pub fn us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_us(&self) -> f64 {
        self.latency.max() as f64 / 1000.0
    }

    pub fn to_json(&self) -> Value {
        json!({
            "requests": self.ok() + self.error_count(),
            "ok": self.ok(),
            "errors": self.error_count(),
            "error_reasons": self.errors,
            "allowed": self.allowed,
            "denied": self.denied,
            "patched": self.patched,
            "late_sends": self.late,
            "seconds": self.elapsed.as_secs_f64(),
            "server_cpu_us_per_review": Stats::cpu_us_per_review(self.server_cpu, self.ok()),
            "client_cpu_us_per_review": Stats::cpu_us_per_review(self.client_cpu, self.ok()),
            "throughput_rps": self.throughput(),
            "latency_us": {
                "p50": self.us(0.5), "p90": self.us(0.9), "p99": self.us(0.99),
                "p99_9": self.us(0.999), "max": self.max_us(), "mean": self.latency.mean() / 1000.0,
            },
        })
    }

    /// One line: throughput, quantiles, errors.
    pub fn line(&self) -> String {
        let cpu = Stats::cpu_us_per_review(self.server_cpu, self.ok())
            .map_or(String::new(), |c| format!("  cpu {c:>5.1} µs/rev"));
        format!(
            "{:>9.0} rev/s  p50 {:>7.1}  p90 {:>7.1}  p99 {:>7.1}  p99.9 {:>8.1}  max {:>8.1} µs{cpu}  ok {} err {}{}",
            self.throughput(),
            self.us(0.5),
            self.us(0.9),
            self.us(0.99),
            self.us(0.999),
            self.max_us(),
            self.ok(),
            self.error_count(),
            if self.late > 0 {
                format!(" late {}", self.late)
            } else {
                String::new()
            }
        )
    }
}
