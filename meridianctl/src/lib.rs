//! `meridianctl`: the operator and SRE command line for Meridian, over gRPC.
//!
//! Every command prints a human table by default and, with `-o json`, a stable JSON
//! document for scripts. The endpoint list is tried in order, so the CLI keeps working
//! when one replica is down.
//!
//! The crate is a library with a thin binary so that everything but the network call
//! is unit-tested with plain values: [`cli`] holds the clap definitions and help texts,
//! [`client`] the endpoint failover, [`commands`] one module per command group (call
//! the RPC, convert, render), [`views`] the serde structs that `-o json` prints, and
//! [`output`] the table renderers, the JSON printer, the exit-code rule and the one
//! function that writes to stdout.
//!
//! Decisions: JSON output is built from explicit view structs rather than by
//! serialising prost types, so the script-facing shape is stable and documented even
//! when the wire types grow. A command renders its whole output into a string before
//! anything is written, and a closed stdout (`meridianctl plan | head -3`) ends the
//! process quietly with status 0, as with other Unix tools, instead of panicking in
//! `println!`.

pub mod cli;
pub mod client;
pub mod commands;
pub mod context;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod output;
pub mod views;

pub use cli::Cli;
pub use error::CtlError;
pub use output::{Exit, Report};

/// Runs one parsed command line against the control plane and returns what to print
/// and how to exit. Nothing is written here; [`output::emit`] does that.
pub async fn run(cli: &Cli) -> Result<Report, CtlError> {
    commands::run(cli).await
}
