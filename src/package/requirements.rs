//! What a package's `requirements.txt` may ask of pip.
//!
//! hivehost installs a package's dependencies with pip as itself (root, outside the sandbox), with
//! `--only-binary :all:` by default, so that nothing of the package runs there: pip only unpacks
//! wheels from the index. But a requirements file can ask pip to build something anyway: a local
//! directory (`.`, `-e .`, `./lib`) runs the package's own `setup.py`, a VCS or archive URL is built
//! from source, and option lines (`--no-binary`, `-r other.txt`, build settings) change the rules.
//! This check allows the lines that only name packages of an index: a name with extras, a version
//! specifier and markers, `--hash` options, a direct reference to a `.whl` over HTTP(S), and the
//! options that choose an index or narrow what pip takes. Everything else is refused, with the line
//! and what to do instead.

/// The option lines allowed: which index, and what pip may take from it (never a build).
const ALLOWED_OPTIONS: &[&str] = &[
    "-i",
    "--index-url",
    "--extra-index-url",
    "--no-index",
    "--trusted-host",
    "--pre",
    "--prefer-binary",
    "--only-binary",
    "--require-hashes",
];

/// Checks `text`; on refusal, one message per offending line.
pub fn check_requirements(text: &str) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    for (number, line) in logical_lines(text) {
        if let Err(why) = check_line(&line) {
            problems.push(format!("requirements.txt line {number}: `{line}`: {why}"));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// The lines pip reads: continuations (`\` at the end) joined, comments and blank lines left out,
/// each with the number of its first physical line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut joined: Option<(usize, String)> = None;
    // An empty line after the last closes a continuation the text ends in.
    for (i, raw) in text.lines().chain(std::iter::once("")).enumerate() {
        let (number, mut line) = joined.take().unwrap_or((i + 1, String::new()));
        match raw.strip_suffix('\\') {
            Some(head) => {
                line.push_str(head);
                joined = Some((number, line));
            }
            None => {
                line.push_str(raw);
                let line = strip_comment(&line).trim();
                if !line.is_empty() {
                    lines.push((number, line.to_owned()));
                }
            }
        }
    }
    lines
}

/// A line without its comment: `#` at its start or after whitespace (as pip reads it).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

fn check_line(line: &str) -> Result<(), String> {
    if line.starts_with('-') {
        return check_option(line);
    }
    // A requirement, then its per-requirement options.
    let (requirement, options) = match line.find(" -") {
        Some(at) => (line[..at].trim(), line[at..].trim()),
        None => (line, ""),
    };
    for option in options.split_whitespace().filter(|o| o.starts_with('-')) {
        let name = option.split('=').next().unwrap_or(option);
        if name != "--hash" {
            return Err(format!(
                "`{name}` passes settings to a package's build, which hivehost does not run; remove it"
            ));
        }
    }
    check_requirement(requirement)
}

fn check_option(line: &str) -> Result<(), String> {
    let name = line.split(|c: char| c == '=' || c.is_whitespace()).next().unwrap_or(line);
    if ALLOWED_OPTIONS.contains(&name) {
        return Ok(());
    }
    let why = match name {
        "-e" | "--editable" => {
            "an editable install builds a directory or repository (running its setup.py as root, outside \
             the sandbox); name packages from the index instead: the server's own code runs from its directory"
        }
        "-r" | "--requirement" | "-c" | "--constraint" => {
            "another requirements or constraints file is not checked; put every requirement in requirements.txt"
        }
        "--no-binary" => "source builds run the package's code as root, outside the sandbox; use wheels",
        "-f" | "--find-links" => "packages from links or local directories are not allowed; use an index",
        _ => {
            "this option is not among those hivehost allows (which index, --pre, --prefer-binary, --only-binary, --require-hashes)"
        }
    };
    Err(format!("`{name}`: {why}"))
}

/// A requirement must name a package (PEP 508: a name, extras, a version specifier, markers), or be
/// `name @ https://…/file.whl`.
fn check_requirement(requirement: &str) -> Result<(), String> {
    let spec = requirement.split(';').next().unwrap_or(requirement).trim();
    let name_len = spec.bytes().take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')).count();
    let (name, rest) = spec.split_at(name_len);
    let starts_as_name = name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    let bare_url = spec.contains("://") && !rest.contains('@');
    if !starts_as_name || bare_url {
        return Err("not a package name: a path or URL is built from source, as root outside the sandbox; name the \
             package (and version) from the index instead"
            .into());
    }
    if let Some((_, url)) = rest.split_once('@') {
        let url = url.trim();
        let path = url.split(['#', '?']).next().unwrap_or(url);
        let https = url.starts_with("https://") || url.starts_with("http://");
        if !https || !path.ends_with(".whl") {
            return Err(
                "a direct reference other than an HTTP(S) link to a .whl is built from source, as root outside \
                 the sandbox; name the package from the index, or link its wheel"
                    .into(),
            );
        }
        return Ok(());
    }
    if rest.contains(['/', '\\']) {
        return Err("not a package name: a path is built from source; name the package from the index".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_requirements;

    #[test]
    fn lines_that_only_name_index_packages_pass() {
        let text = "\
# the server's dependencies
mcp>=1.2,<2
httpx[http2] == 0.27.0 ; python_version >= \"3.10\"
pydantic~=2.7  # inline comment
requests==2.32.3 \\
    --hash=sha256:70761cfe03c773ceb22aa2f671b4757976145175cdfca038c02654d061d6dcc6
wheelpkg @ https://files.example.org/wheelpkg-1.0-py3-none-any.whl#sha256=abc
-i https://pypi.org/simple
--extra-index-url=https://mirror.example.org/simple
--only-binary :all:
--require-hashes
zope.interface
a
";
        assert_eq!(check_requirements(text), Ok(()));
        assert_eq!(check_requirements(""), Ok(()));
    }

    #[test]
    fn lines_that_would_build_code_are_refused_with_their_line_and_what_to_do() {
        // (line, words its refusal must hold)
        let cases = [
            ("-e .", "editable"),
            ("--editable=git+https://github.com/x/y#egg=y", "editable"),
            (".", "not a package name"),
            ("./lib", "not a package name"),
            ("/opt/src/thing", "not a package name"),
            ("~/thing", "not a package name"),
            ("thing/sub", "path"),
            ("git+https://github.com/x/y", "not a package name"),
            ("https://example.org/y-1.0.tar.gz", "not a package name"),
            ("y @ https://example.org/y-1.0.tar.gz", "direct reference"),
            ("y @ file:///tmp/y-1.0-py3-none-any.whl", "direct reference"),
            ("y @ git+https://github.com/x/y", "direct reference"),
            ("--no-binary :all:", "source builds"),
            ("-r other.txt", "another requirements"),
            ("-c constraints.txt", "another requirements"),
            ("--find-links ./wheels", "links"),
            ("--use-feature=fast-deps", "not among"),
            ("pkg --config-settings=x=y", "build"),
            ("pkg --global-option=build_ext", "build"),
        ];
        for (line, words) in cases {
            let text = format!("mcp\n{line}\n");
            let problems = check_requirements(&text).expect_err(line);
            assert_eq!(problems.len(), 1, "{line}: {problems:?}");
            assert!(problems[0].starts_with(&format!("requirements.txt line 2: `{line}`")), "{problems:?}");
            assert!(problems[0].contains(words), "{line}: {problems:?}");
        }
        // Every offending line is named, continuations by their first line.
        let problems = check_requirements("-e .\nok\n./a \\\n  --hash=sha256:x\n").expect_err("two");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[1].starts_with("requirements.txt line 3:"), "{problems:?}");
        // A continuation the text ends in is still read.
        let problems = check_requirements("mcp\n-e \\").expect_err("a trailing continuation");
        assert!(problems[0].starts_with("requirements.txt line 2: `-e`"), "{problems:?}");
    }
}
