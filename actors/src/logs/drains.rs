//! The one thread every server's log drains run on, with a reactor of its own.
//!
//! Hundreds of quiet servers each printing a line now and then would otherwise wake the main
//! runtime's workers for every line, and a woken worker often wakes its sibling too. On a thread
//! of their own the drains cost one wake-up per burst of lines, as `cat` does, and the workers stay
//! asleep. A log pipe is registered with this thread's reactor when the child is spawned.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::OnceLock;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::process::Pipe;

/// The drain thread's runtime, started on first use; `None` if it could not be (the drains then
/// run on the caller's runtime).
fn handle() -> Option<&'static Handle> {
    static HANDLE: OnceLock<Option<Handle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
                Ok(runtime) => runtime,
                Err(err) => {
                    tracing::error!(error = %err, "cannot start the log drain thread; drains share the main runtime");
                    return None;
                }
            };
            let handle = runtime.handle().clone();
            let started = std::thread::Builder::new()
                .name("hivehost-drain".into())
                .spawn(move || runtime.block_on(std::future::pending::<()>()));
            match started {
                Ok(_) => Some(handle),
                Err(err) => {
                    tracing::error!(error = %err, "cannot start the log drain thread; drains share the main runtime");
                    None
                }
            }
        })
        .as_ref()
}

/// A log pipe from the read end `fd`, registered with the drain thread's reactor.
pub(crate) fn log_pipe(fd: OwnedFd) -> std::io::Result<Pipe> {
    let _entered = handle().map(Handle::enter);
    Ok(Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?))
}

/// Runs a drain on the drain thread.
pub(crate) fn spawn<F>(drain: F) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    match handle() {
        Some(handle) => handle.spawn(drain),
        None => tokio::spawn(drain),
    }
}
