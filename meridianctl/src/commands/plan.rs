//! `plan`, `what-if` and `agents`: the steering plan in force, the plan a drain or
//! failure would produce, and which plan each agent applied.

use meridian_proto::v1 as pb;

use crate::client::Connected;
use crate::error::CtlError;
use crate::output::{render, text, Format, Report};
use crate::views::{AgentView, PlanView, WhatIfView};

pub(super) async fn plan(
    conn: &Connected,
    format: Format,
    region: Option<&str>,
    version: Option<u64>,
) -> Result<Report, CtlError> {
    let req = pb::GetPlanRequest {
        region: region.unwrap_or_default().to_string(),
        version: version.unwrap_or(0),
    };
    let resp = conn
        .query()
        .get_plan(req)
        .await
        .map_err(|s| conn.rpc_error("GetPlan", s))?
        .into_inner();
    let plan = resp.plan.ok_or_else(|| CtlError::Incomplete {
        rpc: "GetPlan",
        endpoint: conn.endpoint.clone(),
        what: "plan",
    })?;
    let view = PlanView::from(plan);
    let mut out = render(format, &view, text::plan)?;
    // For people: what each Anycast agent's speaker actually announces, beside
    // what the plan asks (JSON readers have `meridianctl agents -o json`).
    if format == Format::Table && !view.anycast.is_empty() {
        if let Ok(resp) = conn.query().list_agents(pb::ListAgentsRequest {}).await {
            let agents: Vec<AgentView> = resp.into_inner().agents.into_iter().map(AgentView::from).collect();
            out.push_str(&text::anycast_reports(&agents));
        }
    }
    Ok(Report::success(out))
}

pub(super) async fn what_if(conn: &Connected, format: Format, scenario: &str, pop: &str) -> Result<Report, CtlError> {
    // clap only lets `drain` and `down` through.
    let scenario = match scenario {
        "drain" => pb::what_if_request::Scenario::DrainPop(pop.to_string()),
        _ => pb::what_if_request::Scenario::DownPop(pop.to_string()),
    };
    let resp = conn
        .query()
        .what_if(pb::WhatIfRequest {
            scenario: Some(scenario),
        })
        .await
        .map_err(|s| conn.rpc_error("WhatIf", s))?
        .into_inner();
    let view = WhatIfView::from(resp);
    Ok(Report::success(render(format, &view, text::what_if)?))
}

pub(super) async fn agents(conn: &Connected, format: Format) -> Result<Report, CtlError> {
    let resp = conn
        .query()
        .list_agents(pb::ListAgentsRequest {})
        .await
        .map_err(|s| conn.rpc_error("ListAgents", s))?
        .into_inner();
    let view: Vec<AgentView> = resp.agents.into_iter().map(AgentView::from).collect();
    Ok(Report::success(render(format, &view, |v| text::agents(v))?))
}
