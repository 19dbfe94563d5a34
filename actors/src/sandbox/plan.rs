//! Which layers a server gets on this host: pure, from its sandbox spec and the host's caps.

use super::{HostCaps, SandboxSpec};

/// One layer of the box.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Session, cleared environment, no core dumps, parent-death signal, no_new_privs.
    Basics,
    /// A uid and gid of its own.
    Identity,
    /// Memory (no swap), CPU quota and process-count limits in a cgroup of its own.
    Limits,
    /// Killing the whole tree at once (cgroup.kill or freezer), whatever it did to escape.
    TreeKill,
    /// A network namespace with no interface up.
    Network,
    /// A mount namespace with only the system, its code, its state and a private /tmp.
    Filesystem,
    Landlock,
    Seccomp,
}

impl Layer {
    pub fn name(self) -> &'static str {
        match self {
            Layer::Basics => "basics",
            Layer::Identity => "identity",
            Layer::Limits => "cgroup_limits",
            Layer::TreeKill => "tree_kill",
            Layer::Network => "network_namespace",
            Layer::Filesystem => "mount_namespace",
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
        }
    }
}

/// Whether a layer is on for a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerState {
    /// Applied; the words say how.
    Active(String),
    /// Wanted, but this host cannot offer it; the words say why and what stands in for it.
    Unavailable(String),
    /// Not asked for by the server's config; the words say which setting.
    Off(String),
}

/// One layer and its state, as shown per server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerReport {
    pub layer: Layer,
    pub state: LayerState,
}

/// What the launcher applies for one server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub identity: bool,
    pub cgroup: bool,
    pub netns: bool,
    pub mountns: bool,
    pub landlock: bool,
    pub seccomp: bool,
    pub report: Vec<LayerReport>,
}

impl Plan {
    /// Whether any layer is unavailable (the server runs degraded).
    pub fn degraded(&self) -> bool {
        self.report.iter().any(|r| matches!(r.state, LayerState::Unavailable(_)))
    }
}

/// A start refused because layers the server needs are missing and the host requires them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the sandbox is required (security.require_sandbox) but this host cannot offer {}; run hivehost as root on a host with these features, set security.require_sandbox to false to run degraded, or set \"sandboxed\": false for this server",
    .missing.join("; ")
)]
pub struct SandboxRefused {
    pub missing: Vec<String>,
}

/// Decides the layers of a server with `spec` on a host with `caps`.
pub fn plan(spec: &SandboxSpec, caps: &HostCaps) -> Result<Plan, SandboxRefused> {
    let mut plan = Plan::default();
    let mut missing = Vec::new();
    let mut add = |plan: &mut Plan, layer: Layer, state: LayerState| {
        if let (LayerState::Unavailable(why), true) = (&state, spec.confine) {
            missing.push(format!("{} ({why})", layer.name()));
        }
        plan.report.push(LayerReport { layer, state });
    };
    let basics = "own session, cleared environment, no core dumps, parent-death signal, no_new_privs";
    add(&mut plan, Layer::Basics, LayerState::Active(basics.into()));

    let cg = &caps.cgroup;
    if spec.cgroup {
        if cg.limits() {
            plan.cgroup = true;
            let how = if cg.limits_on_v2() { "cgroup v2" } else { "cgroup v1" };
            add(&mut plan, Layer::Limits, LayerState::Active(format!("memory without swap, cpu quota, pids ({how})")));
        } else {
            let why =
                if caps.root { "no writable memory, cpu and pids cgroup controllers" } else { "hivehost is not root" };
            add(
                &mut plan,
                Layer::Limits,
                LayerState::Unavailable(format!(
                    "{why}; memory is enforced by the metrics sampler and cpu by throttling instead"
                )),
            );
        }
        if cg.tree_kill() {
            plan.cgroup = true;
            let how = if cg.v2.is_some() { "cgroup.kill" } else { "freezer" };
            add(&mut plan, Layer::TreeKill, LayerState::Active(how.into()));
        } else {
            add(
                &mut plan,
                Layer::TreeKill,
                LayerState::Unavailable("no writable cgroup hierarchy; the tree is found through session, parent links and hivehost as subreaper".into()),
            );
        }
    } else {
        let off = "cgroups are off for this server";
        add(&mut plan, Layer::Limits, LayerState::Off(off.into()));
        add(&mut plan, Layer::TreeKill, LayerState::Off(off.into()));
    }

    if !spec.confine {
        for layer in [Layer::Identity, Layer::Network, Layer::Filesystem, Layer::Landlock, Layer::Seccomp] {
            add(&mut plan, layer, LayerState::Off("\"sandboxed\": false".into()));
        }
        return finish(plan, missing, spec.require);
    }

    if caps.root {
        plan.identity = true;
        add(&mut plan, Layer::Identity, LayerState::Active(format!("uid {} gid {}", spec.uid, spec.gid)));
    } else {
        add(
            &mut plan,
            Layer::Identity,
            LayerState::Unavailable("hivehost is not root; the server runs as hivehost's user".into()),
        );
    }

    if spec.network {
        add(
            &mut plan,
            Layer::Network,
            LayerState::Off("\"allowed_network\": true (hivehost's own API still demands its token)".into()),
        );
    } else if caps.namespaces.net {
        plan.netns = true;
        add(&mut plan, Layer::Network, LayerState::Active("own network namespace, no interface up".into()));
    } else {
        add(
            &mut plan,
            Layer::Network,
            LayerState::Unavailable(
                "network namespaces cannot be created; seccomp and Landlock still refuse network sockets".into(),
            ),
        );
    }

    if caps.namespaces.mount {
        plan.mountns = true;
        let state = if spec.writable_state { "state directory writable" } else { "state directory read-only" };
        add(
            &mut plan,
            Layer::Filesystem,
            LayerState::Active(format!("own root: system read-only, code read-only, {state}, private /tmp, own /proc")),
        );
    } else {
        add(
            &mut plan,
            Layer::Filesystem,
            LayerState::Unavailable("mount namespaces cannot be created; Landlock limits the view instead".into()),
        );
    }

    match caps.landlock_abi {
        Some(abi) => {
            plan.landlock = true;
            let net = if !spec.network && abi >= 4 { ", TCP denied" } else { "" };
            let scope = if abi >= 6 { ", signals and abstract sockets scoped" } else { "" };
            add(
                &mut plan,
                Layer::Landlock,
                LayerState::Active(format!("ABI {abi}: file access limited to its view{net}{scope}")),
            );
        }
        None => {
            add(&mut plan, Layer::Landlock, LayerState::Unavailable("Landlock is not enabled in this kernel".into()))
        }
    }

    if caps.seccomp {
        plan.seccomp = true;
        let net = if spec.network { "" } else { ", sockets other than Unix" };
        add(
            &mut plan,
            Layer::Seccomp,
            LayerState::Active(format!("deny-list: mount, namespaces, ptrace, bpf, perf, keyring, modules{net}")),
        );
    } else {
        add(&mut plan, Layer::Seccomp, LayerState::Unavailable("seccomp filters are not available".into()));
    }
    finish(plan, missing, spec.require)
}

fn finish(plan: Plan, missing: Vec<String>, require: bool) -> Result<Plan, SandboxRefused> {
    if require && !missing.is_empty() { Err(SandboxRefused { missing }) } else { Ok(plan) }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::sandbox::{CgroupCaps, NamespaceCaps};

    fn full_host() -> HostCaps {
        HostCaps {
            root: true,
            cgroup: CgroupCaps {
                v2: Some(PathBuf::from("/sys/fs/cgroup/unified")),
                v2_controllers: vec![],
                v1_memory: Some(PathBuf::from("/sys/fs/cgroup/memory")),
                v1_cpu: Some(PathBuf::from("/sys/fs/cgroup/cpu")),
                v1_pids: Some(PathBuf::from("/sys/fs/cgroup/pids")),
                v1_freezer: Some(PathBuf::from("/sys/fs/cgroup/freezer")),
            },
            namespaces: NamespaceCaps { net: true, mount: true, ipc: true },
            landlock_abi: Some(7),
            seccomp: true,
        }
    }

    fn spec(confine: bool, network: bool, require: bool) -> SandboxSpec {
        SandboxSpec { confine, cgroup: true, uid: 200_001, gid: 200_001, network, require, ..SandboxSpec::default() }
    }

    fn state(plan: &Plan, layer: Layer) -> &LayerState {
        &plan.report.iter().find(|r| r.layer == layer).unwrap_or_else(|| panic!("{layer:?} reported")).state
    }

    #[test]
    fn every_layer_is_reported_once() {
        for (confine, network, root) in [(true, false, true), (true, true, false), (false, false, true)] {
            let mut caps = full_host();
            caps.root = root;
            let plan = plan(&spec(confine, network, false), &caps).expect("not required");
            let mut layers: Vec<Layer> = plan.report.iter().map(|r| r.layer).collect();
            layers.dedup();
            assert_eq!(layers.len(), 8, "{plan:?}");
        }
    }

    #[test]
    fn table() {
        // (host tweak, confine, network, require) -> (identity, cgroup, netns, mountns, landlock, seccomp) or refused
        type Tweak = fn(&mut HostCaps);
        let none: Tweak = |_| {};
        let not_root: Tweak = |c| {
            c.root = false;
            c.cgroup = CgroupCaps::default();
            c.namespaces = NamespaceCaps::default();
        };
        let no_landlock: Tweak = |c| c.landlock_abi = None;
        let no_cgroups: Tweak = |c| c.cgroup = CgroupCaps::default();
        let v2_only: Tweak = |c| {
            c.cgroup.v1_memory = None;
            c.cgroup.v1_cpu = None;
            c.cgroup.v1_pids = None;
            c.cgroup.v1_freezer = None;
            c.cgroup.v2_controllers = vec!["memory".into(), "cpu".into(), "pids".into()];
        };
        type Row = (&'static str, Tweak, bool, bool, bool, Option<[bool; 6]>);
        let rows: Vec<Row> = vec![
            ("full host, network denied", none, true, false, true, Some([true, true, true, true, true, true])),
            ("full host, network allowed", none, true, true, true, Some([true, true, false, true, true, true])),
            (
                "unconfined server keeps its cgroup",
                none,
                false,
                false,
                true,
                Some([false, true, false, false, false, false]),
            ),
            ("v2 controllers carry the limits", v2_only, true, false, true, Some([true, true, true, true, true, true])),
            ("not root, required: refused", not_root, true, false, true, None),
            (
                "not root, not required: degraded",
                not_root,
                true,
                false,
                false,
                Some([false, false, false, false, true, true]),
            ),
            ("no landlock, required: refused", no_landlock, true, false, true, None),
            ("no cgroups, required: refused", no_cgroups, true, false, true, None),
            (
                "no cgroups, unconfined: runs as asked",
                no_cgroups,
                false,
                false,
                true,
                Some([false, false, false, false, false, false]),
            ),
            ("no cgroups, not required", no_cgroups, true, false, false, Some([true, false, true, true, true, true])),
        ];
        for (name, tweak, confine, network, require, want) in rows {
            let mut caps = full_host();
            tweak(&mut caps);
            let got = plan(&spec(confine, network, require), &caps)
                .map(|p| [p.identity, p.cgroup, p.netns, p.mountns, p.landlock, p.seccomp]);
            match want {
                Some(want) => assert_eq!(got.as_ref().ok(), Some(&want), "{name}: {got:?}"),
                None => assert!(got.is_err(), "{name}: expected a refusal, got {got:?}"),
            }
        }
    }

    #[test]
    fn refusal_names_each_missing_layer_and_the_ways_out() {
        let mut caps = full_host();
        caps.landlock_abi = None;
        caps.seccomp = false;
        let err = plan(&spec(true, false, true), &caps).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("landlock (Landlock is not enabled"), "{text}");
        assert!(text.contains("seccomp (seccomp filters are not available)"), "{text}");
        assert!(text.contains("security.require_sandbox to false"), "{text}");
        assert!(text.contains("\"sandboxed\": false"), "{text}");
    }

    #[test]
    fn degraded_plan_says_what_stands_in() {
        let mut caps = full_host();
        caps.cgroup = CgroupCaps::default();
        let plan = plan(&spec(true, true, false), &caps).expect("not required");
        assert!(plan.degraded());
        match state(&plan, Layer::Limits) {
            LayerState::Unavailable(why) => assert!(why.contains("metrics sampler"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(state(&plan, Layer::Network), LayerState::Off(_)));
    }
}
