//! Alarms from the NMS, normalised from TMF642 Alarm JSON and ONAP VES fault events.
//!
//! Parsing is pure: bytes in, [`Alarm`]s or a [`crate::rejection::RejectReason`] out.
//! The format is recognised per message (see [`parse_alarm_message`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::levels::Severity;

/// What happened to the alarm in this message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    Raised,
    Updated,
    Cleared,
}

/// One alarm notification, normalised. Identity is (`source_system`, `id`): the NMS's own
/// alarm id is only unique within the system that raised it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    /// The NMS's alarm id (TMF642 `id`, VES `eventId`).
    pub id: String,
    /// Which NMS sent it (TMF642 `sourceSystemId`, VES `reportingEntityName`); "" if absent.
    pub source_system: String,
    /// Id of the alarmed object in the inventory's naming: an NE ("NE1"), a card ("NE1/3"),
    /// a port ("NE1/3/2") or a link ("LINK-7").
    pub object: String,
    /// The object's type or network domain when the alarm says so (TMF642
    /// `alarmedObjectType`, VES `eventSourceType`), e.g. "OTN", "PTN", "router".
    pub object_type: Option<String>,
    pub state: AlarmState,
    pub severity: Severity,
    /// Probable cause or alarm condition, e.g. "LOS", "AIS", "linkDown".
    pub probable_cause: String,
    /// TMF642 `alarmType` (e.g. "CommunicationsAlarm") or VES domain; "" if absent.
    pub alarm_type: String,
    pub specific_problem: Option<String>,
    /// When the NMS raised the alarm (event time).
    pub raised_at: DateTime<Utc>,
    /// When the NMS cleared it, for a `Cleared` message.
    pub cleared_at: Option<DateTime<Utc>>,
    /// The event time of this notification: `cleared_at` for a clear, else the change
    /// time (TMF642 `alarmChangedTime`, VES `lastEpochMicrosec`) or `raised_at`.
    pub event_time: DateTime<Utc>,
}

impl Alarm {
    /// Globally unique key of the alarm: `source_system` + NMS id.
    pub fn key(&self) -> String {
        if self.source_system.is_empty() {
            self.id.clone()
        } else {
            format!("{}:{}", self.source_system, self.id)
        }
    }
}
