//! Real probes against real loopback targets, reported to an in-process fake
//! control plane: failure classes, fast confirmation, assignment handling.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use meridian_proto::v1 as pb;
use pb::FailureClass as C;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_report_the_right_failure_classes_and_a_hung_target_stalls_nothing() {
    let replica = FakeReplica::start(ReplicaState::new(), 0);
    let web = HttpTarget::start("all healthy").await;
    let (tcp_addr, _tcp) = tcp_target_on(0).await;
    let (dns_addr, _dns) = dns_target(ResponseCode::NoError).await;
    let (tls_addr, _tls) = tls_target().await;
    let (silent_addr, _silent) = silent_target().await;
    let (garbage_addr, _garbage) = garbage_target().await;
    let tls_url = format!("https://{tls_addr}/");
    let with_host = |check: pb::probe_target::Check, insecure: bool| match check {
        pb::probe_target::Check::Http(mut h) => {
            h.host_header = "localhost".into();
            h.insecure_skip_verify = insecure;
            pb::probe_target::Check::Http(h)
        }
        other => other,
    };
    let body_check = match http(web.url()) {
        pb::probe_target::Check::Http(mut h) => {
            h.body_contains = "not in the body".into();
            pb::probe_target::Check::Http(h)
        }
        other => other,
    };
    replica.state.assign(assignments(
        1,
        vec![
            target("fra1", "web", http(web.url())),
            target("fra1", "body", body_check),
            target("fra1", "tcp", tcp(tcp_addr)),
            target("fra1", "dns-ok", dns(dns_addr, "", "192.0.2.1")),
            target("fra1", "dns-rcode", dns(dns_addr, "NXDOMAIN", "")),
            target("fra1", "dns-answer", dns(dns_addr, "NOERROR", "192.0.2.99")),
            target("fra1", "tls", with_host(http(tls_url.clone()), false)),
            target("fra1", "tls-insecure", with_host(http(tls_url), true)),
            target("fra1", "silent", http(format!("http://{silent_addr}/"))),
            target("fra1", "garbage", http(format!("http://{garbage_addr}/"))),
        ],
    ));
    let mut prober = RunningProber::start(prober_config(vec![replica.endpoint()]));

    let want = [
        ("web", C::None),
        ("body", C::BodyMismatch),
        ("tcp", C::None),
        ("dns-ok", C::None),
        ("dns-rcode", C::DnsRcode),
        ("dns-answer", C::DnsAnswer),
        ("tls", C::Tls),
        ("tls-insecure", C::None),
        ("silent", C::Timeout),
        ("garbage", C::Other),
    ];
    let state = replica.state.clone();
    wait_for("a result from every target", || {
        let latest = state.latest();
        want.iter().all(|(e, _)| latest.contains_key(*e)).then_some(())
    })
    .await;
    let latest = state.latest();
    for (endpoint, class) in want {
        let r = &latest[endpoint];
        assert_eq!(r.class(), class, "{endpoint}: {:?}", r.result);
        assert_eq!(r.result.success, class == C::None, "{endpoint}: {:?}", r.result);
        assert_eq!(
            (
                r.result.prober_id.as_str(),
                r.result.region.as_str(),
                r.result.pop.as_str()
            ),
            ("", "", "fra1"),
            "the prober and region go once per batch"
        );
        assert!(r.result.observed_at.is_some() && r.result.latency.is_some());
        if class != C::None {
            assert!(!r.result.detail.is_empty(), "{endpoint}: a failure says why");
        }
    }

    assert!(state
        .batches
        .lock()
        .unwrap()
        .iter()
        .all(|b| b.prober_id == "p1" && b.region == "eu-west"));

    // The hung target keeps timing out while the others are probed on schedule.
    let silent_before = state.results_for("silent").len();
    let tcp_before = state.results_for("tcp").len();
    wait_for("more timeouts and many more TCP results", || {
        (state.results_for("silent").len() >= silent_before + 2 && state.results_for("tcp").len() >= tcp_before + 6)
            .then_some(())
    })
    .await;

    // 200 → 500: http_status.
    web.status.store(500, std::sync::atomic::Ordering::SeqCst);
    let r = wait_for("an http_status failure", || {
        state
            .results_for("web")
            .into_iter()
            .find(|r| r.class() == C::HttpStatus)
    })
    .await;
    assert!(r.result.detail.contains("500"), "{}", r.result.detail);
    // Closed: refused.
    let closed_at = std::time::SystemTime::now();
    web.close().await;
    wait_for("a refused failure", || {
        state
            .results_for("web")
            .into_iter()
            .find(|r| r.class() == C::Refused && r.observed_at() > closed_at)
    })
    .await;

    prober.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_is_confirmed_at_the_confirm_interval_not_the_normal_one() {
    let replica = FakeReplica::start(ReplicaState::new(), 0);
    let (addr, listener) = tcp_target_on(0).await;
    let mut t = target("ams1", "tcp", tcp(addr));
    t.interval = dur(Duration::from_secs(2));
    t.confirm_interval = dur(Duration::from_millis(150));
    t.fall = 3;
    t.rise = 2;
    replica.state.assign(assignments(1, vec![t]));
    let mut prober = RunningProber::start(prober_config(vec![replica.endpoint()]));
    let state = replica.state.clone();

    // Up: two successes confirm it, then the normal interval applies.
    wait_for("the target to be confirmed up", || {
        (state.results_for("tcp").iter().filter(|r| r.result.success).count() >= 2).then_some(())
    })
    .await;
    listener.abort();
    let _ = listener.await;
    let failures = wait_for("four failures", || {
        let f: Vec<Received> = state
            .results_for("tcp")
            .into_iter()
            .filter(|r| !r.result.success)
            .collect();
        (f.len() >= 4).then_some(f)
    })
    .await;
    assert!(failures.iter().all(|r| r.class() == C::Refused), "{failures:?}");
    let gap = |a: &Received, b: &Received| b.observed_at().duration_since(a.observed_at()).unwrap_or_default();
    // The third failure (fall = 3) comes after two confirmation gaps of 150 ms,
    // far sooner than one 2 s interval after the first.
    assert!(
        gap(&failures[0], &failures[2]) < Duration::from_millis(1500),
        "fall confirmed after {:?}",
        gap(&failures[0], &failures[2])
    );
    // Once DOWN is confirmed the normal interval resumes.
    assert!(
        gap(&failures[2], &failures[3]) >= Duration::from_millis(1900),
        "after confirmation: {:?}",
        gap(&failures[2], &failures[3])
    );

    // And back: the first success is confirmed quickly too.
    let (_addr, _listener) = tcp_target_on(addr.port()).await;
    let successes = wait_for("two successes after recovery", || {
        let all = state.results_for("tcp");
        let last_failure = all.iter().rposition(|r| !r.result.success)?;
        let s: Vec<Received> = all[last_failure..]
            .iter()
            .filter(|r| r.result.success)
            .cloned()
            .collect();
        (s.len() >= 2).then_some(s)
    })
    .await;
    assert!(
        gap(&successes[0], &successes[1]) < Duration::from_millis(1500),
        "rise confirmed after {:?}",
        gap(&successes[0], &successes[1])
    );
    prober.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assignments_are_versioned_reconciled_authenticated_and_gate_readiness() {
    let replica = FakeReplica::start(ReplicaState::new(), 0);
    let (a_addr, _a) = tcp_target_on(0).await;
    let mut config = prober_config(vec![replica.endpoint()]);
    config.token = Some("s3cret".into());
    let mut prober = RunningProber::start(config);
    let mut ready = prober.prober.readiness();
    let why = ready.borrow().clone().unwrap_err();
    assert!(why.contains("assignments"), "{why}");

    let bad = pb::ProbeTarget {
        check: Some(pb::probe_target::Check::Tcp(pb::TcpCheck {
            address: "no-port".into(),
        })),
        ..target("fra1", "bad", tcp(a_addr))
    };
    replica
        .state
        .assign(assignments(5, vec![target("fra1", "a", tcp(a_addr)), bad]));
    tokio::time::timeout(DEADLINE, ready.wait_for(|r| r.is_ok()))
        .await
        .expect("never ready")
        .unwrap();
    let state = replica.state.clone();
    wait_for("results for target a", || {
        (!state.results_for("a").is_empty()).then_some(())
    })
    .await;
    assert_eq!(prober.prober.stats().targets, 1, "the bad target is rejected alone");

    // An older version is ignored; a newer one is reconciled.
    replica
        .state
        .assign(assignments(3, vec![target("fra1", "stale", tcp(a_addr))]));
    replica.state.assign(assignments(
        6,
        vec![target("fra1", "a", tcp(a_addr)), target("fra1", "c", tcp(a_addr))],
    ));
    let p = prober.prober.clone();
    wait_for("version 6 applied", || {
        (p.stats().assignment_version == Some(6)).then_some(())
    })
    .await;
    wait_for("results for target c", || {
        (!state.results_for("c").is_empty()).then_some(())
    })
    .await;
    assert_eq!(prober.prober.stats().targets, 2);
    // Target a kept running across the update: its results continue without a
    // restart gap (it was not removed), and "stale" never ran.
    assert!(state.results_for("stale").is_empty());

    let auth = state.authorization.lock().unwrap().clone();
    assert!(
        auth.len() >= 2 && auth.iter().all(|a| a.as_deref() == Some("Bearer s3cret")),
        "{auth:?}"
    );
    prober.stop().await;
    let stats = prober.prober.stats();
    assert_eq!(
        stats.replicas[0].buffered, 0,
        "everything was flushed on shutdown: {stats:?}"
    );
}

/// On-demand confirmation: a target whose next steady probe is far away (its phase
/// is about 40 s ahead on a 60 s interval) is probed as soon as the control plane
/// asks, well before its phase comes round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_now_request_probes_at_once_between_phases() {
    let replica = FakeReplica::start(ReplicaState::new(), 0);
    let (tcp_addr, _tcp) = tcp_target_on(0).await;
    let interval = Duration::from_secs(60);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    // The target's phase point 40 s from now (the prober adds the target's own
    // offset to the region's phase).
    let point = ((wall + Duration::from_secs(40)).as_secs_f64() % 60.0) / 60.0;
    let phase = (point - meridian_prober::scheduler::target_offset("fra1", "tcp")).rem_euclid(1.0);
    let mut t = target("fra1", "tcp", tcp(tcp_addr));
    t.interval = dur(interval);
    t.jitter = 0.0;
    let mut a = assignments(1, vec![t]);
    a.phase = Some(phase);
    replica.state.assign(a);
    let mut prober = RunningProber::start(prober_config(vec![replica.endpoint()]));
    let state = replica.state.clone();
    let started = std::time::Instant::now();
    // The target may not be running yet when the first request arrives; the control
    // plane would ask again on the next failure, the test asks every half second.
    let mut last_ask = None::<std::time::Instant>;
    let result = wait_for("a result after asking to probe now", || {
        if last_ask.is_none_or(|t| t.elapsed() > Duration::from_millis(500)) {
            state.probe_now(&[("fra1", "tcp")]);
            last_ask = Some(std::time::Instant::now());
        }
        state.results_for("tcp").into_iter().next()
    })
    .await;
    assert!(result.result.success, "{:?}", result.result);
    assert!(
        started.elapsed() < Duration::from_secs(35),
        "the result must come from the request, not from the phase 40 s away"
    );
    // A request for a target this prober does not run is skipped.
    state.probe_now(&[("nowhere", "tcp")]);
    prober.stop().await;
}

/// Confirmations never wait for a previous probe's timeout: against a target that
/// accepts connections and never answers, the probes overlap (one starts before the
/// previous one has timed out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_targets_probes_overlap_instead_of_waiting_for_each_timeout() {
    let replica = FakeReplica::start(ReplicaState::new(), 0);
    let (silent_addr, _silent) = silent_target().await;
    let mut t = target("fra1", "silent", http(format!("http://{silent_addr}/")));
    t.interval = dur(Duration::from_secs(1));
    t.fall = 4;
    replica.state.assign(assignments(1, vec![t]));
    let mut prober = RunningProber::start(prober_config(vec![replica.endpoint()]));
    let state = replica.state.clone();
    let timeouts = wait_for("three timeouts", || {
        let r: Vec<Received> = state
            .results_for("silent")
            .into_iter()
            .filter(|r| r.class() == pb::FailureClass::Timeout)
            .collect();
        (r.len() >= 3).then_some(r)
    })
    .await;
    // The first late probe was reported before any timeout came back.
    let suspected = state
        .batches
        .lock()
        .unwrap()
        .iter()
        .any(|b| b.suspects.iter().any(|s| s.pop == "fra1" && s.endpoint == "silent"));
    assert!(suspected, "no batch reported the late probe as a suspect");
    prober.stop().await;
    let span = |r: &Received| {
        let end = r.observed_at();
        let latency: Duration = r.result.latency.unwrap().try_into().unwrap();
        (end - latency, end)
    };
    let (_, first_end) = span(&timeouts[0]);
    let (second_start, _) = span(&timeouts[1]);
    assert!(
        second_start < first_end,
        "the second probe started after the first had timed out: {:?}",
        timeouts.iter().map(span).collect::<Vec<_>>()
    );
}
