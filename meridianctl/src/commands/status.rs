//! `status`: the control plane at a glance, and the only command whose exit status
//! reports the control plane's health (2 when no leader or an unhealthy store).

use meridian_proto::v1 as pb;

use crate::client::Connected;
use crate::error::CtlError;
use crate::output::{render, text, Exit, Format, Report};
use crate::views::StatusView;

pub(super) async fn status(conn: &Connected, format: Format) -> Result<Report, CtlError> {
    let resp = conn
        .query()
        .get_status(pb::GetStatusRequest {})
        .await
        .map_err(|s| conn.rpc_error("GetStatus", s))?
        .into_inner();
    let view = StatusView::new(conn.endpoint.clone(), resp);
    Ok(Report {
        text: render(format, &view, text::status)?,
        exit: if view.healthy() { Exit::Success } else { Exit::Unhealthy },
    })
}
