//! `meridianctl`: the operator and SRE command line for Meridian, over gRPC.
//!
//! Every command prints a human table by default and `-o json` for scripts. The
//! endpoint list is tried in order, so the CLI keeps working when one replica is down.
//!
//! Decision: JSON output is built from explicit view structs (serde) rather than by
//! serialising prost types, so the script-facing shape is stable and documented even
//! when the wire types grow.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use meridian_proto::v1 as pb;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

/// Operate Meridian: see the control plane's state and (in later releases) steer
/// traffic. Talks gRPC to any control-plane replica.
#[derive(Debug, Parser)]
#[command(name = "meridianctl", version)]
struct Cli {
    /// Control-plane gRPC endpoints, comma-separated; tried in order until one answers.
    #[arg(
        long,
        short = 'e',
        env = "MERIDIAN_ENDPOINT",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7400",
        global = true
    )]
    endpoint: Vec<String>,

    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    output: Output,

    /// Per-call timeout, e.g. 5s.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    timeout: Duration,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the control plane: replicas, which one leads, the store backend and its
    /// health, and the current plan version. Exits 2 when no leader is known or the
    /// store is unhealthy, so scripts can alert on it.
    Status,
    /// Show the PoP × region health matrix: each PoP's verdict (UP, DEGRADED, DOWN,
    /// UNKNOWN) and, per prober region, what that region sees, its latency estimate
    /// and how fresh its data is. Suspect regions are marked.
    Health,
    /// Explain one PoP's verdict: the rule that decided it and, per region, prober
    /// and endpoint, the hysteresis state and the recent results with failure classes.
    Explain {
        /// The PoP id.
        pop: String,
    },
    /// Show recent events (verdict changes, suspect regions), oldest first.
    Events {
        /// Only events about this PoP.
        #[arg(long)]
        pop: Option<String>,
        /// How many events.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show the steering plan: per client region the PoPs and weights, each PoP's
    /// state, load and Anycast state, and why the plan was published.
    Plan {
        /// Only this client region.
        #[arg(long)]
        region: Option<String>,
        /// An earlier version (default: the current one).
        #[arg(long)]
        version: Option<u64>,
    },
    /// Drain a PoP: steering moves its traffic to the other PoPs. Refused (naming the
    /// guardrail) when the rest would be pushed over capacity or it is the last PoP of
    /// a region or prefix, unless --force.
    Drain {
        pop: String,
        /// Why (required; recorded with the change).
        #[arg(long)]
        reason: String,
        /// Override a guardrail refusal (the overridden rule is recorded).
        #[arg(long)]
        force: bool,
    },
    /// Put a drained PoP back in service.
    Undrain {
        pop: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Show the plan that would result from a drain or a PoP going down, and which
    /// guardrails would fire, without changing anything.
    WhatIf {
        /// `drain` or `down`.
        #[arg(value_parser = ["drain", "down"])]
        scenario: String,
        pop: String,
    },
    /// Republish an earlier plan version and pin it: steering publishes nothing
    /// until `resume-steering`.
    RestorePlan {
        version: u64,
        #[arg(long)]
        reason: String,
    },
    /// Lift a pin set by `restore-plan`: steering publishes computed plans again.
    ResumeSteering {
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Show the agents connected to any replica and the plan version each applied
    /// (or rejected, with the reason).
    Agents,
    /// Apply a topology file (PoPs, client regions, policy). Every error is listed
    /// with its path and nothing is stored unless the whole file is valid.
    /// `--dry-run` prints the validated diff against what is stored.
    Apply {
        /// The topology TOML file.
        #[arg(long, short = 'f')]
        file: std::path::PathBuf,
        /// Validate and show the diff; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Why (recorded with the change).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meridianctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meridianctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Status => status(&cli).await,
        Command::Health => health(&cli).await,
        Command::Plan { region, version } => plan(&cli, region.as_deref(), *version).await,
        Command::Agents => agents(&cli).await,
        Command::Drain { pop, reason, force } => drain(&cli, pop, reason, *force).await,
        Command::Undrain { pop, reason } => undrain(&cli, pop, reason).await,
        Command::WhatIf { scenario, pop } => what_if(&cli, scenario, pop).await,
        Command::RestorePlan { version, reason } => restore_plan(&cli, *version, reason).await,
        Command::ResumeSteering { reason } => resume_steering(&cli, reason).await,
        Command::Explain { pop } => explain(&cli, pop).await,
        Command::Events { pop, limit } => events(&cli, pop.as_deref(), *limit).await,
        Command::Apply { file, dry_run, reason } => apply(&cli, file, *dry_run, reason).await,
    }
}

/// Connects to the first endpoint that answers.
async fn connect(cli: &Cli) -> anyhow::Result<(String, Channel)> {
    let mut errors = Vec::new();
    for ep in &cli.endpoint {
        let endpoint = match Endpoint::from_shared(ep.clone()) {
            Ok(e) => e.connect_timeout(cli.timeout).timeout(cli.timeout),
            Err(e) => {
                errors.push(format!("{ep}: invalid endpoint URL: {e}"));
                continue;
            }
        };
        match endpoint.connect().await {
            Ok(ch) => return Ok((ep.clone(), ch)),
            Err(e) => errors.push(format!("{ep}: {e}")),
        }
    }
    anyhow::bail!("no control-plane replica reachable:\n  {}", errors.join("\n  "))
}

fn state_name(state: i32) -> &'static str {
    match pb::PopState::try_from(state) {
        Ok(pb::PopState::Up) => "UP",
        Ok(pb::PopState::Down) => "DOWN",
        Ok(pb::PopState::Degraded) => "DEGRADED",
        _ => "UNKNOWN",
    }
}

fn dur(d: &Option<meridian_proto::prost_types::Duration>) -> Option<f64> {
    d.as_ref().map(|d| d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1e6)
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 10.0 => format!("{v:.1}ms"),
        Some(v) if v < 10_000.0 => format!("{v:.0}ms"),
        Some(v) => format!("{:.0}s", v / 1000.0),
        None => "-".into(),
    }
}

#[derive(Debug, Serialize)]
struct HealthView {
    suspect_regions: Vec<String>,
    pops: Vec<PopHealthView>,
}

#[derive(Debug, Serialize)]
struct PopHealthView {
    pop: String,
    state: &'static str,
    rule: String,
    down_regions: Vec<String>,
    regions: Vec<RegionCellView>,
}

#[derive(Debug, Serialize)]
struct RegionCellView {
    region: String,
    state: &'static str,
    latency_ms: Option<f64>,
    age_ms: Option<f64>,
    suspect: bool,
}

async fn health(cli: &Cli) -> anyhow::Result<ExitCode> {
    let (endpoint, channel) = connect(cli).await?;
    let mut client = pb::query_service_client::QueryServiceClient::new(channel);
    let resp = client
        .get_health(pb::GetHealthRequest {})
        .await
        .map_err(|s| rpc_error("GetHealth", &endpoint, s))?
        .into_inner();
    let view = HealthView {
        suspect_regions: resp.suspect_regions,
        pops: resp
            .pops
            .into_iter()
            .map(|p| PopHealthView {
                pop: p.pop,
                state: state_name(p.state),
                rule: p.rule,
                down_regions: p.down_regions,
                regions: p
                    .regions
                    .into_iter()
                    .map(|r| RegionCellView {
                        region: r.region,
                        state: state_name(r.state),
                        latency_ms: dur(&r.latency),
                        age_ms: dur(&r.age),
                        suspect: r.suspect,
                    })
                    .collect(),
            })
            .collect(),
    };
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        Output::Table => {
            let regions: std::collections::BTreeSet<&str> = view
                .pops
                .iter()
                .flat_map(|p| p.regions.iter().map(|r| r.region.as_str()))
                .collect();
            let mut table = Table::new();
            let mut header = vec!["POP".to_string(), "VERDICT".to_string()];
            for r in &regions {
                let suspect = if view.suspect_regions.iter().any(|s| s == r) {
                    " (SUSPECT)"
                } else {
                    ""
                };
                header.push(format!("{r}{suspect}"));
            }
            header.push("RULE".into());
            table.load_preset(UTF8_FULL_CONDENSED).set_header(header);
            for p in &view.pops {
                let mut row = vec![p.pop.clone(), p.state.to_string()];
                for r in &regions {
                    row.push(match p.regions.iter().find(|c| c.region == *r) {
                        Some(c) => format!("{} {} ({} ago)", c.state, ms(c.latency_ms), ms(c.age_ms)),
                        None => "-".into(),
                    });
                }
                row.push(p.rule.clone());
                table.add_row(row);
            }
            if view.pops.is_empty() {
                println!("no PoPs: apply a topology first (meridianctl apply -f topology.toml)");
            } else {
                println!("{table}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn explain(cli: &Cli, pop: &str) -> anyhow::Result<ExitCode> {
    let (endpoint, channel) = connect(cli).await?;
    let mut client = pb::query_service_client::QueryServiceClient::new(channel);
    let resp = client
        .explain_pop(pb::ExplainPopRequest { pop: pop.to_string() })
        .await
        .map_err(|s| rpc_error("ExplainPop", &endpoint, s))?
        .into_inner();
    let regions: Vec<serde_json::Value> = resp
        .regions
        .iter()
        .map(|r| {
            serde_json::json!({
                "region": r.region,
                "state": state_name(r.state),
                "suspect": r.suspect,
                "counted": r.counted,
                "latency_ms": dur(&r.latency),
                "probers": r.probers.iter().map(|p| serde_json::json!({
                    "prober": p.prober,
                    "view": state_name(p.view),
                    "endpoints": p.endpoints.iter().map(|e| serde_json::json!({
                        "endpoint": e.endpoint,
                        "state": state_name(e.state),
                        "fresh": e.fresh,
                        "consecutive_successes": e.consecutive_successes,
                        "consecutive_failures": e.consecutive_failures,
                        "recent": e.recent.iter().map(|x| serde_json::json!({
                            "age_ms": dur(&x.age),
                            "success": x.success,
                            "latency_ms": dur(&x.latency),
                            "failure_class": failure_name(x.failure_class),
                            "applied": x.applied,
                        })).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    match cli.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "pop": resp.pop,
                "state": state_name(resp.state),
                "rule": resp.rule,
                "down_regions": resp.down_regions,
                "regions": regions,
            }))?
        ),
        Output::Table => {
            println!("{}: {} — {}", resp.pop, state_name(resp.state), resp.rule);
            for r in &resp.regions {
                let mut flags = Vec::new();
                if r.suspect {
                    flags.push("suspect: votes discounted");
                }
                if !r.counted {
                    flags.push("not counted");
                }
                let flags = if flags.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", flags.join(", "))
                };
                println!(
                    "  region {}: {}{flags}, latency {}",
                    r.region,
                    state_name(r.state),
                    ms(dur(&r.latency))
                );
                for p in &r.probers {
                    println!("    prober {}: {}", p.prober, state_name(p.view));
                    for e in &p.endpoints {
                        let recent: Vec<String> = e
                            .recent
                            .iter()
                            .take(5)
                            .map(|x| {
                                if x.success {
                                    format!("ok {}", ms(dur(&x.latency)))
                                } else {
                                    failure_name(x.failure_class).to_string()
                                }
                            })
                            .collect();
                        println!(
                            "      {}: {}{} ({} ok / {} failed in a row) recent: {}",
                            e.endpoint,
                            state_name(e.state),
                            if e.fresh { "" } else { " STALE" },
                            e.consecutive_successes,
                            e.consecutive_failures,
                            recent.join(", ")
                        );
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn failure_name(class: i32) -> &'static str {
    match pb::FailureClass::try_from(class) {
        Ok(pb::FailureClass::None) | Ok(pb::FailureClass::Unspecified) => "none",
        Ok(pb::FailureClass::Timeout) => "timeout",
        Ok(pb::FailureClass::Refused) => "refused",
        Ok(pb::FailureClass::Reset) => "reset",
        Ok(pb::FailureClass::Tls) => "tls",
        Ok(pb::FailureClass::HttpStatus) => "http_status",
        Ok(pb::FailureClass::BodyMismatch) => "body_mismatch",
        Ok(pb::FailureClass::DnsRcode) => "dns_rcode",
        Ok(pb::FailureClass::DnsAnswer) => "dns_answer",
        Ok(pb::FailureClass::Other) | Err(_) => "other",
    }
}

async fn events(cli: &Cli, pop: Option<&str>, limit: u32) -> anyhow::Result<ExitCode> {
    let (endpoint, channel) = connect(cli).await?;
    let mut client = pb::query_service_client::QueryServiceClient::new(channel);
    let resp = client
        .list_events(pb::ListEventsRequest {
            limit,
            pop: pop.unwrap_or_default().to_string(),
        })
        .await
        .map_err(|s| rpc_error("ListEvents", &endpoint, s))?
        .into_inner();
    let view: Vec<serde_json::Value> = resp
        .events
        .iter()
        .map(|e| {
            serde_json::json!({
                "id": e.id,
                "at_unix_ms": e.at.as_ref().map(|t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000)),
                "kind": e.kind,
                "pop": e.pop,
                "region": e.region,
                "message": e.message,
                "evidence": e.evidence,
                "replica": e.replica,
                "actor": e.actor,
            })
        })
        .collect();
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        Output::Table => {
            if resp.events.is_empty() {
                println!("no events");
            }
            for e in &resp.events {
                let at = e.at.as_ref().map(|t| t.seconds).unwrap_or(0);
                println!("#{} t={} [{}] {}", e.id, at, e.kind, e.message);
                for line in &e.evidence {
                    println!("    {line}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn plan_json(p: &pb::SteeringPlan) -> serde_json::Value {
    serde_json::json!({
        "version": p.version,
        "created_at_unix_ms": p.created_at.as_ref().map(|t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000)),
        "published_by": p.published_by,
        "topology_revision": p.topology_revision,
        "restored_from": (p.restored_from != 0).then_some(p.restored_from),
        "dns_ttl_seconds": p.dns_ttl_seconds,
        "regions": p.regions.iter().map(|r| serde_json::json!({
            "region": r.region,
            "pops": r.pops.iter().map(|w| serde_json::json!({"pop": w.pop, "weight": w.weight, "ipv4": w.ipv4, "ipv6": w.ipv6})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "pops": p.pops.iter().map(|s| serde_json::json!({
            "pop": s.pop, "state": s.state, "capacity": s.capacity, "load": s.load, "utilisation": s.utilisation,
        })).collect::<Vec<_>>(),
        "anycast": p.anycast.iter().map(|a| serde_json::json!({
            "pop": a.pop,
            "prefix": a.prefix,
            "action": anycast_name(a.action),
            "prepend_count": a.prepend_count,
        })).collect::<Vec<_>>(),
        "reasons": p.reasons,
        "guardrails": p.guardrails,
    })
}

fn anycast_name(action: i32) -> &'static str {
    match pb::AnycastAction::try_from(action) {
        Ok(pb::AnycastAction::Announce) => "announce",
        Ok(pb::AnycastAction::Prepend) => "prepend",
        Ok(pb::AnycastAction::GracefulShutdown) => "graceful_shutdown",
        Ok(pb::AnycastAction::Withdraw) => "withdraw",
        _ => "unspecified",
    }
}

fn print_plan(p: &pb::SteeringPlan) {
    let restored = if p.restored_from != 0 {
        format!(", restored from v{}", p.restored_from)
    } else {
        String::new()
    };
    println!(
        "plan v{} by {} (topology revision {}, DNS TTL {}s{restored})",
        p.version, p.published_by, p.topology_revision, p.dns_ttl_seconds
    );
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["REGION", "POPS (weight)"]);
    for r in &p.regions {
        let pops: Vec<String> = r
            .pops
            .iter()
            .map(|w| format!("{} {:.1}%", w.pop, w.weight * 100.0))
            .collect();
        table.add_row(vec![r.region.clone(), pops.join(", ")]);
    }
    println!("{table}");
    if !p.pops.is_empty() {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
            "POP",
            "STATE",
            "LOAD / CAPACITY",
            "UTILISATION",
            "ANYCAST",
        ]);
        for s in &p.pops {
            let anycast: Vec<String> = p
                .anycast
                .iter()
                .filter(|a| a.pop == s.pop)
                .map(|a| format!("{} {}", a.prefix, anycast_name(a.action)))
                .collect();
            table.add_row(vec![
                s.pop.clone(),
                s.state.clone(),
                format!("{:.0} / {:.0}", s.load, s.capacity),
                format!("{:.0}%", s.utilisation * 100.0),
                if anycast.is_empty() {
                    "-".into()
                } else {
                    anycast.join(", ")
                },
            ]);
        }
        println!("{table}");
    }
    for r in &p.reasons {
        println!("why: {r}");
    }
    for g in &p.guardrails {
        println!("guardrail: {g}");
    }
}

async fn plan(cli: &Cli, region: Option<&str>, version: Option<u64>) -> anyhow::Result<ExitCode> {
    let (endpoint, channel) = connect(cli).await?;
    let mut client = pb::query_service_client::QueryServiceClient::new(channel);
    let req = pb::GetPlanRequest {
        region: region.unwrap_or_default().to_string(),
        version: version.unwrap_or(0),
    };
    let resp = client
        .get_plan(req)
        .await
        .map_err(|s| rpc_error("GetPlan", &endpoint, s))?
        .into_inner();
    let plan = resp
        .plan
        .ok_or_else(|| anyhow::anyhow!("GetPlan on {endpoint} answered without a plan"))?;
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&plan_json(&plan))?),
        Output::Table => print_plan(&plan),
    }
    Ok(ExitCode::SUCCESS)
}

async fn agents(cli: &Cli) -> anyhow::Result<ExitCode> {
    let (endpoint, channel) = connect(cli).await?;
    let mut client = pb::query_service_client::QueryServiceClient::new(channel);
    let resp = client
        .list_agents(pb::ListAgentsRequest {})
        .await
        .map_err(|s| rpc_error("ListAgents", &endpoint, s))?
        .into_inner();
    let view: Vec<serde_json::Value> = resp
        .agents
        .iter()
        .map(|a| {
            serde_json::json!({
                "agent_id": a.agent_id,
                "kind": if a.kind == pb::AgentKind::Anycast as i32 { "anycast" } else { "dns" },
                "replica": a.replica_id,
                "applied_version": a.applied_version,
                "nacked_version": (a.nacked_version != 0).then_some(a.nacked_version),
                "nack_reason": (!a.nack_reason.is_empty()).then_some(&a.nack_reason),
            })
        })
        .collect();
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        Output::Table => {
            let mut table = Table::new();
            table
                .load_preset(UTF8_FULL_CONDENSED)
                .set_header(vec!["AGENT", "KIND", "REPLICA", "APPLIED", "REJECTED"]);
            for v in &view {
                let rejected = match (&v["nacked_version"], &v["nack_reason"]) {
                    (serde_json::Value::Number(n), serde_json::Value::String(r)) => format!("v{n}: {r}"),
                    _ => "-".into(),
                };
                table.add_row(vec![
                    v["agent_id"].as_str().unwrap_or_default().to_string(),
                    v["kind"].as_str().unwrap_or_default().to_string(),
                    v["replica"].as_str().unwrap_or_default().to_string(),
                    format!("v{}", v["applied_version"]),
                    rejected,
                ]);
            }
            if view.is_empty() {
                println!("no agents connected");
            } else {
                println!("{table}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn change_json(c: &pb::ChangeRecord) -> serde_json::Value {
    serde_json::json!({"id": c.id, "reason": c.reason, "state": "completed", "summary": c.summary})
}

async fn operator_client(
    cli: &Cli,
) -> anyhow::Result<(String, pb::operator_service_client::OperatorServiceClient<Channel>)> {
    let (endpoint, channel) = connect(cli).await?;
    Ok((
        endpoint,
        pb::operator_service_client::OperatorServiceClient::new(channel),
    ))
}

async fn drain(cli: &Cli, pop: &str, reason: &str, force: bool) -> anyhow::Result<ExitCode> {
    let (endpoint, mut client) = operator_client(cli).await?;
    let req = pb::DrainRequest {
        pop: pop.to_string(),
        reason: reason.to_string(),
        force,
        regions: Vec::new(),
    };
    let change = client
        .drain(req)
        .await
        .map_err(|s| rpc_error("Drain", &endpoint, s))?
        .into_inner()
        .change
        .unwrap_or_default();
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&change_json(&change))?),
        Output::Table => println!("{} ({})", change.summary, change.id),
    }
    Ok(ExitCode::SUCCESS)
}

async fn undrain(cli: &Cli, pop: &str, reason: &str) -> anyhow::Result<ExitCode> {
    let (endpoint, mut client) = operator_client(cli).await?;
    let req = pb::UndrainRequest {
        pop: pop.to_string(),
        reason: reason.to_string(),
    };
    let change = client
        .undrain(req)
        .await
        .map_err(|s| rpc_error("Undrain", &endpoint, s))?
        .into_inner()
        .change
        .unwrap_or_default();
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&change_json(&change))?),
        Output::Table => println!("{} ({})", change.summary, change.id),
    }
    Ok(ExitCode::SUCCESS)
}

async fn what_if(cli: &Cli, scenario: &str, pop: &str) -> anyhow::Result<ExitCode> {
    let (endpoint, channel) = connect(cli).await?;
    let mut client = pb::query_service_client::QueryServiceClient::new(channel);
    let scenario = match scenario {
        "drain" => pb::what_if_request::Scenario::DrainPop(pop.to_string()),
        _ => pb::what_if_request::Scenario::DownPop(pop.to_string()),
    };
    let resp = client
        .what_if(pb::WhatIfRequest {
            scenario: Some(scenario),
        })
        .await
        .map_err(|s| rpc_error("WhatIf", &endpoint, s))?
        .into_inner();
    let plan = resp.plan.unwrap_or_default();
    match cli.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"plan": plan_json(&plan), "guardrails_fired": resp.guardrails_fired})
            )?
        ),
        Output::Table => {
            println!("nothing was changed; this is what steering would publish:");
            print_plan(&plan);
            if resp.guardrails_fired.is_empty() {
                println!("no guardrail would fire");
            }
            for g in &resp.guardrails_fired {
                println!("would fire: {g}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn restore_plan(cli: &Cli, version: u64, reason: &str) -> anyhow::Result<ExitCode> {
    let (endpoint, mut client) = operator_client(cli).await?;
    let req = pb::RestorePlanRequest {
        version,
        reason: reason.to_string(),
    };
    let plan = client
        .restore_plan(req)
        .await
        .map_err(|s| rpc_error("RestorePlan", &endpoint, s))?
        .into_inner()
        .plan
        .unwrap_or_default();
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&plan_json(&plan))?),
        Output::Table => {
            println!(
                "restored version {version} as version {}; steering is pinned until `meridianctl resume-steering`",
                plan.version
            );
            print_plan(&plan);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn resume_steering(cli: &Cli, reason: &str) -> anyhow::Result<ExitCode> {
    let (endpoint, mut client) = operator_client(cli).await?;
    let resp = client
        .resume_steering(pb::ResumeSteeringRequest {
            reason: reason.to_string(),
        })
        .await
        .map_err(|s| rpc_error("ResumeSteering", &endpoint, s))?
        .into_inner();
    match cli.output {
        Output::Json => println!("{}", serde_json::json!({"was_pinned": resp.was_pinned})),
        Output::Table if resp.was_pinned => println!("steering resumed: computed plans are published again"),
        Output::Table => println!("steering was not pinned; nothing to do"),
    }
    Ok(ExitCode::SUCCESS)
}

fn rpc_error(rpc: &str, endpoint: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{rpc} on {endpoint} failed: {}: {}", s.code(), s.message())
}

#[derive(Debug, Serialize)]
struct ApplyView {
    file: String,
    dry_run: bool,
    applied: bool,
    topology_revision: u64,
    diff: Vec<String>,
    errors: Vec<String>,
}

async fn apply(cli: &Cli, file: &std::path::Path, dry_run: bool, reason: &str) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let (endpoint, channel) = connect(cli).await?;
    let mut client = pb::operator_service_client::OperatorServiceClient::new(channel);
    let req = pb::ApplyTopologyRequest {
        topology_toml: text,
        dry_run,
        reason: reason.to_string(),
    };
    let resp = client
        .apply_topology(req)
        .await
        .map_err(|s| anyhow::anyhow!("ApplyTopology on {endpoint} failed: {}: {}", s.code(), s.message()))?
        .into_inner();
    let view = ApplyView {
        file: file.display().to_string(),
        dry_run,
        applied: resp.applied,
        topology_revision: resp.topology_revision,
        diff: resp.diff,
        errors: resp.errors,
    };
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        Output::Table => {
            if !view.errors.is_empty() {
                println!("{}: {} error(s), nothing applied:", view.file, view.errors.len());
                for e in &view.errors {
                    println!("  {e}");
                }
            } else if view.diff.is_empty() {
                println!(
                    "{}: no changes (stored topology revision {})",
                    view.file, view.topology_revision
                );
            } else {
                let verb = if view.dry_run { "would change" } else { "applied" };
                println!("{}: {verb} {} item(s):", view.file, view.diff.len());
                for d in &view.diff {
                    println!("  {d}");
                }
                if view.applied {
                    println!("stored at revision {}", view.topology_revision);
                }
            }
        }
    }
    Ok(if view.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Debug, Serialize)]
struct StatusView {
    answered_by: String,
    /// Whether the answering replica believes it leads (it holds the fence).
    answering_replica_leads: bool,
    endpoint: String,
    leader: Option<String>,
    leader_revision: i64,
    ready: bool,
    plan_version: u64,
    store: StoreView,
    replicas: Vec<ReplicaView>,
}

#[derive(Debug, Serialize)]
struct StoreView {
    backend: String,
    healthy: bool,
    revision: i64,
    detail: String,
    endpoints: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ReplicaView {
    id: String,
    leader: bool,
    grpc_address: String,
    admin_address: String,
    started_at_unix: i64,
    version: String,
}

async fn status(cli: &Cli) -> anyhow::Result<ExitCode> {
    let (endpoint, channel) = connect(cli).await?;
    let mut client = pb::query_service_client::QueryServiceClient::new(channel);
    let resp = client
        .get_status(pb::GetStatusRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("GetStatus on {endpoint} failed: {}: {}", s.code(), s.message()))?
        .into_inner();
    let store = resp.store.unwrap_or_default();
    let view = StatusView {
        answered_by: resp.replica_id,
        answering_replica_leads: resp.is_leader,
        endpoint,
        leader: (!resp.leader_id.is_empty()).then_some(resp.leader_id),
        leader_revision: resp.leader_revision,
        ready: resp.ready,
        plan_version: resp.plan_version,
        store: StoreView {
            backend: match pb::StoreBackend::try_from(store.backend) {
                Ok(pb::StoreBackend::Etcd) => "etcd".into(),
                Ok(pb::StoreBackend::Embedded) => "embedded".into(),
                _ => "unknown".into(),
            },
            healthy: store.healthy,
            revision: store.revision,
            detail: store.detail,
            endpoints: store.endpoints,
        },
        replicas: resp
            .replicas
            .into_iter()
            .map(|r| ReplicaView {
                id: r.id,
                leader: r.is_leader,
                grpc_address: r.grpc_address,
                admin_address: r.admin_address,
                started_at_unix: r.started_at.map(|t| t.seconds).unwrap_or(0),
                version: r.version,
            })
            .collect(),
    };
    let healthy = view.leader.is_some() && view.store.healthy;
    match cli.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        Output::Table => print_status(&view),
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

fn print_status(v: &StatusView) {
    let role = if v.answering_replica_leads {
        "leader"
    } else {
        "follower"
    };
    println!("answered by   {} ({}, {role})", v.answered_by, v.endpoint);
    match &v.leader {
        Some(l) => println!("leader        {} (fence revision {})", l, v.leader_revision),
        None => println!("leader        NONE — no replica holds the leader key"),
    }
    let health = if v.store.healthy {
        "healthy".to_string()
    } else {
        format!("UNHEALTHY: {}", v.store.detail)
    };
    println!(
        "store         {} — {} (revision {})",
        v.store.backend, health, v.store.revision
    );
    if !v.store.endpoints.is_empty() {
        println!("store at      {}", v.store.endpoints.join(", "));
    }
    println!("ready         {}", if v.ready { "yes" } else { "no" });
    println!(
        "plan version  {}",
        if v.plan_version == 0 {
            "none published yet".to_string()
        } else {
            v.plan_version.to_string()
        }
    );
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["REPLICA", "ROLE", "GRPC", "ADMIN", "VERSION"]);
    for r in &v.replicas {
        table.add_row(vec![
            r.id.clone(),
            if r.leader { "leader".into() } else { "follower".into() },
            r.grpc_address.clone(),
            r.admin_address.clone(),
            r.version.clone(),
        ]);
    }
    println!("{table}");
}
