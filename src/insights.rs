//! Resource recommendations from a server's history: pure functions of the samples, exits and
//! health failures they are given, and of `now_ms`.
//!
//! Nothing here reads a clock, a file or the store, and nothing is random: the caller
//! (`app/optimize.rs`) loads the history and records the results, and the tests feed tables of
//! histories. Every [`Recommendation`] carries its evidence (the numbers and the time range they
//! come from) and a change to make, a `server_config.json` fragment such as
//! `{"resource_limits": {"memory_mb": 384}}` (idle servers get `{"action": "stop"}`, an operation
//! rather than a setting).
//!
//! The rules, each with its thresholds as named constants below:
//! - **memory**: p99 of RSS near the limit, or kills for exceeding it → raise; p99 far below it → lower.
//! - **cpu**: p95 of CPU at the quota (throttled) → raise; far below it → lower.
//! - **leak**: RSS of the current incarnation rising in a straight line that reaches the limit within a day.
//! - **crash loop**: several abnormal exits in the window, with the dominant cause and a change that fits it.
//! - **flapping health**: health checks that fail and recover again and again without a restart.
//! - **idle**: no tool call for longer than `idle_after` (only when the time of the last call is known).
//!
//! Stored history older than an hour is kept as minute averages, which smooth short peaks: the
//! percentiles of a long window lean low, which the memory headroom allows for.

#[cfg(test)]
mod tests;

use policy::ExitKind;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const MIB: f64 = 1024.0 * 1024.0;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;

/// How far back an analysis looks by default: a day covers a daily cycle of load.
pub const DEFAULT_WINDOW_MS: i64 = 24 * HOUR_MS;

/// Samples needed before percentiles of memory or CPU are trusted: at the store's minute
/// averages, half an hour; with fewer, one burst decides the p99.
pub const MIN_SAMPLES: usize = 30;

/// Raise the memory limit when p99 RSS is above this share of it: the next peak is a kill.
pub const MEMORY_HIGH_SHARE: f64 = 0.90;
/// Lower the memory limit when p99 RSS is below this share of it: more than half the reservation
/// is never used, even at peaks.
pub const MEMORY_LOW_SHARE: f64 = 0.40;
/// A new memory limit is p99 RSS times this: room for the peaks that minute averages hide and
/// for growth between reviews. It puts p99 at 77% of the new limit, between the two shares above,
/// so a limit set by one recommendation does not trigger the opposite one.
pub const MEMORY_HEADROOM: f64 = 1.3;
/// After kills for exceeding the limit, the new limit is at least the old one times this: the
/// samples never saw the peak that was killed.
pub const OOM_RAISE_FACTOR: f64 = 1.5;
/// Memory limits are rounded up to this many MiB, so recommendations are plain numbers.
pub const MEMORY_STEP_MB: u64 = 16;
/// Never recommend less memory than this: an interpreter and its MCP SDK need about that much.
pub const MEMORY_FLOOR_MB: u64 = 32;

/// Raise the CPU quota when p95 CPU is at or above this share of it: the server spends much of
/// its time throttled.
pub const CPU_SATURATED_SHARE: f64 = 0.90;
/// Lower the CPU quota when p95 CPU is below this share of it.
pub const CPU_IDLE_SHARE: f64 = 0.25;
/// A throttled server gets its quota times this: its real demand is hidden behind the quota, so
/// the only sound step is a large one, reviewed again with the next history.
pub const CPU_RAISE_FACTOR: f64 = 2.0;
/// A lowered quota is p95 CPU times this: bursts above the 95th percentile keep room. It puts p95
/// at half the new quota, between the two shares above.
pub const CPU_HEADROOM: f64 = 2.0;
/// CPU quotas are rounded up to this many percent of a core.
pub const CPU_STEP_PERCENT: u32 = 5;
/// Never recommend a quota below this: startup and health checks need some CPU.
pub const CPU_FLOOR_PERCENT: u32 = 10;

/// A leak needs a fit at least this good (r² of RSS against time): a straight, steady climb,
/// not load that comes and goes.
pub const LEAK_MIN_R2: f64 = 0.8;
/// ... over at least this long a stretch of one incarnation, so a warm-up is not called a leak.
pub const LEAK_MIN_SPAN_MS: i64 = 30 * MINUTE_MS;
/// ... with at least this many samples in it.
pub const LEAK_MIN_SAMPLES: usize = 10;
/// ... and a climb that reaches the memory limit within this time; a slower one can wait for
/// the next review.
pub const LEAK_HORIZON_MS: i64 = 24 * HOUR_MS;
/// A leak that reaches the limit within this time is critical.
pub const LEAK_URGENT_MS: i64 = 6 * HOUR_MS;

/// Abnormal exits within the window that make a crash loop: one is an accident, two a
/// coincidence, three a pattern.
pub const CRASH_LOOP_EXITS: usize = 3;
/// When one cause (other than memory, health or start timeouts) makes at least this share of the
/// exits, the failure is deterministic: restarting repeats it, so restarts should stop.
pub const DETERMINISTIC_SHARE: f64 = 0.9;

/// Health failures that recovered without a restart within the window that make the health flap.
pub const FLAPPING_FAILURES: usize = 3;

/// A recommendation's restart backoff for crash loops of mixed causes: slower retries while
/// someone reads the logs. Seconds, as `server_config.json` takes them.
const BACKOFF_RESTART_DELAY_S: u64 = 10;
const BACKOFF_MAX_DELAY_S: u64 = 300;
/// Defaults of `server_config.json` the changes start from when the history does not say.
const DEFAULT_HEALTH_INTERVAL_MS: u64 = 30_000;
const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_FAILURES_BEFORE_RESTART: u32 = 3;
const DEFAULT_START_TIMEOUT_MS: u64 = 30_000;

/// What the analysis of every server shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// The end of the window; nothing later is looked at.
    pub now_ms: i64,
    /// How far back to look: the window is `now_ms - window_ms ..= now_ms`.
    pub window_ms: i64,
    /// A server whose last tool call is older than this is idle; `None` never judges idleness.
    pub idle_after_ms: Option<i64>,
}

impl Params {
    /// The last [`DEFAULT_WINDOW_MS`] before `now_ms`, without idle detection.
    pub fn day_until(now_ms: i64) -> Params {
        Params { now_ms, window_ms: DEFAULT_WINDOW_MS, idle_after_ms: None }
    }

    fn start_ms(&self) -> i64 {
        self.now_ms.saturating_sub(self.window_ms)
    }

    fn contains(&self, at_ms: i64) -> bool {
        (self.start_ms()..=self.now_ms).contains(&at_ms)
    }
}

/// The limits a server runs with; `None` where it has none (or it is not known).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_mb: Option<u64>,
    /// Percent of one core (200 is two cores).
    pub cpu_percent: Option<u32>,
    /// The host's ceilings (`mcp_hosting.resource_limits`): a raise above them must raise them too.
    pub host_memory_mb: Option<u64>,
    pub host_cpu_percent: Option<u32>,
}

/// Settings of the server that a change starts from; `None` means the `server_config.json` default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    pub health_interval_ms: Option<u64>,
    pub health_timeout_ms: Option<u64>,
    pub failures_before_restart: Option<u32>,
    pub start_timeout_ms: Option<u64>,
}

/// One resource sample of a server's process tree (raw, or a minute's average).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at_ms: i64,
    /// Percent of one core.
    pub cpu_percent: f64,
    pub rss_bytes: u64,
}

/// One end of an incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub at_ms: i64,
    pub kind: ExitKind,
}

/// Everything known about one server, in any order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerHistory {
    pub server: String,
    pub limits: Limits,
    pub settings: Settings,
    pub samples: Vec<Sample>,
    /// Every exit, clean ones included (they separate incarnations).
    pub exits: Vec<Exit>,
    /// When a health check failed while the server was running (each `running → unhealthy`).
    pub health_failures: Vec<i64>,
    /// When the server last answered a tool call, if anyone counted.
    pub last_call_ms: Option<i64>,
    /// Since when its tool calls are counted (it came up reachable): with no call since, it has
    /// been idle from then.
    pub calls_counted_since_ms: Option<i64>,
}

/// What a recommendation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    MemoryRaise,
    MemoryLower,
    CpuRaise,
    CpuLower,
    MemoryLeak,
    CrashLoop,
    FlappingHealth,
    Idle,
}

/// How soon to act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Saves resources; nothing is wrong.
    Info,
    /// Will go wrong, or goes wrong now and then.
    Warning,
    /// Goes wrong now, or within hours.
    Critical,
}

/// One recommendation for one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub server: String,
    pub kind: Kind,
    pub severity: Severity,
    /// One sentence for a person.
    pub summary: String,
    /// The numbers behind it, with `from_ms` and `to_ms`, the time range they come from.
    pub evidence: Value,
    /// What to change: a `server_config.json` fragment, or `{"action": "stop"}`.
    pub change: Value,
}

/// The recommendations for every server, server by server in the order given.
pub fn recommend_all(params: &Params, servers: &[ServerHistory]) -> Vec<Recommendation> {
    servers.iter().flat_map(|h| recommend(params, h)).collect()
}

/// The recommendations for one server: crash loop, memory, leak, CPU, flapping health, idle, in
/// that order, each at most once.
pub fn recommend(params: &Params, history: &ServerHistory) -> Vec<Recommendation> {
    let view = View::new(params, history);
    [crash_loop(&view), memory(&view), leak(&view), cpu(&view), flapping(&view), idle(&view)]
        .into_iter()
        .flatten()
        .collect()
}

/// A server's history cut to the window and sorted.
struct View<'a> {
    params: &'a Params,
    history: &'a ServerHistory,
    samples: Vec<Sample>,
    exits: Vec<Exit>,
}

impl<'a> View<'a> {
    fn new(params: &'a Params, history: &'a ServerHistory) -> View<'a> {
        let mut samples: Vec<Sample> = history.samples.iter().copied().filter(|s| params.contains(s.at_ms)).collect();
        samples.sort_by_key(|s| s.at_ms);
        let mut exits: Vec<Exit> = history.exits.iter().copied().filter(|e| params.contains(e.at_ms)).collect();
        exits.sort_by_key(|e| e.at_ms);
        View { params, history, samples, exits }
    }

    fn server(&self) -> &str {
        &self.history.server
    }

    fn recommendation(
        &self,
        kind: Kind,
        severity: Severity,
        summary: String,
        evidence: Value,
        change: Value,
    ) -> Recommendation {
        Recommendation { server: self.history.server.clone(), kind, severity, summary, evidence, change }
    }

    fn oom_kills(&self) -> usize {
        self.exits.iter().filter(|e| e.kind == ExitKind::MemoryLimit).count()
    }

    fn sample_range(&self) -> (i64, i64) {
        (
            self.samples.first().map_or(self.params.start_ms(), |s| s.at_ms),
            self.samples.last().map_or(self.params.now_ms, |s| s.at_ms),
        )
    }

    /// Percentiles of RSS, when there are samples.
    fn rss(&self) -> Option<Spread> {
        Spread::of(self.samples.iter().map(|s| s.rss_bytes as f64).collect())
    }

    /// The memory limit to raise to: p99 with headroom, and after kills at least the old limit
    /// times [`OOM_RAISE_FACTOR`]; never below the current limit.
    fn memory_raise_mb(&self, limit_mb: u64) -> u64 {
        let from_p99 = self.rss().map_or(0.0, |rss| rss.p99 * MEMORY_HEADROOM / MIB);
        let after_kills = if self.oom_kills() > 0 { limit_mb as f64 * OOM_RAISE_FACTOR } else { 0.0 };
        round_up(from_p99.max(after_kills), MEMORY_STEP_MB).max(limit_mb)
    }
}

/// Order statistics of a set of values.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spread {
    count: usize,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Option<Spread> {
        values.retain(|v| v.is_finite());
        values.sort_by(f64::total_cmp);
        let max = *values.last()?;
        Some(Spread {
            count: values.len(),
            p50: percentile(&values, 0.50),
            p95: percentile(&values, 0.95),
            p99: percentile(&values, 0.99),
            max,
        })
    }
}

/// The nearest-rank percentile of sorted, non-empty values: the smallest value with at least
/// `p` of the values at or below it.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `x` rounded up to a whole multiple of `step` (0 stays 0).
fn round_up(x: f64, step: u64) -> u64 {
    let steps = (x / step as f64).ceil();
    if steps <= 0.0 { 0 } else { steps as u64 * step }
}

fn mib(bytes: f64) -> f64 {
    (bytes / MIB * 10.0).round() / 10.0
}

fn percent(share: f64) -> f64 {
    (share * 1000.0).round() / 10.0
}

/// A duration for people: `45 s`, `12 min`, `2 h 10 min`, `24 h`, `3 d 4 h`.
fn human(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..172_800 if (s % 3600) / 60 == 0 => format!("{} h", s / 3600),
        3600..172_800 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ if (s % 86_400) / 3600 == 0 => format!("{} d", s / 86_400),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Seconds, rounded up, as `server_config.json` takes durations.
fn secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

fn memory(v: &View<'_>) -> Option<Recommendation> {
    let limit_mb = v.history.limits.memory_mb?;
    let limit = limit_mb as f64 * MIB;
    let kills = v.oom_kills();
    let rss = v.rss();
    let enough = rss.is_some_and(|r| r.count >= MIN_SAMPLES);
    let (from_ms, to_ms) = if kills > 0 { (v.params.start_ms(), v.params.now_ms) } else { v.sample_range() };
    let mut evidence = json!({
        "samples": rss.map_or(0, |r| r.count),
        "limit_mb": limit_mb,
        "oom_kills": kills,
        "from_ms": from_ms,
        "to_ms": to_ms,
    });
    if let Some(r) = rss {
        extend(
            &mut evidence,
            json!({
                "p50_bytes": r.p50 as u64, "p95_bytes": r.p95 as u64, "p99_bytes": r.p99 as u64, "max_bytes": r.max as u64,
                "p99_share_of_limit": r.p99 / limit,
            }),
        );
    }
    let high = enough && rss.is_some_and(|r| r.p99 > MEMORY_HIGH_SHARE * limit);
    let low = enough && rss.is_some_and(|r| r.p99 < MEMORY_LOW_SHARE * limit);
    let server = v.server();
    if kills > 0 || high {
        let new_mb = v.memory_raise_mb(limit_mb);
        extend(&mut evidence, json!({ "new_limit_mb": new_mb }));
        let mut summary = match (kills, rss) {
            (0, Some(r)) => format!(
                "{server}'s memory peaks near its limit: p99 RSS {} MiB is {}% of {limit_mb} MiB over {} ({} samples); raise resource_limits.memory_mb to {new_mb}",
                mib(r.p99),
                percent(r.p99 / limit),
                human(to_ms - from_ms),
                r.count
            ),
            (n, _) => format!(
                "{server} was killed {n} time{} in {} for exceeding its {limit_mb} MiB memory limit; raise resource_limits.memory_mb to {new_mb}",
                plural(n),
                human(v.params.window_ms)
            ),
        };
        host_ceiling(&mut summary, &mut evidence, new_mb, v.history.limits.host_memory_mb, "memory_mb");
        let severity = if kills > 0 { Severity::Critical } else { Severity::Warning };
        let change = json!({ "resource_limits": { "memory_mb": new_mb } });
        return Some(v.recommendation(Kind::MemoryRaise, severity, summary, evidence, change));
    }
    let r = rss.filter(|_| low)?;
    let new_mb = round_up((r.p99 * MEMORY_HEADROOM / MIB).max(MEMORY_FLOOR_MB as f64), MEMORY_STEP_MB);
    if new_mb >= limit_mb {
        return None;
    }
    extend(&mut evidence, json!({ "new_limit_mb": new_mb }));
    let summary = format!(
        "{server} uses little of its memory: p99 RSS {} MiB is {}% of {limit_mb} MiB over {} ({} samples); lower resource_limits.memory_mb to {new_mb}",
        mib(r.p99),
        percent(r.p99 / limit),
        human(to_ms - from_ms),
        r.count
    );
    let change = json!({ "resource_limits": { "memory_mb": new_mb } });
    Some(v.recommendation(Kind::MemoryLower, Severity::Info, summary, evidence, change))
}

fn cpu(v: &View<'_>) -> Option<Recommendation> {
    let quota = v.history.limits.cpu_percent?;
    let cpu = Spread::of(v.samples.iter().map(|s| s.cpu_percent).collect()).filter(|c| c.count >= MIN_SAMPLES)?;
    let (from_ms, to_ms) = v.sample_range();
    let share = cpu.p95 / f64::from(quota);
    let mut evidence = json!({
        "samples": cpu.count,
        "p50_percent": cpu.p50, "p95_percent": cpu.p95, "p99_percent": cpu.p99, "max_percent": cpu.max,
        "quota_percent": quota,
        "p95_share_of_quota": share,
        "from_ms": from_ms,
        "to_ms": to_ms,
    });
    let server = v.server();
    let over = human(to_ms - from_ms);
    if share >= CPU_SATURATED_SHARE {
        let new = round_up(f64::from(quota) * CPU_RAISE_FACTOR, u64::from(CPU_STEP_PERCENT));
        let new = u32::try_from(new).unwrap_or(u32::MAX);
        extend(&mut evidence, json!({ "new_quota_percent": new }));
        let mut summary = format!(
            "{server} is held at its CPU quota: p95 CPU {:.1}% of a core is {}% of its {quota}% quota over {over} ({} samples); raise resource_limits.cpu_percent to {new}",
            cpu.p95,
            percent(share),
            cpu.count
        );
        host_ceiling(
            &mut summary,
            &mut evidence,
            u64::from(new),
            v.history.limits.host_cpu_percent.map(u64::from),
            "cpu_percent",
        );
        let change = json!({ "resource_limits": { "cpu_percent": new } });
        return Some(v.recommendation(Kind::CpuRaise, Severity::Warning, summary, evidence, change));
    }
    if share >= CPU_IDLE_SHARE {
        return None;
    }
    let new = round_up((cpu.p95 * CPU_HEADROOM).max(f64::from(CPU_FLOOR_PERCENT)), u64::from(CPU_STEP_PERCENT));
    let new = u32::try_from(new).unwrap_or(u32::MAX);
    if new >= quota {
        return None;
    }
    extend(&mut evidence, json!({ "new_quota_percent": new }));
    let summary = format!(
        "{server} uses little of its CPU quota: p95 CPU {:.1}% of a core is {}% of its {quota}% quota over {over} ({} samples); lower resource_limits.cpu_percent to {new}",
        cpu.p95,
        percent(share),
        cpu.count
    );
    let change = json!({ "resource_limits": { "cpu_percent": new } });
    Some(v.recommendation(Kind::CpuLower, Severity::Info, summary, evidence, change))
}

/// A least-squares line through points.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fit {
    slope: f64,
    intercept: f64,
    r2: f64,
}

/// Fits `y = slope * x + intercept`; `None` with fewer than two distinct `x`. A flat line fits
/// perfectly (r² 1) only when every `y` is equal; then it has slope 0.
fn fit(points: &[(f64, f64)]) -> Option<Fit> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in points {
        let (dx, dy) = (x - mean_x, y - mean_y);
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if sxx <= 0.0 || !sxx.is_finite() {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = if syy > 0.0 { (sxy * sxy) / (sxx * syy) } else { 1.0 };
    Some(Fit { slope, intercept: mean_y - slope * mean_x, r2 })
}

fn leak(v: &View<'_>) -> Option<Recommendation> {
    let limit_mb = v.history.limits.memory_mb?;
    let limit = limit_mb as f64 * MIB;
    // Only the current incarnation: a restart drops RSS and would hide the climb.
    let since = v.exits.last().map_or(i64::MIN, |e| e.at_ms);
    let samples: Vec<&Sample> = v.samples.iter().filter(|s| s.at_ms > since).collect();
    let (first, last) = (samples.first()?, samples.last()?);
    let span = last.at_ms - first.at_ms;
    if samples.len() < LEAK_MIN_SAMPLES || span < LEAK_MIN_SPAN_MS {
        return None;
    }
    // Hours since the first sample, so the numbers stay small.
    let points: Vec<(f64, f64)> =
        samples.iter().map(|s| ((s.at_ms - first.at_ms) as f64 / HOUR_MS as f64, s.rss_bytes as f64)).collect();
    let fit = fit(&points)?;
    if fit.slope <= 0.0 || fit.r2 < LEAK_MIN_R2 {
        return None;
    }
    let now_fitted = fit.intercept + fit.slope * (span as f64 / HOUR_MS as f64);
    let hours_left = ((limit - now_fitted) / fit.slope).max(0.0);
    let ms_left = (hours_left * HOUR_MS as f64).round() as i64;
    if ms_left > LEAK_HORIZON_MS {
        return None;
    }
    let reaches_at_ms = last.at_ms.saturating_add(ms_left);
    let evidence = json!({
        "samples": samples.len(),
        "slope_bytes_per_hour": fit.slope,
        "r2": fit.r2,
        "fitted_now_bytes": now_fitted as u64,
        "limit_mb": limit_mb,
        "hours_to_limit": hours_left,
        "reaches_limit_at_ms": reaches_at_ms,
        "from_ms": first.at_ms,
        "to_ms": last.at_ms,
    });
    let server = v.server();
    let when = if ms_left == 0 {
        format!("has reached its {limit_mb} MiB limit")
    } else {
        format!("would reach its {limit_mb} MiB limit in about {}", human(ms_left))
    };
    let summary = format!(
        "{server}'s memory grows steadily, {} MiB an hour (r² {:.2} over {}), and {when}: look for a leak; meanwhile auto_restart brings it back when the limit kills it",
        mib(fit.slope),
        fit.r2,
        human(span)
    );
    let severity = if ms_left <= LEAK_URGENT_MS { Severity::Critical } else { Severity::Warning };
    Some(v.recommendation(Kind::MemoryLeak, severity, summary, evidence, json!({ "auto_restart": true })))
}

/// Words and a stable label for an exit's cause.
fn cause(kind: ExitKind) -> (String, String) {
    match kind {
        ExitKind::Code(code) => (format!("exit_code_{code}"), format!("exited with code {code}")),
        ExitKind::Signal(sig) => (format!("signal_{sig}"), format!("killed by signal {sig}")),
        ExitKind::HealthCheck => ("health_check".to_owned(), "killed after failing its health checks".to_owned()),
        ExitKind::MemoryLimit => ("memory_limit".to_owned(), "killed for exceeding its memory limit".to_owned()),
        ExitKind::StartTimeout => ("start_timeout".to_owned(), "not ready within start_timeout".to_owned()),
        ExitKind::SpawnFailed => ("spawn_failed".to_owned(), "could not be started".to_owned()),
        ExitKind::Crashed => ("crashed".to_owned(), "its supervising actor failed".to_owned()),
    }
}

fn crash_loop(v: &View<'_>) -> Option<Recommendation> {
    let abnormal: Vec<&Exit> = v.exits.iter().filter(|e| !e.kind.is_clean()).collect();
    if abnormal.len() < CRASH_LOOP_EXITS {
        return None;
    }
    // Causes by count, then by the latest occurrence, so ties go to what happens now.
    let mut causes: Vec<(ExitKind, usize, i64)> = Vec::new();
    for e in &abnormal {
        match causes.iter_mut().find(|c| c.0 == e.kind) {
            Some(c) => {
                c.1 += 1;
                c.2 = c.2.max(e.at_ms);
            }
            None => causes.push((e.kind, 1, e.at_ms)),
        }
    }
    causes.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)));
    let (dominant, count, _) = causes[0];
    let total = abnormal.len();
    let share = count as f64 / total as f64;
    let (label, words) = cause(dominant);
    let server = v.server();
    let settings = &v.history.settings;
    let (change, advice) = match dominant {
        ExitKind::MemoryLimit => {
            let new_mb = v.memory_raise_mb(v.history.limits.memory_mb.unwrap_or(MEMORY_FLOOR_MB));
            (
                json!({ "resource_limits": { "memory_mb": new_mb } }),
                format!("raise resource_limits.memory_mb to {new_mb}"),
            )
        }
        ExitKind::HealthCheck => {
            let n = settings.failures_before_restart.unwrap_or(DEFAULT_FAILURES_BEFORE_RESTART) + 2;
            (
                json!({ "failures_before_restart": n }),
                format!("check its health URL, and allow {n} failed checks before a restart"),
            )
        }
        ExitKind::StartTimeout => {
            let t = secs(settings.start_timeout_ms.unwrap_or(DEFAULT_START_TIMEOUT_MS)) * 2;
            (json!({ "start_timeout": t }), format!("give it longer to start: start_timeout {t} s"))
        }
        _ if share >= DETERMINISTIC_SHARE => (
            json!({ "auto_restart": false }),
            "it fails the same way every time, so restarting cannot help: read its logs, fix it, then start it"
                .to_owned(),
        ),
        _ => (
            json!({ "backoff": "exponential", "restart_delay": BACKOFF_RESTART_DELAY_S, "max_restart_delay": BACKOFF_MAX_DELAY_S }),
            "read its logs; meanwhile restart it less eagerly (exponential backoff)".to_owned(),
        ),
    };
    let evidence = json!({
        "exits": total,
        "dominant_cause": label,
        "dominant_count": count,
        "dominant_share": share,
        "causes": causes.iter().map(|(k, n, _)| json!({ "cause": cause(*k).0, "count": n })).collect::<Vec<_>>(),
        "first_exit_ms": abnormal[0].at_ms,
        "last_exit_ms": abnormal[total - 1].at_ms,
        "from_ms": v.params.start_ms(),
        "to_ms": v.params.now_ms,
    });
    let summary = format!(
        "{server} exited abnormally {total} times in {}, most often {words} ({count} of {total}, {}%): {advice}",
        human(v.params.window_ms),
        percent(share)
    );
    Some(v.recommendation(Kind::CrashLoop, Severity::Critical, summary, evidence, change))
}

fn flapping(v: &View<'_>) -> Option<Recommendation> {
    let failures = v.history.health_failures.iter().filter(|t| v.params.contains(**t)).count();
    let kills = v.exits.iter().filter(|e| e.kind == ExitKind::HealthCheck).count();
    // Each kill ended one run of failures; the others recovered while the server kept running.
    let recovered = failures.saturating_sub(kills);
    if recovered < FLAPPING_FAILURES {
        return None;
    }
    let s = &v.history.settings;
    let timeout = s.health_timeout_ms.unwrap_or(DEFAULT_HEALTH_TIMEOUT_MS);
    let interval = s.health_interval_ms.unwrap_or(DEFAULT_HEALTH_INTERVAL_MS);
    // A longer timeout for a server that answers slowly now and then; the interval stays above it.
    let new_timeout = secs(timeout) * 2;
    let new_interval = secs(interval).max(new_timeout * 2);
    let evidence = json!({
        "health_failures": failures,
        "recovered": recovered,
        "health_kills": kills,
        "health_timeout_ms": timeout,
        "health_interval_ms": interval,
        "from_ms": v.params.start_ms(),
        "to_ms": v.params.now_ms,
    });
    let summary = format!(
        "{}'s health check failed {failures} times in {} and recovered {recovered} times without a restart: it answers slowly now and then; allow health_check_timeout {new_timeout} s",
        v.server(),
        human(v.params.window_ms)
    );
    let change = json!({ "health_check_timeout": new_timeout, "health_check_interval": new_interval });
    Some(v.recommendation(Kind::FlappingHealth, Severity::Warning, summary, evidence, change))
}

fn idle(v: &View<'_>) -> Option<Recommendation> {
    let after = v.params.idle_after_ms?;
    let last = v.history.last_call_ms.or(v.history.calls_counted_since_ms)?;
    let idle = v.params.now_ms.saturating_sub(last);
    if idle < after {
        return None;
    }
    let evidence = json!({
        "last_call_ms": v.history.last_call_ms,
        "calls_counted_since_ms": v.history.calls_counted_since_ms,
        "idle_ms": idle,
        "idle_after_ms": after,
        "from_ms": last,
        "to_ms": v.params.now_ms,
    });
    let since = if v.history.last_call_ms.is_some() { "" } else { " since it came up" };
    let summary = format!(
        "{} has had no tool call{since} for {} (idle after {}, mcp_hosting.idle_after): stop it to free its memory and CPU",
        v.server(),
        human(idle),
        human(after)
    );
    Some(v.recommendation(Kind::Idle, Severity::Info, summary, evidence, json!({ "action": "stop" })))
}

/// Notes in the summary and evidence when a raised limit is above the host's ceiling, which the
/// host would lower it to.
fn host_ceiling(summary: &mut String, evidence: &mut Value, new: u64, ceiling: Option<u64>, key: &str) {
    if let Some(ceiling) = ceiling.filter(|c| new > *c) {
        summary.push_str(&format!(
            " (above this host's ceiling of {ceiling}: raise mcp_hosting.resource_limits.{key} too)"
        ));
        extend(evidence, json!({ "host_ceiling": ceiling }));
    }
}

fn extend(evidence: &mut Value, more: Value) {
    if let (Some(map), Value::Object(more)) = (evidence.as_object_mut(), more) {
        map.extend(more);
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
