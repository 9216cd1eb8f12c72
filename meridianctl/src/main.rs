//! The `meridianctl` binary: parse the command line, run it on a single-threaded
//! runtime, write the report to stdout and exit with the code the report decided.
//!
//! Decision: everything else lives in the library (see `lib.rs`), so this file only
//! wires the process to it; errors go to stderr with their whole source chain.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use meridianctl::{output, Cli, CtlError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            complain(&format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let report = match runtime.block_on(meridianctl::run(&cli)) {
        Ok(report) => report,
        Err(e) => {
            complain(&format!("error: {}", error_chain(&e)));
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = output::emit(std::io::stdout().lock(), &report.text) {
        complain(&format!("error: cannot write to stdout: {e}"));
        return ExitCode::FAILURE;
    }
    report.exit.code()
}

/// The error and its sources, joined with `: ` (the sources are not repeated in
/// `Display`, so this is where the whole chain is shown, once).
fn error_chain(e: &CtlError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Writes one line to stderr. A closed stderr is ignored: there is nowhere left to
/// report it, and panicking (as `eprintln!` does) would only change the exit status.
fn complain(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "meridianctl: {message}");
}
