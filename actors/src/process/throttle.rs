//! The CPU limit of a tree without a cgroup quota: a token bucket over its CPU time, paid back by
//! keeping the tree stopped (SIGSTOP) until its debt is cleared, the way CFS bandwidth control
//! throttles a cgroup, at a coarser grain. The bucket is pure ([`Bucket`]); [`throttle`] is the
//! task that reads the tree's CPU time, stops and continues it.

use std::sync::Arc;
use std::time::Duration;

use super::TreeControl;

/// How often the bucket is looked at while the tree uses more than half its share.
const PERIOD: Duration = Duration::from_millis(50);

/// How often while it uses less: an idle server costs four looks per second, and a tree that
/// turns busy between two looks runs free for at most this long (a quarter second at a full
/// core leaves a debt of 0.6 s stopped at 30 %; a whole second would leave 2.3 s).
const IDLE_PERIOD: Duration = Duration::from_millis(250);

/// Credit the bucket may save up while the tree runs: a short burst, as a cgroup's quota allows
/// within one period.
const MAX_CREDIT: Duration = Duration::from_millis(100);

/// The longest single stop; a larger debt is paid over several.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Holds `tree` to `percent` of one core until it is dropped (the task is aborted) or the tree
/// is gone. Never leaves the tree stopped: every stop is followed by a continue.
pub(crate) async fn throttle(tree: Arc<dyn TreeControl>, percent: u32) {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    };
    let mut bucket = Bucket::new(percent);
    let Some(mut last) = tree.cpu_ticks() else { return };
    let mut at = tokio::time::Instant::now();
    let mut period = PERIOD;
    let mut stopped = Stopped::default();
    loop {
        tokio::time::sleep(period).await;
        let Some(now_ticks) = tree.cpu_ticks() else { return };
        let now = tokio::time::Instant::now();
        // A member that exited takes its ticks with it: count only growth.
        let used = Duration::from_secs_f64(now_ticks.saturating_sub(last) as f64 / ticks_per_second);
        last = now_ticks;
        let look = bucket.look(used, now - at, stopped);
        at = now;
        period = look.next;
        stopped = Stopped::default();
        if let Some(pause) = look.pause {
            tree.pause(true);
            let guard = Continue(tree.clone());
            let from = tokio::time::Instant::now();
            tokio::time::sleep(pause).await;
            drop(guard);
            stopped = Stopped { planned: pause, actual: from.elapsed() };
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

/// How long the tree was kept stopped since the last look: as planned, and in fact (a late
/// wake-up of the throttle keeps it stopped longer).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Stopped {
    pub planned: Duration,
    pub actual: Duration,
}

/// What to do after a look.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Look {
    /// Stop the tree this long now.
    pub pause: Option<Duration>,
    /// Then look again after this.
    pub next: Duration,
}

/// The token bucket: CPU seconds the tree may still use, earned at `share` per second.
#[derive(Clone, Debug)]
pub(crate) struct Bucket {
    share: f64,
    credit: f64,
}

impl Bucket {
    pub(crate) fn new(percent: u32) -> Self {
        Bucket { share: f64::from(percent.max(1)) / 100.0, credit: 0.0 }
    }

    /// The tree used `used` CPU time in the `elapsed` since the last look, of which it spent
    /// `stopped` stopped by the previous look's pause.
    pub(crate) fn look(&mut self, used: Duration, elapsed: Duration, stopped: Stopped) -> Look {
        let (used, elapsed) = (used.as_secs_f64(), elapsed.as_secs_f64());
        let free = (elapsed - stopped.actual.as_secs_f64()).max(1e-3);
        // Its pace while it was free to run decides how closely to watch it.
        let rate = used / free;
        // What it may save up is bounded, so an idle tree cannot store a long burst. But a stop
        // longer than its debt asked (the throttle woke late: a busy host, a stalled runtime)
        // is owed back in full, or the tree would get less than its share.
        let overslept = stopped.actual.saturating_sub(stopped.planned).as_secs_f64();
        let cap = self.share * (MAX_CREDIT.as_secs_f64() + overslept);
        self.credit = (self.credit + self.share * elapsed - used).min(cap.max(0.0));
        if self.credit < 0.0 {
            // Stopped, it earns `share` CPU seconds per second: stay stopped until out of debt.
            let pause = Duration::from_secs_f64((-self.credit / self.share).min(MAX_PAUSE.as_secs_f64()));
            return Look { pause: Some(pause), next: PERIOD };
        }
        let next = if rate > self.share / 2.0 { PERIOD } else { IDLE_PERIOD };
        Look { pause: None, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// A tree that would use `rate` of a core whenever it is not stopped, under the bucket, for
    /// `seconds`; each stop lasts `late(n)` longer than planned (the n-th stop). Returns the
    /// CPU share it got over the last `window` seconds, and over the whole run.
    fn simulate(percent: u32, rate: f64, seconds: f64, window: f64, late: impl Fn(usize) -> Duration) -> (f64, f64) {
        let mut bucket = Bucket::new(percent);
        let (mut now, mut cpu) = (0.0_f64, 0.0_f64);
        let mut timeline: Vec<(f64, f64)> = vec![(0.0, 0.0)];
        let (mut period, mut stopped, mut stops) = (PERIOD, Stopped::default(), 0);
        let mut elapsed_since_look = 0.0;
        while now < seconds {
            let run = period.as_secs_f64();
            now += run;
            cpu += run * rate;
            elapsed_since_look += run;
            timeline.push((now, cpu));
            let used = Duration::from_secs_f64(run * rate);
            let look = bucket.look(used, Duration::from_secs_f64(elapsed_since_look), stopped);
            elapsed_since_look = 0.0;
            period = look.next;
            stopped = Stopped::default();
            if let Some(pause) = look.pause {
                let actual = pause + late(stops);
                stops += 1;
                now += actual.as_secs_f64();
                elapsed_since_look += actual.as_secs_f64();
                timeline.push((now, cpu));
                stopped = Stopped { planned: pause, actual };
            }
        }
        let at = |t: f64| {
            let i = timeline.partition_point(|&(when, _)| when <= t).max(1) - 1;
            timeline[i].1
        };
        ((at(now) - at(now - window)) / window, cpu / now)
    }

    #[test]
    fn a_hog_gets_its_share() {
        for (percent, rate) in [(30, 1.0), (30, 0.6), (10, 1.0), (50, 1.0), (90, 1.0)] {
            let (window, whole) = simulate(percent, rate, 30.0, 5.0, |_| Duration::ZERO);
            let share = f64::from(percent) / 100.0;
            assert!((window - share).abs() < 0.01, "{percent} % at rate {rate}: {window:.3} over 5 s");
            assert!((whole - share).abs() < 0.01, "{percent} % at rate {rate}: {whole:.3} over the run");
        }
    }

    #[test]
    fn a_tree_below_its_share_is_never_stopped() {
        let mut bucket = Bucket::new(30);
        for _ in 0..100 {
            let look = bucket.look(MS(5), MS(50), Stopped::default());
            assert_eq!(look.pause, None);
            assert_eq!(look.next, IDLE_PERIOD, "a tree at 10 % of a core, below half its 30 %, is watched less");
        }
    }

    #[test]
    fn a_late_wake_up_is_given_back() {
        // Every 10th stop lasts 400 ms longer than planned: the throttle's task woke late.
        let late = |n: usize| if n % 10 == 9 { MS(400) } else { Duration::ZERO };
        let (window, whole) = simulate(30, 1.0, 30.0, 5.0, late);
        assert!((window - 0.30).abs() < 0.02, "{window:.3} over 5 s");
        assert!((whole - 0.30).abs() < 0.02, "{whole:.3} over the run");
    }

    #[test]
    fn an_idle_tree_saves_up_only_a_short_burst() {
        let mut bucket = Bucket::new(30);
        for _ in 0..60 {
            bucket.look(Duration::ZERO, IDLE_PERIOD, Stopped::default());
        }
        // Then it spins for 50 ms: 30 ms of saved credit and 15 ms earned leave a 5 ms debt.
        let look = bucket.look(MS(50), MS(50), Stopped::default());
        let pause = look.pause.expect("stopped after a burst beyond its saved credit");
        assert!((pause.as_secs_f64() - 0.005 / 0.3).abs() < 1e-6, "{pause:?}");
    }

    #[test]
    fn a_tree_turning_busy_while_idle_is_stopped_briefly() {
        // Idle, then spinning from just after a look until the next: the whole idle period.
        let mut bucket = Bucket::new(30);
        for _ in 0..60 {
            assert_eq!(bucket.look(Duration::ZERO, IDLE_PERIOD, Stopped::default()).next, IDLE_PERIOD);
        }
        let look = bucket.look(IDLE_PERIOD, IDLE_PERIOD, Stopped::default());
        let pause = look.pause.expect("stopped after the burst");
        assert!(pause <= MS(600), "{pause:?}");
        assert_eq!(look.next, PERIOD, "watched closely from then on");
    }

    #[test]
    fn a_large_debt_is_paid_in_stops_of_at_most_a_second() {
        let mut bucket = Bucket::new(10);
        let look = bucket.look(MS(2000), MS(1000), Stopped::default());
        assert_eq!(look.pause, Some(MAX_PAUSE), "1.9 s of debt at 10 % would take 19 s");
        let look = bucket.look(MS(50), MS(1050), Stopped { planned: MAX_PAUSE, actual: MAX_PAUSE });
        assert_eq!(look.pause, Some(MAX_PAUSE), "paid over several stops");
        assert_eq!(look.next, PERIOD);
    }
}
