//! Broker faults on a 3-broker cluster (issue 16): each test starts its own KRaft cluster
//! of three nodes (`scripts/kafka-local start --brokers 3`: every topic with 3 replicas and
//! `min.insync.replicas` 2, the transaction state log and the offsets topic likewise), runs
//! `linewatch run` through a storm, and hurts one broker meanwhile: a kill -9 of the broker
//! that leads the most partitions (and coordinates none of the instance's groups and
//! transactions: see the kill test) while the storm is processed, and its restart; or a pause
//! (SIGSTOP) of the circuit stage's transaction coordinator for 15 s, three times the
//! clients' request timeout, so that requests in flight to it (produce requests of the
//! open transaction among them) time out unanswered: written or not, the client cannot
//! tell. Either way the committed ticket events, read with `read_committed`, are what the
//! replay gives for the same input, no ticket event is there twice or missing from its
//! ticket's sequence, and the instance still stops on SIGTERM within seconds.
//!
//! The two tests run one after the other (a cluster each is three JVMs on a small machine).

mod common;
mod pipeline;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use linewatch::kafka::service::TopicNames;
use pipeline::*;

/// One cluster test at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-local")
}

/// A 3-node cluster of the test's own, tied to the test process (its watchdogs stop the
/// nodes if the process dies) and stopped on drop.
struct Cluster {
    dir: PathBuf,
    bootstrap: String,
}

impl Cluster {
    /// `settings`: extra broker properties (`--set KEY=VALUE`).
    fn start(name: &str, settings: &[&str]) -> Cluster {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-cluster-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let started = Instant::now();
        let out = Command::new(script())
            .args(["start", "--brokers", "3", "--dir"])
            .arg(&dir)
            .args(["--owner-pid", &std::process::id().to_string()])
            .args(settings.iter().flat_map(|kv| ["--set", kv]))
            .stderr(Stdio::inherit())
            .output()
            .expect("kafka-local start");
        assert!(out.status.success(), "the test's 3-broker cluster starts");
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let bootstrap = line
            .strip_prefix("KAFKA_BOOTSTRAP_SERVERS=")
            .expect("the cluster's addresses")
            .to_string();
        assert_eq!(
            bootstrap.split(',').count(),
            3,
            "three brokers: {bootstrap}"
        );
        eprintln!("cluster up in {:?}: {bootstrap}", started.elapsed());
        Cluster { dir, bootstrap }
    }

    /// `kafka-local kill|restart|pause|resume --node ID`, which must succeed.
    fn node(&self, what: &str, id: i32) {
        let started = Instant::now();
        let status = Command::new(script())
            .args([what, "--dir"])
            .arg(&self.dir)
            .args(["--node", &id.to_string()])
            .stderr(Stdio::inherit())
            .status()
            .expect("kafka-local");
        assert!(status.success(), "kafka-local {what} --node {id}");
        eprintln!("node {id}: {what} took {:?}", started.elapsed());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .args(["stop", "--dir"])
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
        for i in 1..=3 {
            let _ = std::fs::remove_dir_all(self.dir.join(format!("node-{i}/data")));
        }
    }
}

/// The runtime tests' set-up, on the cluster: every topic replicated three times.
async fn cluster_setup(cluster: &Cluster, name: &str, group: String) -> Setup {
    let prefix = format!("{}.", common::unique_name(name));
    common::create_service_topics_replicated(&cluster.bootstrap, &prefix, PARTITIONS, 3).await;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(&prefix);
    std::fs::create_dir_all(&dir).expect("dir");
    Setup {
        bootstrap: cluster.bootstrap.clone(),
        topics: TopicNames::with_prefix(&prefix),
        group,
        dir,
        prefix,
    }
}

fn metadata(bootstrap: &str, topic: Option<&str>) -> rdkafka::metadata::Metadata {
    common::admin(bootstrap)
        .inner()
        .fetch_metadata(topic, Duration::from_secs(10))
        .expect("metadata")
}

/// How many partitions of the test's topics each broker leads, and that every partition
/// has three replicas.
fn leaders(bootstrap: &str, prefix: &str) -> BTreeMap<i32, usize> {
    let md = metadata(bootstrap, None);
    let mut led = BTreeMap::new();
    for t in md.topics().iter().filter(|t| t.name().starts_with(prefix)) {
        for p in t.partitions() {
            assert_eq!(
                p.replicas().len(),
                3,
                "{}[{}] has three replicas",
                t.name(),
                p.id()
            );
            *led.entry(p.leader()).or_insert(0) += 1;
        }
    }
    led
}

/// Java's `String.hashCode`, as the broker hashes a transactional id to its partition of
/// the transaction state log.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The partition of `topic` (`__consumer_offsets` or `__transaction_state`) whose leader
/// coordinates the group or transactional id `id`: `abs(hashCode) % partitions`, as the
/// broker has it.
fn coordinator_partition(id: &str, partitions: i32) -> i32 {
    let hash = java_hash(id);
    let abs = if hash == i32::MIN { 0 } else { hash.abs() };
    abs % partitions
}

/// The broker that coordinates `id` (a group id on `__consumer_offsets`, a transactional
/// id on `__transaction_state`): the leader of its partition of `topic`.
fn coordinator(bootstrap: &str, topic: &str, id: &str) -> i32 {
    let md = metadata(bootstrap, Some(topic));
    let t = md.topics().first().expect("an internal topic");
    let partitions = i32::try_from(t.partitions().len()).expect("count");
    assert!(partitions > 0, "{topic} exists by now");
    let partition = coordinator_partition(id, partitions);
    t.partitions()
        .iter()
        .find(|p| p.id() == partition)
        .map(|p| p.leader())
        .expect("the partition's leader")
}

fn transaction_coordinator(bootstrap: &str, transactional_id: &str) -> i32 {
    coordinator(bootstrap, "__transaction_state", transactional_id)
}

const STAGES: [&str; 3] = ["fanout", "circuits", "incidents"];

/// A group id whose three stage groups have the same coordinator partition, and so do
/// the three stages' transactional ids of instance `a` (3 partitions each, as
/// kafka-local creates the offsets topic and the transaction state log): the brokers
/// that coordinate the instance's groups and transactions are then two at most, and a
/// third broker can die without taking a coordinator along.
fn group_with_few_coordinators(name: &str) -> String {
    loop {
        let group = common::unique_name(&format!("{name}-lw"));
        let groups: Vec<i32> = STAGES
            .iter()
            .map(|s| coordinator_partition(&format!("{group}-{s}"), 3))
            .collect();
        let txns: Vec<i32> = STAGES
            .iter()
            .map(|s| coordinator_partition(&format!("{group}-a-{s}"), 3))
            .collect();
        if groups.iter().all(|g| *g == groups[0]) && txns.iter().all(|t| *t == txns[0]) {
            return group;
        }
    }
}

/// Waits until the instance has every stage's partitions and has started its work.
fn wait_assigned(instance: &Instance) {
    instance.wait_for_log(Duration::from_secs(120), |log| {
        log.matches("state restored").count() >= 3
    });
}

/// SIGTERM, and a clean exit within `limit`; if not, the threads' stacks (gdb) go to
/// `<dir>/<name>.stacks` for the post-mortem, and the test fails.
fn stop_within(mut instance: Instance, dir: &Path, limit: Duration) -> Duration {
    instance.signal("TERM");
    let asked = Instant::now();
    while asked.elapsed() < limit {
        if let Ok(Some(status)) = instance.child.try_wait() {
            assert!(status.success(), "{} exited with {status}", instance.name);
            return asked.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stacks = dir.join(format!("{}.stacks", instance.name));
    let _ = Command::new("gdb")
        .args(["-batch", "-p", &instance.child.id().to_string()])
        .args(["-ex", "thread apply all bt"])
        .stdout(std::fs::File::create(&stacks).expect("stacks file"))
        .stderr(Stdio::null())
        .status();
    panic!(
        "{} did not stop within {limit:?} of SIGTERM (log: {}, stacks: {})",
        instance.name,
        instance.log.display(),
        stacks.display()
    );
}

/// The checks of the runtime tests on the run's committed output (read with
/// `read_committed`): no ticket event twice and none missing from a ticket's sequence, and
/// the same tickets, SLA reminders, KPI figures and incidents as the replay of the same
/// input.
fn check_against_replay(setup: &Setup, scenario: &Scenario, commands: &[Rec]) {
    let run = read_outputs(&setup.bootstrap, &setup.topics);
    run.save(&setup.dir.join("run"));
    let replay = setup.replay(scenario, commands);
    assert!(
        final_tickets(&replay.tickets).len() >= 20,
        "a storm worth the name"
    );
    let split = scenario
        .split
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let latest = run
        .tickets
        .iter()
        .filter_map(|e| e["eventTime"].as_str())
        .max()
        .unwrap_or_default()
        .to_string();
    assert!(
        latest >= split,
        "no ticket event of the second phase (the commands at {split} and after) was \
         committed; the latest is {latest}: the circuit stage holds its inputs"
    );
    // No ticket event twice, none missing from any ticket's sequence...
    ticket_histories(&run.tickets);
    // ...and the same tickets, reminders, figures and incidents as the replay.
    assert_same_answers(&run, &replay);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_leader_killed_during_a_storm_and_restarted_loses_and_duplicates_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let cluster = Cluster::start("kill", &[]);
    let setup = cluster_setup(&cluster, "kill", group_with_few_coordinators("kill")).await;
    let scenario = storm(23, 80, 70);
    setup.load_inventory(&scenario);
    let mut instance = setup.start("a");
    wait_assigned(&instance);
    let mut killed = Vec::new();
    let commands = setup.feed(&scenario, |phase| {
        // While the stages work through the first phase's alarms, the broker that leads
        // the most of the test's partitions dies (kill -9) and comes back. (Once: the
        // restarted broker leads nothing until the controller's next preferred-leader
        // election, and the others coordinate.)
        if phase != 1 {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
        // The broker that leads the most of the test's partitions and coordinates none of
        // the instance's groups and transactions. (Killing a group coordinator hangs a
        // stage for good in librdkafka 2.12's send_offsets_to_transaction, which ignores
        // its timeout: confluentinc/librdkafka#5456, #5511; see the report of issue 16.)
        let led = leaders(&setup.bootstrap, &setup.prefix);
        let coordinators: Vec<i32> = STAGES
            .iter()
            .flat_map(|s| {
                [
                    coordinator(
                        &setup.bootstrap,
                        "__consumer_offsets",
                        &format!("{}-{s}", setup.group),
                    ),
                    transaction_coordinator(&setup.bootstrap, &format!("{}-a-{s}", setup.group)),
                ]
            })
            .collect();
        let (&victim, &count) = led
            .iter()
            .filter(|(id, _)| **id >= 1 && !coordinators.contains(id))
            .max_by_key(|(id, n)| (**n, -**id))
            .unwrap_or_else(|| {
                panic!("a leader that coordinates nothing: {led:?}, {coordinators:?}")
            });
        assert!(count > 0, "the victim leads partitions: {led:?}");
        eprintln!(
            "killing broker {victim}: it leads {count} partitions; coordinators {coordinators:?}"
        );
        cluster.node("kill", victim);
        killed.push(victim);
        // Its partitions get new leaders among the two others once the controller has
        // fenced it (broker.session.timeout.ms, 9 s), while the service goes on.
        let dead = Instant::now();
        loop {
            let after = leaders(&setup.bootstrap, &setup.prefix);
            if !after.contains_key(&victim) {
                eprintln!("broker {victim}'s partitions moved in {:?}", dead.elapsed());
                break;
            }
            assert!(
                dead.elapsed() < Duration::from_secs(40),
                "broker {victim} still leads partitions 40 s after its death: {after:?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        std::thread::sleep(Duration::from_secs(2));
        cluster.node("restart", victim);
    });
    eprintln!("killed and restarted brokers {killed:?}");
    assert_eq!(killed.len(), 1);
    assert!(instance.is_running(), "the instance lived through it");
    check_against_replay(&setup, &scenario, &commands);
    let took = stop_within(instance, &setup.dir, Duration::from_secs(30));
    eprintln!("SIGTERM: exit after {took:?}");
    eprintln!("test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_coordinator_paused_past_the_request_timeout_leaves_no_duplicate() {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let cluster = Cluster::start("pause", &[]);
    let setup = cluster_setup(&cluster, "pause", group_with_few_coordinators("pause")).await;
    let scenario = storm(37, 80, 70);
    setup.load_inventory(&scenario);
    // Requests time out after 5 s (librdkafka's default is 30 s), so that a pause of 15 s
    // is well past it, and past the brokers' session timeout (9 s): the controller fences
    // the paused broker and the transaction state log's partitions get new leaders.
    let mut instance = Instance::start_with(
        &setup.bootstrap,
        &setup.prefix,
        &setup.group,
        "a",
        &setup.dir,
        &[
            "--idle-after-ms",
            "86400000",
            "-X",
            "request.timeout.ms=5000",
            "-X",
            "socket.timeout.ms=5000",
        ],
    );
    wait_assigned(&instance);
    let transactional_id = format!("{}-a-circuits", setup.group);
    let mut paused = None;
    let commands = setup.feed(&scenario, |phase| {
        if phase != 1 {
            return;
        }
        // The circuit stage's transaction coordinator, unless it also coordinates the
        // stages' groups: a group coordinator gone past the session timeout costs the
        // stages their assignment, and after that the storm stalled (see the report of
        // issue 16). Then a broker that leads partitions and coordinates no group.
        let groups: Vec<i32> = STAGES
            .iter()
            .map(|s| {
                coordinator(
                    &setup.bootstrap,
                    "__consumer_offsets",
                    &format!("{}-{s}", setup.group),
                )
            })
            .collect();
        let txn = transaction_coordinator(&setup.bootstrap, &transactional_id);
        assert!(txn >= 1, "a coordinator for {transactional_id}");
        let coordinator = if groups.contains(&txn) {
            let led = leaders(&setup.bootstrap, &setup.prefix);
            *led.iter()
                .filter(|(id, _)| **id >= 1 && !groups.contains(id))
                .max_by_key(|(id, n)| (**n, -**id))
                .expect("a leader that coordinates no group")
                .0
        } else {
            txn
        };
        eprintln!(
            "pausing broker {coordinator}: transaction coordinator {txn}, group coordinators {groups:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
        cluster.node("pause", coordinator);
        std::thread::sleep(Duration::from_secs(15));
        cluster.node("resume", coordinator);
        paused = Some(coordinator);
    });
    eprintln!("paused broker {paused:?} for 15 s");
    assert!(instance.is_running(), "the instance lived through it");
    let log = std::fs::read_to_string(&instance.log).expect("log");
    // The pause outlasted the request timeout with requests in flight to the paused
    // broker: their outcome was unknown to the client (a produce in flight may or may not
    // have been written), and the transaction went on or was aborted on that basis.
    let paused = paused.expect("paused");
    let port = cluster
        .bootstrap
        .split(',')
        .nth(usize::try_from(paused - 1).expect("node id"))
        .expect("the paused broker's address")
        .to_string();
    let timed_out: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("REQTMOUT") && l.contains("in flight") && l.contains(&port))
        .collect();
    assert!(
        !timed_out.is_empty(),
        "requests to the paused broker {port} timed out in flight (log: {})",
        instance.log.display()
    );
    let hit: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("Timed out ProduceRequest")
                || l.contains("thrd:TxnCoordinator")
                || l.contains("retrying transaction commit")
                || l.contains("restarting the stage")
        })
        .collect();
    eprintln!(
        "{} requests timed out in flight; produce, coordinator and commit lines: {hit:#?}",
        timed_out.len()
    );
    check_against_replay(&setup, &scenario, &commands);
    let took = stop_within(instance, &setup.dir, Duration::from_secs(30));
    eprintln!("SIGTERM: exit after {took:?}");
    eprintln!("test took {:?}", started.elapsed());
}
