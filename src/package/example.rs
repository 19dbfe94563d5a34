//! The ready-to-deploy example package (`hivehost example-package`): a FastMCP server, its
//! pinned requirements and its `server_config.json`, embedded in the binary.

use std::path::Path;

use super::{IntakeError, IntakeLimits, pack_dir};

/// The example's files, as (name, contents).
pub const FILES: &[(&str, &str)] = &[
    ("server.py", include_str!("example/server.py")),
    ("requirements.txt", include_str!("example/requirements.txt")),
    ("server_config.json", include_str!("example/server_config.json")),
];

/// Writes the example's files into `dir` (which must exist).
pub fn write_files(dir: &Path) -> std::io::Result<()> {
    for (name, text) in FILES {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// The example package as ZIP bytes, made and checked like any `hivehost package DIR`.
pub fn zip(limits: &IntakeLimits, scratch: &Path) -> Result<Vec<u8>, IntakeError> {
    write_files(scratch).map_err(|e| IntakeError::Io { context: "writing the example's files".into(), source: e })?;
    pack_dir(scratch, limits)
}
