//! Deploying a package: check, extract, scan, install its dependencies, then move it into place.
//!
//! Everything happens in a staging directory inside `servers_dir` (so the final step is one
//! rename on one file system); a failure at any step removes the staging directory and leaves no
//! trace of the server. Only a renamed directory with a stored record is a deployed server.

use std::path::{Path, PathBuf};

use actors::process::{Job, JobEnd, run_job};
use config::Runtime;

use crate::package::{self, IntakeLimits, scan::ScanReport};
use crate::runtimes::{Runtimes, VENV_DIR};
use crate::servers::SERVER_CONFIG;

/// The prefix of staging directories in `servers_dir`; the janitor removes stale ones.
pub(crate) const STAGING_PREFIX: &str = ".staging-";

/// A deploy that failed: what went wrong, for the caller to show as is.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Refused(String),
    #[error("the package was refused: {0}")]
    Archive(#[from] package::IntakeError),
    #[error(
        "the scan found critical problems, so the package was not deployed (set mcp_hosting.security.scan_uploads to false to deploy anyway): {0}"
    )]
    Scan(String),
    #[error("installing dependencies failed: {0}")]
    Install(String),
    #[error("{0}")]
    Internal(String),
}

/// A package extracted and checked in its staging directory, not yet in place.
pub(crate) struct Staged {
    pub(crate) dir: PathBuf,
    pub(crate) spec: serde_json::Value,
    pub(crate) config: config::ServerConfig,
    pub(crate) runtime: Runtime,
    pub(crate) scan: ScanReport,
    pub(crate) warnings: Vec<String>,
    pub(crate) installed: Vec<String>,
}

/// Derives a server id from its name: lowercase letters, digits, `-` and `_`, never two `_` in a
/// row (the aggregate gateway names tools `{server}__{tool}`, so an id holding `__` could make one
/// server's tool name another's).
pub(crate) fn id_from_name(name: &str) -> Result<String, DeployError> {
    let mut id = String::new();
    for c in name.trim().chars() {
        match c {
            '_' if id.ends_with('_') => {}
            'a'..='z' | '0'..='9' | '_' | '-' => id.push(c),
            'A'..='Z' => id.push(c.to_ascii_lowercase()),
            ' ' | '.' => id.push('-'),
            _ => {}
        }
    }
    let id = id.trim_matches('-').to_owned();
    crate::servers::validate_id(&id).map_err(|_| {
        DeployError::Refused(format!(
            "the name `{}` gives no usable server id; use letters, digits, `-` or `_`",
            name.escape_debug()
        ))
    })?;
    Ok(id)
}

/// Extracts `archive` into a fresh staging directory and checks, scans and installs it.
pub(crate) async fn stage(
    host: &config::HostConfig,
    runtimes: &Runtimes,
    id: &str,
    name: &str,
    archive: Vec<u8>,
    overrides: serde_json::Value,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<Staged, DeployError> {
    let limits = IntakeLimits::new(host.max_upload_size_bytes());
    let nonce = format!("{}-{}", std::process::id(), crate::store::now_ms());
    let dir = host.servers_dir.join(format!("{STAGING_PREFIX}{id}-{nonce}"));
    let unpack_dir = dir.clone();
    progress("checking and extracting the archive");
    tokio::task::spawn_blocking(move || package::unpack(&archive, &limits, &unpack_dir))
        .await
        .map_err(|e| DeployError::Internal(format!("extraction stopped: {e}")))??;
    let staged = check(host, runtimes, &dir, name, overrides, progress).await;
    if staged.is_err() {
        remove_tree(dir).await;
    }
    staged
}

/// Removes a directory tree (absent is fine) on a blocking thread: a venv holds thousands of files.
pub(crate) async fn remove_tree(path: PathBuf) {
    let shown = path.display().to_string();
    let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    })
    .await;
    match removed {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::error!(path = %shown, error = %err, "removing a directory failed"),
        Err(err) => tracing::error!(path = %shown, error = %err, "removing a directory stopped"),
    }
}

async fn check(
    host: &config::HostConfig,
    runtimes: &Runtimes,
    dir: &Path,
    name: &str,
    overrides: serde_json::Value,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<Staged, DeployError> {
    let text = std::fs::read_to_string(dir.join(SERVER_CONFIG))
        .map_err(|e| DeployError::Refused(format!("reading server_config.json: {e}")))?;
    let mut spec: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| DeployError::Refused(format!("server_config.json is not valid JSON: {e}")))?;
    let mut overrides = overrides;
    if let Some(map) = overrides.as_object_mut() {
        map.insert("name".into(), name.into());
    }
    config::apply_overrides(&mut spec, &overrides).map_err(|e| DeployError::Refused(e.to_string()))?;
    let parsed = config::parse_server_config_value(&spec)
        .map_err(|e| DeployError::Refused(format!("server_config.json is invalid:\n{e}")))?;
    let admitted = config::admit(&parsed.value, host)
        .map_err(|e| DeployError::Refused(format!("server_config.json is not allowed here:\n{e}")))?;
    let mut warnings: Vec<String> = parsed.warnings.iter().chain(&admitted.warnings).map(ToString::to_string).collect();
    progress("scanning the code");
    let scan_dir = dir.to_path_buf();
    let scan = tokio::task::spawn_blocking(move || package::scan::scan_dir(&scan_dir))
        .await
        .map_err(|e| DeployError::Internal(format!("the scan stopped: {e}")))?
        .map_err(|e| DeployError::Internal(format!("scanning failed: {e}")))?;
    let critical: Vec<String> =
        scan.blocking().map(|f| format!("{}:{}: {} ({})", f.file, f.line, f.message, f.rule)).collect();
    if !critical.is_empty() {
        if host.security.scan_uploads {
            return Err(DeployError::Scan(critical.join("; ")));
        }
        warnings.push(format!(
            "the scan found critical problems (deployed anyway, scan_uploads is off): {}",
            critical.join("; ")
        ));
    }
    let installed = install(host, runtimes, dir, admitted.runtime, progress).await?;
    Ok(Staged {
        dir: dir.to_path_buf(),
        spec,
        config: parsed.value,
        runtime: admitted.runtime,
        scan,
        warnings,
        installed,
    })
}

/// Installs `requirements.txt` into a venv, or `package.json` with npm; returns the output lines.
async fn install(
    host: &config::HostConfig,
    runtimes: &Runtimes,
    dir: &Path,
    runtime: Runtime,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<Vec<String>, DeployError> {
    let deps = &host.dependencies;
    let home = host.uploads_dir.join(".home");
    std::fs::create_dir_all(&home).map_err(|e| DeployError::Internal(format!("creating {}: {e}", home.display())))?;
    let env = vec![
        ("PATH".to_owned(), actors::process::DEFAULT_PATH.to_owned()),
        ("HOME".to_owned(), home.display().to_string()),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ("PIP_DISABLE_PIP_VERSION_CHECK".to_owned(), "1".to_owned()),
        ("PIP_NO_INPUT".to_owned(), "1".to_owned()),
        ("npm_config_update_notifier".to_owned(), "false".to_owned()),
        ("npm_config_fund".to_owned(), "false".to_owned()),
        ("npm_config_audit".to_owned(), "false".to_owned()),
    ];
    let mut steps: Vec<(PathBuf, Vec<String>)> = Vec::new();
    match runtime {
        Runtime::Python if dir.join("requirements.txt").is_file() => {
            // pip runs as hivehost, outside the sandbox: nothing of the package may run there.
            if dir.join(VENV_DIR).symlink_metadata().is_ok() {
                return Err(DeployError::Refused(format!(
                    "the archive holds `{VENV_DIR}`: hivehost makes the virtual environment itself from \
                     requirements.txt, and pip would run what a shipped one holds (sitecustomize, .pth files) \
                     outside the sandbox; leave `{VENV_DIR}` out of the archive (`hivehost pack` does)"
                )));
            }
            let requirements = std::fs::read_to_string(dir.join("requirements.txt"))
                .map_err(|e| DeployError::Refused(format!("reading requirements.txt: {e}")))?;
            package::requirements::check_requirements(&requirements)
                .map_err(|problems| DeployError::Refused(problems.join("\n")))?;
            let python =
                runtimes.python.clone().ok_or_else(|| DeployError::Install("no python3 on this host".into()))?;
            let venv = dir.join(VENV_DIR);
            steps.push((python, vec!["-m".into(), "venv".into(), venv.display().to_string()]));
            let mut pip = vec![
                "-m".into(),
                "pip".into(),
                "install".into(),
                "--no-input".into(),
                "-r".into(),
                "requirements.txt".into(),
            ];
            if deps.python_only_binary {
                pip.extend(["--only-binary".into(), ":all:".into()]);
            }
            steps.push((venv.join("bin/python"), pip));
        }
        Runtime::Node if dir.join("package.json").is_file() => {
            // npm runs as hivehost, outside the sandbox, and takes settings from the package's own
            // .npmrc (`git`, the command it runs for git dependencies, among them).
            if dir.join(".npmrc").symlink_metadata().is_ok() {
                return Err(DeployError::Refused(
                    "the archive holds `.npmrc`: npm would take its settings (the registry, the command it runs \
                     for git dependencies) from it while installing outside the sandbox; leave it out, and ask \
                     the operator for a registry setting if one is needed"
                        .into(),
                ));
            }
            let node = runtimes.node.clone().ok_or_else(|| DeployError::Install("no node on this host".into()))?;
            let npm = node.parent().map(|d| d.join("npm")).filter(|p| p.is_file());
            let npm = npm.ok_or_else(|| DeployError::Install(format!("no npm beside {}", node.display())))?;
            let verb = if dir.join("package-lock.json").is_file() { "ci" } else { "install" };
            let mut args =
                vec![verb.to_owned(), "--omit=dev".to_owned(), "--no-audit".to_owned(), "--no-fund".to_owned()];
            if !deps.npm_install_scripts {
                args.push("--ignore-scripts".into());
            }
            steps.push((npm, args));
        }
        _ => return Ok(Vec::new()),
    }
    let mut lines = Vec::new();
    for (program, args) in steps {
        progress(&format!("running {} {}", program.display(), args.join(" ")));
        let job =
            Job { program, args, working_dir: dir.to_path_buf(), env: env.clone(), timeout: deps.install_timeout };
        let end = run_job(&job, |line| {
            progress(line);
            if lines.len() < 2000 {
                lines.push(line.to_owned());
            }
        })
        .await
        .map_err(|e| DeployError::Install(e.to_string()))?;
        match end {
            JobEnd::Exited(policy::ExitKind::Code(0)) => {}
            JobEnd::TimedOut => {
                return Err(DeployError::Install(format!(
                    "it took longer than mcp_hosting.dependencies.install_timeout ({:?}); raise it, or trim the dependencies",
                    deps.install_timeout
                )));
            }
            JobEnd::Exited(kind) => {
                let tail: Vec<&String> = lines.iter().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
                return Err(DeployError::Install(format!(
                    "{} ({}); last lines: {}",
                    actors::describe(kind),
                    job.program.display(),
                    tail.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" | ")
                )));
            }
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::id_from_name;

    #[test]
    fn ids_from_names_are_lowercase_and_never_hold_the_gateways_separator() {
        for (name, id) in [
            ("Weather Server", "weather-server"),
            ("my__server", "my_server"),
            ("a___b_c", "a_b_c"),
            ("  v1.2 ", "v1-2"),
            ("_x_", "_x_"),
        ] {
            assert_eq!(id_from_name(name).expect(name), id, "{name}");
        }
        assert!(id_from_name("!!!").is_err());
    }
}
