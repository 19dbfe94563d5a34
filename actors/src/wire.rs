//! The upstream session's wire: a stdio server's stdin and stdout, shared by hivehost's rmcp client
//! session and the gateway's direct requests.
//!
//! The gateway forwards requests as JSON: a client's `params` go out as they came (with the wire's
//! own progress token, and the 2026-07-28 metadata where the session speaks it), and a server's
//! `result` comes back as raw JSON, never parsed into rmcp's types and serialized again. A direct
//! request is written by its caller (under the stdin lock) and its answer handed over once, by the
//! reader, which knows it by its id (`hivehost-N`, a string no rmcp client of ours chooses): no
//! trip through rmcp's serve loop and send task. The reader hands the request's progress (under
//! the token `hivehost-N`) to the same caller, in the order the server wrote it: all of it has
//! arrived by the time the answer does. Every other line (the handshake, pings,
//! notifications, the server's own requests) goes to the rmcp session as before, which also writes
//! through this wire.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rmcp::model::{ErrorData, ProgressNotificationParam, ProtocolVersion, RequestId, RequestMetaObject};
use rmcp::service::{RoleClient, RxJsonRpcMessage, TxJsonRpcMessage};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::process::{InPipe, Pipe};

/// The prefix of direct requests' ids and progress tokens.
const PREFIX: &str = "hivehost-";

/// The longest line read from a server; a longer one is dropped (with a warning), not buffered.
const MAX_LINE: usize = 64 << 20;

/// Why a direct request has no answer.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// It could not be written: the process had gone. It never reached the server.
    #[error("the request could not be written to the server's stdin: {0}")]
    NotSent(String),
    /// The server's stdout closed before it answered.
    #[error("the server's stdout closed before it answered")]
    Closed,
    /// The server answered with an error.
    #[error("{0}")]
    Server(ErrorData),
    /// The answer was not a JSON-RPC response hivehost could read.
    #[error("the server's answer could not be read: {0}")]
    Garbled(String),
}

/// One incarnation's stdin and stdout.
pub struct Wire {
    stdin: tokio::sync::Mutex<Option<InPipe>>,
    /// What a 2026-07-28 session's requests carry in `_meta` (set after the handshake).
    stamp: std::sync::OnceLock<Map<String, Value>>,
    /// The direct requests waiting for their answers; `None` once the reader has ended (stdout
    /// closed, or its task aborted with the incarnation).
    waiting: Mutex<Option<HashMap<u64, Waiter>>>,
    next: AtomicU64,
}

/// A direct request on its way: its id upstream, its answer to come, and its progress meanwhile.
pub struct Sent {
    pub id: RequestId,
    pub answer: Answer,
    /// The server's progress on this request, in order; complete once the answer has come.
    pub progress: mpsc::UnboundedReceiver<ProgressNotificationParam>,
}

/// The answer to a direct request; dropping it unregisters the request.
pub struct Answer {
    rx: oneshot::Receiver<Result<Box<RawValue>, WireError>>,
    n: u64,
    wire: Arc<Wire>,
}

/// Where the reader hands one direct request's lines.
struct Waiter {
    answer: oneshot::Sender<Result<Box<RawValue>, WireError>>,
    progress: mpsc::UnboundedSender<ProgressNotificationParam>,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire").field("next", &self.next).finish_non_exhaustive()
    }
}

impl Wire {
    /// Takes over `stdin` and `stdout`: the wire for direct requests, the transport for the rmcp
    /// session, and the reader task (which ends when stdout closes).
    pub fn open(stdin: InPipe, stdout: Pipe) -> (Arc<Wire>, WireTransport, JoinHandle<()>) {
        let wire = Arc::new(Wire {
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            stamp: std::sync::OnceLock::new(),
            waiting: Mutex::new(Some(HashMap::new())),
            next: AtomicU64::new(1),
        });
        let (lines, rx) = mpsc::unbounded_channel();
        // The guard travels as an argument, so even a reader aborted before its first poll fails
        // its waiting callers.
        let reader = tokio::spawn(read(Ended(wire.clone()), stdout, lines));
        (wire.clone(), WireTransport { wire, lines: rx }, reader)
    }

    /// Direct requests carry the per-request metadata of a session on `protocol_version`
    /// (2026-07-28 and later) in their `_meta` from now on: the version, and hivehost as the client
    /// and its capabilities, as rmcp's client adds them to its own requests.
    pub fn stamp(&self, protocol_version: ProtocolVersion) {
        let mut meta = RequestMetaObject::default();
        meta.set_protocol_version(protocol_version);
        meta.set_client_info(crate::link::client_info());
        meta.set_client_capabilities(crate::link::client_capabilities());
        if let Ok(Value::Object(meta)) = serde_json::to_value(meta) {
            let _ = self.stamp.set(meta);
        }
    }

    /// Writes one message as a line.
    async fn write(&self, line: &[u8]) -> std::io::Result<()> {
        let mut stdin = self.stdin.lock().await;
        let Some(stdin) = stdin.as_mut() else {
            return Err(std::io::Error::new(std::io::ErrorKind::NotConnected, "the session closed its stdin"));
        };
        stdin.write_all(line).await?;
        stdin.flush().await
    }

    /// Sends a request of `method` with `params` as they are, but for `_meta`: the progress token
    /// becomes one of the wire's own (the caller keeps its client's), and a 2026-07-28 session's
    /// metadata is added. `params` is changed in place, so a retry can send it again.
    pub async fn send(
        self: &Arc<Self>,
        method: &str,
        params: &mut Option<Map<String, Value>>,
    ) -> Result<Sent, WireError> {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            jsonrpc: &'static str,
            id: &'a str,
            method: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            params: &'a Option<Map<String, Value>>,
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let token: Arc<str> = format!("{PREFIX}{n}").into();
        let params_map = params.get_or_insert_with(Map::new);
        let mut meta = match params_map.remove("_meta") {
            Some(Value::Object(meta)) => meta,
            _ => Map::new(),
        };
        if let Some(stamp) = self.stamp.get() {
            meta.extend(stamp.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        meta.insert("progressToken".into(), Value::String(token.to_string()));
        params_map.insert("_meta".into(), Value::Object(meta));
        let out = Out { jsonrpc: "2.0", id: &token, method, params };
        let mut line = serde_json::to_vec(&out).map_err(|err| WireError::NotSent(err.to_string()))?;
        line.push(b'\n');
        let (answer_tx, answer_rx) = oneshot::channel();
        let (progress_tx, progress) = mpsc::unbounded_channel();
        // No caller waits on a reader that is gone.
        match self.waiting.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            Some(waiting) => waiting.insert(n, Waiter { answer: answer_tx, progress: progress_tx }),
            None => return Err(WireError::NotSent("the server's stdout is closed".into())),
        };
        let answer = Answer { rx: answer_rx, n, wire: self.clone() };
        let sent = Sent { id: RequestId::String(token), answer, progress };
        self.write(&line).await.map_err(|err| WireError::NotSent(err.to_string()))?;
        Ok(sent)
    }

    /// Hands a line the reader took for direct request `n` to its caller.
    fn deliver(&self, n: u64, line: Direct) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let Some(waiting) = waiting.as_mut() else { return };
        match line {
            Direct::Answer(answer) => {
                if let Some(waiter) = waiting.remove(&n) {
                    let _ = waiter.answer.send(answer);
                }
            }
            Direct::Progress(progress) => {
                if let Some(waiter) = waiting.get(&n) {
                    let _ = waiter.progress.send(progress);
                }
            }
        }
    }
}

impl Answer {
    /// The answer to the request: its `result` as the server wrote it. Cancel-safe: polled again
    /// after being dropped unfinished, it still gets the answer.
    pub async fn get(&mut self) -> Result<Box<RawValue>, WireError> {
        (&mut self.rx).await.unwrap_or(Err(WireError::Closed))
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(waiting) = self.wire.waiting.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            waiting.remove(&self.n);
        }
    }
}

/// A line of a direct request's: its answer (read once, by the reader), or its progress.
enum Direct {
    Answer(Result<Box<RawValue>, WireError>),
    Progress(ProgressNotificationParam),
}

/// Whether `line` belongs to direct request N: a response with id `"hivehost-N"`, or a progress
/// notification under the token `"hivehost-N"`. Anything else is rmcp's.
fn direct(line: Vec<u8>) -> Result<(u64, Direct), Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct Peek {
        id: Option<Value>,
        method: Option<String>,
        params: Option<Value>,
        result: Option<Box<RawValue>>,
        // Read as an error only once the line is known to be an answer of ours.
        error: Option<Box<RawValue>>,
    }
    fn number(value: Option<&Value>) -> Option<u64> {
        value?.as_str()?.strip_prefix(PREFIX)?.parse().ok()
    }
    // Cheap before parsing: a direct line names the prefix.
    if memchr::memmem::find(&line, PREFIX.as_bytes()).is_none() {
        return Err(line);
    }
    let Ok(peek) = serde_json::from_slice::<Peek>(&line) else {
        return Err(line);
    };
    match peek.method.as_deref() {
        None => match number(peek.id.as_ref()) {
            Some(n) => {
                let answer = match (peek.error, peek.result) {
                    (Some(error), _) => Err(serde_json::from_str::<ErrorData>(error.get())
                        .map_or_else(|err| WireError::Garbled(err.to_string()), WireError::Server)),
                    (None, Some(result)) => Ok(result),
                    (None, None) => Err(WireError::Garbled("a response with neither result nor error".into())),
                };
                Ok((n, Direct::Answer(answer)))
            }
            None => Err(line),
        },
        Some("notifications/progress") => {
            let n = number(peek.params.as_ref().and_then(|p| p.get("progressToken")));
            match (n, peek.params.map(serde_json::from_value::<ProgressNotificationParam>)) {
                (Some(n), Some(Ok(progress))) => Ok((n, Direct::Progress(progress))),
                _ => Err(line),
            }
        }
        Some(_) => Err(line),
    }
}

/// Fails every waiting caller when the reader ends, however it ends: at the end of stdout, or
/// when its task is aborted with the incarnation (then stdout may never have closed).
struct Ended(Arc<Wire>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.waiting.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Reads the server's stdout line by line: direct answers to their callers, the rest to rmcp.
async fn read(ended: Ended, stdout: Pipe, lines: mpsc::UnboundedSender<Vec<u8>>) {
    let wire = &ended.0;
    let mut stdout = BufReader::new(stdout);
    loop {
        let mut line = Vec::new();
        match read_line(&mut stdout, &mut line).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) => {
                tracing::debug!(error = %err, "reading the server's stdout");
                break;
            }
        }
        if line.len() > MAX_LINE {
            tracing::warn!(bytes = line.len(), "dropped a line of more than {MAX_LINE} bytes from a server's stdout");
            continue;
        }
        match direct(line) {
            Ok((n, line)) => wire.deliver(n, line),
            Err(line) if line.iter().all(u8::is_ascii_whitespace) => {}
            Err(line) => {
                let _ = lines.send(line);
            }
        }
    }
}

/// One line into `line` (without limit beyond [`MAX_LINE`] + one buffer: the rest is skipped).
async fn read_line(stdout: &mut BufReader<Pipe>, line: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut read = 0;
    loop {
        let buf = stdout.fill_buf().await?;
        if buf.is_empty() {
            return Ok(read);
        }
        let (chunk, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let len = chunk.len();
        if line.len() <= MAX_LINE {
            line.extend_from_slice(chunk);
        }
        read += len;
        stdout.consume(len);
        if done {
            return Ok(read);
        }
    }
}

/// The rmcp client session's transport over the wire.
pub struct WireTransport {
    wire: Arc<Wire>,
    lines: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl rmcp::transport::Transport<RoleClient> for WireTransport {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let wire = self.wire.clone();
        async move {
            let mut line = serde_json::to_vec(&item).map_err(std::io::Error::other)?;
            line.push(b'\n');
            wire.write(&line).await
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        loop {
            let line = self.lines.recv().await?;
            match serde_json::from_slice(&line) {
                Ok(message) => return Some(message),
                Err(err) => tracing::debug!(error = %err, "a line from the server's stdout is not a JSON-RPC message"),
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        // The child sees its stdin close, as when rmcp owned it.
        if let Some(mut stdin) = self.wire.stdin.lock().await.take() {
            let _ = stdin.shutdown().await;
        }
        self.lines.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_and_progress_of_direct_requests_are_taken_off_to_their_callers() {
        let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"hivehost-7","progress":1}}"#;
        let cases: [(&str, Option<(u64, &str)>); 9] = [
            (r#"{"jsonrpc":"2.0","id":"hivehost-7","result":{}}"#, Some((7, "answer"))),
            (r#"{"jsonrpc":"2.0","id":"hivehost-8","error":{"code":-1,"message":"no"}}"#, Some((8, "answer"))),
            (progress, Some((7, "progress"))),
            // rmcp's own requests have numeric ids and tokens.
            (r#"{"jsonrpc":"2.0","id":7,"result":{}}"#, None),
            (r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":7,"progress":1}}"#, None),
            // A request of the server's own that happens to use such an id.
            (r#"{"jsonrpc":"2.0","id":"hivehost-7","method":"roots/list"}"#, None),
            (r#"{"jsonrpc":"2.0","id":"hivehost-x","result":{}}"#, None),
            // Progress without its number is not progress: rmcp judges it.
            (r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"hivehost-7"}}"#, None),
            ("not json hivehost-7", None),
        ];
        for (line, expected) in cases {
            let got = direct(line.as_bytes().to_vec()).ok().map(|(n, d)| match d {
                Direct::Answer(_) => (n, "answer"),
                Direct::Progress(_) => (n, "progress"),
            });
            assert_eq!(got, expected, "{line}");
        }
    }

    #[tokio::test]
    async fn a_direct_request_goes_out_with_the_wires_id_and_token_and_its_answer_comes_back_raw() {
        use rmcp::transport::Transport;
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let (hivehost_in, mut server_out) = tokio::io::duplex(1 << 16);
        let (server_in, hivehost_out) = tokio::io::duplex(1 << 16);
        let (wire, mut transport, reader) = Wire::open(Box::new(hivehost_out), Box::new(hivehost_in));
        wire.stamp(ProtocolVersion::V_2026_07_28);
        let mut params: Option<Map<String, Value>> = serde_json::from_value(serde_json::json!({
            "name": "echo", "arguments": { "text": "hi" }, "_meta": { "progressToken": "the client's" }
        }))
        .unwrap();
        let mut sent = wire.send("tools/call", &mut params).await.unwrap();

        // The server sees the wire's id and token, the stamp, and the client's arguments as they were.
        let mut lines = tokio::io::BufReader::new(server_in).lines();
        let request: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(request["id"], "hivehost-1", "{request}");
        assert_eq!(request["method"], "tools/call");
        assert_eq!(request["params"]["arguments"], serde_json::json!({ "text": "hi" }));
        assert_eq!(request["params"]["_meta"]["progressToken"], "hivehost-1", "{request}");
        assert_eq!(request["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"], "2026-07-28");
        assert_eq!(sent.id, RequestId::String("hivehost-1".into()));

        // A notification goes to rmcp's session; the request's progress and then its answer to the
        // caller, the answer untouched, and the progress already there when the answer is.
        server_out.write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n").await.unwrap();
        server_out
            .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":\"hivehost-1\",\"progress\":1,\"total\":1}}\n")
            .await
            .unwrap();
        server_out
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":\"hivehost-1\",\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}}\n")
            .await
            .unwrap();
        let result = sent.answer.get().await.unwrap();
        assert_eq!(result.get(), r#"{"content":[{"type":"text","text":"hi"}]}"#);
        let progress = sent.progress.try_recv().expect("the progress came before the answer");
        assert_eq!(progress.progress, 1.0);
        let notification = transport.receive().await.expect("the notification reached rmcp");
        assert!(matches!(notification, rmcp::model::JsonRpcMessage::Notification(_)), "{notification:?}");

        // An error answer is the server's error; a closed stdout fails whoever still waits.
        let mut sent = wire.send("tools/list", &mut None).await.unwrap();
        let _ = lines.next_line().await.unwrap().unwrap();
        server_out
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":\"hivehost-2\",\"error\":{\"code\":-32601,\"message\":\"no\"}}\n")
            .await
            .unwrap();
        assert!(matches!(sent.answer.get().await, Err(WireError::Server(e)) if e.message == "no"));
        let mut sent = wire.send("tools/list", &mut None).await.unwrap();
        drop(server_out);
        assert!(matches!(sent.answer.get().await, Err(WireError::Closed)));
        reader.await.unwrap();
    }

    #[tokio::test]
    async fn a_caller_waiting_when_the_reader_is_aborted_is_failed_not_left_waiting() {
        // The incarnation's end aborts the reader, maybe before stdout closes (a grandchild may
        // hold it): the caller must hear of it, and later requests are refused at once.
        let (hivehost_in, _server_out) = tokio::io::duplex(1 << 16);
        let (_server_in, hivehost_out) = tokio::io::duplex(1 << 16);
        let (wire, _transport, reader) = Wire::open(Box::new(hivehost_out), Box::new(hivehost_in));
        let mut sent = wire.send("tools/list", &mut None).await.unwrap();
        reader.abort();
        let _ = reader.await;
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), sent.answer.get()).await;
        assert!(matches!(answer, Ok(Err(WireError::Closed))), "{answer:?}");
        assert!(matches!(wire.send("tools/list", &mut None).await, Err(WireError::NotSent(_))));
    }

    #[tokio::test]
    async fn a_line_longer_than_the_limit_is_skipped_not_kept() {
        let mut input = vec![b'x'; MAX_LINE + 10];
        input.push(b'\n');
        input.extend_from_slice(b"{\"ok\":1}\n");
        let pipe: Pipe = Box::new(std::io::Cursor::new(input));
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        let read = read_line(&mut reader, &mut line).await.unwrap();
        assert_eq!(read, MAX_LINE + 11);
        assert!(line.len() > MAX_LINE && line.len() < MAX_LINE + 11 + 8192, "{}", line.len());
        let mut next = Vec::new();
        read_line(&mut reader, &mut next).await.unwrap();
        assert_eq!(next, b"{\"ok\":1}\n");
    }
}
