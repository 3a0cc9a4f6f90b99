//! `linewatch send`: publish JSON Lines to one of the service's input topics, each line
//! keyed the way the topic expects, so that a person (or a demo script) can feed the
//! service without another Kafka tool. Lines are sent as they are: bad ones reach the
//! service and end up on the rejection topic, which is useful for trying it out.

use std::io::BufRead;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;

use crate::intake::Stream;
use crate::kafka::{client_config, ClientOverride};

/// The record key of one line of `stream`: the circuit for inventory and commands, the
/// alarmed object for alarms, the window for maintenance windows. `None` when the line
/// does not say (it is then sent without a key).
pub fn key_of(stream: Stream, line: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let text = |v: &Value| v.as_str().map(str::to_owned);
    match stream {
        Stream::Inventory | Stream::Commands => text(&v["circuitId"]),
        Stream::Maintenance => text(&v["windowId"]),
        Stream::Alarms => {
            let alarm = if v["event"]["alarm"].is_object() {
                &v["event"]["alarm"]
            } else {
                &v
            };
            // An alarmedObject list (MEF LSO profile): the first is the alarmed object.
            let object = match &alarm["alarmedObject"] {
                Value::Array(list) => list.first().unwrap_or(&Value::Null),
                one => one,
            };
            text(&object["id"])
                .or_else(|| text(&v["event"]["commonEventHeader"]["sourceName"]))
                .or_else(|| text(&v["commonEventHeader"]["sourceName"]))
                .or_else(|| text(&v["eventList"][0]["commonEventHeader"]["sourceName"]))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot read the input: {0}")]
    Io(#[from] std::io::Error),
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// An idempotent producer for the service's input topics. Keys are partitioned with
/// murmur2, as Java clients do, so that records keyed by circuit land in the partition
/// whose state owns that circuit whichever client wrote them.
pub struct Publisher {
    producer: BaseProducer,
}

impl Publisher {
    /// # Errors
    /// [`SendError::Kafka`] when the producer cannot be created.
    pub fn new(bootstrap_servers: &str, overrides: &[ClientOverride]) -> Result<Self, SendError> {
        let mut config = client_config(bootstrap_servers, overrides);
        config
            .set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5");
        Ok(Publisher {
            producer: config.create()?,
        })
    }

    /// Queue one record, waiting while the producer's queue is full.
    ///
    /// # Errors
    /// [`SendError::Kafka`] when the record cannot be queued.
    pub fn send(&self, topic: &str, key: Option<&str>, value: &[u8]) -> Result<(), SendError> {
        let mut record = BaseRecord::to(topic).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        let mut record = Some(record);
        while let Some(r) = record.take() {
            match self.producer.send(r) {
                Ok(()) => {}
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    self.producer.poll(Duration::from_millis(10));
                    record = Some(r);
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Wait until every queued record is delivered.
    ///
    /// # Errors
    /// [`SendError::Kafka`] when a record cannot be delivered within 30 s.
    pub fn flush(&self) -> Result<(), SendError> {
        self.producer.flush(Duration::from_secs(30))?;
        Ok(())
    }
}

/// Send every non-blank line of `input` to `topic`; returns how many were sent.
///
/// # Errors
/// [`SendError::Kafka`] when the producer cannot be created or a record cannot be
/// delivered within the flush timeout; [`SendError::Io`] when `input` cannot be read.
pub fn send_lines(
    bootstrap_servers: &str,
    overrides: &[ClientOverride],
    topic: &str,
    stream: Stream,
    input: impl BufRead,
) -> Result<u64, SendError> {
    let publisher = Publisher::new(bootstrap_servers, overrides)?;
    let mut sent = 0;
    for line in input.split(b'\n') {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let key = key_of(stream, &line);
        publisher.send(topic, key.as_deref(), &line)?;
        sent += 1;
    }
    publisher.flush()?;
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_topics_partitioning() {
        assert_eq!(
            key_of(
                Stream::Alarms,
                br#"{"id":"1","alarmedObject":{"id":"NE1/2"}}"#
            )
            .as_deref(),
            Some("NE1/2")
        );
        assert_eq!(
            key_of(
                Stream::Alarms,
                br#"{"event":{"commonEventHeader":{"sourceName":"vm1"}}}"#
            )
            .as_deref(),
            Some("vm1")
        );
        // Every message of an alarm sent as the MEF LSO profile sends it gets its key.
        assert_eq!(
            key_of(
                Stream::Alarms,
                br#"{"id":17,"alarmedObject":[{"id":"NE1/3"},{"id":"EVC-1"}]}"#
            )
            .as_deref(),
            Some("NE1/3")
        );
        assert_eq!(
            key_of(Stream::Alarms, br#"{"alarmedObject":[]}"#).as_deref(),
            None
        );
        assert_eq!(
            key_of(
                Stream::Alarms,
                br#"{"commonEventHeader":{"sourceName":"vm2"}}"#
            )
            .as_deref(),
            Some("vm2")
        );
        assert_eq!(
            key_of(Stream::Inventory, br#"{"circuitId":"C9"}"#).as_deref(),
            Some("C9")
        );
        assert_eq!(
            key_of(Stream::Maintenance, br#"{"windowId":"W1"}"#).as_deref(),
            Some("W1")
        );
        assert_eq!(key_of(Stream::Commands, b"not json"), None);
    }
}
