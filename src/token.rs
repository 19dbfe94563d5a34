//! The API token: the configured one, or one generated on first start into `auth.token_file` (mode 0600).

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;

/// The token the HTTP side demands: `auth.token` if set, else the token file's, created if absent.
pub fn load_or_create(auth: &config::AuthConfig) -> anyhow::Result<String> {
    if let Some(token) = &auth.token {
        return Ok(token.clone());
    }
    let path = &auth.token_file;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_owned();
            if token.len() < 16 {
                anyhow::bail!(
                    "{} holds no usable token (at least 16 characters); delete it to have a new one generated",
                    path.display()
                );
            }
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("restricting {} to mode 0600", path.display()))?;
                tracing::warn!(file = %path.display(), "the token file was readable by others; set it to mode 0600");
            }
            Ok(token)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(err) => Err(err).with_context(|| format!("reading the API token from {}", path.display())),
    }
}

fn create(path: &Path) -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for a new API token")?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Written whole to a temporary file, then renamed: a crash never leaves half a token.
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    writeln!(file, "{token}")?;
    file.sync_all()?;
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(file = %path.display(), "generated an API token (mode 0600); clients send it as `Authorization: Bearer <token>`");
    Ok(token)
}
