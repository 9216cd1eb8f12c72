//! `drain`, `undrain`, `restore-plan` and `resume-steering`: the operator's
//! mutations. Any replica takes them and forwards them to the leader.

use meridian_proto::v1 as pb;

use crate::client::Connected;
use crate::error::CtlError;
use crate::output::{json_line, render, text, Format, Report};
use crate::views::{ChangeView, PlanView, ResumeView};

pub(super) async fn drain(
    conn: &Connected,
    format: Format,
    pop: &str,
    reason: &str,
    force: bool,
    steps: &[u8],
    bake: std::time::Duration,
) -> Result<Report, CtlError> {
    let req = pb::DrainRequest {
        pop: pop.to_string(),
        reason: reason.to_string(),
        force,
        regions: Vec::new(),
        steps: steps.iter().map(|s| u32::from(*s)).collect(),
        bake_ms: u64::try_from(bake.as_millis()).unwrap_or(u64::MAX),
    };
    let change = conn
        .operator()
        .drain(req)
        .await
        .map_err(|s| conn.rpc_error("Drain", s))?
        .into_inner()
        .change
        .unwrap_or_default();
    let view = ChangeView::from(change);
    Ok(Report::success(render(format, &view, text::change)?))
}

pub(super) async fn changes(conn: &Connected, format: Format, limit: u32) -> Result<Report, CtlError> {
    let list = conn
        .query()
        .list_changes(pb::ListChangesRequest {
            limit,
            active_only: false,
        })
        .await
        .map_err(|s| conn.rpc_error("ListChanges", s))?
        .into_inner()
        .changes;
    let views: Vec<ChangeView> = list.into_iter().map(ChangeView::from).collect();
    Ok(Report::success(render(format, &views, |v| text::changes(v))?))
}

pub(super) async fn change(
    conn: &Connected,
    format: Format,
    cmd: &crate::cli::ChangeCommand,
) -> Result<Report, CtlError> {
    use crate::cli::ChangeCommand as C;
    let (id, reason) = match cmd {
        C::Pause { id, reason } | C::Resume { id, reason } | C::Rollback { id, reason } => (id, reason),
    };
    let req = pb::ChangeIdRequest {
        change_id: id.clone(),
        reason: reason.clone(),
    };
    let mut op = conn.operator();
    let (rpc, result) = match cmd {
        C::Pause { .. } => ("PauseChange", op.pause_change(req).await),
        C::Resume { .. } => ("ResumeChange", op.resume_change(req).await),
        C::Rollback { .. } => ("RollbackChange", op.rollback_change(req).await),
    };
    let change = result
        .map_err(|s| conn.rpc_error(rpc, s))?
        .into_inner()
        .change
        .unwrap_or_default();
    let view = ChangeView::from(change);
    Ok(Report::success(render(format, &view, text::change)?))
}

pub(super) async fn freeze(
    conn: &Connected,
    format: Format,
    duration: std::time::Duration,
    reason: &str,
) -> Result<Report, CtlError> {
    let req = pb::FreezeRequest {
        reason: reason.to_string(),
        duration: Some(meridian_proto::prost_types::Duration {
            seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
            nanos: duration.subsec_nanos() as i32,
        }),
    };
    let resp = conn
        .operator()
        .freeze(req)
        .await
        .map_err(|s| conn.rpc_error("Freeze", s))?
        .into_inner();
    let view = crate::views::FreezeView::from(resp);
    Ok(Report::success(render(format, &view, text::freeze)?))
}

pub(super) async fn unfreeze(conn: &Connected, format: Format, reason: &str) -> Result<Report, CtlError> {
    let resp = conn
        .operator()
        .unfreeze(pb::UnfreezeRequest {
            reason: reason.to_string(),
        })
        .await
        .map_err(|s| conn.rpc_error("Unfreeze", s))?
        .into_inner();
    let view = crate::views::FreezeView::from(resp);
    Ok(Report::success(render(format, &view, text::freeze)?))
}

pub(super) async fn undrain(
    conn: &Connected,
    format: Format,
    pop: &str,
    reason: &str,
    override_freeze: bool,
) -> Result<Report, CtlError> {
    let req = pb::UndrainRequest {
        pop: pop.to_string(),
        reason: reason.to_string(),
        override_freeze,
    };
    let change = conn
        .operator()
        .undrain(req)
        .await
        .map_err(|s| conn.rpc_error("Undrain", s))?
        .into_inner()
        .change
        .unwrap_or_default();
    let view = ChangeView::from(change);
    Ok(Report::success(render(format, &view, text::change)?))
}

pub(super) async fn restore_plan(
    conn: &Connected,
    format: Format,
    version: u64,
    reason: &str,
    override_freeze: bool,
) -> Result<Report, CtlError> {
    let req = pb::RestorePlanRequest {
        version,
        reason: reason.to_string(),
        override_freeze,
    };
    let plan = conn
        .operator()
        .restore_plan(req)
        .await
        .map_err(|s| conn.rpc_error("RestorePlan", s))?
        .into_inner()
        .plan
        .unwrap_or_default();
    let view = PlanView::from(plan);
    Ok(Report::success(render(format, &view, |p| text::restored(version, p))?))
}

pub(super) async fn resume_steering(conn: &Connected, format: Format, reason: &str) -> Result<Report, CtlError> {
    let resp = conn
        .operator()
        .resume_steering(pb::ResumeSteeringRequest {
            reason: reason.to_string(),
        })
        .await
        .map_err(|s| conn.rpc_error("ResumeSteering", s))?
        .into_inner();
    let view = ResumeView {
        was_pinned: resp.was_pinned,
    };
    // One line, as this command has always printed it.
    let text = match format {
        Format::Json => json_line(&view)?,
        Format::Table => text::resumed(&view),
    };
    Ok(Report::success(text))
}
