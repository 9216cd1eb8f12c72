use super::*;

fn drain(steps: Vec<Step>) -> ChangeRecord {
    ChangeRecord {
        role: Some("operator".into()),
        ..ChangeRecord::new(
            "c-1".into(),
            ChangeKind::Drain,
            "fra1",
            "operator:otto",
            "maintenance",
            steps,
            0,
        )
    }
}

fn obs(now_ms: u64) -> Observed {
    Observed {
        now_ms,
        acked: None,
        acked_version: 0,
        missing_acks: Vec::new(),
        analysis: Vec::new(),
        canary_nacks: Vec::new(),
        fleet_held: None,
    }
}

fn acked(now_ms: u64) -> Observed {
    Observed {
        acked: Some(true),
        acked_version: 7,
        ..obs(now_ms)
    }
}

fn passing(now_ms: u64) -> Observed {
    Observed {
        analysis: vec![
            ("receivers_healthy".into(), Check::Pass),
            ("utilisation".into(), Check::Pass),
        ],
        ..obs(now_ms)
    }
}

/// Advances and returns the stored record (panics when nothing changed).
fn step(r: &ChangeRecord, o: &Observed) -> (ChangeRecord, Option<Effect>) {
    let a = advance(r, o, &ChangePolicy::default());
    (a.record.expect("a transition"), a.effect)
}

#[test]
fn ladders_go_down_to_zero_and_bad_ones_are_named() {
    let l = ladder(&[50, 0], 10_000).unwrap();
    assert_eq!(
        l,
        vec![
            Step {
                weight_percent: 50,
                bake_ms: 10_000,
                anycast: None,
            },
            Step {
                weight_percent: 0,
                bake_ms: 10_000,
                anycast: None,
            }
        ]
    );
    // A leading 100 is where the PoP already is: no rung for it.
    assert_eq!(ladder(&[100, 75, 50, 0], 1).unwrap().len(), 3);
    assert!(ladder(&[], 1).unwrap_err().to_string().contains("at least one"));
    assert!(ladder(&[50, 75], 1).unwrap_err().to_string().contains("must go down"));
    assert!(ladder(&[150], 1).unwrap_err().to_string().contains("percentage"));
}

#[test]
fn a_ladder_walks_apply_acks_bake_analyse_for_each_rung_and_completes() {
    let r = drain(ladder(&[50, 0], 10_000).unwrap());
    let (r, e) = step(&r, &obs(1_000));
    assert_eq!(
        r.state,
        ChangeState::Progressing {
            step: 0,
            phase: Phase::Apply
        }
    );
    assert_eq!(e, None);
    // Apply: the effect writes the rung's weight, then ACKs are awaited.
    let (r, e) = step(&r, &obs(1_100));
    assert_eq!(
        e,
        Some(Effect::SetWeight {
            step: 0,
            weight_percent: 50
        })
    );
    assert_eq!(
        r.state,
        ChangeState::Progressing {
            step: 0,
            phase: Phase::AwaitAcks { since_ms: 1_100 }
        }
    );
    // Not ACKed yet, deadline not reached: nothing changes.
    assert_eq!(advance(&r, &obs(2_000), &ChangePolicy::default()), Advance::default());
    let (r, _) = step(&r, &acked(2_500));
    assert_eq!(
        r.state,
        ChangeState::Progressing {
            step: 0,
            phase: Phase::Bake {
                until_ms: 12_500,
                plan_version: 7
            }
        }
    );
    // Baking: nothing until the deadline, then analysis.
    assert_eq!(
        advance(&r, &passing(12_499), &ChangePolicy::default()),
        Advance::default()
    );
    let (r, _) = step(&r, &obs(12_500));
    assert_eq!(
        r.state,
        ChangeState::Progressing {
            step: 0,
            phase: Phase::Analyse { plan_version: 7 }
        }
    );
    let (r, _) = step(&r, &passing(12_600));
    assert_eq!(
        r.state,
        ChangeState::Progressing {
            step: 1,
            phase: Phase::Apply
        }
    );
    let (r, e) = step(&r, &obs(12_700));
    assert_eq!(
        e,
        Some(Effect::SetWeight {
            step: 1,
            weight_percent: 0
        })
    );
    let (r, _) = step(&r, &acked(13_000));
    let (r, _) = step(&r, &obs(23_000));
    let (r, _) = step(&r, &passing(23_100));
    assert_eq!(r.state, ChangeState::Completed { at_ms: 23_100 });
    assert!(!r.state.is_active());
    // Every transition is in the history, in order, with why.
    let tos: Vec<&str> = r.history.iter().map(|t| t.to.as_str()).collect();
    assert_eq!(
        tos,
        [
            "progressing step 1 (apply)",
            "progressing step 1 (await ACKs)",
            "progressing step 1 (bake)",
            "progressing step 1 (analyse)",
            "progressing step 2 (apply)",
            "progressing step 2 (await ACKs)",
            "progressing step 2 (bake)",
            "progressing step 2 (analyse)",
            "completed"
        ]
    );
    assert_eq!(r.updated_at_ms, 23_100);
}

fn at(r: ChangeRecord, state: ChangeState) -> ChangeRecord {
    ChangeRecord { state, ..r }
}

#[test]
fn agents_that_do_not_ack_in_time_pause_the_change_naming_them() {
    let r = at(
        drain(ladder(&[50, 0], 1_000).unwrap()),
        ChangeState::Progressing {
            step: 0,
            phase: Phase::AwaitAcks { since_ms: 0 },
        },
    );
    let late = Observed {
        acked: Some(false),
        missing_acks: vec!["dns-2".into(), "dns-7".into()],
        ..obs(30_000)
    };
    let (r, e) = step(&r, &late);
    assert_eq!(e, None);
    match &r.state {
        ChangeState::Paused { step, reason } => {
            assert_eq!(*step, 0);
            assert!(
                reason.starts_with("inconclusive") && reason.contains("dns-2, dns-7"),
                "{reason}"
            );
        }
        other => panic!("expected paused, got {other:?}"),
    }
}

#[test]
fn a_failed_analysis_rolls_back_by_default_or_pauses_by_policy() {
    let analysing = at(
        drain(ladder(&[50, 0], 1_000).unwrap()),
        ChangeState::Progressing {
            step: 0,
            phase: Phase::Analyse { plan_version: 7 },
        },
    );
    let failing = Observed {
        analysis: vec![
            ("receivers_healthy".into(), Check::Fail("ams1 is DOWN".into())),
            ("utilisation".into(), Check::Pass),
        ],
        ..obs(5_000)
    };
    let (r, _) = step(&analysing, &failing);
    assert!(
        matches!(&r.state, ChangeState::RollingBack { reason } if reason.contains("ams1 is DOWN")),
        "{:?}",
        r.state
    );
    // Rolling back restores the intents from before the change, then it is over.
    let (r, e) = step(&r, &obs(5_100));
    assert_eq!(e, Some(Effect::RestoreBefore));
    assert_eq!(r.state, ChangeState::RolledBack { at_ms: 5_100 });

    let pause_policy = ChangePolicy {
        on_fail: OnFail::Pause,
        ..ChangePolicy::default()
    };
    let a = advance(&analysing, &failing, &pause_policy);
    assert!(matches!(a.record.unwrap().state, ChangeState::Paused { step: 0, .. }));
}

#[test]
fn missing_or_inconclusive_analysis_is_never_a_pass() {
    let analysing = at(
        drain(ladder(&[50, 0], 1_000).unwrap()),
        ChangeState::Progressing {
            step: 0,
            phase: Phase::Analyse { plan_version: 7 },
        },
    );
    let (r, _) = step(&analysing, &obs(1));
    assert!(matches!(&r.state, ChangeState::Paused { reason, .. } if reason.contains("no analysis")));
    let unsure = Observed {
        analysis: vec![
            ("receivers_healthy".into(), Check::Pass),
            ("agents".into(), Check::Inconclusive("no health data for ams1".into())),
        ],
        ..obs(2)
    };
    let (r, _) = step(&analysing, &unsure);
    assert!(
        matches!(&r.state, ChangeState::Paused { reason, .. } if reason.contains("no health data for ams1")),
        "{:?}",
        r.state
    );
}

#[test]
fn pause_resume_and_rollback_from_any_active_step() {
    let r = at(
        drain(ladder(&[50, 0], 1_000).unwrap()),
        ChangeState::Progressing {
            step: 1,
            phase: Phase::Bake {
                until_ms: 9_000,
                plan_version: 7,
            },
        },
    );
    let paused = pause(&r, 100, "customer event").unwrap();
    assert!(matches!(paused.state, ChangeState::Paused { step: 1, .. }));
    // A paused change does not move by itself.
    assert_eq!(
        advance(&paused, &passing(99_999), &ChangePolicy::default()),
        Advance::default()
    );
    assert!(pause(&paused, 101, "again").is_err());
    // Resuming applies the same rung again (idempotent) and re-observes it.
    let resumed = resume(&paused, 200, "event over").unwrap();
    assert_eq!(
        resumed.state,
        ChangeState::Progressing {
            step: 1,
            phase: Phase::Apply
        }
    );
    assert!(resume(&resumed, 201, "twice").is_err());
    // Rollback from a change stuck awaiting ACKs, and from a paused one.
    let stuck = at(
        r.clone(),
        ChangeState::Progressing {
            step: 0,
            phase: Phase::AwaitAcks { since_ms: 0 },
        },
    );
    assert!(matches!(
        rollback(&stuck, 300, "agent dead").unwrap().state,
        ChangeState::RollingBack { .. }
    ));
    assert!(matches!(
        rollback(&paused, 300, "abandon").unwrap().state,
        ChangeState::RollingBack { .. }
    ));
    let done = at(r, ChangeState::Completed { at_ms: 1 });
    let err = rollback(&done, 400, "late").unwrap_err().to_string();
    assert!(err.contains("completed") && err.contains("reverted"), "{err}");
}

#[test]
fn a_completed_change_reverts_within_its_window_only() {
    let done = at(drain(ladder(&[0], 1).unwrap()), ChangeState::Completed { at_ms: 1_000 });
    let policy = ChangePolicy {
        revert_window_ms: 60_000,
        ..ChangePolicy::default()
    };
    let (r, e) = revert(&done, 30_000, "undo", &policy).unwrap();
    assert_eq!(r.state, ChangeState::Reverted { at_ms: 30_000 });
    assert_eq!(e, Effect::RestoreBefore);
    let err = revert(&done, 200_000, "too late", &policy).unwrap_err();
    assert!(matches!(
        err,
        ChangeError::RevertWindowPassed {
            ago_s: 199,
            window_s: 60,
            ..
        }
    ));
    let active = at(done, ChangeState::Pending);
    assert!(revert(&active, 2_000, "x", &policy).is_err());
}

/// A leader dies mid-bake; the new leader loads the stored record and continues
/// the same bake to the same deadline — neither restarting nor skipping the step.
#[test]
fn a_stored_record_resumes_the_same_step_after_a_leader_change() {
    let r = at(
        drain(ladder(&[50, 0], 10_000).unwrap()),
        ChangeState::Progressing {
            step: 0,
            phase: Phase::Bake {
                until_ms: 20_000,
                plan_version: 7,
            },
        },
    );
    let stored = serde_json::to_string(&r).unwrap();
    assert!(
        stored.contains("\"state\":\"progressing\"") && stored.contains("\"until_ms\":20000"),
        "{stored}"
    );
    let loaded: ChangeRecord = serde_json::from_str(&stored).unwrap();
    assert_eq!(loaded, r);
    // Before the deadline the new leader waits; at it, the same step is analysed.
    assert_eq!(
        advance(&loaded, &passing(15_000), &ChangePolicy::default()),
        Advance::default()
    );
    let (next, _) = step(&loaded, &obs(20_000));
    assert_eq!(
        next.state,
        ChangeState::Progressing {
            step: 0,
            phase: Phase::Analyse { plan_version: 7 }
        }
    );
}

#[test]
fn only_the_oldest_ended_changes_are_pruned() {
    let mut records = Vec::new();
    for (i, state) in [
        ChangeState::Completed { at_ms: 1 },
        ChangeState::RolledBack { at_ms: 2 },
        ChangeState::Pending,
        ChangeState::Completed { at_ms: 4 },
        ChangeState::Paused {
            step: 0,
            reason: "x".into(),
        },
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = drain(ladder(&[0], 1).unwrap());
        r.id = format!("c-{i}");
        r.created_at_ms = i as u64;
        r.state = state;
        records.push(r);
    }
    assert_eq!(to_prune(&records, 3), Vec::<String>::new());
    assert_eq!(to_prune(&records, 1), vec!["c-0".to_string(), "c-1".to_string()]);
    assert_eq!(to_prune(&records, 0).len(), 3, "active changes are never pruned");
}

fn canary_drain() -> ChangeRecord {
    ChangeRecord {
        canary: Some(CanaryWave {
            agents: vec!["dns-a".into()],
            bake_ms: 5_000,
        }),
        ..drain(ladder(&[50, 0], 10_000).unwrap())
    }
}

fn phase_of(r: &ChangeRecord) -> Phase {
    match &r.state {
        ChangeState::Progressing { phase, .. } => phase.clone(),
        other => panic!("not progressing: {other:?}"),
    }
}

#[test]
fn with_a_canary_wave_each_step_goes_to_the_wave_bakes_and_only_then_releases_the_fleet() {
    let r = canary_drain();
    let (r, _) = step(&r, &obs(1_000));
    let (r, e) = step(&r, &obs(1_100));
    assert_eq!(
        e,
        Some(Effect::SetWeight {
            step: 0,
            weight_percent: 50
        })
    );
    assert_eq!(phase_of(&r), Phase::AwaitCanary { since_ms: 1_100 });
    assert!(r.history.last().unwrap().why.contains("canary wave (dns-a)"));
    let held = Observed {
        fleet_held: Some(true),
        ..obs(1_500)
    };
    assert_eq!(advance(&r, &held, &ChangePolicy::default()), Advance::default());
    let (r, _) = step(
        &r,
        &Observed {
            fleet_held: Some(true),
            ..acked(2_000)
        },
    );
    assert_eq!(
        phase_of(&r),
        Phase::CanaryBake {
            until_ms: 7_000,
            plan_version: 7
        }
    );
    assert_eq!(
        advance(
            &r,
            &Observed {
                fleet_held: Some(true),
                ..obs(6_999)
            },
            &ChangePolicy::default()
        ),
        Advance::default()
    );
    let (r, _) = step(
        &r,
        &Observed {
            fleet_held: Some(true),
            ..obs(7_000)
        },
    );
    assert_eq!(phase_of(&r), Phase::CanaryAnalyse { plan_version: 7 });
    // The canary analysis passes: the fleet is released and its ACKs awaited.
    let (r, e) = step(
        &r,
        &Observed {
            fleet_held: Some(true),
            ..passing(7_100)
        },
    );
    assert_eq!(e, Some(Effect::ReleaseFleet));
    assert_eq!(phase_of(&r), Phase::AwaitAcks { since_ms: 7_100 });
    // From here the step is the fleet's: ACKs, bake, analysis, next rung.
    let (r, _) = step(&r, &acked(8_000));
    assert!(matches!(phase_of(&r), Phase::Bake { until_ms: 18_000, .. }));
}

#[test]
fn a_canary_nack_or_failed_canary_analysis_stops_the_step_before_the_fleet() {
    let r = canary_drain();
    let (r, _) = step(&r, &obs(1_000));
    let (r, _) = step(&r, &obs(1_100));
    // A NACK while waiting for the wave's ACKs: rolled back (the default policy),
    // and the fleet is never released.
    let nacked = Observed {
        canary_nacks: vec!["dns-a: v8 serves nothing".into()],
        fleet_held: Some(true),
        ..obs(1_500)
    };
    let a = advance(&r, &nacked, &ChangePolicy::default());
    assert_ne!(a.effect, Some(Effect::ReleaseFleet));
    let rolled = a.record.unwrap();
    match &rolled.state {
        ChangeState::RollingBack { reason } => {
            assert!(reason.contains("dns-a: v8 serves nothing"), "{reason}");
            assert!(reason.contains("the fleet never got it"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // With on_fail = pause, the same NACK pauses instead.
    let pause = ChangePolicy {
        on_fail: OnFail::Pause,
        ..ChangePolicy::default()
    };
    let a = advance(&r, &nacked, &pause);
    assert!(matches!(a.record.unwrap().state, ChangeState::Paused { step: 0, .. }));
    // A failed canary analysis rolls back; an inconclusive one pauses.
    let analysing = ChangeRecord {
        state: ChangeState::Progressing {
            step: 0,
            phase: Phase::CanaryAnalyse { plan_version: 8 },
        },
        ..r.clone()
    };
    let fail = Observed {
        analysis: vec![("canary_agents".into(), Check::Fail("dns-a disconnected".into()))],
        fleet_held: Some(true),
        ..obs(9_000)
    };
    let a = advance(&analysing, &fail, &ChangePolicy::default());
    assert_eq!(a.effect, None);
    match a.record.unwrap().state {
        ChangeState::RollingBack { reason } => assert!(reason.contains("canary analysis failed"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let unsure = Observed {
        analysis: vec![("receivers_healthy".into(), Check::Inconclusive("no data".into()))],
        fleet_held: Some(true),
        ..obs(9_000)
    };
    let a = advance(&analysing, &unsure, &ChangePolicy::default());
    assert!(matches!(a.record.unwrap().state, ChangeState::Paused { step: 0, .. }));
    // No canary ACK within the deadline: inconclusive, paused, naming the agent.
    let late = Observed {
        missing_acks: vec!["dns-a".into()],
        fleet_held: Some(true),
        ..obs(1_100 + ChangePolicy::default().ack_deadline_ms)
    };
    match advance(&r, &late, &ChangePolicy::default()).record.unwrap().state {
        ChangeState::Paused { reason, .. } => assert!(reason.contains("canary agent dns-a"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_urgent_plan_that_released_the_fleet_moves_the_step_to_the_fleets_acks() {
    let r = canary_drain();
    let (r, _) = step(&r, &obs(1_000));
    let (r, _) = step(&r, &obs(1_100));
    let (r, e) = step(
        &r,
        &Observed {
            fleet_held: Some(false),
            ..obs(1_300)
        },
    );
    assert_eq!(e, None);
    assert_eq!(phase_of(&r), Phase::AwaitAcks { since_ms: 1_300 });
    assert!(r.history.last().unwrap().why.contains("urgent plan"));
}

#[test]
fn automatic_failover_and_failback_are_change_records_with_steps() {
    use meridian_core::slow_start::SlowStartEvent as E;
    let f = auto_failover("fra1", 12, "quorum: 3 of 3 regions DOWN", 1_000);
    assert_eq!(f.kind, ChangeKind::AutoFailover);
    assert!(f.kind.is_automatic() && !ChangeKind::Drain.is_automatic());
    assert_eq!(f.state, ChangeState::Completed { at_ms: 1_000 });
    assert_eq!(f.started_by, "rule:failover");
    assert!(f.reason.contains("plan v12"));
    assert_eq!(f.history.last().unwrap().why, "quorum: 3 of 3 regions DOWN");

    let stages = [0.1, 0.5, 1.0];
    let started = auto_failback(
        None,
        &E::Started {
            pop: "fra1".into(),
            factor: 0.1,
        },
        &stages,
        10_000,
        5_000,
    )
    .unwrap();
    assert_eq!(started.kind, ChangeKind::AutoFailback);
    assert_eq!(
        started.steps.iter().map(|s| s.weight_percent).collect::<Vec<_>>(),
        vec![10, 50, 100]
    );
    assert_eq!(
        started.state,
        ChangeState::Progressing {
            step: 0,
            phase: Phase::Bake {
                until_ms: 15_000,
                plan_version: 0
            }
        }
    );
    let advanced = auto_failback(
        Some(&started),
        &E::Advanced {
            pop: "fra1".into(),
            stage: 1,
            factor: 0.5,
        },
        &stages,
        10_000,
        15_000,
    )
    .unwrap();
    assert!(matches!(advanced.state, ChangeState::Progressing { step: 1, .. }));
    let done = auto_failback(
        Some(&advanced),
        &E::Completed { pop: "fra1".into() },
        &stages,
        10_000,
        30_000,
    )
    .unwrap();
    assert_eq!(done.state, ChangeState::Completed { at_ms: 30_000 });
    let aborted = auto_failback(
        Some(&advanced),
        &E::Aborted {
            pop: "fra1".into(),
            stage: 1,
        },
        &stages,
        10_000,
        20_000,
    )
    .unwrap();
    assert_eq!(aborted.state, ChangeState::RolledBack { at_ms: 20_000 });
    assert!(aborted.history.last().unwrap().why.contains("failed again at stage 2"));
    // A stage event for a PoP with no record: nothing to move.
    assert_eq!(
        auto_failback(None, &E::Completed { pop: "fra1".into() }, &stages, 10_000, 1),
        None
    );
}

#[test]
fn anycast_rungs_escalate_towards_the_withdraw() {
    use meridian_core::records::AnycastAction as A;
    let rungs = |percents: &[u8]| -> Vec<String> {
        with_anycast_rungs(ladder(percents, 1_000).unwrap())
            .iter()
            .map(|s| s.anycast.unwrap().describe())
            .collect()
    };
    assert_eq!(rungs(&[0]), vec!["withdraw"]);
    assert_eq!(rungs(&[50, 0]), vec!["GRACEFUL_SHUTDOWN", "withdraw"]);
    assert_eq!(
        rungs(&[75, 50, 25, 0]),
        vec!["prepend ×1", "prepend ×3", "GRACEFUL_SHUTDOWN", "withdraw"]
    );
    assert_eq!(
        rungs(&[90, 75, 50, 25, 0]),
        vec![
            "prepend ×1",
            "prepend ×1",
            "prepend ×3",
            "GRACEFUL_SHUTDOWN",
            "withdraw"
        ]
    );
    // The DNS weights are kept.
    let steps = with_anycast_rungs(ladder(&[50, 0], 7).unwrap());
    assert_eq!(
        (
            steps[0].weight_percent,
            steps[0].bake_ms,
            steps[0].anycast.unwrap().action
        ),
        (50, 7, A::GracefulShutdown)
    );
}

#[test]
fn a_change_that_needs_approval_waits_and_only_someone_else_approves_it() {
    let mut r = drain(ladder(&[50, 0], 1_000).unwrap());
    r.approval = Some(Approval {
        rule: "drain".into(),
        approved_by: None,
        approver_role: None,
        at_ms: 0,
    });
    assert!(r.awaits_approval());
    // The driver leaves it pending.
    assert_eq!(advance(&r, &obs(5_000), &ChangePolicy::default()), Advance::default());
    // The one who started it cannot approve it.
    assert!(matches!(
        approve(&r, "operator:otto", Some("operator"), 6_000),
        Err(ChangeError::SelfApproval { .. })
    ));
    let ok = approve(&r, "operator:ada", Some("operator"), 6_000).unwrap();
    assert!(!ok.awaits_approval());
    assert_eq!(
        ok.approval.as_ref().unwrap().approved_by.as_deref(),
        Some("operator:ada")
    );
    assert_eq!(ok.history.last().unwrap().why, "approved by operator:ada");
    // Approved: it starts.
    let (started, _) = step(&ok, &obs(6_100));
    assert!(matches!(started.state, ChangeState::Progressing { step: 0, .. }));
    // Twice, or a change that needs none: refused.
    assert!(approve(&ok, "operator:bob", None, 7_000).is_err());
    assert!(approve(&drain(ladder(&[0], 1).unwrap()), "operator:bob", None, 7_000).is_err());
}
