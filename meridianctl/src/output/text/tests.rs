//! The human renderings of each view: headers, rows, and the empty and "not yet"
//! cases. Full snapshots where the layout is the point, line checks elsewhere.

use super::*;
use crate::fixtures;
use crate::views::{ChangeDetailView, PlanView, RecentResultView};
use meridian_proto::v1 as pb;

/// The lines of a rendered table that hold data (not borders), cells trimmed.
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.starts_with('│'))
        .map(|l| l.trim_matches('│').split('┆').map(|c| c.trim().to_string()).collect())
        .collect()
}

// ---------------------------------------------------------------- status

#[test]
fn status_text_snapshot() {
    let view = StatusView::new("http://10.0.0.2:7400".into(), fixtures::status());
    let expected = "\
answered by   cp-b (http://10.0.0.2:7400, follower)
leader        cp-a (fence revision 17)
store         embedded — healthy (revision 42)
ready         yes
plan version  7
┌─────────┬──────────┬───────────────┬───────────────┬─────────┐
│ REPLICA ┆ ROLE     ┆ GRPC          ┆ ADMIN         ┆ VERSION │
╞═════════╪══════════╪═══════════════╪═══════════════╪═════════╡
│ cp-a    ┆ leader   ┆ 10.0.0.1:7400 ┆ 10.0.0.1:7401 ┆ 0.1.0   │
│ cp-b    ┆ follower ┆ 10.0.0.2:7400 ┆ 10.0.0.2:7401 ┆ 0.1.0   │
└─────────┴──────────┴───────────────┴───────────────┴─────────┘
";
    assert_eq!(status(&view), expected);
}

#[test]
fn status_text_without_leader_or_plan() {
    let view = StatusView::new("http://x:1".into(), fixtures::status_unhealthy());
    let text = status(&view);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "answered by   cp-x (http://x:1, follower)");
    assert_eq!(lines[1], "leader        NONE — no replica holds the leader key");
    assert_eq!(
        lines[2],
        "store         etcd — UNHEALTHY: etcd: connection refused (revision 0)"
    );
    assert_eq!(lines[3], "store at      http://10.0.0.9:2379, http://10.0.0.10:2379");
    assert_eq!(lines[4], "ready         no");
    assert_eq!(lines[5], "plan version  none published yet");
    // The replica table is still drawn, with its header and no rows.
    assert_eq!(rows(&text), vec![vec!["REPLICA", "ROLE", "GRPC", "ADMIN", "VERSION"]]);
}

// ---------------------------------------------------------------- health

#[test]
fn health_text_has_a_column_per_region_and_marks_suspects() {
    let text = health(&HealthView::from(fixtures::health()));
    assert_eq!(
        rows(&text),
        vec![
            vec!["POP", "VERDICT", "eu", "us (SUSPECT)", "RULE"],
            vec!["ams1", "UP", "UP 12ms (300ms ago)", "-", "all-regions-up"],
            vec![
                "fra1",
                "DEGRADED",
                "UP 4.5ms (15s ago)",
                "DOWN - (1200ms ago)",
                "some-regions-down"
            ],
        ]
    );
    assert!(text.ends_with("┘\n"), "{text}");
}

#[test]
fn health_text_without_pops_says_what_to_do() {
    assert_eq!(
        health(&HealthView::from(pb::GetHealthResponse::default())),
        "no PoPs: apply a topology first (meridianctl apply -f topology.toml)\n"
    );
}

#[test]
fn milliseconds_for_people() {
    assert_eq!(ms(None), "-");
    assert_eq!(ms(Some(4.56)), "4.6ms");
    assert_eq!(ms(Some(12.4)), "12ms");
    assert_eq!(ms(Some(9_999.0)), "9999ms");
    assert_eq!(ms(Some(15_000.0)), "15s");
}

// ---------------------------------------------------------------- explain

#[test]
fn explain_text_snapshot() {
    let text = explain(&ExplainView::from(fixtures::explain()));
    let expected = "\
fra1: DOWN — quorum-down
  region eu: DOWN (suspect: votes discounted, not counted), latency 20ms
    prober eu-1: DOWN
      https://fra1.example.net/health: DOWN STALE (0 ok / 3 failed in a row) recent: timeout, ok 18ms
        evidence 15.9 of 15.9 (loss 0.5 %, hard 0.00 %): enough for DOWN
";
    assert_eq!(text, expected);
}

#[test]
fn explain_text_shows_the_newest_failure_detail_the_prober_sent() {
    let mut resp = fixtures::explain();
    let recent = &mut resp.regions[0].probers[0].endpoints[0].recent;
    recent[0].detail = "no result within 2s".into();
    recent.push(pb::RecentResult {
        failure_class: pb::FailureClass::Tls as i32,
        detail: "an older failure".into(),
        ..Default::default()
    });
    let view = ExplainView::from(resp);
    let text = explain(&view);
    assert!(
        text.ends_with(
            "recent: timeout, ok 18ms, tls\n        evidence 15.9 of 15.9 (loss 0.5 %, hard 0.00 %): enough for DOWN\n        last failure (timeout): no result within 2s\n"
        ),
        "{text}"
    );
    // JSON carries every result's detail, and none on a success.
    let json = serde_json::to_value(&view.regions[0].probers[0].endpoints[0].recent).unwrap();
    assert_eq!(json[0]["detail"], "no result within 2s");
    assert!(json[1].get("detail").is_none(), "{json}");
    assert_eq!(json[2]["detail"], "an older failure");
}

#[test]
fn explain_text_shows_at_most_five_recent_results_and_no_flags_when_counted() {
    let mut view = ExplainView::from(fixtures::explain());
    let region = &mut view.regions[0];
    region.suspect = false;
    region.counted = true;
    let endpoint = &mut region.probers[0].endpoints[0];
    endpoint.fresh = true;
    endpoint.recent = (0..8)
        .map(|i| RecentResultView {
            age_ms: Some(f64::from(i) * 100.0),
            applied: true,
            failure_class: "refused",
            latency_ms: None,
            success: false,
            detail: String::new(),
        })
        .collect();
    let text = explain(&view);
    assert!(text.contains("  region eu: DOWN, latency 20ms\n"), "{text}");
    assert!(
        text.contains("recent: refused, refused, refused, refused, refused\n"),
        "{text}"
    );
    assert!(!text.contains("STALE"), "{text}");
}

#[test]
fn explain_text_of_a_pop_without_evidence_is_one_line() {
    let text = explain(&ExplainView::from(pb::ExplainPopResponse {
        pop: "new1".into(),
        rule: "no-data".into(),
        ..Default::default()
    }));
    assert_eq!(text, "new1: UNKNOWN — no-data\n");
}

// ---------------------------------------------------------------- events

#[test]
fn events_text_one_line_each_with_evidence_indented() {
    let view: Vec<EventView> = fixtures::events().events.into_iter().map(EventView::from).collect();
    assert_eq!(
        events(&view),
        "\
#3 2023-11-14T22:15:23.456Z [verdict] fra1 UP -> DOWN
    eu: DOWN (3 failures)
    us: DOWN
#4 - [drain] by operator fra1 drained: fibre cut
"
    );
}

#[test]
fn events_text_empty() {
    assert_eq!(events(&[]), "no events\n");
}

// ---------------------------------------------------------------- plan

#[test]
fn plan_text_header_tables_and_reasons() {
    let text = plan(&PlanView::from(fixtures::plan()));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "plan v12 by cp-a (topology revision 5, DNS TTL 30s)");
    let cells = rows(&text);
    assert_eq!(
        cells,
        vec![
            vec!["REGION", "POPS (weight)"],
            vec!["eu", "ams1 75.0%, fra1 25.0%"],
            vec!["us", "iad1 100.0%"],
            vec!["POP", "STATE", "LOAD / CAPACITY", "UTILISATION", "ANYCAST"],
            vec!["ams1", "up", "750 / 1000", "75%", "198.51.100.0/24 announce"],
            vec!["fra1", "degraded", "250 / 1000", "25%", "198.51.100.0/24 prepend ×3"],
            vec!["iad1", "up", "400 / 500", "80%", "-"],
        ]
    );
    assert!(
        text.ends_with("why: fra1 DEGRADED\nguardrail: max-failover-capacity: 30% > 25%\n"),
        "{text}"
    );
}

#[test]
fn plan_text_restored_and_without_pop_states() {
    let mut p = fixtures::plan();
    p.restored_from = 9;
    p.pops.clear();
    p.reasons.clear();
    p.guardrails.clear();
    let text = plan(&PlanView::from(p));
    assert!(
        text.starts_with("plan v12 by cp-a (topology revision 5, DNS TTL 30s, restored from v9)\n"),
        "{text}"
    );
    // Only the region table: no PoP table header, no why/guardrail lines.
    assert_eq!(rows(&text)[0], vec!["REGION", "POPS (weight)"]);
    assert!(!text.contains("UTILISATION"), "{text}");
    assert!(!text.contains("why:") && !text.contains("guardrail:"), "{text}");
    assert!(text.ends_with("┘\n"), "{text}");
}

#[test]
fn what_if_text_says_nothing_changed_and_what_would_fire() {
    let view = WhatIfView::from(pb::WhatIfResponse {
        plan: Some(fixtures::plan()),
        guardrails_fired: vec!["last-pop-in-region: us".into()],
    });
    let text = what_if(&view);
    assert!(text.starts_with("nothing was changed; this is what steering would publish:\nplan v12 by cp-a"));
    assert!(text.ends_with("would fire: last-pop-in-region: us\n"), "{text}");
    assert!(!text.contains("no guardrail would fire"));

    let quiet = what_if(&WhatIfView::from(pb::WhatIfResponse {
        plan: Some(fixtures::plan()),
        guardrails_fired: vec![],
    }));
    assert!(quiet.ends_with("no guardrail would fire\n"), "{quiet}");
}

#[test]
fn restored_text_names_both_versions_then_the_plan() {
    let mut p = fixtures::plan();
    p.version = 13;
    p.restored_from = 9;
    let text = restored(9, &PlanView::from(p));
    assert!(text.starts_with(
        "restored version 9 as version 13; steering is pinned until `meridianctl resume-steering`\nplan v13 by cp-a"
    ));
}

// ---------------------------------------------------------------- agents

#[test]
fn agents_text_rows_and_rejections() {
    let view: Vec<AgentView> = fixtures::agents().agents.into_iter().map(AgentView::from).collect();
    assert_eq!(
        rows(&agents(&view)),
        vec![
            vec!["AGENT", "KIND", "REPLICA", "WAVE", "APPLIED", "REJECTED"],
            vec!["dns-ams1", "dns", "cp-a", "canary", "v12", "-"],
            vec![
                "bgp-fra1",
                "anycast",
                "cp-b",
                "fleet (held on v11)",
                "v11",
                "v12: prefix 198.51.100.0/24 not configured"
            ],
        ]
    );
}

#[test]
fn agents_text_lists_each_anycast_prefix_desired_and_actual() {
    let view: Vec<AgentView> = fixtures::agents().agents.into_iter().map(AgentView::from).collect();
    let text = agents(&view);
    assert!(
        text.ends_with(
            "bgp-fra1 198.51.100.0/24: desired prepend ×3 (v11), actual prepend ×1 — speaker: AddPath refused\n"
        ),
        "{text}"
    );
}

#[test]
fn agents_text_empty() {
    assert_eq!(agents(&[]), "no agents connected\n");
}

// ---------------------------------------------------------------- mutations

#[test]
fn change_and_resume_text() {
    assert_eq!(change(&ChangeView::from(fixtures::change())), "drained fra1 (chg-9)\n");
    assert_eq!(
        resumed(&ResumeView { was_pinned: true }),
        "steering resumed: computed plans are published again\n"
    );
    assert_eq!(
        resumed(&ResumeView { was_pinned: false }),
        "steering was not pinned; nothing to do\n"
    );
}

#[test]
fn apply_text_errors_diff_and_no_change() {
    let errors = ApplyView::new(
        "bad.toml".into(),
        false,
        pb::ApplyTopologyResponse {
            errors: vec!["pops[0].id: not a DNS label".into(), "policy.ttl: must be > 0".into()],
            ..Default::default()
        },
    );
    assert_eq!(
        apply(&errors),
        "bad.toml: 2 error(s), nothing applied:\n  pops[0].id: not a DNS label\n  policy.ttl: must be > 0\n"
    );

    let dry = ApplyView::new(
        "t.toml".into(),
        true,
        pb::ApplyTopologyResponse {
            diff: vec!["+ pop fra1".into(), "~ pop ams1 capacity 900 -> 1000".into()],
            topology_revision: 4,
            ..Default::default()
        },
    );
    assert_eq!(
        apply(&dry),
        "t.toml: would change 2 item(s):\n  + pop fra1\n  ~ pop ams1 capacity 900 -> 1000\n"
    );

    let applied = ApplyView::new(
        "t.toml".into(),
        false,
        pb::ApplyTopologyResponse {
            applied: true,
            diff: vec!["+ pop fra1".into()],
            topology_revision: 5,
            ..Default::default()
        },
    );
    assert_eq!(
        apply(&applied),
        "t.toml: applied 1 item(s):\n  + pop fra1\nstored at revision 5\n"
    );

    let same = ApplyView::new(
        "t.toml".into(),
        false,
        pb::ApplyTopologyResponse {
            topology_revision: 5,
            ..Default::default()
        },
    );
    assert_eq!(apply(&same), "t.toml: no changes (stored topology revision 5)\n");
}

// ---------------------------------------------------------------- change show

fn ladder_view() -> ChangeDetailView {
    let agents = crate::views::AgentsAckView::new(12, &fixtures::ladder_agents());
    ChangeDetailView::new(fixtures::ladder(), Ok(agents))
}

#[test]
fn change_detail_text_snapshot() {
    let text = change_detail(&ladder_view(), fixtures::BAKE_SINCE_MS + 24_000);
    let expected = "\
change   drain-fra1-1700000000000: drain fra1 (regions eu-west)
by       operator:otto (operator) at 2023-11-14T22:13:20.000Z
reason   router maintenance
state    progressing: inconclusive: no load data for ams1
step     1 of 2: 100% → [50%] → 0%, bake 1m per rung
phase    bake since 2023-11-14T22:13:30.000Z
canary   dns-ams1
bake     [████████░░░░░░░░░░░░]  40%  36s left
analysis
  pass         receivers_healthy  ams1 UP
  inconclusive utilisation        no load data for ams1
agents   1 of 3 on plan v12
  behind dns-iad1 on v10
  held   bgp-fra1 on v11 by the canary wave
history
  2023-11-14T22:13:20.000Z  new → pending (router maintenance)
  2023-11-14T22:13:20.200Z  pending → progressing step 1 (apply) (started)
  2023-11-14T22:13:30.000Z  progressing step 1 (await ACKs) → progressing step 1 (bake) (every agent ACKed the step's plan)
";
    assert_eq!(text, expected);
}

#[test]
fn bake_bar_fills_with_the_clock_and_never_says_0s_left_early() {
    assert_eq!(bake_bar(0, 60_000, 0), "[░░░░░░░░░░░░░░░░░░░░]   0%  1m left");
    assert_eq!(bake_bar(0, 60_000, 30_000), "[██████████░░░░░░░░░░]  50%  30s left");
    assert_eq!(bake_bar(0, 60_000, 59_500), "[███████████████████░]  99%  1s left");
    assert_eq!(bake_bar(0, 60_000, 61_000), "[████████████████████] 100%  ending");
    assert_eq!(
        bake_bar(0, 60_000, -5_000),
        "[░░░░░░░░░░░░░░░░░░░░]   0%  1m 5s left",
        "clock behind"
    );
    assert_eq!(duration_ms(90_500), "1m 30s");
    assert_eq!(duration_ms(250), "250ms");
}

#[test]
fn change_detail_text_marks_the_rung_and_shows_only_what_applies() {
    // Completed: the last rung is marked, no phase, no bar, agents unknown.
    let mut c = fixtures::ladder();
    c.state = pb::ChangeState::Completed as i32;
    c.step = 2;
    c.phase.clear();
    c.state_reason.clear();
    c.canary_agents.clear();
    c.regions.clear();
    let v = ChangeDetailView::new(c, Err("ListAgents on http://x:1 failed: Unavailable: down".into()));
    let text = change_detail(&v, 0);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "change   drain-fra1-1700000000000: drain fra1");
    assert_eq!(lines[3], "state    completed");
    assert_eq!(lines[4], "step     2 of 2: 100% → 50% → [0%], bake 1m per rung");
    assert!(
        !text.contains("phase") && !text.contains("bake     ") && !text.contains("canary"),
        "{text}"
    );
    assert!(
        text.contains("\nagents   unknown: ListAgents on http://x:1 failed: Unavailable: down\n"),
        "{text}"
    );

    // Pending, rungs with their own bakes, the canary bake without a deadline.
    let mut c = fixtures::ladder();
    c.step = 0;
    c.steps[1].bake_ms = 120_000;
    c.phase = "canary_bake".into();
    c.phase_deadline = None;
    let text = change_detail(&ChangeDetailView::new(c, Err(String::new())), 0);
    assert!(text.contains("step     0 of 2: [100%] → 50% 1m → 0% 2m\n"), "{text}");
    assert!(
        text.contains("bake     (the control plane sent no deadline)\n"),
        "{text}"
    );

    // An immediate drain: one step, no ladder, no history.
    let text = change_detail(&ChangeDetailView::new(fixtures::change(), Err(String::new())), 0);
    assert!(
        text.contains("step     1 of 1\n") && !text.contains("history"),
        "{text}"
    );
}

#[test]
fn change_endings_say_what_happened_and_what_to_do() {
    let mut c = fixtures::ladder();
    let ending = |c: &pb::ChangeRecord| change_ending(&ChangeDetailView::new(c.clone(), Err(String::new())));
    assert_eq!(ending(&c), None, "progressing is not an end");
    c.state = pb::ChangeState::Paused as i32;
    assert_eq!(
        ending(&c).unwrap(),
        "change drain-fra1-1700000000000 paused: inconclusive: no load data for ams1\n\
         resume it with `meridianctl change resume drain-fra1-1700000000000` or roll it back with \
         `meridianctl change rollback drain-fra1-1700000000000`\n"
    );
    c.state = pb::ChangeState::RolledBack as i32;
    c.state_reason.clear();
    c.history.last_mut().unwrap().why = "analysis failed: fra1 DOWN".into();
    assert_eq!(
        ending(&c).unwrap(),
        "change drain-fra1-1700000000000 rolled back: analysis failed: fra1 DOWN\n"
    );
    // The cause of a rollback, not the restore that followed it.
    c.history.push(pb::ChangeTransition {
        from: "progressing step 1 (bake)".into(),
        to: "rolling_back".into(),
        why: "false alarm".into(),
        ..Default::default()
    });
    c.history.push(pb::ChangeTransition {
        from: "rolling_back".into(),
        to: "rolled_back".into(),
        why: "intents from before the change restored".into(),
        ..Default::default()
    });
    assert_eq!(
        ending(&c).unwrap(),
        "change drain-fra1-1700000000000 rolled back: false alarm\n"
    );
    c.state = pb::ChangeState::Completed as i32;
    assert_eq!(ending(&c).unwrap(), "change drain-fra1-1700000000000 completed\n");
    c.state = pb::ChangeState::Reverted as i32;
    assert_eq!(ending(&c).unwrap(), "change drain-fra1-1700000000000 reverted\n");
}

#[test]
fn changes_table_shows_kind_target_state_step_and_phase() {
    let list = vec![
        ChangeView::from(fixtures::ladder()),
        ChangeView::from(fixtures::change()),
    ];
    assert_eq!(
        rows(&changes(&list)),
        vec![
            vec!["ID", "KIND", "TARGET", "STATE", "STEP", "PHASE", "BY"],
            vec![
                "drain-fra1-1700000000000",
                "drain",
                "fra1",
                "progressing",
                "1/2",
                "bake",
                "operator:otto"
            ],
            vec!["chg-9", "drain", "fra1", "completed", "1/1", "-", "operator"],
        ]
    );
    assert_eq!(changes(&[]), "no changes\n");
}

// ---------------------------------------------------------------- freezes

#[test]
fn freeze_text_is_a_table_of_every_freeze_and_says_what_is_refused() {
    let view = crate::views::FreezeView::from(fixtures::freezes());
    let text = freeze(&view);
    assert_eq!(
        rows(&text),
        vec![
            vec!["SCOPE", "TARGET", "UNTIL", "BY", "REASON"],
            vec!["global", "-", "2023-11-14T23:13:20.000Z", "ada", "release window"],
            vec!["pop", "fra1", "2023-11-15T00:13:20.000Z", "otto", "rack move"],
            vec!["region", "eu-west", "2023-11-14T22:43:20.000Z", "otto", "peak"],
        ]
    );
    let last = text.lines().last().unwrap();
    assert_eq!(
        last,
        "applies, undrains, capacity changes and restores are refused everywhere; drains and rollbacks stay allowed; an admin may act anyway with --override-freeze and a reason"
    );
    assert!(last.contains("--override-freeze"), "{text}");
}

#[test]
fn freeze_text_of_scoped_freezes_names_the_pops_refused() {
    let mut resp = fixtures::freezes();
    resp.freezes.remove(0);
    let text = freeze(&crate::views::FreezeView::from(resp.clone()));
    let last = text.lines().last().unwrap();
    assert_eq!(
        last,
        "topology applies and plan restores are refused, and undrains and capacity changes of fra1; drains and rollbacks stay allowed; an admin may act anyway with --override-freeze and a reason"
    );
    resp.freezes.remove(0);
    let text = freeze(&crate::views::FreezeView::from(resp));
    assert_eq!(rows(&text).len(), 2, "{text}");
    assert!(text
        .lines()
        .last()
        .unwrap()
        .starts_with("topology applies and plan restores are refused;"));
}

#[test]
fn freeze_text_when_nothing_is_frozen() {
    let view = crate::views::FreezeView::from(pb::FreezeResponse::default());
    assert_eq!(freeze(&view), "changes are not frozen\n");
}
