//! Landlock through its three system calls: the ruleset is made and filled in the parent; the
//! child adds the one rule for what only exists after the fork (its own /proc) and enforces it.
//!
//! Raw calls rather than the `landlock` crate: the child must add a rule after fork without
//! allocating, which needs the ruleset's descriptor, and the kernel ABI is three calls and two
//! structs (include/uapi/linux/landlock.h).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const CREATE_RULESET_VERSION: u32 = 1 << 0;
const RULE_PATH_BENEATH: libc::c_int = 1;

pub(crate) const EXECUTE: u64 = 1 << 0;
pub(crate) const WRITE_FILE: u64 = 1 << 1;
pub(crate) const READ_FILE: u64 = 1 << 2;
pub(crate) const READ_DIR: u64 = 1 << 3;
const REMOVE_DIR: u64 = 1 << 4;
const REMOVE_FILE: u64 = 1 << 5;
const MAKE_CHAR: u64 = 1 << 6;
const MAKE_DIR: u64 = 1 << 7;
const MAKE_REG: u64 = 1 << 8;
const MAKE_SOCK: u64 = 1 << 9;
const MAKE_FIFO: u64 = 1 << 10;
const MAKE_BLOCK: u64 = 1 << 11;
const MAKE_SYM: u64 = 1 << 12;
const REFER: u64 = 1 << 13;
const TRUNCATE: u64 = 1 << 14;
const IOCTL_DEV: u64 = 1 << 15;

const NET_BIND_TCP: u64 = 1 << 0;
const NET_CONNECT_TCP: u64 = 1 << 1;

const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

/// Read and run.
pub(crate) const READ: u64 = EXECUTE | READ_FILE | READ_DIR;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The Landlock ABI version of this kernel, if Landlock is enabled.
pub(crate) fn abi() -> Option<u32> {
    // SAFETY: with a null attribute and the VERSION flag the call only returns a number.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).ok().filter(|v| *v >= 1)
}

/// Every file-system right this ABI handles.
fn fs_rights(abi: u32) -> u64 {
    let mut rights = EXECUTE
        | WRITE_FILE
        | READ_FILE
        | READ_DIR
        | REMOVE_DIR
        | REMOVE_FILE
        | MAKE_CHAR
        | MAKE_DIR
        | MAKE_REG
        | MAKE_SOCK
        | MAKE_FIFO
        | MAKE_BLOCK
        | MAKE_SYM;
    if abi >= 2 {
        rights |= REFER;
    }
    if abi >= 3 {
        rights |= TRUNCATE;
    }
    if abi >= 5 {
        rights |= IOCTL_DEV;
    }
    rights
}

/// A ruleset being filled (parent) and then enforced (child).
#[derive(Debug)]
pub(crate) struct Ruleset {
    fd: OwnedFd,
    /// Rights a writable directory gets: everything handled but making devices.
    write: u64,
}

impl Ruleset {
    /// A ruleset handling every file right of `abi`, TCP when `deny_tcp`, and (ABI 6+) scoping
    /// signals and abstract Unix sockets to the sandbox.
    pub(crate) fn new(abi: u32, deny_tcp: bool) -> io::Result<Ruleset> {
        let fs = fs_rights(abi);
        let attr = RulesetAttr {
            handled_access_fs: fs,
            handled_access_net: if deny_tcp && abi >= 4 { NET_BIND_TCP | NET_CONNECT_TCP } else { 0 },
            scoped: if abi >= 6 { SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL } else { 0 },
        };
        // Older ABIs know a shorter struct.
        let size = match abi {
            1..=3 => std::mem::size_of::<u64>(),
            4 | 5 => 2 * std::mem::size_of::<u64>(),
            _ => std::mem::size_of::<RulesetAttr>(),
        };
        // SAFETY: `attr` is a valid ruleset attribute of at least `size` bytes.
        let fd = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &attr as *const RulesetAttr, size, 0u32) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new descriptor (close-on-exec) that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Ruleset { fd, write: fs & !(MAKE_CHAR | MAKE_BLOCK) })
    }

    /// Rights for a writable directory.
    pub(crate) fn write_rights(&self) -> u64 {
        self.write
    }

    /// Allows `access` beneath `path` (which must exist).
    pub(crate) fn allow(&self, path: &Path, access: u64) -> io::Result<()> {
        let file = std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(path)
            .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", path.display())))?;
        // Rights that only mean something on directories are refused on files.
        let access = if file.metadata()?.is_dir() {
            access
        } else {
            access & (EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV)
        };
        add_rule(self.fd.as_raw_fd(), file.as_raw_fd(), access & (self.write | MAKE_CHAR | MAKE_BLOCK))
            .map_err(|err| io::Error::new(err.kind(), format!("landlock rule for {}: {err}", path.display())))
    }

    /// In the child: allows `access` beneath `path`; async-signal-safe.
    pub(crate) fn allow_in_child(&self, path: &CStr, access: u64) -> io::Result<()> {
        // SAFETY: open and close on a NUL-terminated path; no memory is allocated.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let res = add_rule(self.fd.as_raw_fd(), fd, access);
            libc::close(fd);
            res
        }
    }

    /// In the child: enforces the ruleset on this process and what it runs (sets no_new_privs).
    pub(crate) fn restrict_self(&self) -> io::Result<()> {
        // SAFETY: plain calls with integer arguments.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::syscall(libc::SYS_landlock_restrict_self, self.fd.as_raw_fd(), 0u32) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

fn add_rule(ruleset: libc::c_int, parent: libc::c_int, access: u64) -> io::Result<()> {
    let attr = PathBeneathAttr { allowed_access: access, parent_fd: parent };
    // SAFETY: `attr` is a valid path-beneath attribute for the duration of the call.
    let res = unsafe {
        libc::syscall(libc::SYS_landlock_add_rule, ruleset, RULE_PATH_BENEATH, &attr as *const PathBeneathAttr, 0u32)
    };
    if res != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

use std::os::unix::fs::OpenOptionsExt;
