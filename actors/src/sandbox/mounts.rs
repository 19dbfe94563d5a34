//! The server's view of the file system: one list, from which both the mount namespace's new root
//! and the Landlock rules are built, so the two layers always agree.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::child::tagged;

/// System paths a server may read and run, where they exist. Not /etc as a whole: only what
/// interpreters, the dynamic loader, TLS and name resolution read.
const SYSTEM_PATHS: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/mime.types",
    "/etc/alternatives",
    "/etc/python3",
    "/etc/python3.11",
];

/// Devices a server may use.
const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"];

/// What a server may do with an entry of its view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read and execute.
    Read,
    /// Everything but making devices.
    Write,
    /// A device: read and write the node itself.
    Device,
}

/// One host path and where it appears inside the sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub host: PathBuf,
    pub inside: PathBuf,
    pub access: Access,
    /// A symbolic link is recreated (with this target) rather than mounted.
    pub link: Option<PathBuf>,
    pub is_dir: bool,
}

/// Builds the view of a server: system paths and devices that exist, extra read paths, its code
/// read-only, its state directory, its private /tmp (`tmp`, shown at /tmp).
pub(crate) fn view(
    code_dir: &Path,
    state_dir: &Path,
    writable_state: bool,
    tmp: &Path,
    read_paths: &[PathBuf],
) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut push = |host: &Path, inside: &Path, access: Access, required: bool| -> io::Result<()> {
        let meta = match std::fs::symlink_metadata(host) {
            Ok(meta) => meta,
            Err(err) if !required && err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(io::Error::new(err.kind(), format!("{}: {err}", host.display()))),
        };
        let link = if meta.file_type().is_symlink() { Some(std::fs::read_link(host)?) } else { None };
        entries.push(Entry {
            host: host.to_path_buf(),
            inside: inside.to_path_buf(),
            access,
            link,
            is_dir: meta.is_dir(),
        });
        Ok(())
    };
    for path in SYSTEM_PATHS {
        push(Path::new(path), Path::new(path), Access::Read, false)?;
    }
    for path in DEVICES {
        push(Path::new(path), Path::new(path), Access::Device, false)?;
    }
    for path in read_paths {
        push(path, path, Access::Read, true)?;
    }
    push(code_dir, code_dir, Access::Read, true)?;
    push(state_dir, state_dir, if writable_state { Access::Write } else { Access::Read }, true)?;
    push(tmp, Path::new("/tmp"), Access::Write, true)?;
    // A path under a symbolic link of the view (/lib/x under /lib -> usr/lib) is reached through it.
    let links: Vec<PathBuf> = entries.iter().filter(|e| e.link.is_some()).map(|e| e.inside.clone()).collect();
    entries.retain(|e| !links.iter().any(|l| e.inside != *l && e.inside.starts_with(l)));
    // Parents before what lies beneath them, or a later mount (/tmp) would hide an earlier one
    // (a data directory under /tmp).
    entries.sort_by_key(|e| e.inside.components().count());
    Ok(entries)
}

/// One step of building the new root, every path already a C string.
#[derive(Debug)]
enum Op {
    Dir(CString),
    File(CString),
    Bind { src: CString, dst: CString, readonly: bool },
    Symlink { target: CString, dst: CString },
    Proc(CString),
    Tmpfs { dst: CString, options: CString },
}

/// The mount namespace's new root, prepared in the parent, built in the child.
#[derive(Debug)]
pub(crate) struct MountPlan {
    /// The empty host directory the new root's tmpfs is mounted on.
    root: CString,
    ops: Vec<Op>,
    /// The working directory, entered again once the root has moved.
    workdir: CString,
    /// `/proc` and `/dev/shm`: made in the child, so Landlock rules for them are added there.
    pub(crate) proc_dir: CString,
    pub(crate) shm_dir: CString,
}

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other(format!("{} contains a NUL byte", path.display())))
}

impl MountPlan {
    pub(crate) fn new(entries: &[Entry], root: &Path, workdir: &Path) -> io::Result<MountPlan> {
        let mut ops = Vec::new();
        let mut made: Vec<PathBuf> = Vec::new();
        let mut dirs = |ops: &mut Vec<Op>, inside: &Path, include_last: bool| -> io::Result<()> {
            let mut at = PathBuf::from("/");
            let parts: Vec<Component<'_>> = inside.components().filter(|c| matches!(c, Component::Normal(_))).collect();
            let upto = if include_last { parts.len() } else { parts.len().saturating_sub(1) };
            for part in &parts[..upto] {
                at.push(part);
                if !made.contains(&at) {
                    made.push(at.clone());
                    ops.push(Op::Dir(cstr(&join(root, &at))?));
                }
            }
            Ok(())
        };
        for entry in entries {
            let dst = join(root, &entry.inside);
            if let Some(target) = &entry.link {
                dirs(&mut ops, &entry.inside, false)?;
                ops.push(Op::Symlink { target: cstr(target)?, dst: cstr(&dst)? });
                continue;
            }
            if entry.is_dir {
                dirs(&mut ops, &entry.inside, true)?;
            } else {
                dirs(&mut ops, &entry.inside, false)?;
                ops.push(Op::File(cstr(&dst)?));
            }
            ops.push(Op::Bind { src: cstr(&entry.host)?, dst: cstr(&dst)?, readonly: entry.access == Access::Read });
        }
        dirs(&mut ops, Path::new("/proc"), true)?;
        ops.push(Op::Proc(cstr(&join(root, Path::new("/proc")))?));
        dirs(&mut ops, Path::new("/dev/shm"), true)?;
        ops.push(Op::Tmpfs {
            dst: cstr(&join(root, Path::new("/dev/shm")))?,
            options: CString::new("size=64m,mode=1777").map_err(io::Error::other)?,
        });
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            ops.push(Op::Symlink {
                target: CString::new(target).map_err(io::Error::other)?,
                dst: cstr(&root.join("dev").join(name))?,
            });
        }
        Ok(MountPlan {
            root: cstr(root)?,
            ops,
            workdir: cstr(workdir)?,
            proc_dir: CString::new("/proc").map_err(io::Error::other)?,
            shm_dir: CString::new("/dev/shm").map_err(io::Error::other)?,
        })
    }

    /// In the child, inside a new mount namespace, still as root: builds the new root, moves into
    /// it, drops the old one and enters the working directory. Async-signal-safe.
    pub(crate) fn apply_in_child(&self) -> io::Result<()> {
        // SAFETY: every pointer is a NUL-terminated string owned by `self`, alive for the call.
        unsafe {
            let null = std::ptr::null::<libc::c_char>();
            check(31, libc::mount(null, c"/".as_ptr(), null, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()))?;
            check(
                32,
                libc::mount(
                    c"tmpfs".as_ptr(),
                    self.root.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    c"size=1m,mode=0755".as_ptr().cast(),
                ),
            )?;
            for op in &self.ops {
                match op {
                    Op::Dir(path) => {
                        if libc::mkdir(path.as_ptr(), 0o755) != 0 && *libc::__errno_location() != libc::EEXIST {
                            return Err(tagged(30, io::Error::last_os_error()));
                        }
                    }
                    Op::File(path) => {
                        let fd = libc::open(path.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o644);
                        check(33, fd)?;
                        libc::close(fd);
                    }
                    Op::Bind { src, dst, readonly } => {
                        check(
                            34,
                            libc::mount(
                                src.as_ptr(),
                                dst.as_ptr(),
                                null,
                                libc::MS_BIND | libc::MS_REC,
                                std::ptr::null(),
                            ),
                        )?;
                        let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID;
                        if *readonly {
                            flags |= libc::MS_RDONLY | libc::MS_NODEV;
                        }
                        check(35, libc::mount(null, dst.as_ptr(), null, flags, std::ptr::null()))?;
                    }
                    Op::Symlink { target, dst } => {
                        if libc::symlink(target.as_ptr(), dst.as_ptr()) != 0
                            && *libc::__errno_location() != libc::EEXIST
                        {
                            return Err(tagged(30, io::Error::last_os_error()));
                        }
                    }
                    Op::Proc(dst) => check(
                        36,
                        libc::mount(
                            c"proc".as_ptr(),
                            dst.as_ptr(),
                            c"proc".as_ptr(),
                            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                            c"hidepid=invisible".as_ptr().cast(),
                        ),
                    )?,
                    Op::Tmpfs { dst, options } => check(
                        37,
                        libc::mount(
                            c"tmpfs".as_ptr(),
                            dst.as_ptr(),
                            c"tmpfs".as_ptr(),
                            libc::MS_NOSUID | libc::MS_NODEV,
                            options.as_ptr().cast(),
                        ),
                    )?,
                }
            }
            check(38, libc::chdir(self.root.as_ptr()))?;
            check(39, libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int)?;
            check(40, libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
            check(41, libc::chdir(c"/".as_ptr()))?;
            check(
                42,
                libc::mount(
                    null,
                    c"/".as_ptr(),
                    null,
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    std::ptr::null(),
                ),
            )?;
            check(43, libc::chdir(self.workdir.as_ptr()))?;
        }
        Ok(())
    }
}

fn check(step: i32, res: libc::c_int) -> io::Result<()> {
    if res == -1 { Err(tagged(step, io::Error::last_os_error())) } else { Ok(()) }
}

/// `inside` (absolute) placed under `root`.
fn join(root: &Path, inside: &Path) -> PathBuf {
    root.join(inside.strip_prefix("/").unwrap_or(inside))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_holds_code_state_tmp_and_no_data_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let code = dir.path().join("servers/a");
        let state = dir.path().join("state/a");
        let tmp = dir.path().join("run/a/tmp");
        for d in [&code, &state, &tmp] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let entries = view(&code, &state, true, &tmp, &[]).expect("view");
        let find = |inside: &str| entries.iter().find(|e| e.inside == Path::new(inside)).cloned();
        assert_eq!(find(code.to_str().expect("utf-8")).map(|e| e.access), Some(Access::Read));
        assert_eq!(find(state.to_str().expect("utf-8")).map(|e| e.access), Some(Access::Write));
        assert_eq!(find("/tmp").map(|e| e.host), Some(tmp.clone()));
        assert_eq!(find("/usr").map(|e| e.access), Some(Access::Read));
        assert!(find("/dev/null").is_some());
        // Nothing else of the data directory, and no /etc as a whole.
        assert!(entries.iter().all(|e| e.inside == Path::new("/tmp")
            || !e.host.starts_with(dir.path())
            || e.host == code
            || e.host == state));
        assert!(find("/etc").is_none());
        let readonly = view(&code, &state, false, &tmp, &[]).expect("view");
        assert!(readonly.iter().any(|e| e.host == state && e.access == Access::Read));
    }

    #[test]
    fn missing_code_is_an_error_naming_it() {
        let err =
            view(Path::new("/nonexistent/code"), Path::new("/"), false, Path::new("/tmp"), &[]).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/code"), "{err}");
    }

    #[test]
    fn plan_makes_each_directory_once_in_order() {
        let entries = vec![
            Entry { host: "/a/b".into(), inside: "/a/b".into(), access: Access::Read, link: None, is_dir: true },
            Entry { host: "/a/c".into(), inside: "/a/c".into(), access: Access::Write, link: None, is_dir: true },
            Entry {
                host: "/x".into(),
                inside: "/l".into(),
                access: Access::Read,
                link: Some("usr/lib".into()),
                is_dir: false,
            },
        ];
        let plan = MountPlan::new(&entries, Path::new("/r"), Path::new("/a/b")).expect("plan");
        let dirs: Vec<String> = plan
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Dir(p) => Some(p.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        assert_eq!(dirs, ["/r/a", "/r/a/b", "/r/a/c", "/r/proc", "/r/dev", "/r/dev/shm"]);
        assert!(plan.ops.iter().any(|op| matches!(op, Op::Bind { readonly: false, .. })));
        assert!(plan.ops.iter().any(|op| matches!(op, Op::Symlink { .. })));
    }
}
