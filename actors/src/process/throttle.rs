//! The CPU limit of a tree without a cgroup quota: a token bucket over its CPU time, paid back by
//! keeping the tree stopped (SIGSTOP) until its debt is cleared, the way CFS bandwidth control
//! throttles a cgroup, at a coarser grain.

use std::sync::Arc;
use std::time::Duration;

use super::TreeControl;

/// How often the bucket is looked at while the tree uses more than half its share.
const PERIOD: Duration = Duration::from_millis(50);

/// How often while it uses less: an idle server costs one look per second.
const IDLE_PERIOD: Duration = Duration::from_secs(1);

/// Credit the bucket may hold: a short burst, as a cgroup's quota allows within one period.
const MAX_CREDIT: Duration = Duration::from_millis(100);

/// Holds `tree` to `percent` of one core until it is dropped (the task is aborted) or the tree
/// is gone. Never leaves the tree stopped: every stop is followed by a continue.
pub(crate) async fn throttle(tree: Arc<dyn TreeControl>, percent: u32) {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    };
    let share = f64::from(percent.max(1)) / 100.0;
    let Some(mut last) = tree.cpu_ticks() else { return };
    let mut credit = 0.0_f64; // CPU seconds it may still use
    let mut at = tokio::time::Instant::now();
    let mut period = PERIOD;
    let mut paused = Duration::ZERO;
    loop {
        tokio::time::sleep(period).await;
        let Some(now_ticks) = tree.cpu_ticks() else { return };
        let now = tokio::time::Instant::now();
        // A member that exited takes its ticks with it: count only growth.
        let used = now_ticks.saturating_sub(last) as f64 / ticks_per_second;
        last = now_ticks;
        let elapsed = (now - at).as_secs_f64();
        // Its pace while it was free to run decides how closely to watch it.
        let rate = used / (elapsed - paused.as_secs_f64()).max(1e-3);
        period = if rate > share / 2.0 || credit < 0.0 { PERIOD } else { IDLE_PERIOD };
        credit = (credit + share * elapsed - used).min(MAX_CREDIT.as_secs_f64() * share);
        at = now;
        paused = Duration::ZERO;
        if credit < 0.0 {
            // Stopped, it earns `share` CPU seconds per second: stay stopped until out of debt.
            paused = Duration::from_secs_f64((-credit / share).min(1.0));
            tree.pause(true);
            let guard = Continue(tree.clone());
            tokio::time::sleep(paused).await;
            drop(guard);
            period = PERIOD;
        }
    }
}

/// Continues the tree when dropped: also when the throttle task is aborted mid-pause.
struct Continue(Arc<dyn TreeControl>);

impl Drop for Continue {
    fn drop(&mut self) {
        self.0.pause(false);
    }
}
