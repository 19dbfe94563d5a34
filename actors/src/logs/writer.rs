//! The one thread that writes every server's log files, rotating them by size.
//!
//! Drains hand it whole chunks through a bounded queue; when the queue or a server's pending bytes
//! are full the drain drops the chunk and counts its lines, so a slow disk never slows a child and
//! never grows memory without bound.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

/// The name of the file being written; rotated ones get `.1`, `.2`, ...
pub(crate) const CURRENT: &str = "current.log";

/// Queue length of the writer, in chunks.
const QUEUE: usize = 4096;

enum Job {
    Configure { dir: PathBuf, max_file_bytes: u64, max_files: u32 },
    Write { dir: Arc<Path>, bytes: Vec<u8>, pending: Arc<AtomicUsize> },
    Close { dir: PathBuf },
    Flush { done: std::sync::mpsc::Sender<()> },
}

/// A handle to the writer thread; cheap to clone. The thread ends when every handle is dropped.
#[derive(Clone)]
pub(crate) struct LogWriter {
    tx: SyncSender<Job>,
}

impl LogWriter {
    /// Starts the writer thread.
    pub(crate) fn start() -> std::io::Result<LogWriter> {
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new().name("hivehost-logs".into()).spawn(move || run(rx))?;
        Ok(LogWriter { tx })
    }

    pub(crate) fn configure(&self, dir: &Path, max_file_bytes: u64, max_files: u32) {
        // Configuration must not be lost: block for a place in the queue.
        let _ = self.tx.send(Job::Configure { dir: dir.to_path_buf(), max_file_bytes, max_files });
    }

    /// Queues `bytes` for `dir`; false if the queue is full (the caller drops and counts them).
    pub(crate) fn write(&self, dir: &Arc<Path>, bytes: Vec<u8>, pending: Arc<AtomicUsize>) -> bool {
        let len = bytes.len();
        pending.fetch_add(len, Ordering::Relaxed);
        match self.tx.try_send(Job::Write { dir: dir.clone(), bytes, pending }) {
            Ok(()) => true,
            Err(
                TrySendError::Full(Job::Write { pending, .. }) | TrySendError::Disconnected(Job::Write { pending, .. }),
            ) => {
                pending.fetch_sub(len, Ordering::Relaxed);
                false
            }
            Err(_) => false,
        }
    }

    pub(crate) fn close(&self, dir: &Path) {
        let _ = self.tx.send(Job::Close { dir: dir.to_path_buf() });
    }

    /// Waits until everything queued before this call is written.
    pub(crate) fn flush(&self) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.tx.send(Job::Flush { done }).is_ok() {
            let _ = wait.recv();
        }
    }
}

struct Sink {
    max_file_bytes: u64,
    max_files: u32,
    file: Option<File>,
    size: u64,
}

fn run(rx: Receiver<Job>) {
    let mut sinks: HashMap<PathBuf, Sink> = HashMap::new();
    while let Ok(job) = rx.recv() {
        match job {
            Job::Configure { dir, max_file_bytes, max_files } => {
                let sink = sinks.entry(dir).or_insert(Sink { max_file_bytes, max_files, file: None, size: 0 });
                sink.max_file_bytes = max_file_bytes.max(1);
                sink.max_files = max_files.max(1);
            }
            Job::Write { dir, bytes, pending } => {
                let len = bytes.len();
                // The common case finds its sink without allocating a key.
                if !sinks.contains_key(&*dir) {
                    sinks.insert(
                        dir.to_path_buf(),
                        Sink { max_file_bytes: 10 << 20, max_files: 5, file: None, size: 0 },
                    );
                }
                if let Some(sink) = sinks.get_mut(&*dir)
                    && let Err(err) = sink.write(&dir, &bytes)
                {
                    tracing::warn!(dir = %dir.display(), error = %err, "writing a log file failed");
                    sink.file = None;
                }
                pending.fetch_sub(len, Ordering::Relaxed);
            }
            Job::Close { dir } => {
                sinks.remove(&dir);
            }
            Job::Flush { done } => {
                let _ = done.send(());
            }
        }
    }
}

impl Sink {
    fn write(&mut self, dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            std::fs::create_dir_all(dir)?;
            let path = dir.join(CURRENT);
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            self.size = file.metadata()?.len();
            self.file = Some(file);
        }
        if self.size > 0 && self.size + bytes.len() as u64 > self.max_file_bytes {
            self.rotate(dir)?;
        }
        if let Some(file) = self.file.as_mut() {
            file.write_all(bytes)?;
            self.size += bytes.len() as u64;
        }
        Ok(())
    }

    /// `current.log` becomes `current.log.1`, `.1` becomes `.2`, ...; the oldest beyond `max_files` goes.
    fn rotate(&mut self, dir: &Path) -> std::io::Result<()> {
        self.file = None;
        let name = |n: u32| {
            if n == 0 { dir.join(CURRENT) } else { dir.join(format!("{CURRENT}.{n}")) }
        };
        let keep = self.max_files.saturating_sub(1);
        let _ = std::fs::remove_file(name(keep.max(1)));
        for n in (0..keep).rev() {
            let from = name(n);
            if from.exists() {
                std::fs::rename(&from, name(n + 1))?;
            }
        }
        if keep == 0 {
            let _ = std::fs::remove_file(name(0));
        }
        let file = OpenOptions::new().create(true).append(true).open(name(0))?;
        self.size = 0;
        self.file = Some(file);
        Ok(())
    }
}
