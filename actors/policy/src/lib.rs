//! The restart policy of hivehost: validated settings, backoff delays and the per-server decision state machine.
//!
//! This crate is pure. It performs no I/O, reads no clock, draws no random numbers and
//! never blocks. Time arrives as `now_ms`, a monotonic millisecond count chosen by the caller
//! (any origin works, only differences matter). Jitter arrives as an explicit `u32` sample
//! that the caller draws uniformly over the whole `u32` range. The supervising actor is a thin
//! shell that turns process and timer events into calls on [`History`] and carries out the
//! returned [`Decision`].
//!
//! # Semantics
//!
//! - **Budget.** A sliding window at millisecond resolution. A restart decided at time `t`
//!   counts at time `now` while `now - t < restart_window_ms`, that is inside the half-open
//!   interval `(now - restart_window_ms, now]`: a restart exactly `restart_window_ms` ago no
//!   longer counts. A restart-worthy exit that finds `max_restarts` restarts already in the
//!   window gives up, so no window ever holds more than `max_restarts` restarts, and
//!   `max_restarts = 0` gives up on the first restart-worthy exit. Every automatic restart is
//!   charged, including restarts after failed starts (OTP semantics). The log keeps at most
//!   `max_restarts` entries.
//! - **Classification.** [`RestartMode::Never`] restarts nothing. [`RestartMode::OnFailure`]
//!   restarts abnormal exits only; a clean exit ([`ExitKind::is_clean`], systemd's rule) stops.
//!   [`RestartMode::Always`] restarts clean exits too, and charges them. Health-check kills,
//!   memory-limit kills, start timeouts, spawn failures and actor crashes are always abnormal.
//! - **Backoff.** The restart with 0-based index `k` in a failure streak waits
//!   [`RestartPolicy::delay_ms`]: `restart_delay` for fixed backoff, or
//!   `min(max_restart_delay, restart_delay * multiplier^k)` for exponential backoff, then
//!   jittered downwards into `[base - floor(base * jitter), base]`, so the cap is never exceeded.
//! - **Streak reset.** The streak ends when an incarnation has been *ready* (see
//!   [`History::ready`]) for at least `reset_after_ms` before it exits; the reset is applied
//!   before the exit is decided. Time spent starting or backing off never resets the streak.
//!   An operator start ([`History::admin_start`]) resets it too.
//! - **Reset and budget are independent.** A streak reset does not clear the restart window:
//!   a server that runs for `reset_after_ms` and crashes again still pays for the restarts it
//!   made earlier in the window. Only an operator start clears the window.
//! - **Give-up is absorbing.** After [`Decision::GiveUp`] the phase is [`Phase::Failed`] and
//!   every event except [`History::admin_start`] is a no-op.
//! - **Generations.** Every incarnation has a generation number. Events that carry a
//!   generation other than the current one are stale and ignored, so a restart timer that
//!   fires after an operator stop or start does nothing.
//! - **Clock.** A `now_ms` lower than the highest value seen so far is clamped to that value.
//!   A clock that goes backwards therefore never panics and never grants extra restarts.
//! - **Validation.** [`RestartPolicy::new`] reports every problem at once, named by its field
//!   in `server_config.json`. It warns (without rejecting) when the limit can never trip: when
//!   the shortest possible delays of `max_restarts` consecutive restarts add up to at least
//!   `restart_window_ms`, a crash loop never exhausts the budget and restarts forever.
//! - **Arithmetic.** All arithmetic saturates; no input makes the crate panic.

mod backoff;
mod history;
mod window;

#[cfg(test)]
mod tests;

use std::fmt;

pub use history::History;

/// Which exits are restarted (systemd's `Restart=`, OTP's restart types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RestartMode {
    /// Nothing is restarted (OTP `temporary`, the seed's `auto_restart = false`).
    Never,
    /// Only abnormal exits are restarted (OTP `transient`).
    OnFailure,
    /// Every exit is restarted, clean ones included (OTP `permanent`).
    Always,
}

/// How the delay grows within a failure streak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backoff {
    /// Every restart waits `restart_delay_ms`.
    Fixed,
    /// The delay is multiplied by `backoff_multiplier` with each restart of a streak, up to
    /// `max_restart_delay_ms`.
    Exponential,
}

/// Plain, unvalidated restart settings, as read from a server's configuration.
///
/// [`RestartPolicy::new`] checks them. The default keeps the seed's semantics: restart on
/// failure, at most 5 restarts per 60 s, a fixed 5 s delay.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    /// Which exits are restarted.
    pub mode: RestartMode,
    /// How many automatic restarts are allowed inside one `restart_window_ms`.
    pub max_restarts: u32,
    /// The length of the sliding window for `max_restarts`, in milliseconds.
    pub restart_window_ms: u64,
    /// The delay before the first restart of a streak, in milliseconds.
    pub restart_delay_ms: u64,
    /// How the delay grows within a streak.
    pub backoff: Backoff,
    /// The growth factor of exponential backoff; ignored for fixed backoff.
    pub backoff_multiplier: f64,
    /// The hard cap on every delay, in milliseconds.
    pub max_restart_delay_ms: u64,
    /// The fraction (0 to 1) by which a delay may be shortened at random.
    pub jitter: f64,
    /// How long an incarnation must stay ready for its exit to start a new streak, in
    /// milliseconds.
    pub reset_after_ms: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            mode: RestartMode::OnFailure,
            max_restarts: 5,
            restart_window_ms: 60_000,
            restart_delay_ms: 5_000,
            backoff: Backoff::Fixed,
            backoff_multiplier: 2.0,
            max_restart_delay_ms: 60_000,
            jitter: 0.0,
            reset_after_ms: 60_000,
        }
    }
}

impl PolicyConfig {
    /// The settings for a configuration that only has the seed's three fields.
    ///
    /// `auto_restart = false` means [`RestartMode::Never`]. The delay is fixed, the other fields
    /// keep their defaults, and the cap is raised to `restart_delay_ms` when the seed's delay is
    /// longer than the default cap, so that every seed configuration stays valid.
    pub fn from_seed(auto_restart: bool, max_restarts: u32, restart_delay_ms: u64) -> PolicyConfig {
        let defaults = PolicyConfig::default();
        PolicyConfig {
            mode: if auto_restart { RestartMode::OnFailure } else { RestartMode::Never },
            max_restarts,
            restart_delay_ms,
            backoff: Backoff::Fixed,
            max_restart_delay_ms: defaults.max_restart_delay_ms.max(restart_delay_ms),
            ..defaults
        }
    }
}

/// One problem found in a [`PolicyConfig`], named by its field in `server_config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field's name in `server_config.json`, such as `"restart_window"`.
    pub field: &'static str,
    /// What is wrong and how to fix it, lowercase, without a trailing period.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A note about a valid but doubtful configuration. It does not stop the policy from working.
pub type Warning = Problem;

/// Every problem that makes a [`PolicyConfig`] unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", joined(.problems))]
pub struct InvalidPolicy {
    /// All problems found, in field order; never empty.
    pub problems: Vec<Problem>,
}

/// Joins problems with `"; "` for display.
fn joined(problems: &[Problem]) -> String {
    problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("; ")
}

/// A validated restart policy.
///
/// Its invariants: `restart_window_ms > 0` whenever `max_restarts > 0`;
/// `max_restart_delay_ms >= restart_delay_ms`; for exponential backoff a finite
/// `backoff_multiplier >= 1.0`; a finite `jitter` in `0.0..=1.0`; `reset_after_ms > 0`.
#[derive(Clone, Debug, PartialEq)]
pub struct RestartPolicy {
    config: PolicyConfig,
}

impl RestartPolicy {
    /// Checks `config` and returns the policy with its warnings, or every problem found.
    pub fn new(config: PolicyConfig) -> Result<(RestartPolicy, Vec<Warning>), InvalidPolicy> {
        let problems = problems(&config);
        if !problems.is_empty() {
            return Err(InvalidPolicy { problems });
        }
        let policy = RestartPolicy { config };
        let warnings = policy.warnings();
        Ok((policy, warnings))
    }

    /// The validated settings.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Which exits are restarted.
    pub fn mode(&self) -> RestartMode {
        self.config.mode
    }

    /// How many restarts one window allows.
    pub fn max_restarts(&self) -> u32 {
        self.config.max_restarts
    }

    /// The length of the sliding window, in milliseconds.
    pub fn restart_window_ms(&self) -> u64 {
        self.config.restart_window_ms
    }

    /// The ready uptime that ends a failure streak, in milliseconds.
    pub fn reset_after_ms(&self) -> u64 {
        self.config.reset_after_ms
    }

    /// The delay before the restart with 0-based index `streak` in a failure streak, without
    /// jitter.
    ///
    /// Fixed backoff: `restart_delay_ms`. Exponential backoff:
    /// `min(max_restart_delay_ms, restart_delay_ms * backoff_multiplier^streak)`, rounded down.
    /// Integral multipliers are computed exactly in integers; other multipliers in `f64`. The
    /// result never overflows and never decreases as `streak` grows.
    pub fn base_delay_ms(&self, streak: u32) -> u64 {
        let c = &self.config;
        match c.backoff {
            Backoff::Fixed => c.restart_delay_ms,
            Backoff::Exponential => {
                backoff::exponential(c.restart_delay_ms, c.backoff_multiplier, c.max_restart_delay_ms, streak)
            }
        }
    }

    /// The delay before the restart with 0-based index `streak`, with jitter applied.
    ///
    /// With `base = base_delay_ms(streak)` and `span = floor(base * jitter)`, the delay is
    /// `base - floor(span * jitter_sample / 2^32)`. It lies in `[base - span, base]`, so it
    /// never exceeds the cap: a sample of 0 gives `base`, `u32::MAX` gives (almost)
    /// `base * (1 - jitter)`, and a jitter of 0 ignores the sample.
    pub fn delay_ms(&self, streak: u32, jitter_sample: u32) -> u64 {
        backoff::jittered(self.base_delay_ms(streak), self.config.jitter, jitter_sample)
    }

    /// The shortest delay the restart with index `streak` can get, whatever the sample.
    pub fn min_delay_ms(&self, streak: u32) -> u64 {
        self.delay_ms(streak, u32::MAX)
    }

    /// The warnings of a valid configuration.
    fn warnings(&self) -> Vec<Warning> {
        let c = &self.config;
        let mut warnings = Vec::new();
        if c.backoff == Backoff::Exponential && c.mode != RestartMode::Never {
            if c.restart_delay_ms == 0 {
                warnings.push(Problem {
                    field: "restart_delay",
                    message: "exponential backoff from 0 ms stays at 0 ms, so restarts never slow \
                              down; set restart_delay above 0 or use fixed backoff"
                        .to_owned(),
                });
            } else if c.backoff_multiplier == 1.0 {
                warnings.push(Problem {
                    field: "backoff_multiplier",
                    message: "a multiplier of 1.0 keeps every delay at restart_delay; raise it \
                              above 1.0 or use fixed backoff"
                        .to_owned(),
                });
            }
        }
        if c.mode != RestartMode::Never && c.max_restarts > 0 {
            let span = backoff::min_crash_loop_span_ms(self, c.max_restarts, c.restart_window_ms);
            if span >= c.restart_window_ms {
                warnings.push(Problem {
                    field: "restart_window",
                    message: format!(
                        "the restart limit can never trip: {} restarts in a crash loop take at \
                         least {span} ms of delays, which does not fit in a restart_window of {} \
                         ms, so a crash loop restarts forever; raise restart_window above {span} \
                         ms, or lower max_restarts, restart_delay or backoff_multiplier",
                        c.max_restarts, c.restart_window_ms
                    ),
                });
            }
        }
        warnings
    }
}

/// Collects every problem of `c`, in field order.
fn problems(c: &PolicyConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    if c.max_restarts > 0 && c.restart_window_ms == 0 {
        problems.push(Problem {
            field: "restart_window",
            message: "must be above 0 when max_restarts is above 0".to_owned(),
        });
    }
    let m = c.backoff_multiplier;
    if c.backoff == Backoff::Exponential && !(m.is_finite() && m >= 1.0) {
        problems.push(Problem {
            field: "backoff_multiplier",
            message: format!("must be a finite number of at least 1.0, got {m}"),
        });
    }
    if c.max_restart_delay_ms < c.restart_delay_ms {
        problems.push(Problem {
            field: "max_restart_delay",
            message: format!(
                "must be at least restart_delay ({} ms), got {} ms",
                c.restart_delay_ms, c.max_restart_delay_ms
            ),
        });
    }
    if !(0.0..=1.0).contains(&c.jitter) {
        problems.push(Problem { field: "jitter", message: format!("must be between 0.0 and 1.0, got {}", c.jitter) });
    }
    if c.reset_after_ms == 0 {
        problems.push(Problem { field: "reset_after", message: "must be above 0".to_owned() });
    }
    problems
}

/// How an incarnation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitKind {
    /// It exited with this status.
    Code(i32),
    /// It was killed by this signal number.
    Signal(i32),
    /// hivehost killed it because its health checks failed.
    HealthCheck,
    /// hivehost killed it because it exceeded its memory limit.
    MemoryLimit,
    /// It did not become ready within `start_timeout`.
    StartTimeout,
    /// It could not be started at all (exec failed, for example).
    SpawnFailed,
    /// The actor supervising it failed.
    Crashed,
}

impl ExitKind {
    /// Whether the exit is clean, by systemd's rule: status 0, or one of the signals SIGHUP (1),
    /// SIGINT (2), SIGPIPE (13) and SIGTERM (15). Everything else is abnormal.
    pub fn is_clean(&self) -> bool {
        matches!(self, ExitKind::Code(0) | ExitKind::Signal(1 | 2 | 13 | 15))
    }
}

/// What the supervisor must do after an exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Schedule a start after `delay_ms`; the timer must present `generation` to
    /// [`History::timer_fired`].
    Restart {
        /// How long to wait, in milliseconds.
        delay_ms: u64,
        /// The generation of the incarnation to start.
        generation: u64,
        /// The 1-based index of this restart in the current failure streak.
        attempt: u32,
    },
    /// Gave up: the server is failed until an operator starts it.
    GiveUp {
        /// Why.
        reason: GiveUpReason,
    },
    /// The server is not restarted, and has not failed.
    Stay {
        /// Why.
        reason: StayReason,
    },
}

/// Why the policy gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GiveUpReason {
    /// A restart-worthy exit found `max_restarts` restarts already inside the window.
    BudgetExhausted {
        /// The configured budget.
        max_restarts: u32,
        /// The configured window, in milliseconds.
        window_ms: u64,
    },
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GiveUpReason::BudgetExhausted { max_restarts, window_ms } => {
                write!(f, "restart budget exhausted: {max_restarts} restarts within {window_ms} ms")
            }
        }
    }
}

/// Why an exit was not followed by a restart, without giving up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StayReason {
    /// The incarnation was stopped by an operator.
    AdminStop,
    /// The mode is [`RestartMode::Never`].
    Never,
    /// The exit was clean and the mode is [`RestartMode::OnFailure`].
    CleanExit,
    /// The policy has already given up; only an operator start leaves that state.
    AlreadyFailed,
    /// The event belongs to an older incarnation.
    Stale,
    /// No incarnation with this generation is running: it already exited, or has not started.
    NotRunning,
}

impl fmt::Display for StayReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StayReason::AdminStop => "stopped by an operator",
            StayReason::Never => "restart mode is never",
            StayReason::CleanExit => "clean exit under on-failure",
            StayReason::AlreadyFailed => "already failed",
            StayReason::Stale => "stale generation",
            StayReason::NotRunning => "no incarnation of this generation is running",
        })
    }
}

/// The policy's view of a server's lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Not running and not scheduled: initial, after an operator stop, or after an exit that
    /// was not restarted.
    Stopped,
    /// An incarnation is starting and has not reported ready yet.
    Starting,
    /// The incarnation is ready.
    Running,
    /// A restart is scheduled.
    Backoff,
    /// The policy gave up; only an operator start leaves this phase.
    Failed,
}
