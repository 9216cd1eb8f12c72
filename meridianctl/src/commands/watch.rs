//! `change show ID [--watch]` and `drain --wait`: one change in detail, once or
//! polled about every 500 ms until it ends or pauses.
//!
//! Decision: a watch is the one command that writes while it runs (a frame per
//! poll, through [`crate::output::emit`]'s rules: a reader that went away ends the
//! watch quietly with status 0); its [`Report`] carries only the exit status.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use meridian_proto::v1 as pb;

use crate::client::Connected;
use crate::error::CtlError;
use crate::output::watch::Watcher;
use crate::output::{render, text, Format, Report};
use crate::views::{AgentsAckView, ChangeDetailView};

/// How often a watch polls.
const POLL: Duration = Duration::from_millis(500);

/// `change show ID`: the change once, in detail.
pub(super) async fn show(conn: &Connected, format: Format, id: &str) -> Result<Report, CtlError> {
    let view = fetch(conn, id).await?;
    Ok(Report::success(render(format, &view, |v| {
        text::change_detail(v, now_ms())
    })?))
}

/// `change show ID --watch` and `drain --wait`: polls the change and prints each
/// frame until it ends or pauses; the report's exit says how it ended.
pub(super) async fn follow(conn: &Connected, format: Format, id: &str) -> Result<Report, CtlError> {
    let stdout = std::io::stdout();
    let mut watcher = Watcher::new(format, stdout.is_terminal());
    loop {
        let view = fetch(conn, id).await?;
        let frame = watcher.observe(&view, now_ms())?;
        if !frame.text.is_empty() && !write(&mut stdout.lock(), &frame.text)? {
            // The reader went away: nobody is watching any more.
            return Ok(Report::success(String::new()));
        }
        if let Some(exit) = frame.end {
            return Ok(Report {
                text: String::new(),
                exit,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Writes and flushes `text`; `Ok(false)` when the reader has gone away.
fn write(out: &mut impl Write, text: &str) -> Result<bool, CtlError> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(CtlError::Write(e)),
    }
}

/// The change `id` with the agents against the current plan. A change that cannot
/// be read is an error; agents that cannot be read are shown as unknown.
async fn fetch(conn: &Connected, id: &str) -> Result<ChangeDetailView, CtlError> {
    let record = conn
        .query()
        .get_change(pb::GetChangeRequest {
            change_id: id.to_string(),
        })
        .await
        .map_err(|s| conn.rpc_error("GetChange", s))?
        .into_inner()
        .change
        .ok_or_else(|| CtlError::Incomplete {
            rpc: "GetChange",
            endpoint: conn.endpoint.clone(),
            what: "change record",
        })?;
    Ok(ChangeDetailView::new(record, agents(conn).await))
}

/// The connected agents against the current plan (the plan first, so an agent
/// that applied a newer one meanwhile still counts as having it).
async fn agents(conn: &Connected) -> Result<AgentsAckView, String> {
    let version = match conn
        .query()
        .get_plan(pb::GetPlanRequest {
            region: String::new(),
            version: 0,
        })
        .await
    {
        Ok(r) => r.into_inner().plan.map_or(0, |p| p.version),
        Err(s) if s.code() == tonic::Code::NotFound => 0,
        Err(s) => return Err(conn.rpc_error("GetPlan", s).to_string()),
    };
    let agents = conn
        .query()
        .list_agents(pb::ListAgentsRequest {})
        .await
        .map_err(|s| conn.rpc_error("ListAgents", s).to_string())?
        .into_inner()
        .agents;
    Ok(AgentsAckView::new(version, &agents))
}

/// The local clock in Unix milliseconds (0 before the epoch).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
