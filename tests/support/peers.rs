//! Real MCP peers for the end-to-end tests (included with `#[path]`): a venv with the Python `mcp`
//! SDK and a copy of the Node fixture with its locked dependencies installed, each made once per
//! machine and kept under `target/test-peers/`.
//!
//! CI starts from a clean clone with only cargo, python3 (venv, pip), node and npm, so the tests
//! make what they need themselves. Each cache entry is built in a temporary directory beside it and
//! renamed into place, under a file lock shared by every test process: a half-made entry is never
//! used, and concurrent tests build it once. The entry's name carries what it was made from (the
//! pinned requirement and the Python it runs on; a checksum of the fixture's files), so a change
//! of either makes a new entry rather than reusing a stale one.

#![allow(dead_code, reason = "each includer uses the part it needs")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use actors::process::{Job, JobEnd, run_job};

/// The Python that venvs are made from: the system's, readable by any uid (unlike a version
/// manager's, which lives in a home directory and needs its shims).
pub(crate) const PYTHON: &str = "/usr/bin/python3";

/// The Node that runs the Node fixture; npm is looked up beside it.
pub(crate) const NODE: &str = "/usr/bin/node";

/// The Python MCP SDK the example server is pinned to (its `requirements.txt` says the same).
pub(crate) const MCP_REQUIREMENT: &str = "mcp==1.30.0";

/// The Node fixture's files, copied as they are (a stray `node_modules` in the source tree is not).
const NODE_ECHO_FILES: &[&str] = &["package.json", "package-lock.json", "server.js"];

/// The longest a single setup step (venv, pip, npm) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(600);

/// `target/test-peers/`: under `CARGO_TARGET_DIR` when it is set (relative to the package), else
/// under the package's own `target/`.
pub(crate) fn cache_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| manifest.join("target"), |dir| manifest.join(dir));
    target.join("test-peers")
}

/// A venv with [`MCP_REQUIREMENT`] installed from wheels only, made from [`PYTHON`]; run its
/// `bin/python` (its console scripts name the temporary directory it was built in).
pub(crate) fn python_mcp_venv() -> PathBuf {
    let python = Path::new(PYTHON);
    assert!(python.is_file(), "{PYTHON} is missing: the Python peer needs the system's python3 with venv and pip");
    // The interpreter's real name (python3.11) pins the venv to the minor version it was made with.
    let real = std::fs::canonicalize(python).unwrap_or_else(|e| panic!("resolving {PYTHON}: {e}"));
    let flavour = real.file_name().map_or_else(|| "python3".into(), |n| n.to_string_lossy().into_owned());
    let key = format!("{flavour}-{}", MCP_REQUIREMENT.replace("==", "-"));
    cached(&key, |dir| {
        let venv = dir.display().to_string();
        run_step("creating the venv", python, &["-m", "venv", &venv], dir);
        let pip = ["-m", "pip", "install", "--no-input", "--only-binary=:all:", MCP_REQUIREMENT];
        run_step(&format!("installing {MCP_REQUIREMENT} from the package index"), &dir.join("bin/python"), &pip, dir);
    })
}

/// A copy of `tests/fixtures/mcp/node-echo` with its locked dependencies installed by
/// `npm ci --ignore-scripts`; run `server.js` in it with [`NODE`].
pub(crate) fn node_echo_dir() -> PathBuf {
    let node = Path::new(NODE);
    assert!(node.is_file(), "{NODE} is missing: the Node peer needs node 20 and npm");
    let npm = node.with_file_name("npm");
    assert!(npm.is_file(), "{} is missing: the Node peer installs its dependencies with npm", npm.display());
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp/node-echo");
    let mut sum = crc32fast::Hasher::new();
    let files: Vec<(&str, Vec<u8>)> = NODE_ECHO_FILES
        .iter()
        .map(|name| {
            let bytes = std::fs::read(source.join(name))
                .unwrap_or_else(|e| panic!("reading the Node fixture's {name} in {}: {e}", source.display()));
            sum.update(name.as_bytes());
            sum.update(&bytes);
            (*name, bytes)
        })
        .collect();
    cached(&format!("node-echo-{:08x}", sum.finalize()), |dir| {
        for (name, bytes) in &files {
            std::fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("copying {name}: {e}"));
        }
        run_step("installing the Node fixture's locked dependencies", &npm, &["ci", "--ignore-scripts"], dir);
    })
}

/// The cache entry `key`, built by `build` into an empty directory if it does not exist yet.
fn cached(key: &str, build: impl FnOnce(&Path)) -> PathBuf {
    let root = cache_root();
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));
    let done = root.join(key);
    let lock_path = root.join(format!("{key}.lock"));
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", lock_path.display()));
    // Held until the entry exists; released when `lock` is closed, even if building panics.
    lock.lock().unwrap_or_else(|e| panic!("locking {}: {e}", lock_path.display()));
    if done.is_dir() {
        return done;
    }
    // Only the lock holder builds `key`, so any temporary directory of it is a dead builder's.
    let prefix = format!(".tmp-{key}-");
    for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(&root)
        .unwrap_or_else(|e| panic!("creating a temporary directory in {}: {e}", root.display()));
    build(tmp.path());
    make_world_readable(tmp.path());
    std::fs::rename(tmp.path(), &done)
        .unwrap_or_else(|e| panic!("renaming {} to {}: {e}", tmp.path().display(), done.display()));
    // Renamed away: nothing is left for the guard to delete.
    let _ = tmp.keep();
    done
}

/// Runs one setup step to its end; panics with its output if it does not succeed.
fn run_step(what: &str, program: &Path, args: &[&str], dir: &Path) {
    let home = cache_root().join(".home");
    std::fs::create_dir_all(&home).unwrap_or_else(|e| panic!("creating {}: {e}", home.display()));
    let mut env = vec![
        ("PATH".to_owned(), actors::process::DEFAULT_PATH.to_owned()),
        ("HOME".to_owned(), home.display().to_string()),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ("PIP_DISABLE_PIP_VERSION_CHECK".to_owned(), "1".to_owned()),
        ("npm_config_update_notifier".to_owned(), "false".to_owned()),
        ("npm_config_fund".to_owned(), "false".to_owned()),
        ("npm_config_audit".to_owned(), "false".to_owned()),
    ];
    // A machine that reaches the registries through a proxy keeps doing so.
    for name in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"] {
        if let Ok(value) = std::env::var(name) {
            env.push((name.to_owned(), value));
        }
    }
    let job = Job {
        program: program.to_path_buf(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        working_dir: dir.to_path_buf(),
        env,
        timeout: STEP_TIMEOUT,
    };
    let command = format!("`{} {}`", program.display(), args.join(" "));
    let mut output = Vec::new();
    // A thread with a runtime of its own, so this works inside or outside a caller's runtime.
    let end = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("{what}: starting a runtime: {e}"));
            runtime.block_on(run_job(&job, |line| output.push(line.to_owned())))
        });
        worker.join().unwrap_or_else(|_| panic!("{what}: the thread running {command} panicked"))
    });
    let tail = || output.iter().rev().take(60).rev().cloned().collect::<Vec<_>>().join("\n");
    match end {
        Ok(JobEnd::Exited(policy::ExitKind::Code(0))) => {}
        Ok(JobEnd::Exited(kind)) => {
            panic!("{what} failed: {command} {}; its output:\n{}", actors::describe(kind), tail())
        }
        Ok(JobEnd::TimedOut) => panic!("{what} failed: {command} took over {STEP_TIMEOUT:?}; its output:\n{}", tail()),
        Err(e) => panic!("{what} failed: {command} did not start: {e}"),
    }
}

/// Makes `path` and everything under it readable by any uid: directories 0755, files 0644 (0755
/// when executable). Symbolic links are left as they are.
pub(crate) fn make_world_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mode = if meta.is_dir() {
        0o755
    } else if meta.is_file() {
        if meta.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 }
    } else {
        return;
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("setting the mode of {}: {e}", path.display()));
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).unwrap_or_else(|e| panic!("listing {}: {e}", path.display()));
        for entry in entries {
            make_world_readable(&entry.unwrap_or_else(|e| panic!("listing {}: {e}", path.display())).path());
        }
    }
}
