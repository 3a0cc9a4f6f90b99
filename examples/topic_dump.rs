//! Dump the committed records of Kafka topics as JSON Lines, or their end offsets: the
//! reading half of `scripts/soak` (which is Python without a Kafka client).
//!
//! ```sh
//! cargo run --example topic_dump -- --bootstrap-servers B TOPIC...            # records
//! cargo run --example topic_dump -- --bootstrap-servers B --offsets TOPIC...  # end offsets
//! ```
//!
//! Records are read with `isolation.level=read_committed` from the start of every
//! partition to its end as of the start of the dump, one line each on stdout:
//! `{"topic":..,"partition":..,"offset":..,"key":..,"value":<the value as JSON, or its text
//! when it is not JSON, null for a tombstone>}`. With `--offsets`, one line per partition:
//! `{"topic":..,"partition":..,"end":..}` (the last stable offset as a read_committed
//! consumer sees it). Exit 1 on any error, with the error on stderr.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    if let Err(e) = run() {
        eprintln!("topic_dump: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut bootstrap = std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_default();
    let mut offsets_only = false;
    let mut topics = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bootstrap-servers" => bootstrap = args.next().ok_or("--bootstrap-servers B")?,
            "--offsets" => offsets_only = true,
            _ => topics.push(arg),
        }
    }
    if bootstrap.is_empty() || topics.is_empty() {
        return Err("usage: topic_dump --bootstrap-servers B [--offsets] TOPIC...".into());
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", format!("topic-dump-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .create()?;
    let mut ends: BTreeMap<(String, i32), (i64, i64)> = BTreeMap::new();
    for topic in &topics {
        let md = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
        let t = md.topics().first().ok_or("no metadata")?;
        if let Some(e) = t.error() {
            return Err(format!("topic {topic}: {e:?}").into());
        }
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), TIMEOUT)?;
            ends.insert((topic.clone(), p.id()), (low, high));
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if offsets_only {
        for ((topic, partition), (_, end)) in &ends {
            writeln!(
                out,
                "{}",
                json!({"topic": topic, "partition": partition, "end": end})
            )?;
        }
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    let mut open = BTreeMap::new();
    for ((topic, partition), (low, high)) in &ends {
        if high > low {
            tpl.add_partition_offset(topic, *partition, Offset::Beginning)?;
            open.insert((topic.clone(), *partition), *high);
        }
    }
    consumer.assign(&tpl)?;
    let mut last_progress = Instant::now();
    while !open.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                let value = m.payload().map(|v| {
                    serde_json::from_slice::<Value>(v)
                        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(v).into()))
                });
                writeln!(
                    out,
                    "{}",
                    json!({"topic": m.topic(), "partition": m.partition(),
                           "offset": m.offset(), "key": key, "value": value})
                )?;
                let id = (m.topic().to_string(), m.partition());
                if open.get(&id).is_some_and(|high| m.offset() + 1 >= *high) {
                    open.remove(&id);
                }
            }
            Some(Err(e)) => return Err(Box::new(e)),
            None => {
                // Past the last record there may be only transaction markers or aborted
                // records, which a read_committed consumer never sees: a partition whose
                // position reached its end is done.
                let position = consumer.position()?;
                open.retain(|(topic, p), high| {
                    !matches!(
                        position.find_partition(topic, *p).map(|e| e.offset()),
                        Some(Offset::Offset(o)) if o >= *high
                    )
                });
                if last_progress.elapsed() > TIMEOUT {
                    return Err(Box::new(KafkaError::Canceled)).map_err(|e| {
                        format!("no progress for {TIMEOUT:?} on {open:?}: {e}").into()
                    });
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}
