//! Archive validation, safe extraction and packing: the ZIP side of package intake.
//!
//! [`unpack`] works in two phases. The first reads only the central directory and the local headers
//! and checks every entry against every rule, so nothing is written for an archive with one bad
//! entry at its end. The second inflates each entry through our own reader, which stops one byte
//! past the size the header declares and verifies the CRC at the end, so neither a lying header nor
//! a damaged stream can write more than the limits allow or leave a silently corrupt file.
//!
//! The `zip` crate parses the directory; the checks that matter are ours: the crate keeps the last
//! of two entries with the same name, strips leading `/` instead of refusing it, accepts control
//! characters in names and, by itself, enforces no size or ratio limit (see
//! `shared/notes/sandbox.md` 5.1).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Cursor, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, System, ZipArchive, ZipReadOptions, ZipWriter};

use super::{IntakeError, IntakeLimits, Rule, SERVER_CONFIG, display_name};

#[cfg(test)]
mod tests;

/// What [`unpack`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unpacked {
    /// Regular files written.
    pub files: usize,
    /// Bytes written into them, as counted while inflating.
    pub bytes: u64,
}

/// Directories [`pack_dir`] leaves out: installed dependencies, caches and version control, which
/// the host recreates or does not need.
pub const PACK_SKIPPED: [&str; 4] = [".venv", "node_modules", "__pycache__", ".git"];

/// Mode bits of the file type in a Unix mode (`S_IFMT`).
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;
/// Setuid and setgid.
const SET_ID_BITS: u32 = 0o6000;
/// Mode of every extracted directory and of executable files.
const DIR_MODE: u32 = 0o755;
/// Mode of every other extracted file.
const FILE_MODE: u32 = 0o644;
/// A local file header is at least this long before its name (APPNOTE 4.3.7).
const LOCAL_HEADER_FIXED: u64 = 30;
/// Inflate buffer size; big enough to amortise the system calls, small enough not to matter.
const CHUNK: usize = 64 * 1024;
/// How many top-level names a "missing server_config.json" message lists.
const LISTED_TOP_LEVEL: usize = 10;

/// An archive read from memory.
type Archive<'z> = ZipArchive<Cursor<&'z [u8]>>;

/// One entry that passed validation.
struct Planned {
    /// Its index in the `zip` crate's view of the central directory.
    index: usize,
    /// Its path below the package root after unwrapping: `/`-separated, no trailing `/`.
    path: String,
    /// Its name as stored, for messages.
    raw_name: Vec<u8>,
    kind: Kind,
}

#[derive(Clone, Copy)]
enum Kind {
    Dir,
    File { executable: bool, size: u64, crc: u32, deflated: bool },
}

/// Checks every entry of `zip` against `limits` without writing anything.
///
/// Returns the opened archive and what to extract, in central-directory order, with paths already
/// unwrapped from a single top-level folder when that is where `server_config.json` sits.
fn validate<'z>(zip: &'z [u8], limits: &IntakeLimits) -> Result<(Archive<'z>, Vec<Planned>), IntakeError> {
    if zip.len() as u64 > limits.max_upload_bytes {
        return Err(IntakeError::archive_rejected(
            Rule::TooLarge,
            format!(
                "the archive is {} bytes, over the limit of {} bytes (max_upload_size_mb); make the package \
                 smaller (leave out virtual environments, node_modules and data files)",
                zip.len(),
                limits.max_upload_bytes
            ),
        ));
    }
    // Parsing a directory of a million entries costs time and memory before `len()` can say no, so
    // the count in the end record is checked first; the parsed count is checked again below.
    if let Some(count) = end_record_entry_count(zip)
        && count > limits.max_entries as u64
    {
        return Err(too_many_entries(count, limits));
    }
    let mut archive = ZipArchive::new(Cursor::new(zip)).map_err(|error| {
        IntakeError::archive_rejected(
            Rule::Corrupt,
            format!("the archive cannot be read ({error}); make it again with a standard zip tool"),
        )
    })?;
    if archive.offset() != 0 {
        return Err(prepended(archive.offset()));
    }
    let names = central_directory_names(zip, archive.central_directory_start()).map_err(|detail| {
        IntakeError::archive_rejected(Rule::Corrupt, format!("the central directory is damaged: {detail}"))
    })?;
    if names.len() > limits.max_entries {
        return Err(too_many_entries(names.len() as u64, limits));
    }
    // Names first, over the raw directory, which still holds the duplicates the crate folds away.
    let mut seen: HashMap<String, &[u8]> = HashMap::with_capacity(names.len());
    for raw in &names {
        let (path, _) =
            check_name(raw, limits).map_err(|(rule, detail)| IntakeError::entry_rejected(rule, raw, detail))?;
        if let Some(first) = seen.insert(path.to_ascii_lowercase(), raw) {
            let detail = if first == *raw {
                "the name appears twice; tools disagree on which copy wins, so keep one".to_owned()
            } else {
                format!(
                    "differs from `{}` only in letter case, which collides on case-insensitive file systems; rename one",
                    display_name(first)
                )
            };
            return Err(IntakeError::entry_rejected(Rule::DuplicateName, raw, detail));
        }
    }
    if archive.has_duplicate_names() || names.len() != archive.len() {
        return Err(IntakeError::archive_rejected(
            Rule::Corrupt,
            format!(
                "the central directory lists {} names but the archive reader found {} entries; make the archive again",
                names.len(),
                archive.len()
            ),
        ));
    }

    let metadata = archive.metadata();
    let mut planned = Vec::with_capacity(archive.len());
    let mut extents = Vec::with_capacity(archive.len());
    let mut total: u64 = 0;
    for index in 0..archive.len() {
        let entry = metadata.entry(index).map_err(|error| {
            IntakeError::archive_rejected(Rule::Corrupt, format!("entry {index} cannot be read: {error}"))
        })?;
        let raw = entry.name_raw();
        let reject = |rule: Rule, detail: String| IntakeError::entry_rejected(rule, raw, detail);
        let (path, named_dir) = check_name(raw, limits).map_err(|(rule, detail)| reject(rule, detail))?;
        // An Info-ZIP Unicode Path extra field makes readers use another name than the one checked.
        match entry.name() {
            Ok(name) if name.as_bytes() == raw => {}
            Ok(name) => {
                return Err(reject(
                    Rule::UnsafeName,
                    format!(
                        "a Unicode Path extra field renames it to `{}`; store the name once",
                        display_name(name.as_bytes())
                    ),
                ));
            }
            Err(error) => return Err(reject(Rule::Corrupt, format!("its name cannot be decoded: {error}"))),
        }
        if entry.encrypted() {
            return Err(reject(
                Rule::Encrypted,
                "the entry is encrypted, so it can be neither checked nor scanned; zip it without a password".into(),
            ));
        }
        let mode = entry.external_attributes() >> 16;
        match mode & S_IFMT {
            0 | S_IFREG if !named_dir => {}
            0 | S_IFDIR if named_dir => {}
            S_IFDIR => {
                return Err(reject(
                    Rule::Corrupt,
                    "its mode says directory but its name does not end with `/`; make the archive again".into(),
                ));
            }
            S_IFLNK => {
                return Err(reject(
                    Rule::Symlink,
                    "symbolic links are not allowed (they can point outside the package); store the file itself".into(),
                ));
            }
            S_IFREG => {
                return Err(reject(
                    Rule::Corrupt,
                    "its name ends with `/` but its mode says regular file; make the archive again".into(),
                ));
            }
            other => {
                return Err(reject(
                    Rule::SpecialFile,
                    format!(
                        "it is a {}, not a regular file or directory; leave it out",
                        match other {
                            0o020_000 => "character device",
                            0o060_000 => "block device",
                            0o010_000 => "FIFO",
                            0o140_000 => "socket",
                            _ => "file of unknown type",
                        }
                    ),
                ));
            }
        }
        if mode & SET_ID_BITS != 0 {
            return Err(reject(
                Rule::Setuid,
                format!("its mode {mode:o} has a setuid or setgid bit; clear it (`chmod ug-s`) and zip again"),
            ));
        }
        let deflated = match entry.compression() {
            CompressionMethod::Stored => false,
            CompressionMethod::Deflated => true,
            other => {
                return Err(reject(
                    Rule::UnsupportedCompression,
                    format!(
                        "it is compressed with {other}; only stored and deflated entries are accepted (the default of every zip tool)"
                    ),
                ));
            }
        };
        let (size, compressed) = (entry.size(), entry.compressed_size());
        if named_dir && (size != 0 || compressed != 0) {
            return Err(reject(Rule::Corrupt, "a directory entry carries data; make the archive again".into()));
        }
        if !deflated && size != compressed {
            return Err(reject(
                Rule::Corrupt,
                format!("it is stored uncompressed, yet declares {size} bytes in {compressed}; make the archive again"),
            ));
        }
        if size >= IntakeLimits::RATIO_FLOOR_BYTES && size > compressed.saturating_mul(limits.max_ratio) {
            return Err(reject(
                Rule::CompressionRatio,
                format!(
                    "it inflates {compressed} bytes to {size}, a ratio over {} to 1 (a zip bomb?); leave such data out",
                    limits.max_ratio
                ),
            ));
        }
        if size > limits.max_entry_bytes {
            return Err(reject(
                Rule::EntryTooLarge,
                format!("it inflates to {size} bytes, over the limit of {} bytes per entry", limits.max_entry_bytes),
            ));
        }
        total = total.saturating_add(size);
        if total > limits.max_total_bytes {
            return Err(reject(
                Rule::TotalTooLarge,
                format!(
                    "with it the entries inflate to {total} bytes or more, over the limit of {} bytes in all",
                    limits.max_total_bytes
                ),
            ));
        }
        extents.push(Extent {
            start: entry.header_start(),
            end: entry.header_start().saturating_add(LOCAL_HEADER_FIXED + raw.len() as u64).saturating_add(compressed),
            index,
        });
        let kind = if named_dir {
            Kind::Dir
        } else {
            let executable = entry.system() == System::Unix && mode & 0o111 != 0;
            Kind::File { executable, size, crc: entry.crc32(), deflated }
        };
        planned.push(Planned { index, path: path.to_owned(), raw_name: raw.to_vec(), kind });
    }
    check_extents(&mut extents, &planned, archive.central_directory_start())?;
    // The local header must agree with the central directory (name, method, sizes, CRC, flags):
    // readers that stream an archive trust the local header, and both must see the same bytes.
    for entry in &planned {
        if let Err(error) =
            archive.by_index_with_options(entry.index, ZipReadOptions::new().enforce_header_consistency(true))
        {
            return Err(IntakeError::entry_rejected(
                Rule::Corrupt,
                &entry.raw_name,
                format!("its local header disagrees with the central directory ({error}); make the archive again"),
            ));
        }
    }
    // This also finds local headers hidden in gaps between listed entries, which a streaming reader
    // would extract although the central directory does not list them.
    archive.validate_header_consistency().map_err(|error| {
        IntakeError::archive_rejected(
            Rule::Corrupt,
            format!("the archive holds data the central directory does not describe ({error}); make it again"),
        )
    })?;
    check_conflicts(&planned)?;
    let planned = unwrap_root(planned)?;
    Ok((archive, planned))
}

/// Where one entry's local header and data lie in the archive (a lower bound of the end, since the
/// local extra field's length is not counted).
struct Extent {
    start: u64,
    end: u64,
    index: usize,
}

/// Refuses data before the first entry and entries that share bytes.
fn check_extents(extents: &mut [Extent], planned: &[Planned], directory_start: u64) -> Result<(), IntakeError> {
    extents.sort_unstable_by_key(|e| (e.start, e.end));
    let name = |index: usize| planned.iter().find(|p| p.index == index).map_or(&[][..], |p| &p.raw_name[..]);
    if let Some(first) = extents.first()
        && first.start != 0
    {
        return Err(prepended(first.start));
    }
    for pair in extents.windows(2) {
        if pair[1].start < pair[0].end {
            return Err(IntakeError::entry_rejected(
                Rule::OverlappingEntries,
                name(pair[1].index),
                format!(
                    "its data overlaps that of `{}`, so one compressed stream would be inflated many times (a zip bomb)",
                    display_name(name(pair[0].index))
                ),
            ));
        }
    }
    if let Some(last) = extents.last()
        && last.end > directory_start
    {
        return Err(IntakeError::entry_rejected(
            Rule::OverlappingEntries,
            name(last.index),
            "its data runs into the central directory; make the archive again".to_owned(),
        ));
    }
    Ok(())
}

/// Refuses a path used both as a file and as a directory (`a` and `a/b`), which cannot be extracted.
fn check_conflicts(planned: &[Planned]) -> Result<(), IntakeError> {
    let files: HashSet<&str> =
        planned.iter().filter(|p| matches!(p.kind, Kind::File { .. })).map(|p| p.path.as_str()).collect();
    for entry in planned {
        let mut ancestor = entry.path.as_str();
        while let Some((parent, _)) = ancestor.rsplit_once('/') {
            if files.contains(parent) {
                return Err(IntakeError::entry_rejected(
                    Rule::PathConflict,
                    &entry.raw_name,
                    format!(
                        "`{}` is a file in this archive, so it cannot also be a directory",
                        display_name(parent.as_bytes())
                    ),
                ));
            }
            ancestor = parent;
        }
    }
    Ok(())
}

/// Finds `server_config.json` at the root, or unwraps the one top-level folder that holds it.
fn unwrap_root(planned: Vec<Planned>) -> Result<Vec<Planned>, IntakeError> {
    let is_config = |p: &Planned, path: &str| p.path == path && matches!(p.kind, Kind::File { .. });
    if planned.iter().any(|p| is_config(p, SERVER_CONFIG)) {
        return Ok(planned);
    }
    let tops: BTreeSet<&str> = planned.iter().map(|p| p.path.split('/').next().unwrap_or_default()).collect();
    if let [top] = tops.iter().copied().collect::<Vec<_>>()[..] {
        let inner = format!("{top}/{SERVER_CONFIG}");
        if planned.iter().any(|p| is_config(p, &inner)) {
            let prefix = format!("{top}/");
            return Ok(planned
                .into_iter()
                .filter_map(|mut p| {
                    let stripped = p.path.strip_prefix(&prefix)?.to_owned();
                    p.path = stripped;
                    Some(p)
                })
                .collect());
        }
    }
    let mut listed: Vec<String> = tops.iter().take(LISTED_TOP_LEVEL).map(|t| format!("`{t}`")).collect();
    if tops.len() > LISTED_TOP_LEVEL {
        listed.push(format!("and {} more", tops.len() - LISTED_TOP_LEVEL));
    }
    let found =
        if listed.is_empty() { "the archive is empty".to_owned() } else { format!("found {}", listed.join(", ")) };
    Err(IntakeError::archive_rejected(
        Rule::MissingServerConfig,
        format!(
            "no {SERVER_CONFIG} at the package root ({found}); put it beside your code, or zip the one folder that holds both"
        ),
    ))
}

/// Validates `zip` entirely, then extracts it into `dest`, which must not exist.
///
/// Directories are created 0755 and files 0644 (0755 when the archive marks them executable),
/// whatever the archive's modes and the process umask say; files are opened `create_new` with
/// `O_NOFOLLOW`. Each entry is inflated through a reader that stops one byte past its declared size
/// and checks its CRC at the end. A package whose entries all sit under one top-level folder holding
/// `server_config.json` is unwrapped; otherwise `server_config.json` must be at the root. On any
/// error after `dest` was created, `dest` is removed entirely.
pub fn unpack(zip: &[u8], limits: &IntakeLimits, dest: &Path) -> Result<Unpacked, IntakeError> {
    let (mut archive, planned) = validate(zip, limits)?;
    if let Err(error) = DirBuilder::new().mode(DIR_MODE).create(dest) {
        return Err(if error.kind() == io::ErrorKind::AlreadyExists {
            IntakeError::archive_rejected(
                Rule::DestinationExists,
                format!("`{}` already exists; extract into a new directory", dest.display()),
            )
        } else {
            IntakeError::io(format!("creating `{}`", dest.display()), error)
        });
    }
    match extract(&mut archive, &planned, dest) {
        Ok(unpacked) => Ok(unpacked),
        Err(error) => {
            if let Err(cleanup) = fs::remove_dir_all(dest) {
                tracing::error!(dest = %dest.display(), error = %cleanup, "could not remove a half-extracted package");
            }
            Err(error)
        }
    }
}

fn extract(archive: &mut Archive<'_>, planned: &[Planned], dest: &Path) -> Result<Unpacked, IntakeError> {
    set_mode(dest, DIR_MODE)?;
    let mut made: HashSet<&str> = HashSet::new();
    let mut buf = vec![0; CHUNK];
    let mut unpacked = Unpacked::default();
    for entry in planned {
        match entry.kind {
            Kind::Dir => make_dirs(dest, &entry.path, &mut made)?,
            Kind::File { executable, size, crc, deflated } => {
                if let Some((parent, _)) = entry.path.rsplit_once('/') {
                    make_dirs(dest, parent, &mut made)?;
                }
                let target = dest.join(&entry.path);
                let mode = if executable { DIR_MODE } else { FILE_MODE };
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&target)
                    .map_err(|e| IntakeError::io(format!("creating `{}`", target.display()), e))?;
                file.set_permissions(Permissions::from_mode(mode))
                    .map_err(|e| IntakeError::io(format!("setting the mode of `{}`", target.display()), e))?;
                let raw = archive.by_index_raw(entry.index).map_err(|error| {
                    IntakeError::entry_rejected(
                        Rule::Corrupt,
                        &entry.raw_name,
                        format!("its data cannot be found ({error})"),
                    )
                })?;
                let mut reader: Box<dyn Read + '_> =
                    if deflated { Box::new(flate2::read::DeflateDecoder::new(raw)) } else { Box::new(raw) };
                let written = inflate_into(&mut reader, &mut file, size, crc, &mut buf)
                    .map_err(|failure| failure.into_error(&entry.raw_name, size, &target))?;
                unpacked.files += 1;
                unpacked.bytes += written;
            }
        }
    }
    Ok(unpacked)
}

/// Creates `rel` and each missing ancestor below `dest`, 0755 whatever the umask.
fn make_dirs<'p>(dest: &Path, rel: &'p str, made: &mut HashSet<&'p str>) -> Result<(), IntakeError> {
    let ends = rel.match_indices('/').map(|(at, _)| at).chain(std::iter::once(rel.len()));
    for end in ends {
        let prefix = &rel[..end];
        if made.insert(prefix) {
            let path = dest.join(prefix);
            DirBuilder::new()
                .mode(DIR_MODE)
                .create(&path)
                .map_err(|e| IntakeError::io(format!("creating `{}`", path.display()), e))?;
            set_mode(&path, DIR_MODE)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), IntakeError> {
    fs::set_permissions(path, Permissions::from_mode(mode))
        .map_err(|e| IntakeError::io(format!("setting the mode of `{}`", path.display()), e))
}

/// Why inflating one entry failed.
enum InflateFailure {
    /// More bytes came out than the header declares.
    TooLong,
    /// Fewer bytes came out than the header declares.
    TooShort(u64),
    /// The CRC of the bytes that came out differs from the header's.
    Crc { expected: u32, found: u32 },
    /// The compressed stream is damaged.
    Read(io::Error),
    /// Writing the file failed.
    Write(io::Error),
}

impl InflateFailure {
    fn into_error(self, raw_name: &[u8], declared: u64, target: &Path) -> IntakeError {
        let entry = |rule, detail: String| IntakeError::entry_rejected(rule, raw_name, detail);
        match self {
            InflateFailure::TooLong => entry(
                Rule::SizeMismatch,
                format!(
                    "it inflates to more than the {declared} bytes its header declares (a lying header); make the archive again"
                ),
            ),
            InflateFailure::TooShort(got) => entry(
                Rule::Corrupt,
                format!(
                    "it inflates to {got} bytes but its header declares {declared}; the archive is truncated or damaged"
                ),
            ),
            InflateFailure::Crc { expected, found } => entry(
                Rule::Corrupt,
                format!(
                    "its CRC-32 is {found:08x} but the header says {expected:08x}; the data is damaged, make the archive again"
                ),
            ),
            InflateFailure::Read(error) => {
                entry(Rule::Corrupt, format!("its compressed data is damaged ({error}); make the archive again"))
            }
            InflateFailure::Write(error) => IntakeError::io(format!("writing `{}`", target.display()), error),
        }
    }
}

/// Copies `reader` into `out`, refusing to read past one byte more than `declared`, and checks the
/// count and the CRC at the end. Returns the bytes written.
fn inflate_into(
    reader: &mut dyn Read,
    out: &mut File,
    declared: u64,
    expected_crc: u32,
    buf: &mut [u8],
) -> Result<u64, InflateFailure> {
    let mut hasher = crc32fast::Hasher::new();
    let mut seen: u64 = 0;
    loop {
        // One byte more than declared is enough to prove the header lied.
        let room = (declared - seen + 1).min(buf.len() as u64) as usize;
        let n = match reader.read(&mut buf[..room]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(InflateFailure::Read(error)),
        };
        seen += n as u64;
        if seen > declared {
            return Err(InflateFailure::TooLong);
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(InflateFailure::Write)?;
    }
    if seen < declared {
        return Err(InflateFailure::TooShort(seen));
    }
    let found = hasher.finalize();
    if found != expected_crc {
        return Err(InflateFailure::Crc { expected: expected_crc, found });
    }
    Ok(seen)
}

/// Checks one entry name; returns the path without its trailing `/` and whether it names a directory.
///
/// Names are ASCII letters, digits and `._-+@` in `/`-separated components: no control characters
/// (log injection), nothing non-ASCII (look-alikes and normalisation twins cannot be told apart by
/// a reviewer), no `\` (a separator to some tools), no absolute or drive paths, no empty, `.` or
/// `..` components, and no component starting with `-` (read as an option by tools).
pub(crate) fn check_name<'n>(raw: &'n [u8], limits: &IntakeLimits) -> Result<(&'n str, bool), (Rule, String)> {
    const ALLOWED: &str = "letters, digits and `._-+@`";
    if raw.contains(&0) {
        return Err((Rule::UnsafeName, "the name contains a NUL byte, which cuts it short in many tools".into()));
    }
    if let Some(&c) = raw.iter().find(|&&b| b < 0x20 || b == 0x7f) {
        return Err((Rule::UnsafeName, format!("the name contains control character 0x{c:02x}; use {ALLOWED} only")));
    }
    let Ok(name) = std::str::from_utf8(raw) else {
        return Err((
            Rule::UnsafeName,
            format!("the name is not UTF-8 (the zip tool used a legacy code page); use {ALLOWED} only"),
        ));
    };
    if name.contains('\\') {
        return Err((Rule::Backslash, "the name contains `\\`; zip paths separate folders with `/`".into()));
    }
    if name.starts_with('/') {
        return Err((
            Rule::AbsolutePath,
            "absolute paths are not allowed; store paths relative to the package root".into(),
        ));
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err((
            Rule::AbsolutePath,
            "drive letters are not allowed; store paths relative to the package root".into(),
        ));
    }
    if name.len() > limits.max_path_bytes {
        return Err((
            Rule::PathTooLong,
            format!("the path is {} bytes long, over the limit of {}; shorten it", name.len(), limits.max_path_bytes),
        ));
    }
    let (path, is_dir) = match name.strip_suffix('/') {
        Some(path) => (path, true),
        None => (name, false),
    };
    if path.is_empty() {
        return Err((Rule::UnsafeName, "the name is empty".into()));
    }
    let mut depth = 0;
    for component in path.split('/') {
        depth += 1;
        match component {
            "" => return Err((Rule::UnsafeName, "the path has an empty component (`//`)".into())),
            ".." => {
                return Err((
                    Rule::PathTraversal,
                    "paths may not contain `..` components; store paths inside the package root".into(),
                ));
            }
            "." => return Err((Rule::UnsafeName, "the path has a `.` component; remove it".into())),
            _ => {}
        }
        if component.starts_with('-') {
            return Err((
                Rule::UnsafeName,
                format!("the component `{component}` starts with `-`, which tools read as an option; rename it"),
            ));
        }
        if let Some(c) = component.chars().find(|&c| !(c.is_ascii_alphanumeric() || "._-+@".contains(c))) {
            let shown =
                if c.is_ascii_graphic() || c == ' ' { format!("`{c}`") } else { format!("`{}`", c.escape_default()) };
            return Err((
                Rule::UnsafeName,
                format!(
                    "the character {shown} (U+{:04X}) is not allowed in names; rename it using {ALLOWED} only",
                    c as u32
                ),
            ));
        }
    }
    if depth > limits.max_depth {
        return Err((
            Rule::TooDeep,
            format!("the path is {depth} folders deep, over the limit of {}; flatten it", limits.max_depth),
        ));
    }
    Ok((path, is_dir))
}

fn too_many_entries(count: u64, limits: &IntakeLimits) -> IntakeError {
    IntakeError::archive_rejected(
        Rule::TooManyEntries,
        format!(
            "the archive lists {count} entries, over the limit of {}; leave out installed dependencies and generated files",
            limits.max_entries
        ),
    )
}

fn prepended(bytes: u64) -> IntakeError {
    IntakeError::archive_rejected(
        Rule::PrependedData,
        format!(
            "{bytes} bytes of other data precede the first entry (a polyglot or self-extracting file); upload a plain zip"
        ),
    )
}

/// The total entry count of the end-of-central-directory record, unless it defers to ZIP64.
///
/// Only a cheap first guard: the record is found by scanning back for its signature, which a
/// crafted comment could imitate; the parsed directory is counted again afterwards.
fn end_record_entry_count(zip: &[u8]) -> Option<u64> {
    const SIGNATURE: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    const RECORD: usize = 22;
    let tail_start = zip.len().saturating_sub(RECORD + usize::from(u16::MAX));
    let tail = &zip[tail_start..];
    let at = tail.windows(4).rposition(|w| w == SIGNATURE)?;
    let record = tail.get(at..at + RECORD)?;
    let total = u16::from_le_bytes([record[10], record[11]]);
    (total != u16::MAX).then_some(u64::from(total))
}

/// The raw names of every record of the central directory, duplicates included.
fn central_directory_names(zip: &[u8], start: u64) -> Result<Vec<&[u8]>, String> {
    const SIGNATURE: [u8; 4] = [0x50, 0x4b, 0x01, 0x02];
    const FIXED: usize = 46;
    let mut at = usize::try_from(start).map_err(|_| "its offset does not fit in memory".to_owned())?;
    let mut names = Vec::new();
    while zip.get(at..at + 4) == Some(&SIGNATURE[..]) {
        let fixed = zip.get(at..at + FIXED).ok_or_else(|| format!("record {} is cut short", names.len()))?;
        let field = |offset: usize| usize::from(u16::from_le_bytes([fixed[offset], fixed[offset + 1]]));
        let (name_len, extra_len, comment_len) = (field(28), field(30), field(32));
        let name = zip
            .get(at + FIXED..at + FIXED + name_len)
            .ok_or_else(|| format!("the name of record {} is cut short", names.len()))?;
        names.push(name);
        at += FIXED + name_len + extra_len + comment_len;
    }
    Ok(names)
}

/// Zips a server directory into a package that passes [`unpack`]'s checks.
///
/// Walks `dir` without following symlinks (a symlink or special file is an error naming it), in
/// byte order of names so the same tree always makes the same bytes (timestamps are fixed to
/// 1980-01-01), and leaves out [`PACK_SKIPPED`]. Requires `server_config.json` at the root and
/// checks it with [`config::parse_server_config`], listing every error. Entries are deflated,
/// except large ones that would break the ratio limit, which are stored.
pub fn pack_dir(dir: &Path, limits: &IntakeLimits) -> Result<Vec<u8>, IntakeError> {
    let mut items = Vec::new();
    let mut total = 0;
    walk(dir, "", limits, &mut items, &mut total)?;
    if !items.iter().any(|i| i.rel == SERVER_CONFIG && !i.is_dir) {
        return Err(IntakeError::archive_rejected(
            Rule::MissingServerConfig,
            format!("`{}` has no {SERVER_CONFIG}; write one (see `hivehost example-package`)", dir.display()),
        ));
    }
    let config_path = dir.join(SERVER_CONFIG);
    let text =
        fs::read(&config_path).map_err(|e| IntakeError::io(format!("reading `{}`", config_path.display()), e))?;
    let text = String::from_utf8(text).map_err(|_| {
        IntakeError::InvalidServerConfig(config::ConfigErrors {
            errors: vec![config::Diagnostic {
                path: String::new(),
                message: "the file is not UTF-8 text; save it as UTF-8".into(),
            }],
            warnings: Vec::new(),
        })
    })?;
    config::parse_server_config(&text).map_err(IntakeError::InvalidServerConfig)?;

    let zip_error = |error: zip::result::ZipError| IntakeError::io("writing the archive", io::Error::other(error));
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let base = SimpleFileOptions::default().last_modified_time(DateTime::default()).system(System::Unix);
    for item in &items {
        if item.is_dir {
            writer.add_directory(format!("{}/", item.rel), base.unix_permissions(DIR_MODE)).map_err(zip_error)?;
            continue;
        }
        let path = dir.join(&item.rel);
        let data = fs::read(&path).map_err(|e| IntakeError::io(format!("reading `{}`", path.display()), e))?;
        let method = if breaks_ratio(&data, limits) { CompressionMethod::Stored } else { CompressionMethod::Deflated };
        let options = base
            .compression_method(method)
            .unix_permissions(if item.executable { DIR_MODE } else { FILE_MODE })
            .large_file(data.len() as u64 >= u64::from(u32::MAX));
        writer.start_file(item.rel.as_str(), options).map_err(zip_error)?;
        writer.write_all(&data).map_err(|e| IntakeError::io("writing the archive", e))?;
    }
    let bytes = writer.finish().map_err(zip_error)?.into_inner();
    // The same checks as `unpack`, so what `pack_dir` returns is known to go through.
    validate(&bytes, limits)?;
    Ok(bytes)
}

/// One file or directory found by [`walk`].
struct Item {
    rel: String,
    is_dir: bool,
    executable: bool,
}

fn walk(
    dir: &Path,
    prefix: &str,
    limits: &IntakeLimits,
    items: &mut Vec<Item>,
    total: &mut u64,
) -> Result<(), IntakeError> {
    let read = |e| IntakeError::io(format!("reading `{}`", dir.display()), e);
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir).map_err(read)?.collect::<Result<_, _>>().map_err(read)?;
    entries.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    for entry in entries {
        let file_name = entry.file_name();
        let rel_raw = [prefix.as_bytes(), file_name.as_bytes()].concat();
        let Some(name) = file_name.to_str() else {
            return Err(IntakeError::entry_rejected(
                Rule::UnsafeName,
                &rel_raw,
                "the name is not UTF-8; rename it using letters, digits and `._-+@` only",
            ));
        };
        if PACK_SKIPPED.contains(&name) {
            continue;
        }
        let rel = format!("{prefix}{name}");
        let meta = entry
            .path()
            .symlink_metadata()
            .map_err(|e| IntakeError::io(format!("reading `{}`", entry.path().display()), e))?;
        let kind = meta.file_type();
        let checked = |name: &str| {
            check_name(name.as_bytes(), limits)
                .map(|_| ())
                .map_err(|(rule, detail)| IntakeError::entry_rejected(rule, name.as_bytes(), detail))
        };
        if kind.is_symlink() {
            return Err(IntakeError::entry_rejected(
                Rule::Symlink,
                rel.as_bytes(),
                "it is a symbolic link; packages hold no links, so copy the file it points to in its place",
            ));
        } else if kind.is_dir() {
            checked(&format!("{rel}/"))?;
            items.push(Item { rel: rel.clone(), is_dir: true, executable: false });
            walk(&entry.path(), &format!("{rel}/"), limits, items, total)?;
        } else if kind.is_file() {
            checked(&rel)?;
            if meta.len() > limits.max_entry_bytes {
                return Err(IntakeError::entry_rejected(
                    Rule::EntryTooLarge,
                    rel.as_bytes(),
                    format!("it is {} bytes, over the limit of {} bytes per entry", meta.len(), limits.max_entry_bytes),
                ));
            }
            *total += meta.len();
            if *total > limits.max_total_bytes {
                return Err(IntakeError::entry_rejected(
                    Rule::TotalTooLarge,
                    rel.as_bytes(),
                    format!(
                        "with it the files add up to {total} bytes, over the limit of {} bytes",
                        limits.max_total_bytes
                    ),
                ));
            }
            items.push(Item { rel, is_dir: false, executable: meta.permissions().mode() & 0o111 != 0 });
        } else {
            return Err(IntakeError::entry_rejected(
                Rule::SpecialFile,
                rel.as_bytes(),
                "it is a device, FIFO or socket, not a regular file or directory; leave it out",
            ));
        }
        if items.len() > limits.max_entries {
            return Err(too_many_entries(items.len() as u64, limits));
        }
    }
    Ok(())
}

/// Whether deflating `data` would make an entry that breaks the ratio limit. Checked with half the
/// limit as margin, since `zip`'s own deflate may compress a little better than this estimate.
fn breaks_ratio(data: &[u8], limits: &IntakeLimits) -> bool {
    if (data.len() as u64) < IntakeLimits::RATIO_FLOOR_BYTES {
        return false;
    }
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    let compressed = match encoder.write_all(data).and_then(|()| encoder.finish()) {
        Ok(compressed) => compressed.len() as u64,
        // Storing is always safe; a failure here only costs space.
        Err(_) => return true,
    };
    data.len() as u64 > compressed.saturating_mul(limits.max_ratio) / 2
}
