//! After a crash: which recorded processes of a dead instance may still be running.
//!
//! The killing itself belongs to `actors::process` (the only module that signals processes); this
//! module picks the instance records that can still mean something: those of this boot.

use actors::process::Leftover;

use crate::store::InstanceRecord;

/// The id of this boot, which tells whether a recorded pid can still mean anything.
pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// The recorded main processes of this boot, as leftovers to kill.
pub(crate) fn leftovers(records: &[InstanceRecord], boot: &str) -> Vec<Leftover> {
    records.iter().filter(|r| r.boot_id == boot).map(|r| Leftover { pid: r.pid, start_ticks: r.start_ticks }).collect()
}
