//! Package intake: upload size limits, base64 decoding, archive validation and safe extraction, packing a directory, and the advisory scanner.
//!
//! A package is a ZIP archive holding a server's code and its `server_config.json`. It arrives as
//! bytes (base64 from MCP, a raw body from HTTP, a file from the CLI) and goes through three doors:
//!
//! 1. [`decode_base64`] refuses a string whose length alone proves the decoded bytes would exceed
//!    [`IntakeLimits::max_upload_bytes`], before decoding anything.
//! 2. [`unpack`] validates **every** entry of the central directory before writing a byte (names,
//!    types, modes, duplicates, encryption, declared sizes and ratios, overlapping or hidden
//!    entries), then extracts into a directory that did not exist, counting the real inflated bytes
//!    (headers lie) and verifying every CRC. On any error the directory is removed entirely, so a
//!    caller that renames it into place afterwards never exposes half a package.
//! 3. [`scan::scan_dir`] reports suspicious code for a human; it is advisory, the sandbox is the
//!    boundary.
//!
//! [`pack_dir`] is the way back: it zips a server directory deterministically, and what it makes
//! passes [`unpack`]'s checks.
//!
//! **Invariant:** every rejection is an [`IntakeError`] that names the entry (when there is one) and
//! the rule it broke, with a stable id from [`IntakeError::rule`] for the HTTP and MCP layers.

mod archive;
pub mod example;
pub mod requirements;
pub mod scan;

use std::fmt;

use base64::Engine as _;

pub use archive::{PACK_SKIPPED, Unpacked, pack_dir, unpack};

/// The limits an upload is held to, from its raw size down to its entries.
///
/// [`IntakeLimits::new`] takes the host's `max_upload_size_mb` (in bytes) and fills in the rest with
/// the defaults below; a caller may tighten any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeLimits {
    /// The largest archive accepted, in bytes (the decoded size for base64 uploads).
    pub max_upload_bytes: u64,
    /// The most entries (files and directories) an archive may list.
    pub max_entries: usize,
    /// The largest size one entry may inflate to, in bytes.
    pub max_entry_bytes: u64,
    /// The largest size all entries together may inflate to, in bytes.
    pub max_total_bytes: u64,
    /// The highest compression ratio (inflated / compressed) an entry of at least
    /// [`IntakeLimits::RATIO_FLOOR_BYTES`] may have.
    pub max_ratio: u64,
    /// The longest entry path, in bytes.
    pub max_path_bytes: usize,
    /// The most path components an entry may have (`a/b/c.py` has 3).
    pub max_depth: usize,
}

impl IntakeLimits {
    /// Default [`IntakeLimits::max_entries`]: 5,000, far above a real server and far below what
    /// exhausts inodes.
    pub const DEFAULT_MAX_ENTRIES: usize = 5_000;
    /// Default [`IntakeLimits::max_entry_bytes`]: 100 MiB.
    pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 100 << 20;
    /// Default [`IntakeLimits::max_total_bytes`]: 500 MiB.
    pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 500 << 20;
    /// Default [`IntakeLimits::max_ratio`]: 100 to 1. Source code deflates about 4 to 1; a zip bomb
    /// of zeros about 1,000 to 1.
    pub const DEFAULT_MAX_RATIO: u64 = 100;
    /// Default [`IntakeLimits::max_path_bytes`]: 255, the longest file name most file systems take.
    pub const DEFAULT_MAX_PATH_BYTES: usize = 255;
    /// Default [`IntakeLimits::max_depth`]: 32 components.
    pub const DEFAULT_MAX_DEPTH: usize = 32;
    /// Entries that inflate to less than this are not held to the ratio: a small file of spaces
    /// compresses 1,000 to 1 and harms nobody, and the total limit bounds their sum.
    pub const RATIO_FLOOR_BYTES: u64 = 1 << 20;

    /// Limits for uploads of at most `max_upload_bytes`, with the defaults for everything else.
    pub fn new(max_upload_bytes: u64) -> IntakeLimits {
        IntakeLimits {
            max_upload_bytes,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            max_entry_bytes: Self::DEFAULT_MAX_ENTRY_BYTES,
            max_total_bytes: Self::DEFAULT_MAX_TOTAL_BYTES,
            max_ratio: Self::DEFAULT_MAX_RATIO,
            max_path_bytes: Self::DEFAULT_MAX_PATH_BYTES,
            max_depth: Self::DEFAULT_MAX_DEPTH,
        }
    }
}

/// The rule an upload broke; [`Rule::id`] is the stable short id the frontends match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rule {
    /// The upload (or its decoded size) is over `max_upload_bytes`.
    TooLarge,
    /// The upload is not strict standard base64.
    NotBase64,
    /// A path has a `..` component.
    PathTraversal,
    /// A path starts with `/` or a drive letter.
    AbsolutePath,
    /// A path uses `\`, which some tools take for a separator.
    Backslash,
    /// A name has characters outside the safe set, control characters, empty or `.` components.
    UnsafeName,
    /// A path is longer than `max_path_bytes`.
    PathTooLong,
    /// A path has more than `max_depth` components.
    TooDeep,
    /// A symbolic link (or, in a directory being packed, any link).
    Symlink,
    /// A device, FIFO or socket.
    SpecialFile,
    /// A setuid or setgid bit.
    Setuid,
    /// Two entries with the same name, up to letter case.
    DuplicateName,
    /// A path is used both as a file and as a directory.
    PathConflict,
    /// An encrypted entry, which cannot be checked or scanned.
    Encrypted,
    /// A compression method other than stored or deflated.
    UnsupportedCompression,
    /// More than `max_entries` entries.
    TooManyEntries,
    /// An entry over `max_entry_bytes`.
    EntryTooLarge,
    /// All entries together over `max_total_bytes`.
    TotalTooLarge,
    /// An entry's compression ratio is over `max_ratio`.
    CompressionRatio,
    /// An entry inflated to more bytes than its header declares.
    SizeMismatch,
    /// Two entries share bytes of the archive (a non-recursive zip bomb).
    OverlappingEntries,
    /// Data before the first entry (a polyglot file).
    PrependedData,
    /// The archive cannot be read, or an entry's data does not match its headers or CRC.
    Corrupt,
    /// No `server_config.json` at the package root.
    MissingServerConfig,
    /// `server_config.json` does not parse or validate.
    InvalidServerConfig,
    /// The extraction directory already exists.
    DestinationExists,
    /// The file system failed; not the upload's fault.
    Io,
}

impl Rule {
    /// The stable short id, e.g. `path_traversal`.
    pub fn id(self) -> &'static str {
        match self {
            Rule::TooLarge => "too_large",
            Rule::NotBase64 => "not_base64",
            Rule::PathTraversal => "path_traversal",
            Rule::AbsolutePath => "absolute_path",
            Rule::Backslash => "backslash",
            Rule::UnsafeName => "unsafe_name",
            Rule::PathTooLong => "path_too_long",
            Rule::TooDeep => "too_deep",
            Rule::Symlink => "symlink",
            Rule::SpecialFile => "special_file",
            Rule::Setuid => "setuid",
            Rule::DuplicateName => "duplicate_name",
            Rule::PathConflict => "path_conflict",
            Rule::Encrypted => "encrypted",
            Rule::UnsupportedCompression => "unsupported_compression",
            Rule::TooManyEntries => "too_many_entries",
            Rule::EntryTooLarge => "entry_too_large",
            Rule::TotalTooLarge => "total_too_large",
            Rule::CompressionRatio => "compression_ratio",
            Rule::SizeMismatch => "size_mismatch",
            Rule::OverlappingEntries => "overlapping_entries",
            Rule::PrependedData => "prepended_data",
            Rule::Corrupt => "corrupt",
            Rule::MissingServerConfig => "missing_server_config",
            Rule::InvalidServerConfig => "invalid_server_config",
            Rule::DestinationExists => "destination_exists",
            Rule::Io => "io",
        }
    }

    /// The rule in a few words, for messages: "no path traversal".
    pub fn describe(self) -> &'static str {
        match self {
            Rule::TooLarge => "upload size limit",
            Rule::NotBase64 => "standard base64 only",
            Rule::PathTraversal => "no path traversal",
            Rule::AbsolutePath => "relative paths only",
            Rule::Backslash => "`/` is the only separator",
            Rule::UnsafeName => "safe names only",
            Rule::PathTooLong => "path length limit",
            Rule::TooDeep => "directory depth limit",
            Rule::Symlink => "no links",
            Rule::SpecialFile => "regular files and directories only",
            Rule::Setuid => "no setuid or setgid bits",
            Rule::DuplicateName => "unique names",
            Rule::PathConflict => "a path is a file or a directory, not both",
            Rule::Encrypted => "no encryption",
            Rule::UnsupportedCompression => "stored or deflated entries only",
            Rule::TooManyEntries => "entry count limit",
            Rule::EntryTooLarge => "per-entry size limit",
            Rule::TotalTooLarge => "total size limit",
            Rule::CompressionRatio => "compression ratio limit",
            Rule::SizeMismatch => "entries inflate to their declared size",
            Rule::OverlappingEntries => "entries do not share bytes",
            Rule::PrependedData => "the archive starts with its first entry",
            Rule::Corrupt => "a well-formed archive",
            Rule::MissingServerConfig => "server_config.json at the package root",
            Rule::InvalidServerConfig => "a valid server_config.json",
            Rule::DestinationExists => "extract into a new directory",
            Rule::Io => "file system",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Why an upload was refused or could not be handled.
///
/// Its `Display` names the entry and the rule, e.g. "entry `../evil.txt`: paths may not contain
/// `..` components (rule: no path traversal)".
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The upload broke a rule.
    #[error("{}", rejection(.entry.as_deref(), .rule, .detail))]
    Rejected {
        /// Which rule.
        rule: Rule,
        /// The entry's name, escaped for display (control and non-ASCII characters as `\x..` /
        /// `\u{..}`); `None` when the archive as a whole is at fault.
        entry: Option<String>,
        /// What was wrong and how to fix it.
        detail: String,
    },
    /// `server_config.json` has errors; every one is listed, one per line.
    #[error("server_config.json is invalid; fix every problem listed (rule: {rule}):\n{errors}", rule = Rule::InvalidServerConfig.describe(), errors = .0)]
    InvalidServerConfig(config::ConfigErrors),
    /// The file system failed while reading or writing.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. "creating `/srv/x/main.py`".
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl IntakeError {
    /// The stable short id of the rule, e.g. `path_traversal`, `too_large`, `io`.
    pub fn rule(&self) -> &'static str {
        self.rule_kind().id()
    }

    /// The rule as an enum.
    pub fn rule_kind(&self) -> Rule {
        match self {
            IntakeError::Rejected { rule, .. } => *rule,
            IntakeError::InvalidServerConfig(_) => Rule::InvalidServerConfig,
            IntakeError::Io { .. } => Rule::Io,
        }
    }

    /// The entry at fault, escaped for display, when there is one.
    pub fn entry(&self) -> Option<&str> {
        match self {
            IntakeError::Rejected { entry, .. } => entry.as_deref(),
            IntakeError::InvalidServerConfig(_) => Some(SERVER_CONFIG),
            IntakeError::Io { .. } => None,
        }
    }

    pub(crate) fn entry_rejected(rule: Rule, raw_name: &[u8], detail: impl Into<String>) -> IntakeError {
        IntakeError::Rejected { rule, entry: Some(display_name(raw_name)), detail: detail.into() }
    }

    pub(crate) fn archive_rejected(rule: Rule, detail: impl Into<String>) -> IntakeError {
        IntakeError::Rejected { rule, entry: None, detail: detail.into() }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> IntakeError {
        IntakeError::Io { context: context.into(), source }
    }
}

fn rejection(entry: Option<&str>, rule: &Rule, detail: &str) -> String {
    match entry {
        Some(entry) => format!("entry `{entry}`: {detail} (rule: {})", rule.describe()),
        None => format!("{detail} (rule: {})", rule.describe()),
    }
}

/// The file every package holds at its root.
pub const SERVER_CONFIG: &str = "server_config.json";

/// The longest entry name shown in a message, in characters; the rest is elided.
const MAX_SHOWN_NAME_CHARS: usize = 160;

/// An entry name made safe to show in a message or a log line.
///
/// Printable ASCII stays as it is; control characters, non-ASCII characters and bytes that are not
/// UTF-8 are escaped, so a name can neither inject lines into a log nor hide behind look-alike or
/// right-to-left characters.
pub(crate) fn display_name(raw: &[u8]) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            if shown >= MAX_SHOWN_NAME_CHARS {
                out.push('…');
                return out;
            }
            if c.is_ascii_graphic() || c == ' ' {
                out.push(c);
            } else {
                out.extend(c.escape_default());
            }
            shown += 1;
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
            shown += 1;
        }
    }
    out
}

/// Decodes a base64 upload, refusing it before decoding when its length alone proves it too large.
///
/// The alphabet is the standard one with canonical `=` padding; whitespace around the text is
/// trimmed, whitespace inside it is refused (so the size bound holds), and the error says what was
/// wrong: a data URL prefix, the URL-safe alphabet, a line break, a bad length.
pub fn decode_base64(text: &str, limits: &IntakeLimits) -> Result<Vec<u8>, IntakeError> {
    let text = text.trim();
    // Every 4 characters decode to at most 3 bytes, so this bounds the decoded size from above.
    let bound = (text.len() as u64).div_ceil(4).saturating_mul(3);
    let padding = text.bytes().rev().take_while(|&b| b == b'=').count().min(2) as u64;
    let decoded_at_least = bound.saturating_sub(padding);
    if decoded_at_least > limits.max_upload_bytes {
        return Err(IntakeError::archive_rejected(
            Rule::TooLarge,
            format!(
                "the upload decodes to about {} bytes, over the limit of {} bytes (max_upload_size_mb); \
                 make the package smaller (leave out virtual environments, node_modules and data files)",
                decoded_at_least, limits.max_upload_bytes
            ),
        ));
    }
    if let Some(hint) = base64_hint(text) {
        return Err(IntakeError::archive_rejected(Rule::NotBase64, hint));
    }
    base64::engine::general_purpose::STANDARD.decode(text).map_err(|error| {
        let detail = match error {
            base64::DecodeError::InvalidByte(at, byte) => {
                format!("byte {at} is {}, which is not in the standard base64 alphabet", describe_byte(byte))
            }
            base64::DecodeError::InvalidLength(len) => {
                format!("{len} base64 symbols cannot encode whole bytes; the text looks truncated")
            }
            base64::DecodeError::InvalidLastSymbol { offset: at, symbol: byte, .. } => {
                format!("the last symbol ({}, byte {at}) has bits set that no encoder sets", describe_byte(byte))
            }
            base64::DecodeError::InvalidPadding => "the `=` padding is missing or misplaced".to_owned(),
        };
        IntakeError::archive_rejected(
            Rule::NotBase64,
            format!(
                "the upload is not valid base64: {detail}; encode the archive with standard base64 (`base64 -w0 FILE`)"
            ),
        )
    })
}

/// A specific explanation for the usual ways a base64 upload goes wrong.
fn base64_hint(text: &str) -> Option<String> {
    if text.is_empty() {
        return Some("the upload is empty; send the archive encoded with standard base64 (`base64 -w0 FILE`)".into());
    }
    if text.starts_with("data:") {
        return Some("the upload starts with a data URL prefix; send only the base64 text after `base64,`".into());
    }
    if let Some(at) = text.find(|c: char| c.is_ascii_whitespace()) {
        return Some(format!(
            "the upload has whitespace inside it (byte {at}); send it on one line without line breaks (`base64 -w0 FILE`)"
        ));
    }
    if text.contains(['-', '_']) && !text.contains(['+', '/']) {
        return Some(
            "the upload uses the URL-safe alphabet (`-` and `_`); use the standard alphabet (`+` and `/`)".into(),
        );
    }
    None
}

fn describe_byte(byte: u8) -> String {
    if byte.is_ascii_graphic() { format!("`{}`", byte as char) } else { format!("0x{byte:02x}") }
}
