//! Property tests of the restart policy, black-box through the public API, against a naive reference model.
//!
//! The reference model keeps the full list of restart times since the last operator start and
//! recomputes the delay formula from the configuration, with exact integers where the
//! multiplier allows. Event sequences carry non-decreasing timestamps built from a mix of gaps:
//! bursts at 0 ms, gaps of `restart_window` and `reset_after` give or take 1 ms, and huge gaps;
//! the clock test adds steps backwards.

use policy::{
    Backoff, Decision, ExitKind, GiveUpReason, History, Phase, PolicyConfig, RestartMode, RestartPolicy, StayReason,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// The runner settings: `cases` cases, failures saved under `proptest-regressions/`.
fn settings(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/properties.txt"
        )))),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The reference model.
// ---------------------------------------------------------------------------------------------

/// `min(cap, initial * multiplier^streak)` by the documented formula: exact integers for an
/// integral multiplier, `f64` otherwise.
fn reference_base_delay(c: &PolicyConfig, streak: u32) -> u64 {
    let (initial, m, cap) = (c.restart_delay_ms, c.backoff_multiplier, c.max_restart_delay_ms);
    if c.backoff == Backoff::Fixed {
        return initial;
    }
    let initial = initial.min(cap);
    if initial == 0 || initial == cap || m == 1.0 || streak == 0 {
        return initial;
    }
    if m.fract() == 0.0 && m < 18_446_744_073_709_551_616.0 {
        let m = m as u128;
        let mut delay = u128::from(initial);
        for _ in 0..streak {
            delay *= m;
            if delay >= u128::from(cap) {
                return cap;
            }
        }
        return delay as u64;
    }
    let x = initial as f64 * m.powf(f64::from(streak));
    if x >= cap as f64 { cap } else { (x as u64).max(initial).min(cap) }
}

/// The documented down-jitter, for jitter values whose product with the delays is exact in
/// `f64` (the sequence tests use 0, 1/4, 1/2 and 1).
fn reference_delay(c: &PolicyConfig, streak: u32, sample: u32) -> u64 {
    let base = reference_base_delay(c, streak);
    let span = (base as f64 * c.jitter).floor() as u64;
    base - ((u128::from(span) * u128::from(sample)) >> 32) as u64
}

/// The naive model of a server's restart history.
#[derive(Clone, Debug)]
struct Model {
    phase: Phase,
    generation: u64,
    streak: u32,
    /// Every restart decided since the last operator start, never pruned.
    restarts: Vec<u64>,
    ready_at: Option<u64>,
    clock: u64,
    admin_stopped: Option<u64>,
}

impl Model {
    fn new() -> Model {
        Model {
            phase: Phase::Stopped,
            generation: 0,
            streak: 0,
            restarts: Vec::new(),
            ready_at: None,
            clock: 0,
            admin_stopped: None,
        }
    }

    fn tick(&mut self, now: u64) -> u64 {
        self.clock = self.clock.max(now);
        self.clock
    }

    fn in_window(&self, c: &PolicyConfig, now: u64) -> usize {
        let now = now.max(self.clock);
        self.restarts.iter().filter(|&&t| now - t < c.restart_window_ms).count()
    }

    fn apply(&mut self, c: &PolicyConfig, now: u64, act: &Act) -> Outcome {
        match *act {
            Act::AdminStart => {
                self.tick(now);
                self.restarts.clear();
                self.streak = 0;
                self.ready_at = None;
                self.generation += 1;
                self.phase = Phase::Starting;
                Outcome::Started(self.generation)
            }
            Act::AdminStop => {
                self.tick(now);
                if self.phase != Phase::Failed {
                    if matches!(self.phase, Phase::Starting | Phase::Running) {
                        self.admin_stopped = Some(self.generation);
                    }
                    self.ready_at = None;
                    self.generation += 1;
                    self.phase = Phase::Stopped;
                }
                Outcome::Done
            }
            Act::Ready(generation) => {
                let now = self.tick(now);
                if generation == self.generation && self.phase == Phase::Starting {
                    self.phase = Phase::Running;
                    self.ready_at = Some(now);
                }
                Outcome::Done
            }
            Act::Timer(generation) => {
                let fire = self.phase == Phase::Backoff && generation == self.generation;
                if fire {
                    self.phase = Phase::Starting;
                }
                Outcome::Fired(fire)
            }
            Act::Exit(kind, generation, sample) => Outcome::Decided(self.exited(c, generation, kind, now, sample)),
        }
    }

    fn exited(&mut self, c: &PolicyConfig, generation: u64, kind: ExitKind, now: u64, sample: u32) -> Decision {
        let now = self.tick(now);
        let stay = |reason| Decision::Stay { reason };
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
        if let Some(ready_at) = self.ready_at.take()
            && now - ready_at >= c.reset_after_ms
        {
            self.streak = 0;
        }
        let clean = kind.is_clean();
        let reason = match c.mode {
            RestartMode::Never => Some(StayReason::Never),
            RestartMode::OnFailure if clean => Some(StayReason::CleanExit),
            _ => None,
        };
        if let Some(reason) = reason {
            self.phase = Phase::Stopped;
            return stay(reason);
        }
        if self.in_window(c, now) >= c.max_restarts as usize {
            self.phase = Phase::Failed;
            return Decision::GiveUp {
                reason: GiveUpReason::BudgetExhausted { max_restarts: c.max_restarts, window_ms: c.restart_window_ms },
            };
        }
        self.restarts.push(now);
        let delay_ms = reference_delay(c, self.streak, sample);
        self.streak += 1;
        self.generation += 1;
        self.phase = Phase::Backoff;
        Decision::Restart { delay_ms, generation: self.generation, attempt: self.streak }
    }
}

// ---------------------------------------------------------------------------------------------
// Event sequences and the driver.
// ---------------------------------------------------------------------------------------------

/// The time between two events.
#[derive(Clone, Copy, Debug)]
enum Gap {
    Zero,
    Small(u64),
    /// `restart_window` plus -1, 0 or 1 ms.
    NearWindow(i8),
    /// `reset_after` plus -1, 0 or 1 ms.
    NearReset(i8),
    Huge(u64),
    /// Backwards by this much (clock test only).
    Back(u64),
}

/// Which generation an event carries, relative to the current one.
#[derive(Clone, Copy, Debug)]
enum Which {
    Current,
    Older(u8),
    Newer(u8),
}

/// An event before its generation is resolved.
#[derive(Clone, Copy, Debug)]
enum Event {
    Exit(ExitKind, Which, u32),
    Ready(Which),
    Timer(Which),
    AdminStart,
    AdminStop,
}

/// An event with its concrete generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Exit(ExitKind, u64, u32),
    Ready(u64),
    Timer(u64),
    AdminStart,
    AdminStop,
}

/// What an event returned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Decided(Decision),
    Fired(bool),
    Started(u64),
    Done,
}

/// The visible state of a history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Snapshot {
    phase: Phase,
    generation: u64,
    streak: u32,
}

fn snapshot(h: &History) -> Snapshot {
    Snapshot { phase: h.phase(), generation: h.generation(), streak: h.streak() }
}

/// One applied event.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    now: u64,
    act: Act,
    outcome: Outcome,
    before: Snapshot,
    after: Snapshot,
    in_window: u32,
    log_len: usize,
}

/// Adds `gap` to `t`, saturating.
fn advance(t: u64, gap: Gap, c: &PolicyConfig) -> u64 {
    let near = |base: u64, delta: i8| {
        if delta < 0 { base.saturating_sub(1) } else { base.saturating_add(delta as u64) }
    };
    match gap {
        Gap::Zero => t,
        Gap::Small(ms) | Gap::Huge(ms) => t.saturating_add(ms),
        Gap::NearWindow(delta) => t.saturating_add(near(c.restart_window_ms, delta)),
        Gap::NearReset(delta) => t.saturating_add(near(c.reset_after_ms, delta)),
        Gap::Back(ms) => t.saturating_sub(ms),
    }
}

/// The timestamps of `steps`, starting after `start`.
fn timeline(start: u64, steps: &[(Gap, Event)], c: &PolicyConfig) -> Vec<u64> {
    let mut t = start;
    steps
        .iter()
        .map(|&(gap, _)| {
            t = advance(t, gap, c);
            t
        })
        .collect()
}

fn resolve(which: Which, current: u64) -> u64 {
    match which {
        Which::Current => current,
        Which::Older(n) => current.saturating_sub(u64::from(n) + 1),
        Which::Newer(n) => current.saturating_add(u64::from(n) + 1),
    }
}

/// Applies one resolved act to a history.
fn apply(h: &mut History, p: &RestartPolicy, now: u64, act: Act) -> Outcome {
    match act {
        Act::Exit(kind, generation, sample) => Outcome::Decided(h.exited(p, generation, kind, now, sample)),
        Act::Ready(generation) => {
            h.ready(generation, now);
            Outcome::Done
        }
        Act::Timer(generation) => Outcome::Fired(h.timer_fired(generation)),
        Act::AdminStart => Outcome::Started(h.admin_start(now)),
        Act::AdminStop => {
            h.admin_stop(now);
            Outcome::Done
        }
    }
}

/// Starts a server at `start`, then applies `events` at `times`; returns the records and the
/// final history.
fn run(p: &RestartPolicy, start: u64, times: &[u64], events: &[Event]) -> (Vec<Record>, History) {
    let mut h = History::new();
    let mut records = Vec::with_capacity(events.len() + 1);
    let mut push = |h: &mut History, now: u64, act: Act| {
        let before = snapshot(h);
        let outcome = apply(h, p, now, act);
        records.push(Record {
            now,
            act,
            outcome,
            before,
            after: snapshot(h),
            in_window: h.restarts_in_window(p, now),
            log_len: h.window_log_len(),
        });
    };
    push(&mut h, start, Act::AdminStart);
    for (&now, &event) in times.iter().zip(events) {
        let current = h.generation();
        let act = match event {
            Event::Exit(kind, which, sample) => Act::Exit(kind, resolve(which, current), sample),
            Event::Ready(which) => Act::Ready(resolve(which, current)),
            Event::Timer(which) => Act::Timer(resolve(which, current)),
            Event::AdminStart => Act::AdminStart,
            Event::AdminStop => Act::AdminStop,
        };
        push(&mut h, now, act);
    }
    (records, h)
}

/// Runs the library on a generated scenario.
fn run_scenario(s: &Scenario) -> Result<(RestartPolicy, Vec<Record>, History), TestCaseError> {
    let p = accept(&s.config)?;
    let events: Vec<Event> = s.steps.iter().map(|&(_, e)| e).collect();
    let times = timeline(s.start, &s.steps, &s.config);
    let (records, h) = run(&p, s.start, &times, &events);
    Ok((p, records, h))
}

fn accept(c: &PolicyConfig) -> Result<RestartPolicy, TestCaseError> {
    RestartPolicy::new(c.clone())
        .map(|(p, _)| p)
        .map_err(|e| TestCaseError::fail(format!("generated config rejected: {e}")))
}

/// The restart times, grouped by the operator starts that clear the window.
fn restart_epochs(records: &[Record]) -> Vec<Vec<u64>> {
    let mut epochs = Vec::new();
    let mut clock = 0;
    for r in records {
        // The policy's own clock: every act but a timer (which carries no time) moves it.
        if !matches!(r.act, Act::Timer(_)) {
            clock = clock.max(r.now);
        }
        match (&r.act, &r.outcome) {
            (Act::AdminStart, _) => epochs.push(Vec::new()),
            (_, Outcome::Decided(Decision::Restart { .. })) => {
                if let Some(epoch) = epochs.last_mut() {
                    epoch.push(clock);
                }
            }
            _ => {}
        }
    }
    epochs
}

/// Asserts that no half-open window `(t - window, t]` holds more than `max` restarts.
fn assert_window_bound(records: &[Record], c: &PolicyConfig) -> Result<(), TestCaseError> {
    for epoch in restart_epochs(records) {
        for (i, &t) in epoch.iter().enumerate() {
            let inside = epoch[..=i].iter().filter(|&&s| t - s < c.restart_window_ms).count();
            prop_assert!(inside <= c.max_restarts as usize, "{inside} restarts in the window ending at {t}: {epoch:?}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------------------------

/// A generated run: a valid config, a start time and timed events.
#[derive(Clone, Debug)]
struct Scenario {
    config: PolicyConfig,
    start: u64,
    steps: Vec<(Gap, Event)>,
}

/// A config from its fields, in declaration order.
#[allow(clippy::type_complexity, reason = "the tuple is exactly what the strategies generate")]
fn policy_config(
    (mode, max_restarts, window, delay, backoff, multiplier, cap, jitter, reset): (
        RestartMode,
        u32,
        u64,
        u64,
        Backoff,
        f64,
        u64,
        f64,
        u64,
    ),
) -> PolicyConfig {
    PolicyConfig {
        mode,
        max_restarts,
        restart_window_ms: window,
        restart_delay_ms: delay,
        backoff,
        backoff_multiplier: multiplier,
        max_restart_delay_ms: cap,
        jitter,
        reset_after_ms: reset,
    }
}

fn mode() -> impl Strategy<Value = RestartMode> {
    prop_oneof![
        1 => Just(RestartMode::Never),
        3 => Just(RestartMode::OnFailure),
        2 => Just(RestartMode::Always),
    ]
}

fn backoff() -> impl Strategy<Value = Backoff> {
    prop_oneof![Just(Backoff::Fixed), Just(Backoff::Exponential)]
}

/// Valid configs with small numbers, dyadic jitter and multipliers the model computes exactly.
fn sequence_config(max_restarts: impl Strategy<Value = u32>) -> impl Strategy<Value = PolicyConfig> {
    (
        mode(),
        max_restarts,
        prop_oneof![1u64..=10, 1u64..=200_000],
        0u64..=20_000,
        backoff(),
        prop_oneof![Just(1.0), Just(1.5), Just(2.0), Just(3.0)],
        0u64..=100_000,
        prop_oneof![Just(0.0), Just(0.25), Just(0.5), Just(1.0)],
        prop_oneof![1u64..=10, 1u64..=200_000],
    )
        .prop_map(|(mode, max_restarts, window, delay, backoff, multiplier, extra, jitter, reset)| {
            policy_config((mode, max_restarts, window, delay, backoff, multiplier, delay + extra, jitter, reset))
        })
}

fn exit_kind() -> impl Strategy<Value = ExitKind> {
    prop_oneof![
        3 => Just(ExitKind::Code(0)),
        2 => Just(ExitKind::Code(1)),
        1 => any::<i32>().prop_map(ExitKind::Code),
        2 => Just(ExitKind::Signal(15)),
        1 => prop_oneof![Just(1), Just(2), Just(13)].prop_map(ExitKind::Signal),
        2 => Just(ExitKind::Signal(9)),
        1 => (0i32..65).prop_map(ExitKind::Signal),
        1 => Just(ExitKind::HealthCheck),
        1 => Just(ExitKind::MemoryLimit),
        1 => Just(ExitKind::StartTimeout),
        1 => Just(ExitKind::SpawnFailed),
        1 => Just(ExitKind::Crashed),
    ]
}

fn sample() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), Just(u32::MAX), Just(1 << 31), any::<u32>()]
}

fn stale() -> impl Strategy<Value = Which> {
    prop_oneof![(0u8..3).prop_map(Which::Older), (0u8..3).prop_map(Which::Newer)]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => (exit_kind(), sample()).prop_map(|(k, s)| Event::Exit(k, Which::Current, s)),
        5 => Just(Event::Timer(Which::Current)),
        4 => Just(Event::Ready(Which::Current)),
        1 => Just(Event::AdminStart),
        1 => Just(Event::AdminStop),
        1 => (exit_kind(), stale(), sample()).prop_map(|(k, w, s)| Event::Exit(k, w, s)),
        1 => stale().prop_map(Event::Timer),
        1 => stale().prop_map(Event::Ready),
    ]
}

/// Forward gaps; `huge` bounds the huge ones.
fn gap(huge: u64) -> impl Strategy<Value = Gap> {
    prop_oneof![
        3 => Just(Gap::Zero),
        3 => (1u64..5_000).prop_map(Gap::Small),
        2 => (-1i8..=1).prop_map(Gap::NearWindow),
        2 => (-1i8..=1).prop_map(Gap::NearReset),
        1 => (1u64 << 32..=huge).prop_map(Gap::Huge),
    ]
}

/// Forward gaps with occasional steps backwards.
fn gap_with_regressions() -> impl Strategy<Value = Gap> {
    prop_oneof![
        4 => gap(u64::MAX),
        1 => prop_oneof![1u64..=10, 1u64..=200_000, Just(u64::MAX)].prop_map(Gap::Back),
    ]
}

fn scenario_with(
    config: impl Strategy<Value = PolicyConfig>,
    gaps: impl Strategy<Value = Gap>,
    start: impl Strategy<Value = u64>,
) -> impl Strategy<Value = Scenario> {
    (config, start, prop::collection::vec((gaps, event()), 1..60)).prop_map(|(config, start, steps)| Scenario {
        config,
        start,
        steps,
    })
}

/// The default scenario: budgets of 0 to 6, any start time, forward gaps.
fn scenario() -> impl Strategy<Value = Scenario> {
    scenario_with(sequence_config(0u32..=6), gap(u64::MAX), prop_oneof![0u64..=1_000_000, any::<u64>()])
}

/// Any valid config, including extreme values.
fn wide_config() -> impl Strategy<Value = PolicyConfig> {
    let amount = || prop_oneof![0u64..=1_000, 0u64..=10_000_000, any::<u64>(), Just(u64::MAX)];
    let multiplier = prop_oneof![
        Just(1.0),
        Just(1.0 + f64::EPSILON),
        Just(1.5),
        Just(2.0),
        1.0f64..=16.0,
        1.0f64..=1e300,
        Just(f64::MAX),
    ];
    let jitter = prop_oneof![Just(0.0), Just(1.0), Just(f64::MIN_POSITIVE), 0.0f64..=1.0];
    (
        mode(),
        prop_oneof![0u32..=10, any::<u32>()],
        1u64..=u64::MAX,
        amount(),
        backoff(),
        multiplier,
        amount(),
        jitter,
        1u64..=u64::MAX,
    )
        .prop_map(|(mode, max_restarts, window, a, backoff, multiplier, b, jitter, reset)| PolicyConfig {
            mode,
            max_restarts,
            restart_window_ms: window,
            restart_delay_ms: a.min(b),
            backoff,
            backoff_multiplier: multiplier,
            max_restart_delay_ms: a.max(b),
            jitter,
            reset_after_ms: reset,
        })
}

fn streak() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..=70, any::<u32>(), Just(u32::MAX)]
}

/// Configs with any values, valid or not.
fn raw_config() -> impl Strategy<Value = PolicyConfig> {
    let float = |specials: Vec<f64>| prop_oneof![prop::sample::select(specials), -2.0f64..=3.0, any::<f64>(),];
    (
        mode(),
        prop_oneof![Just(0u32), 0u32..=10, any::<u32>()],
        prop_oneof![Just(0u64), any::<u64>()],
        prop_oneof![Just(0u64), 0u64..=100_000, any::<u64>()],
        backoff(),
        float(vec![f64::NAN, f64::INFINITY, -1.0, 0.0, 0.999, 1.0, 2.0]),
        prop_oneof![Just(0u64), 0u64..=100_000, any::<u64>()],
        float(vec![f64::NAN, f64::NEG_INFINITY, -0.1, 0.0, 0.5, 1.0, 1.0001]),
        prop_oneof![Just(0u64), any::<u64>()],
    )
        .prop_map(policy_config)
}

/// The fields whose invariant `c` breaks, in the order validation reports them.
fn broken_fields(c: &PolicyConfig) -> Vec<&'static str> {
    let mut broken = Vec::new();
    if c.max_restarts > 0 && c.restart_window_ms == 0 {
        broken.push("restart_window");
    }
    let m = c.backoff_multiplier;
    if c.backoff == Backoff::Exponential && (m.is_nan() || m.is_infinite() || m < 1.0) {
        broken.push("backoff_multiplier");
    }
    if c.max_restart_delay_ms < c.restart_delay_ms {
        broken.push("max_restart_delay");
    }
    if c.jitter.is_nan() || c.jitter < 0.0 || c.jitter > 1.0 {
        broken.push("jitter");
    }
    if c.reset_after_ms == 0 {
        broken.push("reset_after");
    }
    broken
}

fn is_restart(d: &Decision) -> bool {
    matches!(d, Decision::Restart { .. })
}

/// Whether `kind` deserves a restart under `mode`.
fn restart_worthy(mode: RestartMode, kind: ExitKind) -> bool {
    match mode {
        RestartMode::Never => false,
        RestartMode::OnFailure => !kind.is_clean(),
        RestartMode::Always => true,
    }
}

// ---------------------------------------------------------------------------------------------
// Budget and give-up.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(settings(256))]

    #[test]
    fn never_more_than_max_restarts_in_any_window(s in scenario()) {
        let (_, records, _) = run_scenario(&s)?;
        assert_window_bound(&records, &s.config)?;
    }

    #[test]
    fn gives_up_at_exactly_the_same_failure_as_the_reference_model(s in scenario()) {
        let (_, records, _) = run_scenario(&s)?;
        let mut model = Model::new();
        for (i, r) in records.iter().enumerate() {
            let expected = model.apply(&s.config, r.now, &r.act);
            prop_assert_eq!(&r.outcome, &expected, "step {} ({:?} at {})", i, r.act, r.now);
            let state = Snapshot {
                phase: model.phase,
                generation: model.generation,
                streak: model.streak,
            };
            prop_assert_eq!(r.after, state, "step {}", i);
            prop_assert_eq!(r.in_window as usize, model.in_window(&s.config, r.now), "step {}", i);
        }
    }

    #[test]
    fn zero_budget_gives_up_on_first_failure(
        s in scenario_with(sequence_config(Just(0)), gap(u64::MAX), 0u64..=1_000),
    ) {
        let (_, records, _) = run_scenario(&s)?;
        for r in &records {
            let Outcome::Decided(decision) = &r.outcome else { continue };
            prop_assert!(!is_restart(decision), "{:?}", decision);
            let Act::Exit(kind, generation, _) = r.act else { continue };
            let live = matches!(r.before.phase, Phase::Starting | Phase::Running)
                && generation == r.before.generation;
            if live && restart_worthy(s.config.mode, kind) {
                prop_assert!(matches!(decision, Decision::GiveUp { .. }), "{:?}", decision);
            }
        }
    }

    #[test]
    fn give_up_is_absorbing_until_admin_start(s in scenario()) {
        let (_, records, _) = run_scenario(&s)?;
        let mut failed = false;
        for r in &records {
            if r.act == Act::AdminStart {
                failed = false;
                prop_assert_eq!(r.after.phase, Phase::Starting);
                continue;
            }
            if failed {
                prop_assert_eq!(r.after, r.before, "{:?}", r.act);
                prop_assert_eq!(r.after.phase, Phase::Failed);
                match &r.outcome {
                    Outcome::Decided(d) => prop_assert_eq!(
                        d,
                        &Decision::Stay { reason: StayReason::AlreadyFailed }
                    ),
                    Outcome::Fired(fired) => prop_assert!(!fired),
                    _ => {}
                }
            }
            if let Outcome::Decided(Decision::GiveUp { .. }) = r.outcome {
                failed = true;
                prop_assert_eq!(r.after.phase, Phase::Failed);
            }
        }
    }

    #[test]
    fn window_log_stays_bounded(
        s in scenario_with(sequence_config(0u32..=4), gap(u64::MAX), 0u64..=1_000),
    ) {
        let (_, records, _) = run_scenario(&s)?;
        for r in &records {
            prop_assert!(r.log_len <= s.config.max_restarts as usize, "{:?}", r);
        }
    }

    #[test]
    fn the_never_trips_warning_is_exact(
        config in sequence_config(1u32..=8).prop_map(|c| PolicyConfig {
            mode: RestartMode::OnFailure,
            ..c
        }),
    ) {
        let (p, warnings) = RestartPolicy::new(config.clone())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let warned = warnings.iter().any(|w| w.field == "restart_window");
        // The fastest crash loop: every start fails at once, and jitter always cuts the most.
        let mut h = History::new();
        let mut generation = h.admin_start(0);
        let mut now = 0u64;
        let exits = 2 * config.max_restarts + 2;
        let mut gave_up_at = None;
        for i in 0..exits {
            match h.exited(&p, generation, ExitKind::SpawnFailed, now, u32::MAX) {
                Decision::Restart { delay_ms, generation: next, .. } => {
                    now += delay_ms;
                    generation = next;
                    prop_assert!(h.timer_fired(generation));
                }
                _ => {
                    gave_up_at = Some(i);
                    break;
                }
            }
        }
        if warned {
            prop_assert_eq!(gave_up_at, None);
        } else {
            prop_assert_eq!(gave_up_at, Some(config.max_restarts));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backoff delays.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(settings(256))]

    #[test]
    fn delays_are_exact_without_jitter(
        initial in prop_oneof![0u64..=1_000, any::<u64>()],
        extra in prop_oneof![0u64..=100_000, any::<u64>()],
        multiplier in prop_oneof![(1u32..=10).prop_map(f64::from), Just(1.5), 1.0f64..=4.0],
        backoff in backoff(),
        streak in streak(),
        sample in any::<u32>(),
    ) {
        let config = PolicyConfig {
            restart_delay_ms: initial,
            max_restart_delay_ms: initial.saturating_add(extra),
            backoff,
            backoff_multiplier: multiplier,
            jitter: 0.0,
            ..PolicyConfig::default()
        };
        let p = accept(&config)?;
        let got = p.base_delay_ms(streak);
        prop_assert_eq!(p.delay_ms(streak, sample), got);
        if backoff == Backoff::Fixed || multiplier.fract() == 0.0 {
            prop_assert_eq!(got, reference_base_delay(&config, streak));
        } else if streak <= 60 {
            // An independent computation by repeated multiplication agrees to rounding.
            let cap = config.max_restart_delay_ms as f64;
            let mut x = initial as f64;
            for _ in 0..streak {
                x *= multiplier;
            }
            let expected = x.min(cap);
            let diff = (got as f64 - expected).abs();
            prop_assert!(diff <= 1.0 + expected * 1e-12, "{} vs {}", got, expected);
        }
    }

    #[test]
    fn delays_are_monotone_within_a_streak(
        config in wide_config(),
        streak in streak(),
        sample in any::<u32>(),
    ) {
        let p = accept(&config)?;
        let next = streak.saturating_add(1);
        prop_assert!(p.base_delay_ms(streak) <= p.base_delay_ms(next));
        prop_assert!(p.delay_ms(streak, sample) <= p.delay_ms(next, sample));
        // From the start of a streak, delays climb and then stay at the cap.
        let delays: Vec<u64> = (0..70).map(|k| p.base_delay_ms(k)).collect();
        prop_assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{:?}", delays);
        prop_assert_eq!(delays[0], config.restart_delay_ms);
    }

    #[test]
    fn delays_never_exceed_the_cap(
        config in wide_config(),
        streak in streak(),
        sample in any::<u32>(),
    ) {
        let p = accept(&config)?;
        let base = p.base_delay_ms(streak);
        prop_assert!(base <= config.max_restart_delay_ms);
        prop_assert!(p.delay_ms(streak, sample) <= base);
    }

    #[test]
    fn delay_computation_never_overflows(
        config in wide_config(),
        streaks in prop::collection::vec(streak(), 1..8),
        samples in prop::collection::vec(any::<u32>(), 1..8),
    ) {
        // Debug builds panic on overflow, so getting here proves the absence of overflow.
        let p = accept(&config)?;
        for &k in &streaks {
            for &s in &samples {
                prop_assert!(p.delay_ms(k, s) <= config.max_restart_delay_ms);
            }
            prop_assert!(p.min_delay_ms(k) <= p.delay_ms(k, 0));
        }
    }

    #[test]
    fn jitter_stays_within_bounds(
        config in wide_config(),
        streak in streak(),
        sample in any::<u32>(),
    ) {
        let p = accept(&config)?;
        let base = p.base_delay_ms(streak);
        let delay = p.delay_ms(streak, sample);
        let lower = base as f64 * (1.0 - config.jitter);
        prop_assert!(delay <= base);
        prop_assert!(delay as f64 >= lower - 1.0 - lower * 1e-12, "{} < {}", delay, lower);
        prop_assert_eq!(p.delay_ms(streak, 0), base);
        prop_assert!(p.delay_ms(streak, u32::MAX) <= delay);
    }

    #[test]
    fn zero_jitter_ignores_the_sample(
        config in wide_config(),
        streak in streak(),
        a in any::<u32>(),
        b in any::<u32>(),
    ) {
        let p = accept(&PolicyConfig { jitter: 0.0, ..config })?;
        prop_assert_eq!(p.delay_ms(streak, a), p.delay_ms(streak, b));
        prop_assert_eq!(p.delay_ms(streak, a), p.base_delay_ms(streak));
    }
}

// ---------------------------------------------------------------------------------------------
// Reset and stability.
// ---------------------------------------------------------------------------------------------

/// One crash cycle in a streak test: time until the start, whether the incarnation gets ready
/// and how long it then runs (or waits before failing to start).
#[derive(Clone, Copy, Debug)]
struct Cycle {
    ready: bool,
    uptime: u64,
    sample: u32,
}

fn uptime_around(reset_after: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(reset_after - 1),
        Just(reset_after),
        Just(reset_after + 1),
        0..reset_after,
        reset_after..reset_after.saturating_mul(3),
        Just(1u64 << 40),
    ]
}

fn streak_case() -> impl Strategy<Value = (PolicyConfig, Vec<Cycle>)> {
    sequence_config(Just(u32::MAX))
        .prop_map(|c| PolicyConfig { mode: RestartMode::Always, reset_after_ms: c.reset_after_ms.max(2), ..c })
        .prop_flat_map(|c| {
            let cycle = (any::<bool>(), uptime_around(c.reset_after_ms), sample())
                .prop_map(|(ready, uptime, sample)| Cycle { ready, uptime, sample });
            (Just(c), prop::collection::vec(cycle, 1..20))
        })
}

proptest! {
    #![proptest_config(settings(256))]

    #[test]
    fn stable_uptime_resets_the_streak((config, cycles) in streak_case()) {
        let p = accept(&config)?;
        let mut h = History::new();
        let mut generation = h.admin_start(0);
        let mut now = 0u64;
        let mut expected_streak = 0u32;
        for c in cycles {
            if c.ready {
                h.ready(generation, now);
            }
            now += c.uptime;
            if c.ready && c.uptime >= config.reset_after_ms {
                expected_streak = 0;
            }
            let decision = h.exited(&p, generation, ExitKind::Crashed, now, c.sample);
            let Decision::Restart { delay_ms, generation: next, attempt } = decision else {
                return Err(TestCaseError::fail(format!("expected a restart, got {decision:?}")));
            };
            prop_assert_eq!(delay_ms, p.delay_ms(expected_streak, c.sample));
            expected_streak += 1;
            prop_assert_eq!(attempt, expected_streak);
            generation = next;
            prop_assert!(h.timer_fired(generation));
        }
    }

    #[test]
    fn no_reset_without_ready_uptime(
        config in sequence_config(1u32..=6),
        gaps in prop::collection::vec(prop_oneof![Just(0u64), 1u64..=1_000_000, Just(1u64 << 50)], 1..20),
        ready_for in prop::collection::vec(any::<bool>(), 20),
    ) {
        // The window never fills: each failure comes at least one window after the last.
        let config = PolicyConfig { mode: RestartMode::Always, ..config };
        let p = accept(&config)?;
        let mut h = History::new();
        let mut generation = h.admin_start(0);
        let mut now = 0u64;
        for (i, (&gap, &ready)) in gaps.iter().zip(&ready_for).enumerate() {
            // Starting takes at least a window; a ready incarnation then fails one ms before
            // reset_after, any other never gets ready.
            now += config.restart_window_ms + gap;
            if ready {
                h.ready(generation, now);
                now += config.reset_after_ms - 1;
            }
            let decision = h.exited(&p, generation, ExitKind::HealthCheck, now, 0);
            let Decision::Restart { attempt, generation: next, .. } = decision else {
                return Err(TestCaseError::fail(format!("expected a restart, got {decision:?}")));
            };
            prop_assert_eq!(attempt as usize, i + 1);
            generation = next;
            prop_assert!(h.timer_fired(generation));
        }
    }

    #[test]
    fn reset_does_not_clear_the_window(
        max_restarts in 1u32..=5,
        reset_after in 1u64..=1_000,
        extra in 0u64..=10,
        config in sequence_config(Just(1)),
    ) {
        // Every incarnation gets ready and runs past reset_after, so every restart is the
        // first of its streak, yet all of them fall inside one window.
        let run_for = reset_after + extra;
        let config = PolicyConfig {
            mode: RestartMode::OnFailure,
            max_restarts,
            reset_after_ms: reset_after,
            restart_window_ms: run_for * u64::from(max_restarts + 1) + 1,
            ..config
        };
        let p = accept(&config)?;
        let mut h = History::new();
        let mut generation = h.admin_start(0);
        let mut now = 0u64;
        for _ in 0..max_restarts {
            h.ready(generation, now);
            now += run_for;
            let decision = h.exited(&p, generation, ExitKind::Code(3), now, 0);
            let Decision::Restart { attempt, generation: next, .. } = decision else {
                return Err(TestCaseError::fail(format!("expected a restart, got {decision:?}")));
            };
            prop_assert_eq!(attempt, 1);
            generation = next;
            prop_assert!(h.timer_fired(generation));
        }
        h.ready(generation, now);
        now += run_for;
        prop_assert_eq!(h.restarts_in_window(&p, now), max_restarts);
        let decision = h.exited(&p, generation, ExitKind::Code(3), now, 0);
        prop_assert!(matches!(decision, Decision::GiveUp { .. }), "{:?}", decision);
    }
}

// ---------------------------------------------------------------------------------------------
// Determinism, time and robustness.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(settings(256))]

    #[test]
    fn decisions_are_deterministic(
        s in scenario_with(sequence_config(0u32..=6), gap_with_regressions(), any::<u64>()),
    ) {
        let (_, first, first_history) = run_scenario(&s)?;
        let (_, second, second_history) = run_scenario(&s)?;
        prop_assert_eq!(first, second);
        prop_assert_eq!(first_history, second_history);
    }

    #[test]
    fn time_shift_does_not_change_decisions(
        s in scenario_with(sequence_config(0u32..=6), gap(1 << 40), Just(0)),
        shift_seed in any::<u64>(),
    ) {
        let (p, base, _) = run_scenario(&s)?;
        // 60 steps of at most 2^40 + 200 000 ms each stay far below 2^47.
        let shift = shift_seed % (u64::MAX - (1 << 47));
        let events: Vec<Event> = s.steps.iter().map(|&(_, e)| e).collect();
        let times: Vec<u64> = timeline(0, &s.steps, &s.config).iter().map(|t| t + shift).collect();
        let (shifted, _) = run(&p, shift, &times, &events);
        for (a, b) in base.iter().zip(&shifted) {
            prop_assert_eq!(a.now + shift, b.now);
            prop_assert_eq!(
                (&a.act, &a.outcome, a.after, a.in_window, a.log_len),
                (&b.act, &b.outcome, b.after, b.in_window, b.log_len)
            );
        }
    }

    #[test]
    fn clock_going_backwards_neither_panics_nor_grants_restarts(
        s in scenario_with(sequence_config(0u32..=6), gap_with_regressions(), prop_oneof![0u64..=1_000_000, any::<u64>()]),
    ) {
        let (p, raw, _) = run_scenario(&s)?;
        // The same events with the clock replaced by its running maximum. Timers carry no
        // time, so they do not move the maximum (their time only serves the window query).
        let events: Vec<Event> = s.steps.iter().map(|&(_, e)| e).collect();
        let mut high = s.start;
        let clamped: Vec<u64> = timeline(s.start, &s.steps, &s.config)
            .into_iter()
            .zip(&events)
            .map(|(t, event)| {
                if matches!(event, Event::Timer(_)) {
                    return high.max(t);
                }
                high = high.max(t);
                high
            })
            .collect();
        let (monotone, _) = run(&p, s.start, &clamped, &events);
        for (a, b) in raw.iter().zip(&monotone) {
            prop_assert_eq!(
                (&a.act, &a.outcome, a.after, a.in_window),
                (&b.act, &b.outcome, b.after, b.in_window)
            );
        }
        assert_window_bound(&monotone, &s.config)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Classification and operator actions.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(settings(256))]

    #[test]
    fn admin_stop_never_restarts(s in scenario()) {
        let (_, records, _) = run_scenario(&s)?;
        let mut stopped = false;
        for r in &records {
            match r.act {
                Act::AdminStart => stopped = false,
                Act::AdminStop => stopped = true,
                _ if stopped => {
                    prop_assert!(matches!(r.after.phase, Phase::Stopped | Phase::Failed));
                    match &r.outcome {
                        Outcome::Decided(d) => prop_assert!(!is_restart(d), "{:?}", d),
                        Outcome::Fired(fired) => prop_assert!(!fired),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }

    #[test]
    fn stale_timers_are_ignored(s in scenario()) {
        let (_, records, _) = run_scenario(&s)?;
        for r in &records {
            match (r.act, &r.outcome) {
                (Act::Timer(generation), Outcome::Fired(fired)) => {
                    if generation != r.before.generation || r.before.phase != Phase::Backoff {
                        prop_assert!(!fired);
                        prop_assert_eq!(r.after, r.before);
                    } else {
                        prop_assert!(fired);
                        prop_assert_eq!(r.after.phase, Phase::Starting);
                    }
                }
                (Act::Exit(_, generation, _) | Act::Ready(generation), _)
                    if generation != r.before.generation =>
                {
                    prop_assert_eq!(r.after, r.before);
                    if let Outcome::Decided(d) = &r.outcome {
                        prop_assert!(!is_restart(d), "{:?}", d);
                    }
                }
                _ => {}
            }
        }
    }

    #[test]
    fn clean_exits_follow_the_mode(
        config in sequence_config(1u32..=6),
        kind in exit_kind(),
        ready in any::<bool>(),
        sample in sample(),
    ) {
        let p = accept(&config)?;
        let mut h = History::new();
        let generation = h.admin_start(0);
        if ready {
            h.ready(generation, 0);
        }
        let decision = h.exited(&p, generation, kind, 1, sample);
        let expected_stay = match config.mode {
            RestartMode::Never => Some(StayReason::Never),
            RestartMode::OnFailure if kind.is_clean() => Some(StayReason::CleanExit),
            _ => None,
        };
        match expected_stay {
            Some(reason) => {
                prop_assert_eq!(decision, Decision::Stay { reason });
                prop_assert_eq!(h.phase(), Phase::Stopped);
            }
            None => {
                prop_assert!(is_restart(&decision), "{:?}", decision);
                prop_assert_eq!(h.phase(), Phase::Backoff);
            }
        }
        // Exits that hivehost causes are never clean.
        let forced = [
            ExitKind::HealthCheck,
            ExitKind::MemoryLimit,
            ExitKind::StartTimeout,
            ExitKind::SpawnFailed,
            ExitKind::Crashed,
        ];
        prop_assert!(forced.iter().all(|k| !k.is_clean()));
    }
}

// ---------------------------------------------------------------------------------------------
// Config validation.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(settings(512))]

    #[test]
    fn every_accepted_config_satisfies_the_invariants(config in raw_config()) {
        if let Ok((p, warnings)) = RestartPolicy::new(config.clone()) {
            // Debug text rather than `==`, because a NaN multiplier is accepted with fixed
            // backoff and NaN is not equal to itself.
            prop_assert_eq!(format!("{:?}", p.config()), format!("{config:?}"));
            prop_assert_eq!(broken_fields(&config), Vec::<&str>::new());
            prop_assert!(config.max_restarts == 0 || config.restart_window_ms > 0);
            prop_assert!(config.max_restart_delay_ms >= config.restart_delay_ms);
            prop_assert!((0.0..=1.0).contains(&config.jitter));
            prop_assert!(config.reset_after_ms > 0);
            if config.backoff == Backoff::Exponential {
                prop_assert!(config.backoff_multiplier.is_finite());
                prop_assert!(config.backoff_multiplier >= 1.0);
            }
            for w in warnings {
                prop_assert!(!w.message.ends_with('.'), "{}", w);
                prop_assert!(!w.message.is_empty());
            }
        }
    }

    #[test]
    fn invalid_configs_are_rejected(config in raw_config()) {
        let broken = broken_fields(&config);
        match RestartPolicy::new(config.clone()) {
            Ok(_) => prop_assert!(broken.is_empty(), "accepted despite {:?}", broken),
            Err(err) => {
                let fields: Vec<&str> = err.problems.iter().map(|p| p.field).collect();
                prop_assert_eq!(&fields, &broken);
                let joined: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
                prop_assert_eq!(err.to_string(), joined.join("; "));
                for p in &err.problems {
                    prop_assert!(!p.message.ends_with('.'), "{}", p);
                    prop_assert!(p.message.chars().next().is_some_and(|c| !c.is_uppercase()));
                }
            }
        }
    }
}
