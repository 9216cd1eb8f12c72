//! A child process for the embedded store's crash tests
//! (`control-plane/store/tests/embedded_crash.rs`): it opens a store and writes keys
//! in a tight loop, printing each write only after the store acknowledged it, so the
//! test, which kills it with SIGKILL at a random moment, knows exactly which writes
//! must have survived.
//!
//! Write `i` puts key `k/<i mod keys>` with a value derived from `i` alone (see
//! [`value_for`]; the test has the same function), so a value that was never written
//! cannot go unnoticed. Output, one line per event on stdout, flushed at once:
//!
//! * `ack <i> <key> <value> <revision>`: the put returned `Ok` at that revision;
//! * `failed <i> <error>` (fill mode): the put returned an error;
//! * `health <healthy> <detail>`, `done` (fill mode).
//!
//! Usage: `embedded-store-writer write <dir> <first i> <keys> <compact every>`: writes
//! until killed, compacting (which folds the log into a snapshot) every so many
//! writes. `embedded-store-writer fill <dir> <first i> <keys>`: writes until a write
//! fails (the test runs it under a file size limit, a real disk that fills up), then
//! checks that reads still answer from the last acknowledged write and that more
//! writes fail cleanly, and exits.
//!
//! Built only with the `conformance` feature (test support), never into production.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use meridian_store::embedded::EmbeddedStore;
use meridian_store::Store;

/// The value write `i` puts: the test recomputes it, so both must agree.
fn value_for(i: u64) -> String {
    format!("v{i}-{:08x}", (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["write", dir, first, keys, compact_every] => {
            write(dir.into(), parse(first), parse(keys), parse(compact_every)).await
        }
        ["fill", dir, first, keys] => fill(dir.into(), parse(first), parse(keys)).await,
        _ => Err(format!(
            "usage: embedded-store-writer write <dir> <first> <keys> <compact every> | fill <dir> <first> <keys>; got {args:?}"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embedded-store-writer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(number: &str) -> u64 {
    number.parse().unwrap_or_else(|e| {
        eprintln!("embedded-store-writer: {number:?} is not a number: {e}");
        std::process::exit(2)
    })
}

fn key_for(i: u64, keys: u64) -> String {
    format!("k/{:04}", i % keys.max(1))
}

/// Prints one line and flushes it, so that what the test reads is exactly what was
/// acknowledged when the kill came.
fn say(line: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

async fn write(dir: PathBuf, first: u64, keys: u64, compact_every: u64) -> Result<(), String> {
    let store = EmbeddedStore::open(&dir).map_err(|e| error_chain(&e))?;
    for i in first.. {
        let (key, value) = (key_for(i, keys), value_for(i));
        let revision = store
            .put(&key, value.clone().into_bytes(), None)
            .await
            .map_err(|e| format!("write {i}: {}", error_chain(&e)))?;
        say(&format!("ack {i} {key} {value} {revision}"))?;
        if compact_every > 0 && (i - first + 1).is_multiple_of(compact_every) {
            store
                .compact(revision)
                .await
                .map_err(|e| format!("compact at {revision}: {}", error_chain(&e)))?;
        }
    }
    Ok(())
}

async fn fill(dir: PathBuf, first: u64, keys: u64) -> Result<(), String> {
    const MAX_WRITES: u64 = 100_000;
    let store = EmbeddedStore::open(&dir).map_err(|e| error_chain(&e))?;
    let mut last_ack = None;
    let mut i = first;
    loop {
        if i - first >= MAX_WRITES {
            return Err(format!(
                "{MAX_WRITES} writes and none failed: is the file size limit set?"
            ));
        }
        let (key, value) = (key_for(i, keys), value_for(i));
        match store.put(&key, value.clone().into_bytes(), None).await {
            Ok(revision) => {
                say(&format!("ack {i} {key} {value} {revision}"))?;
                last_ack = Some((key, value, revision));
            }
            Err(e) => {
                say(&format!("failed {i} {}", error_chain(&e)))?;
                break;
            }
        }
        i += 1;
    }
    let (key, value, revision) = last_ack.ok_or("the very first write failed")?;
    // Reads answer from the last acknowledged write; more writes fail, and change
    // nothing.
    for _ in 0..3 {
        i += 1;
        match store.put(&key_for(i, keys), value_for(i).into_bytes(), None).await {
            Ok(revision) => return Err(format!("write {i} succeeded at {revision} on a full disk")),
            Err(e) => say(&format!("failed {i} {}", error_chain(&e)))?,
        }
        let read = store
            .get(&key)
            .await
            .map_err(|e| format!("read {key}: {}", error_chain(&e)))?;
        if read.as_ref().map(|kv| kv.value.as_slice()) != Some(value.as_bytes()) {
            return Err(format!("read {key} after a failed write: {read:?}, expected {value}"));
        }
        let listed = store.range("").await.map_err(|e| error_chain(&e))?;
        if listed.revision != revision {
            return Err(format!(
                "revision {} after failed writes, expected {revision}",
                listed.revision
            ));
        }
    }
    let health = store.health().await;
    say(&format!("health {} {}", health.healthy, health.detail))?;
    say("done")
}
