//! The interpreters hosted servers run on: found once on the host, then named by absolute path.
//!
//! A package names its runtime bare (`python`, `node`, `bash`); hivehost picks the program, so a
//! package can never run an arbitrary binary, and never through the server's own `PATH`. A Python
//! server with its own venv (made when its `requirements.txt` is installed) runs on that venv.

use std::path::{Path, PathBuf};

use config::Runtime;

/// Where a deployed Python server's venv lives, inside its code directory.
pub const VENV_DIR: &str = ".venv";

/// The host's interpreters, by absolute path; `None` where none was found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runtimes {
    pub python: Option<PathBuf>,
    pub node: Option<PathBuf>,
    pub bash: Option<PathBuf>,
}

impl Runtimes {
    /// Looks for each interpreter in the usual system places first, then on hivehost's own `PATH`
    /// (skipping version-manager shims, which need their manager's environment to run).
    pub fn detect() -> Runtimes {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs: Vec<PathBuf> =
            std::env::split_paths(&path).filter(|d| !d.to_string_lossy().contains("shims")).collect();
        let find = |fixed: &[&str], names: &[&str]| -> Option<PathBuf> {
            fixed
                .iter()
                .map(PathBuf::from)
                .chain(dirs.iter().flat_map(|d| names.iter().map(move |n| d.join(n))))
                .find(|p| is_executable(p))
        };
        Runtimes {
            python: find(&["/usr/bin/python3", "/usr/local/bin/python3"], &["python3"]),
            node: find(&["/usr/bin/node", "/usr/local/bin/node"], &["node", "nodejs"]),
            bash: find(&["/bin/bash", "/usr/bin/bash"], &["bash"]),
        }
    }

    /// The program a server of `runtime` whose code lies in `code_dir` runs; its venv's Python when it has one.
    pub fn program(&self, runtime: Runtime, code_dir: &Path) -> Result<PathBuf, String> {
        let found = match runtime {
            Runtime::Python => {
                let venv = code_dir.join(VENV_DIR).join("bin/python");
                if is_executable(&venv) {
                    return Ok(venv);
                }
                &self.python
            }
            Runtime::Node => &self.node,
            Runtime::Bash => &self.bash,
        };
        found.clone().ok_or_else(|| {
            format!("no {runtime} interpreter was found on this host; install it, or remove {runtime} from mcp_hosting.security.allowed_languages")
        })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
