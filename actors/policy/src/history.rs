//! The per-server restart state machine: phase, generation, failure streak and restart window.

use crate::window::RestartLog;
use crate::{Decision, ExitKind, GiveUpReason, Phase, RestartMode, RestartPolicy, StayReason};

/// The mutable restart state of one server; it outlives the server's incarnations.
///
/// The supervisor feeds it every lifecycle event and carries out the returned decisions. Each
/// incarnation has a generation number; events carrying any other generation are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    phase: Phase,
    generation: u64,
    streak: u32,
    log: RestartLog,
    /// When the current incarnation reported ready, if it did.
    ready_at_ms: Option<u64>,
    /// The highest `now_ms` seen so far; lower ones are clamped to it.
    last_seen_ms: u64,
    /// The generation of the incarnation an operator stopped, until its exit arrives.
    admin_stopped: Option<u64>,
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}

impl History {
    /// A server that has never run: phase [`Phase::Stopped`], generation 0.
    pub fn new() -> History {
        History {
            phase: Phase::Stopped,
            generation: 0,
            streak: 0,
            log: RestartLog::default(),
            ready_at_ms: None,
            last_seen_ms: 0,
            admin_stopped: None,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The generation of the current incarnation, or of the next one while backing off.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How many restarts the current failure streak has made.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// When the current incarnation reported ready, if it did.
    pub fn ready_at_ms(&self) -> Option<u64> {
        self.ready_at_ms
    }

    /// The highest time seen so far; earlier times are clamped to it.
    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms
    }

    /// How many restarts count against the budget at `now_ms`.
    pub fn restarts_in_window(&self, policy: &RestartPolicy, now_ms: u64) -> u32 {
        let now_ms = now_ms.max(self.last_seen_ms);
        self.log.count(now_ms, policy.restart_window_ms())
    }

    /// How many restart times are stored; never more than `max_restarts` after an exit.
    pub fn window_log_len(&self) -> usize {
        self.log.len()
    }

    /// An operator started the server.
    ///
    /// It leaves any phase, [`Phase::Failed`] included: the restart window and the streak are
    /// cleared, the generation is bumped (any pending restart timer becomes stale) and the phase
    /// becomes [`Phase::Starting`]. Returns the generation of the new incarnation. An
    /// incarnation still running from before is the caller's to stop; its events are stale.
    pub fn admin_start(&mut self, now_ms: u64) -> u64 {
        self.observe(now_ms);
        self.log.clear();
        self.streak = 0;
        self.ready_at_ms = None;
        self.generation = self.generation.saturating_add(1);
        self.phase = Phase::Starting;
        self.generation
    }

    /// An operator stopped the server.
    ///
    /// The generation is bumped, so a pending restart timer becomes stale, and the phase becomes
    /// [`Phase::Stopped`]. The exit of the stopped incarnation is answered with
    /// [`StayReason::AdminStop`]; nothing restarts until the next [`History::admin_start`].
    /// A failed server stays failed.
    pub fn admin_stop(&mut self, now_ms: u64) {
        self.observe(now_ms);
        if self.phase == Phase::Failed {
            return;
        }
        if matches!(self.phase, Phase::Starting | Phase::Running) {
            self.admin_stopped = Some(self.generation);
        }
        self.ready_at_ms = None;
        self.generation = self.generation.saturating_add(1);
        self.phase = Phase::Stopped;
    }

    /// The incarnation with `generation` became ready; uptime for `reset_after` counts from
    /// here. Ignored unless that incarnation is the current one and still starting.
    pub fn ready(&mut self, generation: u64, now_ms: u64) {
        let now_ms = self.observe(now_ms);
        if generation == self.generation && self.phase == Phase::Starting {
            self.phase = Phase::Running;
            self.ready_at_ms = Some(now_ms);
        }
    }

    /// The incarnation with `generation` ended with `kind` at `now_ms`; decides what happens
    /// next.
    ///
    /// In order: a failed server answers [`StayReason::AlreadyFailed`]; the exit of an
    /// incarnation an operator stopped answers [`StayReason::AdminStop`]; another generation
    /// than the current one answers [`StayReason::Stale`]; an exit while no incarnation runs
    /// answers [`StayReason::NotRunning`]. Otherwise the streak is reset if the incarnation had
    /// been ready for at least `reset_after_ms` (the window is left alone), the exit is
    /// classified by the mode, and a restart-worthy exit either gives up, when `max_restarts`
    /// restarts already count in the window, or is charged to the window and restarted after
    /// [`RestartPolicy::delay_ms`] of the streak so far. On a restart the phase becomes
    /// [`Phase::Backoff`] and the generation is bumped; the timer must present the returned
    /// generation.
    pub fn exited(
        &mut self,
        policy: &RestartPolicy,
        generation: u64,
        kind: ExitKind,
        now_ms: u64,
        jitter_sample: u32,
    ) -> Decision {
        let now_ms = self.observe(now_ms);
        if self.phase == Phase::Failed {
            return stay(StayReason::AlreadyFailed);
        }
        if self.admin_stopped == Some(generation) {
            self.admin_stopped = None;
            return stay(StayReason::AdminStop);
        }
        if generation != self.generation {
            return stay(StayReason::Stale);
        }
        if !matches!(self.phase, Phase::Starting | Phase::Running) {
            return stay(StayReason::NotRunning);
        }

        if let Some(ready_at_ms) = self.ready_at_ms.take()
            && now_ms.saturating_sub(ready_at_ms) >= policy.reset_after_ms()
        {
            self.streak = 0;
        }

        let not_restarted = match policy.mode() {
            RestartMode::Never => Some(StayReason::Never),
            RestartMode::OnFailure if kind.is_clean() => Some(StayReason::CleanExit),
            RestartMode::OnFailure | RestartMode::Always => None,
        };
        if let Some(reason) = not_restarted {
            self.phase = Phase::Stopped;
            return stay(reason);
        }

        let max_restarts = policy.max_restarts();
        let window_ms = policy.restart_window_ms();
        self.log.prune(now_ms, window_ms, max_restarts);
        if self.log.count(now_ms, window_ms) >= max_restarts {
            self.phase = Phase::Failed;
            return Decision::GiveUp { reason: GiveUpReason::BudgetExhausted { max_restarts, window_ms } };
        }

        self.log.record(now_ms);
        let delay_ms = policy.delay_ms(self.streak, jitter_sample);
        self.streak = self.streak.saturating_add(1);
        self.generation = self.generation.saturating_add(1);
        self.phase = Phase::Backoff;
        Decision::Restart { delay_ms, generation: self.generation, attempt: self.streak }
    }

    /// A restart timer fired with `generation`. Returns true when the supervisor must start
    /// the incarnation now (the phase becomes [`Phase::Starting`]); false when the timer is
    /// stale or no restart is pending, in which case nothing changes.
    pub fn timer_fired(&mut self, generation: u64) -> bool {
        if self.phase == Phase::Backoff && generation == self.generation {
            self.phase = Phase::Starting;
            true
        } else {
            false
        }
    }

    /// Clamps `now_ms` to the highest time seen so far and remembers it.
    fn observe(&mut self, now_ms: u64) -> u64 {
        self.last_seen_ms = self.last_seen_ms.max(now_ms);
        self.last_seen_ms
    }
}

/// A [`Decision::Stay`] with `reason`.
fn stay(reason: StayReason) -> Decision {
    Decision::Stay { reason }
}
