//! Benchmark of package intake: validate + extract + scan of a 10 MB package of 2,000 files, and the refusal of a 1 GiB zip bomb (time and peak memory).
//!
//! Run with `cargo bench --bench package`. Part 1 generates Python- and JavaScript-like sources,
//! packs them with `pack_dir`, then 20 times, alternating: the `zip` crate's own
//! `ZipArchive::extract` of the same bytes (no checks; baseline), a plain walk that reads every
//! extracted file (baseline for the scan), and hivehost's `unpack` + `scan_dir`; medians count.
//! It does so in a tmpfs (`/dev/shm`, when there is one) and on the disk (the temp directory).
//! Part 2 runs this binary again as a child (`bomb-child`), once per way, so each peak memory
//! figure is that child's own: the child builds a bomb, resets its peak RSS (`/proc/self/clear_refs`),
//! reads `VmHWM`, refuses the bomb 20 times, and reads `VmHWM` again. The baseline child does
//! everything but the refusal. Without `--bench` it runs a smoke version.

use std::io::{Cursor, Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hivehost::package::{IntakeLimits, pack_dir, scan, unpack};

const CHILD: &str = "bomb-child";
const TMPFS: &str = "/dev/shm";

struct Sizes {
    files: usize,
    file_bytes: usize,
    runs: usize,
    bomb_mebibytes: usize,
    bomb_runs: usize,
}

const FULL: Sizes = Sizes { files: 2_000, file_bytes: 5_000, runs: 20, bomb_mebibytes: 1024, bomb_runs: 20 };
const SMOKE: Sizes = Sizes { files: 100, file_bytes: 5_000, runs: 2, bomb_mebibytes: 16, bomb_runs: 2 };

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let sizes = if full { FULL } else { SMOKE };
    if let Some(at) = args.iter().position(|a| a == CHILD) {
        let way = args.get(at + 1).context("bomb-child needs a way")?;
        let mebibytes: usize = args.get(at + 2).context("bomb-child needs a size")?.parse()?;
        let runs: usize = args.get(at + 3).context("bomb-child needs a run count")?.parse()?;
        return bomb_child(way, mebibytes, runs);
    }
    // The disk of this machine class creates files at about 0.4 ms each, which alone exceeds the
    // target for 2,000 files; tmpfs (where sandbox.md puts extraction) shows the code's own cost.
    // The scanner compiles its rules on first use, once per process: timed apart, not in the runs.
    let started = Instant::now();
    let _ = scan::scan_text("warm.py", "x = 1\n");
    let compile = started.elapsed();
    let mut places = Vec::new();
    if Path::new(TMPFS).is_dir() {
        places.push(("tmpfs (/dev/shm)", intake(&sizes, Path::new(TMPFS))?));
    }
    places.push(("disk (/tmp, ext4)", intake(&sizes, &std::env::temp_dir())?));
    let bombs = ["honest", "lying", "baseline"]
        .into_iter()
        .map(|way| run_child(way, &sizes).map(|figures| (way, figures)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    print(&places, compile, &bombs, &sizes, full);
    Ok(())
}

// --- Part 1: validate + extract + scan ----------------------------------------------------------

/// Median times of one run of each way, and the package's sizes.
struct Intake {
    zip_bytes: usize,
    tree_bytes: u64,
    files: usize,
    zip_extract: Duration,
    walk: Duration,
    unpack: Duration,
    scan: Duration,
    total: Duration,
    findings: usize,
}

/// A deterministic generator, so every run measures the same package.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % below
    }
}

const PY_LINES: &[&str] = &[
    "def handle_{}(request, context):",
    "    result = compute_{}(request.params, limit=100)",
    "    if not result:\n        raise ValueError('empty result for {}')",
    "    return {{'status': 'ok', 'value': result, 'id': {}}}",
    "import json  # {}",
    "from typing import Any, Optional  # {}",
    "class Tool{}(BaseTool):\n    name = 'tool_{}'",
    "    logger.info('processed %s items', len(items))  # {}",
    "    for item in items:\n        total += item.weight * {}",
    "# Returns the normalised score of entry {} relative to the batch mean.",
];

const JS_LINES: &[&str] = &[
    "export async function handle{}(req, res) {{",
    "  const result = await compute{}(req.body, {{ limit: 100 }});",
    "  if (!result) throw new Error('empty result for {}');",
    "  return res.json({{ status: 'ok', value: result, id: {} }});",
    "}}",
    "import {{ readFile }} from 'node:fs/promises'; // {}",
    "const tool{} = {{ name: 'tool', description: 'does things' }};",
    "  for (const item of items) total += item.weight * {};",
    "// Returns the normalised score of entry {} relative to the batch mean.",
    "  console.error(`processed ${{items.length}} items`); // {}",
];

fn generate(dir: &Path, sizes: &Sizes) -> anyhow::Result<u64> {
    let mut rng = Lcg(42);
    std::fs::write(dir.join("server_config.json"), r#"{"name": "bench", "command": ["python3", "server.py"]}"#)?;
    let mut total = 0;
    for i in 0..sizes.files {
        let (ext, lines) = if i % 2 == 0 { ("py", PY_LINES) } else { ("js", JS_LINES) };
        let sub = dir.join(format!("pkg{}", i % 20)).join(format!("mod{}", i % 7));
        std::fs::create_dir_all(&sub)?;
        let mut text = String::with_capacity(sizes.file_bytes + 200);
        while text.len() < sizes.file_bytes {
            let template = lines[rng.next(lines.len())];
            text.push_str(
                &template.replace("{}", &rng.next(100_000).to_string()).replace("{{", "{").replace("}}", "}"),
            );
            text.push('\n');
        }
        total += text.len() as u64;
        std::fs::write(sub.join(format!("file{i}.{ext}")), text)?;
    }
    Ok(total)
}

/// Packs a generated package below `base`, then extracts and scans it there `sizes.runs` times each way.
fn intake(sizes: &Sizes, base: &Path) -> anyhow::Result<Intake> {
    let work = tempfile::tempdir_in(base)?;
    let src = work.path().join("src");
    std::fs::create_dir(&src)?;
    let tree_bytes = generate(&src, sizes)?;
    let limits = IntakeLimits::new(64 << 20);
    let zip = pack_dir(&src, &limits)?;
    let (mut zip_extract, mut walk, mut unpacks, mut scans, mut totals) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut files, mut findings) = (0, 0);
    for run in 0..sizes.runs {
        let plain = work.path().join(format!("plain{run}"));
        let started = Instant::now();
        zip::ZipArchive::new(Cursor::new(&zip[..]))?.extract(&plain)?;
        zip_extract.push(started.elapsed());

        let started = Instant::now();
        let (read_files, _) = read_all(&plain)?;
        walk.push(started.elapsed());

        let dest = work.path().join(format!("dest{run}"));
        let started = Instant::now();
        let unpacked = unpack(&zip, &limits, &dest)?;
        let unpacked_at = started.elapsed();
        let report = scan::scan_dir(&dest)?;
        let total = started.elapsed();
        unpacks.push(unpacked_at);
        scans.push(total - unpacked_at);
        totals.push(total);
        if unpacked.files != read_files || report.files_scanned != read_files {
            bail!(
                "the ways disagree: zip extracted {read_files} files, unpack {}, scan {}",
                unpacked.files,
                report.files_scanned
            );
        }
        files = unpacked.files;
        findings = report.findings.len();
        std::fs::remove_dir_all(&plain)?;
        std::fs::remove_dir_all(&dest)?;
    }
    Ok(Intake {
        zip_bytes: zip.len(),
        tree_bytes,
        files,
        zip_extract: median(zip_extract),
        walk: median(walk),
        unpack: median(unpacks),
        scan: median(scans),
        total: median(totals),
        findings,
    })
}

/// Reads every file below `dir`; returns how many and their bytes.
fn read_all(dir: &Path) -> anyhow::Result<(usize, u64)> {
    let (mut files, mut bytes) = (0, 0);
    let mut buf = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            let (f, b) = read_all(&entry.path())?;
            files += f;
            bytes += b;
        } else {
            buf.clear();
            bytes += std::fs::File::open(entry.path())?.read_to_end(&mut buf)? as u64;
            files += 1;
        }
    }
    Ok((files, bytes))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

// --- Part 2: the zip bomb, in a child process ---------------------------------------------------

/// What one child reported.
struct BombFigures {
    /// Median time of one refusal; zero for the baseline.
    median: Duration,
    /// `VmHWM` right after the peak was reset, before refusing, in KiB.
    hwm_before_kib: u64,
    /// `VmHWM` after every refusal, in KiB.
    hwm_after_kib: u64,
    /// The rule the refusal reported.
    rule: String,
    /// The bomb's size on disk, and what its data inflates to.
    zip_bytes: usize,
    inflates_to: u64,
    /// Whether the peak could be reset before measuring.
    reset: bool,
}

fn run_child(way: &str, sizes: &Sizes) -> anyhow::Result<BombFigures> {
    let exe = std::env::current_exe()?;
    #[allow(clippy::disallowed_methods, reason = "the bench re-runs itself so each memory figure is one process's own")]
    let mut cmd = std::process::Command::new(exe);
    let output = cmd
        .args([CHILD, way, &sizes.bomb_mebibytes.to_string(), &sizes.bomb_runs.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running the bomb child")?;
    if !output.status.success() {
        bail!("the {way} bomb child failed: {}", output.status);
    }
    let text = String::from_utf8(output.stdout)?;
    let field = |name: &str| -> anyhow::Result<&str> {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .with_context(|| format!("the child did not report {name}: {text}"))
    };
    Ok(BombFigures {
        median: Duration::from_nanos(field("median_ns")?.parse()?),
        hwm_before_kib: field("hwm_before_kib")?.parse()?,
        hwm_after_kib: field("hwm_after_kib")?.parse()?,
        rule: field("rule")?.to_owned(),
        zip_bytes: field("zip_bytes")?.parse()?,
        inflates_to: field("inflates_to")?.parse()?,
        reset: field("reset")?.parse()?,
    })
}

#[allow(clippy::print_stdout, reason = "the child reports to its parent on stdout")]
fn bomb_child(way: &str, mebibytes: usize, runs: usize) -> anyhow::Result<()> {
    let inflates_to = (mebibytes as u64) << 20;
    // The honest bomb declares what it inflates to; the lying one declares 4 KiB.
    let declared = if way == "lying" { 4096 } else { u32::try_from(inflates_to)? };
    let zip = bomb(mebibytes, declared)?;
    let limits = IntakeLimits::new(64 << 20);
    let work = tempfile::tempdir()?;
    let reset = reset_peak();
    let hwm_before_kib = vm_kib("VmHWM")?;
    let mut times = Vec::with_capacity(runs);
    let mut rule = "none".to_owned();
    if way != "baseline" {
        for run in 0..runs {
            let dest = work.path().join(format!("out{run}"));
            let started = Instant::now();
            let error = unpack(&zip, &limits, &dest).err().context("the bomb was accepted")?;
            times.push(started.elapsed());
            rule = error.rule().to_owned();
            if dest.exists() {
                bail!("the refusal left {}", dest.display());
            }
        }
    }
    let hwm_after_kib = vm_kib("VmHWM")?;
    let median_ns = median(times).as_nanos();
    println!(
        "median_ns={median_ns} hwm_before_kib={hwm_before_kib} hwm_after_kib={hwm_after_kib} rule={rule} zip_bytes={} inflates_to={inflates_to} reset={reset}",
        zip.len()
    );
    Ok(())
}

/// Resets the peak resident set size, so `VmHWM` from here on is what follows (Linux 4.0+).
/// Returns false when the kernel refused, in which case the peak includes building the bomb.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn vm_kib(field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line =
        status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field} in /proc/self/status"))?;
    Ok(line.split_whitespace().nth(1).context("a malformed status line")?.parse()?)
}

/// A package whose `bomb.bin` is a real deflate stream of `mebibytes` MiB of zeros (one fully
/// flushed 1 MiB block repeated: each full flush resets the compressor, so every block is the same
/// bytes), stored by the writer and then patched to say deflated, `declared` bytes, right CRC.
fn bomb(mebibytes: usize, declared: u32) -> anyhow::Result<Vec<u8>> {
    let chunk = vec![0u8; 1 << 20];
    let mut compressor = flate2::Compress::new(flate2::Compression::best(), false);
    let mut block = Vec::with_capacity(64 * 1024);
    compressor.compress_vec(&chunk, &mut block, flate2::FlushCompress::Full)?;
    let mut stream = block.repeat(mebibytes);
    let mut end = Vec::with_capacity(64);
    compressor.compress_vec(&[], &mut end, flate2::FlushCompress::Finish)?;
    stream.extend_from_slice(&end);
    let mut one = crc32fast::Hasher::new();
    one.update(&chunk);
    let mut crc = crc32fast::Hasher::new();
    for _ in 0..mebibytes {
        crc.combine(&one);
    }
    let crc = crc.finalize();

    let options = zip::write::SimpleFileOptions::default();
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    writer.start_file("server_config.json", options)?;
    writer.write_all(br#"{"name": "bomb", "command": ["python3", "x.py"]}"#)?;
    writer.start_file("bomb.bin", options.compression_method(zip::CompressionMethod::Stored))?;
    writer.write_all(&stream)?;
    let mut zip = writer.finish()?.into_inner();
    // Local header: method at 8, CRC at 14, size at 22; central record: 10, 16, 24 (APPNOTE 4.3).
    let local = find(&zip, b"PK\x03\x04", 26, 30, b"bomb.bin").context("the bomb's local header")?;
    let central = find(&zip, b"PK\x01\x02", 28, 46, b"bomb.bin").context("the bomb's central record")?;
    for (header, method_at, crc_at, size_at) in [(local, 8, 14, 22), (central, 10, 16, 24)] {
        zip[header + method_at..header + method_at + 2].copy_from_slice(&8u16.to_le_bytes());
        zip[header + crc_at..header + crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        zip[header + size_at..header + size_at + 4].copy_from_slice(&declared.to_le_bytes());
    }
    Ok(zip)
}

fn find(zip: &[u8], signature: &[u8], name_len_at: usize, name_at: usize, name: &[u8]) -> Option<usize> {
    (0..zip.len().saturating_sub(name_at + name.len())).find(|&at| {
        &zip[at..at + 4] == signature
            && usize::from(u16::from_le_bytes([zip[at + name_len_at], zip[at + name_len_at + 1]])) == name.len()
            && &zip[at + name_at..at + name_at + name.len()] == name
    })
}

// --- Report ---------------------------------------------------------------------------------------

#[allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]
fn print(places: &[(&str, Intake)], compile: Duration, bombs: &[(&str, BombFigures)], sizes: &Sizes, full: bool) {
    let note = if full { "" } else { " (smoke run: sizes are tiny, figures mean nothing)" };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let Some((_, first)) = places.first() else { return };
    let mb = first.tree_bytes as f64 / 1e6;
    println!(
        "\npackage intake: {} files, {:.1} MB of sources in a {:.1} MB zip; median of {} runs{note}\n",
        first.files,
        mb,
        first.zip_bytes as f64 / 1e6,
        sizes.runs
    );
    let header: Vec<&str> = places.iter().map(|(place, _)| *place).collect();
    println!("| way | {} |", header.join(" | "));
    println!("|---|{}", "---|".repeat(places.len()));
    let row = |what: &str, get: &dyn Fn(&Intake) -> Duration| {
        let cells: Vec<String> = places
            .iter()
            .map(|(_, i)| format!("{:.1} ms ({:.0} MB/s)", ms(get(i)), mb / get(i).as_secs_f64()))
            .collect();
        println!("| {what} | {} |", cells.join(" | "));
    };
    row("baseline: zip's ZipArchive::extract (no checks)", &|i| i.zip_extract);
    row("baseline: plain walk reading every extracted file", &|i| i.walk);
    row("baselines together (extract + read)", &|i| i.zip_extract + i.walk);
    row("hivehost unpack (validate + extract)", &|i| i.unpack);
    row("hivehost scan_dir", &|i| i.scan);
    row("**hivehost unpack + scan_dir (target < 150 ms)**", &|i| i.total);
    for (place, i) in places {
        println!("{place}: {} findings in the generated package (its code is innocent)", i.findings);
    }
    println!("compiling the scanner's rules, once per process (not in the runs): {:.1} ms", ms(compile));

    println!("\nzip bomb: a real deflate stream of zeros; medians of {} refusals in one child each\n", sizes.bomb_runs);
    println!("| way | zip | inflates to | rule | time to refusal | VmHWM before | VmHWM after | peak growth |");
    println!("|---|---|---|---|---|---|---|---|");
    for (way, b) in bombs {
        let what = match *way {
            "honest" => "honest header (declares its size)",
            "lying" => "lying header (declares 4 KiB)",
            _ => "baseline: same child, no refusal",
        };
        println!(
            "| {what} | {:.2} MB | {} MiB | {} | {:.3} ms | {:.1} MiB | {:.1} MiB | {:.2} MiB |",
            b.zip_bytes as f64 / 1e6,
            b.inflates_to >> 20,
            b.rule,
            ms(b.median),
            b.hwm_before_kib as f64 / 1024.0,
            b.hwm_after_kib as f64 / 1024.0,
            b.hwm_after_kib.saturating_sub(b.hwm_before_kib) as f64 / 1024.0
        );
    }
    if bombs.iter().any(|(_, b)| !b.reset) {
        println!("\n/proc/self/clear_refs refused a reset: the VmHWM figures include building the bomb");
    }
    println!("\ntargets: refusal < 50 ms, peak memory < 20 MB");
}
