//! Tests of one-off jobs: output lines, cleared environment, exit codes, and the deadline that kills the whole group.

use std::time::Duration;

use super::*;

fn sh(script: &str, timeout: Duration) -> Job {
    Job {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        working_dir: std::env::temp_dir(),
        env: vec![("PATH".into(), crate::process::DEFAULT_PATH.into()), ("ONLY".into(), "this".into())],
        timeout,
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rfind(')').is_some_and(|at| !s[at + 1..].trim_start().starts_with(['Z', 'X'])))
}

#[tokio::test]
async fn lines_of_both_pipes_arrive_and_the_exit_code_is_kept() {
    let mut lines = Vec::new();
    let end = run_job(&sh("echo out; echo err >&2; exit 3", Duration::from_secs(30)), |l| lines.push(l.to_owned()))
        .await
        .unwrap();
    lines.sort();
    assert_eq!(lines, ["err", "out"]);
    assert_eq!(end, JobEnd::Exited(policy::ExitKind::Code(3)));
}

#[tokio::test]
async fn the_environment_is_only_what_the_job_names() {
    let mut lines = Vec::new();
    run_job(&sh("env", Duration::from_secs(30)), |l| lines.push(l.to_owned())).await.unwrap();
    lines.retain(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with("_="));
    lines.sort();
    assert_eq!(lines, ["ONLY=this".to_owned(), format!("PATH={}", crate::process::DEFAULT_PATH)]);
}

#[tokio::test]
async fn a_job_past_its_deadline_is_killed_with_its_group() {
    let mut lines = Vec::new();
    let job = sh("sleep 30 & echo $!; sleep 30", Duration::from_millis(300));
    let end = run_job(&job, |l| lines.push(l.to_owned())).await.unwrap();
    assert_eq!(end, JobEnd::TimedOut);
    let background: u32 = lines[0].parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(background) {
        assert!(std::time::Instant::now() < deadline, "the background sleep {background} survived the deadline");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_relative_program_is_refused() {
    let mut job = sh("true", Duration::from_secs(1));
    job.program = "sh".into();
    assert!(matches!(run_job(&job, |_| {}).await, Err(SpawnError::NotFound { .. })));
}
