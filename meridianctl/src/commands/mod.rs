//! One module per command group. Each command connects, calls one RPC, converts the
//! answer into its view and renders it; none of them writes to stdout.

use crate::cli::{Cli, Command};
use crate::client::{self, Connected};
use crate::error::CtlError;
use crate::output::Report;

mod health;
mod operate;
mod plan;
mod status;
mod topology;

/// Runs `cli.command` and returns its rendered output and exit rule.
pub async fn run(cli: &Cli) -> Result<Report, CtlError> {
    let format = cli.output;
    match &cli.command {
        Command::Status => status::status(&connect(cli).await?, format).await,
        Command::Health => health::health(&connect(cli).await?, format).await,
        Command::Explain { pop } => health::explain(&connect(cli).await?, format, pop).await,
        Command::Events { pop, limit, since } => {
            health::events(&connect(cli).await?, format, pop.as_deref(), *limit, *since).await
        }
        Command::Plan { region, version } => {
            plan::plan(&connect(cli).await?, format, region.as_deref(), *version).await
        }
        Command::WhatIf { scenario, pop } => plan::what_if(&connect(cli).await?, format, scenario, pop).await,
        Command::Agents => plan::agents(&connect(cli).await?, format).await,
        Command::Drain { pop, reason, force } => {
            operate::drain(&connect(cli).await?, format, pop, reason, *force).await
        }
        Command::Undrain { pop, reason } => operate::undrain(&connect(cli).await?, format, pop, reason).await,
        Command::RestorePlan { version, reason } => {
            operate::restore_plan(&connect(cli).await?, format, *version, reason).await
        }
        Command::ResumeSteering { reason } => operate::resume_steering(&connect(cli).await?, format, reason).await,
        Command::Apply { file, dry_run, reason } => topology::apply(cli, format, file, *dry_run, reason).await,
    }
}

/// Connects to the first replica that answers, identified as `--as` (default
/// `$USER@hostname`).
async fn connect(cli: &Cli) -> Result<Connected, CtlError> {
    let identity = cli.identity.clone().unwrap_or_else(client::default_identity);
    let connected = client::connect(&cli.endpoint, cli.timeout)
        .await?
        .with_identity(&identity)?;
    let token = match (&cli.token, &cli.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|source| CtlError::ReadFile {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    match token {
        Some(t) => connected.with_token(&t),
        None => Ok(connected),
    }
}
