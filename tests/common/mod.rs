//! Shared harness for the integration tests that need a real Kafka broker.
//!
//! - [`bootstrap`]: the broker to use. `KAFKA_BOOTSTRAP_SERVERS` when set (your own cluster,
//!   or the one `scripts/test` starts once for the whole run); otherwise one local broker
//!   per test binary, started on first use by `scripts/kafka-local` and tied to this test
//!   process: its watchdog stops it when the process exits, whether the tests pass, fail
//!   or crash. Its logs stay in `target/tmp/kafka-local-<pid>/logs`.
//! - [`unique_name`]: a fresh topic or group name per test, so tests never see each other's
//!   records even on a shared cluster.
//! - [`create_topic`], [`producer_config`], [`consumer_config`]: the usual set-up.
//!
//! Each test binary uses only some of these helpers.
#![allow(dead_code)]

pub mod http;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// How long admin requests may take in tests.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The bootstrap address of the broker the tests use (see the module doc).
///
/// # Panics
/// When no broker is configured and the local one cannot be started; the panic message
/// carries `kafka-local`'s output. The failure is remembered, so every later test of the
/// binary fails at once with the same message instead of trying again.
pub fn bootstrap() -> String {
    static BOOTSTRAP: OnceLock<Result<String, String>> = OnceLock::new();
    let result = BOOTSTRAP.get_or_init(|| match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
        Ok(servers) if !servers.trim().is_empty() => Ok(servers),
        _ => start_local_broker(),
    });
    match result {
        Ok(servers) => servers.clone(),
        Err(message) => panic!("no Kafka broker for the tests: {message}"),
    }
}

fn start_local_broker() -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-local");
    let pid = std::process::id();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kafka-local-{pid}"));
    let output = Command::new(&script)
        .arg("start")
        .arg("--dir")
        .arg(&dir)
        .arg("--owner-pid")
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Shown by libtest only for failing tests, which is when it matters.
    eprintln!("{stderr}");
    let servers = stdout
        .lines()
        .find_map(|line| line.strip_prefix("KAFKA_BOOTSTRAP_SERVERS="))
        .map(str::to_owned);
    match servers {
        Some(servers) if output.status.success() => Ok(servers),
        _ => Err(format!(
            "{} start failed ({}):\n{stderr}",
            script.display(),
            output.status
        )),
    }
}

/// `<prefix>-<pid>-<time>-<n>`: unique across tests, test binaries and runs, and valid as
/// a topic or group name.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos:x}-{n}", std::process::id())
}

/// An admin client for `bootstrap`.
///
/// # Panics
/// If the client cannot be created (a bad configuration: a bug in the test).
pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client")
}

/// Creates a topic with `partitions` partitions and one replica (tests run on any cluster,
/// a single broker included), and waits until every partition has a leader.
///
/// # Panics
/// If the cluster refuses or the leaders do not appear within [`ADMIN_TIMEOUT`].
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin = admin(bootstrap);
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .expect("CreateTopics request");
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => panic!("cannot create topic {topic}: {code}"),
        }
    }
    wait_for_leaders(&admin, name, partitions).await;
}

async fn wait_for_leaders(admin: &AdminClient<DefaultClientContext>, topic: &str, partitions: i32) {
    let deadline = std::time::Instant::now() + ADMIN_TIMEOUT;
    loop {
        let ready = admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()
            .and_then(|m| {
                m.topics().first().map(|t| {
                    t.error().is_none()
                        && t.partitions().len() == usize::try_from(partitions).unwrap_or(0)
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                })
            })
            .unwrap_or(false);
        if ready {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "topic {topic} has no leader for every partition after {ADMIN_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A producer configuration: idempotent, `acks=all`, short timeouts so that a test fails
/// fast instead of hanging. Create a `FutureProducer`, a `BaseProducer` or, after setting
/// `transactional.id`, a transactional producer from it.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    config
}

/// A consumer configuration for `group`: `read_committed` (the pipeline's consumers only
/// ever see committed transactions), reading from the start of new topics, no automatic
/// commits (a test commits what it means to), and a fetch backoff low enough that a
/// consumer does not stall for a second when its queue fills.
pub fn consumer_config(bootstrap: &str, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "10000")
        .set("fetch.queue.backoff.ms", "20");
    config
}

/// Creates every topic of `topics/` under `prefix` with one replica and at most
/// `max_partitions` partitions each (co-partitioned topics keep equal counts), as
/// `linewatch topics create --prefix` would on a single broker, and waits for leaders.
///
/// # Panics
/// If the files cannot be read or the cluster refuses.
pub async fn create_service_topics(bootstrap: &str, prefix: &str, max_partitions: i32) {
    create_service_topics_replicated(bootstrap, prefix, max_partitions, 1).await;
}

/// As [`create_service_topics`], with the replication factor (and `min.insync.replicas`)
/// capped at `replication` instead of 1: on a 3-broker cluster, 3 gives the topics their
/// production replication (3 replicas, `min.insync.replicas` 2).
///
/// # Panics
/// If the files cannot be read or the cluster refuses.
pub async fn create_service_topics_replicated(
    bootstrap: &str,
    prefix: &str,
    max_partitions: i32,
    replication: i32,
) {
    use linewatch::kafka::topics::{load_dir, plan_all, PlanOptions};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("topics");
    let specs = load_dir(&dir).expect("topics/ loads");
    let options = PlanOptions::new(prefix, Some(replication)).expect("options");
    let plans = plan_all(&specs, &options).expect("plans");
    let admin = admin(bootstrap);
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let new: Vec<(NewTopic<'_>, i32)> = plans
        .iter()
        .map(|plan| {
            let partitions = plan.partitions.min(max_partitions);
            let mut topic = NewTopic::new(
                &plan.name,
                partitions,
                TopicReplication::Fixed(plan.replication_factor),
            );
            for (k, v) in &plan.configs {
                topic = topic.set(k, v);
            }
            (topic, partitions)
        })
        .collect();
    let topics: Vec<&NewTopic<'_>> = new.iter().map(|(t, _)| t).collect();
    // A client given several bootstrap brokers may drop its bootstrap connections once it
    // knows the brokers by id, failing a request queued on one of them (DestroyBroker):
    // that request is sent again.
    let mut attempts = 0;
    let results = loop {
        attempts += 1;
        match admin.create_topics(topics.iter().copied(), &options).await {
            Ok(results) => break results,
            Err(e) if attempts < 5 => {
                eprintln!("CreateTopics request failed ({e}); again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("CreateTopics request: {e}"),
        }
    };
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => panic!("cannot create topic {topic}: {code}"),
        }
    }
    for (topic, partitions) in &new {
        wait_for_leaders(&admin, topic.name, *partitions).await;
    }
}

/// The pid of the broker `scripts/kafka-local start --dir DIR` started (from its state
/// file).
///
/// # Panics
/// When DIR holds no broker state.
pub fn local_broker_pid(dir: &Path) -> String {
    let state = std::fs::read_to_string(dir.join("kafka-local.state")).expect("state file");
    state
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .expect("broker pid")
        .to_string()
}
