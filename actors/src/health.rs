//! The health poller: an HTTP GET of the server's health URL every interval, reported to its server actor.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use crate::server::ServerMsg;
use crate::spec::HealthSpec;

/// While the server is not yet ready, probe this often (or at the interval, if shorter).
const STARTUP_PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// The actor that probes one incarnation's health URL.
pub(crate) struct HealthPoller;

pub(crate) struct HealthArgs {
    pub(crate) spec: HealthSpec,
    pub(crate) server: ActorRef<ServerMsg>,
}

pub(crate) enum HealthMsg {
    Tick,
    Done { ok: bool, detail: String },
}

pub(crate) struct HealthState {
    spec: HealthSpec,
    server: ActorRef<ServerMsg>,
    client: reqwest::Client,
    passed_once: bool,
    probe: Option<JoinHandle<()>>,
}

impl Actor for HealthPoller {
    type Msg = HealthMsg;
    type State = HealthState;
    type Arguments = HealthArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HealthMsg>,
        args: HealthArgs,
    ) -> Result<HealthState, ActorProcessingErr> {
        let client = reqwest::Client::builder()
            .timeout(args.spec.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        myself.cast(HealthMsg::Tick)?;
        Ok(HealthState { spec: args.spec, server: args.server, client, passed_once: false, probe: None })
    }

    async fn handle(
        &self,
        myself: ActorRef<HealthMsg>,
        msg: HealthMsg,
        state: &mut HealthState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HealthMsg::Tick => {
                // The probe runs beside the mailbox and reports back, so the actor stays responsive.
                let client = state.client.clone();
                let url = state.spec.url.clone();
                let me = myself.clone();
                state.probe = Some(tokio::spawn(async move {
                    let (ok, detail) = probe(&client, &url).await;
                    let _ = me.cast(HealthMsg::Done { ok, detail });
                }));
            }
            HealthMsg::Done { ok, detail } => {
                state.passed_once |= ok;
                let _ = state.server.cast(ServerMsg::Probe { ok, detail });
                let next = if state.passed_once {
                    state.spec.interval
                } else {
                    state.spec.interval.min(STARTUP_PROBE_INTERVAL)
                };
                myself.send_after(next, || HealthMsg::Tick);
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<HealthMsg>, state: &mut HealthState) -> Result<(), ActorProcessingErr> {
        if let Some(probe) = state.probe.take() {
            probe.abort();
        }
        Ok(())
    }
}

/// One GET; healthy on a 2xx status.
async fn probe(client: &reqwest::Client, url: &str) -> (bool, String) {
    match client.get(url).send().await {
        Ok(resp) if resp.status().is_success() => (true, format!("HTTP {}", resp.status().as_u16())),
        Ok(resp) => (false, format!("health check {url} answered HTTP {}", resp.status().as_u16())),
        Err(err) if err.is_timeout() => (false, format!("health check {url} timed out")),
        Err(err) if err.is_connect() => (false, format!("health check {url}: connection refused or unreachable")),
        Err(err) => (false, format!("health check {url} failed: {err}")),
    }
}
