//! `drain`, `undrain`, `set-capacity`, `changes`, `change …`, `freeze`,
//! `restore-plan` and `resume-steering`: the operator's mutations and their records. Any replica takes them and forwards them to the leader.

use meridian_proto::v1 as pb;

use crate::cli::{validate_steps, DEFAULT_BAKE, DEFAULT_STEPS};
use crate::client::Connected;
use crate::error::CtlError;
use crate::output::{json_line, render, text, Format, Report};
use crate::views::{ChangeView, PlanView, ResumeView};

/// What `drain` sends: the ladder (empty for `--now`) and each rung's bake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DrainPlan {
    pub steps: Vec<u8>,
    pub bake: std::time::Duration,
}

impl DrainPlan {
    /// The ladder `drain` walks: `--now` is one step at once; no `--steps` is the
    /// default 100 → 50 → 0 %; `--steps` must go strictly down to 0 (checked here,
    /// before anything is sent). The bake defaults to 60 s.
    pub fn new(now: bool, steps: &[u8], bake: Option<std::time::Duration>) -> Result<Self, CtlError> {
        if now {
            return Ok(DrainPlan {
                steps: Vec::new(),
                bake: std::time::Duration::ZERO,
            });
        }
        let steps = if steps.is_empty() {
            DEFAULT_STEPS.to_vec()
        } else {
            validate_steps(steps).map_err(CtlError::Invalid)?;
            steps.to_vec()
        };
        Ok(DrainPlan {
            steps,
            bake: bake.unwrap_or(DEFAULT_BAKE),
        })
    }
}

/// `drain`'s arguments beyond the PoP and reason.
#[derive(Debug, Clone)]
pub(super) struct DrainArgs<'a> {
    pub pop: &'a str,
    pub reason: &'a str,
    pub force: bool,
    pub regions: &'a [String],
    pub plan: DrainPlan,
    pub wait: bool,
}

pub(super) async fn drain(conn: &Connected, format: Format, args: DrainArgs<'_>) -> Result<Report, CtlError> {
    let req = pb::DrainRequest {
        pop: args.pop.to_string(),
        reason: args.reason.to_string(),
        force: args.force,
        regions: args.regions.to_vec(),
        steps: args.plan.steps.iter().map(|s| u32::from(*s)).collect(),
        bake_ms: u64::try_from(args.plan.bake.as_millis()).unwrap_or(u64::MAX),
    };
    let change = conn
        .operator()
        .drain(req)
        .await
        .map_err(|s| conn.rpc_error("Drain", s))?
        .into_inner()
        .change
        .unwrap_or_default();
    if args.wait {
        return super::watch::follow(conn, format, &change.id).await;
    }
    let view = ChangeView::from(change);
    Ok(Report::success(render(format, &view, text::change)?))
}

pub(super) async fn set_capacity(
    conn: &Connected,
    format: Format,
    pop: &str,
    capacity: f64,
    duration: Option<std::time::Duration>,
    reason: &str,
    override_freeze: bool,
) -> Result<Report, CtlError> {
    let req = pb::SetCapacityRequest {
        pop: pop.to_string(),
        capacity,
        reason: reason.to_string(),
        duration_ms: duration.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        override_freeze,
    };
    let change = conn
        .operator()
        .set_capacity(req)
        .await
        .map_err(|s| conn.rpc_error("SetCapacity", s))?
        .into_inner()
        .change
        .unwrap_or_default();
    let view = ChangeView::from(change);
    Ok(Report::success(render(format, &view, text::change)?))
}

pub(super) async fn changes(
    conn: &Connected,
    format: Format,
    limit: u32,
    active_only: bool,
) -> Result<Report, CtlError> {
    let list = conn
        .query()
        .list_changes(pb::ListChangesRequest { limit, active_only })
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
        C::Show { id, watch: true } => return super::watch::follow(conn, format, id).await,
        C::Show { id, watch: false } => return super::watch::show(conn, format, id).await,
        C::Pause { id, reason }
        | C::Resume { id, reason }
        | C::Rollback { id, reason }
        | C::Revert { id, reason }
        | C::Approve { id, reason } => (id, reason),
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
        C::Revert { .. } => ("RevertChange", op.revert_change(req).await),
        C::Approve { .. } => ("ApproveChange", op.approve_change(req).await),
        C::Show { .. } => unreachable!("answered above"),
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
    pops: &[String],
    regions: &[String],
) -> Result<Report, CtlError> {
    let req = pb::FreezeRequest {
        reason: reason.to_string(),
        duration: Some(meridian_proto::prost_types::Duration {
            seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
            nanos: duration.subsec_nanos() as i32,
        }),
        pops: pops.to_vec(),
        regions: regions.to_vec(),
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

pub(super) async fn unfreeze(
    conn: &Connected,
    format: Format,
    reason: &str,
    pops: &[String],
    regions: &[String],
) -> Result<Report, CtlError> {
    let resp = conn
        .operator()
        .unfreeze(pb::UnfreezeRequest {
            reason: reason.to_string(),
            pops: pops.to_vec(),
            regions: regions.to_vec(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_drain_defaults_to_the_ladder_and_now_is_one_step() {
        assert_eq!(
            DrainPlan::new(false, &[], None).unwrap(),
            DrainPlan {
                steps: vec![50, 0],
                bake: Duration::from_secs(60)
            },
            "100 → 50 → 0 %, 60 s per rung"
        );
        assert_eq!(
            DrainPlan::new(false, &[75, 25, 0], Some(Duration::from_secs(120))).unwrap(),
            DrainPlan {
                steps: vec![75, 25, 0],
                bake: Duration::from_secs(120)
            }
        );
        assert_eq!(
            DrainPlan::new(true, &[], None).unwrap(),
            DrainPlan {
                steps: Vec::new(),
                bake: Duration::ZERO
            },
            "--now sends no steps: drained at once"
        );
    }

    #[test]
    fn a_malformed_ladder_is_refused_before_anything_is_sent() {
        match DrainPlan::new(false, &[50, 75, 0], None) {
            Err(CtlError::Invalid(m)) => assert!(m.contains("must go strictly down: 75 after 50"), "{m}"),
            other => panic!("{other:?}"),
        }
        match DrainPlan::new(false, &[50], None) {
            Err(CtlError::Invalid(m)) => assert!(m.contains("must end at 0"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
