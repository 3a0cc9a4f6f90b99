//! The Kafka benchmarks of `linewatch bench-kafka`: the raw pipe, the whole service's
//! throughput with exactly-once on, alarm-to-ticket latency at half that rate, and the
//! time to restore a stage's state. Measurements, not tests: figures go to BENCHMARKS.md.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::{client_config, ClientOverride};

/// A record's key and value, as read.
type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The raw pipe: consume `input` and produce every record unchanged to `output`, as a
/// Kafka engineer would tune an exactly-once copy: one transaction per 100 ms carrying
/// everything read in that time (no record cap), offsets sent to each transaction,
/// `read_committed`, large producer batches, in-flight records drained before each commit
/// ([`crate::kafka::commit_drained`]). Returns the seconds from the first record read to
/// the commit of the `expected`-th.
///
/// # Errors
/// Kafka errors, or a pipe that does not see `expected` records within 10 minutes.
pub fn raw_pipe(
    bootstrap: &str,
    overrides: &[ClientOverride],
    input: &str,
    output: &str,
    group: &str,
    expected: u64,
) -> Result<f64, KafkaError> {
    let mut ccfg = client_config(bootstrap, overrides);
    ccfg.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("partition.assignment.strategy", "range")
        .set("fetch.queue.backoff.ms", "20");
    let consumer: BaseConsumer = ccfg.create()?;
    let mut pcfg = client_config(bootstrap, overrides);
    pcfg.set("transactional.id", format!("{group}-tx"))
        .set("transaction.timeout.ms", "20000")
        .set("message.timeout.ms", "15000")
        .set("partitioner", "murmur2_random");
    crate::kafka::throughput_producer(&mut pcfg);
    let producer: BaseProducer = pcfg.create()?;
    producer.init_transactions(Duration::from_secs(30))?;
    consumer.subscribe(&[input])?;
    let mut seen = 0u64;
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut offsets: HashMap<(String, i32), i64> = HashMap::new();
    while seen < expected {
        if Instant::now() > deadline {
            return Err(KafkaError::Canceled);
        }
        let batch_end = Instant::now() + Duration::from_millis(100);
        let mut batch: Vec<KeyValue> = Vec::new();
        while Instant::now() < batch_end {
            match consumer.poll(batch_end.saturating_duration_since(Instant::now())) {
                Some(Ok(m)) => {
                    first.get_or_insert_with(Instant::now);
                    offsets.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
                    batch.push((m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec)));
                }
                Some(Err(e)) => tracing::warn!(error = %e, "raw pipe: consumer error"),
                None => {}
            }
        }
        if batch.is_empty() {
            continue;
        }
        producer.begin_transaction()?;
        for (key, value) in &batch {
            let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(output);
            if let Some(k) = key {
                r = r.key(k.as_slice());
            }
            if let Some(v) = value {
                r = r.payload(v.as_slice());
            }
            let mut r = Some(r);
            while let Some(rec) = r.take() {
                if let Err((e, back)) = producer.send(rec) {
                    if matches!(
                        e,
                        KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        producer.poll(Duration::from_millis(5));
                        r = Some(back);
                    } else {
                        return Err(e);
                    }
                }
            }
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &offsets {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o))?;
        }
        let metadata = consumer.group_metadata().ok_or(KafkaError::Canceled)?;
        producer.send_offsets_to_transaction(&tpl, &metadata, Duration::from_secs(30))?;
        crate::kafka::commit_drained(&producer, Duration::from_secs(30), &|| false)?;
        seen += batch.len() as u64;
    }
    Ok(first.map_or(0.0, |t| t.elapsed().as_secs_f64()))
}

/// A client of `group` for [`committed_and_end_with`]: one made once and asked every
/// 100 ms costs the broker a metadata, watermark and offset query each time, where a new
/// client each time added its connection and handshake to the broker's load in the very
/// phase whose CPU is measured.
///
/// # Errors
/// Kafka errors.
pub fn offsets_probe(
    bootstrap: &str,
    overrides: &[ClientOverride],
    group: &str,
) -> Result<BaseConsumer, KafkaError> {
    // read_uncommitted: a read_committed client asks for stable offsets (KIP-447), which
    // the broker withholds while a transaction holds pending offsets of the group, and
    // the query timed out now and then under load ("Meta data fetch error").
    client_config(bootstrap, overrides)
        .set("group.id", group)
        .set("isolation.level", "read_uncommitted")
        .create()
}

/// The next offset committed by the probe's group on every partition of `topic`, summed,
/// and the sum of the partitions' high watermarks.
///
/// # Errors
/// Kafka errors.
pub fn committed_and_end_with(
    consumer: &BaseConsumer,
    topic: &str,
) -> Result<(i64, i64), KafkaError> {
    // A busy single broker can miss one metadata deadline; a bench run should not end on it.
    let mut attempt = 0;
    let md = loop {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
            Ok(md) => break md,
            Err(e) if attempt >= 2 => return Err(e),
            Err(_) => attempt += 1,
        }
    };
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut end = 0;
    for p in &partitions {
        tpl.add_partition(topic, *p);
        end += consumer
            .fetch_watermarks(topic, *p, Duration::from_secs(10))?
            .1;
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    let done = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum();
    Ok((done, end))
}

/// Records and bytes (keys and values) in `topics`, read from the start to the high
/// watermarks with a read_uncommitted client (aborted records included, as they are
/// written); transaction markers are not counted.
///
/// # Errors
/// Kafka errors.
pub fn written(
    bootstrap: &str,
    overrides: &[ClientOverride],
    topics: &[&str],
) -> Result<(u64, u64), KafkaError> {
    let per_topic = written_per_topic(bootstrap, overrides, topics)?;
    Ok(per_topic
        .values()
        .fold((0, 0), |(r, b), (tr, tb)| (r + tr, b + tb)))
}

/// [`written`], per topic.
///
/// # Errors
/// Kafka errors.
pub fn written_per_topic(
    bootstrap: &str,
    overrides: &[ClientOverride],
    topics: &[&str],
) -> Result<std::collections::BTreeMap<String, (u64, u64)>, KafkaError> {
    let consumer: BaseConsumer = client_config(bootstrap, overrides)
        .set("group.id", "linewatch-bench-written")
        .set("isolation.level", "read_uncommitted")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    // The high watermark of each partition with records: read until its last record, or,
    // for a partition that ends in a transaction marker (never delivered), until nothing
    // more comes for two seconds.
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in md.topics() {
            for p in t.partitions() {
                let (low, high) =
                    consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
                if high > low {
                    tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
                    ends.insert(((*topic).to_string(), p.id()), high);
                }
            }
        }
    }
    consumer.assign(&tpl)?;
    let mut counts: std::collections::BTreeMap<String, (u64, u64)> =
        topics.iter().map(|t| ((*t).to_string(), (0, 0))).collect();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut quiet_since = Instant::now();
    let mut checked = Instant::now();
    while !ends.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                quiet_since = Instant::now();
                if let Some((records, bytes)) = counts.get_mut(m.topic()) {
                    *records += 1;
                    *bytes += (m.key_len() + m.payload_len()) as u64;
                }
                let key = (m.topic().to_string(), m.partition());
                if ends.get(&key).is_some_and(|high| m.offset() + 1 >= *high) {
                    ends.remove(&key);
                }
            }
            _ if quiet_since.elapsed() > Duration::from_secs(2) => break,
            _ => {}
        }
        // A partition whose last offset is a transaction marker is done once the reader's
        // position has passed it: the service keeps writing elsewhere (its timers), so
        // waiting for a quiet spell alone could last until the deadline.
        if checked.elapsed() > Duration::from_millis(500) {
            checked = Instant::now();
            let position = consumer.position()?;
            ends.retain(|(topic, p), high| {
                !matches!(
                    position.find_partition(topic, *p).map(|e| e.offset()),
                    Some(Offset::Offset(at)) if at >= *high
                )
            });
        }
    }
    Ok(counts)
}

/// A `linewatch run` started by the bench: killed when dropped while still running, so
/// that a bench stopping on an error leaves no service behind.
pub struct ServiceProcess(Child);

impl ServiceProcess {
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Wait for the process to exit (after a signal).
    ///
    /// # Errors
    /// As [`Child::wait`].
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }
}

/// The CPU time (user and system, in seconds) each thread of process `pid` has used, summed
/// by thread name, librdkafka's threads (`rdk:…`) under one name: read from `/proc`, so
/// empty where there is none. Linux reports it in ticks of 1/100 s.
pub fn thread_cpu_seconds(pid: u32) -> BTreeMap<String, f64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // "tid (name) state ppid ...": the name may hold spaces; what follows its ')' is
        // fields 3 on, utime and stime being fields 14 and 15.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat.get(open + 1..close).unwrap_or_default();
        let name = if name.starts_with("rdk:") {
            "librdkafka"
        } else {
            name
        };
        let fields: Vec<&str> = stat
            .get(close + 1..)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        *by_name.entry(name.to_string()).or_insert(0.0) += (ticks(11) + ticks(12)) / 100.0;
    }
    by_name
}

/// What each thread name used between two [`thread_cpu_seconds`] readings.
pub fn cpu_used(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(name, t)| (name.clone(), t - before.get(name).copied().unwrap_or(0.0)))
        .filter(|(_, t)| *t > 0.0)
        .collect()
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Start `linewatch run` (this executable) on the bench's topics, its log in `log`, with
/// the bench's client properties (`-X`), so that it and the raw pipe run alike.
///
/// # Errors
/// When the process cannot be started.
pub fn start_service(
    bootstrap: &str,
    overrides: &[ClientOverride],
    prefix: &str,
    group: &str,
    log: &Path,
) -> std::io::Result<ServiceProcess> {
    let file = std::fs::File::create(log)?;
    let child = Command::new(std::env::current_exe()?)
        .args([
            "run",
            "--bootstrap-servers",
            bootstrap,
            "--topic-prefix",
            prefix,
            "--group-id",
            group,
            "--transactional-id",
            &format!("{group}-0"),
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(
            overrides
                .iter()
                .flat_map(|(k, v)| ["-X".to_string(), format!("{k}={v}")]),
        )
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()?;
    Ok(ServiceProcess(child))
}

/// For the restore at scale: the circuit-state changelog `topic` as compaction would leave
/// it (the last record of each key), then copied under new circuit ids until it holds the
/// state of `circuits` circuits, each copy in its original's partition. The copies'
/// bodies are the originals' byte for byte (a circuit's state is filed under its key, not
/// under the id it holds); the partitions' bookkeeping (keys starting with 0xFF) is not
/// copied. Returns the circuits with state now in the topic and the records written.
///
/// # Errors
/// Kafka errors, or a changelog with no circuit state to copy.
pub fn grow_circuit_changelog(
    bootstrap: &str,
    overrides: &[ClientOverride],
    topic: &str,
    circuits: usize,
) -> Result<(usize, u64), Box<dyn std::error::Error + Send + Sync>> {
    use crate::kafka::service::{figures_key, figures_key_circuit, INTERNAL_KEY_BYTE};
    let consumer: BaseConsumer = client_config(bootstrap, overrides)
        .set("group.id", "linewatch-bench-grow")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    let mut open = 0;
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            open += 1;
        }
    }
    consumer.assign(&tpl)?;
    // The last value of each key, as compaction keeps it.
    let mut last: BTreeMap<(i32, Vec<u8>), Vec<u8>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while open > 0 {
        if Instant::now() > deadline {
            return Err(format!("{topic} not read to its end within 10 minutes").into());
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let key = (m.partition(), m.key().unwrap_or_default().to_vec());
                match m.payload() {
                    Some(v) => {
                        last.insert(key, v.to_vec());
                    }
                    None => {
                        last.remove(&key);
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    last.retain(|(_, k), _| k.first() != Some(&INTERNAL_KEY_BYTE));
    let originals = last
        .keys()
        .filter(|(_, k)| figures_key_circuit(k).is_none())
        .count();
    if originals == 0 {
        return Err(format!("{topic} holds no circuit state to copy").into());
    }
    let mut pcfg = client_config(bootstrap, overrides);
    crate::kafka::throughput_producer(&mut pcfg);
    let producer: BaseProducer = pcfg.create()?;
    let mut written = 0u64;
    let mut have = originals;
    let mut copy = 0usize;
    while have < circuits {
        copy += 1;
        let tag = format!("#copy{copy}");
        for ((p, key), value) in &last {
            let new_key = match figures_key_circuit(key) {
                Some(id) => figures_key(&format!("{id}{tag}")),
                None => [&key[..], tag.as_bytes()].concat(),
            };
            let mut record = BaseRecord::<[u8], [u8]>::to(topic)
                .partition(*p)
                .key(&new_key[..])
                .payload(&value[..]);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((
                        KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        r,
                    )) => {
                        producer.poll(Duration::from_millis(10));
                        record = r;
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
            written += 1;
        }
        have += originals;
    }
    producer.flush(Duration::from_secs(120))?;
    Ok((have, written))
}

/// The peak resident size of process `pid` so far (`VmHWM`), in MiB; `None` when it cannot
/// be read (not Linux, or the process is gone).
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}
