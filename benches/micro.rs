//! Criterion micro-benchmarks for regressions: the pure restart decision and in-process supervisor round trips.
//!
//! Run with `cargo bench --bench micro`; `cargo bench --bench micro -- exited` runs a subset.
//! Without `--bench` (as under `cargo test --benches`) criterion runs each benchmark once.

use std::hint::black_box;
use std::time::{Duration, Instant};

use actors::{LogSpec, ServerSpec, SupervisorConfig, SupervisorHandle};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use policy::{Decision, ExitKind, History, PolicyConfig, RestartMode, RestartPolicy};

fn policy(cfg: PolicyConfig) -> RestartPolicy {
    RestartPolicy::new(cfg).expect("the bench's policy is valid").0
}

/// A history that has been through `restarts` crash-and-restart cycles `step_ms` apart, ending ready.
fn warmed(policy: &RestartPolicy, restarts: u64, step_ms: u64) -> (History, u64) {
    let mut history = History::new();
    let mut now = 0;
    let generation = history.admin_start(now);
    history.ready(generation, now);
    for _ in 0..restarts {
        now += step_ms;
        let generation = history.generation();
        match history.exited(policy, generation, ExitKind::Code(1), now, 0) {
            Decision::Restart { generation, .. } => {
                history.timer_fired(generation);
                history.ready(generation, now);
            }
            other => panic!("warming up must only restart, got {other:?}"),
        }
    }
    (history, now + step_ms)
}

fn decisions(c: &mut Criterion) {
    let cases = [
        (
            "exited/fast loop (always, 1e6 per 1 ms, 1000 restarts behind)",
            PolicyConfig {
                mode: RestartMode::Always,
                max_restarts: 1_000_000,
                restart_window_ms: 1,
                restart_delay_ms: 0,
                ..PolicyConfig::default()
            },
            1000,
        ),
        ("exited/default policy (5 per 60 s, 4 in the window)", PolicyConfig::default(), 4),
        (
            "exited/big budget (1000 per 60 s, 999 in the window)",
            PolicyConfig { max_restarts: 1000, restart_delay_ms: 0, ..PolicyConfig::default() },
            999,
        ),
    ];
    for (name, cfg, restarts) in cases {
        let policy = policy(cfg);
        let (history, now) = warmed(&policy, restarts, 1);
        c.bench_function(name, |b| {
            b.iter_batched_ref(
                || history.clone(),
                |h| {
                    let generation = h.generation();
                    black_box(h.exited(&policy, generation, ExitKind::Code(1), black_box(now), 0))
                },
                BatchSize::SmallInput,
            );
        });
    }
    let fast = policy(PolicyConfig {
        mode: RestartMode::Always,
        max_restarts: 1_000_000,
        restart_window_ms: 1,
        restart_delay_ms: 0,
        ..PolicyConfig::default()
    });
    let (mut history, mut now) = warmed(&fast, 1000, 1);
    c.bench_function("cycle/exited + timer_fired + ready (fast loop)", |b| {
        b.iter(|| {
            now += 1;
            let generation = history.generation();
            if let Decision::Restart { generation, .. } =
                history.exited(&fast, generation, ExitKind::Code(1), black_box(now), 0)
            {
                history.timer_fired(generation);
                history.ready(generation, now);
            }
        });
    });
}

fn round_trips(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let servers = 500;
    let sup = runtime.block_on(async {
        let sup = SupervisorHandle::spawn(SupervisorConfig::default()).await.expect("the supervisor starts");
        // Added, never started: a status query touches no process.
        for n in 0..servers {
            let id = format!("server-{n:03}");
            let mut spec = ServerSpec::new(
                id.clone(),
                vec!["/bin/true".into()],
                dir.path(),
                LogSpec::in_dir(dir.path().join(&id)),
            );
            spec.transport = actors::Transport::None;
            sup.add(spec).await.expect("adding a server");
        }
        sup
    });
    c.bench_function("supervisor/status round trip (500 servers added)", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(sup.status("server-250").await.expect("status"));
                }
                started.elapsed()
            })
        });
    });
    c.bench_function("supervisor/list round trip (500 servers, as /healthz)", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    black_box(sup.list().await.expect("list"));
                }
                started.elapsed()
            })
        });
    });
    runtime.block_on(async {
        let _ = sup.shutdown().await;
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = decisions, round_trips
}
criterion_main!(benches);
