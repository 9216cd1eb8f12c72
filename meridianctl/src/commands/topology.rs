//! `apply`: send a topology file; the replica validates it (every error with its
//! path) and stores it only when the whole file is valid.

use std::path::Path;

use meridian_proto::v1 as pb;

use crate::cli::Cli;

use crate::error::CtlError;
use crate::output::{render, text, Exit, Format, Report};
use crate::views::ApplyView;

pub(super) async fn apply(
    cli: &Cli,
    format: Format,
    file: &Path,
    dry_run: bool,
    reason: &str,
) -> Result<Report, CtlError> {
    // Read first: a missing file is reported without touching the network.
    let topology_toml = std::fs::read_to_string(file).map_err(|source| CtlError::ReadFile {
        path: file.to_path_buf(),
        source,
    })?;
    let conn = super::connect(cli).await?;
    let req = pb::ApplyTopologyRequest {
        topology_toml,
        dry_run,
        reason: reason.to_string(),
        override_freeze: cli.override_freeze,
    };
    let resp = conn
        .operator()
        .apply_topology(req)
        .await
        .map_err(|s| conn.rpc_error("ApplyTopology", s))?
        .into_inner();
    let view = ApplyView::new(file.display().to_string(), dry_run, resp);
    Ok(Report {
        text: render(format, &view, text::apply)?,
        exit: if view.errors.is_empty() {
            Exit::Success
        } else {
            Exit::Refused
        },
    })
}
