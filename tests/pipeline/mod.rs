//! Harness for the runtime tests: a storm scenario, `linewatch run` instances as child
//! processes (so that they can be killed, paused and resumed), a quiescence check on the
//! stages' consumer groups, and the comparison of the committed output with what the
//! replay command gives for the same input.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as Span, TimeZone, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

use linewatch::kafka::service::TopicNames;

use crate::common;

/// Partitions per topic in these tests (co-partitioned topics stay equal).
pub const PARTITIONS: i32 = 3;

/// A keyed record for one input topic.
#[derive(Debug, Clone)]
pub struct Rec {
    pub key: String,
    pub value: Value,
    /// An explicit partition (the watermark ticks), else by key.
    pub partition: Option<i32>,
}

/// A small, deterministic xorshift generator: the same seed gives the same scenario.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The storm scenario: circuits over access NEs, aggregation links and PEs, and alarms in
/// event-time order, in two phases around `split` (ticket commands are sent between them).
#[derive(Debug, Clone)]
pub struct Scenario {
    pub inventory: Vec<Rec>,
    pub phase1: Vec<Rec>,
    pub phase2: Vec<Rec>,
    pub split: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

fn tmf(
    id: &str,
    object: &str,
    cause: &str,
    severity: &str,
    raised: DateTime<Utc>,
    cleared: Option<DateTime<Utc>>,
) -> (DateTime<Utc>, Rec) {
    let mut v = json!({
        "id": id, "probableCause": cause, "alarmType": "communicationsAlarm",
        "alarmedObject": { "id": object }, "sourceSystemId": "nms-1",
        "alarmRaisedTime": raised.to_rfc3339(),
    });
    let at = match cleared {
        Some(c) => {
            v["state"] = json!("cleared");
            v["perceivedSeverity"] = json!("cleared");
            v["alarmClearedTime"] = json!(c.to_rfc3339());
            c
        }
        None => {
            v["state"] = json!("raised");
            v["perceivedSeverity"] = json!(severity);
            raised
        }
    };
    (
        at,
        Rec {
            key: object.to_string(),
            value: v,
            partition: None,
        },
    )
}

/// `circuits` circuits (about ten per aggregation link, every fourth protected over a
/// second link) and about `events` alarm incidents over two days: fibre cuts with the
/// consequential AIS of every access NE behind the link, port failures, flapping ports,
/// CPE power-offs, card failures and warnings.
pub fn storm(seed: u64, circuits: usize, events: usize) -> Scenario {
    let mut rng = Rng::new(seed);
    let t0 = Utc
        .with_ymd_and_hms(2026, 3, 2, 0, 0, 0)
        .single()
        .expect("time");
    let split = t0 + Span::hours(24);
    let end = t0 + Span::hours(60);
    let links = (circuits / 10).max(2);
    let mut inventory = Vec::new();
    let mut acc_of_link: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let levels = ["AAA", "AA", "AA", "A", "A", "A", "ordinary", "ordinary"];
    let customers = ["gold", "silver", "bronze", "standard"];
    let scopes = ["intra_city", "intra_province", "inter_province"];
    for i in 0..circuits {
        let acc = format!("ACC-{:03}", i / 8);
        let port = format!("{acc}/{}/{}", (i % 8) / 4, i % 4);
        let link = i % links;
        acc_of_link.entry(link).or_default().insert(acc.clone());
        let path = |link: usize| {
            json!([
                { "kind": "ne", "id": format!("CPE-{i:04}"), "domain": "cpe", "neType": "CPE" },
                { "kind": "port", "id": port, "domain": "transmission", "neType": "PTN",
                  "ne": acc, "card": format!("{acc}/{}", (i % 8) / 4) },
                { "kind": "link", "id": format!("AGG-L{link:03}"), "domain": "transmission", "neType": "OTN" },
                { "kind": "port", "id": format!("PE-{}/1/{}", link % 3, i), "domain": "ip", "neType": "router" },
            ])
        };
        let mut routes = vec![json!({ "role": "working", "path": path(link) })];
        if i % 4 == 3 {
            routes.push(json!({ "role": "protection", "path": path((link + 1) % links) }));
        }
        let id = format!("DL-{i:04}");
        let value = json!({
            "circuitId": id,
            "customer": { "id": format!("CUST-{}", i % 17), "name": format!("Customer {}", i % 17),
                          "level": customers[(rng.below(4)) as usize] },
            "assuranceLevel": levels[rng.below(levels.len() as u64) as usize],
            "scope": scopes[rng.below(3) as usize],
            "service": "data",
            "routes": routes,
        });
        inventory.push(Rec {
            key: id,
            value,
            partition: None,
        });
    }
    let mut timed: Vec<(DateTime<Utc>, Rec)> = Vec::new();
    for n in 0..events {
        let start = t0 + Span::seconds(rng.below(58 * 3600) as i64);
        let minutes = [3, 12, 40, 90, 200, 330][rng.below(6) as usize];
        let stop = start + Span::minutes(minutes) + Span::seconds(rng.below(60) as i64);
        let kind = rng.below(10);
        match kind {
            0 | 1 => {
                // Fibre cut: LOS on the link, AIS on every access NE behind it.
                let link = rng.below(links as u64) as usize;
                let object = format!("AGG-L{link:03}");
                let id = format!("LOS-{n}");
                timed.push(tmf(&id, &object, "LOS", "critical", start, None));
                timed.push(tmf(&id, &object, "LOS", "critical", start, Some(stop)));
                for (k, acc) in acc_of_link.get(&link).into_iter().flatten().enumerate() {
                    let id = format!("AIS-{n}-{k}");
                    let raised = start + Span::seconds(2);
                    timed.push(tmf(&id, acc, "TU-AIS", "major", raised, None));
                    let cleared = stop + Span::seconds(1 + k as i64);
                    timed.push(tmf(&id, acc, "TU-AIS", "major", raised, Some(cleared)));
                }
            }
            2 | 3 => {
                let i = rng.below(circuits as u64) as usize;
                let object = format!("ACC-{:03}/{}/{}", i / 8, (i % 8) / 4, i % 4);
                let id = format!("PLOS-{n}");
                timed.push(tmf(&id, &object, "LOS", "critical", start, None));
                timed.push(tmf(&id, &object, "LOS", "critical", start, Some(stop)));
            }
            4 => {
                // Flapping port: three short drops a few minutes apart.
                let i = rng.below(circuits as u64) as usize;
                let object = format!("ACC-{:03}/{}/{}", i / 8, (i % 8) / 4, i % 4);
                for f in 0..3 {
                    let id = format!("FLAP-{n}-{f}");
                    let s = start + Span::minutes(4 * f);
                    timed.push(tmf(&id, &object, "linkDown", "major", s, None));
                    timed.push(tmf(
                        &id,
                        &object,
                        "linkDown",
                        "major",
                        s,
                        Some(s + Span::seconds(50)),
                    ));
                }
            }
            5 => {
                let i = rng.below(circuits as u64) as usize;
                let object = format!("CPE-{i:04}");
                let id = format!("PWR-{n}");
                timed.push(tmf(&id, &object, "dyingGasp", "critical", start, None));
                timed.push(tmf(
                    &id,
                    &object,
                    "dyingGasp",
                    "critical",
                    start,
                    Some(stop),
                ));
            }
            6 => {
                let i = rng.below(circuits as u64) as usize;
                let object = format!("ACC-{:03}/{}", i / 8, (i % 8) / 4);
                let id = format!("CARD-{n}");
                timed.push(tmf(
                    &id,
                    &object,
                    "equipmentFailure",
                    "critical",
                    start,
                    None,
                ));
                timed.push(tmf(
                    &id,
                    &object,
                    "equipmentFailure",
                    "critical",
                    start,
                    Some(stop),
                ));
            }
            _ => {
                let i = rng.below(circuits as u64) as usize;
                let object = format!("ACC-{:03}", i / 8);
                let id = format!("TEMP-{n}");
                timed.push(tmf(&id, &object, "highTemperature", "warning", start, None));
            }
        }
    }
    // Nothing exactly at the split: commands sent between the phases act at it.
    timed.retain(|(t, _)| *t != split && *t < end);
    timed.sort_by_key(|a| a.0);
    let (phase1, phase2): (Vec<_>, Vec<_>) = timed.into_iter().partition(|(t, _)| *t < split);
    let mut phase2: Vec<Rec> = phase2.into_iter().map(|(_, r)| r).collect();
    // A warning at the end on every alarms partition moves every fan-out watermark there.
    for p in 0..PARTITIONS {
        let (_, mut rec) = tmf(
            &format!("TICK-{p}"),
            &format!("TICK-{p}"),
            "heartbeat",
            "warning",
            end,
            None,
        );
        rec.partition = Some(p);
        phase2.push(rec);
    }
    Scenario {
        inventory,
        phase1: phase1.into_iter().map(|(_, r)| r).collect(),
        phase2,
        split,
        end,
    }
}

/// Acknowledge (and reclassify, and close by hand) the tickets open at the split, as a
/// ticketing system would: commands that act at the split.
pub fn commands_at_split(open_tickets: &[(String, String)], split: DateTime<Utc>) -> Vec<Rec> {
    open_tickets
        .iter()
        .enumerate()
        .map(|(i, (ticket, circuit))| {
            let mut v = json!({
                "ticketId": ticket, "circuitId": circuit, "at": split.to_rfc3339(), "by": "noc",
            });
            match i % 5 {
                3 => {
                    v["action"] = json!("reclassify");
                    v["cause"] = json!("customer");
                }
                4 => v["action"] = json!("close"),
                _ => v["action"] = json!("acknowledge"),
            }
            Rec {
                key: circuit.clone(),
                value: v,
                partition: None,
            }
        })
        .collect()
}

pub fn write_jsonl(path: &Path, recs: &[Rec]) {
    let mut f = File::create(path).expect("create");
    for r in recs {
        writeln!(f, "{}", r.value).expect("write");
    }
}

/// The replay of `inventory`, `alarms` and `commands`, with the clock run to `until`.
pub fn replay(
    dir: &Path,
    inventory: &[Rec],
    alarms: &[Rec],
    commands: &[Rec],
    until: DateTime<Utc>,
) -> Outputs {
    let input = dir.join("in");
    let output = dir.join("out");
    std::fs::create_dir_all(&input).expect("dir");
    write_jsonl(&input.join("inventory.jsonl"), inventory);
    write_jsonl(&input.join("alarms.jsonl"), alarms);
    write_jsonl(&input.join("commands.jsonl"), commands);
    linewatch::replay::replay(
        &input,
        &output,
        linewatch::policy::Policy::builtin(),
        Some(until),
    )
    .expect("replay runs");
    let read = |name: &str| -> Vec<Value> {
        std::fs::read_to_string(output.join(name))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("replay output is JSON"))
            .collect()
    };
    Outputs {
        tickets: read("tickets.jsonl"),
        reminders: read("reminders.jsonl"),
        kpi: read("kpi.jsonl"),
        incidents: read("incidents.jsonl"),
        rejections: read("rejections.jsonl"),
    }
}

/// How a producer places its records on partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keying {
    /// Keyed as the topics say (alarmed object, circuit id), Kafka's default partitioner
    /// (murmur2), as the Java clients do.
    AsTheTopicsSay,
    /// The same keys, librdkafka's default partitioner (CRC32, `consistent_random`), as
    /// confluent-kafka in Python, Go and .NET place them by default.
    ConsistentRandom,
    /// No key at all: librdkafka spreads the records at random.
    NullKeys,
    /// No key, each record on the partition after the one its key hashes to: none where
    /// the topic's contract would put it.
    Misplaced,
}

/// Produce records to `topic` and wait until they are acknowledged.
pub fn produce(bootstrap: &str, topic: &str, recs: &[Rec]) {
    produce_keyed(bootstrap, topic, recs, Keying::AsTheTopicsSay);
}

/// [`produce`], placing the records as `keying` says.
pub fn produce_keyed(bootstrap: &str, topic: &str, recs: &[Rec], keying: Keying) {
    let partitioner = match keying {
        Keying::AsTheTopicsSay => "murmur2_random",
        Keying::ConsistentRandom | Keying::NullKeys | Keying::Misplaced => "consistent_random",
    };
    let producer: BaseProducer = common::producer_config(bootstrap)
        .set("partitioner", partitioner)
        .create()
        .expect("producer");
    for r in recs {
        let payload = r.value.to_string();
        let mut record = BaseRecord::to(topic).payload(&payload);
        match keying {
            Keying::AsTheTopicsSay | Keying::ConsistentRandom => record = record.key(&r.key),
            Keying::NullKeys => {}
            Keying::Misplaced => {
                let home = linewatch::live::partition_for_key(r.key.as_bytes(), PARTITIONS);
                record = record.partition((home + 1) % PARTITIONS);
            }
        }
        if let Some(p) = r.partition {
            record = record.partition(p);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(20));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// A `linewatch run` child process; its log goes to `log`.
pub struct Instance {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Instance {
    pub fn start(bootstrap: &str, prefix: &str, group: &str, name: &str, dir: &Path) -> Instance {
        // Event time only: the scenario lies in the past.
        Self::start_with(
            bootstrap,
            prefix,
            group,
            name,
            dir,
            &["--idle-after-ms", "86400000"],
        )
    }

    /// An instance with more `run` arguments.
    pub fn start_with(
        bootstrap: &str,
        prefix: &str,
        group: &str,
        name: &str,
        dir: &Path,
        extra: &[&str],
    ) -> Instance {
        Self::start_full(bootstrap, prefix, group, name, dir, extra, &[])
    }

    /// An instance with more `run` arguments and environment variables.
    pub fn start_full(
        bootstrap: &str,
        prefix: &str,
        group: &str,
        name: &str,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Instance {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_linewatch"))
            .args([
                "run",
                "--bootstrap-servers",
                bootstrap,
                "--topic-prefix",
                prefix,
                "--group-id",
                group,
                "--transactional-id",
                &format!("{group}-{name}"),
                "--tick-ms",
                "200",
                "-X",
                "session.timeout.ms=6000",
                "-X",
                "heartbeat.interval.ms=1000",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("linewatch run starts");
        Instance {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// The base URL of the instance's HTTP listener (from its log).
    pub fn http_url(&self) -> String {
        let marker = "HTTP listener up";
        self.wait_for_log(Duration::from_secs(60), |log| log.contains(marker));
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let line = log
            .lines()
            .find(|l| l.contains(marker))
            .expect("the listener's log line");
        // Text (`address=...`) or JSON (`"address":"..."`) logs.
        let address = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("address="))
            .or_else(|| {
                line.split("\"address\":\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
            })
            .expect("the address in the listener's log line");
        format!("http://{address}")
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {}", self.name);
    }

    /// Wait until the instance's log satisfies `ready`, or panic after `limit`.
    pub fn wait_for_log(&self, limit: Duration, ready: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if ready(&log) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: the log did not show what was expected",
                self.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for a clean exit.
    pub fn stop(mut self) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "{} exited with {status}", self.name);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop on SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn plain_consumer(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer")
}

/// Every committed record of `topic`, in partition order, as (key, value).
pub fn read_topic(bootstrap: &str, topic: &str) -> Vec<(String, Value)> {
    let consumer = plain_consumer(bootstrap, &common::unique_name("reader"));
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions(&consumer, topic) {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut open: BTreeSet<i32> = (0..partitions(&consumer, topic)).collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !open.is_empty() {
        assert!(Instant::now() < deadline, "reading {topic} takes too long");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = m
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                if let Some(p) = m.payload() {
                    out.push((key, serde_json::from_slice(p).expect("output is JSON")));
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            _ => {}
        }
    }
    out
}

fn partitions(consumer: &BaseConsumer, topic: &str) -> i32 {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    md.topics()
        .first()
        .map_or(0, |t| i32::try_from(t.partitions().len()).unwrap_or(0))
}

fn high_marks(consumer: &BaseConsumer, topics: &[&str]) -> Vec<i64> {
    let mut marks = Vec::new();
    for t in topics {
        for p in 0..partitions(consumer, t) {
            // A broker that has just come back (a test paused it) answers "not leader"
            // for a few seconds while it takes its partitions back.
            let mut attempt = 0;
            let high = loop {
                match consumer.fetch_watermarks(t, p, Duration::from_secs(10)) {
                    Ok((_, high)) => break high,
                    Err(e) if attempt < 20 => {
                        attempt += 1;
                        eprintln!("watermarks of {t}[{p}]: {e}; asking again");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    Err(e) => panic!("watermarks of {t}[{p}]: {e}"),
                }
            };
            marks.push(high);
        }
    }
    marks
}

/// Whether every stage group has committed offsets at the end of its inputs (a committed
/// offset may sit one below the end when the last record is a transaction marker); if not,
/// what is behind.
fn behind(bootstrap: &str, group: &str, t: &TopicNames) -> Option<String> {
    let stages: [(&str, Vec<&str>); 3] = [
        (
            "fanout",
            vec![
                &t.alarms,
                &t.alarms_repartition,
                &t.maintenance,
                &t.inventory,
            ],
        ),
        (
            "circuits",
            vec![&t.impacts, &t.commands, &t.commands_repartition],
        ),
        ("incidents", vec![&t.incident_facts]),
    ];
    for (stage, inputs) in stages {
        let consumer = plain_consumer(bootstrap, &format!("{group}-{stage}"));
        let mut tpl = TopicPartitionList::new();
        let mut ends = Vec::new();
        for topic in &inputs {
            for p in 0..partitions(&consumer, topic) {
                tpl.add_partition(topic, p);
                let (_, high) = consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .expect("watermarks");
                ends.push(((*topic).to_string(), p, high));
            }
        }
        let committed = match consumer.committed_offsets(tpl, Duration::from_secs(10)) {
            Ok(c) => c,
            Err(e) => return Some(format!("{stage}: committed offsets: {e}")),
        };
        for (topic, p, high) in ends {
            let at = committed
                .find_partition(&topic, p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            // Past the committed offset there may be transaction markers only (a
            // consumer never sees those, so its offset stays before them).
            let done = match at {
                Some(o) => o >= high || !has_records_after(bootstrap, &topic, p, Offset::Offset(o)),
                None => !has_records_after(bootstrap, &topic, p, Offset::Beginning),
            };
            if !done {
                return Some(format!(
                    "{stage}: {topic}[{p}] committed {at:?}, end {high}"
                ));
            }
        }
    }
    None
}

/// Whether a `read_committed` reader finds a record in `topic[p]` from `from` on.
fn has_records_after(bootstrap: &str, topic: &str, p: i32, from: Offset) -> bool {
    let consumer = plain_consumer(bootstrap, &common::unique_name("peek"));
    let mut tpl = TopicPartitionList::new();
    if tpl.add_partition_offset(topic, p, from).is_err() || consumer.assign(&tpl).is_err() {
        return true;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => return true,
            Some(Err(KafkaError::PartitionEOF(_))) => return false,
            _ => {}
        }
    }
    true
}

/// Wait until the stages have consumed everything and nothing new has been written for
/// `quiet` (timers included), or panic after `limit`.
pub fn wait_quiescent(
    bootstrap: &str,
    group: &str,
    t: &TopicNames,
    quiet: Duration,
    limit: Duration,
) {
    let consumer = plain_consumer(bootstrap, &common::unique_name("probe"));
    let watched = [
        t.tickets.as_str(),
        t.reminders.as_str(),
        t.figures.as_str(),
        t.incidents.as_str(),
        t.impacts.as_str(),
        t.incident_facts.as_str(),
        t.rejected.as_str(),
    ];
    let deadline = Instant::now() + limit;
    let mut last = high_marks(&consumer, &watched);
    let mut stable_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = high_marks(&consumer, &watched);
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
        if stable_since.elapsed() < quiet {
            assert!(
                Instant::now() < deadline,
                "the pipeline did not settle within {limit:?}"
            );
            continue;
        }
        let Some(lag) = behind(bootstrap, group, t) else {
            return;
        };
        assert!(
            Instant::now() < deadline,
            "the pipeline did not settle within {limit:?}: {lag}"
        );
    }
}

/// The outputs compared between a run and a replay.
#[derive(Debug, Default)]
pub struct Outputs {
    pub tickets: Vec<Value>,
    pub reminders: Vec<Value>,
    pub kpi: Vec<Value>,
    pub incidents: Vec<Value>,
    pub rejections: Vec<Value>,
}

impl Outputs {
    /// Write the records as JSON Lines files into `dir`, as the replay does.
    pub fn save(&self, dir: &Path) {
        std::fs::create_dir_all(dir).expect("dir");
        for (name, records) in [
            ("tickets.jsonl", &self.tickets),
            ("reminders.jsonl", &self.reminders),
            ("kpi.jsonl", &self.kpi),
            ("incidents.jsonl", &self.incidents),
            ("rejections.jsonl", &self.rejections),
        ] {
            let mut f = File::create(dir.join(name)).expect("create");
            for r in records {
                writeln!(f, "{r}").expect("write");
            }
        }
    }
}

pub fn read_outputs(bootstrap: &str, t: &TopicNames) -> Outputs {
    let values = |topic: &str| {
        read_topic(bootstrap, topic)
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    };
    Outputs {
        tickets: values(&t.tickets),
        reminders: values(&t.reminders),
        kpi: values(&t.figures),
        incidents: values(&t.incidents),
        rejections: values(&t.rejected),
    }
}

/// Ticket events by ticket id, in event order; panics on a duplicate event id or a gap in
/// a ticket's event sequence (a lost or repeated effect).
pub fn ticket_histories(events: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut by_ticket: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for e in events {
        let event_id = e["eventId"].as_str().expect("eventId").to_string();
        assert!(
            ids.insert(event_id.clone()),
            "duplicate ticket event {event_id}"
        );
        let ticket = e["event"]["troubleTicket"]["id"]
            .as_str()
            .expect("ticket id")
            .to_string();
        by_ticket.entry(ticket).or_default().push(e.clone());
    }
    for (ticket, history) in &mut by_ticket {
        history.sort_by_key(|e| e["eventId"].as_str().unwrap_or_default().to_string());
        for (i, e) in history.iter().enumerate() {
            let expected = format!("{ticket}-{i:04}");
            assert_eq!(
                e["eventId"].as_str(),
                Some(expected.as_str()),
                "ticket {ticket}: event {} missing or out of sequence",
                i + 1
            );
        }
    }
    by_ticket
}

/// The last record per key.
pub fn last_by(records: &[Value], key: impl Fn(&Value) -> String) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for r in records {
        out.insert(key(r), r.clone());
    }
    out
}

/// A ticket's final state: its last event's trouble ticket.
pub fn final_tickets(events: &[Value]) -> BTreeMap<String, Value> {
    ticket_histories(events)
        .into_iter()
        .map(|(id, h)| {
            let last = h.last().cloned().unwrap_or_default();
            (id, last["event"]["troubleTicket"].clone())
        })
        .collect()
}

/// The final incident records, whole: the replay groups the ticket events of one instant
/// as the run's incident stage does, so the records' `sequence` and `eventId` agree too.
pub fn final_incidents(records: &[Value]) -> BTreeMap<String, Value> {
    last_by(records, |r| {
        r["incidentId"].as_str().unwrap_or_default().to_string()
    })
}

/// The final KPI record per circuit and period.
pub fn final_kpis(records: &[Value]) -> BTreeMap<String, Value> {
    last_by(records, |r| {
        format!(
            "{}@{}",
            r["circuitId"].as_str().unwrap_or_default(),
            r["period"].as_str().unwrap_or_default()
        )
    })
}

/// Assert that a run's committed output is what the replay gives: the same tickets in the
/// same final state, the same SLA reminders, the same final figures, the same final
/// incidents.
pub fn assert_same_answers(run: &Outputs, replay: &Outputs) {
    let by_id = |records: &[Value]| {
        last_by(records, |r| {
            r["eventId"].as_str().unwrap_or_default().to_string()
        })
    };
    assert_same_maps(
        "reminder",
        &by_id(&run.reminders),
        &by_id(&replay.reminders),
    );
    assert_same_maps(
        "ticket",
        &final_tickets(&run.tickets),
        &final_tickets(&replay.tickets),
    );
    assert_same_maps("figures", &final_kpis(&run.kpi), &final_kpis(&replay.kpi));
    assert_same_maps(
        "incident",
        &final_incidents(&run.incidents),
        &final_incidents(&replay.incidents),
    );
}

/// Compare two keyed maps, reporting the keys only one side has and the first values
/// that differ (not the whole maps: they are large).
fn assert_same_maps(what: &str, run: &BTreeMap<String, Value>, replay: &BTreeMap<String, Value>) {
    let only_run: Vec<&String> = run.keys().filter(|k| !replay.contains_key(*k)).collect();
    let only_replay: Vec<&String> = replay.keys().filter(|k| !run.contains_key(*k)).collect();
    let differ: Vec<&String> = run
        .iter()
        .filter(|(k, v)| replay.get(*k).is_some_and(|r| r != *v))
        .map(|(k, _)| k)
        .collect();
    if only_run.is_empty() && only_replay.is_empty() && differ.is_empty() {
        return;
    }
    let first = |keys: &[&String], side: &BTreeMap<String, Value>| {
        keys.first()
            .and_then(|k| side.get(*k))
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    let diff = differ
        .first()
        .map(|k| format!("run:    {}\nreplay: {}", run[*k], replay[*k]))
        .unwrap_or_default();
    panic!(
        "{what}s differ from replay: {} only in the run, {} only in the replay, {} of {} differ\n\
         only in the run, first: {}\nonly in the replay, first: {}\nfirst that differs, {:?}:\n{diff}",
        only_run.len(),
        only_replay.len(),
        differ.len(),
        run.len(),
        first(&only_run, run),
        first(&only_replay, replay),
        differ.first(),
    );
}

/// Circuit tickets still open (not closed) at the end of `tickets`, as (ticket id, circuit
/// id); incidents' parent tickets left out (commands act on circuit tickets).
pub fn open_tickets(tickets: &[Value]) -> Vec<(String, String)> {
    final_tickets(tickets)
        .into_iter()
        .filter(|(_, t)| t["@type"] != "MassOutageTicket")
        .filter(|(_, t)| t["status"] != "closed" && t["status"] != "resolved")
        .map(|(id, t)| {
            let circuit = t["relatedEntity"]
                .as_array()
                .and_then(|a| a.iter().find(|e| e["role"] == "affectedCircuit"))
                .and_then(|e| e["id"].as_str())
                .unwrap_or_default()
                .to_string();
            (id, circuit)
        })
        .collect()
}

/// One test's topics, groups and folder on the broker.
pub const SETTLE: Duration = Duration::from_secs(3);
pub const LIMIT: Duration = Duration::from_secs(240);

pub struct Setup {
    pub bootstrap: String,
    pub prefix: String,
    pub group: String,
    pub topics: TopicNames,
    /// Logs of the instances, the replay's files and the run's output, kept for a look
    /// after a failure (under target/tmp).
    pub dir: std::path::PathBuf,
}

pub async fn setup(name: &str) -> Setup {
    let bootstrap = common::bootstrap();
    let prefix = format!("{}.", common::unique_name(name));
    common::create_service_topics(&bootstrap, &prefix, PARTITIONS).await;
    Setup {
        topics: TopicNames::with_prefix(&prefix),
        group: common::unique_name(&format!("{name}-lw")),
        bootstrap,
        dir: {
            let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(&prefix);
            std::fs::create_dir_all(&d).expect("dir");
            d
        },
        prefix,
    }
}

impl Setup {
    pub fn start(&self, name: &str) -> Instance {
        Instance::start(
            &self.bootstrap,
            &self.prefix,
            &self.group,
            name,
            self.dir.as_path(),
        )
    }

    pub fn settle(&self) {
        wait_quiescent(&self.bootstrap, &self.group, &self.topics, SETTLE, LIMIT);
    }

    /// The inventory, before any instance starts (an instance reads it to the end before
    /// it processes alarms; a circuit that appears later is only hit by alarms still
    /// active then, from the wall-clock time it appeared).
    pub fn load_inventory(&self, s: &Scenario) {
        produce(&self.bootstrap, &self.topics.inventory, &s.inventory);
    }

    /// Feed the scenario in its two phases, with the ticketing system's commands between
    /// them, calling `during` while each phase is being processed; return the commands.
    pub fn feed(&self, s: &Scenario, during: impl FnMut(u32)) -> Vec<Rec> {
        self.feed_keyed(s, Keying::AsTheTopicsSay, Keying::AsTheTopicsSay, during)
    }

    /// [`Setup::feed`], the alarms and the commands placed on partitions as `alarms` and
    /// `commands` say.
    pub fn feed_keyed(
        &self,
        s: &Scenario,
        alarms: Keying,
        commands_keying: Keying,
        mut during: impl FnMut(u32),
    ) -> Vec<Rec> {
        produce_keyed(&self.bootstrap, &self.topics.alarms, &s.phase1, alarms);
        during(1);
        // Quiet consumer groups are not enough when instances have just joined or left:
        // a new owner may still hold restored inputs behind the event-time gate until
        // its idle partitions count as idle. So read again until the tickets open at the
        // split (which the scenario has, by its replay) are out.
        let started = std::time::Instant::now();
        let commands = loop {
            self.settle();
            let tickets = read_outputs(&self.bootstrap, &self.topics).tickets;
            let commands = commands_at_split(&open_tickets(&tickets), s.split);
            if !commands.is_empty() {
                break commands;
            }
            assert!(
                started.elapsed() < LIMIT,
                "the scenario has tickets open at the split, none seen in {LIMIT:?}"
            );
        };
        produce_keyed(
            &self.bootstrap,
            &self.topics.commands,
            &commands,
            commands_keying,
        );
        self.settle();
        produce_keyed(&self.bootstrap, &self.topics.alarms, &s.phase2, alarms);
        during(2);
        self.settle();
        commands
    }

    pub fn replay(&self, s: &Scenario, commands: &[Rec]) -> Outputs {
        let alarms: Vec<Rec> = s.phase1.iter().chain(&s.phase2).cloned().collect();
        replay(
            &self.dir.as_path().join("replay"),
            &s.inventory,
            &alarms,
            commands,
            s.end,
        )
    }
}
