//! The human renderings: one function per view, each returning the whole text
//! (every line ends with a newline). Tables use comfy-table's condensed UTF-8 preset.

use std::collections::BTreeSet;
use std::fmt::Display;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use crate::views::rfc3339_ms;

use crate::views::{
    AgentView, ApplyView, ChangeDetailView, ChangeView, EventView, ExplainView, HealthView, PlanView, ResumeView,
    StatusView, WhatIfView,
};

/// `meridianctl status`: a block of `key value` lines, then the replica table.
pub fn status(v: &StatusView) -> String {
    let mut out = Lines::default();
    let role = if v.answering_replica_leads {
        "leader"
    } else {
        "follower"
    };
    out.line(format_args!("answered by   {} ({}, {role})", v.answered_by, v.endpoint));
    match &v.leader {
        Some(l) => out.line(format_args!(
            "leader        {} (fence revision {})",
            l, v.leader_revision
        )),
        None => out.line("leader        NONE — no replica holds the leader key"),
    }
    let health = if v.store.healthy {
        "healthy".to_string()
    } else {
        format!("UNHEALTHY: {}", v.store.detail)
    };
    out.line(format_args!(
        "store         {} — {} (revision {})",
        v.store.backend, health, v.store.revision
    ));
    if !v.store.endpoints.is_empty() {
        out.line(format_args!("store at      {}", v.store.endpoints.join(", ")));
    }
    out.line(format_args!("ready         {}", if v.ready { "yes" } else { "no" }));
    if v.plan_version == 0 {
        out.line("plan version  none published yet");
    } else {
        out.line(format_args!("plan version  {}", v.plan_version));
    }
    let mut table = table(["REPLICA", "ROLE", "GRPC", "ADMIN", "VERSION"]);
    for r in &v.replicas {
        table.add_row(vec![
            r.id.clone(),
            if r.leader { "leader".into() } else { "follower".into() },
            r.grpc_address.clone(),
            r.admin_address.clone(),
            r.version.clone(),
        ]);
    }
    out.line(table);
    out.0
}

/// `meridianctl health`: one row per PoP, one column per prober region (suspect
/// regions marked), then the rule that decided.
pub fn health(v: &HealthView) -> String {
    if v.pops.is_empty() {
        return "no PoPs: apply a topology first (meridianctl apply -f topology.toml)\n".into();
    }
    let regions: BTreeSet<&str> = v
        .pops
        .iter()
        .flat_map(|p| p.regions.iter().map(|r| r.region.as_str()))
        .collect();
    let mut header = vec!["POP".to_string(), "VERDICT".to_string()];
    for r in &regions {
        let suspect = if v.suspect_regions.iter().any(|s| s == r) {
            " (SUSPECT)"
        } else {
            ""
        };
        header.push(format!("{r}{suspect}"));
    }
    header.push("RULE".into());
    let mut table = table(header);
    for p in &v.pops {
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
    format!("{table}\n")
}

/// `meridianctl explain POP`: the verdict, then an indented tree of regions, probers
/// and endpoints with the five most recent results and the newest failure's detail.
pub fn explain(v: &ExplainView) -> String {
    let mut out = Lines::default();
    out.line(format_args!("{}: {} — {}", v.pop, v.state, v.rule));
    for r in &v.regions {
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
        out.line(format_args!(
            "  region {}: {}{flags}, latency {}",
            r.region,
            r.state,
            ms(r.latency_ms)
        ));
        for p in &r.probers {
            out.line(format_args!("    prober {}: {}", p.prober, p.view));
            for e in &p.endpoints {
                let recent: Vec<String> = e
                    .recent
                    .iter()
                    .take(5)
                    .map(|x| {
                        if x.success {
                            format!("ok {}", ms(x.latency_ms))
                        } else {
                            x.failure_class.to_string()
                        }
                    })
                    .collect();
                out.line(format_args!(
                    "      {}: {}{} ({} ok / {} failed in a row) recent: {}",
                    e.endpoint,
                    e.state,
                    if e.fresh { "" } else { " STALE" },
                    e.consecutive_successes,
                    e.consecutive_failures,
                    recent.join(", ")
                ));
                if let Some(ev) = &e.evidence {
                    let verdict = if ev.llr >= ev.threshold {
                        "enough for DOWN".to_string()
                    } else {
                        format!(
                            "DOWN after {} more timeouts or {} refused/HTTP errors",
                            ev.soft_failures_needed, ev.hard_failures_needed
                        )
                    };
                    out.line(format_args!(
                        "        evidence {:.1} of {:.1} (loss {:.1} %, hard {:.2} %): {verdict}",
                        ev.llr,
                        ev.threshold,
                        ev.loss * 100.0,
                        ev.hard_loss * 100.0,
                    ));
                }
                // The newest failure's own words, when the prober sent any.
                if let Some(x) = e.recent.iter().take(5).find(|x| !x.success && !x.detail.is_empty()) {
                    out.line(format_args!("        last failure ({}): {}", x.failure_class, x.detail));
                }
            }
        }
    }
    out.0
}

/// `meridianctl events`: one line per event (id, RFC 3339 time, kind, actor when
/// known, message), its evidence indented below.
pub fn events(events: &[EventView]) -> String {
    if events.is_empty() {
        return "no events\n".into();
    }
    let mut out = Lines::default();
    for e in events {
        let at = e.at.as_deref().unwrap_or("-");
        let by = match (e.actor.is_empty(), e.role.is_empty()) {
            (true, _) => String::new(),
            (false, true) => format!(" by {}", e.actor),
            (false, false) => format!(" by {} ({})", e.actor, e.role),
        };
        out.line(format_args!("#{} {at} [{}]{by} {}", e.id, e.kind, e.message));
        for line in &e.evidence {
            out.line(format_args!("    {line}"));
        }
    }
    out.0
}

/// A plan: a header line, the region → weights table, the PoP table (when the plan
/// has PoP states), then its reasons and guardrails.
pub fn plan(p: &PlanView) -> String {
    let mut out = Lines::default();
    let restored = match p.restored_from {
        Some(v) => format!(", restored from v{v}"),
        None => String::new(),
    };
    out.line(format_args!(
        "plan v{} by {} (topology revision {}, DNS TTL {}s{restored})",
        p.version, p.published_by, p.topology_revision, p.dns_ttl_seconds
    ));
    if !p.epoch.is_empty() {
        let hash: String = p.content_hash.chars().take(16).collect();
        out.line(format_args!("store epoch {}, content hash {hash}", p.epoch));
    }
    let mut regions = table(["REGION", "POPS (weight)"]);
    for r in &p.regions {
        let pops: Vec<String> = r
            .pops
            .iter()
            .map(|w| format!("{} {:.1}%", w.pop, w.weight * 100.0))
            .collect();
        regions.add_row(vec![r.region.clone(), pops.join(", ")]);
    }
    out.line(regions);
    if !p.pops.is_empty() {
        let mut pops = table(["POP", "STATE", "LOAD / CAPACITY", "UTILISATION", "ANYCAST"]);
        for s in &p.pops {
            let anycast: Vec<String> = p
                .anycast
                .iter()
                .filter(|a| a.pop == s.pop)
                .map(|a| match a.action {
                    "prepend" => format!("{} prepend ×{}", a.prefix, a.prepend_count),
                    other => format!("{} {}", a.prefix, other.replace('_', " ")),
                })
                .collect();
            pops.add_row(vec![
                s.pop.clone(),
                s.state.to_string(),
                format!("{:.0} / {:.0}", s.load, s.capacity),
                format!("{:.0}%", s.utilisation * 100.0),
                if anycast.is_empty() {
                    "-".into()
                } else {
                    anycast.join(", ")
                },
            ]);
        }
        out.line(pops);
    }
    for r in &p.reasons {
        out.line(format_args!("why: {r}"));
    }
    for g in &p.guardrails {
        out.line(format_args!("guardrail: {g}"));
    }
    out.0
}

/// `meridianctl what-if`: says nothing changed, the plan, and what would fire.
pub fn what_if(v: &WhatIfView) -> String {
    let mut out = Lines::default();
    out.line("nothing was changed; this is what steering would publish:");
    out.0.push_str(&plan(&v.plan));
    if v.guardrails_fired.is_empty() {
        out.line("no guardrail would fire");
    }
    for g in &v.guardrails_fired {
        out.line(format_args!("would fire: {g}"));
    }
    out.0
}

/// `meridianctl restore-plan VERSION`: the new version, the pin, and the plan.
pub fn restored(requested: u64, p: &PlanView) -> String {
    let mut out = Lines::default();
    out.line(format_args!(
        "restored version {requested} as version {}; steering is pinned until `meridianctl resume-steering`",
        p.version
    ));
    out.0.push_str(&plan(p));
    out.0
}

/// `meridianctl agents`: one row per agent; WAVE is the rollout wave (with the
/// version a canary wave holds it on); REJECTED names the version and reason.
pub fn agents(agents: &[AgentView]) -> String {
    if agents.is_empty() {
        return "no agents connected\n".into();
    }
    let mut table = table(["AGENT", "KIND", "REPLICA", "WAVE", "APPLIED", "REJECTED"]);
    for a in agents {
        let rejected = match (a.nacked_version, &a.nack_reason) {
            (Some(v), Some(r)) => format!("v{v}: {r}"),
            _ => "-".into(),
        };
        let wave = match (&a.wave, a.held_on_version) {
            (Some(w), Some(v)) => format!("{w} (held on v{v})"),
            (Some(w), None) => w.clone(),
            (None, _) => "-".into(),
        };
        table.add_row(vec![
            a.agent_id.clone(),
            a.kind.to_string(),
            a.replica.clone(),
            wave,
            format!("v{}", a.applied_version),
            rejected,
        ]);
    }
    format!("{table}\n{}", anycast_reports(agents))
}

/// Per Anycast agent and prefix: what the plan asks for and what the speaker
/// announces (empty without Anycast agents).
pub fn anycast_reports(agents: &[AgentView]) -> String {
    let mut out = String::new();
    for a in agents.iter().filter(|a| !a.anycast.is_empty()) {
        for p in &a.anycast {
            let state = |action: &str, prepend: u32| match action {
                "prepend" => format!("prepend ×{prepend}"),
                other => other.replace('_', " "),
            };
            out.push_str(&format!(
                "{} {}: desired {} (v{}), actual {}{}\n",
                a.agent_id,
                p.prefix,
                state(p.desired, p.desired_prepend),
                p.plan_version,
                state(p.actual, p.actual_prepend),
                match (&p.detail, p.in_sync) {
                    (Some(d), _) => format!(" — {d}"),
                    (None, false) => " — out of sync".to_string(),
                    (None, true) => String::new(),
                }
            ));
        }
    }
    out
}

/// `meridianctl drain` / `undrain`: the change's summary and id.
pub fn change(c: &ChangeView) -> String {
    format!("{} ({})\n", c.summary, c.id)
}

/// `meridianctl freeze` / `unfreeze`: every freeze in force, as a table, and
/// what they refuse.
pub fn freeze(v: &crate::views::FreezeView) -> String {
    if v.freezes.is_empty() {
        return if v.frozen {
            // An older server: no list, only the end.
            format!(
                "changes frozen until {}: applies, undrains, capacity changes and restores are refused; drains and rollbacks stay allowed\n",
                v.until.as_deref().unwrap_or("-")
            )
        } else {
            "changes are not frozen\n".into()
        };
    }
    let mut t = table(["SCOPE", "TARGET", "UNTIL", "BY", "REASON"]);
    for f in &v.freezes {
        t.add_row(vec![
            f.scope.clone(),
            dash(f.target.as_deref().unwrap_or("")),
            dash(f.until.as_deref().unwrap_or("")),
            dash(&f.requested_by),
            dash(&f.reason),
        ]);
    }
    let global = v.freezes.iter().any(|f| f.scope == "global");
    let pops: Vec<&str> = v
        .freezes
        .iter()
        .filter(|f| f.scope == "pop")
        .filter_map(|f| f.target.as_deref())
        .collect();
    let refused = if global {
        "applies, undrains, capacity changes and restores are refused everywhere".to_string()
    } else if pops.is_empty() {
        "topology applies and plan restores are refused".to_string()
    } else {
        format!(
            "topology applies and plan restores are refused, and undrains and capacity changes of {}",
            pops.join(", ")
        )
    };
    format!(
        "{t}\n{refused}; drains and rollbacks stay allowed; an admin may act anyway with --override-freeze and a reason\n"
    )
}

/// `meridianctl changes`: one row per change, newest first.
pub fn changes(list: &[ChangeView]) -> String {
    if list.is_empty() {
        return "no changes\n".into();
    }
    let mut t = table(["ID", "KIND", "TARGET", "STATE", "STEP", "PHASE", "BY"]);
    for c in list {
        t.add_row(vec![
            c.id.clone(),
            dash(&c.kind),
            dash(&c.target),
            c.state.to_string(),
            format!("{}/{}", c.step, c.total_steps),
            dash(c.phase.as_deref().unwrap_or("")),
            c.started_by.clone(),
        ]);
    }
    format!("{t}\n")
}

/// Cells of the bake bar.
const BAR_CELLS: usize = 20;

/// `meridianctl change show ID`: who, why, where the change is on its ladder, the
/// bake's progress by `now_ms` (the local clock), the last analysis, the agents and
/// the history.
pub fn change_detail(v: &ChangeDetailView, now_ms: i64) -> String {
    let mut out = Lines::default();
    let regions = if v.regions.is_empty() {
        String::new()
    } else {
        format!(" (regions {})", v.regions.join(", "))
    };
    out.line(format_args!(
        "change   {}: {} {}{regions}",
        v.id,
        if v.kind.is_empty() { "change" } else { &v.kind },
        v.target
    ));
    let role = if v.role.is_empty() {
        String::new()
    } else {
        format!(" ({})", v.role)
    };
    let at = v
        .created_at_unix_ms
        .and_then(rfc3339_ms)
        .map(|t| format!(" at {t}"))
        .unwrap_or_default();
    out.line(format_args!("by       {}{role}{at}", dash(&v.started_by)));
    out.line(format_args!("reason   {}", dash(&v.reason)));
    match &v.state_reason {
        Some(why) => out.line(format_args!("state    {}: {why}", v.state)),
        None => out.line(format_args!("state    {}", v.state)),
    }
    let ladder = ladder(v);
    if ladder.is_empty() {
        out.line(format_args!("step     {} of {}", v.step, v.total_steps));
    } else {
        out.line(format_args!("step     {} of {}: {ladder}", v.step, v.total_steps));
    }
    if let Some(phase) = &v.phase {
        let since = v
            .phase_since_unix_ms
            .and_then(rfc3339_ms)
            .map(|t| format!(" since {t}"))
            .unwrap_or_default();
        out.line(format_args!("phase    {phase}{since}"));
    }
    if !v.canary_agents.is_empty() {
        out.line(format_args!("canary   {}", v.canary_agents.join(", ")));
    }
    if matches!(v.phase.as_deref(), Some("bake" | "canary_bake")) {
        match (v.phase_since_unix_ms, v.phase_deadline_unix_ms) {
            (Some(since), Some(until)) => out.line(format_args!("bake     {}", bake_bar(since, until, now_ms))),
            _ => out.line("bake     (the control plane sent no deadline)"),
        }
    }
    if !v.analysis.is_empty() {
        out.line("analysis");
        let width = v.analysis.iter().map(|c| c.name.chars().count()).max().unwrap_or(0);
        for c in &v.analysis {
            let line = format!("  {:<12} {:<width$}  {}", c.verdict, c.name, c.why);
            out.line(line.trim_end());
        }
    }
    match (&v.agents, &v.agents_error) {
        (Some(a), _) => {
            let plan = if a.plan_version == 0 {
                "no plan published yet".to_string()
            } else {
                format!("plan v{}", a.plan_version)
            };
            out.line(format_args!("agents   {} of {} on {plan}", a.acked, a.total));
            for b in &a.behind {
                out.line(format_args!("  behind {} on v{}", b.agent_id, b.version));
            }
            for h in &a.held {
                out.line(format_args!(
                    "  held   {} on v{} by the canary wave",
                    h.agent_id, h.version
                ));
            }
        }
        (None, Some(e)) => out.line(format_args!("agents   unknown: {e}")),
        (None, None) => out.line("agents   unknown"),
    }
    if !v.history.is_empty() {
        out.line("history");
        for t in &v.history {
            let why = if t.why.is_empty() {
                String::new()
            } else {
                format!(" ({})", t.why)
            };
            out.line(format_args!(
                "  {}  {} → {}{why}",
                t.at.as_deref().unwrap_or("-"),
                t.from,
                t.to
            ));
        }
    }
    out.0
}

/// How a watched change ended, in one sentence that says what to do next (`None`
/// while it is still moving).
pub fn change_ending(v: &ChangeDetailView) -> Option<String> {
    let why = match v.why() {
        "" => String::new(),
        w => format!(": {w}"),
    };
    let id = &v.id;
    Some(match v.state {
        "pending" | "progressing" | "rolling_back" => return None,
        "completed" => format!("change {id} completed\n"),
        "reverted" => format!("change {id} reverted\n"),
        "rolled_back" => format!("change {id} rolled back{why}\n"),
        "paused" => format!(
            "change {id} paused{why}\nresume it with `meridianctl change resume {id}` or roll it back with `meridianctl change rollback {id}`\n"
        ),
        other => format!("change {id} is in a state this meridianctl does not know ({other}); see `meridianctl change show {id}`\n"),
    })
}

/// The ladder from 100 %, the current rung in brackets, with the bake of each rung
/// (once when every rung bakes the same). Empty for a change in one step.
fn ladder(v: &ChangeDetailView) -> String {
    if v.steps.is_empty() {
        return String::new();
    }
    let current = v.step as usize; // 0: still at 100 %; i: rung i (1-based).
    let uniform = v.steps.windows(2).all(|w| w[0].bake_ms == w[1].bake_ms);
    let mut rungs = vec![(100, None)];
    rungs.extend(
        v.steps
            .iter()
            .map(|s| (s.weight_percent, (!uniform).then_some(s.bake_ms))),
    );
    let text: Vec<String> = rungs
        .iter()
        .enumerate()
        .map(|(i, (pct, bake))| {
            let bake = bake.map(|b| format!(" {}", duration_ms(b))).unwrap_or_default();
            if i == current {
                format!("[{pct}%{bake}]")
            } else {
                format!("{pct}%{bake}")
            }
        })
        .collect();
    let each = if uniform {
        format!(", bake {} per rung", duration_ms(v.steps[0].bake_ms))
    } else {
        String::new()
    };
    format!("{}{each}", text.join(" → "))
}

/// `[████████░░░░░░░░░░░░]  40%  36s left` for a bake from `since` to `until` (Unix
/// ms) seen at `now`; a clock outside the bake shows 0 % or `100%  ending`.
pub fn bake_bar(since: i64, until: i64, now: i64) -> String {
    let total = (until - since).max(1);
    let done = (now - since).clamp(0, total);
    let filled = usize::try_from(done * BAR_CELLS as i64 / total).unwrap_or(0);
    let pct = done * 100 / total;
    let left = until - now;
    let left = if left > 0 {
        // Round up: "1s left" until the deadline, never "0s left" before it.
        format!(
            "{} left",
            duration_ms(u64::try_from((left + 999) / 1000 * 1000).unwrap_or(0))
        )
    } else {
        "ending".to_string()
    };
    format!(
        "[{}{}] {pct:>3}%  {left}",
        "█".repeat(filled),
        "░".repeat(BAR_CELLS - filled)
    )
}

/// A duration in milliseconds for people: `500ms`, `36s`, `1m 30s`, `2h`.
pub fn duration_ms(ms: u64) -> String {
    let d = std::time::Duration::from_millis(if ms >= 1000 { ms / 1000 * 1000 } else { ms });
    humantime::format_duration(d).to_string()
}

/// `-` for an empty cell.
fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

/// `meridianctl resume-steering`.
pub fn resumed(v: &ResumeView) -> String {
    if v.was_pinned {
        "steering resumed: computed plans are published again\n".into()
    } else {
        "steering was not pinned; nothing to do\n".into()
    }
}

/// `meridianctl apply`: the errors, or the diff applied (or that would be), or
/// "no changes".
pub fn apply(v: &ApplyView) -> String {
    let mut out = Lines::default();
    if !v.errors.is_empty() {
        out.line(format_args!(
            "{}: {} error(s), nothing applied:",
            v.file,
            v.errors.len()
        ));
        for e in &v.errors {
            out.line(format_args!("  {e}"));
        }
    } else if v.diff.is_empty() {
        out.line(format_args!(
            "{}: no changes (stored topology revision {})",
            v.file, v.topology_revision
        ));
    } else {
        let verb = if v.dry_run { "would change" } else { "applied" };
        out.line(format_args!("{}: {verb} {} item(s):", v.file, v.diff.len()));
        for d in &v.diff {
            out.line(format_args!("  {d}"));
        }
        if v.applied {
            out.line(format_args!("stored at revision {}", v.topology_revision));
        }
    }
    out.0
}

/// Milliseconds for people: one decimal under 10 ms, whole milliseconds under 10 s,
/// whole seconds above, `-` when unknown.
pub fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 10.0 => format!("{v:.1}ms"),
        Some(v) if v < 10_000.0 => format!("{v:.0}ms"),
        Some(v) => format!("{:.0}s", v / 1000.0),
        None => "-".into(),
    }
}

/// A table with the house style and `header`.
fn table<H: Into<comfy_table::Row>>(header: H) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(header);
    table
}

/// Text built line by line; every line ends with a newline.
#[derive(Default)]
struct Lines(String);

impl Lines {
    fn line(&mut self, line: impl Display) {
        use std::fmt::Write;
        // Writing to a String cannot fail; the Result only exists for other writers.
        let _ = writeln!(self.0, "{line}");
    }
}

#[cfg(test)]
mod tests;
