//! Round trips through a real broker: what the pipeline relies on from Kafka itself.
//!
//! - Records with the same key land in one partition and are read back in the order they
//!   were written, with their keys and values intact.
//! - A `read_committed` consumer sees committed transactions only: records of an aborted
//!   transaction never reach it (the basis of the exactly-once stages).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer};
use rdkafka::Message;

const TIMEOUT: Duration = Duration::from_secs(30);

/// One record as read back: (key, value).
type Record = (String, String);

#[tokio::test]
async fn records_come_back_in_order_per_partition_with_keys_and_values() {
    let bootstrap = common::bootstrap();
    let topic = common::unique_name("roundtrip");
    common::create_topic(&bootstrap, &topic, 3).await;

    let producer: FutureProducer = common::producer_config(&bootstrap)
        .create()
        .expect("producer");
    // 10 keys, 6 records each, interleaved: per-key order is only kept by the partitioner
    // sending a key to one partition, and by the partition keeping write order.
    let mut written: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    let mut partition_of_key: BTreeMap<String, i32> = BTreeMap::new();
    for round in 0..6 {
        for k in 0..10 {
            let key = format!("circuit-{k}");
            let value = format!("{{\"circuit\":\"{key}\",\"seq\":{round}}}");
            let partition = producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&value),
                    Duration::from_secs(10),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("delivery of {key}/{round} failed: {e}"))
                .partition;
            let first = *partition_of_key.entry(key.clone()).or_insert(partition);
            assert_eq!(first, partition, "{key} moved from partition {first}");
            written.entry(partition).or_default().push((key, value));
        }
    }
    assert!(written.len() > 1, "10 keys should spread over 3 partitions");

    let consumer: StreamConsumer = common::consumer_config(&bootstrap, &common::unique_name("g"))
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let total: usize = written.values().map(Vec::len).sum();
    let mut read: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    let deadline = Instant::now() + TIMEOUT;
    while read.values().map(Vec::len).sum::<usize>() < total {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {read:?} of {total} records read in {TIMEOUT:?}"))
            .expect("consume");
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
        read.entry(message.partition())
            .or_default()
            .push((key, value));
    }
    assert_eq!(read, written);
}

#[test]
fn read_committed_consumers_never_see_aborted_transactions() {
    let bootstrap = common::bootstrap();
    let topic = common::unique_name("txn");
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(common::create_topic(&bootstrap, &topic, 1));

    let producer: BaseProducer = common::producer_config(&bootstrap)
        .set("transactional.id", common::unique_name("txn-producer"))
        .create()
        .expect("transactional producer");
    producer.init_transactions(TIMEOUT).expect("init");
    let send_in_transaction = |values: &[&str], commit: bool| {
        producer.begin_transaction().expect("begin");
        for value in values {
            producer
                .send(BaseRecord::to(&topic).key("k").payload(*value))
                .map_err(|(e, _)| e)
                .expect("send");
        }
        if commit {
            producer.commit_transaction(TIMEOUT).expect("commit");
        } else {
            producer.flush(TIMEOUT).expect("flush");
            producer.abort_transaction(TIMEOUT).expect("abort");
        }
    };
    send_in_transaction(&["committed-1"], true);
    send_in_transaction(&["aborted-1", "aborted-2"], false);
    send_in_transaction(&["committed-2"], true);

    let consumer: BaseConsumer = common::consumer_config(&bootstrap, &common::unique_name("g"))
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut values = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while values.len() < 2 && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("consume");
            values
                .push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned());
        }
    }
    // Anything after the second committed record would have shown up by now too.
    let extra_deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < extra_deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("consume");
            values
                .push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned());
        }
    }
    assert_eq!(values, ["committed-1", "committed-2"]);
}
