//! Server output: the drain that never blocks the child, the ring of recent lines, live subscribers,
//! and the single disk writer that rotates files and drops (and counts) what it cannot keep up with.

mod drains;
mod writer;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;

use crate::process::Pipe;

pub(crate) use drains::log_pipe;
pub(crate) use writer::LogWriter;
use writer::Target;

/// Which pipe a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of a server's output.
#[derive(Clone, Debug)]
pub struct LogLine {
    pub at: SystemTime,
    pub generation: u64,
    pub stream: Stream,
    /// The line without its newline, lossily decoded, cut at `max_line_bytes`.
    pub text: String,
}

/// Counters of what the log path had to give up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogCounters {
    pub lines: u64,
    pub truncated: u64,
    /// Lines not written to disk because the writer fell behind.
    pub dropped: u64,
}

/// How many bytes of one server may wait for the disk writer before lines are dropped.
const MAX_PENDING_BYTES: usize = 8 << 20;

/// Largest read of the drain: large reads keep the syscall count, and so the child's wait, low.
const READ_CHUNK: usize = 512 * 1024;

/// First read size of the drain.
const FIRST_CHUNK: usize = 4 * 1024;

/// A line as the ring keeps it: compact, since 500 servers keep hundreds of lines each.
struct Kept {
    at: SystemTime,
    generation: u32,
    stream: Stream,
    text: Box<str>,
}

impl Kept {
    fn to_line(&self) -> LogLine {
        LogLine {
            at: self.at,
            generation: u64::from(self.generation),
            stream: self.stream,
            text: self.text.to_string(),
        }
    }
}

/// A chunk's bytes for disk, and each line in it as (start, end, cut).
type Lines = (Vec<u8>, Vec<(usize, usize, bool)>);

/// Capacity of a server's live channel; a subscriber that lags further loses lines.
const LIVE_CAPACITY: usize = 1024;

/// The shared log state of one server; it outlives incarnations.
pub(crate) struct LogBook {
    ring: Mutex<VecDeque<Kept>>,
    capacity: usize,
    max_line_bytes: usize,
    /// Created at the first subscription: most servers never have a live reader.
    live: Mutex<Option<broadcast::Sender<LogLine>>>,
    lines: AtomicU64,
    truncated: AtomicU64,
    dropped: AtomicU64,
    /// Bytes handed to the disk writer and not yet written.
    pending: Arc<AtomicUsize>,
    target: Arc<Target>,
    writer: LogWriter,
}

impl LogBook {
    pub(crate) fn new(spec: &crate::spec::LogSpec, writer: LogWriter) -> LogBook {
        LogBook {
            ring: Mutex::new(VecDeque::new()),
            capacity: spec.ring_lines.max(1),
            max_line_bytes: spec.max_line_bytes.max(16),
            live: Mutex::new(None),
            lines: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            pending: Arc::new(AtomicUsize::new(0)),
            target: Arc::new(Target {
                dir: spec.dir.clone(),
                max_file_bytes: spec.max_file_bytes,
                max_files: spec.max_files,
                closed: std::sync::atomic::AtomicBool::new(false),
            }),
            writer,
        }
    }

    /// The last `n` lines, oldest first.
    pub(crate) fn tail(&self, n: usize) -> Vec<LogLine> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().skip(ring.len().saturating_sub(n)).map(Kept::to_line).collect()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<LogLine> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get_or_insert_with(|| broadcast::channel(LIVE_CAPACITY).0).subscribe()
    }

    /// The live channel, if anyone listens.
    fn listeners(&self) -> Option<broadcast::Sender<LogLine>> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.as_ref().filter(|tx| tx.receiver_count() > 0).cloned()
    }

    pub(crate) fn counters(&self) -> LogCounters {
        LogCounters {
            lines: self.lines.load(Ordering::Relaxed),
            truncated: self.truncated.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// Lets the writer close the server's file (within a second); called when the server is deleted.
    pub(crate) fn close(&self) {
        self.target.closed.store(true, Ordering::Relaxed);
    }

    /// Takes one chunk read from a pipe: complete lines go to the ring, subscribers and disk.
    fn take_chunk(&self, generation: u64, stream: Stream, partial: &mut Vec<u8>, chunk: &[u8]) {
        let max = self.max_line_bytes;
        // Each line as (start, end, cut) within `disk`, so only the lines that matter become strings.
        let (disk, spans) = match Self::whole_lines(partial, chunk, max) {
            Some(fast) => fast,
            None => Self::split_lines(partial, chunk, max),
        };
        self.keep(generation, stream, disk, spans);
    }

    /// The common case of a flood: no carried-over partial line and no overlong line, so the chunk's
    /// complete lines go to disk as one copy. `None` when the general path is needed.
    fn whole_lines(partial: &mut Vec<u8>, chunk: &[u8], max: usize) -> Option<Lines> {
        if !partial.is_empty() {
            return None;
        }
        let mut spans = Vec::new();
        let mut start = 0;
        for at in memchr::memchr_iter(b'\n', chunk) {
            if at - start > max {
                return None;
            }
            spans.push((start, at, false));
            start = at + 1;
        }
        let rest = &chunk[start..];
        if rest.len() >= max {
            return None;
        }
        partial.extend_from_slice(rest);
        Some((chunk[..start].to_vec(), spans))
    }

    /// The general path: joins a carried-over partial line, cuts overlong lines.
    fn split_lines(partial: &mut Vec<u8>, chunk: &[u8], max: usize) -> Lines {
        let mut disk: Vec<u8> = Vec::with_capacity(chunk.len() + partial.len() + 16);
        let mut spans: Vec<(usize, usize, bool)> = Vec::new();
        let mut push = |disk: &mut Vec<u8>, line: &[u8], cut: bool| {
            let start = disk.len();
            disk.extend_from_slice(line);
            let end = disk.len();
            if cut {
                disk.extend_from_slice(b" [truncated]");
            }
            disk.push(b'\n');
            spans.push((start, end, cut));
        };
        let mut rest = chunk;
        while let Some(at) = memchr::memchr(b'\n', rest) {
            let (line, tail) = rest.split_at(at);
            rest = &tail[1..];
            if partial.is_empty() {
                push(&mut disk, &line[..line.len().min(max)], line.len() > max);
            } else if partial.len() >= max {
                // The start of this overlong line was already emitted; its remainder is dropped.
                partial.clear();
            } else {
                partial.extend_from_slice(line);
                let cut = partial.len() > max;
                partial.truncate(max);
                push(&mut disk, partial, cut);
                partial.clear();
            }
        }
        if !rest.is_empty() && partial.len() < max {
            partial.extend_from_slice(rest);
            if partial.len() >= max {
                // Emit the head of an overlong line now; `partial` stays full so the rest is dropped.
                partial.truncate(max);
                push(&mut disk, partial, true);
            }
        }
        (disk, spans)
    }

    /// Counts the lines, keeps the last ones in the ring, hands them to subscribers and to disk.
    fn keep(&self, generation: u64, stream: Stream, disk: Vec<u8>, spans: Vec<(usize, usize, bool)>) {
        let n_lines = spans.len();
        if n_lines == 0 {
            return;
        }
        let n_truncated = spans.iter().filter(|(_, _, cut)| *cut).count();
        self.lines.fetch_add(n_lines as u64, Ordering::Relaxed);
        self.truncated.fetch_add(n_truncated as u64, Ordering::Relaxed);
        let listeners = self.listeners();
        let keep_from = if listeners.is_some() { 0 } else { n_lines.saturating_sub(self.capacity) };
        let now = SystemTime::now();
        let generation = u32::try_from(generation).unwrap_or(u32::MAX);
        let fresh: Vec<Kept> = spans[keep_from..]
            .iter()
            .map(|(start, end, _)| Kept {
                at: now,
                generation,
                stream,
                text: String::from_utf8_lossy(&disk[*start..*end]).into(),
            })
            .collect();
        let for_listeners: Vec<LogLine> =
            if listeners.is_some() { fresh.iter().map(Kept::to_line).collect() } else { Vec::new() };
        {
            let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            let skip = fresh.len().saturating_sub(self.capacity);
            for line in fresh.into_iter().skip(skip) {
                if ring.len() >= self.capacity {
                    ring.pop_front();
                }
                ring.push_back(line);
            }
        }
        // After the ring: a subscriber that sees a line finds it in `tail` too.
        if let Some(tx) = listeners {
            for line in for_listeners {
                // A lagging subscriber loses lines; the child is never slowed for it.
                let _ = tx.send(line);
            }
        }
        let len = disk.len();
        if self.pending.load(Ordering::Relaxed) + len > MAX_PENDING_BYTES
            || !self.writer.write(&self.target, disk, self.pending.clone())
        {
            self.dropped.fetch_add(n_lines as u64, Ordering::Relaxed);
        }
    }

    /// Emits what is left of an unterminated last line at end of file.
    fn finish(&self, generation: u64, stream: Stream, partial: &mut Vec<u8>) {
        if !partial.is_empty() && partial.len() < self.max_line_bytes {
            partial.push(b'\n');
            let last = std::mem::take(partial);
            self.take_chunk(generation, stream, &mut Vec::new(), &last);
        }
        partial.clear();
    }
}

/// Counts the pipes still open, so the server actor can wait for the last lines of an incarnation.
#[derive(Default)]
pub(crate) struct DrainGate {
    open: AtomicUsize,
    closed: Notify,
}

impl DrainGate {
    /// Waits until every pipe reached end of file, or `limit` passed; true if all closed.
    pub(crate) async fn wait(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.closed.notified();
            if self.open.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.open.load(Ordering::SeqCst) == 0;
            }
        }
    }
}

/// A pipe shared between the server actor and (successive) log tailers, so a restarted tailer resumes.
pub(crate) type SharedPipe = Arc<tokio::sync::Mutex<Option<Pipe>>>;

/// The actor that drains one incarnation's log pipes.
pub(crate) struct LogTailer;

pub(crate) struct LogTailerArgs {
    pub(crate) book: Arc<LogBook>,
    pub(crate) generation: u64,
    pub(crate) pipes: Vec<(Stream, SharedPipe)>,
    pub(crate) gate: Arc<DrainGate>,
}

pub(crate) struct LogTailerState {
    tasks: Vec<JoinHandle<()>>,
}

impl Actor for LogTailer {
    type Msg = ();
    type State = LogTailerState;
    type Arguments = LogTailerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        args: LogTailerArgs,
    ) -> Result<LogTailerState, ActorProcessingErr> {
        let tasks = args
            .pipes
            .into_iter()
            .map(|(stream, pipe)| {
                drains::spawn(drain(args.book.clone(), args.generation, stream, pipe, args.gate.clone()))
            })
            .collect();
        Ok(LogTailerState { tasks })
    }

    async fn post_stop(&self, _myself: ActorRef<()>, state: &mut LogTailerState) -> Result<(), ActorProcessingErr> {
        for task in &state.tasks {
            task.abort();
        }
        Ok(())
    }
}

impl Drop for LogTailerState {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Reads one pipe until end of file; never stops reading because of slow consumers.
async fn drain(book: Arc<LogBook>, generation: u64, stream: Stream, pipe: SharedPipe, gate: Arc<DrainGate>) {
    let mut guard = pipe.lock().await;
    let Some(reader) = guard.as_mut() else { return };
    // Small for the many quiet servers; doubled while reads fill it, up to READ_CHUNK for floods.
    let mut buf = vec![0u8; FIRST_CHUNK];
    let mut partial = Vec::new();
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                book.take_chunk(generation, stream, &mut partial, &buf[..n]);
                if n == buf.len() && buf.len() < READ_CHUNK {
                    buf.resize(buf.len() * 2, 0);
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => {
                tracing::warn!(error = %err, "reading a log pipe failed");
                break;
            }
        }
    }
    book.finish(generation, stream, &mut partial);
    // End of file: the pipe is spent; a restarted tailer must not read it again.
    *guard = None;
    if gate.open.fetch_sub(1, Ordering::SeqCst) == 1 {
        gate.closed.notify_waiters();
    }
}

impl DrainGate {
    /// A gate for `n` open pipes.
    pub(crate) fn new(n: usize) -> DrainGate {
        DrainGate { open: AtomicUsize::new(n), closed: Notify::new() }
    }
}

#[cfg(test)]
mod tests;
