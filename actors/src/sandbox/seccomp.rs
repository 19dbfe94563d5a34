//! The seccomp deny-list, compiled to BPF in the parent by seccompiler (rust-vmm's compiler, as
//! Firecracker uses); the child only installs it.
//!
//! A deny-list with a default of allow: hosted servers are arbitrary interpreters, whose needs an
//! allow-list cannot predict. Denied calls fail with EPERM (ENOSYS for clone3, so that libc falls
//! back to clone, whose namespace flags can be checked).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// Calls no hosted server needs and that open the kernel to it: mounts, namespaces, tracing other
/// processes, BPF, perf, keyrings, modules, and a few admin calls.
const DENIED: &[i64] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
];

/// Namespace flags `clone` may not carry.
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u64;

/// Compiles the filters (the deny-list, clone3's, and on x86_64 the x32 one); with `deny_network`,
/// sockets other than Unix ones are refused too.
pub(crate) fn programs(deny_network: bool) -> Result<Vec<BpfProgram>, seccompiler::BackendError> {
    let eperm = SeccompAction::Errno(libc::EPERM as u32);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED.iter().map(|nr| (*nr, vec![])).collect();
    // One rule per flag: a rule's conditions must all hold, and any flag alone is enough.
    let mut clone_rules = Vec::new();
    for bit in 0..64 {
        let flag = 1u64 << bit;
        if NAMESPACE_FLAGS & flag != 0 {
            let cond = SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flag), flag)?;
            clone_rules.push(SeccompRule::new(vec![cond])?);
        }
    }
    rules.insert(libc::SYS_clone, clone_rules);
    if deny_network {
        let not_unix = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, libc::AF_UNIX as u64)?;
        rules.insert(libc::SYS_socket, vec![SeccompRule::new(vec![not_unix])?]);
        let not_unix_pair = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, libc::AF_UNIX as u64)?;
        rules.insert(libc::SYS_socketpair, vec![SeccompRule::new(vec![not_unix_pair])?]);
    }
    let arch = if cfg!(target_arch = "aarch64") { TargetArch::aarch64 } else { TargetArch::x86_64 };
    let main: BpfProgram = SeccompFilter::new(rules, SeccompAction::Allow, eperm, arch)?.try_into()?;
    // clone3 passes its flags in memory, out of a filter's reach: ENOSYS makes libc use clone.
    let clone3: BTreeMap<i64, Vec<SeccompRule>> = [(libc::SYS_clone3, vec![])].into_iter().collect();
    let clone3: BpfProgram =
        SeccompFilter::new(clone3, SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32), arch)?
            .try_into()?;
    let mut programs = vec![main, clone3];
    if cfg!(target_arch = "x86_64") {
        programs.push(no_x32());
    }
    Ok(programs)
}

/// The x32 ABI's calls (numbers with bit 30 set) refused with EPERM. They run on an x86_64 kernel
/// built with x32 support, under the x86_64 audit arch, but with numbers the deny-list (which
/// matches x86_64 numbers exactly) never sees: `0x40000000 | SYS_mount` would be a mount.
/// seccompiler has no rule for a range of numbers, so this one is written by hand.
fn no_x32() -> BpfProgram {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const ARCH_OFFSET: u32 = 4; // seccomp_data.arch
    const NR_OFFSET: u32 = 0; // seccomp_data.nr
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let op = |code, jt, jf, k| seccompiler::sock_filter { code, jt, jf, k };
    vec![
        op(LD_W_ABS, 0, 0, ARCH_OFFSET),
        // Another arch is the main filter's to judge: skip to the allow.
        op(JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
        op(LD_W_ABS, 0, 0, NR_OFFSET),
        op(JGE_K, 0, 1, X32_SYSCALL_BIT),
        op(RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32),
        op(RET_K, 0, 0, RET_ALLOW),
    ]
}

#[cfg(test)]
mod tests {
    /// Runs `probe` in a forked child under the x32 filter alone; its exit code is the result.
    #[cfg(target_arch = "x86_64")]
    fn in_child_under_no_x32(probe: fn() -> i32) -> i32 {
        let program = super::no_x32();
        // SAFETY: the child makes only system calls (prctl and seccomp inside apply_filter, the
        // probe's syscall) and leaves with _exit; the parent waits for it by its pid.
        unsafe {
            match libc::fork() {
                0 => {
                    let code = if seccompiler::apply_filter(&program).is_ok() { probe() } else { 100 };
                    libc::_exit(code)
                }
                -1 => panic!("fork: {}", std::io::Error::last_os_error()),
                pid => {
                    let mut status = 0;
                    assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
                    assert!(libc::WIFEXITED(status), "the probe child died: {status}");
                    libc::WEXITSTATUS(status)
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_calls_are_refused_with_eperm_and_x86_64_calls_pass() {
        // Without the filter an x32 call fails with ENOSYS on a kernel without x32 (as here), or
        // runs on one with it: EPERM can only come from the filter.
        fn x32_getpid() -> i32 {
            // SAFETY: getpid under its x32 number takes no arguments.
            let rc = unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) };
            if rc == -1 { std::io::Error::last_os_error().raw_os_error().unwrap_or(99) } else { 0 }
        }
        fn getpid() -> i32 {
            // SAFETY: plain getpid.
            i32::from(unsafe { libc::syscall(libc::SYS_getpid) } <= 0)
        }
        assert_eq!(in_child_under_no_x32(x32_getpid), libc::EPERM, "an x32 call is refused by the filter");
        assert_eq!(in_child_under_no_x32(getpid), 0, "an x86_64 call passes");
    }
}
