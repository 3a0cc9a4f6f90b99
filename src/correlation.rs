//! Correlation: which circuits an alarm hits, and whether each circuit is down.
//!
//! Two halves, matching the two stages of the runtime:
//! - [`FanOut`] (keyed by alarmed object) remembers the active service-affecting alarms
//!   per object and turns each alarm change into one [`Impact`] per circuit it hits;
//! - [`CircuitImpacts`] (keyed by circuit) holds the impacts active on one circuit and
//!   decides its [`LineStatus`]: up, unprotected (some but not all routes hit) or down.
//!
//! Out-of-order input is handled here so that nothing downstream sees a phantom fault:
//! a clear that arrives before its raise is remembered (for the late-alarm allowance) and
//! the raise then becomes a hit immediately followed by its clear; a duplicate raise
//! changes nothing; a clear for an alarm never seen emits nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::changes::Changes;

use crate::alarm::{Alarm, AlarmState};
use crate::levels::Severity;
use crate::network::{CircuitRef, Network};
use crate::policy::{CauseClass, Policy};

/// Whether an impact starts or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImpactKind {
    Hit,
    Clear,
}

/// One alarm's effect on one circuit: the message between the two stages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Impact {
    pub circuit_id: String,
    pub kind: ImpactKind,
    pub alarm: AlarmFacts,
    /// Route indexes of the circuit the alarmed object is on (for `Hit`).
    pub routes: Vec<usize>,
    /// Domain of the hit path element ("transmission", "data", ...), used for routing.
    pub domain: Option<String>,
    pub ne_type: Option<String>,
    /// Event time: when the hit started, or when it ended.
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub at: DateTime<Utc>,
    /// Event time of the notification that caused the impact (the alarm's event time, or
    /// the time of the inventory change): the order in which the circuit stage applies
    /// impacts, whatever order they reach it in.
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub event_time: DateTime<Utc>,
}

/// What the circuit stage needs to know of an alarm, carried with each impact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmFacts {
    pub key: String,
    pub object: String,
    pub source_system: String,
    pub probable_cause: String,
    pub severity: Severity,
    pub cause_class: CauseClass,
    /// When the alarm was raised (the raise time of the first of its messages seen).
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub raised_at: DateTime<Utc>,
}

/// Stage 1: alarms in, impacts out. Owns the active alarms of its objects.
#[derive(Debug, Default, Clone)]
pub struct FanOut {
    active: HashMap<String, AlarmFacts>,
    by_object: HashMap<String, BTreeSet<String>>,
    /// Clears that arrived before their raise: alarm key → cleared at. Kept for the
    /// policy's late-alarm allowance, then forgotten.
    early_clears: HashMap<String, EarlyClear>,
    /// The early clears in the order they expire (cleared at, key), so that expiring costs
    /// what expires rather than a sweep of every remembered clear per alarm. An entry whose
    /// clear has since been replaced or dropped is skipped when it comes up.
    expiry: BTreeSet<(DateTime<Utc>, String)>,
    /// The latest alarm event time seen: early clears expire against it, not against the
    /// wall clock, so that a backlog read after a restart is treated as replay treats it.
    watermark: Option<DateTime<Utc>>,
    /// Alarm keys whose state changed since the last [`FanOut::take_dirty`].
    dirty: Changes,
}

/// What the fan-out holds about one alarm key, as its changelog record carries it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<AlarmFacts>,
    /// A clear remembered for the late-alarm allowance: when, and whether the late raise
    /// has already been replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_clear: Option<(DateTime<Utc>, bool)>,
    /// The fan-out's watermark when the record was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub watermark: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy)]
struct EarlyClear {
    cleared_at: DateTime<Utc>,
    /// The late raise has been replayed as hit and clear; further copies change nothing.
    replayed: bool,
}

impl FanOut {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fan-out that notes no changed alarm keys (for an engine with no changelog to
    /// write).
    pub fn without_changelog() -> Self {
        FanOut {
            dirty: Changes::off(),
            ..Self::default()
        }
    }

    /// The alarm keys changed since the last call (for the changelog).
    pub fn take_dirty(&mut self) -> BTreeSet<String> {
        self.dirty.take()
    }

    /// The latest alarm event time seen.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.watermark
    }

    /// The state held for one alarm key; `None` when nothing is held (a tombstone).
    pub fn export(&self, key: &str) -> Option<AlarmRecord> {
        let active = self.active.get(key).cloned();
        let early_clear = self
            .early_clears
            .get(key)
            .map(|e| (e.cleared_at, e.replayed));
        (active.is_some() || early_clear.is_some()).then_some(AlarmRecord {
            active,
            early_clear,
            watermark: self.watermark,
        })
    }

    /// Put back the state of one alarm key read from the changelog.
    pub fn import(&mut self, key: &str, record: AlarmRecord) {
        self.remove(key);
        self.early_clears.remove(key);
        if let Some(w) = record.watermark {
            self.watermark = Some(self.watermark.map_or(w, |old| old.max(w)));
        }
        if let Some((cleared_at, replayed)) = record.early_clear {
            self.remember_clear(
                key.to_string(),
                EarlyClear {
                    cleared_at,
                    replayed,
                },
            );
        }
        if let Some(facts) = record.active {
            self.by_object
                .entry(facts.object.clone())
                .or_default()
                .insert(key.to_string());
            self.active.insert(key.to_string(), facts);
        }
        self.dirty.forget(key);
    }

    /// Number of active service-affecting alarms held.
    pub fn active_alarms(&self) -> usize {
        self.active.len()
    }

    /// Active alarms on `object`, in key order.
    pub fn alarms_on(&self, object: &str) -> impl Iterator<Item = &AlarmFacts> {
        self.by_object
            .get(object)
            .into_iter()
            .flat_map(|keys| keys.iter())
            .filter_map(|k| self.active.get(k))
    }

    /// Apply one alarm notification.
    pub fn on_alarm(&mut self, alarm: &Alarm, network: &Network, policy: &Policy) -> Vec<Impact> {
        let mut out = self.apply_alarm(alarm, network, policy);
        for impact in &mut out {
            impact.event_time = alarm.event_time;
        }
        out
    }

    fn apply_alarm(&mut self, alarm: &Alarm, network: &Network, policy: &Policy) -> Vec<Impact> {
        self.expire(alarm.event_time, policy);
        let key = alarm.key();
        self.dirty.note(&key);
        let ends =
            alarm.state == AlarmState::Cleared || !policy.is_service_affecting(alarm.severity);
        if ends {
            let at = alarm.cleared_at.unwrap_or(alarm.event_time);
            match self.remove(&key) {
                Some(prev) => {
                    if alarm.state == AlarmState::Cleared {
                        // Remember the clear, so that a late duplicate of the raise (an NMS
                        // resync, a producer retry) does not bring the alarm back.
                        self.remember_clear(
                            key,
                            EarlyClear {
                                cleared_at: at,
                                replayed: true,
                            },
                        );
                    }
                    impacts_for(&prev, network, ImpactKind::Clear, at)
                }
                None => {
                    if alarm.state == AlarmState::Cleared && !self.early_clears.contains_key(&key) {
                        self.remember_clear(
                            key,
                            EarlyClear {
                                cleared_at: at,
                                replayed: false,
                            },
                        );
                    }
                    Vec::new()
                }
            }
        } else {
            let domain_hint = alarm.object_type.as_deref();
            // An alarm takes circuits down from its raise, whichever of its messages is seen
            // first: an update carries the raise time too (VES `startEpochMicrosec`, TMF642
            // `alarmRaisedTime`). Alarms below the service-affecting severities leave no
            // state, so one raised as a warning and upgraded later counts from its raise.
            let since = match self.active.get(&key) {
                Some(prev) => prev.raised_at,
                None => alarm.raised_at,
            };
            let facts = AlarmFacts {
                key: key.clone(),
                object: alarm.object.clone(),
                source_system: alarm.source_system.clone(),
                probable_cause: alarm.probable_cause.clone(),
                severity: alarm.severity,
                cause_class: policy.cause_class(alarm, domain_hint),
                raised_at: since,
            };
            if let Some(early) = self.early_clears.get_mut(&key) {
                if early.cleared_at >= alarm.raised_at {
                    if early.replayed {
                        return Vec::new(); // a duplicate of a raise already replayed
                    }
                    // The clear came first: the alarm is already over. Replay it in order.
                    early.replayed = true;
                    let cleared_at = early.cleared_at;
                    let mut out = impacts_for(&facts, network, ImpactKind::Hit, alarm.raised_at);
                    out.extend(impacts_for(&facts, network, ImpactKind::Clear, cleared_at));
                    return out;
                }
                self.early_clears.remove(&key);
            }
            if let Some(prev) = self.active.get(&key) {
                if *prev == facts {
                    return Vec::new(); // duplicate raise
                }
                if prev.object != facts.object {
                    // The alarm moved to another object: end the old impacts first.
                    let prev = self.remove(&key);
                    let mut out = prev
                        .map(|p| impacts_for(&p, network, ImpactKind::Clear, alarm.event_time))
                        .unwrap_or_default();
                    out.extend(self.insert(facts, network));
                    return out;
                }
            }
            self.insert(facts, network)
        }
    }

    /// A circuit was added or re-routed: hit it with the active alarms on its objects.
    /// The hit starts at `now` unless the alarm was raised later.
    pub fn on_circuit_changed(
        &self,
        circuit: CircuitRef<'_>,
        network: &Network,
        now: DateTime<Utc>,
    ) -> Vec<Impact> {
        // The circuit's objects that have alarms, in object order.
        let mut objects: Vec<&str> = circuit
            .routes
            .impacting_objects()
            .filter(|o| self.by_object.contains_key(*o))
            .collect();
        objects.sort_unstable();
        objects.dedup();
        let mut out = Vec::new();
        for object in objects {
            for facts in self.alarms_on(object) {
                if let Some(usage) = network.routes_using(circuit.circuit_id, object) {
                    out.push(Impact {
                        circuit_id: circuit.circuit_id.to_string(),
                        kind: ImpactKind::Hit,
                        alarm: facts.clone(),
                        routes: usage.routes,
                        domain: usage.domain.map(str::to_string),
                        ne_type: usage.ne_type.map(str::to_string),
                        at: facts.raised_at.max(now),
                        event_time: now,
                    });
                }
            }
        }
        out
    }

    /// Forget early clears older than the late-alarm allowance, counted back from the
    /// latest alarm event time seen.
    fn expire(&mut self, event_time: DateTime<Utc>, policy: &Policy) {
        let latest = self.watermark.map_or(event_time, |w| w.max(event_time));
        self.watermark = Some(latest);
        let Some(horizon) = latest.checked_sub_signed(policy.late_alarm_allowance()) else {
            return;
        };
        while self.expiry.first().is_some_and(|(at, _)| *at < horizon) {
            let Some((at, key)) = self.expiry.pop_first() else {
                break;
            };
            if self
                .early_clears
                .get(&key)
                .is_some_and(|e| e.cleared_at == at)
            {
                self.early_clears.remove(&key);
                self.dirty.note_owned(key);
            }
        }
    }

    /// Remember an early clear (replacing any other of the same key).
    fn remember_clear(&mut self, key: String, clear: EarlyClear) {
        self.expiry.insert((clear.cleared_at, key.clone()));
        self.early_clears.insert(key, clear);
    }

    fn insert(&mut self, facts: AlarmFacts, network: &Network) -> Vec<Impact> {
        let out = impacts_for(&facts, network, ImpactKind::Hit, facts.raised_at);
        self.by_object
            .entry(facts.object.clone())
            .or_default()
            .insert(facts.key.clone());
        self.active.insert(facts.key.clone(), facts);
        out
    }

    fn remove(&mut self, key: &str) -> Option<AlarmFacts> {
        let prev = self.active.remove(key)?;
        if let Some(keys) = self.by_object.get_mut(&prev.object) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_object.remove(&prev.object);
            }
        }
        Some(prev)
    }
}

fn impacts_for(
    facts: &AlarmFacts,
    network: &Network,
    kind: ImpactKind,
    at: DateTime<Utc>,
) -> Vec<Impact> {
    network
        .circuits_on(&facts.object)
        .map(|(circuit_id, usage)| Impact {
            circuit_id: circuit_id.to_string(),
            kind,
            alarm: facts.clone(),
            routes: usage.routes,
            domain: usage.domain.map(str::to_string),
            ne_type: usage.ne_type.map(str::to_string),
            at,
            event_time: at,
        })
        .collect()
}

/// A circuit's service state as the active impacts decide it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LineStatus {
    Up,
    /// A protected circuit with some, not all, routes hit: still carrying traffic.
    Unprotected {
        #[serde(serialize_with = "crate::timestamp::serialize")]
        since: DateTime<Utc>,
    },
    /// Every route hit: the customer's service is down.
    Down {
        #[serde(serialize_with = "crate::timestamp::serialize")]
        since: DateTime<Utc>,
    },
}

/// Stage 2, per circuit: the impacts currently active on it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitImpacts {
    active: BTreeMap<String, Impact>,
    /// The latest clear time seen since the circuit was last free of impacts: the
    /// circuit is restored at the latest of its clears, whatever order they arrive in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    latest_clear: Option<DateTime<Utc>>,
}

impl CircuitImpacts {
    /// Apply one impact; returns whether anything changed.
    pub fn apply(&mut self, impact: Impact) -> bool {
        match impact.kind {
            ImpactKind::Hit => {
                if self.active.is_empty() {
                    self.latest_clear = None;
                }
                let changed = self.active.get(&impact.alarm.key) != Some(&impact);
                self.active.insert(impact.alarm.key.clone(), impact);
                changed
            }
            ImpactKind::Clear => {
                let removed = self.active.remove(&impact.alarm.key).is_some();
                if removed {
                    self.latest_clear =
                        Some(self.latest_clear.map_or(impact.at, |t| t.max(impact.at)));
                }
                removed
            }
        }
    }

    /// The latest clear time seen since the circuit was last free of impacts.
    pub fn latest_clear(&self) -> Option<DateTime<Utc>> {
        self.latest_clear
    }

    /// Drop impacts whose object no longer lies on the circuit (after a re-route);
    /// returns the keys dropped.
    pub fn retain_on(&mut self, circuit_id: &str, network: &Network) -> Vec<String> {
        let mut dropped = Vec::new();
        self.active.retain(|key, imp| {
            let keep = network
                .routes_using(circuit_id, &imp.alarm.object)
                .is_some();
            if !keep {
                dropped.push(key.clone());
            }
            keep
        });
        dropped
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Impact> {
        self.active.values()
    }

    /// The circuit's status with `route_count` routes. A circuit is down when every route
    /// is hit; it went down when the last of its routes was first hit (the maximum over
    /// routes of the earliest hit on that route), which is independent of arrival order.
    pub fn status(&self, route_count: usize) -> LineStatus {
        if self.active.is_empty() || route_count == 0 {
            return LineStatus::Up;
        }
        let mut earliest: Vec<Option<DateTime<Utc>>> = vec![None; route_count];
        for imp in self.active.values() {
            for &r in &imp.routes {
                if let Some(slot) = earliest.get_mut(r) {
                    *slot = Some(slot.map_or(imp.at, |t| t.min(imp.at)));
                }
            }
        }
        let hit: Vec<DateTime<Utc>> = earliest.iter().flatten().copied().collect();
        match hit.len() {
            0 => LineStatus::Up,
            n if n == route_count => LineStatus::Down {
                since: hit.iter().copied().max().unwrap_or_default(),
            },
            _ => LineStatus::Unprotected {
                since: hit.iter().copied().min().unwrap_or_default(),
            },
        }
    }

    /// The root cause among the active impacts: best cause class (physical before
    /// consequential before data link before IP), then the earliest raised, then key.
    pub fn root_cause(&self) -> Option<&Impact> {
        self.active.values().min_by(|a, b| {
            (a.alarm.cause_class, a.alarm.raised_at, &a.alarm.key).cmp(&(
                b.alarm.cause_class,
                b.alarm.raised_at,
                &b.alarm.key,
            ))
        })
    }
}
