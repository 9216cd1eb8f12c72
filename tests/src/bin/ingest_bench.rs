//! `ingest_bench`: how many probe results per second one `meridian-control-plane`
//! replica ingests over real gRPC, and what that costs it in CPU and memory.
//!
//! The bench *is* the prober fleet: it opens several `ProbeService.ReportResults`
//! streams, each a distinct synthetic prober in one of a few regions, and streams
//! batches of results for a synthetic topology it applied itself (the targets are never
//! probed). Throughput is counted from the server's acknowledgements, not from what was
//! sent, so a result only counts once the replica took it; any rejection fails the run,
//! because a bench that measures the rejection path measures the wrong thing.
//!
//! The main decision: load generator and control plane share this machine (2 cores),
//! so the figure is a lower bound on what the replica does with the cores to itself.
//! The alternative, a remote load generator, is not available here; instead the output
//! shows how many cores the control plane, the generator and everything else used.
//! This is a bench binary rather than a criterion bench because what it measures is a
//! separate process over a socket, not a function (CONVENTIONS.md, "benchmarks").
//!
//! By default the streams run the production setup, mutual TLS with roles enforced
//! (`--transport mtls`); `--transport plaintext` runs the same load with no TLS and
//! roles off, so the two figures side by side give the cost of TLS and authorization.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use meridian_proto::prost_types;
use meridian_proto::v1 as pb;
use meridian_tests::meridian::{http_get, metric_value};
use meridian_tests::pki::{pki, CertFiles, TestPki};
use meridian_tests::util::free_addr;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// The throughput goal from issue 2 ("at least 100,000 results/s into one replica").
const GOAL_RESULTS_PER_SEC: f64 = 100_000.0;

/// Streams synthetic probe results into one meridian-control-plane over real gRPC and
/// reports ingest throughput, ack latency, and the replica's CPU and memory.
///
/// Unless --endpoint is given, it starts its own control plane (embedded store in a
/// temporary directory, ports picked at run time; the release binary next to this one),
/// applies a topology of --pops PoPs × --endpoints TCP endpoints, then opens --streams
/// ReportResults streams, each a synthetic prober `bench-<i>` in one of --regions
/// regions. Each stream sends batches of --batch results stamped with the current time
/// (about --failure-rate of them failures with a class), keeping up to --window
/// unacknowledged batches in flight. After --warmup it measures for --duration:
/// results accepted per second (from the acks), batch ack latency (enqueue to ack),
/// and the control plane's CPU (utime+stime from /proc/<pid>/stat over the wall time,
/// in cores) and its RSS at the end.
///
/// The load generator runs in this process on the same cores as the control plane,
/// so the figure is a lower bound. Any rejected result fails the run (exit 2) with
/// the first rejection message. Each result is newer than the stream's previous one for
/// the same target (at least 1 ms), so keep pops × endpoints well above one stream's
/// results per millisecond, or results run into the future and are rightly rejected.
///
/// --transport says how the bench's clients reach the control plane it starts, so a
/// figure always names what it measured:
///   mtls       (default, the production setup) the control plane serves mutual TLS
///              with a per-run test CA and enforces roles; each stream presents its
///              own prober certificate (CN = bench-<i>, OU = its region), meridianctl
///              runs as an admin certificate.
///   plaintext  no TLS, and the control plane runs with `[auth] mode = "off"`: the
///              cost of TLS and authorization is the difference between the two.
/// With --endpoint (an external control plane) only `--transport plaintext` is
/// supported, against a control plane started with `[auth] mode = "off"` on loopback:
/// the bench's clients have no certificates that control plane would trust.
/// Build with scripts/bench-ingest.sh (release).
#[derive(Debug, Parser)]
#[command(name = "ingest_bench", verbatim_doc_comment)]
struct Args {
    /// Bench an already running control plane at this gRPC URL instead of starting
    /// one. Its topology is REPLACED by the bench's synthetic one.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// With --endpoint: that control plane's pid, so its CPU and RSS can be measured.
    #[arg(long, requires = "endpoint")]
    pid: Option<u32>,
    /// PoPs in the synthetic topology.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pops: u32,
    /// TCP endpoints per PoP.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    endpoints: u32,
    /// Concurrent ReportResults streams, each its own connection and prober.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    streams: u32,
    /// Regions the probers are spread over (stream i reports from region i mod N).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    regions: u32,
    /// Results per batch.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Unacknowledged batches allowed in flight per stream.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    window: u32,
    /// How long to measure, after the warm-up (e.g. 20s, 1m).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long to send before measuring starts.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Share of results that are failures (each with a failure class).
    #[arg(long, default_value_t = 0.02)]
    failure_rate: f64,
    /// Client regions in the synthetic topology (0: none, so steering has nothing
    /// to compute). With e.g. 300, the leader's steering recomputes a plan for every
    /// PoP × region each second while results stream in: ack latency with and without
    /// shows whether ingest waits for steering. Total demand is 60 % of capacity; each
    /// region has latency hints to 10 PoPs.
    #[arg(long, default_value_t = 0)]
    client_regions: u32,
    /// Start this control-plane binary instead of the one next to the bench (to
    /// compare two builds under the same load, e.g. before and after a change).
    #[arg(long, value_name = "PATH", conflicts_with = "endpoint")]
    control_plane_bin: Option<PathBuf>,
    /// How the clients reach the control plane: mtls (TLS with client certificates,
    /// roles enforced) or plaintext (no TLS, `[auth] mode = "off"`).
    #[arg(long, value_enum, default_value_t = Transport::Mtls)]
    transport: Transport,
    /// Print one JSON object instead of the human summary.
    #[arg(long)]
    json: bool,
}

/// How the bench's clients reach the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Transport {
    /// Mutual TLS with the per-run test CA; roles enforced (the default).
    Mtls,
    /// No TLS; the control plane runs with `[auth] mode = "off"`.
    Plaintext,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Mtls => "mtls",
            Transport::Plaintext => "plaintext",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Transport::Mtls => "mtls: mutual TLS, a prober certificate per stream, roles enforced",
            Transport::Plaintext => "plaintext: no TLS, auth off",
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.failure_rate) {
        eprintln!("ingest_bench: --failure-rate must be within 0..=1");
        return ExitCode::from(64);
    }
    if args.endpoint.is_some() && args.transport == Transport::Mtls {
        eprintln!(
            "ingest_bench: --endpoint needs --transport plaintext (against a control plane with `[auth] mode = \"off\"` on loopback): \
             the bench's certificates come from its own per-run CA, which an external control plane does not trust"
        );
        return ExitCode::from(64);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ingest_bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(real_main(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ingest_bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn real_main(args: Args) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir().context("create a temporary directory")?;
    // The control plane we started, if any: killed when this function returns.
    let mut own: Option<OwnedControlPlane> = None;
    let (endpoint, pid) = match &args.endpoint {
        Some(url) => (url.clone(), args.pid),
        None => {
            let cp = OwnedControlPlane::start(dir.path(), args.control_plane_bin.as_deref(), args.transport)?;
            let (url, pid) = (cp.endpoint(), cp.child.id());
            own = Some(cp);
            (url, Some(pid))
        }
    };
    let access = Access {
        endpoint,
        transport: args.transport,
    };
    let result = bench(&args, &access, pid, own.as_ref(), dir.path()).await;
    if result.is_err() {
        if let Some(cp) = &own {
            eprintln!("ingest_bench: control plane log (last lines):\n{}", tail(&cp.log(), 30));
        }
    }
    drop(own);
    result
}

/// Sets up, runs the load, measures and reports; the exit code says whether any
/// result was rejected.
async fn bench(
    args: &Args,
    access: &Access,
    pid: Option<u32>,
    own: Option<&OwnedControlPlane>,
    dir: &Path,
) -> anyhow::Result<ExitCode> {
    let endpoint = access.endpoint.as_str();
    if own.is_some() {
        access.wait_ready().await?;
    }
    let targets = apply_topology(access, args.pops, args.endpoints, args.client_regions, dir).await?;
    wait_for_health_topology(access, args.pops as usize).await?;

    let shared = Arc::new(Shared::default());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.streams {
        let generator = Generator::new(i, args, targets.clone());
        // Each stream is its own prober: its certificate names the prober id and the
        // region it reports for, as the probe API requires.
        let channel = access
            .grpc(|pki| pki.prober(&generator.prober, &generator.region))?
            .connect()
            .await
            .with_context(|| format!("connect to {endpoint}"))?;
        let (shared, window) = (shared.clone(), args.window as usize);
        tasks.spawn(async move {
            let r = run_stream(channel, generator, window, &shared).await;
            if r.is_err() {
                // One broken stream ends the run: the others' figures would be wrong.
                shared.stop.store(true, Ordering::Relaxed);
            }
            r
        });
    }

    let clk_tck = clock_ticks_per_second();
    stop_aware_sleep(&shared, args.warmup).await;
    let start = Snapshot::take(&shared, pid);
    shared.measuring.store(true, Ordering::Relaxed);
    stop_aware_sleep(&shared, args.duration).await;
    let end = Snapshot::take(&shared, pid);
    shared.measuring.store(false, Ordering::Relaxed);
    shared.stop.store(true, Ordering::Relaxed);
    let rss = pid.and_then(memory_kib);

    let mut latencies_us = Vec::new();
    let mut stream_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.context("stream task panicked")? {
            Ok(mut l) => latencies_us.append(&mut l),
            Err(e) => {
                stream_error.get_or_insert(e);
            }
        }
    }
    let rejected = shared.rejected.load(Ordering::Relaxed);
    if rejected > 0 {
        let first = shared
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "(the ack carried no message)".to_string());
        eprintln!("ingest_bench: the control plane REJECTED {rejected} results; the first error: {first}");
        return Ok(ExitCode::from(2));
    }
    if let Some(e) = stream_error {
        return Err(e);
    }
    let sent = shared.sent.load(Ordering::Relaxed);
    let accepted_total = shared.accepted.load(Ordering::Relaxed);
    if sent != accepted_total {
        bail!("{sent} results sent but {accepted_total} acknowledged as accepted after draining");
    }

    let wall = end.at.duration_since(start.at).as_secs_f64();
    let cores = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / clk_tck / wall),
        _ => None,
    };
    latencies_us.sort_unstable();
    let page = match own {
        Some(cp) => http_get(cp.admin_addr, "/metrics").await.map(|(_, body)| body),
        None => None,
    };
    let server_counted = page
        .as_deref()
        .and_then(|body| metric_value(body, "meridian_control_plane_probe_results_total"));
    // Steering ticks over the whole run (warm-up included) and their mean cost.
    let steering = page.as_deref().and_then(|body| {
        let n = metric_value(body, "meridian_control_plane_steering_tick_seconds_count")?;
        let sum = metric_value(body, "meridian_control_plane_steering_tick_seconds_sum")?;
        Some((n, if n > 0.0 { 1000.0 * sum / n } else { 0.0 }))
    });
    let verdicts = verdict_counts(access).await.unwrap_or_default();
    let report = Report {
        accepted: end.accepted - start.accepted,
        batches: end.batches - start.batches,
        wall_secs: wall,
        ack_p50_ms: percentile_ms(&latencies_us, 0.50),
        ack_p99_ms: percentile_ms(&latencies_us, 0.99),
        ack_max_ms: latencies_us.last().map(|&us| us as f64 / 1000.0),
        control_plane_cores: cores(start.cp_ticks, end.cp_ticks),
        generator_cores: cores(start.self_ticks, end.self_ticks),
        machine_busy_cores: match (start.machine, end.machine) {
            (Some((b0, _)), Some((b1, _))) => Some((b1.saturating_sub(b0)) as f64 / clk_tck / wall),
            _ => None,
        },
        machine_cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        rss_kib: rss.map(|(rss, _)| rss),
        peak_rss_kib: rss.map(|(_, hwm)| hwm),
        pid,
        sent_total: sent,
        server_counted,
        steering,
        verdicts,
    };
    report.print(args, endpoint);
    Ok(ExitCode::SUCCESS)
}

/// The `meridian-control-plane` this bench started: embedded store in a temporary
/// directory, ports picked now, killed on drop. Not the harness's `ControlPlane`, which
/// finds binaries from a test executable's `deps/` directory; a bench binary sits next
/// to the daemons instead.
struct OwnedControlPlane {
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    log_path: PathBuf,
    child: Child,
    transport: Transport,
}

impl OwnedControlPlane {
    /// Starts the control plane serving `transport`: mutual TLS with a replica
    /// certificate from the per-run CA (roles enforced, the default), or plaintext
    /// with a generated config that turns roles off.
    fn start(dir: &Path, bin: Option<&Path>, transport: Transport) -> anyhow::Result<Self> {
        let (grpc_addr, admin_addr) = (free_addr(), free_addr());
        let log_path = dir.join("control-plane.log");
        let log = std::fs::File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
        let exe = match bin {
            Some(path) => path.to_path_buf(),
            None => sibling_bin("meridian-control-plane")?,
        };
        let mut cmd = Command::new(&exe);
        match transport {
            Transport::Mtls => {
                let pki = pki();
                let me = pki.replica("bench");
                cmd.arg("--tls-cert")
                    .arg(&me.cert)
                    .arg("--tls-key")
                    .arg(&me.key)
                    .arg("--tls-client-ca")
                    .arg(pki.ca_pem());
            }
            Transport::Plaintext => {
                let config = dir.join("control-plane.toml");
                std::fs::write(&config, AUTH_OFF_CONFIG).with_context(|| format!("write {}", config.display()))?;
                cmd.arg("--config").arg(config);
            }
        }
        let child = cmd
            .args(["--replica-id", "bench", "--grpc-addr", &grpc_addr.to_string()])
            .args(["--admin-addr", &admin_addr.to_string()])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("MERIDIAN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("clone the log file handle")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", exe.display()))?;
        Ok(OwnedControlPlane {
            grpc_addr,
            admin_addr,
            log_path,
            child,
            transport,
        })
    }

    fn endpoint(&self) -> String {
        match self.transport {
            Transport::Mtls => format!("https://{}", self.grpc_addr),
            Transport::Plaintext => format!("http://{}", self.grpc_addr),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// The control-plane config for `--transport plaintext`: roles off, so clients
/// without credentials are served (plaintext is allowed on loopback).
const AUTH_OFF_CONFIG: &str = "# Generated by ingest_bench --transport plaintext.\n[auth]\nmode = \"off\"\n";

/// Where the control plane is and how the bench's clients authenticate to it.
struct Access {
    endpoint: String,
    transport: Transport,
}

impl Access {
    /// A gRPC endpoint that presents the certificate `who` picks from the per-run CA
    /// (mtls), or none (plaintext).
    fn grpc(&self, who: impl FnOnce(&TestPki) -> CertFiles) -> anyhow::Result<tonic::transport::Endpoint> {
        let tls = match self.transport {
            Transport::Mtls => {
                let pki = pki();
                Some(pki.client_tls(&who(pki)))
            }
            Transport::Plaintext => None,
        };
        meridian_tls::endpoint(&self.endpoint, tls.as_ref()).with_context(|| format!("gRPC endpoint {}", self.endpoint))
    }

    /// `meridianctl -e <endpoint> <args>`: as an admin certificate (mtls, through
    /// MERIDIAN_CA/CERT/KEY) or with no credentials at all (plaintext). A context
    /// file or credentials in the caller's environment are ignored, so they cannot
    /// change what is measured.
    async fn meridianctl(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let ctl = sibling_bin("meridianctl")?;
        let mut cmd = tokio::process::Command::new(&ctl);
        for var in [
            "MERIDIAN_CONTEXT",
            "MERIDIAN_ENDPOINT",
            "MERIDIAN_CA",
            "MERIDIAN_CERT",
            "MERIDIAN_KEY",
            "MERIDIAN_TOKEN",
            "MERIDIAN_TOKEN_FILE",
            "MERIDIAN_IDENTITY",
        ] {
            cmd.env_remove(var);
        }
        if self.transport == Transport::Mtls {
            let pki = pki();
            let admin = pki.admin();
            cmd.env("MERIDIAN_CA", pki.ca_pem())
                .env("MERIDIAN_CERT", &admin.cert)
                .env("MERIDIAN_KEY", &admin.key);
        }
        cmd.args(["-e", &self.endpoint])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("run {}", ctl.display()))
    }

    /// Waits (60 s at most) until `meridianctl status` reports the replica ready.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.meridianctl(&["--timeout", "3s", "status", "-o", "json"]).await?;
            let status: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
            if status.is_some_and(|s| s["ready"] == serde_json::Value::Bool(true)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the control plane at {} did not become ready within 60 s (meridianctl said: {})",
                    self.endpoint,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for OwnedControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A binary built into the same directory as this one (`target/release`).
fn sibling_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locate this executable")?;
    let path = exe.parent().map(|d| d.join(name)).unwrap_or_default();
    if !path.is_file() {
        bail!(
            "{} not found: build it with scripts/bench-ingest.sh (cargo build --release -p {})",
            path.display(),
            if name == "meridianctl" {
                "meridianctl"
            } else {
                "meridian-control-plane"
            }
        );
    }
    Ok(path)
}

/// Counters shared by the stream tasks and the measuring loop.
#[derive(Default)]
struct Shared {
    /// Set when the measurement is over (or a stream broke): send nothing more, drain.
    stop: AtomicBool,
    /// Set during the measured interval: ack latencies are recorded only then.
    measuring: AtomicBool,
    sent: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    batches: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// One synthetic prober's results: it cycles through every (PoP, endpoint) target,
/// stamping each with the current time, or 1 ms after its previous result for the same
/// target if that is later, so every result is newer than the last one for its track and
/// drives the hysteresis (the path real probers take), never the cheaper out-of-order path.
struct Generator {
    prober: String,
    region: String,
    targets: Arc<Vec<(String, String)>>,
    next: usize,
    last_ms: Vec<i64>,
    rng: u64,
    failure_rate: f64,
    batch: usize,
    sequence: u64,
}

/// The failure classes synthetic failures rotate through.
const FAILURE_CLASSES: [pb::FailureClass; 5] = [
    pb::FailureClass::Timeout,
    pb::FailureClass::Refused,
    pb::FailureClass::Reset,
    pb::FailureClass::Tls,
    pb::FailureClass::HttpStatus,
];

impl Generator {
    fn new(i: u32, args: &Args, targets: Arc<Vec<(String, String)>>) -> Self {
        let n = targets.len();
        Generator {
            prober: format!("bench-{i}"),
            region: format!("bench-r{}", i % args.regions),
            // Streams start at different targets so they do not move through the PoPs
            // in lockstep.
            next: (i as usize * n / args.streams as usize) % n,
            last_ms: vec![0; n],
            targets,
            rng: 0x9E37_79B9_7F4A_7C15 ^ (u64::from(i) + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
            failure_rate: args.failure_rate,
            batch: args.batch as usize,
            sequence: 0,
        }
    }

    fn batch(&mut self) -> pb::ProbeResultBatch {
        self.sequence += 1;
        let now = unix_ms();
        let mut results = Vec::with_capacity(self.batch);
        for _ in 0..self.batch {
            let t = self.next;
            self.next = (self.next + 1) % self.targets.len();
            let ms = now.max(self.last_ms[t] + 1);
            self.last_ms[t] = ms;
            let r = self.random();
            let success = (r % 1_000_000) as f64 >= self.failure_rate * 1_000_000.0;
            let (failure_class, detail) = if success {
                (pb::FailureClass::None, String::new())
            } else {
                let class = FAILURE_CLASSES[(r >> 32) as usize % FAILURE_CLASSES.len()];
                (class, "synthetic failure from ingest_bench".to_string())
            };
            let (pop, endpoint) = &self.targets[t];
            // As probers send them: the prober and region once per batch.
            results.push(pb::ProbeResult {
                prober_id: String::new(),
                region: String::new(),
                pop: pop.clone(),
                endpoint: endpoint.clone(),
                observed_at: Some(prost_types::Timestamp {
                    seconds: ms.div_euclid(1000),
                    nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
                }),
                success,
                // 1–80 ms, the spread of real probe latencies.
                latency: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 1_000_000 + ((r >> 20) % 79_000_000) as i32,
                }),
                failure_class: failure_class as i32,
                detail,
            });
        }
        pb::ProbeResultBatch {
            sequence: self.sequence,
            results,
            prober_id: self.prober.clone(),
            region: self.region.clone(),
            suspects: Vec::new(),
        }
    }

    /// splitmix64: deterministic per stream, good enough to pick failures.
    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Runs one ReportResults stream until `stop`, keeping up to `window` batches
/// unacknowledged, then drains the acks of those in flight. Returns the ack latencies
/// (µs) seen while `measuring`.
async fn run_stream(
    channel: Channel,
    mut generator: Generator,
    window: usize,
    shared: &Shared,
) -> anyhow::Result<Vec<u64>> {
    let mut client = pb::probe_service_client::ProbeServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(window);
    let mut in_flight: VecDeque<(u64, Instant, u64)> = VecDeque::with_capacity(window);
    // Fill the window before opening the stream, so the request has a body at once.
    fill(&mut generator, &tx, &mut in_flight, window, shared).await?;
    let mut acks = client
        .report_results(ReceiverStream::new(rx))
        .await
        .context("open ReportResults")?
        .into_inner();
    let mut latencies = Vec::new();
    loop {
        fill(&mut generator, &tx, &mut in_flight, window, shared).await?;
        let Some((sequence, sent_at, size)) = in_flight.pop_front() else {
            break;
        };
        let ack = acks
            .message()
            .await
            .context("ReportResults ack stream failed")?
            .with_context(|| format!("ReportResults closed with batch {sequence} unacknowledged"))?;
        let latency = sent_at.elapsed();
        if ack.sequence != sequence {
            bail!("ack for batch {} while expecting batch {sequence}", ack.sequence);
        }
        if u64::from(ack.accepted) + u64::from(ack.rejected) != size {
            bail!(
                "ack for batch {sequence} of {size} results says {} accepted + {} rejected",
                ack.accepted,
                ack.rejected
            );
        }
        if shared.measuring.load(Ordering::Relaxed) {
            latencies.push(latency.as_micros() as u64);
        }
        shared.batches.fetch_add(1, Ordering::Relaxed);
        shared.accepted.fetch_add(u64::from(ack.accepted), Ordering::Relaxed);
        if ack.rejected > 0 {
            shared.rejected.fetch_add(u64::from(ack.rejected), Ordering::Relaxed);
            let mut first = shared.first_error.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert_with(|| ack.errors.first().cloned().unwrap_or_default());
            // Measuring the rejection path is not the point: stop everyone.
            shared.stop.store(true, Ordering::Relaxed);
        }
    }
    // Closing the request stream ends the server's side of the call.
    drop(tx);
    Ok(latencies)
}

/// Sends batches until `window` are in flight (or the run is stopping).
async fn fill(
    generator: &mut Generator,
    tx: &tokio::sync::mpsc::Sender<pb::ProbeResultBatch>,
    in_flight: &mut VecDeque<(u64, Instant, u64)>,
    window: usize,
    shared: &Shared,
) -> anyhow::Result<()> {
    while in_flight.len() < window && !shared.stop.load(Ordering::Relaxed) {
        let batch = generator.batch();
        let size = batch.results.len() as u64;
        in_flight.push_back((batch.sequence, Instant::now(), size));
        tx.send(batch)
            .await
            .map_err(|_| anyhow::anyhow!("the ReportResults request stream closed"))?;
        shared.sent.fetch_add(size, Ordering::Relaxed);
    }
    Ok(())
}

/// Counters and CPU times at one instant.
struct Snapshot {
    at: Instant,
    accepted: u64,
    batches: u64,
    cp_ticks: Option<u64>,
    self_ticks: Option<u64>,
    /// Machine-wide (busy, total) ticks from /proc/stat.
    machine: Option<(u64, u64)>,
}

impl Snapshot {
    fn take(shared: &Shared, pid: Option<u32>) -> Self {
        Snapshot {
            at: Instant::now(),
            accepted: shared.accepted.load(Ordering::Relaxed),
            batches: shared.batches.load(Ordering::Relaxed),
            cp_ticks: pid.and_then(|p| process_ticks(&format!("/proc/{p}/stat"))),
            self_ticks: process_ticks("/proc/self/stat"),
            machine: machine_ticks(),
        }
    }
}

/// What one run measured.
struct Report {
    accepted: u64,
    batches: u64,
    wall_secs: f64,
    ack_p50_ms: Option<f64>,
    ack_p99_ms: Option<f64>,
    ack_max_ms: Option<f64>,
    control_plane_cores: Option<f64>,
    generator_cores: Option<f64>,
    machine_busy_cores: Option<f64>,
    machine_cores: usize,
    rss_kib: Option<u64>,
    peak_rss_kib: Option<u64>,
    pid: Option<u32>,
    sent_total: u64,
    server_counted: Option<f64>,
    /// Steering ticks on the replica over the run, and their mean duration in ms.
    steering: Option<(f64, f64)>,
    verdicts: Vec<(String, usize)>,
}

impl Report {
    fn rate(&self) -> f64 {
        self.accepted as f64 / self.wall_secs
    }

    fn print(&self, args: &Args, endpoint: &str) {
        let transport = args.transport;
        let mib = |k: Option<u64>| k.map(|k| k as f64 / 1024.0);
        if args.json {
            let verdicts: serde_json::Map<String, serde_json::Value> = self
                .verdicts
                .iter()
                .map(|(s, n)| (s.clone(), serde_json::json!(n)))
                .collect();
            let json = serde_json::json!({
                "endpoint": endpoint,
                "transport": transport.name(),
                "started_control_plane": args.endpoint.is_none(),
                "config": {
                    "pops": args.pops,
                    "endpoints_per_pop": args.endpoints,
                    "streams": args.streams,
                    "regions": args.regions,
                    "batch": args.batch,
                    "window": args.window,
                    "warmup_secs": args.warmup.as_secs_f64(),
                    "duration_secs": args.duration.as_secs_f64(),
                    "failure_rate": args.failure_rate,
                    "client_regions": args.client_regions,
                },
                "results_per_sec": self.rate(),
                "goal_results_per_sec": GOAL_RESULTS_PER_SEC,
                "meets_goal": self.rate() >= GOAL_RESULTS_PER_SEC,
                "accepted": self.accepted,
                "rejected": 0,
                "batches": self.batches,
                "wall_secs": self.wall_secs,
                "ack_latency_ms": { "p50": self.ack_p50_ms, "p99": self.ack_p99_ms, "max": self.ack_max_ms },
                "control_plane": {
                    "pid": self.pid,
                    "cpu_cores": self.control_plane_cores,
                    "rss_mib": mib(self.rss_kib),
                    "peak_rss_mib": mib(self.peak_rss_kib),
                    "results_counted_by_metrics": self.server_counted,
                    "steering_ticks": self.steering.map(|s| s.0),
                    "steering_tick_mean_ms": self.steering.map(|s| s.1),
                    "verdicts_at_end": verdicts,
                },
                "load_generator_cpu_cores": self.generator_cores,
                "load_generator_in_same_process_and_machine": true,
                "machine_busy_cores": self.machine_busy_cores,
                "machine_cores": self.machine_cores,
                "sent_total": self.sent_total,
            });
            println!("{json}");
            return;
        }
        let opt = |v: Option<f64>, digits: usize| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.digits$}"));
        let cores = self.machine_cores;
        println!("ingest_bench: {endpoint} (transport {})", transport.describe());
        println!(
            "  load        {} streams (probers) in {} regions, batches of {}, window {}, {} PoPs x {} endpoints, {:.0}% failures",
            args.streams,
            args.regions,
            args.batch,
            args.window,
            args.pops,
            args.endpoints,
            args.failure_rate * 100.0
        );
        println!(
            "  measured    {:.1} s after {:.1} s warm-up: {} results in {} batches, 0 rejected",
            self.wall_secs,
            args.warmup.as_secs_f64(),
            self.accepted,
            self.batches
        );
        let verdict = if self.rate() >= GOAL_RESULTS_PER_SEC {
            "meets"
        } else {
            "BELOW"
        };
        println!(
            "  throughput  {:.0} results/s accepted ({verdict} the goal of {:.0}/s)",
            self.rate(),
            GOAL_RESULTS_PER_SEC
        );
        println!(
            "  ack latency p50 {} ms, p99 {} ms, max {} ms (enqueue to ack, up to {} batches in flight per stream)",
            opt(self.ack_p50_ms, 1),
            opt(self.ack_p99_ms, 1),
            opt(self.ack_max_ms, 1),
            args.window
        );
        println!(
            "  control plane  pid {}: {} of {cores} cores, RSS {} MiB at the end (peak {} MiB)",
            self.pid.map_or_else(|| "n/a".to_string(), |p| p.to_string()),
            opt(self.control_plane_cores, 2),
            opt(mib(self.rss_kib), 1),
            opt(mib(self.peak_rss_kib), 1)
        );
        println!(
            "  load generator  {} of {cores} cores — it runs in this process on the SAME {cores} cores as the control plane,",
            opt(self.generator_cores, 2)
        );
        println!("                  so the throughput is a lower bound for a replica with the machine to itself");
        let other = match (self.machine_busy_cores, self.control_plane_cores, self.generator_cores) {
            (Some(m), Some(c), Some(g)) => Some((m - c - g).max(0.0)),
            _ => None,
        };
        println!(
            "  machine     {} of {cores} cores busy ({} used by other processes)",
            opt(self.machine_busy_cores, 2),
            opt(other, 2)
        );
        if let Some(n) = self.server_counted {
            println!(
                "  cross-check the replica's meridian_control_plane_probe_results_total = {n:.0} (sent {} in all)",
                self.sent_total
            );
        }
        if let Some((ticks, mean_ms)) = self.steering {
            println!(
                "  steering    {ticks:.0} ticks on the replica over the run, {mean_ms:.1} ms each on average ({} client regions)",
                args.client_regions
            );
        }
        if !self.verdicts.is_empty() {
            let list: Vec<String> = self.verdicts.iter().map(|(s, n)| format!("{n} {s}")).collect();
            println!("  verdicts at the end: {}", list.join(", "));
        }
    }
}

/// Applies a topology of `pops` PoPs with `endpoints` TCP endpoints each and returns
/// every (PoP, endpoint) pair.
async fn apply_topology(
    access: &Access,
    pops: u32,
    endpoints: u32,
    client_regions: u32,
    dir: &Path,
) -> anyhow::Result<Arc<Vec<(String, String)>>> {
    let mut toml = String::new();
    // Regions first would be just as valid; PoPs first keeps the old layout when
    // there are none.
    let mut regions = String::new();
    let demand = if client_regions == 0 {
        0.0
    } else {
        0.6 * 100.0 * f64::from(pops) / f64::from(client_regions)
    };
    for r in 0..client_regions {
        regions.push_str(&format!(
            "[[regions]]\nid = \"client-{r:04}\"\ndemand = {demand:.3}\nclient_prefixes = [\"10.{}.{}.0/24\"]\n",
            200 + (r >> 8),
            r & 0xff
        ));
        let hints: Vec<String> = (0..10u32.min(pops))
            .map(|k| {
                let p = (r * 7 + k * 97) % pops;
                format!("\"pop-{p:04}\" = \"{}ms\"", 5 + k * 3)
            })
            .collect();
        regions.push_str(&format!("latency_hints = {{ {} }}\n", hints.join(", ")));
    }
    let mut targets = Vec::new();
    for p in 0..pops {
        let id = format!("pop-{p:04}");
        // Distinct service addresses; nothing is ever sent to them.
        toml.push_str(&format!(
            "[[pops]]\nid = \"{id}\"\ncapacity = 100\nipv4 = [\"10.{}.{}.1\"]\n",
            (p >> 8) & 0xff,
            p & 0xff
        ));
        for e in 0..endpoints {
            let name = format!("tcp-{e}");
            toml.push_str(&format!(
                "[[pops.endpoints]]\nname = \"{name}\"\nkind = \"tcp\"\naddress = \"127.0.0.1:9\"\n"
            ));
            targets.push((id.clone(), name));
        }
    }
    toml.push_str(&regions);
    let path = dir.join("bench-topology.toml");
    std::fs::write(&path, toml).with_context(|| format!("write {}", path.display()))?;
    let path = path.display().to_string();
    let out = access
        .meridianctl(&["--timeout", "30s", "apply", "-f", &path, "-o", "json"])
        .await?;
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
    if parsed.as_ref().map(|v| v["applied"] == serde_json::Value::Bool(true)) != Some(true) {
        bail!(
            "meridianctl apply failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Arc::new(targets))
}

/// Waits until the replica's health view tracks the applied PoPs, so the first batch
/// is not rejected for naming unknown PoPs.
async fn wait_for_health_topology(access: &Access, pops: usize) -> anyhow::Result<()> {
    let endpoint = &access.endpoint;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = health(access).await.map(|h| h.pops.len()).unwrap_or(0);
        if seen == pops {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("after 30 s the health view of {endpoint} shows {seen} PoPs, expected {pops}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The replica's health view, read as the admin (mtls).
async fn health(access: &Access) -> anyhow::Result<pb::GetHealthResponse> {
    let channel = access
        .grpc(TestPki::admin)?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;
    let mut client = pb::query_service_client::QueryServiceClient::new(channel);
    Ok(client.get_health(pb::GetHealthRequest {}).await?.into_inner())
}

/// How many PoPs are in each state, for a sanity line in the report.
async fn verdict_counts(access: &Access) -> anyhow::Result<Vec<(String, usize)>> {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for pop in health(access).await?.pops {
        let state = pb::PopState::try_from(pop.state).map_or_else(
            |_| pop.state.to_string(),
            |s| s.as_str_name().trim_start_matches("POP_STATE_").to_string(),
        );
        *counts.entry(state).or_default() += 1;
    }
    Ok(counts.into_iter().collect())
}

/// Sleeps `d`, returning early when a stream has stopped the run.
async fn stop_aware_sleep(shared: &Shared, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !shared.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50).min(until - Instant::now())).await;
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// utime + stime of a process, in clock ticks, from its `/proc/<pid>/stat`.
fn process_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain. After
    // the closing parenthesis come field 3 (state) onwards, so utime (14) and stime (15)
    // are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Machine-wide (busy, total) clock ticks from the `cpu` line of /proc/stat.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user].
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// (VmRSS, VmHWM) of a process in KiB.
fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// `getconf CLK_TCK` (the unit of /proc CPU times); 100 on every Linux we run on.
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

fn percentile_ms(sorted_us: &[u64], q: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let idx = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    Some(sorted_us[idx] as f64 / 1000.0)
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
