//! The last-good-plan cache is on by default, in a directory an unprivileged user can
//! create; `--no-plan-cache` turns it off; a default directory that cannot be
//! created is a warning naming it, never a failure to start. The real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A scratch directory under the target directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The agent binary with a clean environment for the state directory: only
/// `XDG_STATE_HOME` (and `HOME`) point at `state_home`.
fn agent(config: &Path, state_home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_meridian-dns-agent"));
    c.arg("--config")
        .arg(config)
        .env("XDG_STATE_HOME", state_home)
        .env("HOME", state_home)
        .env_remove("STATE_DIRECTORY")
        .env_remove("MERIDIAN_STATE_DIR")
        .env_remove("MERIDIAN_NO_PLAN_CACHE")
        .env_remove("MERIDIAN_CONFIG")
        .stdin(Stdio::null());
    c
}

const CONFIG: &str = "agent_id = \"dns-7\"\ndns_addr = \"127.0.0.1:0\"\nadmin_addr = \"127.0.0.1:0\"\n\
                      control_plane = [\"http://127.0.0.1:9\"]\nudp_threads = 1\n";

#[test]
fn check_config_shows_the_cache_on_by_default_and_off_with_the_flag() {
    let dir = Scratch::new("plan-cache-check");
    let config = dir.0.join("agent.toml");
    std::fs::write(&config, CONFIG).unwrap();

    let out = agent(&config, &dir.0).arg("--check-config").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("plan_cache = true"), "{text}");
    let expected = dir.0.join("meridian").join("dns-agent-dns-7");
    assert!(
        text.contains(&format!("state_dir = \"{}\"", expected.display())),
        "expected the default directory {} in:\n{text}",
        expected.display()
    );

    let out = agent(&config, &dir.0)
        .args(["--no-plan-cache", "--check-config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("plan_cache = false"), "{text}");
    assert!(
        !text.contains("state_dir"),
        "no cache directory when the cache is off:\n{text}"
    );
}

#[test]
fn an_uncreatable_default_directory_is_a_warning_and_the_agent_serves_on() {
    let dir = Scratch::new("plan-cache-uncreatable");
    let config = dir.0.join("agent.toml");
    std::fs::write(&config, CONFIG).unwrap();
    // $XDG_STATE_HOME is a regular file: nothing can be created below it.
    let blocker = dir.0.join("not-a-directory");
    std::fs::write(&blocker, "").unwrap();
    let expected = blocker.join("meridian").join("dns-agent-dns-7");

    let mut child = agent(&config, &blocker)
        .env("MERIDIAN_LOG", "info")
        .env("MERIDIAN_LOG_FORMAT", "text")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Logs go to stdout or stderr depending on the subscriber; read both.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = Vec::new();
    let warning = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("WITHOUT the last-good-plan cache") => break line,
            Ok(line) => log.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("no warning about the cache directory; log:\n{}", log.join("\n"));
            }
        }
    };
    assert!(
        warning.contains(&expected.display().to_string()),
        "the warning names the directory {}: {warning}",
        expected.display()
    );
    // It keeps running (it would have exited at once on a start-up error).
    std::thread::sleep(Duration::from_millis(500));
    let status = child.try_wait().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(status.is_none(), "the agent exited: {status:?}\n{}", log.join("\n"));
}
