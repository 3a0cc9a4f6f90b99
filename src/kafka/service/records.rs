//! The runtime's own records between stages: watermarks, and the origin of a record sent
//! on to another partition.

use chrono::{DateTime, Utc};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use serde::{Deserialize, Serialize};

use super::WATERMARK_KEY;
use crate::rejection::{RejectReason, Source};

/// Header of a repartitioned record: the input record it was read from, as JSON
/// `{"topic", "partition", "offset"}`, so that a rejection names that record.
pub(super) const ORIGIN_HEADER: &str = "linewatch-origin";

/// The watermark key of releases before 0.2 (`~watermark`), still read from topics
/// written then, when the record is a watermark record.
pub(super) const LEGACY_WATERMARK_KEY: &[u8] = b"~watermark";

/// The watermark record between stages: every input with an earlier event time from
/// `source_partition` has been written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WatermarkRecord {
    pub(super) source_partition: i32,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub(super) watermark: DateTime<Utc>,
}

/// A watermark record between stages: `Some(Ok)` for one, `Some(Err)` for a record under
/// the watermark key that is not one, `None` for any other record. A record under the key
/// of releases before 0.2 counts only when it reads as a watermark (an entity may be named
/// `~watermark`).
pub(super) fn watermark_record(msg: &BorrowedMessage<'_>) -> Option<Result<WatermarkRecord, ()>> {
    let parsed = || {
        msg.payload()
            .and_then(|bytes| serde_json::from_slice::<WatermarkRecord>(bytes).ok())
    };
    match msg.key() {
        Some(WATERMARK_KEY) => Some(parsed().ok_or(())),
        Some(LEGACY_WATERMARK_KEY) => parsed().map(Ok),
        _ => None,
    }
}

/// The input record a repartitioned record was read from.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Origin {
    pub(super) topic: String,
    pub(super) partition: i32,
    pub(super) offset: i64,
    /// The input record's key, as text (a key that is not UTF-8 has its bad bytes
    /// replaced); `None` for a record without a key.
    pub(super) key: Option<String>,
}

/// The input record a repartitioned record was read from (its `linewatch-origin`
/// header); `None` for any other record.
pub(super) fn origin_of(msg: &BorrowedMessage<'_>) -> Option<Origin> {
    msg.headers().and_then(|headers| {
        headers
            .iter()
            .find(|h| h.key == ORIGIN_HEADER)
            .and_then(|h| h.value)
            .and_then(|v| serde_json::from_slice::<Origin>(v).ok())
    })
}

/// Where a record came from, for a rejection: the input record a repartitioned record was
/// read from, else the record itself; and that record's key.
pub(super) fn source_of(msg: &BorrowedMessage<'_>) -> (Source, Option<Vec<u8>>) {
    match origin_of(msg) {
        Some(o) => (
            Source::Kafka {
                topic: o.topic,
                partition: o.partition,
                offset: o.offset,
            },
            o.key.map(String::into_bytes),
        ),
        None => (
            Source::Kafka {
                topic: msg.topic().into(),
                partition: msg.partition(),
                offset: msg.offset(),
            },
            msg.key().map(<[u8]>::to_vec),
        ),
    }
}

pub(super) fn bad_watermark(w: &WatermarkRecord, upstream: i32) -> RejectReason {
    RejectReason::Invalid {
        field: "sourcePartition".into(),
        problem: format!(
            "watermark from partition {} of an upstream topic with {upstream} partitions",
            w.source_partition
        ),
    }
}

pub(super) fn not_json(what: &str) -> RejectReason {
    RejectReason::Invalid {
        field: "(record value)".into(),
        problem: format!("not {what} as linewatch writes it"),
    }
}
