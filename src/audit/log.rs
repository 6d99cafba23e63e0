//! Writing decision records: off the request path on a dedicated thread, to stdout and/or a file
//! rotated by size into gzip'd generations (`decisions.log.1.gz`, …).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use flate2::Compression;
use flate2::write::GzEncoder;

use super::DecisionRecord;
use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;

/// Records waiting for the writer; beyond this (or `decisionLog.maxQueueBytes` of them) the
/// request path never blocks, it counts a drop.
const QUEUE: usize = 16 * 1024;

/// Serialised records on their way to the writer, and the bytes they hold.
#[derive(Clone)]
struct Queue {
    tx: SyncSender<Vec<u8>>,
    held: Arc<AtomicUsize>,
    max_bytes: usize,
}

#[derive(Clone)]
pub struct DecisionLog {
    queue: Option<Queue>,
    metrics: Arc<Metrics>,
    include_objects: bool,
}

impl DecisionLog {
    /// A log that writes nothing (offline tools).
    pub fn disabled(metrics: Arc<Metrics>) -> Self {
        DecisionLog {
            queue: None,
            metrics,
            include_objects: false,
        }
    }

    pub fn start(config: &DecisionLogConfig, metrics: Arc<Metrics>) -> io::Result<Self> {
        if !config.stdout && config.file.is_none() {
            return Ok(Self::disabled(metrics));
        }
        let file = match &config.file {
            Some(path) => Some(RotatingFile::open(
                path.clone(),
                config.max_file_bytes,
                config.keep_files,
            )?),
            None => None,
        };
        let (tx, rx) = sync_channel(QUEUE);
        let held = Arc::new(AtomicUsize::new(0));
        let stdout = config.stdout;
        let writer_held = held.clone();
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || writer_loop(rx, writer_held, stdout, file))?;
        Ok(DecisionLog {
            queue: Some(Queue {
                tx,
                held,
                max_bytes: config.max_queue_bytes,
            }),
            metrics,
            include_objects: config.include_objects,
        })
    }

    pub fn include_objects(&self) -> bool {
        self.include_objects
    }

    /// Queue one record. It is serialised here, so that what waits is counted in bytes: a
    /// record of a 700-container pod (or with its object) is hundreds of times an ordinary one.
    pub fn record(&self, record: DecisionRecord) {
        let Some(q) = &self.queue else { return };
        let mut line = Vec::with_capacity(1024);
        if serde_json::to_writer(&mut line, &record).is_err() {
            self.metrics.decision_log_dropped.inc();
            return;
        }
        line.push(b'\n');
        let len = line.len();
        if q.held.fetch_add(len, Ordering::AcqRel) + len > q.max_bytes {
            q.held.fetch_sub(len, Ordering::AcqRel);
            self.metrics.decision_log_dropped.inc();
            return;
        }
        match q.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                q.held.fetch_sub(len, Ordering::AcqRel);
                self.metrics.decision_log_dropped.inc();
            }
        }
    }
}

/// After writing a batch, wait this long before blocking on the queue again: under load the
/// next records are then already queued, so senders never have to wake this thread (a futex
/// wake per review cost ~5% of the server's CPU; docs/performance.md). Idle, it costs nothing.
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

fn writer_loop(
    rx: Receiver<Vec<u8>>,
    held: Arc<AtomicUsize>,
    stdout: bool,
    mut file: Option<RotatingFile>,
) {
    let out = io::stdout();
    while let Ok(first) = rx.recv() {
        // Stdout is line-buffered (a write(2) per record); buffer the batch and write it once.
        let mut lock = BufWriter::with_capacity(64 * 1024, out.lock());
        // Drain what is queued so a burst costs one flush.
        for line in std::iter::once(first).chain(rx.try_iter()) {
            held.fetch_sub(line.len(), Ordering::AcqRel);
            if stdout {
                let _ = lock.write_all(&line);
            }
            if let Some(f) = file.as_mut()
                && let Err(e) = f.write_line(&line)
            {
                tracing::error!(error = %e, "cannot write decision log file");
            }
        }
        let _ = lock.flush();
        drop(lock);
        if let Some(f) = file.as_mut() {
            let _ = f.flush();
        }
        std::thread::sleep(BATCH_PAUSE);
    }
}

/// An append-only file that rotates into gzip'd generations when it grows past a size.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    size: u64,
    out: BufWriter<File>,
}

impl RotatingFile {
    pub fn open(path: PathBuf, max_bytes: u64, keep: usize) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path,
            max_bytes: max_bytes.max(1024),
            keep,
            size,
            out: BufWriter::new(file),
        })
    }

    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn generation(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}.gz"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path).or_else(ignore_missing)?;
        } else {
            std::fs::remove_file(self.generation(self.keep)).or_else(ignore_missing)?;
            for n in (1..self.keep).rev() {
                let from = self.generation(n);
                if from.exists() {
                    std::fs::rename(&from, self.generation(n + 1))?;
                }
            }
            gzip_into(&self.path, &self.generation(1))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)?;
        self.out = BufWriter::new(file);
        self.size = 0;
        Ok(())
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

fn gzip_into(src: &Path, dst: &Path) -> io::Result<()> {
    let mut input = File::open(src)?;
    let mut enc = GzEncoder::new(File::create(dst)?, Compression::default());
    io::copy(&mut input, &mut enc)?;
    enc.finish()?.sync_all()
}

/// The `decisionLog:` section of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecisionLogConfig {
    /// Write each decision as a JSON line to stdout.
    #[serde(default = "yes")]
    pub stdout: bool,
    /// Also append to this file, rotating at `maxFileBytes`.
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default = "default_log_file_bytes")]
    pub max_file_bytes: u64,
    /// Rotated files kept (`file.1.gz` … `file.N.gz`).
    #[serde(default = "default_log_keep")]
    pub keep_files: usize,
    /// Include object bodies (off: they can hold secrets).
    #[serde(default)]
    pub include_objects: bool,
    /// Bytes of records waiting for the writer; past this, records are dropped and counted in
    /// `sandbox_admission_decision_log_dropped_total` (a flood never grows memory through the log).
    #[serde(default = "default_log_queue_bytes")]
    pub max_queue_bytes: usize,
}

impl DecisionLogConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_queue_bytes < 64 * 1024 {
            return Err("decisionLog.maxQueueBytes must be at least 65536".into());
        }
        Ok(())
    }
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        DecisionLogConfig {
            stdout: true,
            file: None,
            max_file_bytes: default_log_file_bytes(),
            keep_files: default_log_keep(),
            include_objects: false,
            max_queue_bytes: default_log_queue_bytes(),
        }
    }
}

fn default_log_file_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_log_queue_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_log_keep() -> usize {
    5
}
fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn rotates_into_gzip_generations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        let mut f = RotatingFile::open(path.clone(), 1024, 2).unwrap();
        let line = vec![b'x'; 600];
        for _ in 0..4 {
            f.write_line(&line).unwrap();
        }
        f.flush().unwrap();
        assert!(dir.path().join("d.log.1.gz").exists());
        assert!(dir.path().join("d.log.2.gz").exists());
        assert!(!dir.path().join("d.log.3.gz").exists());
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(dir.path().join("d.log.1.gz")).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text.len(), 600);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 600);
    }
}
