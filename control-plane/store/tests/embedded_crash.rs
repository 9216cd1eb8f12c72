//! Crash tests of the embedded store with real processes: a child
//! (`embedded-store-writer`, `src/bin/embedded_store_writer.rs`) writes keys and
//! prints each acknowledged write; the test kills it with SIGKILL at a random moment,
//! reopens the store and checks that every acknowledged write is there, with its
//! value and revision, and that nothing is there that was never written. The same
//! data directory goes through every round, so recovery runs on what earlier
//! recoveries left. A second test fills a real (size-limited) file until writes fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use meridian_store::embedded::EmbeddedStore;
use meridian_store::{Revision, Store};
use rand::Rng;

const WRITER: &str = env!("CARGO_BIN_EXE_embedded-store-writer");
/// Keys the writes cycle through: most writes overwrite an earlier one.
const KEYS: u64 = 40;
const ROUNDS: usize = 20;
const SIGKILL: i32 = 9;

/// The value write `i` puts; the same function as the writer's.
fn value_for(i: u64) -> String {
    format!("v{i}-{:08x}", (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32)
}

fn key_for(i: u64) -> String {
    format!("k/{:04}", i % KEYS)
}

/// One acknowledged write, as the child printed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ack {
    i: u64,
    revision: Revision,
}

/// What the store must hold: per key, the last write known to have landed.
#[derive(Debug)]
struct Model {
    keys: BTreeMap<String, Ack>,
    revision: Revision,
}

impl Model {
    fn new() -> Self {
        // A fresh store is at revision 1.
        Self {
            keys: BTreeMap::new(),
            revision: 1,
        }
    }

    fn acknowledged(&mut self, ack: Ack) {
        assert_eq!(ack.revision, self.revision + 1, "one revision per write: {ack:?}");
        self.revision = ack.revision;
        self.keys.insert(key_for(ack.i), ack);
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rng = rand::rng();
    let mut model = Model::new();
    let mut next = 0u64;
    for round in 0..ROUNDS {
        let wanted = rng.random_range(1..=120);
        let compact_every = rng.random_range(5..=40u64);
        let mut child = spawn(Command::new(WRITER).arg("write").arg(dir.path()).args([
            next.to_string(),
            KEYS.to_string(),
            compact_every.to_string(),
        ]));
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut acks = Vec::new();
        while acks.len() < wanted {
            match read_line(&mut stdout) {
                Some(line) => acks.push(parse_ack(&line, next + acks.len() as u64)),
                None => panic!(
                    "round {round}: the writer stopped after {} of {wanted} writes: {}",
                    acks.len(),
                    finish(child)
                ),
            }
        }
        // SIGKILL, at whatever the writer is doing by then: usually the next write,
        // its fsync or a snapshot.
        std::thread::sleep(Duration::from_micros(rng.random_range(0..3000)));
        child.kill().unwrap();
        // Writes acknowledged before the kill, still in the pipe.
        while let Some(line) = read_line(&mut stdout) {
            acks.push(parse_ack(&line, next + acks.len() as u64));
        }
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(SIGKILL),
            "round {round}: the writer must die of the kill, not before: {}",
            finish(child)
        );
        // The one write that may have been in flight: durable but unacknowledged.
        let in_flight = next + acks.len() as u64;
        for ack in acks {
            model.acknowledged(ack);
        }
        // Recovery, then recovery of what recovery left.
        for reopen in 0..2 {
            runtime.block_on(check(
                dir.path(),
                &mut model,
                in_flight,
                &format!("round {round}.{reopen}"),
            ));
        }
        next = in_flight + 1;
    }
    assert_eq!(
        model.keys.len() as u64,
        KEYS,
        "every key written, most of them overwritten"
    );
}

/// A real file that cannot grow (a file size limit, set by the shell the writer runs
/// in) fails writes part-way through a record: the writer sees errors, reads go on,
/// and the log holds every acknowledged write and nothing of the failed ones.
#[test]
fn a_full_disk_fails_writes_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // `trap '' XFSZ`: an ignored signal stays ignored across exec, so going past the
    // limit is an EFBIG error instead of a killed process. `ulimit -f` is in blocks
    // of 512 or 1024 bytes depending on the shell: some tens of records either way.
    let mut child = spawn(
        Command::new("sh")
            .args(["-c", r#"trap '' XFSZ; ulimit -f 16 && exec "$0" "$@""#])
            .arg(WRITER)
            .arg("fill")
            .arg(dir.path())
            .args(["0", &KEYS.to_string()]),
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut model = Model::new();
    let mut acked = 0;
    let mut failed = Vec::new();
    let mut health = None;
    while let Some(line) = read_line(&mut stdout) {
        let words: Vec<&str> = line.splitn(3, ' ').collect();
        match words[0] {
            "ack" => {
                model.acknowledged(parse_ack(&line, acked));
                acked += 1;
            }
            "failed" => failed.push(words[1].parse::<u64>().unwrap()),
            "health" => health = Some(line.clone()),
            "done" => {}
            _ => panic!("unexpected line from the writer: {line}"),
        }
    }
    let output = finish(child);
    assert!(output.starts_with("exit status: 0"), "{output}");
    assert!(acked > 5, "only {acked} writes fit: {output}");
    assert_eq!(failed.len(), 4, "{failed:?}");
    let health = health.unwrap();
    assert!(
        health.starts_with("health false ") && health.contains("writes failing: "),
        "{health}"
    );
    let wal = std::fs::read(dir.path().join("wal.jsonl")).unwrap();
    assert_eq!(wal.last(), Some(&b'\n'), "the failed writes were cut off the log");
    runtime.block_on(async {
        // No write was in flight (`u64::MAX` is none): every failed write must be absent.
        check(dir.path(), &mut model, u64::MAX, "after the disk filled").await;
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let revision = store.put("after", b"room again".to_vec(), None).await.unwrap();
        assert_eq!(revision, model.revision + 1);
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.range("").await.unwrap().revision, revision);
    });
}

/// Opens the store and checks it against the model: every acknowledged write is
/// there (value and revision), or overwritten by the write that was in flight; no
/// other key or value is. A landed in-flight write joins the model.
async fn check(dir: &Path, model: &mut Model, in_flight: u64, round: &str) {
    let store = EmbeddedStore::open(dir).unwrap_or_else(|e| panic!("{round}: reopen failed: {e:?}"));
    let listed = store.range("").await.unwrap();
    let mut landed = None;
    for kv in &listed.kvs {
        let value = String::from_utf8(kv.value.clone()).unwrap();
        let i: u64 = value
            .strip_prefix('v')
            .and_then(|rest| rest.split('-').next())
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("{round}: {} holds invented value {value:?}", kv.key));
        assert_eq!(value, value_for(i), "{round}: {} holds invented value", kv.key);
        assert_eq!(kv.key, key_for(i), "{round}: value {value} under the wrong key");
        match model.keys.get(&kv.key) {
            Some(ack) if ack.i == i => {
                assert_eq!(kv.mod_revision, ack.revision, "{round}: {} revision", kv.key);
            }
            _ if i == in_flight && landed.is_none() => {
                assert_eq!(kv.mod_revision, model.revision + 1, "{round}: in-flight write");
                landed = Some((
                    kv.key.clone(),
                    Ack {
                        i,
                        revision: kv.mod_revision,
                    },
                ));
            }
            expected => panic!("{round}: {} holds write {i}, expected {expected:?}", kv.key),
        }
    }
    if let Some((key, ack)) = landed {
        model.keys.insert(key, ack);
        model.revision = ack.revision;
    }
    for (key, ack) in &model.keys {
        assert!(
            listed.kvs.iter().any(|kv| &kv.key == key),
            "{round}: acknowledged write {} to {key} is lost",
            ack.i
        );
    }
    assert_eq!(listed.revision, model.revision, "{round}: store revision");
}

fn spawn(command: &mut Command) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {command:?}: {e}"))
}

/// One complete line, or `None` at the end; a line cut off by the kill (no newline)
/// was never fully printed, so it does not count.
fn read_line(stdout: &mut BufReader<ChildStdout>) -> Option<String> {
    let mut line = String::new();
    match stdout.read_line(&mut line).unwrap() {
        0 => None,
        _ if line.ends_with('\n') => Some(line.trim_end().to_owned()),
        _ => None,
    }
}

fn parse_ack(line: &str, expected_i: u64) -> Ack {
    let words: Vec<&str> = line.split(' ').collect();
    let [word, i, key, value, revision] = words.as_slice() else {
        panic!("not an acknowledgement: {line:?}");
    };
    let i: u64 = i.parse().unwrap();
    assert_eq!((*word, i), ("ack", expected_i), "{line}");
    assert_eq!((*key, *value), (key_for(i).as_str(), value_for(i).as_str()), "{line}");
    Ack {
        i,
        revision: revision.parse().unwrap(),
    }
}

/// Waits for the child; its exit status and whatever it said on stderr.
fn finish(mut child: Child) -> String {
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    format!("{status}; stderr: {stderr}")
}
