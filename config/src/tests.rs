//! Tests of both parsers, `${NAME}` expansion and durations, mostly as tables of input and expected diagnostics.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::*;

/// What a parse should produce. Each expected diagnostic is a prefix of the rendered `path: message`.
#[derive(Debug, Clone, Copy)]
enum Expect<'a> {
    /// Success without warnings.
    Clean,
    /// Success with exactly these warnings.
    Warnings(&'a [&'a str]),
    /// Failure with exactly these errors.
    Errors(&'a [&'a str]),
}

fn matches_all(kind: &str, input: &str, found: &[Diagnostic], expected: &[&str]) {
    let rendered: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(rendered.len(), expected.len(), "{kind} of {input}: expected {expected:#?}, got {rendered:#?}");
    for (got, want) in rendered.iter().zip(expected) {
        assert!(got.starts_with(want), "{kind} of {input}: expected one starting with {want:?}, got {got:?}");
    }
}

fn check<T: std::fmt::Debug>(input: &str, result: Result<Parsed<T>, ConfigErrors>, expect: Expect<'_>) -> Option<T> {
    match (result, expect) {
        (Ok(parsed), Expect::Clean) => {
            matches_all("warnings", input, &parsed.warnings, &[]);
            Some(parsed.value)
        }
        (Ok(parsed), Expect::Warnings(expected)) => {
            matches_all("warnings", input, &parsed.warnings, expected);
            Some(parsed.value)
        }
        (Err(errors), Expect::Errors(expected)) => {
            matches_all("errors", input, &errors.errors, expected);
            None
        }
        (Ok(parsed), Expect::Errors(_)) => {
            panic!("{input}: expected errors, parsed {:#?}", parsed.value)
        }
        (Err(errors), _) => panic!("{input}: expected success, got errors:\n{errors}"),
    }
}

fn check_host(json: &str, expect: Expect<'_>) -> Option<HostConfig> {
    check(json, parse_host_config(json), expect)
}

fn check_server(json: &str, expect: Expect<'_>) -> Option<ServerConfig> {
    check(json, parse_server_config(json), expect)
}

/// A `config.json` whose `mcp_hosting` block holds `body`.
fn hosting(body: &str) -> String {
    format!(r#"{{"mcp_hosting": {{{body}}}}}"#)
}

/// A `server_config.json` with a valid name and command plus `extra` top-level keys.
fn server(extra: &str) -> String {
    if extra.is_empty() {
        r#"{"name": "demo", "command": ["python", "server.py"]}"#.to_owned()
    } else {
        format!(r#"{{"name": "demo", "command": ["python", "server.py"], {extra}}}"#)
    }
}

const SEED_SERVER_CONFIG: &str = r#"{"name":"Server Name","description":"Server description","command":["python","server.py"],"environment":{"VAR1":"value1"},"auto_restart":true,"max_restarts":5,"restart_delay":5,"health_check_url":"http://localhost:8080/health","health_check_interval":30,"resource_limits":{"memory_mb":512,"cpu_percent":50,"max_processes":10},"sandboxed":true,"allowed_network":true,"allowed_filesystem":["read"],"user":"nobody"}"#;

// The tests below cover config.json.

#[test]
fn empty_hosting_block_gives_the_defaults() {
    let config = check_host(&hosting(""), Expect::Clean);
    assert_eq!(config, Some(HostConfig::default()));
    let config = check_host(&hosting(r#""dashboard": null, "security": {}, "auth": null"#), Expect::Clean);
    assert_eq!(config, Some(HostConfig::default()));
}

#[test]
fn shipped_config_parses_cleanly_to_the_defaults() {
    let config = check_host(DEFAULT_CONFIG_JSON, Expect::Clean);
    assert_eq!(config, Some(HostConfig::default()));
}

#[test]
fn shipped_config_names_every_key() {
    let value: Value = serde_json::from_str(DEFAULT_CONFIG_JSON).unwrap_or_default();
    let hosting = &value["mcp_hosting"];
    let sections: &[(&str, &[&str])] = &[
        (
            "",
            &[
                "enabled",
                "servers_dir",
                "uploads_dir",
                "logs_dir",
                "state_dir",
                "database",
                "max_servers",
                "health_check_interval",
                "auto_cleanup",
                "cleanup_interval",
                "dashboard",
                "security",
                "auth",
                "idle_after",
                "mcp_session_idle_timeout",
                "metrics_interval",
                "metrics_history",
                "supervisor",
                "logs",
                "env_allowlist",
                "resource_limits",
                "dependencies",
            ],
        ),
        ("resource_limits", &["memory_mb", "cpu_percent", "max_processes", "max_open_files"]),
        ("dependencies", &["install_timeout", "python_only_binary", "npm_install_scripts"]),
        ("dashboard", &["enabled", "host", "port", "debug"]),
        (
            "security",
            &[
                "allowed_languages",
                "sandbox_by_default",
                "max_upload_size_mb",
                "scan_uploads",
                "require_sandbox",
                "uid_first",
                "uid_count",
            ],
        ),
        ("auth", &["token", "token_file"]),
        ("supervisor", &["max_restarts", "restart_window", "helper_max_restarts", "helper_window", "shutdown_timeout"]),
        ("logs", &["ring_lines", "max_line_bytes", "max_file_bytes", "max_files"]),
    ];
    for (section, keys) in sections {
        let object = if section.is_empty() { hosting } else { &hosting[section] };
        let Some(object) = object.as_object() else {
            panic!("mcp_hosting.{section} is not an object in the shipped config");
        };
        for key in *keys {
            assert!(object.contains_key(*key), "the shipped config lacks {section}.{key}");
        }
        assert_eq!(object.len(), keys.len(), "the shipped {section:?} has keys this test does not know");
    }
}

#[test]
fn reports_every_error_at_once_with_its_path() {
    let json = hosting(
        r#""max_servers": 0, "dashboard": {"port": "abc"}, "security": {"allowed_languages": ["python", "ruby"]}"#,
    );
    let errors = match parse_host_config(&json) {
        Ok(parsed) => panic!("parsed {:?}", parsed.value),
        Err(errors) => errors,
    };
    assert_eq!(
        errors.to_string(),
        [
            "mcp_hosting.max_servers: expected a number of at least 1, found 0",
            r#"mcp_hosting.dashboard.port: expected a number from 0 to 65535, found "abc""#,
            r#"mcp_hosting.security.allowed_languages[1]: expected "python", "node" or "bash", found "ruby""#,
        ]
        .join("\n")
    );
    assert!(errors.warnings.is_empty());
}

#[test]
fn unknown_keys_warn_and_suggest_the_closest_known_key() {
    let cases: &[(&str, &[&str])] = &[
        (
            r#""max_server": 3"#,
            &["mcp_hosting.max_server: unknown key, ignored; did you mean `mcp_hosting.max_servers`?"],
        ),
        (r#""foo": 1"#, &["mcp_hosting.foo: unknown key, ignored"]),
        (r#""Enabled": true"#, &["mcp_hosting.Enabled: unknown key, ignored; did you mean `mcp_hosting.enabled`?"]),
        (r#""port": 80"#, &["mcp_hosting.port: unknown key, ignored; did you mean `mcp_hosting.dashboard.port`?"]),
        (
            r#""dashboard": {"prot": 80}"#,
            &["mcp_hosting.dashboard.prot: unknown key, ignored; did you mean `mcp_hosting.dashboard.port`?"],
        ),
        (
            r#""logs": {"ring-lines": 80}"#,
            &["mcp_hosting.logs.ring-lines: unknown key, ignored; did you mean `mcp_hosting.logs.ring_lines`?"],
        ),
        (r#""a b": 1"#, &[r#"mcp_hosting["a b"]: unknown key, ignored"#]),
    ];
    for (body, warnings) in cases {
        check_host(&hosting(body), Expect::Warnings(warnings));
    }
    // Other top-level keys belong to other tools sharing the file.
    check_host(r#"{"mcp_hosting": {}, "memory": {"x": 1}}"#, Expect::Clean);
}

#[test]
fn wrong_types_in_config_json_are_explained() {
    let cases: &[(&str, &str)] = &[
        (r#""enabled": "yes""#, r#"mcp_hosting.enabled: expected true or false, found "yes""#),
        (r#""enabled": "true""#, r#"mcp_hosting.enabled: expected true or false, found "true"; remove the quotes"#),
        (r#""auto_cleanup": 1"#, "mcp_hosting.auto_cleanup: expected true or false, found 1"),
        (
            r#""max_servers": "10""#,
            r#"mcp_hosting.max_servers: expected a number of at least 1, found "10"; remove the quotes"#,
        ),
        (
            r#""max_servers": 1.5"#,
            "mcp_hosting.max_servers: expected a number of at least 1, found 1.5; use a whole number",
        ),
        (r#""max_servers": -3"#, "mcp_hosting.max_servers: expected a number of at least 1, found -3"),
        (
            r#""max_servers": 4294967296"#,
            "mcp_hosting.max_servers: expected a number from 1 to 4294967295, found 4294967296",
        ),
        (r#""max_servers": [1]"#, "mcp_hosting.max_servers: expected a number of at least 1, found an array"),
        (r#""servers_dir": 5"#, "mcp_hosting.servers_dir: expected a string, found 5"),
        (r#""servers_dir": """#, r#"mcp_hosting.servers_dir: expected a non-empty path"#),
        (r#""dashboard": 5"#, "mcp_hosting.dashboard: expected an object, found 5"),
        (
            r#""dashboard": {"port": 70000}"#,
            "mcp_hosting.dashboard.port: expected a number from 0 to 65535, found 70000",
        ),
        (
            r#""dashboard": {"host": "127.0.0.1:8910"}"#,
            r#"mcp_hosting.dashboard.host: expected an IP address or host name such as "127.0.0.1", found "127.0.0.1:8910"; put the port in mcp_hosting.dashboard.port"#,
        ),
        (r#""dashboard": {"host": ""}"#, "mcp_hosting.dashboard.host: expected an IP address or host name"),
        (
            r#""security": {"allowed_languages": "python"}"#,
            r#"mcp_hosting.security.allowed_languages: expected an array, found "python""#,
        ),
        (
            r#""security": {"allowed_languages": ["pyton"]}"#,
            r#"mcp_hosting.security.allowed_languages[0]: expected "python", "node" or "bash", found "pyton"; did you mean "python"?"#,
        ),
        (
            r#""security": {"max_upload_size_mb": 5000}"#,
            "mcp_hosting.security.max_upload_size_mb: expected a number from 1 to 4096, found 5000",
        ),
        (
            r#""auth": {"token": "short"}"#,
            "mcp_hosting.auth.token: the token is 5 characters long and must be at least 16",
        ),
        (
            r#""auth": {"token": "has a space in the middle"}"#,
            "mcp_hosting.auth.token: the token may only hold visible ASCII characters",
        ),
        // A token of the wrong type is not echoed back: it may still be a secret.
        (r#""auth": {"token": 12345678901234567890}"#, "mcp_hosting.auth.token: expected a string, found a number"),
        (r#""metrics_history": 0"#, "mcp_hosting.metrics_history: expected a number of at least 1, found 0"),
        (r#""logs": {"ring_lines": 100001}"#, "mcp_hosting.logs.ring_lines: expected a number from 1 to 100000"),
        (r#""logs": {"max_line_bytes": 10}"#, "mcp_hosting.logs.max_line_bytes: expected a number from 256 to 1048576"),
        (r#""logs": {"max_file_bytes": 100}"#, "mcp_hosting.logs.max_file_bytes: expected a number of at least 4096"),
        (r#""logs": {"max_files": 0}"#, "mcp_hosting.logs.max_files: expected a number from 1 to 100"),
        (r#""supervisor": {"max_restarts": true}"#, "mcp_hosting.supervisor.max_restarts: expected a number"),
        (
            r#""supervisor": {"restart_window": 0}"#,
            "mcp_hosting.supervisor.restart_window: expected a duration greater than zero, found 0",
        ),
        (r#""env_allowlist": "HOME""#, r#"mcp_hosting.env_allowlist: expected an array, found "HOME""#),
        (
            r#""env_allowlist": ["HOME", "1BAD"]"#,
            r#"mcp_hosting.env_allowlist[1]: expected an environment variable name (letters, digits and `_`, not starting with a digit), found "1BAD""#,
        ),
    ];
    for (body, error) in cases {
        check_host(&hosting(body), Expect::Errors(&[error]));
    }
}

#[test]
fn documents_that_are_not_a_hosting_config_are_rejected() {
    let cases: &[(&str, &str)] = &[
        ("", "the file is empty; it must hold a JSON object"),
        ("{\"mcp_hosting\": {},}", "invalid JSON: trailing comma at line 1 column 20"),
        ("[]", r#"expected a JSON object with an "mcp_hosting" key, found an array"#),
        (
            "{}",
            r#"mcp_hosting: missing required key; put the hosting settings in an object under the top-level "mcp_hosting" key"#,
        ),
        (r#"{"mcp_hosting": null}"#, "mcp_hosting: missing required key"),
        (r#"{"mcp_hosting": true}"#, "mcp_hosting: expected an object, found true"),
    ];
    for (json, error) in cases {
        check_host(json, Expect::Errors(&[error]));
    }
    // A byte-order mark is tolerated.
    check_host(&format!("\u{feff}{}", hosting("")), Expect::Clean);
}

#[test]
fn host_values_are_read() {
    let json = hosting(
        r#""enabled": false, "servers_dir": "/srv/mcp", "max_servers": 2, "dashboard": {"host": "::1", "port": 0},
           "security": {"allowed_languages": ["node"], "max_upload_size_mb": 1},
           "auth": {"token": "0123456789abcdef"}, "env_allowlist": ["HOME", "_X1"],
           "logs": {"ring_lines": 100000, "max_line_bytes": 256}"#,
    );
    let config = check_host(&json, Expect::Clean).unwrap_or_default();
    assert!(!config.enabled);
    assert_eq!(config.servers_dir, std::path::PathBuf::from("/srv/mcp"));
    assert_eq!(config.max_servers, 2);
    assert_eq!(config.dashboard.host, "::1");
    assert_eq!(config.dashboard.port, 0);
    assert_eq!(config.security.allowed_languages, ["node"]);
    assert_eq!(config.security.max_upload_size_mb, 1);
    assert_eq!(config.auth.token.as_deref(), Some("0123456789abcdef"));
    assert_eq!(config.env_allowlist, ["HOME", "_X1"]);
    assert_eq!(config.logs.ring_lines, 100_000);
    assert_eq!(config.logs.max_line_bytes, 256);
}

#[test]
fn debug_output_never_shows_the_token() {
    let json = hosting(r#""auth": {"token": "0123456789abcdef-secret"}"#);
    let config = check_host(&json, Expect::Clean).unwrap_or_default();
    let shown = format!("{config:?}");
    assert!(!shown.contains("secret"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

#[test]
fn loopback_hosts_are_recognised() {
    for (host, loopback) in [
        ("127.0.0.1", true),
        ("127.8.9.10", true),
        ("::1", true),
        ("localhost", true),
        ("LOCALHOST", true),
        ("0.0.0.0", false),
        ("::", false),
        ("192.168.1.2", false),
        ("example.com", false),
    ] {
        let dashboard = DashboardConfig { host: host.to_owned(), ..DashboardConfig::default() };
        assert_eq!(dashboard.is_loopback(), loopback, "{host}");
    }
}

#[test]
fn durations_take_seconds_or_a_unit() {
    let ok: &[(&str, Duration)] = &[
        ("2", Duration::from_secs(2)),
        ("0.5", Duration::from_millis(500)),
        ("2.0", Duration::from_secs(2)),
        (r#""250ms""#, Duration::from_millis(250)),
        (r#""5s""#, Duration::from_secs(5)),
        (r#""5""#, Duration::from_secs(5)),
        (r#""1.5s""#, Duration::from_millis(1500)),
        (r#""2m""#, Duration::from_secs(120)),
        (r#""1h""#, Duration::from_secs(3600)),
        (r#"" 3 s ""#, Duration::from_secs(3)),
        (r#""0.5ms""#, Duration::from_micros(500)),
    ];
    for (value, expected) in ok {
        let config = check_host(&hosting(&format!(r#""cleanup_interval": {value}"#)), Expect::Clean);
        assert_eq!(config.map(|c| c.cleanup_interval), Some(*expected), "{value}");
    }
    let expected = r#"expected a duration (seconds as a number such as 5 or 0.5, or a string such as "250ms", "5s", "2m" or "1h"), found"#;
    let bad: &[(&str, String)] = &[
        (r#""5x""#, format!(r#"{expected} "5x"; the unit must be "ms", "s", "m" or "h""#)),
        (r#""5 days""#, format!(r#"{expected} "5 days"; the unit must be"#)),
        (r#""""#, format!(r#"{expected} """#)),
        (r#""s""#, format!(r#"{expected} "s""#)),
        (r#""1.2.3s""#, format!(r#"{expected} "1.2.3s""#)),
        (r#""1e3""#, format!(r#"{expected} "1e3""#)),
        ("-1", format!("{expected} -1; durations cannot be negative")),
        ("-0.5", format!("{expected} -0.5; durations cannot be negative")),
        (r#""-5s""#, format!(r#"{expected} "-5s"; durations cannot be negative"#)),
        ("true", format!("{expected} true")),
        ("1e300", format!("{expected} 1e+300; this one is too long to represent")),
        (r#""99999999999999999999h""#, format!(r#"{expected} "99999999999999999999h"; this one is too long"#)),
        ("0", "expected a duration greater than zero, found 0".to_owned()),
        (r#""0ms""#, r#"expected a duration greater than zero, found "0ms""#.to_owned()),
    ];
    for (value, message) in bad {
        let error = format!("mcp_hosting.cleanup_interval: {message}");
        check_host(&hosting(&format!(r#""cleanup_interval": {value}"#)), Expect::Errors(&[&error]));
    }
    check_host(
        &hosting(r#""metrics_interval": "50ms""#),
        Expect::Errors(&[r#"mcp_hosting.metrics_interval: expected a duration of at least 100ms, found "50ms""#]),
    );
    let config = check_host(&hosting(r#""metrics_interval": 0.1"#), Expect::Clean);
    assert_eq!(config.map(|c| c.metrics_interval), Some(Duration::from_millis(100)));
    check_host(
        &hosting(r#""mcp_session_idle_timeout": "500ms""#),
        Expect::Errors(&[r#"mcp_hosting.mcp_session_idle_timeout: expected a duration of at least 1s, found "500ms""#]),
    );
    let config = check_host(&hosting(r#""mcp_session_idle_timeout": "2m""#), Expect::Clean);
    assert_eq!(config.map(|c| c.mcp_session_idle_timeout), Some(Duration::from_secs(120)));
}

#[test]
fn too_many_errors_are_counted_not_listed() {
    let names: Vec<String> = (0..150).map(|i| format!("\"{i}\"")).collect();
    let json = hosting(&format!(r#""env_allowlist": [{}]"#, names.join(",")));
    let errors = match parse_host_config(&json) {
        Ok(parsed) => panic!("parsed {:?}", parsed.value),
        Err(errors) => errors,
    };
    assert_eq!(errors.errors.len(), 101);
    assert_eq!(
        errors.errors.last().map(ToString::to_string).as_deref(),
        Some("50 more errors not shown; fix the ones above first")
    );
}

// The tests below cover server_config.json.

#[test]
fn seed_example_parses_cleanly() {
    let Some(config) = check_server(SEED_SERVER_CONFIG, Expect::Clean) else {
        return;
    };
    let expected = ServerConfig {
        name: "Server Name".to_owned(),
        description: "Server description".to_owned(),
        command: vec!["python".to_owned(), "server.py".to_owned()],
        environment: BTreeMap::from([("VAR1".to_owned(), "value1".to_owned())]),
        working_dir: None,
        transport: Transport::Stdio,
        autostart: false,
        restart: RestartConfig::default(),
        health: Some(HealthConfig::with_url("http://localhost:8080/health".to_owned())),
        ping: PingConfig::default(),
        resource_limits: ResourceLimits {
            memory_mb: Some(512),
            cpu_percent: Some(50),
            max_processes: Some(10),
            max_open_files: None,
        },
        sandboxed: Some(true),
        allowed_network: true,
        allowed_filesystem: vec!["read".to_owned()],
        user: Some("nobody".to_owned()),
    };
    assert_eq!(config, expected);
    assert_eq!(config.restart.effective_backoff(), Backoff::Fixed);
    assert_eq!(config.restart.effective_mode(), RestartMode::OnFailure);
}

#[test]
fn minimal_server_config_takes_the_defaults() {
    let Some(config) = check_server(&server(""), Expect::Clean) else {
        return;
    };
    assert_eq!(config.description, "");
    assert!(config.environment.is_empty());
    assert_eq!(config.transport, Transport::Stdio);
    assert!(!config.autostart);
    assert_eq!(config.restart, RestartConfig::default());
    assert_eq!(config.health, None);
    assert_eq!(config.resource_limits, ResourceLimits::default());
    assert_eq!(config.sandboxed, None);
    assert!(config.allowed_network);
    assert_eq!(config.allowed_filesystem, ["read"]);
    assert_eq!(config.user, None);
    // `null` means absent.
    let nulls = server(
        r#""description": null, "sandboxed": null, "user": null, "health_check_url": null, "resource_limits": null"#,
    );
    assert_eq!(check_server(&nulls, Expect::Clean), Some(config));
}

#[test]
fn server_config_reports_every_error_at_once() {
    check_server(
        r#"{"description": 5, "transport": "http", "resource_limits": {"memory_mb": 8}}"#,
        Expect::Errors(&[
            r#"name: missing required key; give the server a name such as "weather""#,
            "description: expected a string, found 5",
            r#"command: missing required key; give the program to run as an array of strings such as ["python", "server.py"]"#,
            r#"port: missing required key; "transport": "http" needs the port the server listens on"#,
            "resource_limits.memory_mb: expected a number of at least 16, found 8",
        ]),
    );
}

#[test]
fn server_values_are_checked() {
    let too_long_name = "n".repeat(65);
    let too_long_description = "d".repeat(1025);
    let name_too_long = format!(r#"{{"name": "{too_long_name}", "command": ["x"]}}"#);
    let description_too_long = server(&format!(r#""description": "{too_long_description}""#));
    let cases: &[(&str, &str)] = &[
        ("[1]", "expected a JSON object such as"),
        (r#"{"name": "a/b", "command": ["x"]}"#, r#"name: the name contains "/"; use 1 to 64 letters"#),
        (r#"{"name": "", "command": ["x"]}"#, "name: the name must be 1 to 64 characters long, not 0"),
        (r#"{"name": " a", "command": ["x"]}"#, "name: the name starts or ends with a space"),
        (&name_too_long, "name: the name must be 1 to 64 characters long, not 65"),
        (&description_too_long, "description: the description is 1025 characters long; shorten it to at most 1024"),
        (
            r#"{"name": "a", "command": "python server.py"}"#,
            r#"command: expected an array of strings such as ["python", "server.py"], found "python server.py"; split the program"#,
        ),
        (r#"{"name": "a", "command": []}"#, "command: the command is empty"),
        (r#"{"name": "a", "command": ["python", ""]}"#, "command[1]: empty argument"),
        (r#"{"name": "a", "command": ["python", 3]}"#, "command[1]: expected a string, found 3"),
        (r#"{"name": "a", "command": ["a\u0000b"]}"#, "command[0]: contains a NUL character"),
        (r#"{"name": "a", "command": {"x": 1}}"#, "command: expected an array, found an object"),
        (&server(r#""autostart": "yes""#), r#"autostart: expected true or false, found "yes""#),
        (&server(r#""sandboxed": 1"#), "sandboxed: expected true or false, found 1"),
        (
            &server(r#""allowed_network": null, "allowed_filesystem": ["exec"]"#),
            r#"allowed_filesystem[0]: expected "read" or "write", found "exec""#,
        ),
        (&server(r#""allowed_filesystem": "read""#), r#"allowed_filesystem: expected an array, found "read""#),
        (&server(r#""user": "-rf""#), r#"user: expected a user name such as "nobody""#),
        (&server(r#""user": "a b""#), r#"user: expected a user name such as "nobody""#),
        (&server(r#""resource_limits": [512]"#), "resource_limits: expected an object, found an array"),
        (
            &server(r#""resource_limits": {"cpu_percent": 0}"#),
            "resource_limits.cpu_percent: expected a number from 1 to 102400, found 0",
        ),
        (
            &server(r#""resource_limits": {"cpu_percent": 102401}"#),
            "resource_limits.cpu_percent: expected a number from 1 to 102400",
        ),
        (
            &server(r#""resource_limits": {"max_processes": 0}"#),
            "resource_limits.max_processes: expected a number of at least 1, found 0",
        ),
        (
            &server(r#""resource_limits": {"max_open_files": 15}"#),
            "resource_limits.max_open_files: expected a number of at least 16, found 15",
        ),
        (
            &server(r#""resource_limits": {"memory_mb": "512"}"#),
            r#"resource_limits.memory_mb: expected a number of at least 16, found "512"; remove the quotes"#,
        ),
    ];
    for (json, error) in cases {
        check_server(json, Expect::Errors(&[error]));
    }
    let json = r#"{"name": "Wé ather_v1.2-beta", "command": ["x"], "user": "1000",
        "resource_limits": {"cpu_percent": 200, "max_open_files": 1024, "memory_mb": 17592186044415}}"#;
    let config = check_server(json, Expect::Clean);
    assert_eq!(config.as_ref().map(|c| c.name.as_str()), Some("Wé ather_v1.2-beta"));
    assert_eq!(
        config.map(|c| c.resource_limits),
        Some(ResourceLimits {
            memory_mb: Some(17_592_186_044_415),
            cpu_percent: Some(200),
            max_processes: None,
            max_open_files: Some(1024),
        })
    );
    check_server(
        &server(r#""resource_limits": {"memory_mb": 17592186044416}"#),
        Expect::Errors(&[
            "resource_limits.memory_mb: expected a number from 16 to 17592186044415, found 17592186044416",
        ]),
    );
}

#[test]
fn unknown_server_keys_warn_with_a_suggestion() {
    check_server(
        &server(r#""auto_restrat": false, "env": {}, "memory_mb": 5, "xyz": 1, "resource_limits": {"memroy_mb": 64}"#),
        Expect::Warnings(&[
            "resource_limits.memroy_mb: unknown key, ignored; did you mean `resource_limits.memory_mb`?",
            "auto_restrat: unknown key, ignored; did you mean `auto_restart`?",
            "env: unknown key, ignored; did you mean `environment`?",
            "memory_mb: unknown key, ignored; did you mean `resource_limits.memory_mb`?",
            "xyz: unknown key, ignored",
        ]),
    );
}

#[test]
fn transport_needs_a_port_exactly_when_http() {
    let config = check_server(&server(r#""transport": "http", "port": 8080"#), Expect::Clean);
    assert_eq!(config.map(|c| c.transport), Some(Transport::Http { port: 8080 }));
    let config = check_server(&server(r#""transport": "stdio""#), Expect::Clean);
    assert_eq!(config.map(|c| c.transport), Some(Transport::Stdio));
    let config = check_server(&server(r#""transport": "none""#), Expect::Clean);
    assert_eq!(config.map(|c| c.transport), Some(Transport::None));
    let cases: &[(&str, &str)] = &[
        (r#""transport": "http""#, r#"port: missing required key; "transport": "http" needs the port"#),
        (r#""transport": "http", "port": 0"#, "port: expected a number from 1 to 65535, found 0"),
        (r#""port": 8080"#, r#"port: a port is only used with "transport": "http"; set that, or remove the port"#),
        (r#""transport": "stdio", "port": 8080"#, r#"port: a port is only used with "transport": "http""#),
        (r#""transport": "sse""#, r#"transport: expected "stdio", "http" or "none", found "sse""#),
        (
            r#""transport": "HTTP", "port": 1"#,
            r#"transport: expected "stdio", "http" or "none", found "HTTP"; did you mean "http"?"#,
        ),
    ];
    for (extra, error) in cases {
        check_server(&server(extra), Expect::Errors(&[error]));
    }
}

#[test]
fn working_dir_stays_inside_the_server_directory() {
    for ok in ["src", "./src", "a/b/c", "a..b", ".hidden"] {
        let config = check_server(&server(&format!(r#""working_dir": "{ok}""#)), Expect::Clean);
        assert_eq!(config.and_then(|c| c.working_dir).as_deref(), Some(ok));
    }
    for (bad, problem) in [
        ("/etc", "it is absolute"),
        ("..", "it contains `..`"),
        ("../other", "it contains `..`"),
        ("a/../../b", "it contains `..`"),
        ("a\\\\..\\\\b", "it contains `..`"),
        ("", "it is empty"),
    ] {
        let error = format!("working_dir: {problem}; give a relative path inside the server's directory");
        check_server(&server(&format!(r#""working_dir": "{bad}""#)), Expect::Errors(&[&error]));
    }
}

#[test]
fn environment_values_must_be_strings_with_valid_references() {
    let config =
        check_server(&server(r#""environment": {"A": "1", "B_2": "${HOME}/x", "C": "$$5 and $5"}"#), Expect::Clean);
    let environment = config.map(|c| c.environment).unwrap_or_default();
    assert_eq!(environment.get("B_2").map(String::as_str), Some("${HOME}/x"));
    let cases: &[(&str, &str)] = &[
        (r#""PORT": 8080"#, "environment.PORT: expected a string, found a number; put the value in quotes"),
        (r#""DEBUG": true"#, "environment.DEBUG: expected a string, found a boolean; put the value in quotes"),
        (r#""X": null"#, "environment.X: expected a string, found null; remove the entry or give it a string"),
        (r#""X": ["a"]"#, "environment.X: expected a string, found an array"),
        (r#""1X": "a""#, "environment.1X: invalid variable name"),
        (r#""MY VAR": "a""#, r#"environment["MY VAR"]: invalid variable name"#),
        (r#""X": "${HOME""#, "environment.X: unclosed `${`"),
        (r#""X": "${}""#, "environment.X: empty variable reference `${}`"),
        (r#""X": "$HOME""#, "environment.X: `$HOME` needs braces: write `${HOME}`"),
    ];
    for (entry, error) in cases {
        check_server(&server(&format!(r#""environment": {{{entry}}}"#)), Expect::Errors(&[error]));
    }
    check_server(
        &server(r#""environment": ["A=1"]"#),
        Expect::Errors(&[
            r#"environment: expected an object of strings such as {"LOG_LEVEL": "info"}, found an array"#,
        ]),
    );
    let many: Vec<String> = (0..257).map(|i| format!(r#""V{i}": "x""#)).collect();
    check_server(
        &server(&format!(r#""environment": {{{}}}"#, many.join(","))),
        Expect::Errors(&["environment: the environment has 257 entries; it may have at most 256"]),
    );
}

#[test]
fn restart_settings_resolve_mode_and_backoff() {
    let restart = |extra: &str| check_server(&server(extra), Expect::Clean).map(|c| c.restart);
    let r = restart(r#""auto_restart": false"#).unwrap_or_default();
    assert_eq!(r.effective_mode(), RestartMode::Never);
    let r = restart(r#""auto_restart": false, "restart_mode": "never""#).unwrap_or_default();
    assert_eq!(r.effective_mode(), RestartMode::Never);
    let r = restart(r#""restart_mode": "always""#).unwrap_or_default();
    assert_eq!(r.effective_mode(), RestartMode::Always);
    let r = restart(r#""backoff_multiplier": 1.5"#).unwrap_or_default();
    assert_eq!(r.effective_backoff(), Backoff::Exponential);
    assert_eq!(r.backoff_multiplier, 1.5);
    let r = restart(r#""max_restart_delay": "2m""#).unwrap_or_default();
    assert_eq!(r.effective_backoff(), Backoff::Exponential);
    assert_eq!(r.max_restart_delay, Duration::from_secs(120));
    let r = restart(r#""backoff": "fixed", "max_restart_delay": 30"#).unwrap_or_default();
    assert_eq!(r.effective_backoff(), Backoff::Fixed);
    let r = restart(r#""backoff": "exponential""#).unwrap_or_default();
    assert_eq!(r.effective_backoff(), Backoff::Exponential);
    let r = restart(
        r#""max_restarts": 0, "restart_delay": "250ms", "restart_window": "5m", "jitter": 0.25,
           "reset_after": 0, "start_timeout": "1s", "shutdown_timeout": 2.5"#,
    )
    .unwrap_or_default();
    assert_eq!(r.max_restarts, 0);
    assert_eq!(r.restart_delay, Duration::from_millis(250));
    assert_eq!(r.restart_window, Duration::from_secs(300));
    assert_eq!(r.jitter, 0.25);
    assert_eq!(r.reset_after, Duration::ZERO);
    assert_eq!(r.start_timeout, Duration::from_secs(1));
    assert_eq!(r.shutdown_timeout, Duration::from_millis(2500));

    check_server(
        &server(r#""auto_restart": true, "restart_mode": "never""#),
        Expect::Warnings(&[r#"restart_mode: "auto_restart": true is overridden by "restart_mode": "never""#]),
    );
    check_server(
        &server(r#""backoff": "fixed", "backoff_multiplier": 3"#),
        Expect::Warnings(&[r#"backoff_multiplier: ignored because "backoff" is "fixed""#]),
    );
    let cases: &[(&str, &str)] = &[
        (
            r#""auto_restart": false, "restart_mode": "always""#,
            r#"restart_mode: contradicts "auto_restart": false; remove one of the two keys"#,
        ),
        (
            r#""auto_restart": false, "restart_mode": "on-failure""#,
            r#"restart_mode: contradicts "auto_restart": false"#,
        ),
        (
            r#""restart_mode": "on_failure""#,
            r#"restart_mode: expected "never", "on-failure" or "always", found "on_failure"; did you mean "on-failure"?"#,
        ),
        (r#""backoff": "linear""#, r#"backoff: expected "fixed" or "exponential", found "linear""#),
        (r#""auto_restart": "false""#, r#"auto_restart: expected true or false, found "false"; remove the quotes"#),
        (r#""max_restarts": -1"#, "max_restarts: expected a number of at least 0, found -1"),
        (r#""restart_delay": "soon""#, r#"restart_delay: expected a duration"#),
        (r#""backoff_multiplier": -2"#, "backoff_multiplier: expected a number of at least 0, found -2"),
        (
            r#""backoff_multiplier": "2""#,
            r#"backoff_multiplier: expected a number of at least 0, found "2"; remove the quotes"#,
        ),
        (r#""jitter": "lots""#, r#"jitter: expected a number of at least 0, found "lots""#),
        (r#""start_timeout": 0"#, "start_timeout: expected a duration greater than zero, found 0"),
        (r#""shutdown_timeout": -1"#, "shutdown_timeout: expected a duration"),
    ];
    for (extra, error) in cases {
        check_server(&server(extra), Expect::Errors(&[error]));
    }
}

#[test]
fn health_check_is_http_with_a_timeout_below_the_interval() {
    let health = |extra: &str| check_server(&server(extra), Expect::Clean).and_then(|c| c.health);
    assert_eq!(health(r#""health_check_url": """#), None);
    let h = health(
        r#""health_check_url": "http://[::1]:8080/health?full=1", "health_check_interval": "10s",
           "health_check_timeout": "500ms", "failures_before_restart": 1"#,
    );
    assert_eq!(
        h,
        Some(HealthConfig {
            url: "http://[::1]:8080/health?full=1".to_owned(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_millis(500),
            failures_before_restart: 1,
        })
    );
    for url in ["http://localhost", "HTTP://127.0.0.1:9000/", "http://my-host.internal:1/x#y"] {
        assert!(health(&format!(r#""health_check_url": "{url}""#)).is_some(), "{url}");
    }
    // Without a URL a stdio server is pinged over MCP with the same timing; other transports warn.
    let pinged = check_server(&server(r#""health_check_interval": 10, "failures_before_restart": 2"#), Expect::Clean)
        .expect("a stdio server without a URL is valid");
    assert_eq!(pinged.health, None);
    assert_eq!(
        pinged.ping,
        PingConfig {
            interval: Some(Duration::from_secs(10)),
            timeout: Duration::from_secs(5),
            failures_before_restart: 2
        }
    );
    // A short ping interval alone is valid: the default timeout becomes half of it.
    let short = check_server(&server(r#""health_check_interval": 2"#), Expect::Clean).expect("valid");
    assert_eq!(short.ping.interval, Some(Duration::from_secs(2)));
    check_server(
        &server(r#""health_check_interval": 2, "health_check_timeout": 3"#),
        Expect::Errors(&["health_check_timeout: the timeout (3s) must be shorter than health_check_interval (2s)"]),
    );
    check_server(
        &server(r#""transport": "none", "health_check_interval": 10, "failures_before_restart": 2"#),
        Expect::Warnings(&[
            "health_check_interval: ignored because health_check_url is not set; set it, or remove this key",
            "failures_before_restart: ignored because health_check_url is not set",
        ]),
    );
    let cases: &[(&str, &str)] = &[
        (
            r#""health_check_url": "https://localhost/health""#,
            "health_check_url: https is not supported yet; use http://",
        ),
        (
            r#""health_check_url": "ftp://localhost/health""#,
            r#"health_check_url: it does not start with http://; expected a URL such as "http://localhost:8080/health", found "ftp://localhost/health""#,
        ),
        (r#""health_check_url": "http:///health""#, "health_check_url: it has no valid host and port"),
        (r#""health_check_url": "http://host:99999/""#, "health_check_url: it has no valid host and port"),
        (r#""health_check_url": "http://[::1/""#, "health_check_url: it has no valid host and port"),
        (r#""health_check_url": "http://a b/""#, "health_check_url: it contains spaces"),
        (r#""health_check_url": "http://u:p@host/""#, "health_check_url: it contains credentials"),
        (r#""health_check_url": 8080"#, "health_check_url: expected a string, found 8080"),
        (
            r#""health_check_url": "http://localhost/", "health_check_timeout": 30"#,
            "health_check_timeout: the timeout (30s) must be shorter than health_check_interval (30s); lower it or raise the interval",
        ),
        (
            r#""health_check_url": "http://localhost/", "health_check_interval": "2s""#,
            "health_check_timeout: the timeout (5s) must be shorter than health_check_interval (2s)",
        ),
        (
            r#""health_check_url": "http://localhost/", "failures_before_restart": 0"#,
            "failures_before_restart: expected a number of at least 1, found 0",
        ),
        (
            r#""health_check_url": "http://localhost/", "health_check_interval": 0"#,
            "health_check_interval: expected a duration greater than zero, found 0",
        ),
    ];
    for (extra, error) in cases {
        check_server(&server(extra), Expect::Errors(&[error]));
    }
}

#[test]
fn server_config_value_can_be_validated_after_merging() {
    let mut value: Value = serde_json::from_str(SEED_SERVER_CONFIG).unwrap_or_default();
    value["command"] = json!(["node", "index.js"]);
    let parsed = parse_server_config_value(&value);
    assert_eq!(parsed.ok().map(|p| p.value.command), Some(vec!["node".to_owned(), "index.js".to_owned()]));
}

// The tests below cover `${NAME}` expansion.

#[test]
fn expand_vars_cases() {
    let lookup = |name: &str| match name {
        "HOME" => Some("/home/hive".to_owned()),
        "TOKEN" => Some("t$${X}".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    let ok: &[(&str, &str)] = &[
        ("", ""),
        ("plain", "plain"),
        ("${HOME}", "/home/hive"),
        ("pre-${HOME}-post", "pre-/home/hive-post"),
        ("${HOME}${HOME}", "/home/hive/home/hive"),
        ("x${EMPTY}y", "xy"),
        ("$$", "$"),
        ("$${HOME}", "${HOME}"),
        ("cost $5", "cost $5"),
        ("a$", "a$"),
        ("$ {", "$ {"),
        ("é${HOME}é", "é/home/hiveé"),
        // Expanded text is not expanded again.
        ("${TOKEN}", "t$${X}"),
    ];
    for (input, expected) in ok {
        assert_eq!(expand_vars(input, &lookup).as_deref(), Ok(*expected), "{input}");
    }
    let bad: &[(&str, &str)] = &[
        ("${SECRET}", "host variable `SECRET` is not available to servers: add it to mcp_hosting.env_allowlist"),
        ("x${HOME", "unclosed `${`: add the closing `}`, or write `$$` for a literal `$`"),
        ("${", "unclosed `${`"),
        ("${}", "empty variable reference `${}`"),
        ("${1A}", r#"invalid variable name "1A" in `${...}`"#),
        ("${A-B}", r#"invalid variable name "A-B""#),
        ("${A${HOME}}", r#"invalid variable name "A${HOME""#),
        (
            "$HOME/x",
            "`$HOME` needs braces: write `${HOME}` to expand a host variable, or `$$HOME` for the literal text",
        ),
    ];
    for (input, message) in bad {
        match expand_vars(input, &lookup) {
            Ok(out) => panic!("{input}: expected an error, got {out:?}"),
            Err(error) => assert!(error.starts_with(message), "{input}: got {error:?}"),
        }
    }
}

// The tests below feed malformed input, which must never panic.

/// A tiny deterministic generator, so the garbage below is the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next()).unwrap_or(0) % n.max(1)
    }
}

#[test]
fn mangled_input_never_panics() {
    let alphabet: Vec<char> = "{}[]\":,.-+0123456789eE$\\ \u{0}ab_é\u{feff}".chars().collect();
    let mut rng = Lcg(7);
    for seed in [DEFAULT_CONFIG_JSON, SEED_SERVER_CONFIG] {
        let original: Vec<char> = seed.chars().collect();
        for _ in 0..3000 {
            let mut text = original.clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(text.len());
                match rng.below(3) {
                    0 => text[at] = alphabet[rng.below(alphabet.len())],
                    1 => {
                        text.remove(at);
                    }
                    _ => text.insert(at, alphabet[rng.below(alphabet.len())]),
                }
            }
            let text: String = text.into_iter().collect();
            let _ = parse_host_config(&text);
            let _ = parse_server_config(&text);
            let _ = expand_vars(&text, &|_| Some("x".to_owned()));
        }
    }
}

#[test]
fn odd_values_in_every_field_never_panic() {
    let odd = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1.5),
        json!(1e308),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!("\u{0}"),
        json!("${"),
        json!("x".repeat(5000)),
        json!([]),
        json!([null, 1, "a", {}]),
        json!({}),
        json!({"a": {"b": []}}),
    ];
    let mut paths: Vec<(Value, Vec<String>)> = Vec::new();
    let host: Value = serde_json::from_str(DEFAULT_CONFIG_JSON).unwrap_or_default();
    let server: Value = serde_json::from_str(SEED_SERVER_CONFIG).unwrap_or_default();
    for root in [host, server] {
        let mut stack = vec![Vec::<String>::new()];
        while let Some(path) = stack.pop() {
            let mut node = &root;
            for key in &path {
                node = &node[key.as_str()];
            }
            if let Value::Object(map) = node {
                for key in map.keys() {
                    let mut child = path.clone();
                    child.push(key.clone());
                    stack.push(child);
                }
            }
            paths.push((root.clone(), path));
        }
    }
    for (root, path) in paths {
        for value in &odd {
            let mut doc = root.clone();
            let mut node = &mut doc;
            for key in &path {
                node = &mut node[key.as_str()];
            }
            *node = value.clone();
            let text = doc.to_string();
            let _ = parse_host_config(&text);
            let _ = parse_server_config(&text);
        }
    }
}

// The tests below cover what a package may ask of this host: runtimes, variables, users, limits.

fn admitted(command: Value, limits: Value, host: &HostConfig) -> Result<Admitted, Vec<String>> {
    let value = json!({"name": "s", "command": command, "resource_limits": limits});
    let parsed =
        parse_server_config_value(&value).map_err(|e| e.errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    admit(&parsed.value, host).map_err(|e| e.errors.iter().map(ToString::to_string).collect())
}

#[test]
fn only_allowed_runtimes_named_bare_are_admitted() {
    let host = HostConfig::default();
    let ok: &[(Value, Runtime)] = &[
        (json!(["python", "server.py"]), Runtime::Python),
        (json!(["python3", "-m", "server"]), Runtime::Python),
        (json!(["node", "dist/index.js"]), Runtime::Node),
        (json!(["bash", "run.sh"]), Runtime::Bash),
        (json!(["sh", "-c", "echo hi"]), Runtime::Bash),
    ];
    for (command, runtime) in ok {
        assert_eq!(admitted(command.clone(), json!({}), &host).map(|a| a.runtime), Ok(*runtime), "{command}");
    }
    let refused: &[(Value, &str)] = &[
        (json!(["/usr/bin/python3", "server.py"]), "command[0]: `/usr/bin/python3` is not an allowed runtime"),
        (json!(["curl", "http://x"]), "command[0]: `curl` is not an allowed runtime"),
        (json!(["../python", "x"]), "command[0]: `../python` is not an allowed runtime"),
        (json!(["python", "/etc/passwd"]), "command[1]: the script path is absolute"),
        (json!(["node", "../../other/index.js"]), "command[1]: the script path contains `..`"),
    ];
    for (command, want) in refused {
        let errors = admitted(command.clone(), json!({}), &host).err().unwrap_or_default();
        assert!(errors.iter().any(|e| e.starts_with(want)), "{command}: expected {want:?}, got {errors:?}");
    }
}

#[test]
fn a_language_the_host_does_not_allow_is_refused_with_the_list() {
    let mut host = HostConfig::default();
    host.security.allowed_languages = vec!["python".to_owned()];
    let errors = admitted(json!(["node", "index.js"]), json!({}), &host).err().unwrap_or_default();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("node servers are not allowed on this host"), "{errors:?}");
    assert!(errors[0].contains("[python]"), "{errors:?}");
}

#[test]
fn resource_requests_are_clamped_to_the_host_ceiling_and_absent_ones_get_it() {
    let host = HostConfig::default();
    let big = admitted(json!(["python", "s.py"]), json!({"memory_mb": 999_999, "cpu_percent": 400}), &host)
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(big.limits.memory_mb, host.resource_limits.memory_mb);
    assert_eq!(big.limits.cpu_percent, host.resource_limits.cpu_percent);
    let warned: Vec<String> = big.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(warned[0].starts_with("resource_limits.memory_mb: 999999 is above this host's ceiling of 1024"));
    let none = admitted(json!(["python", "s.py"]), json!({}), &host).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(none.limits.max_processes, host.resource_limits.max_processes);
    assert!(none.warnings.is_empty());
    let small =
        admitted(json!(["python", "s.py"]), json!({"memory_mb": 64}), &host).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(small.limits.memory_mb, 64);
}

#[test]
fn zero_never_means_unlimited() {
    let errors = admitted(
        json!(["python", "s.py"]),
        json!({"memory_mb": 0, "max_processes": 0, "cpu_percent": 0}),
        &HostConfig::default(),
    )
    .err()
    .unwrap_or_default();
    assert_eq!(errors.len(), 3, "{errors:?}");
    check_host(
        &hosting(r#""resource_limits": {"memory_mb": 0}"#),
        Expect::Errors(&["mcp_hosting.resource_limits.memory_mb: expected"]),
    );
}

#[test]
fn loader_and_interpreter_variables_are_refused() {
    for name in [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "NODE_OPTIONS",
        "BASH_ENV",
        "PATH",
        "BASH_FUNC_x%%",
        "ld_audit",
    ] {
        let value = json!({"name": "s", "command": ["python", "s.py"], "environment": {name: "x"}});
        let errors = parse_server_config_value(&value).err().map(|e| e.errors).unwrap_or_default();
        let valid_name = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let want = if valid_name { "changes how the runtime loads code" } else { "invalid variable name" };
        assert!(errors.iter().any(|e| e.message.contains(want)), "{name}: {errors:?}");
    }
    let fine = json!({"name": "s", "command": ["python", "s.py"], "environment": {"LOG_LEVEL": "info", "PYTHONUNBUFFERED": "1"}});
    assert!(parse_server_config_value(&fine).is_ok());
}

#[test]
fn root_is_never_a_server_user() {
    for user in ["root", "0", "000"] {
        let value = json!({"name": "s", "command": ["python", "s.py"], "user": user});
        let errors = parse_server_config_value(&value).err().map(|e| e.errors).unwrap_or_default();
        assert!(errors.iter().any(|e| e.message.starts_with("servers never run as root")), "{user}: {errors:?}");
    }
    let value = json!({"name": "s", "command": ["python", "s.py"], "user": "nobody"});
    assert!(parse_server_config_value(&value).is_ok());
}

#[test]
fn upload_arguments_override_the_file_and_merge_environment_and_limits() {
    let mut file = json!({"name": "a", "command": ["python", "a.py"], "environment": {"A": "1", "B": "2"}, "resource_limits": {"memory_mb": 128}});
    let over = json!({"name": "b", "command": ["python", "b.py"], "environment": {"B": "3"}, "resource_limits": {"cpu_percent": 50}, "description": null});
    apply_overrides(&mut file, &over).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        file,
        json!({"name": "b", "command": ["python", "b.py"], "environment": {"A": "1", "B": "3"}, "resource_limits": {"memory_mb": 128, "cpu_percent": 50}})
    );
    assert!(apply_overrides(&mut json!([]), &json!({})).is_err());
}
