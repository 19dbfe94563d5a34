//! The one thread that writes every server's log files, rotating them by size.
//!
//! Drains hand it whole chunks through a bounded queue; when the queue or a server's pending bytes
//! are full the drain drops the chunk and counts its lines, so a slow disk never slows a child and
//! never grows memory without bound. After a small batch the writer pauses briefly so that the
//! lines of hundreds of quiet servers gather into one wake-up; a flood ends the pause at once.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};

/// The name of the file being written; rotated ones get `.1`, `.2`, ...
pub(crate) const CURRENT: &str = "current.log";

/// Queue length of the writer, in chunks.
const QUEUE: usize = 4096;

/// How long the writer lets small writes gather after a batch of fewer than `COALESCE_BELOW` bytes.
///
/// 500 servers printing a line a second would otherwise wake it 500 times a second; a line reaches
/// its file at most this much later (the ring and live subscribers have it at once).
const COALESCE: std::time::Duration = std::time::Duration::from_millis(25);

/// A batch at least this large means a flood: the writer looks again at once.
const COALESCE_BELOW: usize = 256 * 1024;

/// Queued bytes that end the writer's gathering pause at once.
const WAKE_AT: usize = 64 * 1024;

/// How often the writer, when idle, closes the files of deleted servers.
const SWEEP: std::time::Duration = std::time::Duration::from_secs(1);

/// Where one server's logs go and how they rotate; shared by its log book and the writer.
///
/// Settings travel with every chunk, so nothing ever has to be sent ahead of the data: no sender
/// (an actor among them) ever waits for room in the queue.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) dir: PathBuf,
    pub(crate) max_file_bytes: u64,
    pub(crate) max_files: u32,
    /// Set when the server is deleted; the writer then closes its file.
    pub(crate) closed: AtomicBool,
}

enum Job {
    Write { target: Arc<Target>, bytes: Vec<u8>, pending: Arc<AtomicUsize> },
    Flush { done: std::sync::mpsc::Sender<()> },
}

/// A handle to the writer thread; cheap to clone. The thread ends when every handle is dropped.
#[derive(Clone)]
pub(crate) struct LogWriter {
    tx: SyncSender<Job>,
    /// Bytes queued and not yet written, over every server.
    queued: Arc<AtomicUsize>,
    /// The writer thread, woken early from its gathering pause when a flood piles up bytes.
    thread: std::thread::Thread,
}

impl LogWriter {
    /// Starts the writer thread.
    pub(crate) fn start() -> std::io::Result<LogWriter> {
        let (tx, rx) = sync_channel(QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let in_thread = queued.clone();
        let handle = std::thread::Builder::new().name("hivehost-logs".into()).spawn(move || run(rx, &in_thread))?;
        Ok(LogWriter { tx, queued, thread: handle.thread().clone() })
    }

    /// Queues `bytes` for `target`; false if the queue is full (the caller drops and counts them).
    pub(crate) fn write(&self, target: &Arc<Target>, bytes: Vec<u8>, pending: Arc<AtomicUsize>) -> bool {
        let len = bytes.len();
        pending.fetch_add(len, Ordering::Relaxed);
        let queued = self.queued.fetch_add(len, Ordering::Relaxed) + len;
        match self.tx.try_send(Job::Write { target: target.clone(), bytes, pending }) {
            Ok(()) => {
                // Past this many queued bytes a flood is on: end the writer's gathering pause now.
                if queued >= WAKE_AT {
                    self.thread.unpark();
                }
                true
            }
            Err(
                TrySendError::Full(Job::Write { pending, .. }) | TrySendError::Disconnected(Job::Write { pending, .. }),
            ) => {
                pending.fetch_sub(len, Ordering::Relaxed);
                self.queued.fetch_sub(len, Ordering::Relaxed);
                false
            }
            Err(_) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                false
            }
        }
    }

    /// Waits until everything queued before this call is written; blocking, so never from an actor.
    pub(crate) fn flush(&self) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.tx.send(Job::Flush { done }).is_ok() {
            let _ = wait.recv();
        }
    }
}

struct Sink {
    target: Arc<Target>,
    file: Option<File>,
    size: u64,
}

fn run(rx: Receiver<Job>, queued: &AtomicUsize) {
    let mut sinks: HashMap<PathBuf, Sink> = HashMap::new();
    loop {
        let first = match rx.recv_timeout(SWEEP) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                sinks.retain(|_, sink| !sink.target.closed.load(Ordering::Relaxed));
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = handle(&mut sinks, first);
        while let Ok(job) = rx.try_recv() {
            batch += handle(&mut sinks, job);
        }
        queued.fetch_sub(batch, Ordering::Relaxed);
        // Quiet servers: let their lines gather instead of waking for each one. A parked writer is
        // no receiver-in-waiting, so senders meanwhile queue without a wake-up; a flood unparks it.
        if batch < COALESCE_BELOW {
            std::thread::park_timeout(COALESCE);
        }
    }
}

/// Does one job; returns the bytes it wrote.
fn handle(sinks: &mut HashMap<PathBuf, Sink>, job: Job) -> usize {
    match job {
        Job::Write { target, bytes, pending } => {
            let len = bytes.len();
            let dir = target.dir.as_path();
            // The common case finds its sink without allocating a key; a server re-added in the
            // same directory brings new settings and reopens the file.
            match sinks.get_mut(dir) {
                Some(sink) if Arc::ptr_eq(&sink.target, &target) => {}
                _ => {
                    sinks.insert(dir.to_path_buf(), Sink { target: target.clone(), file: None, size: 0 });
                }
            }
            if let Some(sink) = sinks.get_mut(dir)
                && let Err(err) = sink.write(&bytes)
            {
                tracing::warn!(dir = %dir.display(), error = %err, "writing a log file failed");
                sink.file = None;
            }
            pending.fetch_sub(len, Ordering::Relaxed);
            len
        }
        Job::Flush { done } => {
            let _ = done.send(());
            0
        }
    }
}

impl Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let target = self.target.clone();
        let dir = target.dir.as_path();
        if self.file.is_none() {
            std::fs::create_dir_all(dir)?;
            let path = dir.join(CURRENT);
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            self.size = file.metadata()?.len();
            self.file = Some(file);
        }
        if self.size > 0 && self.size + bytes.len() as u64 > target.max_file_bytes.max(1) {
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
        let keep = self.target.max_files.max(1).saturating_sub(1);
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
