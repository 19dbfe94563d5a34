//! The sliding-window log of restart times that enforces `max_restarts` per `restart_window`.

use std::collections::VecDeque;

/// The times of recent restart decisions, oldest first.
///
/// Times are pushed in non-decreasing order (the history clamps its clock), so expired entries
/// are always at the front. A restart at `t` counts at `now` while `now - t < window_ms`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RestartLog {
    times: VecDeque<u64>,
}

impl RestartLog {
    /// Drops the entries that no longer count at `now`, then the oldest entries beyond `max`.
    ///
    /// Dropping the oldest entries beyond `max` never changes a decision: while more than
    /// `max` entries count the budget is exhausted either way, and the oldest expire first.
    pub(crate) fn prune(&mut self, now_ms: u64, window_ms: u64, max: u32) {
        while let Some(&oldest) = self.times.front() {
            if now_ms.saturating_sub(oldest) < window_ms {
                break;
            }
            self.times.pop_front();
        }
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        while self.times.len() > max {
            self.times.pop_front();
        }
    }

    /// How many entries count at `now`.
    pub(crate) fn count(&self, now_ms: u64, window_ms: u64) -> u32 {
        let counted = self.times.iter().filter(|&&t| now_ms.saturating_sub(t) < window_ms).count();
        u32::try_from(counted).unwrap_or(u32::MAX)
    }

    /// How many entries are stored.
    pub(crate) fn len(&self) -> usize {
        self.times.len()
    }

    /// Records a restart decided at `now`.
    pub(crate) fn record(&mut self, now_ms: u64) {
        self.times.push_back(now_ms);
    }

    /// Forgets every restart.
    pub(crate) fn clear(&mut self) {
        self.times.clear();
    }
}
