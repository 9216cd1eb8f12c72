//! `health`, `explain` and `events`: what the probers see and why a PoP has its
//! verdict.

use meridian_proto::v1 as pb;

use crate::client::Connected;
use crate::error::CtlError;
use crate::output::{render, text, Format, Report};
use crate::views::{EventView, ExplainView, HealthView};

pub(super) async fn health(conn: &Connected, format: Format) -> Result<Report, CtlError> {
    let resp = conn
        .query()
        .get_health(pb::GetHealthRequest {})
        .await
        .map_err(|s| conn.rpc_error("GetHealth", s))?
        .into_inner();
    let view = HealthView::from(resp);
    Ok(Report::success(render(format, &view, text::health)?))
}

pub(super) async fn explain(conn: &Connected, format: Format, pop: &str) -> Result<Report, CtlError> {
    let resp = conn
        .query()
        .explain_pop(pb::ExplainPopRequest { pop: pop.to_string() })
        .await
        .map_err(|s| conn.rpc_error("ExplainPop", s))?
        .into_inner();
    let view = ExplainView::from(resp);
    Ok(Report::success(render(format, &view, text::explain)?))
}

pub(super) async fn events(
    conn: &Connected,
    format: Format,
    pop: Option<&str>,
    limit: u32,
    since: Option<std::time::Duration>,
) -> Result<Report, CtlError> {
    let resp = conn
        .query()
        .list_events(pb::ListEventsRequest {
            limit,
            pop: pop.unwrap_or_default().to_string(),
            since: since.map(|d| meridian_proto::prost_types::Duration {
                seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos() as i32,
            }),
        })
        .await
        .map_err(|s| conn.rpc_error("ListEvents", s))?
        .into_inner();
    let view: Vec<EventView> = resp.events.into_iter().map(EventView::from).collect();
    Ok(Report::success(render(format, &view, |v| text::events(v))?))
}
