//! The one endpoint-failover loop every client of the control plane uses (the DNS
//! agent's plan subscription, the prober's assignment watch, the prober's result
//! streams): hold one session with one replica at a time, take the endpoints in the
//! configured order, move to the next one as soon as a session ends, and wait (the
//! shared [`Backoff`], with jitter) only after a whole round of endpoints failed. A
//! session that proved healthy resets the backoff.
//!
//! The decision is a small state machine, [`EndpointRotation`], with no clock and no
//! randomness of its own (the jitter comes in as an argument), so it is unit-tested
//! exactly; [`follow`] is the async loop around it, holding one [`Session`] at a time. A caller with its own loop (the
//! result reporter, which keeps retrying while it drains at shutdown) drives the
//! state machine directly.

use std::time::Duration;

use meridian_core::Backoff;
use tokio_util::sync::CancellationToken;

/// Which endpoint to try next and how long to wait first.
#[derive(Debug, Clone)]
pub struct EndpointRotation {
    endpoints: Vec<String>,
    current: usize,
    failed_this_round: usize,
    consecutive_failures: u64,
    backoff: Backoff,
}

/// A rotation needs at least one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no control-plane endpoint configured")]
pub struct NoEndpoints;

/// How one session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    /// The session did useful work (a message arrived, a batch was acknowledged), so
    /// the endpoint was healthy and the backoff starts again from its first step.
    pub healthy: bool,
    /// Why it ended, for the logs.
    pub reason: String,
}

impl EndpointRotation {
    pub fn new(endpoints: Vec<String>, backoff: Backoff) -> Result<Self, NoEndpoints> {
        if endpoints.is_empty() {
            return Err(NoEndpoints);
        }
        Ok(Self {
            endpoints,
            current: 0,
            failed_this_round: 0,
            consecutive_failures: 0,
            backoff,
        })
    }

    /// The endpoint to hold the next session with.
    pub fn current(&self) -> &str {
        // `new` refuses an empty list and `current` always stays below its length.
        self.endpoints.get(self.current).map_or("", String::as_str)
    }

    /// Records the end of the session with [`current`](Self::current) and moves to the
    /// next endpoint. Returns how long to wait before the next session: `None` to go
    /// on at once, a delay once every endpoint of the round failed. `unit` is a
    /// uniform random number in `[0, 1)` for the jitter.
    pub fn session_ended(&mut self, healthy: bool, unit: f64) -> Option<Duration> {
        if healthy {
            self.backoff.reset();
            self.failed_this_round = 0;
            self.consecutive_failures = 0;
        }
        // A session that worked and then ended still counts towards the round: with
        // one endpoint, reconnecting to it waits the (reset) first step.
        self.failed_this_round += 1;
        self.consecutive_failures += 1;
        self.current = (self.current + 1) % self.endpoints.len();
        if self.failed_this_round >= self.endpoints.len() {
            self.failed_this_round = 0;
            Some(self.backoff.next_delay(unit))
        } else {
            None
        }
    }

    /// Sessions ended since the last healthy one (for throttling log lines).
    pub fn consecutive_failures(&self) -> u64 {
        self.consecutive_failures
    }
}

/// One session with one endpoint: connect, stream, apply, and say how it ended.
///
/// A trait rather than an async closure: the returned future must be `Send` for
/// every borrow of the session, which the trait can state and an `AsyncFnMut` bound
/// cannot yet (the daemon spawns the loop on the multi-threaded runtime).
pub trait Session: Send {
    fn run(&mut self, endpoint: &str) -> impl std::future::Future<Output = SessionEnd> + Send;
}

/// Holds sessions until `shutdown`: `session.run(endpoint)` holds one; the rotation
/// decides the next endpoint and the pause. `what` names the stream in the log lines
/// ("plan stream").
pub async fn follow(
    what: &str,
    rotation: &mut EndpointRotation,
    shutdown: &CancellationToken,
    session: &mut impl Session,
) {
    while !shutdown.is_cancelled() {
        let endpoint = rotation.current().to_string();
        let end = tokio::select! {
            end = session.run(&endpoint) => end,
            _ = shutdown.cancelled() => break,
        };
        let pause = rotation.session_ended(end.healthy, rand::random());
        tracing::warn!(replica = %endpoint, error = %end.reason, next = %rotation.current(), pause = ?pause, "{what} unavailable; failing over");
        if let Some(delay) = pause {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn rotation(n: usize) -> EndpointRotation {
        let endpoints = (0..n).map(|i| format!("http://cp{i}")).collect();
        EndpointRotation::new(endpoints, Backoff::new(ms(100), ms(1000))).unwrap()
    }

    #[test]
    fn the_state_machine_rotates_then_backs_off_per_round() {
        assert_eq!(
            EndpointRotation::new(vec![], Backoff::new(ms(1), ms(2))).unwrap_err(),
            NoEndpoints
        );
        let mut r = rotation(3);
        let mut seen = vec![];
        let mut pauses = vec![];
        for _ in 0..6 {
            seen.push(r.current().to_string());
            pauses.push(r.session_ended(false, 0.0));
        }
        assert_eq!(
            seen,
            [
                "http://cp0",
                "http://cp1",
                "http://cp2",
                "http://cp0",
                "http://cp1",
                "http://cp2"
            ]
        );
        // Equal jitter with unit 0: half of each step (100, then 200 ms).
        assert_eq!(pauses, [None, None, Some(ms(50)), None, None, Some(ms(100))]);
        assert_eq!(r.consecutive_failures(), 6);
        // A healthy session resets the backoff and the count; the round starts over.
        assert_eq!(r.session_ended(true, 0.0), None);
        assert_eq!(r.consecutive_failures(), 1);
        assert_eq!(r.session_ended(false, 0.0), None);
        assert_eq!(r.session_ended(false, 0.0), Some(ms(50)));
        // One endpoint: every session end pauses.
        let mut one = rotation(1);
        assert_eq!(one.session_ended(false, 0.0), Some(ms(50)));
        assert_eq!(one.session_ended(false, 0.0), Some(ms(100)));
        assert_eq!(one.session_ended(true, 0.0), Some(ms(50)));
        assert_eq!(one.current(), "http://cp0");
    }

    /// Sessions 1-4 fail at once; session 5 is healthy for 10 s; 6 and 7 fail, and
    /// session 7 asks for shutdown.
    struct Scripted {
        start: Instant,
        log: Vec<(String, Duration)>,
        stop: CancellationToken,
    }

    impl Session for Scripted {
        async fn run(&mut self, endpoint: &str) -> SessionEnd {
            self.log.push((endpoint.to_string(), self.start.elapsed()));
            let n = self.log.len();
            let healthy = n == 5;
            if healthy {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            if n == 7 {
                self.stop.cancel();
            }
            SessionEnd {
                healthy,
                reason: format!("session {n}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn follow_rotates_in_order_backs_off_after_a_round_and_resets_after_health() {
        let shutdown = CancellationToken::new();
        let mut r = rotation(2);
        let mut s = Scripted {
            start: Instant::now(),
            log: vec![],
            stop: shutdown.clone(),
        };
        follow("test stream", &mut r, &shutdown, &mut s).await;
        let endpoints: Vec<&str> = s.log.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(
            endpoints,
            [
                "http://cp0",
                "http://cp1",
                "http://cp0",
                "http://cp1",
                "http://cp0",
                "http://cp1",
                "http://cp0"
            ]
        );
        let at: Vec<Duration> = s.log.iter().map(|(_, t)| *t).collect();
        let within = |d: Duration, lo: u64, hi: u64| d >= ms(lo) && d <= ms(hi);
        // cp1 right after cp0; the pause comes only after the whole round.
        assert_eq!(at[1], at[0]);
        assert!(within(at[2] - at[1], 50, 100), "first pause {:?}", at[2] - at[1]);
        assert_eq!(at[3], at[2]);
        assert!(
            within(at[4] - at[3], 100, 200),
            "second pause grows {:?}",
            at[4] - at[3]
        );
        // Session 5 (cp0) was healthy for 10 s: cp1 follows at once and, after that
        // round, the pause is back to the first step.
        assert_eq!(at[5] - at[4], Duration::from_secs(10));
        assert!(within(at[6] - at[5], 50, 100), "reset pause {:?}", at[6] - at[5]);
    }

    struct Refused;

    impl Session for Refused {
        async fn run(&mut self, _: &str) -> SessionEnd {
            SessionEnd {
                healthy: false,
                reason: "refused".into(),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_a_pause() {
        let shutdown = CancellationToken::new();
        let mut r = EndpointRotation::new(vec!["http://cp0".into()], Backoff::new(ms(60_000), ms(60_000))).unwrap();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ms(10)).await;
            stop.cancel();
        });
        let start = Instant::now();
        follow("test stream", &mut r, &shutdown, &mut Refused).await;
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
