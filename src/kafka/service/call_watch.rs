//! The watchdog of the stages' transaction calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::StageKind;

/// When each stage's blocking transaction call (begin, offsets, commit) began, so that a
/// call that never returns is seen: librdkafka 2.12 waits without limit in
/// `send_offsets_to_transaction` once the coordinator it had cached is gone (a broker
/// killed, confluentinc/librdkafka#5456, #5511), whatever timeout it was given.
#[derive(Debug)]
pub(super) struct CallWatch {
    origin: Instant,
    /// Per stage (in [`StageKind::ALL`] order): milliseconds since `origin` + 1 at the
    /// call's start; 0 while no call is in progress.
    calls: [AtomicU64; 3],
}

impl CallWatch {
    pub(super) fn new() -> Self {
        Self {
            origin: Instant::now(),
            calls: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// Run `call` as a watched call of `stage`.
    pub(super) fn watched<T>(&self, stage: StageKind, call: impl FnOnce() -> T) -> T {
        let slot = &self.calls[stage.index()];
        let now = self.origin.elapsed().as_millis() as u64 + 1;
        slot.store(now, Ordering::Relaxed);
        let result = call();
        slot.store(0, Ordering::Relaxed);
        result
    }

    /// A stage whose call has lasted `limit` or more, and for how long.
    pub(super) fn stuck(&self, limit: Duration) -> Option<(StageKind, Duration)> {
        stuck_call(&self.calls, self.origin.elapsed(), limit)
    }
}

/// The first stage whose call (started at `calls[i]` ms + 1 after the origin, 0 for none)
/// has lasted `limit` or more at `now` after the origin.
pub(super) fn stuck_call(
    calls: &[AtomicU64; 3],
    now: Duration,
    limit: Duration,
) -> Option<(StageKind, Duration)> {
    StageKind::ALL.into_iter().find_map(|kind| {
        let started = calls[kind.index()].load(Ordering::Relaxed);
        if started == 0 {
            return None;
        }
        let lasted = now.saturating_sub(Duration::from_millis(started - 1));
        (lasted >= limit).then_some((kind, lasted))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_outlasts_its_limit_is_seen_with_its_stage() {
        let calls = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
        let limit = Duration::from_secs(90);
        let at = |s: u64| Duration::from_secs(s);
        assert_eq!(
            stuck_call(&calls, at(500), limit),
            None,
            "no call in progress"
        );
        // The circuit stage entered a call 10 s after the origin.
        calls[StageKind::Circuits.index()].store(10_000 + 1, Ordering::Relaxed);
        assert_eq!(
            stuck_call(&calls, at(99), limit),
            None,
            "89 s: within the limit"
        );
        assert_eq!(
            stuck_call(&calls, at(100), limit),
            Some((StageKind::Circuits, at(90)))
        );
        // Back from the call: nothing stuck, however late.
        calls[StageKind::Circuits.index()].store(0, Ordering::Relaxed);
        assert_eq!(stuck_call(&calls, at(1000), limit), None);
        // A call that began at the origin itself is seen too (stored as 1).
        calls[StageKind::Incidents.index()].store(1, Ordering::Relaxed);
        assert_eq!(
            stuck_call(&calls, at(95), limit),
            Some((StageKind::Incidents, at(95)))
        );
    }

    #[test]
    fn a_watched_call_is_in_progress_only_while_it_runs() {
        let watch = CallWatch::new();
        let seen = watch.watched(StageKind::FanOut, || {
            watch.calls[StageKind::FanOut.index()].load(Ordering::Relaxed)
        });
        assert!(seen > 0, "marked during the call");
        assert_eq!(
            watch.calls[StageKind::FanOut.index()].load(Ordering::Relaxed),
            0,
            "cleared after it"
        );
        assert_eq!(watch.stuck(Duration::ZERO), None);
    }
}
