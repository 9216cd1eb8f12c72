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
    #[arg(long, short = 'e', env = "MERIDIAN_ENDPOINT", value_delimiter = ',', default_value = "http://127.0.0.1:7400", global = true)]
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
    let req = pb::ApplyTopologyRequest { topology_toml: text, dry_run, reason: reason.to_string() };
    let resp = client.apply_topology(req).await.map_err(|s| anyhow::anyhow!("ApplyTopology on {endpoint} failed: {}: {}", s.code(), s.message()))?.into_inner();
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
                println!("{}: no changes (stored topology revision {})", view.file, view.topology_revision);
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
    Ok(if view.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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
    let resp = client.get_status(pb::GetStatusRequest {}).await.map_err(|s| anyhow::anyhow!("GetStatus on {endpoint} failed: {}: {}", s.code(), s.message()))?.into_inner();
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
    let role = if v.answering_replica_leads { "leader" } else { "follower" };
    println!("answered by   {} ({}, {role})", v.answered_by, v.endpoint);
    match &v.leader {
        Some(l) => println!("leader        {} (fence revision {})", l, v.leader_revision),
        None => println!("leader        NONE — no replica holds the leader key"),
    }
    let health = if v.store.healthy { "healthy".to_string() } else { format!("UNHEALTHY: {}", v.store.detail) };
    println!("store         {} — {} (revision {})", v.store.backend, health, v.store.revision);
    if !v.store.endpoints.is_empty() {
        println!("store at      {}", v.store.endpoints.join(", "));
    }
    println!("ready         {}", if v.ready { "yes" } else { "no" });
    println!("plan version  {}", if v.plan_version == 0 { "none published yet".to_string() } else { v.plan_version.to_string() });
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec!["REPLICA", "ROLE", "GRPC", "ADMIN", "VERSION"]);
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
