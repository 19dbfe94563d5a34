//! Example-based unit tests: delay tables, the seed configuration, validation messages, warnings and state-machine boundaries.

use crate::{
    Backoff, Decision, ExitKind, GiveUpReason, History, InvalidPolicy, Phase, PolicyConfig, RestartMode, RestartPolicy,
    StayReason, Warning,
};

/// Builds a policy that must be valid, with its warnings.
fn valid(config: PolicyConfig) -> (RestartPolicy, Vec<Warning>) {
    match RestartPolicy::new(config) {
        Ok(accepted) => accepted,
        Err(err) => panic!("expected a valid policy, got: {err}"),
    }
}

/// Builds a policy that must be valid, ignoring warnings.
fn policy(config: PolicyConfig) -> RestartPolicy {
    valid(config).0
}

/// Builds a policy that must be invalid and returns its problems.
fn invalid(config: PolicyConfig) -> InvalidPolicy {
    match RestartPolicy::new(config) {
        Ok(_) => panic!("expected an invalid policy"),
        Err(err) => err,
    }
}

/// An exponential policy without jitter.
fn exponential(initial: u64, multiplier: f64, cap: u64) -> RestartPolicy {
    policy(PolicyConfig {
        backoff: Backoff::Exponential,
        restart_delay_ms: initial,
        backoff_multiplier: multiplier,
        max_restart_delay_ms: cap,
        ..PolicyConfig::default()
    })
}

/// The fields of the problems, in order.
fn fields(problems: &[crate::Problem]) -> Vec<&'static str> {
    problems.iter().map(|p| p.field).collect()
}

/// Asserts a restart decision and returns its generation.
#[track_caller]
fn expect_restart(decision: Decision, delay_ms: u64, attempt: u32) -> u64 {
    match decision {
        Decision::Restart { delay_ms: got_delay, generation, attempt: got_attempt } => {
            assert_eq!((got_delay, got_attempt), (delay_ms, attempt));
            generation
        }
        other => panic!("expected a restart, got {other:?}"),
    }
}

/// Restarts the server after a restart decision, as the supervisor's timer would.
#[track_caller]
fn fire(history: &mut History, generation: u64) {
    assert!(history.timer_fired(generation));
}

#[test]
fn fixed_delays_ignore_the_streak() {
    let p = policy(PolicyConfig::default());
    for streak in [0, 1, 2, 100, u32::MAX] {
        assert_eq!(p.base_delay_ms(streak), 5_000, "streak {streak}");
        assert_eq!(p.delay_ms(streak, u32::MAX), 5_000, "streak {streak}");
    }
}

#[test]
fn exponential_delays_double_up_to_the_cap() {
    let p = exponential(1_000, 2.0, 60_000);
    let table = [
        (0, 1_000),
        (1, 2_000),
        (2, 4_000),
        (3, 8_000),
        (4, 16_000),
        (5, 32_000),
        (6, 60_000),
        (7, 60_000),
        (64, 60_000),
        (u32::MAX, 60_000),
    ];
    for (streak, delay) in table {
        assert_eq!(p.base_delay_ms(streak), delay, "streak {streak}");
    }
}

#[test]
fn exponential_delays_grow_by_one_and_a_half_rounded_down() {
    // pm2's sequence, except that the power is rounded once rather than at every step.
    let p = exponential(100, 1.5, 15_000);
    let expected = [100, 150, 225, 337, 506, 759, 1_139, 1_708, 2_562, 3_844, 5_766, 8_649, 12_974, 15_000, 15_000];
    let got: Vec<u64> = (0..15).map(|k| p.base_delay_ms(k)).collect();
    assert_eq!(got, expected);
}

#[test]
fn exponential_delays_saturate_at_the_extremes() {
    let table = [
        // (initial, multiplier, cap, streak, expected)
        (1 << 62, 2.0, u64::MAX, 1, 1 << 63),
        (1 << 62, 2.0, u64::MAX, 2, u64::MAX),
        (1 << 62, 2.0, u64::MAX, u32::MAX, u64::MAX),
        (1, 2.0, u64::MAX, 63, 1 << 63),
        (1, 2.0, u64::MAX, 64, u64::MAX),
        (1, 3.0, u64::MAX, 40, 3u64.pow(40)),
        (u64::MAX - 1, 1.5, u64::MAX, 1, u64::MAX),
        (1, 1e300, u64::MAX, 1, u64::MAX),
        (1, 1e300, u64::MAX, u32::MAX, u64::MAX),
        (1, 1.000_000_1, 10, u32::MAX, 10),
        (7, 1.0, 1_000, u32::MAX, 7),
        (0, 2.0, 1_000, u32::MAX, 0),
        (u64::MAX, 2.0, u64::MAX, u32::MAX, u64::MAX),
    ];
    for (initial, multiplier, cap, streak, expected) in table {
        let p = exponential(initial, multiplier, cap);
        assert_eq!(p.base_delay_ms(streak), expected, "{initial} * {multiplier}^{streak} capped at {cap}");
    }
}

#[test]
fn jitter_shortens_the_delay_by_at_most_its_fraction() {
    let half = policy(PolicyConfig { jitter: 0.5, restart_delay_ms: 1_000, ..PolicyConfig::default() });
    assert_eq!(half.delay_ms(0, 0), 1_000);
    assert_eq!(half.delay_ms(0, 1 << 31), 750);
    assert_eq!(half.delay_ms(0, u32::MAX), 501);
    assert_eq!(half.min_delay_ms(0), 501);

    let tenth = policy(PolicyConfig { jitter: 0.1, restart_delay_ms: 1_000, ..PolicyConfig::default() });
    assert_eq!(tenth.delay_ms(0, u32::MAX), 901);

    let full = policy(PolicyConfig {
        jitter: 1.0,
        restart_delay_ms: u64::MAX,
        max_restart_delay_ms: u64::MAX,
        ..PolicyConfig::default()
    });
    assert_eq!(full.delay_ms(0, 0), u64::MAX);
    // base - floor(base * (2^32 - 1) / 2^32) = ceil(base / 2^32) = 2^32.
    assert_eq!(full.delay_ms(0, u32::MAX), 1 << 32);

    let none = policy(PolicyConfig { jitter: 0.0, ..PolicyConfig::default() });
    assert_eq!(none.delay_ms(3, u32::MAX), none.base_delay_ms(3));
}

#[test]
fn the_seed_configuration_restarts_five_times_per_minute_then_gives_up() {
    let (p, warnings) = valid(PolicyConfig::default());
    assert_eq!(warnings, []);
    assert_eq!(p.config(), &PolicyConfig::from_seed(true, 5, 5_000));

    let mut h = History::new();
    let mut generation = h.admin_start(0);
    let mut now = 0;
    for attempt in 1..=5 {
        let decision = h.exited(&p, generation, ExitKind::Code(1), now, 12_345);
        generation = expect_restart(decision, 5_000, attempt);
        now += 5_000;
        fire(&mut h, generation);
    }
    assert_eq!(h.restarts_in_window(&p, now), 5);
    let decision = h.exited(&p, generation, ExitKind::Code(1), now, 0);
    assert_eq!(
        decision,
        Decision::GiveUp { reason: GiveUpReason::BudgetExhausted { max_restarts: 5, window_ms: 60_000 } }
    );
    assert_eq!(h.phase(), Phase::Failed);
}

#[test]
fn a_seed_without_auto_restart_never_restarts() {
    let p = policy(PolicyConfig::from_seed(false, 5, 5_000));
    let mut h = History::new();
    let generation = h.admin_start(0);
    let decision = h.exited(&p, generation, ExitKind::Signal(9), 10, 0);
    assert_eq!(decision, Decision::Stay { reason: StayReason::Never });
    assert_eq!(h.phase(), Phase::Stopped);
}

#[test]
fn a_long_seed_delay_raises_the_cap_and_warns_that_the_limit_never_trips() {
    let (p, warnings) = valid(PolicyConfig::from_seed(true, 3, 90_000));
    assert_eq!(p.config().max_restart_delay_ms, 90_000);
    assert_eq!(fields(&warnings), ["restart_window"]);
    assert_eq!(
        warnings[0].to_string(),
        "restart_window: the restart limit can never trip: 3 restarts in a crash loop take at \
         least 270000 ms of delays, which does not fit in a restart_window of 60000 ms, so a \
         crash loop restarts forever; raise restart_window above 270000 ms, or lower \
         max_restarts, restart_delay or backoff_multiplier"
    );
}

#[test]
fn validation_reports_every_problem_with_its_field() {
    let err = invalid(PolicyConfig {
        mode: RestartMode::Always,
        max_restarts: 1,
        restart_window_ms: 0,
        restart_delay_ms: 100,
        backoff: Backoff::Exponential,
        backoff_multiplier: f64::NAN,
        max_restart_delay_ms: 10,
        jitter: 1.5,
        reset_after_ms: 0,
    });
    assert_eq!(
        fields(&err.problems),
        ["restart_window", "backoff_multiplier", "max_restart_delay", "jitter", "reset_after"]
    );
    assert_eq!(
        err.to_string(),
        "restart_window: must be above 0 when max_restarts is above 0; \
         backoff_multiplier: must be a finite number of at least 1.0, got NaN; \
         max_restart_delay: must be at least restart_delay (100 ms), got 10 ms; \
         jitter: must be between 0.0 and 1.0, got 1.5; \
         reset_after: must be above 0"
    );
}

#[test]
fn validation_rejects_each_bad_value_alone() {
    let cases: [(PolicyConfig, &str); 7] = [
        (PolicyConfig { restart_window_ms: 0, ..PolicyConfig::default() }, "restart_window"),
        (
            PolicyConfig { backoff: Backoff::Exponential, backoff_multiplier: 0.5, ..PolicyConfig::default() },
            "backoff_multiplier",
        ),
        (
            PolicyConfig {
                backoff: Backoff::Exponential,
                backoff_multiplier: f64::INFINITY,
                ..PolicyConfig::default()
            },
            "backoff_multiplier",
        ),
        (PolicyConfig { max_restart_delay_ms: 4_999, ..PolicyConfig::default() }, "max_restart_delay"),
        (PolicyConfig { jitter: -0.1, ..PolicyConfig::default() }, "jitter"),
        (PolicyConfig { jitter: f64::NAN, ..PolicyConfig::default() }, "jitter"),
        (PolicyConfig { reset_after_ms: 0, ..PolicyConfig::default() }, "reset_after"),
    ];
    for (config, field) in cases {
        let err = invalid(config.clone());
        assert_eq!(fields(&err.problems), [field], "{config:?}");
    }
}

#[test]
fn validation_accepts_the_edge_values() {
    let accepted = [
        // A zero budget needs no window.
        PolicyConfig { max_restarts: 0, restart_window_ms: 0, ..PolicyConfig::default() },
        // Fixed backoff ignores the multiplier.
        PolicyConfig { backoff: Backoff::Fixed, backoff_multiplier: f64::NAN, ..PolicyConfig::default() },
        PolicyConfig {
            backoff: Backoff::Exponential,
            backoff_multiplier: 1.0,
            jitter: 1.0,
            restart_delay_ms: 60_000,
            max_restart_delay_ms: 60_000,
            reset_after_ms: 1,
            ..PolicyConfig::default()
        },
        PolicyConfig { restart_delay_ms: 0, max_restart_delay_ms: 0, jitter: 0.0, ..PolicyConfig::default() },
    ];
    for config in accepted {
        assert!(RestartPolicy::new(config.clone()).is_ok(), "{config:?}");
    }
}

#[test]
fn the_design_defaults_are_valid_without_warnings() {
    // shared/DESIGN.md: 5 restarts in 300 s, exponential from 5 s by 2 up to 60 s.
    let (_, warnings) =
        valid(PolicyConfig { restart_window_ms: 300_000, backoff: Backoff::Exponential, ..PolicyConfig::default() });
    assert_eq!(warnings, []);
}

#[test]
fn the_never_trips_warning_has_an_exact_boundary() {
    // Exponential 5 s doubling to 60 s: 5 + 10 + 20 + 40 + 60 = 135 s for 5 restarts.
    let at = |window: u64| {
        valid(PolicyConfig { restart_window_ms: window, backoff: Backoff::Exponential, ..PolicyConfig::default() }).1
    };
    assert_eq!(fields(&at(135_000)), ["restart_window"]);
    assert_eq!(fields(&at(135_001)), Vec::<&str>::new());

    // Jitter shortens the delays: 3 restarts of at least 501 ms each.
    let jittered = |window: u64| {
        valid(PolicyConfig {
            max_restarts: 3,
            restart_window_ms: window,
            restart_delay_ms: 1_000,
            jitter: 0.5,
            ..PolicyConfig::default()
        })
        .1
    };
    assert_eq!(fields(&jittered(1_503)), ["restart_window"]);
    assert_eq!(fields(&jittered(1_504)), Vec::<&str>::new());
}

#[test]
fn the_never_trips_warning_is_skipped_when_nothing_restarts_or_nothing_is_allowed() {
    let never = valid(PolicyConfig { mode: RestartMode::Never, restart_window_ms: 1, ..PolicyConfig::default() });
    assert_eq!(never.1, []);
    let zero = valid(PolicyConfig { max_restarts: 0, restart_window_ms: 0, ..PolicyConfig::default() });
    assert_eq!(zero.1, []);
}

#[test]
fn the_never_trips_warning_handles_huge_budgets_quickly() {
    let (_, warnings) = valid(PolicyConfig {
        max_restarts: u32::MAX,
        restart_window_ms: u64::MAX,
        restart_delay_ms: 1,
        backoff: Backoff::Exponential,
        backoff_multiplier: 1.000_001,
        max_restart_delay_ms: u64::MAX,
        ..PolicyConfig::default()
    });
    // Growing by a millionth per restart still reaches the cap long before 2^32 restarts.
    assert_eq!(fields(&warnings), ["restart_window"]);
    let (_, warnings) = valid(PolicyConfig {
        max_restarts: u32::MAX,
        restart_window_ms: u64::MAX,
        restart_delay_ms: u64::MAX,
        max_restart_delay_ms: u64::MAX,
        ..PolicyConfig::default()
    });
    assert_eq!(fields(&warnings), ["restart_window"]);
}

#[test]
fn doubtful_exponential_settings_warn() {
    let zero = valid(PolicyConfig { backoff: Backoff::Exponential, restart_delay_ms: 0, ..PolicyConfig::default() });
    assert_eq!(fields(&zero.1), ["restart_delay"]);
    let flat = valid(PolicyConfig {
        backoff: Backoff::Exponential,
        backoff_multiplier: 1.0,
        restart_window_ms: 300_000,
        ..PolicyConfig::default()
    });
    assert_eq!(fields(&flat.1), ["backoff_multiplier"]);
}

#[test]
fn clean_exits_follow_systemd() {
    let clean =
        [ExitKind::Code(0), ExitKind::Signal(1), ExitKind::Signal(2), ExitKind::Signal(13), ExitKind::Signal(15)];
    let abnormal = [
        ExitKind::Code(1),
        ExitKind::Code(-1),
        ExitKind::Code(143),
        ExitKind::Signal(9),
        ExitKind::Signal(6),
        ExitKind::Signal(0),
        ExitKind::HealthCheck,
        ExitKind::MemoryLimit,
        ExitKind::StartTimeout,
        ExitKind::SpawnFailed,
        ExitKind::Crashed,
    ];
    for kind in clean {
        assert!(kind.is_clean(), "{kind:?}");
    }
    for kind in abnormal {
        assert!(!kind.is_clean(), "{kind:?}");
    }
}

#[test]
fn the_window_is_half_open() {
    let p = policy(PolicyConfig { max_restarts: 1, restart_window_ms: 1_000, ..PolicyConfig::default() });
    // A restart at 0 still counts at 999 ...
    let mut h = History::new();
    let g = h.admin_start(0);
    let g = expect_restart(h.exited(&p, g, ExitKind::Code(1), 0, 0), 5_000, 1);
    fire(&mut h, g);
    assert_eq!(h.restarts_in_window(&p, 999), 1);
    assert!(matches!(h.exited(&p, g, ExitKind::Code(1), 999, 0), Decision::GiveUp { .. }));
    // ... and no longer counts at 1000.
    let mut h = History::new();
    let g = h.admin_start(0);
    let g = expect_restart(h.exited(&p, g, ExitKind::Code(1), 0, 0), 5_000, 1);
    fire(&mut h, g);
    assert_eq!(h.restarts_in_window(&p, 1_000), 0);
    expect_restart(h.exited(&p, g, ExitKind::Code(1), 1_000, 0), 5_000, 2);
    assert_eq!(h.window_log_len(), 1);
}

#[test]
fn ready_uptime_of_exactly_reset_after_ends_the_streak() {
    let p = exponential(1_000, 2.0, 60_000);
    let crash_after_uptime = |uptime: u64| {
        let mut h = History::new();
        let g = h.admin_start(0);
        let g = expect_restart(h.exited(&p, g, ExitKind::Code(1), 0, 0), 1_000, 1);
        fire(&mut h, g);
        h.ready(g, 1_000);
        h.exited(&p, g, ExitKind::Code(1), 1_000 + uptime, 0)
    };
    expect_restart(crash_after_uptime(59_999), 2_000, 2);
    expect_restart(crash_after_uptime(60_000), 1_000, 1);
}

#[test]
fn admin_stop_cancels_the_pending_restart() {
    let p = policy(PolicyConfig::default());
    let mut h = History::new();
    let g = h.admin_start(0);
    let next = expect_restart(h.exited(&p, g, ExitKind::Crashed, 10, 0), 5_000, 1);
    h.admin_stop(20);
    assert!(!h.timer_fired(next));
    assert_eq!(h.phase(), Phase::Stopped);
}

#[test]
fn the_exit_of_an_admin_stopped_incarnation_stays_stopped() {
    let p = policy(PolicyConfig::default());
    let mut h = History::new();
    let g = h.admin_start(0);
    h.ready(g, 5);
    h.admin_stop(10);
    assert_eq!(h.exited(&p, g, ExitKind::Signal(15), 20, 0), Decision::Stay { reason: StayReason::AdminStop });
    assert_eq!(h.exited(&p, g, ExitKind::Signal(15), 20, 0), Decision::Stay { reason: StayReason::Stale });
}

#[test]
fn events_for_other_generations_are_ignored() {
    let p = policy(PolicyConfig::default());
    let mut h = History::new();
    let g = h.admin_start(0);
    let before = h.clone();
    assert!(!h.timer_fired(g));
    assert!(!h.timer_fired(g + 1));
    h.ready(g + 1, 0);
    assert_eq!(h, before);
    assert_eq!(h.exited(&p, g - 1, ExitKind::Code(1), 0, 0), Decision::Stay { reason: StayReason::Stale });
    assert_eq!(h, before);
}

#[test]
fn a_clock_that_goes_backwards_is_clamped() {
    let p = policy(PolicyConfig { max_restarts: 1, restart_window_ms: 1_000, ..PolicyConfig::default() });
    let mut h = History::new();
    let g = h.admin_start(5_000);
    let g = expect_restart(h.exited(&p, g, ExitKind::Code(1), 5_000, 0), 5_000, 1);
    fire(&mut h, g);
    // Time 0 is read as 5000, so the restart at 5000 still counts.
    assert_eq!(h.restarts_in_window(&p, 0), 1);
    assert!(matches!(h.exited(&p, g, ExitKind::Code(1), 0, 0), Decision::GiveUp { .. }));
    assert_eq!(h.last_seen_ms(), 5_000);
}

#[test]
fn give_up_ignores_everything_but_admin_start() {
    let p = policy(PolicyConfig { max_restarts: 0, restart_window_ms: 0, ..PolicyConfig::default() });
    let mut h = History::new();
    let g = h.admin_start(0);
    assert!(matches!(h.exited(&p, g, ExitKind::SpawnFailed, 0, 0), Decision::GiveUp { .. }));
    h.admin_stop(1);
    h.ready(g, 2);
    assert!(!h.timer_fired(g));
    assert_eq!(h.exited(&p, g, ExitKind::Code(1), 3, 0), Decision::Stay { reason: StayReason::AlreadyFailed });
    assert_eq!(h.phase(), Phase::Failed);
    let started = h.admin_start(4);
    assert_eq!(started, g + 1);
    assert_eq!(h.phase(), Phase::Starting);
}

#[test]
fn display_texts_are_lowercase_without_a_period() {
    let texts = [
        GiveUpReason::BudgetExhausted { max_restarts: 5, window_ms: 60_000 }.to_string(),
        StayReason::AdminStop.to_string(),
        StayReason::Never.to_string(),
        StayReason::CleanExit.to_string(),
        StayReason::AlreadyFailed.to_string(),
        StayReason::Stale.to_string(),
        StayReason::NotRunning.to_string(),
    ];
    for text in texts {
        assert_eq!(text, text.to_lowercase());
        assert!(!text.ends_with('.'), "{text}");
    }
}
