//! Table-driven tests of the recommendation rules: each rule firing and not, at its thresholds,
//! and the edges (no samples, one sample, no limits, equal values, unsorted input).

use policy::ExitKind;
use serde_json::{Value, json};

use super::*;

/// The end of every test's window.
const NOW: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;
const MB: u64 = 1024 * 1024;

fn params() -> Params {
    Params::day_until(NOW)
}

fn server(memory_mb: Option<u64>, cpu_percent: Option<u32>) -> ServerHistory {
    ServerHistory {
        server: "alpha".to_owned(),
        limits: Limits { memory_mb, cpu_percent, ..Limits::default() },
        ..ServerHistory::default()
    }
}

/// `n` samples a minute apart, the last at `NOW`, each from `f(i)` = (cpu percent, RSS in MiB).
fn samples(n: usize, f: impl Fn(usize) -> (f64, f64)) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let (cpu_percent, rss_mb) = f(i);
            Sample { at_ms: NOW - (n - 1 - i) as i64 * MIN, cpu_percent, rss_bytes: (rss_mb * MB as f64) as u64 }
        })
        .collect()
}

fn steady(n: usize, cpu: f64, rss_mb: f64) -> Vec<Sample> {
    samples(n, |_| (cpu, rss_mb))
}

/// Exits an hour apart, the last an hour before `NOW`.
fn exits(kinds: &[ExitKind]) -> Vec<Exit> {
    let n = kinds.len() as i64;
    kinds.iter().enumerate().map(|(i, &kind)| Exit { at_ms: NOW - (n - i as i64) * 60 * MIN, kind }).collect()
}

/// One case of a rule's table: a history and what the rule must recommend (kind and change), or nothing.
struct Case {
    name: &'static str,
    history: ServerHistory,
    expect: Option<(Kind, Severity, Value)>,
}

fn case(name: &'static str, history: ServerHistory, expect: Option<(Kind, Severity, Value)>) -> Case {
    Case { name, history, expect }
}

/// Runs a rule's table: of the recommendations of `kinds`, exactly the expected one (or none).
fn check(kinds: &[Kind], cases: Vec<Case>) {
    for c in cases {
        let recs: Vec<Recommendation> =
            recommend(&params(), &c.history).into_iter().filter(|r| kinds.contains(&r.kind)).collect();
        let got: Vec<(Kind, Severity, Value)> = recs.iter().map(|r| (r.kind, r.severity, r.change.clone())).collect();
        assert_eq!(got, c.expect.clone().into_iter().collect::<Vec<_>>(), "case `{}`: {recs:#?}", c.name);
        for r in &recs {
            assert_eq!(r.server, "alpha", "{}", c.name);
            let (from, to) = (r.evidence["from_ms"].as_i64(), r.evidence["to_ms"].as_i64());
            assert!(from.is_some() && to.is_some() && from <= to, "case `{}`: a time range: {}", c.name, r.evidence);
            assert!(r.summary.starts_with("alpha"), "case `{}`: {}", c.name, r.summary);
            assert!(!r.summary.contains('\n') && !r.summary.ends_with('.'), "one sentence: {}", r.summary);
        }
    }
}

fn memory_mb(mb: u64) -> Value {
    json!({ "resource_limits": { "memory_mb": mb } })
}

fn cpu_percent(percent: u32) -> Value {
    json!({ "resource_limits": { "cpu_percent": percent } })
}

#[test]
fn memory_limits_follow_p99_rss_with_headroom() {
    let raise = |mb| Some((Kind::MemoryRaise, Severity::Warning, memory_mb(mb)));
    let lower = |mb| Some((Kind::MemoryLower, Severity::Info, memory_mb(mb)));
    let oom = |mb| Some((Kind::MemoryRaise, Severity::Critical, memory_mb(mb)));
    let with = |limit, samples, exits| ServerHistory { samples, exits, ..server(limit, None) };
    let mut spike = steady(100, 1.0, 100.0);
    spike[40].rss_bytes = 500 * MB;
    let mut unsorted = steady(60, 1.0, 240.0);
    unsorted.reverse();
    unsorted.swap(3, 40);
    check(
        &[Kind::MemoryRaise, Kind::MemoryLower],
        vec![
            // 240 × 1.3 = 312, rounded up to 320.
            case("p99 above 90% raises", with(Some(256), steady(60, 1.0, 240.0), vec![]), raise(320)),
            case("unsorted samples are the same history", with(Some(256), unsorted, vec![]), raise(320)),
            case("p99 at exactly 90% is not above it", with(Some(100), steady(60, 1.0, 90.0), vec![]), None),
            case("p99 between the shares is right", with(Some(256), steady(60, 1.0, 150.0), vec![]), None),
            case(
                "p99 is the 99th percentile, not the mean",
                with(Some(256), samples(100, |i| (1.0, if i < 98 { 100.0 } else { 250.0 })), vec![]),
                // Rank 99 of 100 is 250: 325 rounded up to 336.
                raise(336),
            ),
            // 100 × 1.3 = 130, rounded up to 144.
            case("p99 below 40% lowers", with(Some(512), steady(60, 1.0, 100.0), vec![]), lower(144)),
            case("one spike in a hundred samples does not set the limit", with(Some(512), spike, vec![]), lower(144)),
            case("p99 at exactly 40% is not below it", with(Some(100), steady(60, 1.0, 40.0), vec![]), None),
            case("a lowered limit is at least 32 MiB", with(Some(256), steady(60, 1.0, 5.0), vec![]), lower(32)),
            case("no change when rounding gives the limit back", with(Some(32), steady(60, 1.0, 10.0), vec![]), None),
            case("29 samples are too few", with(Some(256), steady(29, 1.0, 250.0), vec![]), None),
            case("30 samples are enough", with(Some(256), steady(30, 1.0, 250.0), vec![]), raise(336)),
            case("no samples, no limit: nothing", with(None, vec![], vec![]), None),
            case("no samples: nothing", with(Some(256), vec![], vec![]), None),
            case("one sample: nothing", with(Some(256), steady(1, 1.0, 250.0), vec![]), None),
            case("without a limit nothing is judged", with(None, steady(60, 1.0, 250.0), vec![]), None),
            case(
                "without a limit even kills are not judged",
                with(None, vec![], exits(&[ExitKind::MemoryLimit])),
                None,
            ),
            // Kills mean the samples missed the peak: at least 1.5 × the limit, even with few samples.
            case(
                "one kill raises by half",
                with(Some(256), steady(3, 1.0, 100.0), exits(&[ExitKind::MemoryLimit])),
                oom(384),
            ),
            case(
                "a kill with p99 above half again takes p99",
                with(Some(256), steady(60, 1.0, 300.0), exits(&[ExitKind::MemoryLimit])),
                oom(400),
            ),
            case(
                "a kill is not a reason to lower",
                with(Some(512), steady(60, 1.0, 20.0), exits(&[ExitKind::MemoryLimit])),
                oom(768),
            ),
            case(
                "other exits are not kills",
                with(Some(256), steady(60, 1.0, 150.0), exits(&[ExitKind::Signal(9), ExitKind::Code(137)])),
                None,
            ),
            case(
                "samples outside the window are ignored",
                with(
                    Some(256),
                    steady(60, 1.0, 250.0)
                        .into_iter()
                        .map(|s| Sample { at_ms: s.at_ms - DEFAULT_WINDOW_MS - MIN, ..s })
                        .chain(steady(60, 1.0, 250.0).into_iter().map(|s| Sample { at_ms: s.at_ms + 60 * MIN, ..s }))
                        .collect(),
                    vec![],
                ),
                None,
            ),
        ],
    );
}

#[test]
fn memory_evidence_has_the_numbers_and_notes_the_host_ceiling() {
    let mut h = ServerHistory { samples: steady(60, 1.0, 240.0), ..server(Some(256), None) };
    h.limits.host_memory_mb = Some(256);
    let rec = recommend(&params(), &h).into_iter().find(|r| r.kind == Kind::MemoryRaise).expect("a raise");
    let e = &rec.evidence;
    assert_eq!(e["samples"], 60);
    assert_eq!(e["limit_mb"], 256);
    assert_eq!(e["new_limit_mb"], 320);
    assert_eq!(e["p99_bytes"], 240 * MB);
    assert_eq!(e["p50_bytes"], 240 * MB);
    assert_eq!(e["max_bytes"], 240 * MB);
    assert_eq!(e["oom_kills"], 0);
    assert_eq!(e["host_ceiling"], 256);
    assert_eq!((e["from_ms"].as_i64(), e["to_ms"].as_i64()), (Some(NOW - 59 * MIN), Some(NOW)));
    assert_eq!(
        rec.summary,
        "alpha's memory peaks near its limit: p99 RSS 240 MiB is 93.8% of 256 MiB over 59 min (60 samples); \
         raise resource_limits.memory_mb to 320 (above this host's ceiling of 256: raise \
         mcp_hosting.resource_limits.memory_mb too)"
    );
}

#[test]
fn cpu_quotas_follow_p95_cpu() {
    let raise = |p| Some((Kind::CpuRaise, Severity::Warning, cpu_percent(p)));
    let lower = |p| Some((Kind::CpuLower, Severity::Info, cpu_percent(p)));
    let with = |quota, samples| ServerHistory { samples, ..server(None, quota) };
    check(
        &[Kind::CpuRaise, Kind::CpuLower],
        vec![
            case("p95 at the quota doubles it", with(Some(50), steady(60, 48.0, 10.0)), raise(100)),
            case("p95 at exactly 90% is saturated", with(Some(50), steady(60, 45.0, 10.0)), raise(100)),
            case(
                "p95, not the peaks, decides",
                with(Some(50), samples(100, |i| (if i < 95 { 20.0 } else { 50.0 }, 10.0))),
                None,
            ),
            case(
                "p95 counts the top 5%",
                with(Some(50), samples(100, |i| (if i < 94 { 20.0 } else { 50.0 }, 10.0))),
                raise(100),
            ),
            case("p95 between the shares is right", with(Some(50), steady(60, 30.0, 10.0)), None),
            // 12 × 2 = 24, rounded up to 25.
            case("p95 below 25% lowers to twice p95", with(Some(50), steady(60, 12.0, 10.0)), lower(25)),
            case("p95 at exactly 25% is not below it", with(Some(100), steady(60, 25.0, 10.0)), None),
            case("several cores", with(Some(200), steady(60, 20.0, 10.0)), lower(40)),
            case("a lowered quota is at least 10%", with(Some(50), steady(60, 0.0, 10.0)), lower(10)),
            case("no change when the floor is the quota", with(Some(10), steady(60, 1.0, 10.0)), None),
            case("29 samples are too few", with(Some(50), steady(29, 50.0, 10.0)), None),
            case("no quota: nothing", with(None, steady(60, 50.0, 10.0)), None),
            case("no samples: nothing", with(Some(50), vec![]), None),
            case("one sample: nothing", with(Some(50), steady(1, 50.0, 10.0)), None),
            case("above the quota (bursts) is saturated too", with(Some(50), steady(60, 70.0, 10.0)), raise(100)),
        ],
    );
    let mut h = with(Some(100), steady(60, 99.0, 10.0));
    h.limits.host_cpu_percent = Some(100);
    let rec = recommend(&params(), &h).into_iter().find(|r| r.kind == Kind::CpuRaise).expect("a raise");
    assert_eq!(rec.evidence["host_ceiling"], 100);
    assert_eq!(rec.evidence["p95_percent"], 99.0);
    assert_eq!(rec.evidence["quota_percent"], 100);
    assert!(rec.summary.contains("raise mcp_hosting.resource_limits.cpu_percent too"), "{}", rec.summary);
}

#[test]
fn a_steady_climb_towards_the_limit_is_a_leak() {
    let leak = |severity| Some((Kind::MemoryLeak, severity, json!({ "auto_restart": true })));
    // `n` samples a minute apart climbing linearly from `from` to `to` MiB.
    let climb =
        |n: usize, from: f64, to: f64| samples(n, move |i| (1.0, from + (to - from) * i as f64 / (n - 1) as f64));
    let with = |limit, samples, exits| ServerHistory { samples, exits, ..server(limit, None) };
    let restart_at = |at_ms| vec![Exit { at_ms, kind: ExitKind::Signal(15) }];
    check(
        &[Kind::MemoryLeak],
        vec![
            // 100 MiB an hour from 300 MiB: 512 in about 2 h.
            case(
                "fast growth reaches the limit within hours",
                with(Some(512), climb(121, 100.0, 300.0), vec![]),
                leak(Severity::Critical),
            ),
            // 50 MiB an hour from 200 MiB: 512 in about 6 h 14 min.
            case(
                "slower growth within a day is a warning",
                with(Some(512), climb(121, 100.0, 200.0), vec![]),
                leak(Severity::Warning),
            ),
            // 5 MiB an hour: 80 h.
            case("growth past a day can wait", with(Some(512), climb(121, 100.0, 110.0), vec![]), None),
            case("already over the limit", with(Some(512), climb(121, 400.0, 600.0), vec![]), leak(Severity::Critical)),
            case(
                "a sawtooth is not a straight line",
                with(
                    Some(512),
                    samples(121, |i| (1.0, if i % 2 == 0 { 100.0 } else { 400.0 } + i as f64 * 0.5)),
                    vec![],
                ),
                None,
            ),
            case("falling memory is no leak", with(Some(512), climb(121, 400.0, 100.0), vec![]), None),
            case("all-equal samples are no leak", with(Some(512), steady(121, 1.0, 500.0), vec![]), None),
            case("29 minutes are too short", with(Some(512), climb(30, 100.0, 500.0), vec![]), None),
            case("30 minutes are enough", with(Some(512), climb(31, 100.0, 500.0), vec![]), leak(Severity::Critical)),
            case(
                "9 samples are too few",
                with(
                    Some(512),
                    climb(9, 100.0, 500.0)
                        .into_iter()
                        .enumerate()
                        .map(|(i, s)| Sample { at_ms: NOW - (8 - i as i64) * 10 * MIN, ..s })
                        .collect(),
                    vec![],
                ),
                None,
            ),
            case("without a limit nothing is judged", with(None, climb(121, 100.0, 300.0), vec![]), None),
            case("no samples: nothing", with(Some(512), vec![], vec![]), None),
            case("one sample: nothing", with(Some(512), steady(1, 1.0, 500.0), vec![]), None),
            case(
                "a climb before the last restart is history",
                with(Some(512), climb(121, 100.0, 300.0), restart_at(NOW - 20 * MIN)),
                None,
            ),
            case(
                "the climb after the last restart counts",
                with(
                    Some(512),
                    samples(181, |i| (1.0, if i < 60 { 300.0 } else { 100.0 + 200.0 * (i - 60) as f64 / 120.0 })),
                    restart_at(NOW - 121 * MIN),
                ),
                leak(Severity::Critical),
            ),
        ],
    );
    let h = with(Some(512), climb(121, 100.0, 300.0), vec![]);
    let rec = recommend(&params(), &h).into_iter().find(|r| r.kind == Kind::MemoryLeak).expect("a leak");
    let e = &rec.evidence;
    let slope = e["slope_bytes_per_hour"].as_f64().expect("slope");
    assert!((slope / MB as f64 - 100.0).abs() < 0.01, "{e}");
    assert!(e["r2"].as_f64().expect("r2") > 0.999, "{e}");
    assert!((e["hours_to_limit"].as_f64().expect("hours") - 2.12).abs() < 0.01, "{e}");
    let reaches = e["reaches_limit_at_ms"].as_i64().expect("when");
    assert!((reaches - (NOW + 7_632_000)).abs() < 1_000, "2.12 h after the last sample: {e}");
    assert_eq!(e["samples"], 121);
    assert_eq!((e["from_ms"].as_i64(), e["to_ms"].as_i64()), (Some(NOW - 120 * MIN), Some(NOW)));
    assert_eq!(
        rec.summary,
        "alpha's memory grows steadily, 100 MiB an hour (r² 1.00 over 2 h), and would reach its 512 MiB limit in about \
         2 h 7 min: look for a leak; meanwhile auto_restart brings it back when the limit kills it"
    );
}

#[test]
fn repeated_abnormal_exits_are_a_crash_loop_with_a_change_for_their_cause() {
    use ExitKind::{Code, HealthCheck, MemoryLimit, Signal, StartTimeout};
    let crash = |change| Some((Kind::CrashLoop, Severity::Critical, change));
    let with = |kinds: &[ExitKind]| ServerHistory { exits: exits(kinds), ..server(Some(256), None) };
    let backoff = json!({ "backoff": "exponential", "restart_delay": 10, "max_restart_delay": 300 });
    let mut slow_start = with(&[StartTimeout, StartTimeout, StartTimeout]);
    slow_start.settings.start_timeout_ms = Some(45_000);
    let mut strict_health = with(&[HealthCheck, HealthCheck, HealthCheck, Code(1)]);
    strict_health.settings.failures_before_restart = Some(4);
    let mut old = with(&[Code(1), Code(1), Code(1)]);
    old.exits.iter_mut().for_each(|e| e.at_ms -= DEFAULT_WINDOW_MS);
    check(
        &[Kind::CrashLoop],
        vec![
            case("two exits are not a loop", with(&[Code(1), Code(1)]), None),
            case(
                "three of one code: restarting cannot help",
                with(&[Code(1), Code(1), Code(1)]),
                crash(json!({ "auto_restart": false })),
            ),
            case("three of one signal likewise", with(&[Signal(11); 3]), crash(json!({ "auto_restart": false }))),
            case(
                "kills for memory raise it",
                with(&[MemoryLimit, Code(1), MemoryLimit, MemoryLimit, MemoryLimit]),
                crash(memory_mb(384)),
            ),
            case(
                "health kills allow more failures",
                with(&[HealthCheck; 3]),
                crash(json!({ "failures_before_restart": 5 })),
            ),
            case("from the server's own failure count", strict_health, crash(json!({ "failures_before_restart": 6 }))),
            case("slow starts get twice the start timeout", slow_start, crash(json!({ "start_timeout": 90 }))),
            case(
                "mixed causes slow the restarts down",
                with(&[Code(1), Signal(11), Code(2), Signal(11), Code(1)]),
                crash(backoff.clone()),
            ),
            case(
                "clean exits are no crashes",
                with(&[Code(0), Signal(15), Signal(2), Code(0), Signal(1), Signal(13)]),
                None,
            ),
            case("exits before the window are history", old, None),
        ],
    );
    let rec = recommend(&params(), &with(&[Code(1), Signal(11), Code(2), Signal(11), Code(1)]))
        .into_iter()
        .find(|r| r.kind == Kind::CrashLoop)
        .expect("a loop");
    // A tie of two goes to the cause seen last.
    assert_eq!(rec.evidence["dominant_cause"], "exit_code_1");
    assert_eq!(rec.evidence["dominant_count"], 2);
    assert_eq!(rec.evidence["dominant_share"], 0.4);
    assert_eq!(rec.evidence["exits"], 5);
    assert_eq!(
        rec.evidence["causes"],
        json!([{"cause": "exit_code_1", "count": 2}, {"cause": "signal_11", "count": 2}, {"cause": "exit_code_2", "count": 1}])
    );
    assert_eq!(rec.evidence["first_exit_ms"].as_i64(), Some(NOW - 5 * 60 * MIN));
    assert_eq!(rec.evidence["last_exit_ms"].as_i64(), Some(NOW - 60 * MIN));
    let rec = recommend(&params(), &with(&[MemoryLimit, Code(1), MemoryLimit, MemoryLimit, MemoryLimit]))
        .into_iter()
        .find(|r| r.kind == Kind::CrashLoop)
        .expect("a loop");
    assert_eq!(
        rec.summary,
        "alpha exited abnormally 5 times in 24 h, most often killed for exceeding its memory limit (4 of 5, 80%): \
         raise resource_limits.memory_mb to 384"
    );
}

#[test]
fn health_that_fails_and_recovers_again_and_again_is_flapping() {
    let flapping = |change| Some((Kind::FlappingHealth, Severity::Warning, change));
    let with = |failures: &[i64], health_kills: usize| ServerHistory {
        health_failures: failures.iter().map(|m| NOW - m * MIN).collect(),
        exits: exits(&vec![ExitKind::HealthCheck; health_kills]),
        ..server(None, None)
    };
    let mut slow = with(&[5, 50, 500, 900, 1000], 0);
    slow.settings.health_timeout_ms = Some(20_000);
    slow.settings.health_interval_ms = Some(30_000);
    check(
        &[Kind::FlappingHealth],
        vec![
            case("two failures are noise", with(&[10, 20], 0), None),
            case(
                "three recovered failures flap",
                with(&[10, 200, 30], 0),
                flapping(json!({ "health_check_timeout": 10, "health_check_interval": 30 })),
            ),
            case("failures that ended in a restart did not recover", with(&[10, 20, 30, 40], 2), None),
            case(
                "the timeout doubles and the interval stays above twice it",
                slow,
                flapping(json!({ "health_check_timeout": 40, "health_check_interval": 80 })),
            ),
            case("failures before the window are history", with(&[2000, 2001, 2002], 0), None),
        ],
    );
}

#[test]
fn a_server_without_calls_for_long_is_idle_when_calls_are_counted() {
    let idle = Some((Kind::Idle, Severity::Info, json!({ "action": "stop" })));
    let day = 24 * 60 * MIN;
    let with =
        |last_call: Option<i64>| ServerHistory { last_call_ms: last_call.map(|ago| NOW - ago), ..server(None, None) };
    for (name, idle_after, history, expect) in [
        ("calls not counted: never idle", Some(day), with(None), None),
        ("no threshold: never idle", None, with(Some(10 * day)), None),
        ("two days without a call", Some(day), with(Some(2 * day)), idle.clone()),
        ("exactly the threshold", Some(day), with(Some(day)), idle.clone()),
        ("a call an hour ago", Some(day), with(Some(60 * MIN)), None),
        ("a call from the future", Some(day), with(Some(-MIN)), None),
        (
            "no call since it came up two days ago",
            Some(day),
            ServerHistory { calls_counted_since_ms: Some(NOW - 2 * day), ..server(None, None) },
            idle.clone(),
        ),
        (
            "up for an hour without a call",
            Some(day),
            ServerHistory { calls_counted_since_ms: Some(NOW - 60 * MIN), ..server(None, None) },
            None,
        ),
        (
            "a recent call counts over an old start",
            Some(day),
            ServerHistory {
                last_call_ms: Some(NOW - MIN),
                calls_counted_since_ms: Some(NOW - 2 * day),
                ..server(None, None)
            },
            None,
        ),
    ] {
        let params = Params { idle_after_ms: idle_after, ..params() };
        let got: Vec<_> = recommend(&params, &history)
            .into_iter()
            .filter(|r| r.kind == Kind::Idle)
            .map(|r| (r.kind, r.severity, r.change))
            .collect();
        assert_eq!(got, expect.into_iter().collect::<Vec<_>>(), "{name}");
    }
    let params = Params { idle_after_ms: Some(day), ..params() };
    let rec = recommend(&params, &with(Some(3 * day + 4 * 60 * MIN))).pop().expect("idle");
    assert_eq!(
        rec.summary,
        "alpha has had no tool call for 3 d 4 h (idle after 24 h, mcp_hosting.idle_after): stop it to free its memory and CPU"
    );
    assert_eq!(rec.evidence["idle_ms"].as_i64(), Some(3 * day + 4 * 60 * MIN));
}

#[test]
fn an_empty_history_recommends_nothing() {
    assert_eq!(recommend(&params(), &ServerHistory::default()), vec![]);
    assert_eq!(recommend(&params(), &server(Some(256), Some(50))), vec![]);
    assert_eq!(recommend_all(&params(), &[]), vec![]);
}

#[test]
fn recommendations_are_deterministic_and_ordered_server_by_server() {
    let mut busy = ServerHistory {
        samples: steady(60, 49.0, 250.0),
        exits: exits(&[ExitKind::MemoryLimit; 3]),
        health_failures: vec![NOW - MIN, NOW - 2 * MIN, NOW - 3 * MIN],
        ..server(Some(256), Some(50))
    };
    let quiet =
        ServerHistory { server: "beta".to_owned(), samples: steady(60, 1.0, 20.0), ..server(Some(512), Some(100)) };
    let first = recommend_all(&params(), &[busy.clone(), quiet.clone()]);
    busy.samples.reverse();
    busy.exits.reverse();
    busy.health_failures.reverse();
    assert_eq!(recommend_all(&params(), &[busy, quiet]), first, "the order of the input does not matter");
    let kinds: Vec<(&str, Kind)> = first.iter().map(|r| (r.server.as_str(), r.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            ("alpha", Kind::CrashLoop),
            ("alpha", Kind::MemoryRaise),
            ("alpha", Kind::CpuRaise),
            ("alpha", Kind::FlappingHealth),
            ("beta", Kind::MemoryLower),
            ("beta", Kind::CpuLower),
        ]
    );
}

#[test]
fn recommendations_serialise_with_snake_case_names() {
    let rec = Recommendation {
        server: "alpha".to_owned(),
        kind: Kind::FlappingHealth,
        severity: Severity::Critical,
        summary: "s".to_owned(),
        evidence: json!({}),
        change: json!({}),
    };
    let value = serde_json::to_value(&rec).expect("serialise");
    assert_eq!(value["kind"], "flapping_health");
    assert_eq!(value["severity"], "critical");
    assert_eq!(serde_json::from_value::<Recommendation>(value).expect("deserialise"), rec);
    for (kind, name) in [
        (Kind::MemoryRaise, "memory_raise"),
        (Kind::MemoryLower, "memory_lower"),
        (Kind::CpuRaise, "cpu_raise"),
        (Kind::CpuLower, "cpu_lower"),
        (Kind::MemoryLeak, "memory_leak"),
        (Kind::CrashLoop, "crash_loop"),
        (Kind::Idle, "idle"),
    ] {
        assert_eq!(serde_json::to_value(kind).expect("kind"), json!(name));
    }
    assert!(Severity::Critical > Severity::Warning && Severity::Warning > Severity::Info);
}

#[test]
fn every_change_is_a_valid_server_config_fragment() {
    let histories = [
        ServerHistory { samples: steady(60, 49.0, 250.0), ..server(Some(256), Some(50)) },
        ServerHistory { samples: steady(60, 1.0, 20.0), ..server(Some(512), Some(100)) },
        ServerHistory {
            samples: samples(121, |i| (1.0, 100.0 + i as f64)),
            exits: exits(&[ExitKind::HealthCheck; 3]),
            health_failures: (1..=6).map(|m| NOW - m * MIN).collect(),
            ..server(Some(256), None)
        },
        ServerHistory { exits: exits(&[ExitKind::MemoryLimit; 3]), ..server(Some(256), None) },
        ServerHistory { exits: exits(&[ExitKind::StartTimeout; 3]), ..server(Some(256), None) },
        ServerHistory { exits: exits(&[ExitKind::Code(1); 3]), ..server(Some(256), None) },
        ServerHistory {
            exits: exits(&[ExitKind::Code(1), ExitKind::Code(2), ExitKind::Code(3)]),
            ..server(Some(256), None)
        },
    ];
    let recs = recommend_all(&params(), &histories);
    let kinds: std::collections::HashSet<Kind> = recs.iter().map(|r| r.kind).collect();
    assert_eq!(kinds.len(), 7, "every kind but idle is covered: {kinds:?}");
    for rec in recs {
        let mut spec = json!({
            "name": "alpha",
            "command": ["python", "server.py"],
            "health_check_url": "http://127.0.0.1:8080/health",
            "resource_limits": {"memory_mb": 256, "max_processes": 8},
        });
        config::apply_overrides(&mut spec, &rec.change).expect("an object");
        let parsed = config::parse_server_config_value(&spec).unwrap_or_else(|e| panic!("{:?}: {e}", rec.kind));
        assert_eq!(parsed.warnings, vec![], "{:?}: {}", rec.kind, rec.change);
        if let Some(mb) = rec.change["resource_limits"]["memory_mb"].as_u64() {
            assert_eq!(parsed.value.resource_limits.memory_mb, Some(mb));
            assert_eq!(parsed.value.resource_limits.max_processes, Some(8), "merged key by key");
        }
    }
}

#[test]
fn helpers_round_and_describe() {
    for (ms, text) in [
        (0, "0 s"),
        (59_999, "59 s"),
        (60_000, "1 min"),
        (3_599_000, "59 min"),
        (3_600_000, "1 h"),
        (7_620_000, "2 h 7 min"),
        (86_400_000, "24 h"),
        (172_800_000, "2 d"),
        (273_600_000, "3 d 4 h"),
        (-5, "0 s"),
    ] {
        assert_eq!(human(ms), text, "{ms}");
    }
    for (x, step, rounded) in
        [(0.0, 16, 0), (0.1, 16, 16), (16.0, 16, 16), (16.01, 16, 32), (312.0, 16, 320), (-3.0, 5, 0)]
    {
        assert_eq!(round_up(x, step), rounded, "{x} by {step}");
    }
    let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!((percentile(&sorted, 0.5), percentile(&sorted, 0.95), percentile(&sorted, 0.99)), (50.0, 95.0, 99.0));
    assert_eq!(percentile(&[7.0], 0.99), 7.0);
    assert_eq!(Spread::of(vec![f64::NAN]), None, "nothing finite, no spread");
    assert_eq!(fit(&[(1.0, 5.0), (1.0, 9.0)]), None, "one time, no line");
    assert_eq!(fit(&[(0.0, 5.0), (1.0, 5.0)]), Some(Fit { slope: 0.0, intercept: 5.0, r2: 1.0 }));
    let line = fit(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]).expect("a line");
    assert_eq!((line.slope, line.intercept, line.r2), (2.0, 1.0, 1.0));
}
