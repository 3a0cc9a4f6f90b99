//! What one running instance holds right now, shared between its stages (writers) and its
//! HTTP endpoints (readers): the views of its partitions, which partitions it owns, and
//! whether it is ready. Plain data (no Kafka): the runtime fills it in, and finds the
//! other instances through a [`Directory`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dashmap::DashMap;
use serde::Serialize;

use crate::views::Views;

/// Stage names, as in the consumer groups (`<group>-<stage>`) and the metrics.
pub const STAGES: [&str; 3] = ["fanout", "circuits", "incidents"];

/// One stage's assignment on this instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageInfo {
    /// The stage has had an assignment (possibly empty) since it started.
    pub joined: bool,
    /// The partitions of the last assignment are still being restored.
    pub restoring: bool,
    /// Partitions of the stage's keyed input owned by this instance.
    pub partitions: Vec<i32>,
    /// Partitions of the keyed input in all.
    pub partition_count: i32,
}

/// Another instance of the deployment, as its group membership shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub instance: String,
    pub url: String,
    pub partitions: Vec<i32>,
}

/// Finds which instances own which partitions of a stage (the runtime asks the Kafka
/// group coordinator). Blocking.
pub trait Directory: Send + Sync {
    /// # Errors
    /// A message when the group cannot be described now.
    fn members(&self, stage: &str) -> Result<Vec<Member>, String>;
}

/// The shared state of one instance.
#[derive(Debug)]
pub struct Live {
    pub views: Views,
    /// This instance's id (its transactional id prefix).
    pub instance: String,
    /// The base URL under which other instances and callers reach this one.
    pub url: String,
    replica_ready: AtomicBool,
    inventory_circuits: AtomicU64,
    stages: DashMap<&'static str, StageInfo>,
    /// Committed transactions per stage (in [`STAGES`] order), to tell a stage that fails
    /// again and again from one that fails now and then.
    commits: [AtomicU64; 3],
    /// Stages failing without progress, with the last reason.
    stalled: DashMap<&'static str, String>,
    /// Fresh circuit views asked for by readers (a count) and the last request the
    /// circuit stage has answered; see [`Live::fresh_circuit_views`].
    views_asked: AtomicU64,
    views_answered: AtomicU64,
    views_built: tokio::sync::Notify,
    /// A circuit stage owning partitions answers requests for fresh views.
    views_served: AtomicBool,
}

impl Live {
    pub fn new(instance: impl Into<String>, url: impl Into<String>) -> Self {
        Live {
            views: Views::new(),
            instance: instance.into(),
            url: url.into(),
            replica_ready: AtomicBool::new(false),
            inventory_circuits: AtomicU64::new(0),
            stages: STAGES.iter().map(|s| (*s, StageInfo::default())).collect(),
            commits: Default::default(),
            stalled: DashMap::new(),
            views_asked: AtomicU64::new(0),
            views_answered: AtomicU64::new(0),
            views_built: tokio::sync::Notify::new(),
            views_served: AtomicBool::new(false),
        }
    }

    /// Ask the circuit stage to bring its views up to its committed state, and wait until
    /// it has (at most `patience`). The circuit stage builds the views of the circuits
    /// that changed only when a reader asks ([`Live::views_wanted`]), not after every
    /// commit: building them costs as much as a tenth of the stage's work under load, for
    /// answers nobody may read. Returns whether the views were brought up to date in
    /// time; when not (the stage is in a long call, e.g. to a broker that does not
    /// answer), the views are those of an earlier commit.
    pub async fn fresh_circuit_views(&self, patience: std::time::Duration) -> bool {
        if !self.views_served.load(Ordering::Acquire) {
            return false;
        }
        let ticket = self.views_asked.fetch_add(1, Ordering::AcqRel) + 1;
        let answered = async {
            loop {
                let built = self.views_built.notified();
                tokio::pin!(built);
                built.as_mut().enable();
                if self.views_answered.load(Ordering::Acquire) >= ticket {
                    return;
                }
                built.await;
            }
        };
        tokio::time::timeout(patience, answered).await.is_ok()
    }

    /// The newest request for fresh circuit views not yet answered, if any: the circuit
    /// stage builds its stale views and then calls [`Live::views_built`] with it.
    pub fn views_wanted(&self) -> Option<u64> {
        let asked = self.views_asked.load(Ordering::Acquire);
        (asked > self.views_answered.load(Ordering::Acquire)).then_some(asked)
    }

    /// Whether a circuit stage owning partitions is there to answer requests for fresh
    /// views (without one, readers do not wait).
    pub fn serve_views(&self, served: bool) {
        self.views_served.store(served, Ordering::Release);
    }

    /// The views reflect every change committed before request `ticket` was read.
    pub fn views_built(&self, ticket: u64) {
        self.views_answered.fetch_max(ticket, Ordering::AcqRel);
        self.views_built.notify_waiters();
    }

    /// A stage committed a transaction: it makes progress.
    /// Returns whether the stage was marked stalled until now.
    pub fn note_commit(&self, stage: &str) -> bool {
        if let Some(i) = STAGES.iter().position(|s| *s == stage) {
            self.commits[i].fetch_add(1, Ordering::Relaxed);
        }
        !self.stalled.is_empty() && self.stalled.remove(stage).is_some()
    }

    /// How many transactions the stage has committed.
    pub fn commits(&self, stage: &str) -> u64 {
        STAGES
            .iter()
            .position(|s| *s == stage)
            .map_or(0, |i| self.commits[i].load(Ordering::Relaxed))
    }

    /// The stage failed again without committing anything since its last failure.
    pub fn mark_stalled(&self, stage: &'static str, reason: String) {
        self.stalled.insert(stage, reason);
    }

    pub fn set_replica_ready(&self, circuits: usize) {
        self.inventory_circuits
            .store(circuits as u64, Ordering::Relaxed);
        self.replica_ready.store(true, Ordering::Relaxed);
    }

    pub fn set_inventory_circuits(&self, circuits: usize) {
        self.inventory_circuits
            .store(circuits as u64, Ordering::Relaxed);
    }

    pub fn inventory_circuits(&self) -> u64 {
        self.inventory_circuits.load(Ordering::Relaxed)
    }

    /// Update one stage's assignment info.
    pub fn update_stage(&self, stage: &'static str, update: impl FnOnce(&mut StageInfo)) {
        update(&mut self.stages.entry(stage).or_default());
    }

    pub fn stage(&self, stage: &str) -> StageInfo {
        self.stages
            .get(stage)
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Ready: the inventory replica has caught up, and every stage has joined its group
    /// and restored the state of what it was assigned.
    pub fn ready(&self) -> bool {
        self.replica_ready.load(Ordering::Relaxed)
            && self.stalled.is_empty()
            && STAGES.iter().all(|s| {
                let info = self.stage(s);
                info.joined && !info.restoring
            })
    }

    /// Why the instance is not ready (empty when it is).
    pub fn not_ready_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if !self.replica_ready.load(Ordering::Relaxed) {
            reasons.push("inventory replica catching up".to_string());
        }
        for s in STAGES {
            let info = self.stage(s);
            if !info.joined {
                reasons.push(format!("stage {s} has no assignment yet"));
            } else if info.restoring {
                reasons.push(format!("stage {s} restoring state"));
            }
            if let Some(reason) = self.stalled.get(s) {
                reasons.push(format!(
                    "stage {s} cannot make progress (restarted without committing): {}",
                    reason.value()
                ));
            }
        }
        reasons
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    }

    #[test]
    fn a_reader_of_views_waits_for_the_circuit_stage_to_answer_and_no_longer() {
        let live = Arc::new(Live::new("i1", "http://127.0.0.1:9464"));
        let rt = runtime();
        // No circuit stage: the reader does not wait, and nothing is asked of anyone.
        let started = Instant::now();
        assert!(!rt.block_on(live.fresh_circuit_views(Duration::from_secs(5))));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(live.views_wanted(), None);

        // A stage that answers after 200 ms: the reader gets its answer then.
        live.serve_views(true);
        let stage = {
            let live = live.clone();
            std::thread::spawn(move || loop {
                if let Some(ticket) = live.views_wanted() {
                    std::thread::sleep(Duration::from_millis(200));
                    live.views_built(ticket);
                    return ticket;
                }
                std::thread::sleep(Duration::from_millis(5));
            })
        };
        let started = Instant::now();
        assert!(rt.block_on(live.fresh_circuit_views(Duration::from_secs(5))));
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(stage.join().expect("the stage thread"), 1);
        assert_eq!(live.views_wanted(), None, "answered");

        // A stage that does not answer (stuck in a call): the reader gives up after its
        // patience, and the request stays for the stage's next turn.
        let started = Instant::now();
        assert!(!rt.block_on(live.fresh_circuit_views(Duration::from_millis(300))));
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(live.views_wanted(), Some(2));
    }

    #[test]
    fn ready_only_once_the_replica_and_every_stage_are_caught_up() {
        let live = Live::new("i1", "http://127.0.0.1:9464");
        assert!(!live.ready());
        live.set_replica_ready(10);
        assert!(!live.ready());
        for s in STAGES {
            live.update_stage(s, |i| {
                i.joined = true;
                i.restoring = true;
            });
        }
        assert!(!live.ready());
        assert_eq!(live.not_ready_reasons().len(), 3);
        for s in STAGES {
            live.update_stage(s, |i| i.restoring = false);
        }
        assert!(live.ready(), "{:?}", live.not_ready_reasons());
        live.mark_stalled("circuits", "Message size too large".into());
        assert!(!live.ready());
        assert!(live.not_ready_reasons()[0].contains("Message size too large"));
        assert!(!live.note_commit("fanout"));
        assert!(!live.ready(), "another stage's progress does not count");
        assert!(live.note_commit("circuits"), "it was stalled");
        assert!(live.ready());
        assert_eq!(live.commits("circuits"), 1);
    }
}

/// The partition Kafka's default partitioner (murmur2, as the Java clients and this
/// service's producers use) gives `key` among `partitions`: where a circuit's records,
/// and so its state, live.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    if partitions <= 0 {
        return 0;
    }
    let hash = murmur2(key) & 0x7fff_ffff;
    (hash % partitions as u32) as i32
}

/// Kafka's murmur2 (seed 0x9747b28c), as a u32.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        if tail.len() >= 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod partitioner_tests {
    use super::*;

    /// The reference values of Kafka's own partitioner tests.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key) as i32,
                expected,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn partitions_stay_in_range() {
        for i in 0..1000 {
            let p = partition_for_key(format!("C-{i}").as_bytes(), 6);
            assert!((0..6).contains(&p));
        }
        assert_eq!(partition_for_key(b"x", 0), 0);
    }
}
