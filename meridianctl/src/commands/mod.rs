//! One module per command group. Each command connects, calls one RPC, converts the
//! answer into its view and renders it; none of them writes to stdout, except a
//! watch (`change show --watch`, `drain --wait`), which prints a frame per poll.

use crate::cli::{Cli, Command};
use crate::client::{self, Connected};
use crate::error::CtlError;
use crate::output::Report;

mod certs;
mod health;
mod operate;
mod plan;
mod status;
mod topology;
mod watch;

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
        Command::Drain {
            pop,
            reason,
            force,
            steps,
            bake,
            regions,
            now,
            wait,
        } => {
            // Checked before connecting: a malformed ladder never reaches the server.
            let plan = operate::DrainPlan::new(*now, steps, *bake)?;
            let args = operate::DrainArgs {
                pop,
                reason,
                force: *force,
                regions,
                plan,
                wait: *wait,
            };
            operate::drain(&connect(cli).await?, format, args).await
        }
        Command::Changes { limit, active } => operate::changes(&connect(cli).await?, format, *limit, *active).await,
        Command::Change(cmd) => operate::change(&connect(cli).await?, format, cmd).await,
        Command::SetCapacity {
            pop,
            capacity,
            duration,
            reason,
        } => {
            operate::set_capacity(
                &connect(cli).await?,
                format,
                pop,
                *capacity,
                *duration,
                reason,
                cli.override_freeze,
            )
            .await
        }
        Command::Undrain { pop, reason } => {
            operate::undrain(&connect(cli).await?, format, pop, reason, cli.override_freeze).await
        }
        Command::Freeze {
            duration,
            reason,
            pops,
            regions,
        } => operate::freeze(&connect(cli).await?, format, *duration, reason, pops, regions).await,
        Command::Unfreeze { reason, pops, regions } => {
            operate::unfreeze(&connect(cli).await?, format, reason, pops, regions).await
        }
        Command::RestorePlan { version, reason } => {
            operate::restore_plan(&connect(cli).await?, format, *version, reason, cli.override_freeze).await
        }
        Command::ResumeSteering { reason } => operate::resume_steering(&connect(cli).await?, format, reason).await,
        Command::Apply { file, dry_run, reason } => topology::apply(cli, format, file, *dry_run, reason).await,
        Command::Certs(cmd) => certs::run(cmd, format),
    }
}

/// Connects to the first replica that answers, identified as `--as` (default
/// `$USER@hostname`), with the credentials from the flags, the environment or the
/// context file (in that order).
async fn connect(cli: &Cli) -> Result<Connected, CtlError> {
    let ctx = crate::context::Context::resolve(cli)?;
    let identity = cli.identity.clone().unwrap_or_else(client::default_identity);
    let tls = meridian_tls::ClientTls {
        ca: ctx.ca.clone(),
        cert: ctx.cert.clone(),
        key: ctx.key.clone(),
        server_name: None,
    }
    .load()
    .map_err(|e| {
        CtlError::Tls(format!(
            "{e} (from --ca/--cert/--key, MERIDIAN_CA/CERT/KEY or the context file)"
        ))
    })?;
    let token_file = cli.token_file.clone().or(ctx.token_file.clone());
    let token = match (&cli.token, &token_file) {
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
    if token.is_some() {
        if let Some(ep) = ctx
            .endpoints
            .iter()
            .find(|ep| !meridian_tls::is_https(ep) && !meridian_tls::is_loopback_url(ep))
        {
            return Err(CtlError::Tls(format!(
                "refusing to send a bearer token in plaintext to {ep}: use an https:// endpoint with --ca (or a client certificate instead of the token)"
            )));
        }
    }
    let connected = client::connect(&ctx.endpoints, cli.timeout, tls.as_ref())
        .await?
        .with_identity(&identity)?;
    match token {
        Some(t) => connected.with_token(&t),
        None => Ok(connected),
    }
}
