//! End to end: packages uploaded to the real `hivehost serve` over its HTTP API, dependencies
//! installed from the package index, hostile uploads refused, and a hivehost killed with SIGKILL
//! (while servers run and while a deploy is mid-way) that comes back with every server exactly once.

use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "support/harness.rs"]
mod harness;

use harness::{marked, request, start_serve, wait_until, write_config};
use hivehost::package::{IntakeLimits, pack_dir};

const SHORT: Duration = Duration::from_secs(60);

fn token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("api_token")).expect("the token file exists").trim().to_owned()
}

fn limits() -> IntakeLimits {
    IntakeLimits::new(100 << 20)
}

fn state_of(addr: &str, token: &str, id: &str) -> Option<String> {
    let (status, body) = request(addr, "GET", &format!("/api/v1/servers/{id}"), Some(token), b"").ok()?;
    (status == 200).then(|| body["state"].as_str().unwrap_or_default().to_owned())
}

/// A bash server that leaves a daemon-like child running, its processes marked with `mark`.
fn bash_package(root: &Path, name: &str, mark: &str) -> Vec<u8> {
    let dir = root.join(format!("pkg-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("server.sh"), "sleep 1000 &\necho up >&2\nwhile :; do sleep 1; done\n").unwrap();
    let config = serde_json::json!({
        "name": name,
        "command": ["bash", "server.sh"],
        "transport": "none",
        "environment": { harness::MARK: mark },
        "shutdown_timeout": 2
    });
    std::fs::write(dir.join("server_config.json"), config.to_string()).unwrap();
    pack_dir(&dir, &limits()).unwrap()
}

fn zombie_or_gone(pid: u32) -> bool {
    actors::process::proc_stat(pid).is_none_or(|s| s.zombie)
}

/// The marked processes that hivehost itself started: the roots of a server's trees.
fn roots(mark: &str, hivehost: u32) -> Vec<u32> {
    marked(mark)
        .into_iter()
        .filter(|pid| actors::process::proc_stat(*pid).is_some_and(|s| s.ppid == hivehost))
        .collect()
}

#[test]
fn example_package_deploys_with_its_dependencies_from_the_index_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 10, 5).unwrap();
    let (mut serve, addr) = start_serve(dir.path(), &config);
    let token = token(dir.path());
    let scratch = tempfile::tempdir().unwrap();
    let zip = hivehost::package::example::zip(&limits(), scratch.path()).unwrap();

    let (status, body) = request(&addr, "POST", "/api/v1/servers?name=example&start=true", None, &zip).unwrap();
    assert_eq!(status, 401, "an upload without the token is refused: {body}");
    assert!(!dir.path().join("servers/example").exists());

    let (status, body) = request(&addr, "POST", "/api/v1/servers?name=example&start=true", Some(&token), &zip).unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], "example");
    assert!(body["scan"]["findings"].is_array(), "the scan report comes back: {body}");
    let code = dir.path().join("servers/example");
    let site =
        std::fs::read_dir(code.join(".venv/lib")).unwrap().flatten().next().unwrap().path().join("site-packages");
    assert!(site.join("mcp/server/fastmcp").is_dir(), "mcp is installed in the server's own venv");
    let install_log = std::fs::read_to_string(dir.path().join("logs/example/install.log")).unwrap();
    assert!(install_log.contains("Successfully installed"), "pip's output is kept with the server's logs");
    wait_until("the example server runs", SHORT, || state_of(&addr, &token, "example").as_deref() == Some("running"));
    let (_, status_body) = request(&addr, "GET", "/api/v1/servers/example", Some(&token), b"").unwrap();
    let pid = status_body["pid"].as_u64().unwrap() as u32;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.contains(".venv/bin/python") && cmdline.contains("server.py"), "{cmdline:?} ({exe:?})");
    // FastMCP imports pydantic, whose core is a native library: once it is mapped from the server's
    // own venv, the server runs on the packages the deploy installed.
    let venv_core = site.join("pydantic_core").display().to_string();
    wait_until("the server imports its dependencies from its venv", SHORT, || {
        std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|maps| maps.contains(&venv_core))
    });
    assert_eq!(state_of(&addr, &token, "example").as_deref(), Some("running"));
    assert_eq!(serve.terminate(), Some(0));
}

#[test]
fn hostile_and_invalid_uploads_are_refused_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 10, 5).unwrap();
    let (mut serve, addr) = start_serve(dir.path(), &config);
    let token = token(dir.path());
    // A traversal entry, written by hand since pack_dir would never make one.
    let mut evil = Vec::new();
    {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut evil));
        let opts = zip::write::SimpleFileOptions::default();
        zip.start_file("server_config.json", opts).unwrap();
        std::io::Write::write_all(&mut zip, br#"{"name":"x","command":["python","s.py"]}"#).unwrap();
        zip.start_file("../evil.txt", opts).unwrap();
        std::io::Write::write_all(&mut zip, b"x").unwrap();
        zip.finish().unwrap();
    }
    let (status, body) = request(&addr, "POST", "/api/v1/servers?name=evil", Some(&token), &evil).unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "path_traversal", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("../evil.txt"), "{body}");
    // A package whose command is not an allowed runtime.
    let pkg = dir.path().join("pkg-bad");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("server_config.json"), r#"{"name":"bad","command":["python","s.py"]}"#).unwrap();
    let mut zip = pack_dir(&pkg, &limits()).unwrap();
    let (status, _) = request(&addr, "POST", "/api/v1/servers?name=ok", Some(&token), &zip).unwrap();
    assert_eq!(status, 201, "a plain package deploys");
    std::fs::write(pkg.join("server_config.json"), r#"{"name":"bad","command":["/bin/sh","-c","id"]}"#).unwrap();
    zip = pack_dir(&pkg, &limits()).unwrap_or(zip);
    let (status, body) = request(&addr, "POST", "/api/v1/servers?name=bad", Some(&token), &zip).unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("not an allowed runtime"), "{body}");
    // Packages that would run their own code in the dependency install, which runs outside the
    // sandbox: a requirements line that builds the package's directory, a shipped venv whose
    // sitecustomize pip would import, an .npmrc naming the command npm runs for git dependencies.
    let marker = dir.path().join("install-ran");
    let setup = format!(
        "open({:?}, 'w').write('ran')\nfrom setuptools import setup\nsetup(name='evil', version='1')\n",
        marker
    );
    type Files<'a> = Vec<(&'a str, &'a str)>;
    let hostile: [(&str, Files, &str); 3] = [
        (
            "editable",
            vec![
                ("server_config.json", r#"{"name":"e","command":["python","s.py"]}"#),
                ("s.py", "print('hi')"),
                ("setup.py", &setup),
                ("requirements.txt", "-e .\n"),
            ],
            "requirements.txt line 1: `-e .`",
        ),
        (
            "venv",
            vec![
                ("server_config.json", r#"{"name":"v","command":["python","s.py"]}"#),
                ("s.py", "print('hi')"),
                ("requirements.txt", "mcp\n"),
                (".venv/lib/python3.11/site-packages/sitecustomize.py", "import os\n"),
            ],
            "the archive holds `.venv`",
        ),
        (
            "npmrc",
            vec![
                ("server_config.json", r#"{"name":"n","command":["node","s.js"]}"#),
                ("s.js", "console.log('hi')"),
                (
                    "package.json",
                    r#"{"name":"n","version":"1.0.0","dependencies":{"x":"git+https://example.org/x.git"}}"#,
                ),
                (".npmrc", "git=./pwn.sh\n"),
            ],
            "the archive holds `.npmrc`",
        ),
    ];
    for (name, files, expected) in hostile {
        let mut archive = Vec::new();
        {
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut archive));
            for (path, text) in files {
                zip.start_file(path, zip::write::SimpleFileOptions::default()).unwrap();
                std::io::Write::write_all(&mut zip, text.as_bytes()).unwrap();
            }
            zip.finish().unwrap();
        }
        let path = format!("/api/v1/servers?name={name}");
        let (status, body) = request(&addr, "POST", &path, Some(&token), &archive).unwrap();
        assert_eq!(status, 422, "{name}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(expected), "{name}: {body}");
    }
    assert!(!marker.exists(), "the package's setup.py ran in the install");
    let left: Vec<PathBuf> =
        std::fs::read_dir(dir.path().join("servers")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(left, [dir.path().join("servers/ok")], "nothing of a refused upload is written under servers_dir");
    assert_eq!(serve.terminate(), Some(0));
}

#[test]
fn a_killed_hivehost_comes_back_with_every_server_exactly_once_and_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 10, 5).unwrap();
    let mark = |name: &str| format!("crash-{}-{name}", std::process::id());
    let (mut first, addr) = start_serve(dir.path(), &config);
    let token = token(dir.path());
    for name in ["alpha", "beta"] {
        let zip = bash_package(dir.path(), name, &mark(name));
        let (status, body) =
            request(&addr, "POST", &format!("/api/v1/servers?name={name}&start=true"), Some(&token), &zip).unwrap();
        assert_eq!(status, 201, "{body}");
    }
    let (status, _) = request(
        &addr,
        "POST",
        "/api/v1/servers?name=gamma",
        Some(&token),
        &bash_package(dir.path(), "gamma", &mark("gamma")),
    )
    .unwrap();
    assert_eq!(status, 201, "gamma is deployed but not started");
    for name in ["alpha", "beta"] {
        wait_until("both servers and their daemons run", SHORT, || marked(&mark(name)).len() >= 2);
    }
    let before: Vec<u32> = ["alpha", "beta"].iter().flat_map(|n| marked(&mark(n))).collect();

    // A deploy that hangs in its dependency install: the package index never answers.
    let index = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pkg = dir.path().join("pkg-slow");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("server.py"), "print('never')\n").unwrap();
    std::fs::write(pkg.join("server_config.json"), r#"{"name":"slow","command":["python","server.py"]}"#).unwrap();
    std::fs::write(
        pkg.join("requirements.txt"),
        format!("--index-url http://{}/simple\nhivehost-never-there==1.0\n", index.local_addr().unwrap()),
    )
    .unwrap();
    let slow = pack_dir(&pkg, &limits()).unwrap();
    let (addr2, token2) = (addr.clone(), token.clone());
    let upload = std::thread::spawn(move || request(&addr2, "POST", "/api/v1/servers?name=slow", Some(&token2), &slow));
    index.set_nonblocking(true).unwrap();
    let mut held = None;
    wait_until("pip asks the index: the deploy is mid-way", SHORT, || {
        assert!(!upload.is_finished(), "the deploy ended before reaching the index");
        held = index.accept().ok();
        held.is_some()
    });
    assert!(
        dir.path()
            .join("servers")
            .read_dir()
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".staging-"))
    );

    // SAFETY: kill(2) on the pid of the child this test started.
    unsafe {
        libc::kill(first.id() as libc::pid_t, libc::SIGKILL);
    }
    first.wait().unwrap();
    let _ = upload.join();

    let (mut second, addr) = start_serve(dir.path(), &config);
    for name in ["alpha", "beta"] {
        wait_until("each server runs again", SHORT, || state_of(&addr, &token, name).as_deref() == Some("running"));
        wait_until("its new tree is up", SHORT, || marked(&mark(name)).len() >= 2);
        assert_eq!(roots(&mark(name), second.id()).len(), 1, "{name} runs exactly once: {:?}", marked(&mark(name)));
    }
    let survivors: Vec<u32> = before.iter().copied().filter(|pid| !zombie_or_gone(*pid)).collect();
    assert_eq!(survivors, Vec::<u32>::new(), "nothing of the dead instance's trees is left");
    assert_eq!(state_of(&addr, &token, "gamma").as_deref(), Some("stopped"), "gamma is back, still stopped");
    assert_eq!(state_of(&addr, &token, "slow"), None, "the half-made deploy is not a server");
    let names: Vec<String> = std::fs::read_dir(dir.path().join("servers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["alpha", "beta", "gamma"], "no staging directory and no half-made server is left");
    assert_eq!(second.terminate(), Some(0));
    for name in ["alpha", "beta", "gamma"] {
        assert_eq!(marked(&mark(name)), Vec::<u32>::new(), "{name} leaves nothing after a clean stop");
    }

    // The history spans both instances.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = hivehost::store::Store::open(&dir.path().join("hivehost.db")).unwrap();
        let events = store
            .events(hivehost::store::EventQuery {
                server: Some("alpha".into()),
                category: None,
                since_ms: None,
                limit: 1000,
            })
            .await
            .unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert!(kinds.contains(&"deployed"), "{kinds:?}");
        assert!(
            kinds.iter().filter(|k| **k == "spawned").count() >= 2,
            "spawned before and after the crash: {kinds:?}"
        );
        let recovered = store.events(hivehost::store::EventQuery::latest(1000)).await.unwrap();
        assert!(recovered.iter().any(|e| e.kind == "recovered"), "the recovery is an incident on record");
        store.close().await.unwrap();
    });
}

#[test]
fn max_servers_is_enforced_and_delete_keeps_only_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1, 5).unwrap();
    let (mut serve, addr) = start_serve(dir.path(), &config);
    let token = token(dir.path());
    let mark = format!("delete-{}", std::process::id());
    let zip = bash_package(dir.path(), "solo", &mark);
    let (status, body) = request(&addr, "POST", "/api/v1/servers?name=solo&start=true", Some(&token), &zip).unwrap();
    assert_eq!(status, 201, "{body}");
    let other = bash_package(dir.path(), "extra", &format!("{mark}-extra"));
    let (status, body) = request(&addr, "POST", "/api/v1/servers?name=extra", Some(&token), &other).unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("mcp_hosting.max_servers (1)"), "{body}");
    wait_until("solo runs", SHORT, || marked(&mark).len() >= 2);
    // Its log directory is made by the first line written (the log writer gathers lines for 25 ms).
    wait_until("solo has logged", SHORT, || dir.path().join("logs/solo/current.log").exists());
    for sub in ["servers/solo", "state/solo", "logs/solo"] {
        assert!(dir.path().join(sub).exists(), "{sub} exists while deployed");
    }
    let (status, body) = request(&addr, "DELETE", "/api/v1/servers/solo?force=true", Some(&token), b"").unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(marked(&mark), Vec::<u32>::new(), "a forced delete leaves no process");
    for sub in ["servers/solo", "state/solo", "logs/solo"] {
        assert!(!dir.path().join(sub).exists(), "{sub} is removed by delete");
    }
    let (status, _) = request(&addr, "GET", "/api/v1/servers/solo", Some(&token), b"").unwrap();
    assert_eq!(status, 404);
    let (status, _) = request(&addr, "POST", "/api/v1/servers?name=extra", Some(&token), &other).unwrap();
    assert_eq!(status, 201, "the freed place can be used");
    assert_eq!(serve.terminate(), Some(0));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = hivehost::store::Store::open(&dir.path().join("hivehost.db")).unwrap();
        let query =
            hivehost::store::EventQuery { server: Some("solo".into()), category: None, since_ms: None, limit: 100 };
        let kinds: Vec<String> = store.events(query).await.unwrap().into_iter().map(|e| e.kind).collect();
        assert!(kinds.iter().any(|k| k == "deployed") && kinds.iter().any(|k| k == "deleted"), "{kinds:?}");
        assert!(store.server("solo").await.unwrap().is_none());
        store.close().await.unwrap();
    });
}

/// Runs the client command `args` against the serve at `addr`; returns (success, stdout, stderr).
fn cli(dir: &Path, config: &Path, addr: &str, args: &[&str]) -> (bool, String, String) {
    #[allow(clippy::disallowed_methods, reason = "the test runs the binary under test")]
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hivehost"))
        .args(args)
        .arg("--config")
        .arg(config)
        .current_dir(dir)
        .env("HIVEHOST_ADDR", addr)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_command_line_client_deploys_lists_controls_and_removes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 10, 5).unwrap();
    let (mut serve, addr) = start_serve(dir.path(), &config);
    let mark = format!("cli-{}", std::process::id());
    let zip = dir.path().join("ticker.zip");
    std::fs::write(&zip, bash_package(dir.path(), "ticker", &mark)).unwrap();
    let zip = zip.display().to_string();
    let (ok, out, err) = cli(dir.path(), &config, &addr, &["deploy", &zip, "--start"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"id\": \"ticker\""), "{out}");
    let (ok, out, _) = cli(dir.path(), &config, &addr, &["ls"]);
    assert!(ok && out.contains("\"ticker\""), "{out}");
    wait_until("ticker logs its first line", SHORT, || {
        cli(dir.path(), &config, &addr, &["logs", "ticker", "-n", "5"]).1.contains("up")
    });
    let (ok, out, _) = cli(dir.path(), &config, &addr, &["stop", "ticker"]);
    assert!(ok && out.contains("\"state\": \"stopped\""), "{out}");
    let (ok, _, err) = cli(dir.path(), &config, &addr, &["status", "ghost"]);
    assert!(!ok && err.contains("no server `ghost`"), "{err}");
    let (ok, _, err) = cli(dir.path(), &config, &addr, &["rm", "ticker"]);
    assert!(ok, "{err}");
    assert!(!dir.path().join("servers/ticker").exists());
    assert_eq!(serve.terminate(), Some(0));
}
