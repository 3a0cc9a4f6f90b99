//! The inventory and maintenance windows as every instance keeps them: read from the
//! start of their compacted topics before the stages start, then tailed, each change told
//! to the stages that react to it.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use super::{with_retries, ServiceConfig, ServiceError};
use crate::engine::{CircuitStates, Input};
use crate::http::Inventory;
use crate::intake::{decode, Stream};
use crate::inventory::InventoryChange;
use crate::kafka::client_config;
use crate::maintenance::MaintenanceWindow;
use crate::network::Network;
use crate::views::CircuitView;

/// The replicated inventory and maintenance windows, shared by the stages of an instance.
#[derive(Debug, Default)]
pub struct Replica {
    pub network: Network,
    pub windows: BTreeMap<String, MaintenanceWindow>,
}

/// A replica change a stage must react to.
#[derive(Debug, Clone)]
pub(super) enum Change {
    Circuit(String),
    Window(MaintenanceWindow),
    WindowCancelled(String),
}

/// Circuits known to the inventory replica but without state.
pub(super) struct ReplicaInventory {
    pub(super) replica: Arc<RwLock<Replica>>,
    pub(super) config: Arc<ServiceConfig>,
}

impl Inventory for ReplicaInventory {
    fn circuit(&self, circuit_id: &str, partition: i32) -> Option<CircuitView> {
        let r = read(&self.replica);
        CircuitStates::new().view(circuit_id, partition, &r.network, &self.config.policy, None)
    }
}

pub(super) fn read(replica: &RwLock<Replica>) -> std::sync::RwLockReadGuard<'_, Replica> {
    replica.read().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn write(replica: &RwLock<Replica>) -> std::sync::RwLockWriteGuard<'_, Replica> {
    replica.write().unwrap_or_else(|p| p.into_inner())
}

/// Apply one replica record and tell the stages. Bad records are skipped here: stage 1
/// reads the same topics as a group member and rejects them once.
pub(super) fn apply_replica(
    config: &ServiceConfig,
    replica: &RwLock<Replica>,
    msg: &BorrowedMessage<'_>,
    stages: &[Sender<Change>],
) {
    let stream = if msg.topic() == config.topics.inventory {
        Stream::Inventory
    } else {
        Stream::Maintenance
    };
    for input in decode(stream, msg.key(), msg.payload())
        .into_iter()
        .flatten()
    {
        let change = {
            let mut r = write(replica);
            match input {
                Input::Inventory(change) => {
                    let id = match &change {
                        InventoryChange::Upsert(c) => c.circuit_id.clone(),
                        InventoryChange::Delete { circuit_id } => circuit_id.clone(),
                    };
                    r.network.apply(change);
                    Change::Circuit(id)
                }
                Input::Maintenance(w) if w.end > w.start => {
                    r.windows.insert(w.window_id.clone(), w.clone());
                    Change::Window(w)
                }
                Input::CancelWindow { window_id } => {
                    r.windows.remove(&window_id);
                    Change::WindowCancelled(window_id)
                }
                _ => continue,
            }
        };
        for s in stages {
            let _ = s.send(change.clone());
        }
    }
}

pub(super) fn replica_consumer(config: &ServiceConfig) -> Result<BaseConsumer, ServiceError> {
    let mut cfg = client_config(&config.bootstrap_servers, &config.client_overrides);
    cfg.set("group.id", format!("{}-replica-unused", config.group_id))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.queue.backoff.ms", "20");
    Ok(cfg.create()?)
}

/// A polled record, or `None` after a transient consumer error (a broker restarting,
/// a connection lost), which is logged and retried by librdkafka; only a fatal consumer
/// error stops the service.
pub(super) fn usable(
    msg: Result<BorrowedMessage<'_>, KafkaError>,
) -> Result<Option<BorrowedMessage<'_>>, ServiceError> {
    match msg {
        Ok(m) => Ok(Some(m)),
        Err(e @ KafkaError::MessageConsumptionFatal(_)) => Err(ServiceError::Kafka(e)),
        Err(KafkaError::PartitionEOF(_)) => Ok(None),
        Err(e) => {
            warn!(error = %e, "consumer error; retrying");
            Ok(None)
        }
    }
}

/// A partition of a replica topic and its high watermark when the service started.
pub(super) type Mark = (String, i32, i64);

/// Assign every partition of `topics` from the beginning; return the high watermarks now.
pub(super) fn assign_from_start(
    consumer: &BaseConsumer,
    topics: &[&str],
    stop: &AtomicBool,
) -> Result<Vec<Mark>, ServiceError> {
    let mut tpl = TopicPartitionList::new();
    let mut marks = Vec::new();
    for topic in topics {
        let metadata = with_retries(stop, || {
            consumer.fetch_metadata(Some(topic), Duration::from_secs(10))
        })?;
        for t in metadata.topics() {
            if let Some(err) = t.error() {
                return Err(ServiceError::Kafka(KafkaError::MetadataFetch(err.into())));
            }
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
                let (_, high) = with_retries(stop, || {
                    consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                })?;
                marks.push(((*topic).to_string(), p.id(), high));
            }
        }
    }
    consumer.assign(&tpl)?;
    Ok(marks)
}

pub(super) fn caught_up(consumer: &BaseConsumer, marks: &[Mark]) -> Result<bool, ServiceError> {
    let positions = consumer.position()?;
    Ok(marks.iter().all(|(topic, partition, high)| {
        *high == 0
            || positions
                .find_partition(topic, *partition)
                .is_some_and(|e| matches!(e.offset(), Offset::Offset(o) if o >= *high))
    }))
}
