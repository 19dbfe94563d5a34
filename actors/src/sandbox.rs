//! The box each hosted server runs in, without a container engine.
//!
//! Layers, each reported per server as active, unavailable or not asked for (never skipped
//! silently): a uid and gid of its own; a cgroup of its own (memory without swap, CPU quota,
//! process count; v2 where its controllers are usable, else v1, with the controller-less v2
//! hierarchy or the freezer to kill the whole tree at once); a network namespace with no
//! interfaces up when the network is denied; a mount namespace whose root holds only system
//! directories (read-only), the server's code (read-only), its state directory, a private /tmp and
//! a /proc showing only its own processes; Landlock rules matching that view; a seccomp deny-list.
//!
//! Split by what may happen where: [`caps`] looks at the host once; [`plan`] is pure and decides
//! which layers a server gets; [`prepare`] does the parent-side work before the fork (cgroups,
//! directories, the Landlock ruleset, the BPF program, every path as a C string); the child then
//! only applies what was prepared ([`Prepared::apply_in_child`]), with async-signal-safe calls.

mod caps;
mod cgroup;
mod child;
mod landlock;
mod mounts;
mod plan;
mod seccomp;

use std::path::PathBuf;

pub use caps::{CgroupCaps, HostCaps, NamespaceCaps};
pub(crate) use cgroup::{Cgroup, CgroupLimits, CgroupStats};
pub use cgroup::{CgroupRoot, sweep_instance};
pub use plan::{Layer, LayerReport, LayerState, Plan, SandboxRefused, plan};

pub use child::describe_setup_error;
pub(crate) use child::{prepare, tagged};

/// How one server is confined, as the root crate decided from its config and the host's.
#[derive(Clone, Debug, Default)]
pub struct SandboxSpec {
    /// Whether the server is confined at all (`sandboxed`); `false` leaves only the basics every
    /// process gets (session, cleared environment, no core dumps, parent-death signal,
    /// no_new_privs) and its cgroup.
    pub confine: bool,
    /// Whether the server gets a cgroup of its own (resource limits and whole-tree kill).
    pub cgroup: bool,
    /// The uid and gid it runs as when hivehost runs as root.
    pub uid: u32,
    pub gid: u32,
    /// `allowed_network`: with `false`, a network namespace and no sockets but Unix ones.
    pub network: bool,
    /// The server's code (read-only); the working directory lies inside it.
    pub code_dir: PathBuf,
    /// Its home, owned by its uid; writable when `writable_state`.
    pub state_dir: PathBuf,
    pub writable_state: bool,
    /// Parent of its private `/tmp` (emptied at each start) and of the empty directory its new
    /// root is mounted on. Never inside `state_dir` or `code_dir`.
    pub run_dir: PathBuf,
    /// Other paths it may read and execute (an interpreter outside the system directories).
    pub read_paths: Vec<PathBuf>,
    /// `security.require_sandbox`: refuse to start when a layer it needs is unavailable.
    pub require: bool,
}
