//! The metrics sampler: CPU, memory and process count of an incarnation's whole tree, every interval.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use crate::process::TreeControl;
use crate::server::ServerMsg;

/// One measurement of a server's process tree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricsSample {
    pub at: SystemTime,
    pub generation: u64,
    /// Percent of one core, summed over the tree.
    pub cpu_percent: f32,
    /// Resident memory of the tree; with a memory cgroup, what it charges against its limit
    /// (resident plus page cache).
    pub rss_bytes: u64,
    pub processes: u32,
}

/// The bounded history of one server's samples; it outlives incarnations.
pub(crate) struct MetricsRing {
    samples: Mutex<VecDeque<MetricsSample>>,
    capacity: usize,
}

impl MetricsRing {
    pub(crate) fn new(capacity: usize) -> MetricsRing {
        MetricsRing { samples: Mutex::new(VecDeque::new()), capacity: capacity.max(1) }
    }

    pub(crate) fn push(&self, sample: MetricsSample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() >= self.capacity {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    pub(crate) fn latest(&self) -> Option<MetricsSample> {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).back().copied()
    }

    pub(crate) fn all(&self) -> Vec<MetricsSample> {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect()
    }

    /// The samples taken after `after`, oldest first; only those are copied.
    pub(crate) fn since(&self, after: SystemTime) -> Vec<MetricsSample> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let newer = samples.iter().rev().take_while(|s| s.at > after).count();
        samples.iter().skip(samples.len() - newer).copied().collect()
    }
}

/// The actor that samples one incarnation's tree.
pub(crate) struct MetricsSampler;

pub(crate) struct MetricsArgs {
    pub(crate) generation: u64,
    pub(crate) interval: Duration,
    pub(crate) control: Arc<dyn TreeControl>,
    pub(crate) ring: Arc<MetricsRing>,
    pub(crate) server: ActorRef<ServerMsg>,
}

/// The time until the next multiple of `interval` since a process-wide epoch.
///
/// Every sampler with the same interval ticks at the same instants: 500 samplers then cost one
/// burst of work and one look at the process table per interval, instead of a timer wake-up
/// every 10 ms.
fn until_next_tick(interval: Duration) -> Duration {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    let period = interval.as_nanos().max(1);
    let into = epoch.elapsed().as_nanos() % period;
    let wait = u64::try_from(period - into).unwrap_or(u64::MAX);
    Duration::from_nanos(wait)
}

pub(crate) enum MetricsMsg {
    Tick,
}

pub(crate) struct MetricsState {
    args: MetricsArgs,
    sampling: Option<JoinHandle<()>>,
}

impl Actor for MetricsSampler {
    type Msg = MetricsMsg;
    type State = MetricsState;
    type Arguments = MetricsArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MetricsMsg>,
        args: MetricsArgs,
    ) -> Result<MetricsState, ActorProcessingErr> {
        myself.send_after(until_next_tick(args.interval), || MetricsMsg::Tick);
        Ok(MetricsState { args, sampling: None })
    }

    async fn handle(
        &self,
        myself: ActorRef<MetricsMsg>,
        _msg: MetricsMsg,
        state: &mut MetricsState,
    ) -> Result<(), ActorProcessingErr> {
        let busy = state.sampling.as_ref().is_some_and(|task| !task.is_finished());
        if !busy {
            let control = state.args.control.clone();
            let ring = state.args.ring.clone();
            let server = state.args.server.clone();
            let generation = state.args.generation;
            // A snapshot up to one interval old will do: 500 samplers then share about one look at
            // the process table per interval (sysinfo's CPU figure is an average since the last look).
            let max_age = state.args.interval;
            state.sampling = Some(tokio::spawn(async move {
                let Some(usage) = control.usage(max_age).await else {
                    return;
                };
                let sample = MetricsSample {
                    at: SystemTime::now(),
                    generation,
                    cpu_percent: usage.cpu_percent,
                    rss_bytes: usage.rss_bytes,
                    processes: usage.processes,
                };
                ring.push(sample);
                let _ = server.cast(ServerMsg::Sampled(sample));
            }));
        }
        myself.send_after(until_next_tick(state.args.interval), || MetricsMsg::Tick);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MetricsMsg>,
        state: &mut MetricsState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(task) = state.sampling.take() {
            task.abort();
        }
        Ok(())
    }
}
