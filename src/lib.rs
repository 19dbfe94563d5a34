//! hivehost: hosts MCP servers the way OTP hosts processes.
//!
//! This crate is the composition root: it reads files, installs logging, handles signals, turns
//! `config` types into `actors` specs, and wires the frontends to the supervision tree. The entry
//! point [`run`] takes its listener and shutdown signal as arguments, so tests start a real platform
//! on port 0.

pub mod app;
pub mod cli;
pub mod client;
pub mod insights;
pub mod lock;
pub mod mcp;
pub mod package;
pub mod runtimes;
pub mod servers;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod token;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

pub use app::App;

/// How a `run` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Shut down on request; every hosted process is gone.
    Shutdown,
    /// The supervision tree gave up; the caller should exit non-zero so an outer supervisor takes over.
    Meltdown(String),
}

/// Runs the platform until `shutdown` resolves or the supervision tree gives up.
///
/// `listener` serves the HTTP side when given (the API, and MCP at `/mcp`); with `stdio`, the
/// hosting tools are also served over this process's stdin and stdout, and the platform stops
/// when the client closes stdin. On return every hosted process has been stopped.
pub async fn run(
    config: config::HostConfig,
    listener: Option<TcpListener>,
    stdio: bool,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<Ended> {
    let token = crate::token::load_or_create(&config.auth)?;
    let max_body_bytes =
        usize::try_from(config.max_upload_size_bytes()).unwrap_or(usize::MAX).saturating_add(64 * 1024);
    let app = Arc::new(App::start(config).await.context("starting the platform")?);
    app.load_servers().await;
    app.start_background();
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let counters = mcp::Counters::new();
    let cancel = tokio_util::sync::CancellationToken::new();
    let http = match listener {
        Some(listener) => {
            let token = dashboard::Token::new(&token);
            let http = dashboard::HttpConfig { token: token.clone(), max_body_bytes };
            let mcp = mcp::router(app.clone(), counters.clone(), cancel.child_token(), token);
            let router = dashboard::router(app.clone() as Arc<dyn dashboard::Backend>, http).merge(mcp);
            let mut stopped = http_stopped.clone();
            // Without TCP_NODELAY a reused connection waits ~40 ms per MCP call (Nagle and delayed ACKs).
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                if let Err(err) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %err, "could not set TCP_NODELAY");
                }
            });
            Some(tokio::spawn(async move {
                let graceful = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                if let Err(err) = axum::serve(listener, router).with_graceful_shutdown(graceful).await {
                    tracing::error!(error = %err, "the HTTP server failed");
                }
            }))
        }
        None => None,
    };
    let stdio_closed = async {
        if stdio {
            mcp::serve_stdio(app.clone(), counters.clone()).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let ended = tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down: stopping every server");
            app.shutdown().await;
            Ended::Shutdown
        }
        () = stdio_closed => {
            tracing::info!("the MCP client closed stdin: stopping every server");
            app.shutdown().await;
            Ended::Shutdown
        }
        exit = app.supervisor().wait() => match exit {
            actors::SupervisorExit::Shutdown => Ended::Shutdown,
            actors::SupervisorExit::Meltdown(why) => Ended::Meltdown(why),
        },
    };
    cancel.cancel();
    let _ = stop_http.send(true);
    if let Some(http) = http {
        let _ = http.await;
    }
    Ok(ended)
}
