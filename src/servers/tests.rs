//! Tests of the spec conversion: ids, environment expansion, policy mapping and errors.

use std::path::Path;

use super::*;

fn parse(json: &str) -> ServerConfig {
    config::parse_server_config(json).expect("valid server config").value
}

fn build(json: &str, allow: &[&str]) -> Result<(ServerSpec, Vec<String>), SpecErrors> {
    let host = HostConfig { env_allowlist: allow.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    let lookup = |name: &str| if name == "API_KEY" { Some("secret".to_string()) } else { None };
    let program = |runtime: Runtime| Ok(PathBuf::from(format!("/opt/{runtime}")));
    spec_for(
        &host,
        "demo",
        Path::new("/srv/demo"),
        Path::new("/state/demo"),
        &confinement(),
        &parse(json),
        &lookup,
        &program,
    )
}

#[test]
fn seed_config_maps_to_a_fixed_on_failure_policy() {
    let (spec, warnings) = build(
        r#"{"name":"Demo","command":["python3","server.py"],"auto_restart":true,"max_restarts":5,"restart_delay":5}"#,
        &[],
    )
    .unwrap();
    let policy = spec.policy.config();
    assert_eq!(policy.mode, policy::RestartMode::OnFailure);
    assert_eq!(policy.backoff, policy::Backoff::Fixed);
    assert_eq!((policy.max_restarts, policy.restart_delay_ms, policy.restart_window_ms), (5, 5_000, 60_000));
    assert_eq!(spec.working_dir, Path::new("/srv/demo"));
    assert_eq!(spec.logs.dir, Path::new("data/mcp_logs/demo"));
    assert_eq!(spec.command, ["/opt/python", "server.py"], "the runtime is named by the host's path");
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn environment_is_cleared_and_expands_only_allowed_host_variables() {
    let json = r#"{"name":"Demo","command":["python","s.py"],"environment":{"KEY":"${API_KEY}","MODE":"fast"}}"#;
    let (spec, _) = build(json, &["API_KEY"]).unwrap();
    let env: std::collections::HashMap<_, _> = spec.env.into_iter().collect();
    assert_eq!(env["KEY"], "secret");
    assert_eq!(env["MODE"], "fast");
    assert_eq!(env["HOME"], "/state/demo");
    assert_eq!(env.len(), 5, "PATH, HOME, LANG and the server's two: {env:?}");
    let err = build(json, &[]).unwrap_err();
    assert!(err.0[0].starts_with("environment.KEY: "), "{err}");
    assert!(err.0[0].contains("API_KEY"), "{err}");
}

#[test]
fn impossible_policies_are_rejected_with_their_field() {
    let err = build(r#"{"name":"Demo","command":["python","s.py"],"restart_delay":10,"max_restart_delay":5}"#, &[])
        .unwrap_err();
    assert!(err.0.iter().any(|e| e.starts_with("max_restart_delay")), "{err}");
}

#[test]
fn a_command_that_is_not_an_allowed_runtime_is_refused() {
    let err = build(r#"{"name":"Demo","command":["/bin/sh","-c","id"]}"#, &[]).unwrap_err();
    assert!(err.0[0].starts_with("command[0]: `/bin/sh` is not an allowed runtime"), "{err}");
}

#[test]
fn a_runtime_missing_on_the_host_is_named() {
    let host = HostConfig::default();
    let program = |_: Runtime| Err("no node interpreter was found on this host".to_owned());
    let cfg = parse(r#"{"name":"Demo","command":["node","index.js"]}"#);
    let err =
        spec_for(&host, "demo", Path::new("/srv/demo"), Path::new("/s"), &confinement(), &cfg, &|_| None, &program)
            .unwrap_err();
    assert_eq!(err.0, ["command[0]: no node interpreter was found on this host"]);
}

#[test]
fn ids_are_checked() {
    assert!(validate_id("my-server_1").is_ok());
    for bad in ["", "-x", "a/b", "..", "a b", &"x".repeat(65)] {
        assert!(validate_id(bad).is_err(), "{bad:?}");
    }
}

fn confinement() -> Confinement {
    Confinement { uid: 200_007, run_dir: "/state/.run/demo".into(), require: true }
}

#[test]
fn sandbox_follows_the_config_and_the_host() {
    let (spec, warnings) = build(
        r#"{"name":"x","command":["python","s.py"],"user":"nobody","allowed_network":false,"allowed_filesystem":["read","write"]}"#,
        &[],
    )
    .expect("valid");
    let sb = &spec.sandbox;
    assert!(sb.confine && sb.cgroup && !sb.network && sb.writable_state && sb.require);
    assert_eq!((sb.uid, sb.gid), (200_007, 200_007));
    assert_eq!(sb.code_dir, Path::new("/srv/demo"));
    assert_eq!(sb.state_dir, Path::new("/state/demo"));
    assert!(
        warnings.iter().any(|w| w.contains("user: \"nobody\" is not used") && w.contains("200007")),
        "{warnings:?}"
    );
    let (spec, _) = build(r#"{"name":"x","command":["python","s.py"],"sandboxed":false}"#, &[]).expect("valid");
    assert!(!spec.sandbox.confine && spec.sandbox.network && !spec.sandbox.writable_state);
}

#[test]
fn http_servers_need_the_network_when_sandboxed() {
    let err = build(
        r#"{"name":"x","command":["python","s.py"],"transport":"http","port":8080,"allowed_network":false}"#,
        &[],
    )
    .expect_err("refused");
    assert!(err.to_string().contains("use the stdio transport, or set allowed_network to true"), "{err}");
}
