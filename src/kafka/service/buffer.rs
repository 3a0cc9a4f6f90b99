//! The event-time buffer of a partition: inputs held until every upstream partition has
//! passed their time, and the partition's clock.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::changelog::{StateKind, StateRecord, LEGACY_PENDING_PREFIX, META_KEY, PENDING_PREFIX};
use super::records::WatermarkRecord;

/// Inputs of a partition held until every upstream partition has passed their event
/// time, then released in event-time order: what makes a run give the replay's answers
/// although the upstream partitions progress at different speeds. Kept in the changelog
/// (keys [`META_KEY`] and `~pending/<seq>`).
pub(super) struct Buffer<T> {
    pub(super) meta: PartitionMeta,
    pub(super) meta_dirty: bool,
    pub(super) pending: BTreeMap<PendingKey, T>,
    /// Pending entries added or removed since the last changelog flush.
    pub(super) pending_dirty: BTreeSet<PendingKey>,
    /// Pending entries added since the last changelog flush: one also released before it
    /// was never written, so neither it nor its tombstone goes to the changelog.
    pub(super) pending_new: BTreeSet<PendingKey>,
    /// Sequence numbers of pending inputs read back from keys of a release before 0.2
    /// (`~pending/<seq>`): their tombstones go under that key too, or compaction would keep
    /// the old record and a later restore would apply the input again.
    pub(super) legacy: BTreeSet<u64>,
}

impl<T> Default for Buffer<T> {
    fn default() -> Self {
        Buffer {
            meta: PartitionMeta::default(),
            meta_dirty: false,
            pending: BTreeMap::new(),
            pending_dirty: BTreeSet::new(),
            pending_new: BTreeSet::new(),
            legacy: BTreeSet::new(),
        }
    }
}

/// A partition's bookkeeping (changelog key [`META_KEY`]).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PartitionMeta {
    /// The latest watermark reported by each upstream partition.
    pub(super) watermarks: BTreeMap<i32, DateTime<Utc>>,
    /// The partition's event-time clock: inputs are applied and timers fired up to here.
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub(super) clock: Option<DateTime<Utc>>,
    /// Sequence number of the next pending input.
    pub(super) next_seq: u64,
}

/// Event time, class (commands before impacts at the same instant, as in the replay),
/// arrival sequence.
pub(super) type PendingKey = (DateTime<Utc>, u8, u64);

/// A pending input as its changelog record carries it (key `~pending/<seq>`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PendingRecord<T> {
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub(super) time: DateTime<Utc>,
    pub(super) class: u8,
    pub(super) seq: u64,
    pub(super) item: T,
}

pub(super) fn pending_key(seq: u64) -> Vec<u8> {
    pending_key_under(PENDING_PREFIX, seq)
}

/// A pending input's changelog key under `prefix` (this release's, or one before 0.2).
pub(super) fn pending_key_under(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{seq:020}").as_bytes());
    key
}

impl<T: Clone + Serialize + serde::de::DeserializeOwned> Buffer<T> {
    /// Up to when inputs may be applied: the oldest upstream watermark, once all
    /// `upstream` partitions have reported one. Every input with an earlier event time has
    /// arrived (each upstream partition writes in event-time order).
    pub(super) fn limit(&self, upstream: i32) -> Option<DateTime<Utc>> {
        if (0..upstream).all(|q| self.meta.watermarks.contains_key(&q)) {
            self.meta.watermarks.values().min().copied()
        } else {
            None
        }
    }

    pub(super) fn hold(&mut self, time: DateTime<Utc>, class: u8, item: T) {
        let key = (time, class, self.meta.next_seq);
        self.meta.next_seq += 1;
        self.meta_dirty = true;
        self.pending.insert(key, item);
        self.pending_dirty.insert(key);
        self.pending_new.insert(key);
    }

    /// An upstream partition reports its watermark; false for a partition that does not
    /// exist upstream.
    pub(super) fn report(&mut self, w: &WatermarkRecord, upstream: i32) -> bool {
        if !(0..upstream).contains(&w.source_partition) {
            return false;
        }
        let slot = self
            .meta
            .watermarks
            .entry(w.source_partition)
            .or_insert(w.watermark);
        *slot = (*slot).max(w.watermark);
        self.meta_dirty = true;
        true
    }

    /// The next input older than `limit`, with the clock moved to its time.
    pub(super) fn next_ready(&mut self, limit: DateTime<Utc>) -> Option<(PendingKey, T)> {
        let key = *self.pending.first_key_value()?.0;
        if key.0 >= limit {
            return None;
        }
        let item = self.pending.remove(&key)?;
        self.pending_dirty.insert(key);
        self.meta.clock = Some(self.meta.clock.map_or(key.0, |c| c.max(key.0)));
        self.meta_dirty = true;
        Some((key, item))
    }

    /// Move the clock to `limit` if it is behind; returns whether it moved.
    pub(super) fn catch_up(&mut self, limit: DateTime<Utc>) -> bool {
        if self.meta.clock.is_some_and(|c| c >= limit) {
            return false;
        }
        self.meta.clock = Some(limit);
        self.meta_dirty = true;
        true
    }

    /// Read one of the buffer's changelog records under `key`, by the kind its envelope
    /// names.
    pub(super) fn restore(
        &mut self,
        key: &[u8],
        kind: StateKind,
        body: &[u8],
    ) -> Result<(), String> {
        match kind {
            StateKind::Meta => {
                self.meta = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            }
            StateKind::Pending => {
                let r: PendingRecord<T> =
                    serde_json::from_slice(body).map_err(|e| e.to_string())?;
                if key.starts_with(LEGACY_PENDING_PREFIX) {
                    self.legacy.insert(r.seq);
                } else {
                    self.legacy.remove(&r.seq);
                }
                self.pending.insert((r.time, r.class, r.seq), r.item);
            }
            StateKind::Entity | StateKind::Figures | StateKind::Members => {
                return Err("not a record of the partition's buffer".into())
            }
        }
        Ok(())
    }

    /// A tombstone under `key`: true when it is one of the buffer's (a pending input
    /// applied), false when it is an entity's. A key of a release before 0.2
    /// (`~pending/<seq>`) removes only an input read back from such a key, and counts as
    /// an entity's too (an entity may be named like that): the caller forgets the entity
    /// as well.
    pub(super) fn restore_tombstone(&mut self, key: &[u8]) -> bool {
        if key == META_KEY {
            return true;
        }
        let parse = |seq: &[u8]| {
            std::str::from_utf8(seq)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
        };
        if let Some(seq) = key.strip_prefix(PENDING_PREFIX) {
            let seq = parse(seq);
            self.pending.retain(|k, _| Some(k.2) != seq);
            return true;
        }
        if let Some(seq) = key.strip_prefix(LEGACY_PENDING_PREFIX).and_then(parse) {
            if self.legacy.remove(&seq) {
                self.pending.retain(|k, _| k.2 != seq);
            }
        }
        false
    }

    /// The changelog records of what changed since the last call.
    pub(super) fn changelog(&mut self, out: &mut Vec<StateRecord>) {
        if std::mem::take(&mut self.meta_dirty) {
            out.push((
                META_KEY.to_vec(),
                StateKind::Meta,
                serde_json::to_vec(&self.meta).ok(),
            ));
        }
        let new = std::mem::take(&mut self.pending_new);
        for key in std::mem::take(&mut self.pending_dirty) {
            if new.contains(&key) && !self.pending.contains_key(&key) {
                continue; // held and released within one transaction
            }
            let value = self.pending.get(&key).and_then(|item| {
                serde_json::to_vec(&PendingRecord {
                    time: key.0,
                    class: key.1,
                    seq: key.2,
                    item: item.clone(),
                })
                .ok()
            });
            if value.is_none() && self.legacy.remove(&key.2) {
                out.push((
                    pending_key_under(LEGACY_PENDING_PREFIX, key.2),
                    StateKind::Pending,
                    None,
                ));
            }
            out.push((pending_key(key.2), StateKind::Pending, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::service::INTERNAL_KEY_BYTE;
    use chrono::TimeZone;

    fn t(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 10, minute, 0)
            .single()
            .expect("time")
    }

    fn wm(source_partition: i32, minute: u32) -> WatermarkRecord {
        WatermarkRecord {
            source_partition,
            watermark: t(minute),
        }
    }

    #[test]
    fn a_buffer_releases_in_event_time_order_once_every_upstream_partition_has_passed() {
        let mut buf: Buffer<String> = Buffer::default();
        buf.hold(t(7), 1, "impact at :07".to_string());
        buf.hold(t(3), 1, "impact at :03".to_string());
        buf.hold(t(3), 0, "command at :03".to_string());
        assert_eq!(buf.limit(2), None, "no watermark yet");
        assert!(buf.report(&wm(0, 10), 2));
        assert_eq!(buf.limit(2), None, "partition 1 has not reported");
        assert!(buf.report(&wm(1, 5), 2));
        assert!(!buf.report(&wm(2, 9), 2), "no partition 2 upstream");
        let limit = buf.limit(2).expect("both reported");
        assert_eq!(limit, t(5));
        let released: Vec<_> = std::iter::from_fn(|| buf.next_ready(limit))
            .map(|(_, item)| item)
            .collect();
        assert_eq!(released, ["command at :03", "impact at :03"]);
        assert_eq!(buf.meta.clock, Some(t(3)));
        assert!(buf.catch_up(limit));
        assert!(!buf.catch_up(t(4)), "the clock never goes back");
        // A watermark never goes back either.
        buf.report(&wm(1, 2), 2);
        assert_eq!(buf.limit(2), Some(t(5)));
        buf.report(&wm(1, 8), 2);
        let limit = buf.limit(2).expect("limit");
        assert_eq!(
            buf.next_ready(limit).map(|(_, i)| i),
            Some("impact at :07".to_string())
        );
    }

    #[test]
    fn a_buffer_comes_back_from_its_changelog_records() {
        let mut buf: Buffer<String> = Buffer::default();
        buf.report(&wm(0, 9), 1);
        buf.hold(t(4), 1, "a".into());
        buf.hold(t(2), 1, "b".into());
        let mut records = Vec::new();
        buf.changelog(&mut records);
        let _ = buf.next_ready(t(9));
        buf.changelog(&mut records);
        let mut back: Buffer<String> = Buffer::default();
        for (key, kind, value) in &records {
            assert_eq!(
                key.first(),
                Some(&INTERNAL_KEY_BYTE),
                "a key no input can have"
            );
            match value {
                Some(body) => back.restore(key, *kind, body).expect("readable"),
                None => assert!(back.restore_tombstone(key), "a buffer key"),
            }
        }
        assert!(!back.restore_tombstone(b"DL-0001"), "not a buffer key");
        // An entity named like a bookkeeping key of an older release stays an entity.
        assert!(!back.restore_tombstone(b"~pending/77"));
        assert!(!back.restore_tombstone(b"~meta"));
        assert_eq!(back.pending, buf.pending);
        assert_eq!(back.meta.next_seq, 2);
        assert_eq!(back.meta.watermarks, buf.meta.watermarks);
    }

    #[test]
    fn an_input_held_and_released_within_one_transaction_is_never_written() {
        let mut buf: Buffer<String> = Buffer::default();
        buf.report(&wm(0, 9), 1);
        buf.hold(t(2), 1, "gone".into());
        buf.hold(t(12), 1, "kept".into());
        let released = buf.next_ready(t(9)).map(|(_, item)| item);
        assert_eq!(released.as_deref(), Some("gone"));
        let mut records = Vec::new();
        buf.changelog(&mut records);
        let kinds: Vec<StateKind> = records.iter().map(|r| r.1).collect();
        assert_eq!(kinds, [StateKind::Meta, StateKind::Pending], "{records:?}");
        assert!(records[1].2.is_some(), "only the input still held");
        // Released in a later transaction: now its tombstone is written.
        let _ = buf.next_ready(t(13));
        let mut later = Vec::new();
        buf.changelog(&mut later);
        assert!(later.iter().any(|(k, kind, v)| *kind == StateKind::Pending
            && v.is_none()
            && *k == pending_key(1)));
    }

    #[test]
    fn an_input_read_back_from_an_older_releases_key_is_tombstoned_under_that_key_too() {
        let mut buf: Buffer<String> = Buffer::default();
        let record = serde_json::to_vec(&PendingRecord {
            time: t(3),
            class: 1,
            seq: 7,
            item: "old".to_string(),
        })
        .expect("json");
        let old_key = b"~pending/00000000000000000007";
        buf.restore(old_key, StateKind::Pending, &record)
            .expect("readable");
        // An entity named like it does not touch it...
        assert!(!buf.restore_tombstone(b"~pending/00000000000000000008"));
        assert_eq!(buf.pending.len(), 1);
        // ...and once applied, both keys get their tombstone.
        let _ = buf.next_ready(t(9));
        let mut records = Vec::new();
        buf.changelog(&mut records);
        let tombstones: Vec<&[u8]> = records
            .iter()
            .filter(|(_, kind, v)| *kind == StateKind::Pending && v.is_none())
            .map(|(k, _, _)| k.as_slice())
            .collect();
        assert_eq!(tombstones, [&old_key[..], &pending_key(7)[..]]);
    }
}
