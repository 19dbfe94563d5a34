//! The advisory scanner: flags suspicious code in a package, with the file, line and severity of each finding.
//!
//! **The scanner is advisory; the sandbox is the boundary.** Patterns are trivially evaded
//! (`getattr(__builtins__, 'ev'+'al')`, string concatenation, `importlib`, encoded payloads, code
//! downloaded at run time, native extensions), and legitimate servers use `subprocess` and sockets.
//! Findings are for triage and for the person deploying: what the scanner misses must still be
//! contained at run time by the sandbox layers (uid, cgroups, namespaces, Landlock, seccomp). When
//! `scan_uploads` is on, critical findings block a deploy; the others warn.
//!
//! Files are classified by extension, else by shebang: Python, JavaScript/TypeScript, shell, or
//! other text. Each class has one [`regex::bytes::RegexSet`] run once over the whole text; only the
//! rules that matched are then run alone to find their lines, so a clean 10 MB package costs one
//! pass per file. Files over [`MAX_TEXT_BYTES`] skip the text rules (an `info` finding says so) but
//! their magic bytes are still checked; files with a NUL byte in their first 8 KiB are binary and
//! only get the magic-byte and name rules.
//!
//! | rule | severity | where | what |
//! |---|---|---|---|
//! | `reverse_shell` | critical | code | `/dev/tcp/`, `nc -e`, `bash -i >&`, `socat … exec:`, `os.dup2(s.fileno(), …)`, `pty.spawn("/bin/sh")` |
//! | `download_exec` | critical | code | `curl`/`wget` piped to a shell or interpreter, `sh -c "$(curl …)"`, `bash <(curl …)`, exec/eval of a fetched body |
//! | `decode_exec` | critical | code | `base64 -d \| sh`, `exec(base64.b64decode(…))`, `exec(zlib.decompress(…))`, `eval(atob(…))`, `eval(Buffer.from(…))` |
//! | `miner` | critical | all text | `stratum+tcp://`, xmrig, xmr-stak, cpuminer, cryptonight, coinhive, nicehash, … |
//! | `credential_path` | critical | code | `~/.ssh`, `/etc/shadow`, `.aws/credentials`, gcloud, Azure, kube and Docker credential files, `.git-credentials`, `.netrc`, `/proc/N/environ` |
//! | `native_executable` | critical | any file | ELF, Mach-O or PE magic; `.so`, `.dylib`, `.dll`, `.exe`, `.node`, `.pyd` names |
//! | `pth_file` | critical | any file | a `.pth` file (Python runs its `import` lines at every start) |
//! | `dynamic_eval` | high | Python, JS | `eval`/`exec`/`compile`/`new Function`/`vm.runIn*` of something other than a literal (not `model.eval()`, not `re.compile`) |
//! | `shell_true` | high | Python | `shell=True` |
//! | `os_system` | high | Python | `os.system`, `os.popen`, `os.exec*`, `os.spawn*` |
//! | `fork_bomb` | high | shell | `:(){ :\|:& };:` |
//! | `setuid_chmod` | high | shell | `chmod +s`, `chmod u+s`, `chmod 4755` |
//! | `secret` | high | all text | private key blocks; AWS, GitHub, Slack, OpenAI/Anthropic-style, Google and Stripe keys (excerpts redacted) |
//! | `child_process` | warning | JS | `require("child_process")`, `import … from "child_process"` |
//! | `ctypes` | warning | Python | `import ctypes`, `ctypes.CDLL`, `cffi` |
//! | `native_binding` | warning | JS | `process.binding`, `process.dlopen` |
//! | `unsafe_deserialization` | warning | Python | `pickle.loads`, `marshal.loads`, `dill`/`cloudpickle` loads |
//! | `dynamic_import` | warning | Python | `__import__(x)`, `importlib.import_module(x)` of a non-literal |
//! | `persistence` | warning | shell | `crontab`, `nohup`, `setsid`, `disown` |
//! | `encoded_blob` | warning | code | a run of 1,000 or more base64 or hex-escape characters |
//! | `npm_install_script` | warning | `package.json` | `preinstall`, `install`, `postinstall`, `prepare` scripts |
//! | `compiled_bytecode` | warning | any file | `.pyc`/`.pyo`: code that cannot be read |
//! | `dynamic_require` | info | JS | `require(x)` or `import(x)` of a non-literal |
//! | `minified` | info | JS | a line of 5,000 or more bytes: generated or obfuscated, review by hand |
//! | `not_scanned` | info | any file | over 2 MiB: text rules skipped, magic bytes checked |
//! | `symlink`, `special_file` | warning | [`scan_dir`] | not followed, not read |
//!
//! "Code" is Python, JavaScript/TypeScript and shell files: a README that tells users to
//! `curl … | sh`, or mentions `~/.ssh`, is documentation, not something the server runs.

use std::fmt::Write as _;
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::LazyLock;

use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

#[cfg(test)]
mod tests;

/// Files larger than this skip the text rules (their magic bytes are still checked).
pub const MAX_TEXT_BYTES: u64 = 2 << 20;
/// How many findings one rule may report per file; the last one says how many more there were.
const MAX_PER_RULE_PER_FILE: usize = 10;
/// The longest excerpt, in characters.
const MAX_EXCERPT_CHARS: usize = 120;
/// A run of this many base64 or hex-escape characters is an encoded blob.
const BLOB_CHARS: usize = 1_000;
/// A JavaScript line this long is minified or generated.
const MINIFIED_LINE_BYTES: usize = 5_000;
/// How much of a file is inspected to tell text from binary, and the most read of a large file.
const SNIFF_BYTES: usize = 8 * 1024;

/// How much a finding matters. Only [`Severity::Critical`] blocks a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; no action expected.
    Info,
    /// Legitimate servers do this, but it deserves a look.
    Warning,
    /// Dangerous unless the author meant it; review before trusting the server.
    High,
    /// Known-malicious patterns (reverse shells, download-and-execute, miners, credential theft,
    /// native code): blocks the deploy when `scan_uploads` is on.
    Critical,
}

impl Severity {
    fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One suspicious thing, where it is and why it matters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The rule's stable id, e.g. `reverse_shell` (see the table in the module docs).
    pub rule: &'static str,
    /// How much it matters.
    pub severity: Severity,
    /// The file, relative to the package root, `/`-separated.
    pub file: String,
    /// The 1-based line; 0 for findings about the whole file.
    pub line: u32,
    /// What was found and why it matters.
    pub message: String,
    /// The line (or part of it), at most 120 characters, control characters escaped and secrets redacted.
    pub excerpt: String,
}

/// Everything the scanner found in a package.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScanReport {
    /// Regular files looked at.
    pub files_scanned: usize,
    /// Bytes read.
    pub bytes_scanned: u64,
    /// Findings in file order, then line order.
    pub findings: Vec<Finding>,
}

impl ScanReport {
    /// The findings that block a deploy when `scan_uploads` is on: the critical ones.
    pub fn blocking(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.severity == Severity::Critical)
    }

    /// One line for people: counts by severity, and where the critical findings are.
    pub fn summary(&self) -> String {
        let files = if self.files_scanned == 1 { "file" } else { "files" };
        let mut out = format!("scanned {} {files} ({} bytes): ", self.files_scanned, self.bytes_scanned);
        if self.findings.is_empty() {
            out.push_str("no findings");
            return out;
        }
        let count = |s: Severity| self.findings.iter().filter(|f| f.severity == s).count();
        let counts: Vec<String> = [Severity::Critical, Severity::High, Severity::Warning, Severity::Info]
            .into_iter()
            .map(|s| format!("{} {}", count(s), s.name()))
            .collect();
        out.push_str(&counts.join(", "));
        let blocking: Vec<String> =
            self.blocking().take(5).map(|f| format!("{} in {}:{}", f.rule, f.file, f.line)).collect();
        if !blocking.is_empty() {
            let _ = write!(out, "; critical (blocks the deploy when scan_uploads is on): {}", blocking.join(", "));
            if count(Severity::Critical) > blocking.len() {
                out.push_str(", …");
            }
        }
        out
    }
}

/// The kind of text a file holds, which decides the rules it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Python,
    JavaScript,
    Shell,
    Text,
}

const LANGS: [Lang; 4] = [Lang::Python, Lang::JavaScript, Lang::Shell, Lang::Text];
const CODE: &[Lang] = &[Lang::Python, Lang::JavaScript, Lang::Shell];
const ALL: &[Lang] = &[Lang::Python, Lang::JavaScript, Lang::Shell, Lang::Text];
const PY: &[Lang] = &[Lang::Python];
const JS: &[Lang] = &[Lang::JavaScript];
const SH: &[Lang] = &[Lang::Shell];

/// A pattern rule over text. Patterns are byte regexes without Unicode classes (`\b`, `\w` and `\s`
/// are ASCII), which keeps them on the fast DFA engines.
struct TextRule {
    id: &'static str,
    severity: Severity,
    langs: &'static [Lang],
    pattern: String,
    /// A line that matches this too is not a finding (e.g. `def eval(self):`).
    unless: Option<&'static str>,
    message: &'static str,
}

const SHELLS: &str = r"(?:/usr)?(?:/bin/)?(?:ba|z|da|k)?sh";

/// Every text rule. The table in the module docs mirrors it.
static TEXT_RULES: LazyLock<Vec<TextRule>> = LazyLock::new(|| {
    use Severity::*;
    let rule = |id, severity, langs, pattern, message| TextRule { id, severity, langs, pattern, unless: None, message };
    vec![
        rule(
            "reverse_shell",
            Critical,
            CODE,
            [
                r"/dev/(?:tcp|udp)/",
                r"\b(?:nc|ncat|netcat)\b[^\n;|]*\s(?:-[a-zA-Z]*[ec]\b|--exec\b|--sh-exec\b)",
                r"\bbash\s+-i\s*[0-9]?>&",
                r"(?i)\bsocat\b[^\n]*\bexec:",
                r"\bmkfifo\b[^\n]*\b(?:nc|ncat|netcat)\b",
                r"\bos\.dup2\(\s*\w+\.fileno\(\)\s*,\s*[012]\s*\)",
                r#"\bpty\.spawn\(\s*["'](?:/bin/)?(?:ba)?sh"#,
            ]
            .join("|"),
            "a reverse-shell idiom: hands a shell to a remote host",
        ),
        rule(
            "download_exec",
            Critical,
            CODE,
            [
                format!(r"\b(?:curl|wget)\b[^\n|;]*\|\s*(?:sudo\s+(?:-\S+\s+)*)?(?:{SHELLS}|python[0-9.]*|perl|ruby|node)\b"),
                format!(r#"\b{SHELLS}\s+-c\s+["']?\$\(\s*(?:curl|wget)\b"#),
                format!(r"\b(?:{SHELLS}|source)\s+<\(\s*(?:curl|wget)\b"),
                r"\b(?:exec|eval)\s*\([^\n]*\b(?:urlopen|urlretrieve|requests\.get|httpx\.get|fetch)\s*\(".to_owned(),
            ]
            .join("|"),
            "downloads code and runs it: whatever the server fetches at run time was never reviewed",
        ),
        rule(
            "decode_exec",
            Critical,
            CODE,
            [
                format!(r"\bbase(?:32|64)\s+(?:-d|--decode|-D)\b[^\n]*\|\s*(?:sudo\s+)?{SHELLS}\b"),
                r#"\b(?:eval|(?:ba|z)?sh\s+-c)\s+["']?\$\([^\n]*\bbase(?:32|64)\s+(?:-d|--decode|-D)\b"#.to_owned(),
                r"\b(?:exec|eval)\s*\(\s*(?:compile\s*\(\s*)?(?:[\w.]*\.)?(?:b64decode|b32decode|b16decode|a85decode|b85decode|decodebytes|decodestring|decompress|unhexlify|fromhex|loads)\s*\(".to_owned(),
                r"\b(?:exec|eval)\s*\(\s*codecs\.decode\s*\(".to_owned(),
                r"(?:\beval|\bFunction)\s*\(\s*(?:atob|unescape|decodeURIComponent|Buffer\.from)\s*\(".to_owned(),
            ]
            .join("|"),
            "decodes a hidden payload and executes it",
        ),
        rule(
            "miner",
            Critical,
            ALL,
            r"(?i)stratum\+(?:tcp|ssl|tls)://|\b(?:xmrig|xmr-stak|cpuminer|cryptonight|coinhive|minergate|nicehash|ethminer|nbminer|lolminer|phoenixminer|srbminer)\b"
                .to_owned(),
            "a cryptocurrency miner signature",
        ),
        rule(
            "credential_path",
            Critical,
            CODE,
            [
                r"~/\.ssh\b",
                r#"["'/]\.ssh(?:/|["'])"#,
                r"\bid_(?:rsa|dsa|ecdsa|ed25519)\b",
                r"/etc/(?:g?shadow|sudoers)\b",
                r"\.aws/(?:credentials|config)\b",
                r"\.config/gcloud\b",
                r"\bapplication_default_credentials\.json",
                r"\.azure/(?:credentials|accessTokens\.json|msal_token_cache)",
                r"\.kube/config\b",
                r"\.docker/config\.json",
                r"\.git-credentials\b",
                r"\.netrc\b",
                r"/proc/[0-9]+/environ\b",
            ]
            .join("|"),
            "refers to a credential file: a server has no business reading the host's keys",
        ),
        TextRule {
            unless: Some(r"\b(?:def|function)\s+(?:eval|exec|compile)\b"),
            ..rule(
                "dynamic_eval",
                High,
                PY,
                r#"(?:^|[^.\w])(?:eval|exec|compile)\s*\(\s*[^\s)"']"#.to_owned(),
                "evaluates code built at run time; if any of it comes from a request, it is remote code execution",
            )
        },
        TextRule {
            unless: Some(r"\bfunction\s+eval\b"),
            ..rule(
                "dynamic_eval",
                High,
                JS,
                [
                    r#"(?:^|[^.\w$])eval\s*\(\s*[^\s)"']"#,
                    r"\bnew\s+Function\s*\(",
                    r"\bvm\s*\.\s*(?:runIn(?:New|This)?Context|compileFunction)\s*\(",
                    r"\bnew\s+vm\s*\.\s*Script\s*\(",
                ]
                .join("|"),
                "evaluates code built at run time; if any of it comes from a request, it is remote code execution",
            )
        },
        rule("shell_true", High, PY, r"\bshell\s*=\s*True\b".to_owned(), "runs a command through a shell, where quoting mistakes become command injection; pass an argument list without shell=True"),
        rule(
            "os_system",
            High,
            PY,
            r"\bos\s*\.\s*(?:system|popen|exec[lv]p?e?|spawn[lv]p?e?)\s*\(".to_owned(),
            "runs a command through os.system/popen/exec, often a shell; prefer subprocess with an argument list",
        ),
        rule("fork_bomb", High, SH, r":\s*\(\s*\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:".to_owned(), "a fork bomb"),
        rule(
            "setuid_chmod",
            High,
            SH,
            r"\bchmod\s+(?:-\S+\s+)*(?:[ugoa]*\+[rwx]*s|[0-7]?[2-7][0-7]{3}\b)".to_owned(),
            "sets a setuid or setgid bit",
        ),
        rule(
            "secret",
            High,
            ALL,
            SECRET_PATTERNS.join("|"),
            "a committed secret: revoke it, and pass secrets through the server's environment instead",
        ),
        rule(
            "child_process",
            Warning,
            JS,
            r#"\brequire\s*\(\s*["'](?:node:)?child_process["']\s*\)|\bfrom\s+["'](?:node:)?child_process["']|\bimport\s*\(\s*["'](?:node:)?child_process["']\s*\)"#.to_owned(),
            "starts other programs; check what it runs and with which arguments",
        ),
        rule(
            "ctypes",
            Warning,
            PY,
            r"(?m)^\s*(?:import|from)\s+(?:ctypes|cffi)\b|\bctypes\s*\.\s*(?:CDLL|cdll|WinDLL|windll|pythonapi|LibraryLoader)\b".to_owned(),
            "calls native code directly, outside what the interpreter checks",
        ),
        rule(
            "native_binding",
            Warning,
            JS,
            r"\bprocess\s*\.\s*(?:binding|_linkedBinding|dlopen)\s*\(".to_owned(),
            "reaches into Node's internals or loads native code",
        ),
        rule(
            "unsafe_deserialization",
            Warning,
            PY,
            r"\b(?:pickle|cPickle|_pickle|marshal|dill|cloudpickle)\s*\.\s*loads?\s*\(".to_owned(),
            "unpickling runs code chosen by whoever wrote the data; never unpickle what a client sends",
        ),
        rule(
            "dynamic_import",
            Warning,
            PY,
            r#"\b__import__\s*\(\s*[^\s)"']|\bimportlib\s*\.\s*import_module\s*\(\s*[^\s)"']"#.to_owned(),
            "imports a module whose name is computed at run time",
        ),
        rule(
            "persistence",
            Warning,
            SH,
            r"(?m)(?:^|[;&|]\s*|\s)(?:crontab|nohup|setsid|disown)\b".to_owned(),
            "detaches or schedules processes, which outlive a normal stop",
        ),
        rule(
            "dynamic_require",
            Info,
            JS,
            r#"(?:^|[^.\w$])(?:require|import)\s*\(\s*[^\s)"'`]"#.to_owned(),
            "loads a module whose name is computed at run time",
        ),
    ]
});

/// Secret patterns; also used to redact every excerpt.
const SECRET_PATTERNS: [&str; 9] = [
    r"-----BEGIN (?:RSA |DSA |EC |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY(?: BLOCK)?-----",
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{36,}",
    r"\bgithub_pat_[A-Za-z0-9_]{22,}",
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    r"https://hooks\.slack\.com/services/[A-Za-z0-9/_-]{20,}",
    r"\bsk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{32,}",
    r"\bAIza[0-9A-Za-z_-]{35}",
    r"\b[rs]k_live_[0-9a-zA-Z]{24,}",
];

/// The compiled rules of one language: the set for the single pass, and each rule alone to find lines.
struct LangRules {
    set: RegexSet,
    rules: Vec<Compiled>,
}

struct Compiled {
    rule: &'static TextRule,
    regex: Regex,
    unless: Option<Regex>,
}

fn build(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern).unicode(false).multi_line(true).build()
}

/// Per language, indexed like [`LANGS`]. A pattern that does not compile is logged and left out
/// (the tests compile every one, so this is only a guard against a panic in production).
static COMPILED: LazyLock<Vec<LangRules>> = LazyLock::new(|| {
    LANGS
        .iter()
        .map(|lang| {
            let mut rules = Vec::new();
            for rule in TEXT_RULES.iter().filter(|r| r.langs.contains(lang)) {
                let unless = rule.unless.map(build).transpose();
                match (build(&rule.pattern), unless) {
                    (Ok(regex), Ok(unless)) => rules.push(Compiled { rule, regex, unless }),
                    (Err(error), _) | (_, Err(error)) => {
                        tracing::error!(rule = rule.id, %error, "a scanner pattern does not compile; the rule is skipped");
                    }
                }
            }
            let set = RegexSetBuilder::new(rules.iter().map(|c| c.rule.pattern.as_str()))
                .unicode(false)
                .multi_line(true)
                .build()
                .unwrap_or_else(|error| {
                    tracing::error!(%error, "the scanner's pattern set does not compile; text rules are skipped");
                    RegexSet::empty()
                });
            if set.is_empty() {
                rules.clear();
            }
            LangRules { set, rules }
        })
        .collect()
});

static SECRETS: LazyLock<Option<Regex>> = LazyLock::new(|| build(&SECRET_PATTERNS.join("|")).ok());

/// Scans one file's text. Pure: the rules live apart from I/O, so tests and other callers can use it.
pub fn scan_text(file: &str, text: &str) -> Vec<Finding> {
    scan_bytes(file, text.as_bytes())
}

/// Scans one whole file: name rules, magic bytes, and (for text) the text rules of its language.
///
/// For a file too large for the text rules, call [`scan_head`] with its first bytes instead.
pub fn scan_bytes(file: &str, bytes: &[u8]) -> Vec<Finding> {
    let mut findings = scan_head(file, bytes);
    let sniff = &bytes[..bytes.len().min(SNIFF_BYTES)];
    if sniff.contains(&0) || is_native(bytes) {
        return findings;
    }
    let lang = classify(file, bytes);
    if let Some(rules) = COMPILED.get(lang_index(lang)) {
        scan_rules(file, bytes, rules, &mut findings);
    }
    if CODE.contains(&lang) {
        find_blobs(file, bytes, &mut findings);
    }
    if lang == Lang::JavaScript {
        find_minified(file, bytes, &mut findings);
    }
    if base_name(file) == "package.json" {
        find_install_scripts(file, bytes, &mut findings);
    }
    // Stable, so whole-file findings (line 0) come first and each line keeps its rules' order.
    findings.sort_by_key(|f| f.line);
    findings
}

/// The rules that need only a file's name and first bytes: native executables, `.pth` files and
/// compiled bytecode.
pub fn scan_head(file: &str, head: &[u8]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let name = base_name(file).to_ascii_lowercase();
    let whole = |rule, severity, message: String| Finding {
        rule,
        severity,
        file: file.to_owned(),
        line: 0,
        message,
        excerpt: String::new(),
    };
    if let Some(kind) = native_magic(head) {
        findings.push(whole(
            "native_executable",
            Severity::Critical,
            format!("a native {kind} binary: it cannot be reviewed and runs outside the interpreter; build it on the host instead"),
        ));
    } else if is_native_name(&name) {
        findings.push(whole(
            "native_executable",
            Severity::Critical,
            "named like a native library or executable; ship source and build it on the host instead".into(),
        ));
    }
    if name.ends_with(".pth") {
        findings.push(whole(
            "pth_file",
            Severity::Critical,
            "a .pth file: Python executes its `import` lines at every interpreter start".into(),
        ));
    }
    if name.ends_with(".pyc") || name.ends_with(".pyo") {
        findings.push(whole(
            "compiled_bytecode",
            Severity::Warning,
            "compiled Python bytecode cannot be reviewed; ship the source".into(),
        ));
    }
    findings
}

fn base_name(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
}

fn lang_index(lang: Lang) -> usize {
    LANGS.iter().position(|l| *l == lang).unwrap_or(LANGS.len() - 1)
}

/// The language of a file, by extension, else by the interpreter its shebang names.
fn classify(file: &str, bytes: &[u8]) -> Lang {
    let name = base_name(file).to_ascii_lowercase();
    let extension = name.rsplit_once('.').map(|(_, ext)| ext).unwrap_or_default();
    match extension {
        "py" | "pyw" | "pyi" => return Lang::Python,
        "js" | "mjs" | "cjs" | "jsx" | "ts" | "mts" | "cts" | "tsx" => return Lang::JavaScript,
        "sh" | "bash" | "zsh" | "ksh" | "dash" => return Lang::Shell,
        _ => {}
    }
    let first_line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let Some(shebang) = first_line.strip_prefix(b"#!") else { return Lang::Text };
    let shebang = String::from_utf8_lossy(shebang);
    let mut tokens = shebang.split_ascii_whitespace();
    let program = tokens.next().map(|t| t.rsplit('/').next().unwrap_or(t)).unwrap_or_default();
    // `#!/usr/bin/env -S python3 -u` names the interpreter after env and its options.
    let interpreter = if program == "env" { tokens.find(|t| !t.starts_with('-')).unwrap_or_default() } else { program };
    if interpreter.starts_with("python") {
        Lang::Python
    } else if matches!(interpreter, "node" | "nodejs" | "deno" | "bun" | "tsx" | "ts-node") {
        Lang::JavaScript
    } else if matches!(interpreter, "sh" | "bash" | "zsh" | "dash" | "ksh" | "ash") {
        Lang::Shell
    } else {
        Lang::Text
    }
}

/// Runs a language's set once, then each matching rule alone to find its lines.
fn scan_rules(file: &str, bytes: &[u8], rules: &LangRules, findings: &mut Vec<Finding>) {
    let matched = rules.set.matches(bytes);
    if !matched.matched_any() {
        return;
    }
    let mut lines = LineIndex::new(bytes);
    for index in matched.iter() {
        let Some(compiled) = rules.rules.get(index) else { continue };
        let mut reported = 0;
        let mut more = 0;
        let mut last_line = 0;
        for found in compiled.regex.find_iter(bytes) {
            let (line, text, column) = lines.locate(found.start());
            if line == last_line {
                continue;
            }
            if compiled.unless.as_ref().is_some_and(|unless| unless.is_match(text)) {
                continue;
            }
            last_line = line;
            if reported == MAX_PER_RULE_PER_FILE {
                more += 1;
                continue;
            }
            reported += 1;
            findings.push(Finding {
                rule: compiled.rule.id,
                severity: compiled.rule.severity,
                file: file.to_owned(),
                line,
                message: compiled.rule.message.to_owned(),
                excerpt: excerpt(text, column),
            });
        }
        if more > 0
            && let Some(last) = findings.last_mut()
        {
            let _ = write!(last.message, " ({more} more lines in this file)");
        }
    }
}

/// Finds 1-based line numbers by counting newlines forward from the last position asked for.
struct LineIndex<'t> {
    text: &'t [u8],
    at: usize,
    line: u32,
    line_start: usize,
}

impl<'t> LineIndex<'t> {
    fn new(text: &'t [u8]) -> LineIndex<'t> {
        LineIndex { text, at: 0, line: 1, line_start: 0 }
    }

    /// The line number of `offset`, and that line's text (without its newline) with `offset`'s
    /// position in it.
    fn locate(&mut self, offset: usize) -> (u32, &'t [u8], usize) {
        if offset < self.at {
            // Each rule's matches come in order, but a new rule starts again from the top.
            *self = LineIndex::new(self.text);
        }
        for (i, &b) in self.text[self.at..offset].iter().enumerate() {
            if b == b'\n' {
                self.line += 1;
                self.line_start = self.at + i + 1;
            }
        }
        self.at = offset;
        let end = self.text[self.line_start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.text.len(), |n| self.line_start + n);
        (self.line, &self.text[self.line_start..end], offset - self.line_start)
    }
}

/// A short, printable, redacted excerpt of `line` around byte `at`.
///
/// Secrets are redacted over the whole line before the window is cut, so a window edge can never
/// split a secret out of its pattern's reach.
fn excerpt(line: &[u8], at: usize) -> String {
    let redacted = redact(line);
    let text = String::from_utf8_lossy(&redacted);
    let text = text.trim();
    let chars: Vec<char> = text.chars().collect();
    let (start, end) = if chars.len() <= MAX_EXCERPT_CHARS {
        (0, chars.len())
    } else {
        // Redaction only shortens a line, so the match is at or before this character; the window
        // starts a little before it, as far as the line allows.
        let at = String::from_utf8_lossy(&line[..at.min(line.len())]).chars().count().min(chars.len());
        let start = at.saturating_sub(MAX_EXCERPT_CHARS / 4).min(chars.len() - MAX_EXCERPT_CHARS);
        (start, start + MAX_EXCERPT_CHARS)
    };
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    // Escapes make characters longer; the window stays within the limit all the same.
    let mut shown = 0;
    let mut cut = end < chars.len();
    for &c in &chars[start..end] {
        let width = if c.is_control() { c.escape_default().count() } else { 1 };
        if shown + width > MAX_EXCERPT_CHARS {
            cut = true;
            break;
        }
        shown += width;
        if c.is_control() { out.extend(c.escape_default()) } else { out.push(c) }
    }
    if cut {
        out.push('…');
    }
    out
}

/// Replaces every secret in `line` by its first four characters and a marker.
fn redact(line: &[u8]) -> Vec<u8> {
    let Some(secrets) = SECRETS.as_ref() else { return line.to_vec() };
    secrets
        .replace_all(line, |caps: &regex::bytes::Captures<'_>| {
            let secret = &caps[0];
            if secret.starts_with(b"-----") {
                secret.to_vec()
            } else {
                [&secret[..secret.len().min(4)], b"****[redacted]"].concat()
            }
        })
        .into_owned()
}

/// Finds the runs of at least `min` bytes for which `member` holds, in order.
///
/// Any `min` consecutive positions include exactly one multiple of `min`, so only those positions
/// are probed, and a run is measured only around a probe that lands in one: a clean file costs
/// `len / min` probes plus short walks, not a look at every byte.
fn long_runs(bytes: &[u8], min: usize, member: impl Fn(u8) -> bool) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut probe = min - 1;
    while probe < bytes.len() {
        if !member(bytes[probe]) {
            probe += min;
            continue;
        }
        let start = bytes[..probe].iter().rposition(|&b| !member(b)).map_or(0, |at| at + 1);
        let end = bytes[probe..].iter().position(|&b| !member(b)).map_or(bytes.len(), |n| probe + n);
        if end - start >= min {
            runs.push(start..end);
        }
        // The first probe position at or after the run's end (`bytes[end]` is not a member).
        probe = end + (2 * min - 1 - end % min) % min;
    }
    runs
}

/// Reports runs of [`BLOB_CHARS`] or more base64 or hex-escape characters (`\x41\x42…` counts too).
fn find_blobs(file: &str, bytes: &[u8], findings: &mut Vec<Finding>) {
    let is_blob_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'\\' | b'_' | b'-');
    let mut lines = LineIndex::new(bytes);
    for run in long_runs(bytes, BLOB_CHARS, is_blob_char).into_iter().take(MAX_PER_RULE_PER_FILE) {
        let (line, text, column) = lines.locate(run.start);
        findings.push(Finding {
            rule: "encoded_blob",
            severity: Severity::Warning,
            file: file.to_owned(),
            line,
            message: format!(
                "a {}-character encoded blob: payloads hide in these; if it is data, ship it as a file",
                run.len()
            ),
            excerpt: excerpt(text, column),
        });
    }
}

/// Reports the first line of [`MINIFIED_LINE_BYTES`] or more.
fn find_minified(file: &str, bytes: &[u8], findings: &mut Vec<Finding>) {
    let Some(run) = long_runs(bytes, MINIFIED_LINE_BYTES, |b| b != b'\n').into_iter().next() else { return };
    let (line, text, _) = LineIndex::new(bytes).locate(run.start);
    findings.push(Finding {
        rule: "minified",
        severity: Severity::Info,
        file: file.to_owned(),
        line,
        message: format!("a {}-byte line: minified or generated code cannot be reviewed by eye", run.len()),
        excerpt: excerpt(text, 0),
    });
}

/// npm runs these scripts on `npm install`; hivehost installs with scripts off by default.
const INSTALL_SCRIPTS: [&str; 6] = ["preinstall", "install", "postinstall", "preprepare", "prepare", "postprepare"];

fn find_install_scripts(file: &str, bytes: &[u8], findings: &mut Vec<Finding>) {
    let Ok(serde_json::Value::Object(package)) = serde_json::from_slice::<serde_json::Value>(bytes) else { return };
    let Some(serde_json::Value::Object(scripts)) = package.get("scripts") else { return };
    let mut lines = LineIndex::new(bytes);
    for name in INSTALL_SCRIPTS {
        let Some(command) = scripts.get(name) else { continue };
        let key = format!("\"{name}\"");
        let at = memfind(bytes, key.as_bytes()).unwrap_or(0);
        let (line, text, _) = lines.locate(at);
        findings.push(Finding {
            rule: "npm_install_script",
            severity: Severity::Warning,
            file: file.to_owned(),
            line,
            message: format!(
                "an npm `{name}` script runs `{}` at install time; hivehost installs with scripts off unless allowed",
                command.as_str().unwrap_or("?")
            ),
            excerpt: excerpt(text, 0),
        });
    }
}

fn memfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Which native format `head` starts with, if any.
fn native_magic(head: &[u8]) -> Option<&'static str> {
    let word = |at: usize| head.get(at..at + 4).map(|b| [b[0], b[1], b[2], b[3]]);
    match word(0)? {
        [0x7f, b'E', b'L', b'F'] => Some("ELF"),
        [0xfe, 0xed, 0xfa, 0xce | 0xcf] | [0xce | 0xcf, 0xfa, 0xed, 0xfe] => Some("Mach-O"),
        // Java class files share this magic; a fat Mach-O has a small architecture count where a
        // class file has its version (45 or more).
        [0xca, 0xfe, 0xba, 0xbe] => word(4).map(u32::from_be_bytes).filter(|n| (1..45).contains(n)).map(|_| "Mach-O"),
        [b'M', b'Z', ..] => {
            let pe_at = word(0x3c).map(u32::from_le_bytes)? as usize;
            (word(pe_at)? == *b"PE\0\0").then_some("PE (Windows)")
        }
        _ => None,
    }
}

fn is_native(bytes: &[u8]) -> bool {
    native_magic(bytes).is_some()
}

fn is_native_name(name: &str) -> bool {
    let native_ext = [".so", ".dylib", ".dll", ".exe", ".node", ".pyd"];
    native_ext.iter().any(|ext| name.ends_with(ext)) || name.contains(".so.")
}

/// Scans every file below `root`, without following symlinks.
///
/// Paths in the report are relative to `root` and `/`-separated; files and directories are visited
/// in byte order of names, so the report is the same for the same tree.
pub fn scan_dir(root: &Path) -> std::io::Result<ScanReport> {
    let mut report = ScanReport::default();
    visit(root, "", &mut report)?;
    Ok(report)
}

fn visit(dir: &Path, prefix: &str, report: &mut ScanReport) -> std::io::Result<()> {
    let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    for entry in entries {
        let rel = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let kind = entry.file_type()?;
        let whole = |rule, message: &str| Finding {
            rule,
            severity: Severity::Warning,
            file: rel.clone(),
            line: 0,
            message: message.to_owned(),
            excerpt: String::new(),
        };
        if kind.is_symlink() {
            report.findings.push(whole("symlink", "a symbolic link: not followed, not scanned"));
        } else if kind.is_dir() {
            visit(&entry.path(), &format!("{rel}/"), report)?;
        } else if kind.is_file() {
            report.files_scanned += 1;
            let mut file = std::fs::File::open(entry.path())?;
            let size = file.metadata()?.len();
            if size > MAX_TEXT_BYTES {
                let mut head = Vec::with_capacity(SNIFF_BYTES);
                file.take(SNIFF_BYTES as u64).read_to_end(&mut head)?;
                report.bytes_scanned += head.len() as u64;
                report.findings.extend(scan_head(&rel, &head));
                report.findings.push(Finding {
                    rule: "not_scanned",
                    severity: Severity::Info,
                    file: rel.clone(),
                    line: 0,
                    message: format!(
                        "{size} bytes, over the {MAX_TEXT_BYTES}-byte limit for text rules: only its name and magic bytes were checked"
                    ),
                    excerpt: String::new(),
                });
            } else {
                let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                file.read_to_end(&mut bytes)?;
                report.bytes_scanned += bytes.len() as u64;
                report.findings.extend(scan_bytes(&rel, &bytes));
            }
        } else {
            report.findings.push(whole("special_file", "a device, FIFO or socket: not read"));
        }
    }
    Ok(())
}
