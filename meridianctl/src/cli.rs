//! The command line: clap definitions and every help text.
//!
//! Help texts describe what the control plane does today; `tests` below keep every
//! subcommand and argument documented.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::output::Format;

/// Operate Meridian: show the control plane, PoP health, events and the steering
/// plan; drain and undrain PoPs, apply a topology, ask what-if, restore an earlier
/// plan and resume steering. Talks gRPC to any control-plane replica.
#[derive(Debug, Parser)]
#[command(name = "meridianctl", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Control-plane gRPC endpoints, comma-separated; tried in order until one
    /// answers (default: the context file's, else http://127.0.0.1:7400).
    #[arg(long, short = 'e', env = "MERIDIAN_ENDPOINT", value_delimiter = ',', global = true)]
    pub endpoint: Vec<String>,

    /// A context file (TOML: `endpoint`, `ca`, `cert`, `key`, `token_file`) giving
    /// defaults for the flags; `scripts/run-local.sh` writes one. Default:
    /// ~/.config/meridian/context.toml when it exists.
    #[arg(long, value_name = "PATH", env = "MERIDIAN_CONTEXT", global = true)]
    pub context: Option<PathBuf>,

    /// PEM CA the control plane's certificate chains to (for https:// endpoints).
    #[arg(long, value_name = "PATH", env = "MERIDIAN_CA", global = true)]
    pub ca: Option<PathBuf>,

    /// PEM client certificate: your identity (CN) and role (O) for a control plane
    /// with mutual TLS.
    #[arg(long, value_name = "PATH", env = "MERIDIAN_CERT", global = true)]
    pub cert: Option<PathBuf>,

    /// PEM private key of --cert.
    #[arg(long, value_name = "PATH", env = "MERIDIAN_KEY", global = true)]
    pub key: Option<PathBuf>,

    /// Output format: `table` for people, `json` for scripts (one JSON document on
    /// stdout per command).
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table, global = true)]
    pub output: Format,

    /// Who you are, recorded with every drain, restore and apply (default:
    /// `$USER@hostname`). Only a claim: a control plane that enforces roles records
    /// the identity of your credential (certificate or token) instead.
    #[arg(long = "as", value_name = "IDENTITY", env = "MERIDIAN_IDENTITY", global = true)]
    pub identity: Option<String>,

    /// Bearer token for a control plane that enforces roles (`[auth] mode =
    /// "enforce"`): viewer, operator or admin. Prefer MERIDIAN_TOKEN or --token-file
    /// to keep it out of shell history.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "MERIDIAN_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// A file holding the bearer token (trailing whitespace ignored).
    #[arg(
        long,
        value_name = "PATH",
        env = "MERIDIAN_TOKEN_FILE",
        global = true,
        conflicts_with = "token"
    )]
    pub token_file: Option<std::path::PathBuf>,

    /// Act during a change freeze (`apply`, `undrain`, `set-capacity`,
    /// `restore-plan`; admins only, recorded with your reason).
    #[arg(long, global = true)]
    pub override_freeze: bool,

    /// Per-call timeout (connect and each RPC), e.g. 5s or 500ms.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    pub timeout: Duration,

    #[command(subcommand)]
    pub command: Command,
}

/// Shown after the options in `--help`: the output and exit-status contract.
const AFTER_HELP: &str = "\
Every command prints tables by default and one JSON document with `-o json`.
Exit status: 0 on success; 1 when the command failed (no replica reachable, an RPC
error) or the input was refused (`apply` with errors, a malformed --steps); 2 when
`status` finds no leader or an unhealthy store. `change show --watch` and
`drain --wait` exit with how the change ended: 0 completed or reverted, 4 rolled
back, 5 paused. A closed stdout (e.g. `| head`) is not an error.";

/// Shown after `change --help`: what `show --watch` exits with.
const WATCH_HELP: &str = "\
`change show ID --watch` redraws the change about every 500 ms until it ends or
pauses, then exits: 0 completed or reverted, 4 rolled back, 5 paused (the reason is
printed), 1 on an RPC error. With `-o json` it prints one JSON line per change of
state, phase or step, and the final record.";

/// The subcommands, one per operator task.
#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Show the cluster's event log, as stored (every replica answers with the same
    /// history): verdict changes, suspect regions, published plans, guardrails,
    /// slow-start stages and operator actions, with who did what, oldest first.
    Events {
        /// Only events about this PoP.
        #[arg(long)]
        pop: Option<String>,
        /// How many events (the newest).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only events at most this old, e.g. `1h`, `30m`, `2d`.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
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
    /// Drain a PoP: steering moves its traffic to the other PoPs. By default by a
    /// ladder, 100 % → 50 % → 0 % of its weight (`--steps 50,0`), each rung ACKed by
    /// every agent, baked (`--bake`, default 60s) and analysed before the next; a
    /// failed analysis rolls it back, an inconclusive one pauses it. `--now` drains
    /// in one step instead. Refused (naming the guardrail) when the rest would be
    /// pushed over capacity or it is the last PoP of a region or prefix, unless
    /// --force. With --wait, exits like `change show --watch` (0 completed, 4 rolled
    /// back, 5 paused).
    Drain {
        /// The PoP id.
        pop: String,
        /// Why (required; recorded with the change).
        #[arg(long)]
        reason: String,
        /// Override a guardrail refusal (the overridden rule is recorded); works
        /// with a ladder (decided for its last rung) and with --now.
        #[arg(long)]
        force: bool,
        /// The ladder: the share of its weight (percent) the PoP keeps at each rung,
        /// strictly decreasing and ending at 0, e.g. `--steps 75,25,0`
        /// (default 50,0: 100 → 50 % → drained).
        #[arg(long, value_delimiter = ',', value_parser = parse_percent, conflicts_with = "now")]
        steps: Vec<u8>,
        /// How long each rung is held once every agent has it, e.g. `30s`, `2m`
        /// (default 60s).
        #[arg(long, value_parser = parse_bake, conflicts_with = "now")]
        bake: Option<Duration>,
        /// Drain only for this client region (repeatable); default: every region.
        #[arg(long = "region", value_name = "REGION")]
        regions: Vec<String>,
        /// Drain at once, in one step, instead of by a ladder.
        #[arg(long)]
        now: bool,
        /// Follow the ladder until it ends, drawing its progress (as `change show
        /// --watch`), and exit with how it ended: 0 completed, 4 rolled back,
        /// 5 paused.
        #[arg(long, conflicts_with = "now")]
        wait: bool,
    },
    /// Freeze changes for a while (a release window), globally or per PoP or
    /// client region. The global freeze (no --pop, no --region) refuses topology
    /// applies, undrains, capacity changes and plan restores; a PoP freeze refuses
    /// undrains and capacity changes of that PoP; any freeze, global, PoP or
    /// region, refuses topology applies and plan restores (they touch every PoP and
    /// region). Each lasts until it ends or `unfreeze`; freezing a scope again
    /// replaces its freeze. Drains, automatic failover and rollbacks stay allowed
    /// (they are the remedy). An admin may act anyway with --override-freeze and a
    /// reason (recorded). Prints every freeze in force.
    Freeze {
        /// How long, e.g. `2h` or `30m` (1m to 14d).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Why (required; recorded).
        #[arg(long)]
        reason: String,
        /// Freeze only this PoP (repeatable; must be in the applied topology).
        #[arg(long = "pop", value_name = "POP")]
        pops: Vec<String>,
        /// Freeze only this client region (repeatable; must be in the applied
        /// topology).
        #[arg(long = "region", value_name = "REGION")]
        regions: Vec<String>,
    },
    /// Lift the global freeze (no --pop, no --region) or the freezes of the named
    /// PoPs and regions; the others stay in force (admins). Prints every freeze
    /// still in force.
    Unfreeze {
        /// Why (recorded).
        #[arg(long, default_value = "")]
        reason: String,
        /// Lift this PoP's freeze (repeatable).
        #[arg(long = "pop", value_name = "POP")]
        pops: Vec<String>,
        /// Lift this client region's freeze (repeatable).
        #[arg(long = "region", value_name = "REGION")]
        regions: Vec<String>,
    },
    /// List change records (drain ladders, drains, undrains, capacity changes),
    /// newest first: kind, target, state, step, phase, who.
    Changes {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only changes still active (pending, progressing, paused, rolling back).
        #[arg(long)]
        active: bool,
    },
    /// Show one change in detail (`change show ID [--watch]`), or act on it: pause it
    /// (it stays on its rung), resume it, roll it back (the PoP's intents from before
    /// the change come back) or revert a completed one within the revert window.
    #[command(subcommand, after_help = WATCH_HELP)]
    Change(ChangeCommand),
    /// Set the capacity steering plans a PoP with (in the topology's unit), for a
    /// while (`--for 30m`) or until reverted or replaced. Recorded as a change of
    /// kind `set_capacity`; refused during a freeze unless --override-freeze (admins).
    SetCapacity {
        /// The PoP id.
        pop: String,
        /// The new capacity (> 0).
        #[arg(value_parser = parse_capacity)]
        capacity: f64,
        /// How long the override lasts, e.g. `30m` (default: until reverted).
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Why (required; recorded with the change).
        #[arg(long)]
        reason: String,
    },
    /// Put a drained PoP back in service (it comes back through slow start).
    Undrain {
        /// The PoP id.
        pop: String,
        /// Why (recorded with the change).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Show the plan that would result from a drain or a PoP going down, and which
    /// guardrails would fire, without changing anything.
    WhatIf {
        /// `drain` (an operator drain) or `down` (the PoP fails).
        #[arg(value_parser = ["drain", "down"])]
        scenario: String,
        /// The PoP id.
        pop: String,
    },
    /// Republish an earlier plan version and pin it: steering publishes nothing
    /// until `resume-steering`.
    RestorePlan {
        /// The plan version to republish (see `meridianctl plan --version`).
        version: u64,
        /// Why (required; recorded with the event).
        #[arg(long)]
        reason: String,
    },
    /// Lift a pin set by `restore-plan`: steering publishes computed plans again.
    ResumeSteering {
        /// Why (recorded with the event).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Show the agents connected to any replica and the plan version each applied
    /// (or rejected, with the reason).
    Agents,
    /// Issue certificates for a Meridian cluster: a CA, then server and client
    /// certificates signed by it (no control plane is contacted).
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Apply a topology file (PoPs, client regions, policy). Every error is listed
    /// with its path and nothing is stored unless the whole file is valid.
    /// `--dry-run` prints the validated diff against what is stored.
    Apply {
        /// The topology TOML file.
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// Validate and show the diff; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Why (recorded with the change).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// `meridianctl change …`.
#[derive(Debug, Subcommand)]
pub enum ChangeCommand {
    /// Show one change: kind, target, who and why, its state, the ladder with the
    /// current rung, the phase, the canary wave, the bake's progress, the last
    /// analysis, how many agents have the current plan (and which are behind or
    /// held by a canary wave), and its history.
    #[command(after_help = WATCH_HELP)]
    Show {
        /// The change id (see `meridianctl changes`).
        id: String,
        /// Redraw about every 500 ms until the change ends or pauses; exit 0
        /// completed or reverted, 4 rolled back, 5 paused.
        #[arg(long)]
        watch: bool,
    },
    /// Hold a change on its current rung.
    Pause {
        /// The change id (see `meridianctl changes`).
        id: String,
        /// Why (recorded).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Continue a paused change: its rung is applied, ACKed, baked and analysed again.
    Resume {
        /// The change id.
        id: String,
        /// Why (recorded).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Approve a change that policy.approval_required holds pending (drains, forced
    /// drains, capacity changes): it starts once approved. The one who started it
    /// cannot approve it.
    Approve {
        /// The change id.
        id: String,
        /// Why (recorded).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Roll a change back from any rung: the intents from before it come back and
    /// steering computes from today's health.
    Rollback {
        /// The change id.
        id: String,
        /// Why (recorded).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Revert a completed change within the revert window: the intents from before
    /// it come back (refused while a newer change holds its PoP; an active change is
    /// rolled back instead).
    Revert {
        /// The change id.
        id: String,
        /// Why (required; recorded).
        #[arg(long)]
        reason: String,
    },
}

/// The drain ladder a drain without `--steps` walks: 100 → 50 % → 0 %.
pub const DEFAULT_STEPS: [u8; 2] = [50, 0];

/// The bake of each rung without `--bake`.
pub const DEFAULT_BAKE: Duration = Duration::from_secs(60);

/// One `--steps` value: a percentage from 0 to 100.
fn parse_percent(s: &str) -> Result<u8, String> {
    match s.trim().trim_end_matches('%').parse::<u8>() {
        Ok(p) if p <= 100 => Ok(p),
        _ => Err(format!(
            "`{s}` is not a percentage from 0 to 100 (each step is the share of its weight the PoP keeps, e.g. --steps 50,0)"
        )),
    }
}

/// `--bake`: a human duration of at least one second.
fn parse_bake(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration ({e}); e.g. 30s, 2m, 1h"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("`{s}` is too short: a rung bakes at least 1s"));
    }
    Ok(d)
}

/// `set-capacity N`: a finite number above 0.
fn parse_capacity(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(c) if c.is_finite() && c > 0.0 => Ok(c),
        _ => Err(format!(
            "`{s}` is not a capacity: give a number above 0, in the topology's unit"
        )),
    }
}

/// Checks a whole ladder: at least one step, each a percentage, strictly
/// decreasing, ending at 0. The message says what to write instead.
pub fn validate_steps(steps: &[u8]) -> Result<(), String> {
    let example = "e.g. --steps 50,0 or --steps 75,25,0";
    let Some(last) = steps.last() else {
        return Err(format!("--steps needs at least one step ({example})"));
    };
    if let Some(p) = steps.iter().find(|p| **p > 100) {
        return Err(format!("--steps: {p} is not a percentage from 0 to 100 ({example})"));
    }
    if let Some(w) = steps.windows(2).find(|w| w[1] >= w[0]) {
        return Err(format!(
            "--steps must go strictly down: {} after {} ({example})",
            w[1], w[0]
        ));
    }
    if *last != 0 {
        return Err(format!("--steps must end at 0 (drained), not {last} ({example})"));
    }
    Ok(())
}

/// `meridianctl certs …`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a CA in DIR (`ca.pem`, and `ca.key` with mode 0600). Refuses to
    /// overwrite an existing CA.
    Init {
        /// Where the CA's files go.
        #[arg(long)]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "Meridian CA")]
        name: String,
    },
    /// Issue a certificate signed by the CA in DIR, written as `<out>/<name>.pem`
    /// and `<out>/<name>.key`. The subject carries who and what: CN = NAME, O = ROLE,
    /// OU = REGION (probers).
    Issue {
        /// Where the CA (`ca.pem`, `ca.key`) is.
        #[arg(long)]
        dir: PathBuf,
        /// The identity: a person, or a replica, prober or agent id.
        #[arg(long)]
        name: String,
        /// What it may do: viewer, operator, admin (people); prober, agent, replica.
        #[arg(long, value_parser = ["viewer", "operator", "admin", "prober", "agent", "replica"])]
        role: String,
        /// A prober's region (required for `--role prober`).
        #[arg(long)]
        region: Option<String>,
        /// DNS names this certificate serves (makes it a server certificate too;
        /// replicas need it).
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// IP addresses this certificate serves (makes it a server certificate too).
        #[arg(long = "ip", value_name = "ADDR")]
        ip: Vec<std::net::IpAddr>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Output directory (default: DIR).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_and_argument_is_documented() {
        let cli = Cli::command();
        let mut names = Vec::new();
        for sub in cli.get_subcommands() {
            names.push(sub.get_name().to_string());
            assert!(
                sub.get_about().is_some_and(|a| !a.to_string().is_empty()),
                "`{}` has no about",
                sub.get_name()
            );
            for arg in sub.get_arguments() {
                if arg.get_id() == "help" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "`{} {}` has no help text",
                    sub.get_name(),
                    arg.get_id()
                );
            }
        }
        for expected in [
            "status",
            "health",
            "explain",
            "events",
            "plan",
            "drain",
            "undrain",
            "what-if",
            "restore-plan",
            "resume-steering",
            "agents",
            "apply",
            "certs",
            "changes",
            "change",
            "freeze",
            "unfreeze",
            "set-capacity",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "missing subcommand {expected}: {names:?}"
            );
        }
    }

    #[test]
    fn help_describes_what_exists_and_documents_json() {
        let mut cli = Cli::command();
        let help = cli.render_long_help().to_string();
        assert!(!help.contains("later release"), "stale wording in --help:\n{help}");
        assert!(help.contains("steering plan"), "{help}");
        assert!(help.contains("-o, --output"), "{help}");
        assert!(help.contains("json"), "{help}");
        assert!(help.contains("Exit status: 0 on success"), "{help}");
        for sub in cli.get_subcommands_mut() {
            let text = sub.render_long_help().to_string();
            assert!(
                !text.contains("later release"),
                "stale wording in `{}`:\n{text}",
                sub.get_name()
            );
        }
    }

    #[test]
    fn parses_the_flags_end_to_end_tests_use() {
        let cli = Cli::try_parse_from([
            "meridianctl",
            "-e",
            "http://a:1,http://b:2",
            "--timeout",
            "3s",
            "status",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.endpoint, vec!["http://a:1", "http://b:2"]);
        assert_eq!(cli.timeout, Duration::from_secs(3));
        assert_eq!(cli.output, Format::Json);
        assert!(matches!(cli.command, Command::Status));

        let cli = Cli::try_parse_from(["meridianctl", "apply", "-f", "t.toml", "--dry-run"]).unwrap();
        assert_eq!(cli.output, Format::Table);
        match cli.command {
            Command::Apply { file, dry_run, reason } => {
                assert_eq!(file, PathBuf::from("t.toml"));
                assert!(dry_run);
                assert_eq!(reason, "");
            }
            other => panic!("parsed as {other:?}"),
        }

        let cli = Cli::try_parse_from(["meridianctl", "drain", "ams1", "--reason", "fibre cut"]).unwrap();
        match cli.command {
            Command::Drain {
                pop,
                reason,
                force,
                steps,
                ..
            } => {
                assert_eq!((pop.as_str(), reason.as_str(), force), ("ams1", "fibre cut", false));
                assert!(steps.is_empty(), "without --steps the default ladder is chosen later");
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from([
            "meridianctl",
            "drain",
            "ams1",
            "--reason",
            "maintenance",
            "--steps",
            "75,50,0",
            "--bake",
            "2m",
        ])
        .unwrap();
        match cli.command {
            Command::Drain { steps, bake, .. } => {
                assert_eq!(steps, vec![75, 50, 0]);
                assert_eq!(bake, Some(Duration::from_secs(120)));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(
            Cli::try_parse_from(["meridianctl", "drain", "ams1", "--reason", "x", "--steps", "300"]).is_err(),
            "a step is a percentage"
        );
    }

    #[test]
    fn drain_takes_now_wait_and_repeated_regions() {
        let cli = Cli::try_parse_from([
            "meridianctl",
            "drain",
            "fra1",
            "--reason",
            "x",
            "--region",
            "eu-west",
            "--region",
            "eu-central",
            "--wait",
            "--force",
        ])
        .unwrap();
        match cli.command {
            Command::Drain {
                regions,
                wait,
                now,
                force,
                ..
            } => {
                assert_eq!(regions, vec!["eu-west", "eu-central"]);
                assert!(wait && !now && force);
            }
            other => panic!("parsed as {other:?}"),
        }
        let now = Cli::try_parse_from(["meridianctl", "drain", "fra1", "--reason", "x", "--now", "--force"]).unwrap();
        assert!(matches!(
            now.command,
            Command::Drain {
                now: true,
                force: true,
                ..
            }
        ));
        for conflict in [
            &["--now", "--steps", "50,0"][..],
            &["--now", "--bake", "1m"],
            &["--now", "--wait"],
        ] {
            let mut argv = vec!["meridianctl", "drain", "fra1", "--reason", "x"];
            argv.extend_from_slice(conflict);
            assert!(Cli::try_parse_from(&argv).is_err(), "{conflict:?} must be refused");
        }
    }

    #[test]
    fn malformed_steps_and_bakes_are_refused_with_what_to_write() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["meridianctl", "drain", "fra1", "--reason", "x"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(drop).map_err(|e| e.to_string())
        };
        let err = parse(&["--steps", "50,abc"]).unwrap_err();
        assert!(err.contains("`abc` is not a percentage from 0 to 100"), "{err}");
        let err = parse(&["--steps", "150,0"]).unwrap_err();
        assert!(err.contains("`150` is not a percentage"), "{err}");
        let err = parse(&["--bake", "two minutes"]).unwrap_err();
        assert!(
            err.contains("is not a duration") && err.contains("e.g. 30s, 2m"),
            "{err}"
        );
        let err = parse(&["--bake", "10ms"]).unwrap_err();
        assert!(err.contains("at least 1s"), "{err}");
        assert!(parse(&["--steps", "75%,25%,0%", "--bake", "90s"]).is_ok());
    }

    #[test]
    fn a_ladder_goes_strictly_down_to_zero() {
        assert_eq!(validate_steps(&[50, 0]), Ok(()));
        assert_eq!(validate_steps(&[100, 75, 50, 0]), Ok(()));
        assert_eq!(validate_steps(&[0]), Ok(()));
        let err = validate_steps(&[]).unwrap_err();
        assert!(err.contains("at least one step"), "{err}");
        let err = validate_steps(&[50, 60, 0]).unwrap_err();
        assert_eq!(
            err,
            "--steps must go strictly down: 60 after 50 (e.g. --steps 50,0 or --steps 75,25,0)"
        );
        let err = validate_steps(&[50, 50, 0]).unwrap_err();
        assert!(err.contains("50 after 50"), "{err}");
        let err = validate_steps(&[75, 25]).unwrap_err();
        assert!(err.starts_with("--steps must end at 0 (drained), not 25"), "{err}");
        let err = validate_steps(&[150, 0]).unwrap_err();
        assert!(err.contains("150 is not a percentage"), "{err}");
    }

    #[test]
    fn change_show_revert_changes_active_and_set_capacity_parse() {
        let cli = Cli::try_parse_from(["meridianctl", "change", "show", "chg-1", "--watch", "-o", "json"]).unwrap();
        assert_eq!(cli.output, Format::Json);
        assert!(matches!(cli.command, Command::Change(ChangeCommand::Show { ref id, watch: true }) if id == "chg-1"));
        assert!(
            Cli::try_parse_from(["meridianctl", "change", "revert", "chg-1"]).is_err(),
            "a revert needs a reason"
        );
        let cli = Cli::try_parse_from(["meridianctl", "change", "revert", "chg-1", "--reason", "back"]).unwrap();
        assert!(matches!(cli.command, Command::Change(ChangeCommand::Revert { .. })));
        let cli = Cli::try_parse_from(["meridianctl", "changes", "--active"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Changes {
                active: true,
                limit: 50
            }
        ));
        let cli = Cli::try_parse_from([
            "meridianctl",
            "set-capacity",
            "fra1",
            "800",
            "--for",
            "30m",
            "--reason",
            "half the racks",
            "--override-freeze",
        ])
        .unwrap();
        assert!(cli.override_freeze);
        match cli.command {
            Command::SetCapacity {
                pop,
                capacity,
                duration,
                reason,
            } => {
                assert_eq!(
                    (pop.as_str(), capacity, reason.as_str()),
                    ("fra1", 800.0, "half the racks")
                );
                assert_eq!(duration, Some(Duration::from_secs(1800)));
            }
            other => panic!("parsed as {other:?}"),
        }
        for bad in ["0", "-5", "lots", "NaN"] {
            assert!(
                Cli::try_parse_from(["meridianctl", "set-capacity", "fra1", bad, "--reason", "x"]).is_err(),
                "{bad}"
            );
        }
        assert!(
            Cli::try_parse_from(["meridianctl", "set-capacity", "fra1", "800"]).is_err(),
            "reason required"
        );
    }

    #[test]
    fn freeze_and_unfreeze_take_pops_and_regions() {
        let cli = Cli::try_parse_from([
            "meridianctl",
            "freeze",
            "--for",
            "2h",
            "--reason",
            "rack move",
            "--pop",
            "fra1",
            "--pop",
            "ams1",
            "--region",
            "eu-west",
        ])
        .unwrap();
        match cli.command {
            Command::Freeze {
                duration,
                reason,
                pops,
                regions,
            } => {
                assert_eq!(duration, Duration::from_secs(7200));
                assert_eq!(reason, "rack move");
                assert_eq!(pops, ["fra1", "ams1"]);
                assert_eq!(regions, ["eu-west"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        // No --pop and no --region: the global freeze.
        let cli = Cli::try_parse_from(["meridianctl", "freeze", "--for", "30m", "--reason", "x"]).unwrap();
        assert!(matches!(cli.command, Command::Freeze { pops, regions, .. } if pops.is_empty() && regions.is_empty()));
        let cli = Cli::try_parse_from(["meridianctl", "unfreeze", "--region", "eu-west"]).unwrap();
        match cli.command {
            Command::Unfreeze { pops, regions, .. } => {
                assert!(pops.is_empty());
                assert_eq!(regions, ["eu-west"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("freeze")
            .unwrap()
            .render_long_help()
            .to_string();
        for words in ["--pop", "--region", "drains", "--override-freeze", "PoP freeze"] {
            assert!(help.contains(words), "`freeze --help` lacks {words}:\n{help}");
        }
    }

    #[test]
    fn help_documents_the_watch_exit_statuses() {
        let mut cli = Cli::command();
        let help = cli.render_long_help().to_string();
        assert!(
            help.contains("0 completed or reverted, 4 rolled") && help.contains("5 paused"),
            "{help}"
        );
        let change = cli.find_subcommand_mut("change").unwrap();
        let show = change
            .find_subcommand_mut("show")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(show.contains("4 rolled back, 5 paused"), "{show}");
    }

    #[test]
    fn drain_requires_a_reason_and_what_if_a_known_scenario() {
        assert!(Cli::try_parse_from(["meridianctl", "drain", "ams1"]).is_err());
        assert!(Cli::try_parse_from(["meridianctl", "what-if", "explode", "ams1"]).is_err());
        assert!(Cli::try_parse_from(["meridianctl", "what-if", "down", "ams1"]).is_ok());
    }

    #[test]
    fn events_since_takes_a_human_duration() {
        let cli = Cli::try_parse_from(["meridianctl", "events", "--since", "1h", "--pop", "fra1"]).unwrap();
        match cli.command {
            Command::Events { pop, limit, since } => {
                assert_eq!(
                    (pop.as_deref(), limit, since),
                    (Some("fra1"), 50, Some(std::time::Duration::from_secs(3600)))
                );
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = Cli::try_parse_from(["meridianctl", "events"]).unwrap();
        assert!(matches!(cli.command, Command::Events { since: None, .. }));
        assert!(Cli::try_parse_from(["meridianctl", "events", "--since", "an hour"]).is_err());
    }
}
