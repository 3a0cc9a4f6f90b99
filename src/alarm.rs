//! Alarms from the NMS, normalised from TMF642 Alarm JSON and ONAP VES fault events.
//!
//! Parsing is pure: bytes in, [`Alarm`]s or a [`crate::rejection::RejectReason`] out.
//! The format is recognised per message (see [`parse_alarm_message`]).

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::levels::Severity;
use crate::rejection::json::{self, Obj};
use crate::rejection::{fmt_time, RejectReason, Rejection, Source, DEFAULT_MAX_MESSAGE_BYTES};

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
    /// When the fault started, as each message of the alarm repeats it (VES
    /// `startEpochMicrosec`, TMF642 `alarmRaisedTime`; a 3GPP notification has only its
    /// `eventTime`). Circuits are hit from the raise time of the first message of the
    /// alarm the engine sees, be it the raise or an update.
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub raised_at: DateTime<Utc>,
    /// When the NMS cleared it, for a `Cleared` message.
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub cleared_at: Option<DateTime<Utc>>,
    /// The event time of this notification: `cleared_at` for a clear, else the change
    /// time (TMF642 `alarmChangedTime`, VES `lastEpochMicrosec`) or `raised_at`.
    #[serde(serialize_with = "crate::timestamp::serialize")]
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

// ---------------------------------------------------------------------------------------
// Parsing options.
// ---------------------------------------------------------------------------------------

/// Where the alarmed object of a 3GPP `stndDefined` alarm (TS 28.532 in VES) is read from.
///
/// A 3GPP notification names two things: `href`, the managed object the alarm is about,
/// and `systemDN`, the system that sends the notification (an NMS or an NE's management
/// function, and a placeholder such as "xyz" in the O-RAN SC and ONAP emitters). VES adds
/// `commonEventHeader.sourceName`, the network function that has the problem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StndDefinedObject {
    /// `data.href` when it names the source or a part of it in the inventory's naming
    /// (`sourceName` itself, or `sourceName/…`: a card or port, as for a VES fault's
    /// `sourceName/alarmInterfaceA`), else `sourceName`. An `href` in another naming (a
    /// 3GPP URI, or the placeholders "href1" and `1` of the O-RAN SC and ONAP emitters)
    /// thus falls back to the device, which the inventory knows.
    #[default]
    Auto,
    /// `data.href` as sent (a string that is not blank), else `sourceName`: for
    /// inventories that name objects as the NMS's `href` does (3GPP DNs or URIs).
    Href,
    /// `commonEventHeader.sourceName`: the device, whatever part of it the alarm is on.
    /// For inventories that name devices but not the objects NMSs put in `href`.
    SourceName,
    /// `data.systemDN`: for NMSs that put the alarmed object there (the only rule before
    /// this choice existed).
    SystemDn,
}

impl StndDefinedObject {
    /// Every rule with its name on the command line and in the config file.
    pub const ALL: [(&'static str, StndDefinedObject); 4] = [
        ("auto", StndDefinedObject::Auto),
        ("href", StndDefinedObject::Href),
        ("source-name", StndDefinedObject::SourceName),
        ("system-dn", StndDefinedObject::SystemDn),
    ];

    /// The rule's name (`href`, `source-name`, `system-dn`).
    pub fn as_str(self) -> &'static str {
        match self {
            StndDefinedObject::Auto => "auto",
            StndDefinedObject::Href => "href",
            StndDefinedObject::SourceName => "source-name",
            StndDefinedObject::SystemDn => "system-dn",
        }
    }
}

impl std::str::FromStr for StndDefinedObject {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, rule)| *rule)
            .ok_or_else(|| {
                format!("unknown rule {s:?}; expected auto, href, source-name or system-dn")
            })
    }
}

impl std::fmt::Display for StndDefinedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The choices the alarm parsers leave to the operator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct AlarmOptions {
    /// Where a 3GPP `stndDefined` alarm's object is read from.
    pub stnd_defined_object: StndDefinedObject,
}

// ---------------------------------------------------------------------------------------
// Parsing: TMF642 and ONAP VES, recognised per message.
// ---------------------------------------------------------------------------------------

/// TMF642 v4 `perceivedSeverity` values (X.733), compared without regard to case.
const TMF_SEVERITIES: &[(&str, Severity)] = &[
    ("critical", Severity::Critical),
    ("major", Severity::Major),
    ("minor", Severity::Minor),
    ("warning", Severity::Warning),
    ("indeterminate", Severity::Indeterminate),
    ("cleared", Severity::Cleared),
];

/// TMF642 v4 `state` values, and the acknowledgement states that some profiles (MEF LSO
/// alarm management, as MEF 146 describes it) send in `state` instead of `ackState`: an
/// acknowledged or unacknowledged alarm is still standing, so it reads as an update.
const TMF_STATES: &[(&str, AlarmState)] = &[
    ("raised", AlarmState::Raised),
    ("updated", AlarmState::Updated),
    ("cleared", AlarmState::Cleared),
    ("acknowledged", AlarmState::Updated),
    ("unacknowledged", AlarmState::Updated),
];

/// VES 7 `faultFields.eventSeverity` values; NORMAL is the clear.
const VES_SEVERITIES: &[(&str, Severity)] = &[
    ("CRITICAL", Severity::Critical),
    ("MAJOR", Severity::Major),
    ("MINOR", Severity::Minor),
    ("WARNING", Severity::Warning),
    ("NORMAL", Severity::Cleared),
];

/// 3GPP TS 28.532 `perceivedSeverity` values.
const GPP_SEVERITIES: &[(&str, Severity)] = &[
    ("CRITICAL", Severity::Critical),
    ("MAJOR", Severity::Major),
    ("MINOR", Severity::Minor),
    ("WARNING", Severity::Warning),
    ("INDETERMINATE", Severity::Indeterminate),
    ("CLEARED", Severity::Cleared),
];

/// TMF642 v4 notification types that carry an alarm (`event.alarm`).
const TMF_ALARM_EVENTS: &[&str] = &[
    "AlarmCreateEvent",
    "AlarmAttributeValueChangeEvent",
    "AlarmStateChangeEvent",
    "AlarmDeleteEvent",
];

/// The `stndDefinedNamespace` of 3GPP fault supervision in VES.
const GPP_FAULT_NAMESPACE: &str = "3GPP-FaultSupervision";

/// Parses one message from the alarm topic (or one line of a replay file) with the default
/// size limit, [`DEFAULT_MAX_MESSAGE_BYTES`]. See [`parse_alarm_message_with_limit`].
pub fn parse_alarm_message(bytes: &[u8]) -> Vec<Result<Alarm, RejectReason>> {
    parse_alarm_message_with_limit(bytes, DEFAULT_MAX_MESSAGE_BYTES)
}

/// Parses one message from the alarm topic into normalised alarms, one result per alarm the
/// message carries: a VES `{"eventList": [...]}` batch gives one result per element (in
/// order, so the index of an `Err` is the element to report), anything else exactly one.
/// Never panics and never returns an empty vector: an empty batch is one rejection.
///
/// # Formats, recognised per message
/// - **VES batch**: top-level `eventList`; each element is a VES event, bare
///   (`{"commonEventHeader": …}`, as the VES spec sends it) or wrapped (`{"event": {…}}`).
/// - **VES event**: `{"event": {"commonEventHeader": …}}` (or the bare event).
///   - domain `fault` (VES 7.x `faultFields`): id = `eventId` (VES 7.1 asks the changes and
///     the clear of a fault to repeat its first `eventId` and `startEpochMicrosec`);
///     object = `sourceName`, or `sourceName/alarmInterfaceA` when
///     `faultFields.alarmInterfaceA` is present, because the inventory names a port
///     `NE/card/port` while VES names the NE and the interface apart (an interface already
///     written as `sourceName/…` is taken as is); probable cause =
///     `alarmCondition`; object type = `eventSourceType`; source system =
///     `reportingEntityName`; raised at `startEpochMicrosec`, event time
///     `lastEpochMicrosec` (both microseconds); `eventSeverity` NORMAL is the clear
///     (cleared at `lastEpochMicrosec`); otherwise the state is `Raised` when the two times
///     are equal, `Updated` when `lastEpochMicrosec` is later; alarm type = "fault".
///   - domain `stndDefined`, namespace `3GPP-FaultSupervision` (TS 28.532 in
///     `stndDefinedFields.data`): `notifyNewAlarm` raises, `notifyChangedAlarm` and
///     `notifyChangedAlarmGeneral` update, `notifyClearedAlarm` clears; id = `alarmId`,
///     object by [`AlarmOptions::stnd_defined_object`] (default: `href` when it is the
///     header's `sourceName` or `sourceName/…`, else `sourceName`; `systemDN` names the
///     notifying system, not the alarmed object), times
///     = `eventTime` (a 3GPP notification carries no separate raise time, so a change or
///     clear has `raised_at` = its own time; the engine keeps the raise time it saw
///     first). Other notification types are rejected; another namespace is not a fault
///     event.
///   - any other domain (`measurement`, `heartbeat`, ...) is not a fault event
///     ([`RejectReason::NotFaultEvent`]; [`crate::intake`] drops these by default).
/// - **TMF642 event**: `{"eventType"|"@type": "AlarmCreateEvent" | "AlarmAttributeValueChangeEvent"
///   | "AlarmStateChangeEvent" | "AlarmDeleteEvent", "eventTime"?, "event": {"alarm": {…}}}`.
///   An `AlarmDeleteEvent` (the NMS removed the alarm record) reads as a clear, so an alarm
///   deleted while active cannot stay active here forever. Other TMF642 event types
///   (acknowledgements, comments, groupings) carry no alarm state and are rejected.
/// - **TMF642 alarm**: the bare Alarm resource (`id` (a string, or an integer as the v4
///   swagger types it, read as its decimal digits), `alarmedObject.id` (`alarmedObject`
///   may be an array, as the MEF LSO profile sends it: its first element is taken), `state`
///   (`raised`, `updated`, `cleared`; `acknowledged` and `unacknowledged`, which profiles
///   send for an alarm that stands, read as `updated`),
///   `perceivedSeverity`, `probableCause`, `alarmRaisedTime` required; `sourceSystemId`,
///   `alarmedObjectType` (else `alarmedObject.@referredType`), `alarmType`,
///   `specificProblem`, `alarmChangedTime`, `alarmClearedTime` optional).
///   A message is a clear when `state` is `cleared` or `perceivedSeverity` is `cleared`;
///   it is cleared at `alarmClearedTime`, else `alarmChangedTime`, else the event's
///   `eventTime`, else it is rejected. A raise or update happens at `alarmChangedTime`,
///   else `alarmRaisedTime`.
///
/// Every cleared alarm has severity [`Severity::Cleared`]. Enumerated values are compared
/// without regard to letter case. Every time must fall in the years 2000 to 2100; times that
/// contradict each other (a clear or change before the raise) are rejected. Whether a time
/// is too far in the future needs a clock: see [`check_not_in_future`].
///
/// # Errors
/// Each `Err` is one [`RejectReason`] naming the field by its JSON path from the message
/// root (`eventList[2].faultFields.eventSeverity`). A message over `max_bytes` is rejected
/// unread; bytes that are not JSON, or JSON of none of the formats above, give one `Err`.
pub fn parse_alarm_message_with_limit(
    bytes: &[u8],
    max_bytes: usize,
) -> Vec<Result<Alarm, RejectReason>> {
    parse_alarms(bytes, max_bytes).results
}

/// The alarms of one message, and whether it was a VES batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAlarms {
    /// The message was a VES `eventList` batch with at least one element: `results[i]` is
    /// element `i`. (A one-element batch and a single event both give one result; only this
    /// flag tells them apart.)
    pub batch: bool,
    /// One result per alarm, as [`parse_alarm_message_with_limit`] returns them.
    pub results: Vec<Result<Alarm, RejectReason>>,
}

impl ParsedAlarms {
    /// The [`Rejection`] records to write for the failed results: one per failed element,
    /// each with, for a batch, the element alone as `original` and its `batch_index`
    /// (otherwise the whole message). `key` is the Kafka key, if any.
    pub fn rejections(
        &self,
        original: &[u8],
        key: Option<&[u8]>,
        source: &Source,
        rejected_at: DateTime<Utc>,
    ) -> Vec<Rejection> {
        let elements = if self.batch {
            crate::rejection::batch_elements(original).unwrap_or_default()
        } else {
            Vec::new()
        };
        self.results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().err().map(|reason| (i, reason)))
            .map(|(i, reason)| {
                let bytes = elements.get(i).map_or(original, |e| e.get().as_bytes());
                let r =
                    Rejection::new(reason, Some(bytes), source.clone(), rejected_at).with_key(key);
                if self.batch {
                    r.with_batch_index(i)
                } else {
                    r
                }
            })
            .collect()
    }
}

/// [`parse_alarm_message_with_limit`], also telling whether the message was a batch, so
/// that the runtime can build its rejections with [`ParsedAlarms::rejections`].
pub fn parse_alarms(bytes: &[u8], max_bytes: usize) -> ParsedAlarms {
    parse_alarms_with(bytes, max_bytes, &AlarmOptions::default())
}

/// [`parse_alarms`] with the operator's [`AlarmOptions`] instead of the defaults.
pub fn parse_alarms_with(bytes: &[u8], max_bytes: usize, options: &AlarmOptions) -> ParsedAlarms {
    match json::parse(bytes, max_bytes) {
        Ok(root) => parse_alarm_value(&root, options),
        Err(e) => ParsedAlarms {
            batch: false,
            results: vec![Err(e)],
        },
    }
}

/// Checks that no time of `alarm` lies more than `allowance` after `now`. The parsers have
/// no clock (the engine is pure); the runtime calls this with its clock and the policy's
/// allowance, and rejects what fails: a clock that far ahead would open tickets and stop SLA
/// clocks at impossible times.
///
/// # Errors
/// [`RejectReason::FutureTime`] naming the first offending time.
pub fn check_not_in_future(
    alarm: &Alarm,
    now: DateTime<Utc>,
    allowance: TimeDelta,
) -> Result<(), RejectReason> {
    let limit = now.checked_add_signed(allowance).unwrap_or(now);
    let times = [
        ("raised time", Some(alarm.raised_at)),
        ("cleared time", alarm.cleared_at),
        ("event time", Some(alarm.event_time)),
    ];
    for (what, t) in times {
        if let Some(t) = t.filter(|t| *t > limit) {
            return Err(RejectReason::future_time(what, t, now, allowance));
        }
    }
    Ok(())
}

fn parse_alarm_value(root: &Value, options: &AlarmOptions) -> ParsedAlarms {
    let single = |r| ParsedAlarms {
        batch: false,
        results: vec![r],
    };
    let top = match Obj::at(String::new(), root) {
        Ok(o) => o,
        Err(_) => {
            return single(Err(RejectReason::UnknownFormat {
                detail: format!(
                    "expected a JSON object (TMF642 alarm or event, VES event or eventList), \
                     got {}",
                    json::describe(root)
                ),
            }))
        }
    };
    if top.map.contains_key("eventList") {
        return match top.req_array("eventList") {
            Err(e) => single(Err(e)),
            Ok([]) => single(Err(RejectReason::Invalid {
                field: "eventList".into(),
                problem: "the batch is empty".into(),
            })),
            Ok(items) => ParsedAlarms {
                batch: true,
                results: parse_ves_batch(items, options),
            },
        };
    }
    single(parse_single(&top, options))
}

/// Which format a single (non-batch) message is in, by the keys it has.
fn parse_single(top: &Obj<'_>, options: &AlarmOptions) -> Result<Alarm, RejectReason> {
    if is_ves_event(top) {
        return parse_ves_event(top, options);
    }
    if let Some(Value::Object(inner)) = top.get("event") {
        if ["commonEventHeader", "faultFields", "stndDefinedFields"]
            .iter()
            .any(|k| inner.contains_key(*k))
        {
            return parse_ves_event(&top.req_obj("event")?, options);
        }
    }
    if top.has("eventType") || top.has("event") {
        return parse_tmf_event(top);
    }
    if ["alarmedObject", "perceivedSeverity", "alarmRaisedTime"]
        .iter()
        .any(|k| top.has(k))
    {
        return parse_tmf_alarm(top, None, false);
    }
    Err(RejectReason::UnknownFormat {
        detail: "expected a TMF642 alarm (`alarmedObject`, `perceivedSeverity`, ...), a \
                 TMF642 event (`eventType`, `event.alarm`) or a VES event \
                 (`event.commonEventHeader`, `eventList`)"
            .into(),
    })
}

fn is_ves_event(o: &Obj<'_>) -> bool {
    o.has("commonEventHeader")
}

fn parse_ves_batch(items: &[Value], options: &AlarmOptions) -> Vec<Result<Alarm, RejectReason>> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let el = Obj::at(json::index("eventList", i), item)?;
            if !is_ves_event(&el) && el.has("event") {
                parse_ves_event(&el.req_obj("event")?, options)
            } else {
                parse_ves_event(&el, options)
            }
        })
        .collect()
}

fn parse_ves_event(ev: &Obj<'_>, options: &AlarmOptions) -> Result<Alarm, RejectReason> {
    let header = ev.req_obj("commonEventHeader")?;
    let domain = header.req_str("domain")?;
    match domain {
        "fault" => parse_ves_fault(ev, &header),
        "stndDefined" => parse_ves_stnd_defined(ev, &header, options),
        other => Err(RejectReason::NotFaultEvent {
            domain: json::cut(other),
            namespace: None,
        }),
    }
}

fn parse_ves_fault(ev: &Obj<'_>, header: &Obj<'_>) -> Result<Alarm, RejectReason> {
    let id = header.req_str("eventId")?;
    let source_name = header.req_str("sourceName")?;
    let source_system = header.opt_str("reportingEntityName")?.unwrap_or("");
    let start = header.req_epoch_micros("startEpochMicrosec")?;
    let last = header.req_epoch_micros("lastEpochMicrosec")?;
    if last < start {
        return Err(RejectReason::Inconsistent {
            detail: format!(
                "field `{}` ({}) is before `{}` ({})",
                header.field("lastEpochMicrosec"),
                fmt_time(last),
                header.field("startEpochMicrosec"),
                fmt_time(start)
            ),
        });
    }
    let fault = ev.req_obj("faultFields")?;
    let severity = fault.req_enum("eventSeverity", VES_SEVERITIES)?;
    let probable_cause = fault.req_str("alarmCondition")?;
    let specific_problem = fault.opt_str("specificProblem")?;
    let object_type = fault.opt_str("eventSourceType")?;
    let interface = fault.opt_str("alarmInterfaceA")?;
    let object = match interface {
        None => source_name.to_string(),
        Some(i) if i.starts_with(&format!("{source_name}/")) => i.to_string(),
        Some(i) => format!("{source_name}/{i}"),
    };
    let (state, cleared_at) = if severity == Severity::Cleared {
        (AlarmState::Cleared, Some(last))
    } else if last > start {
        (AlarmState::Updated, None)
    } else {
        (AlarmState::Raised, None)
    };
    Ok(Alarm {
        id: id.to_string(),
        source_system: source_system.to_string(),
        object,
        object_type: object_type.map(str::to_string),
        state,
        severity,
        probable_cause: probable_cause.to_string(),
        alarm_type: "fault".into(),
        specific_problem: specific_problem.map(str::to_string),
        raised_at: start,
        cleared_at,
        event_time: last,
    })
}

fn parse_ves_stnd_defined(
    ev: &Obj<'_>,
    header: &Obj<'_>,
    options: &AlarmOptions,
) -> Result<Alarm, RejectReason> {
    let namespace = header.req_str("stndDefinedNamespace")?;
    if namespace != GPP_FAULT_NAMESPACE {
        return Err(RejectReason::NotFaultEvent {
            domain: "stndDefined".into(),
            namespace: Some(json::cut(namespace)),
        });
    }
    let source_system = header.opt_str("reportingEntityName")?.unwrap_or("");
    let fields = ev.req_obj("stndDefinedFields")?;
    let data = fields.req_obj("data")?;
    let notification = data.req_str("notificationType")?;
    let state = match notification {
        "notifyNewAlarm" => AlarmState::Raised,
        "notifyChangedAlarm" | "notifyChangedAlarmGeneral" => AlarmState::Updated,
        "notifyClearedAlarm" => AlarmState::Cleared,
        other => {
            return Err(RejectReason::UnsupportedEvent {
                detail: format!(
                    "field `{}`: 3GPP notification {} is not an alarm raise, change or clear \
                     (accepted: notifyNewAlarm, notifyChangedAlarm, notifyChangedAlarmGeneral, \
                     notifyClearedAlarm)",
                    data.field("notificationType"),
                    json::show(other)
                ),
            })
        }
    };
    let id = data.req_str("alarmId")?;
    let href = match data.get("href") {
        Some(Value::String(href)) if !href.trim().is_empty() => Some(href.as_str()),
        _ => None,
    };
    let object = match options.stnd_defined_object {
        StndDefinedObject::Auto => {
            let source = header.req_str("sourceName")?;
            match href {
                Some(h) if h == source || h.starts_with(&format!("{source}/")) => h,
                _ => source,
            }
        }
        StndDefinedObject::Href => match href {
            Some(h) => h,
            None => header.req_str("sourceName")?,
        },
        StndDefinedObject::SourceName => header.req_str("sourceName")?,
        StndDefinedObject::SystemDn => data.req_str("systemDN")?,
    };
    let severity = if state == AlarmState::Cleared && !data.has("perceivedSeverity") {
        Severity::Cleared
    } else {
        data.req_enum("perceivedSeverity", GPP_SEVERITIES)?
    };
    let probable_cause = data.req_str_or_number("probableCause")?;
    let event_time = data.req_time("eventTime")?;
    let alarm_type = data.opt_str("alarmType")?.unwrap_or("stndDefined");
    let specific_problem = match data.get("specificProblem") {
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => data.opt_str("specificProblem")?.map(str::to_string),
    };
    let cleared = state == AlarmState::Cleared || severity == Severity::Cleared;
    Ok(Alarm {
        id: id.to_string(),
        source_system: source_system.to_string(),
        object: object.to_string(),
        object_type: None,
        state: if cleared { AlarmState::Cleared } else { state },
        severity: if cleared { Severity::Cleared } else { severity },
        probable_cause,
        alarm_type: alarm_type.to_string(),
        specific_problem,
        raised_at: event_time,
        cleared_at: cleared.then_some(event_time),
        event_time,
    })
}

fn parse_tmf_event(top: &Obj<'_>) -> Result<Alarm, RejectReason> {
    let kind = match top.opt_str("eventType")? {
        Some(k) => Some(k),
        None => top.opt_str("@type")?,
    };
    if let Some(k) = kind {
        if !TMF_ALARM_EVENTS.contains(&k) {
            return Err(RejectReason::UnsupportedEvent {
                detail: format!(
                    "TMF642 event type {} carries no alarm state (accepted: {})",
                    json::show(k),
                    TMF_ALARM_EVENTS.join(", ")
                ),
            });
        }
    }
    let envelope_time = top.opt_time("eventTime")?;
    let alarm = top.req_obj("event")?.req_obj("alarm")?;
    parse_tmf_alarm(&alarm, envelope_time, kind == Some("AlarmDeleteEvent"))
}

/// One TMF642 Alarm resource. `envelope_time` is the event's `eventTime`, the last fallback
/// for the clear time (it is the notifier's clock, so it is not used for anything else);
/// `deleted` forces a clear (see [`parse_alarm_message_with_limit`]).
fn parse_tmf_alarm(
    a: &Obj<'_>,
    envelope_time: Option<DateTime<Utc>>,
    deleted: bool,
) -> Result<Alarm, RejectReason> {
    let id = tmf_id(a)?;
    let alarmed = alarmed_object(a)?;
    let object = alarmed.req_str("id")?;
    let object_type = match a.opt_str("alarmedObjectType")? {
        Some(t) => Some(t),
        None => alarmed.opt_str("@referredType")?,
    };
    let source_system = a.opt_str("sourceSystemId")?.unwrap_or("");
    let state = a.req_enum("state", TMF_STATES)?;
    let severity = a.req_enum("perceivedSeverity", TMF_SEVERITIES)?;
    let probable_cause = a.req_str("probableCause")?;
    let alarm_type = a.opt_str("alarmType")?.unwrap_or("");
    let specific_problem = a.opt_str("specificProblem")?;
    let raised_at = a.req_time("alarmRaisedTime")?;
    let changed = a.opt_time("alarmChangedTime")?;
    let cleared = a.opt_time("alarmClearedTime")?;

    let is_clear = deleted || state == AlarmState::Cleared || severity == Severity::Cleared;
    // The time of this notification, and the field it was read from (for the reason).
    let (event_time, from) = if is_clear {
        let picked = cleared
            .map(|t| (t, a.field("alarmClearedTime")))
            .or_else(|| changed.map(|t| (t, a.field("alarmChangedTime"))))
            .or_else(|| envelope_time.map(|t| (t, "eventTime".to_string())));
        match picked {
            Some(p) => p,
            None => {
                return Err(RejectReason::MissingField {
                    field: a.field("alarmClearedTime"),
                })
            }
        }
    } else {
        changed
            .map(|t| (t, a.field("alarmChangedTime")))
            .unwrap_or((raised_at, a.field("alarmRaisedTime")))
    };
    if event_time < raised_at {
        return Err(RejectReason::Inconsistent {
            detail: format!(
                "field `{from}` ({}) is before `{}` ({})",
                fmt_time(event_time),
                a.field("alarmRaisedTime"),
                fmt_time(raised_at)
            ),
        });
    }
    Ok(Alarm {
        id,
        source_system: source_system.to_string(),
        object: object.to_string(),
        object_type: object_type.map(str::to_string),
        state: if is_clear { AlarmState::Cleared } else { state },
        severity: if is_clear {
            Severity::Cleared
        } else {
            severity
        },
        probable_cause: probable_cause.to_string(),
        alarm_type: alarm_type.to_string(),
        specific_problem: specific_problem.map(str::to_string),
        raised_at,
        cleared_at: is_clear.then_some(event_time),
        event_time,
    })
}

/// A TMF642 alarm's `id`: a string, or an integer as the v4 swagger types it (its decimal
/// digits). Other numbers (fractions, exponents) are no id.
fn tmf_id(a: &Obj<'_>) -> Result<String, RejectReason> {
    match a.req("id")? {
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Value::String(_) => a.req_str("id").map(str::to_string),
        other => Err(RejectReason::WrongType {
            field: a.field("id"),
            expected: "a string or an integer",
            got: json::describe(other),
        }),
    }
}

/// A TMF642 alarm's `alarmedObject`: the object, or the first element of an array of them
/// (the MEF LSO profile sends a list; the first is the object the alarm is raised on, the
/// others are not correlated).
fn alarmed_object<'a>(a: &Obj<'a>) -> Result<Obj<'a>, RejectReason> {
    let field = a.field("alarmedObject");
    match a.req("alarmedObject")? {
        Value::Array(items) => match items.first() {
            Some(first) => Obj::at(json::index(&field, 0), first),
            None => Err(RejectReason::Invalid {
                field,
                problem: "the list of alarmed objects is empty".into(),
            }),
        },
        other => Obj::at(field, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rejection::RejectCode;
    use proptest::prelude::*;
    use serde_json::json;

    const VES7: &str = include_str!("../tests/fixtures/ves/ves7_valid.json");
    const VES_STND: &str = include_str!("../tests/fixtures/ves/ves_stdnDefined_valid.json");
    const TMF_RAISED: &str =
        include_str!("../tests/fixtures/alarms/valid/tmf642_alarm_raised.json");
    const TMF_CREATE: &str =
        include_str!("../tests/fixtures/alarms/valid/tmf642_create_event.json");

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn one(v: &Value) -> Result<Alarm, RejectReason> {
        let mut out = parse_alarm_message(v.to_string().as_bytes());
        assert_eq!(out.len(), 1, "{out:?}");
        out.remove(0)
    }

    fn reason(v: &Value) -> RejectReason {
        one(v).unwrap_err()
    }

    fn fixture(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    /// The inner event of a `{"event": {...}}` fixture.
    fn inner(s: &str) -> Value {
        fixture(s)["event"].clone()
    }

    fn tmf_alarm() -> Value {
        json!({
            "id": "A-1", "state": "raised", "perceivedSeverity": "major",
            "probableCause": "LOS", "alarmedObject": {"id": "NE1/3/2"},
            "sourceSystemId": "nms-1", "alarmRaisedTime": "2024-05-01T08:30:00Z"
        })
    }

    fn ves_fault() -> Value {
        json!({"event": {
            "commonEventHeader": {
                "domain": "fault", "eventId": "f-1", "sourceName": "NE1",
                "reportingEntityName": "ems-1",
                "startEpochMicrosec": 1_714_552_200_000_000_i64,
                "lastEpochMicrosec": 1_714_552_200_000_000_i64
            },
            "faultFields": {"alarmCondition": "LOS", "eventSeverity": "MAJOR", "vfStatus": "Active"}
        }})
    }

    #[test]
    fn onap_ves7_fixture_parses() {
        let out = parse_alarm_message(VES7.as_bytes());
        assert_eq!(out.len(), 1);
        let a = out[0].as_ref().unwrap();
        assert_eq!(a.object, "scfx0001vm002cap001");
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(a.state, AlarmState::Raised);
        assert_eq!(a.raised_at.timestamp(), 1_413_378_172);
        assert_eq!(a.event_time, a.raised_at);
        assert_eq!(a.cleared_at, None);
        assert_eq!(a.id, "fault0000245");
        assert_eq!(a.source_system, "ibcx0001vm002oam001");
        assert_eq!(a.key(), "ibcx0001vm002oam001:fault0000245");
        assert_eq!(a.object_type.as_deref(), Some("other"));
        assert_eq!(a.probable_cause, "PilotNumberPoolExhaustion");
        assert_eq!(a.alarm_type, "fault");
        assert_eq!(
            a.specific_problem.as_deref(),
            Some("Calls cannot complete - pilot numbers are unavailable")
        );
    }

    #[test]
    fn onap_stnd_defined_fixture_is_rejected_for_its_placeholder_time() {
        let out = parse_alarm_message(VES_STND.as_bytes());
        assert_eq!(out.len(), 1);
        let err = out[0].as_ref().unwrap_err();
        assert_eq!(err.code(), RejectCode::BadTime);
        assert_eq!(
            err.to_string(),
            "field `event.stndDefinedFields.data.eventTime`: \"xyz\" is not an RFC 3339 time \
             (like \"2024-05-01T08:30:00Z\")"
        );
    }

    #[test]
    fn onap_fixtures_in_a_batch_give_one_result_each() {
        // The VES spec's batch holds bare events; wrapped ones are accepted too.
        for (a, b) in [
            (inner(VES7), inner(VES_STND)),
            (fixture(VES7), fixture(VES_STND)),
        ] {
            let batch = json!({ "eventList": [a, b, inner(VES7)] });
            let out = parse_alarm_message(batch.to_string().as_bytes());
            assert_eq!(out.len(), 3);
            assert_eq!(out[0].as_ref().unwrap().object, "scfx0001vm002cap001");
            let err = out[1].as_ref().unwrap_err();
            assert_eq!(err.code(), RejectCode::BadTime);
            assert!(err.to_string().starts_with("field `eventList[1]."), "{err}");
            assert!(err.to_string().contains("eventTime`: \"xyz\""), "{err}");
            assert!(out[2].is_ok());
        }
    }

    #[test]
    fn ves_normal_is_the_clear_and_later_last_is_an_update() {
        let mut v = ves_fault();
        v["event"]["commonEventHeader"]["lastEpochMicrosec"] = json!(1_714_552_800_000_000_i64);
        let a = one(&v).unwrap();
        assert_eq!(a.state, AlarmState::Updated);
        assert_eq!(a.event_time, t("2024-05-01T08:40:00Z"));
        assert_eq!(a.raised_at, t("2024-05-01T08:30:00Z"));

        v["event"]["faultFields"]["eventSeverity"] = json!("NORMAL");
        let a = one(&v).unwrap();
        assert_eq!(a.state, AlarmState::Cleared);
        assert_eq!(a.severity, Severity::Cleared);
        assert_eq!(a.cleared_at, Some(t("2024-05-01T08:40:00Z")));
        assert_eq!(a.raised_at, t("2024-05-01T08:30:00Z"));
    }

    #[test]
    fn ves_object_joins_source_name_and_interface() {
        let mut v = ves_fault();
        assert_eq!(one(&v).unwrap().object, "NE1");
        v["event"]["faultFields"]["alarmInterfaceA"] = json!("3/2");
        assert_eq!(one(&v).unwrap().object, "NE1/3/2");
        v["event"]["faultFields"]["alarmInterfaceA"] = json!("NE1/3/2");
        assert_eq!(one(&v).unwrap().object, "NE1/3/2");
        v["event"]["faultFields"]["alarmInterfaceA"] = json!("");
        assert_eq!(one(&v).unwrap().object, "NE1");
        // The bare event (no "event" wrapper) reads the same.
        assert_eq!(one(&v["event"]).unwrap().object, "NE1");
    }

    #[test]
    fn ves_other_domains_are_not_faults() {
        let mut v = ves_fault();
        v["event"]["commonEventHeader"]["domain"] = json!("measurement");
        let err = reason(&v);
        assert_eq!(err.code(), RejectCode::NotFaultEvent);
        assert_eq!(
            err.to_string(),
            "VES domain `measurement` is not a fault event (accepted: fault, stndDefined)"
        );
    }

    #[test]
    fn ves_rejections_name_the_field() {
        let mut v = ves_fault();
        v["event"]["faultFields"]["eventSeverity"] = json!("SEVERE");
        assert_eq!(
            reason(&v).to_string(),
            "field `event.faultFields.eventSeverity`: expected one of CRITICAL, MAJOR, MINOR, \
             WARNING, NORMAL, got \"SEVERE\""
        );
        let mut v = ves_fault();
        v["event"]["faultFields"]
            .as_object_mut()
            .unwrap()
            .remove("alarmCondition");
        assert_eq!(
            reason(&v).to_string(),
            "field `event.faultFields.alarmCondition` is required but missing"
        );
        let mut v = ves_fault();
        v["event"]["commonEventHeader"]["startEpochMicrosec"] = json!("1714552200000000");
        let err = reason(&v);
        assert_eq!(err.code(), RejectCode::WrongType);
        let mut v = ves_fault();
        v["event"]["commonEventHeader"]["lastEpochMicrosec"] = json!(1_714_552_100_000_000_i64);
        assert_eq!(reason(&v).code(), RejectCode::Inconsistent);
        let mut v = ves_fault();
        v["event"]["commonEventHeader"]["startEpochMicrosec"] = json!(1_714_552_200_000_i64);
        let err = reason(&v);
        assert_eq!(err.code(), RejectCode::TimeOutOfRange);
        assert!(err.to_string().contains("looks like milliseconds"), "{err}");
    }

    #[test]
    fn stnd_defined_maps_3gpp_notifications() {
        let mut v = fixture(VES_STND);
        let data = &mut v["event"]["stndDefinedFields"]["data"];
        data["eventTime"] = json!("2024-05-01T08:30:00+08:00");
        data["href"] = json!("Nokia123456/3/2");
        data["alarmId"] = json!("3gpp-77");
        let a = one(&v).unwrap();
        assert_eq!(a.state, AlarmState::Raised);
        assert_eq!(a.severity, Severity::Major);
        assert_eq!(a.object, "Nokia123456/3/2");
        assert_eq!(a.id, "3gpp-77");
        assert_eq!(a.source_system, "Nokia123456");
        assert_eq!(a.alarm_type, "Environmental Alarm");
        assert_eq!(a.raised_at, t("2024-05-01T00:30:00Z"));

        let data = &mut v["event"]["stndDefinedFields"]["data"];
        data["notificationType"] = json!("notifyClearedAlarm");
        data.as_object_mut().unwrap().remove("perceivedSeverity");
        let a = one(&v).unwrap();
        assert_eq!(
            (a.state, a.severity),
            (AlarmState::Cleared, Severity::Cleared)
        );
        assert_eq!(a.cleared_at, Some(t("2024-05-01T00:30:00Z")));

        v["event"]["stndDefinedFields"]["data"]["notificationType"] = json!("notifyComments");
        assert_eq!(reason(&v).code(), RejectCode::UnsupportedEvent);

        // Another namespace (heartbeats, file-ready, provisioning) is not about faults.
        v["event"]["commonEventHeader"]["stndDefinedNamespace"] = json!("3GPP-Provisioning");
        let err = reason(&v);
        assert_eq!(err.code(), RejectCode::NotFaultEvent);
        assert_eq!(
            err.to_string(),
            "VES stndDefined namespace `3GPP-Provisioning` is not fault supervision \
             (expected `3GPP-FaultSupervision`)"
        );
    }

    /// A 3GPP new-alarm notification with the given `href` and `systemDN`, from the device
    /// "NE1".
    fn stnd_alarm(href: Value, system_dn: &str) -> Value {
        let mut v = fixture(VES_STND);
        v["event"]["commonEventHeader"]["sourceName"] = json!("NE1");
        let data = &mut v["event"]["stndDefinedFields"]["data"];
        data["eventTime"] = json!("2024-05-01T08:30:00Z");
        data["href"] = href;
        data["systemDN"] = json!(system_dn);
        v
    }

    fn object_with(v: &Value, rule: StndDefinedObject) -> Result<String, RejectReason> {
        let options = AlarmOptions {
            stnd_defined_object: rule,
        };
        let bytes = v.to_string();
        let mut out = parse_alarms_with(bytes.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES, &options);
        assert_eq!(out.results.len(), 1);
        out.results.remove(0).map(|a| a.object)
    }

    #[test]
    fn stnd_defined_object_follows_the_chosen_rule() {
        use StndDefinedObject::{Auto, Href, SourceName, SystemDn};
        let uri = "https://ne1.example/3GPPManagement/FaultSupervisionMnS/ManagedElement=NE1";
        let cases: [(Value, [&str; 4]); 6] = [
            // href names a port of the source: the port, unless told otherwise.
            (json!("NE1/3/2"), ["NE1/3/2", "NE1/3/2", "NE1", "OSS-7"]),
            (json!("NE1"), ["NE1", "NE1", "NE1", "OSS-7"]),
            // Another naming, or the emitters' placeholders: the device for `auto`.
            (json!(uri), ["NE1", uri, "NE1", "OSS-7"]),
            (json!("href1"), ["NE1", "href1", "NE1", "OSS-7"]),
            (json!("NE10/1"), ["NE1", "NE10/1", "NE1", "OSS-7"]),
            (json!(1), ["NE1", "NE1", "NE1", "OSS-7"]),
        ];
        for (href, want) in cases {
            let v = stnd_alarm(href.clone(), "OSS-7");
            for (rule, want) in [Auto, Href, SourceName, SystemDn].into_iter().zip(want) {
                assert_eq!(
                    object_with(&v, rule).unwrap(),
                    want,
                    "{rule} with href {href}"
                );
            }
        }
        // The default is `auto`, and `parse_alarm_message` uses it.
        assert_eq!(StndDefinedObject::default(), Auto);
        let v = stnd_alarm(json!("href1"), "xyz");
        assert_eq!(one(&v).unwrap().object, "NE1");
        // `system-dn` needs a systemDN; the others do not.
        let mut v = stnd_alarm(json!("NE1/3/2"), "x");
        v["event"]["stndDefinedFields"]["data"]
            .as_object_mut()
            .unwrap()
            .remove("systemDN");
        assert_eq!(object_with(&v, Auto).unwrap(), "NE1/3/2");
        assert_eq!(
            object_with(&v, SystemDn).unwrap_err().code(),
            RejectCode::MissingField
        );
        for (name, rule) in StndDefinedObject::ALL {
            assert_eq!(name.parse::<StndDefinedObject>(), Ok(rule));
            assert_eq!(rule.to_string(), name);
        }
        assert!("sourceName".parse::<StndDefinedObject>().is_err());
    }

    #[test]
    fn tmf642_alarm_resource() {
        let a = one(&fixture(TMF_RAISED)).unwrap();
        assert_eq!(a.id, "OTN-NMS-000184233");
        assert_eq!(a.source_system, "otn-nms-sz");
        assert_eq!(a.object, "SZ-FT-OTN-01/3/2");
        assert_eq!(a.object_type.as_deref(), Some("OTN"));
        assert_eq!(
            (a.state, a.severity),
            (AlarmState::Raised, Severity::Critical)
        );
        assert_eq!(a.probable_cause, "LOS");
        assert_eq!(a.alarm_type, "communicationsAlarm");
        // The offset is normalised to UTC.
        assert_eq!(a.raised_at, t("2024-05-01T00:30:00.125Z"));
        assert_eq!(a.event_time, a.raised_at);

        let mut v = tmf_alarm();
        v["perceivedSeverity"] = json!("CRITICAL");
        v["state"] = json!("updated");
        v["alarmChangedTime"] = json!("2024-05-01T08:35:00Z");
        v["alarmedObject"]["@referredType"] = json!("PhysicalResource");
        let a = one(&v).unwrap();
        assert_eq!(
            (a.state, a.severity),
            (AlarmState::Updated, Severity::Critical)
        );
        assert_eq!(a.event_time, t("2024-05-01T08:35:00Z"));
        assert_eq!(a.object_type.as_deref(), Some("PhysicalResource"));
    }

    #[test]
    fn tmf642_clears() {
        let mut v = tmf_alarm();
        v["state"] = json!("cleared");
        v["alarmClearedTime"] = json!("2024-05-01T09:00:00Z");
        let a = one(&v).unwrap();
        assert_eq!(
            (a.state, a.severity),
            (AlarmState::Cleared, Severity::Cleared)
        );
        assert_eq!(a.cleared_at, Some(t("2024-05-01T09:00:00Z")));
        assert_eq!(a.event_time, t("2024-05-01T09:00:00Z"));

        // Severity cleared is a clear too; the change time stands in for the clear time.
        let mut v = tmf_alarm();
        v["perceivedSeverity"] = json!("cleared");
        v["alarmChangedTime"] = json!("2024-05-01T09:10:00Z");
        let a = one(&v).unwrap();
        assert_eq!(a.state, AlarmState::Cleared);
        assert_eq!(a.cleared_at, Some(t("2024-05-01T09:10:00Z")));

        // A clear with no time at all is refused rather than given an invented time.
        let mut v = tmf_alarm();
        v["state"] = json!("cleared");
        assert_eq!(
            reason(&v).to_string(),
            "field `alarmClearedTime` is required but missing"
        );

        // A clear before its raise is refused.
        let mut v = tmf_alarm();
        v["state"] = json!("cleared");
        v["alarmClearedTime"] = json!("2024-05-01T08:00:00Z");
        let err = reason(&v);
        assert_eq!(err.code(), RejectCode::Inconsistent);
        assert_eq!(
            err.to_string(),
            "field `alarmClearedTime` (2024-05-01T08:00:00Z) is before `alarmRaisedTime` \
             (2024-05-01T08:30:00Z)"
        );
    }

    #[test]
    fn tmf642_integer_ids_read_as_their_digits() {
        // TMF642 v4's swagger types Alarm.id as an integer.
        let mut v = tmf_alarm();
        v["id"] = json!(184233);
        let a = one(&v).unwrap();
        assert_eq!(a.id, "184233");
        assert_eq!(a.key(), "nms-1:184233");
        // The same alarm sent with a string id is the same alarm.
        v["id"] = json!("184233");
        assert_eq!(one(&v).unwrap().key(), a.key());
        v["id"] = json!(u64::MAX);
        assert_eq!(one(&v).unwrap().id, u64::MAX.to_string());
        v["id"] = json!(-3);
        assert_eq!(one(&v).unwrap().id, "-3");
        for bad in [json!(2.0), json!(true), json!({"id": 1})] {
            v["id"] = bad;
            assert_eq!(reason(&v).code(), RejectCode::WrongType);
        }
    }

    #[test]
    fn tmf642_alarmed_object_lists_give_their_first_object() {
        let mut v = tmf_alarm();
        v["alarmedObject"] = json!([
            {"id": "NE1/3/2", "@referredType": "LogicalResource"},
            {"id": "EVC-77", "@referredType": "Service"}
        ]);
        let a = one(&v).unwrap();
        assert_eq!(a.object, "NE1/3/2");
        assert_eq!(a.object_type.as_deref(), Some("LogicalResource"));

        v["alarmedObject"] = json!([{"name": "no id"}]);
        assert_eq!(
            reason(&v).to_string(),
            "field `alarmedObject[0].id` is required but missing"
        );
        v["alarmedObject"] = json!([]);
        let err = reason(&v);
        assert_eq!(err.code(), RejectCode::Invalid);
        assert_eq!(
            err.to_string(),
            "field `alarmedObject`: the list of alarmed objects is empty"
        );
        v["alarmedObject"] = json!(["NE1"]);
        assert_eq!(reason(&v).code(), RejectCode::WrongType);
    }

    #[test]
    fn tmf642_acknowledgement_states_are_a_standing_alarm() {
        for state in ["acknowledged", "UNACKNOWLEDGED"] {
            let mut v = tmf_alarm();
            v["state"] = json!(state);
            v["alarmChangedTime"] = json!("2024-05-01T08:40:00Z");
            let a = one(&v).unwrap();
            assert_eq!(
                (a.state, a.severity),
                (AlarmState::Updated, Severity::Major)
            );
            assert_eq!(a.raised_at, t("2024-05-01T08:30:00Z"));
            assert_eq!(a.event_time, t("2024-05-01T08:40:00Z"));
            // A cleared severity still clears, whatever the acknowledgement.
            v["perceivedSeverity"] = json!("cleared");
            assert_eq!(one(&v).unwrap().state, AlarmState::Cleared);
        }
        let mut v = tmf_alarm();
        v["state"] = json!("closed");
        assert_eq!(
            reason(&v).to_string(),
            "field `state`: expected one of raised, updated, cleared, acknowledged, \
             unacknowledged, got \"closed\""
        );
    }

    #[test]
    fn tmf642_event_envelopes() {
        let a = one(&fixture(TMF_CREATE)).unwrap();
        assert_eq!(
            (a.id.as_str(), a.state),
            ("PTN-U2000-5521907", AlarmState::Raised)
        );

        let mut v = json!({
            "eventType": "AlarmStateChangeEvent",
            "eventTime": "2024-05-01T09:00:00Z",
            "event": {"alarm": tmf_alarm()}
        });
        v["event"]["alarm"]["state"] = json!("cleared");
        let a = one(&v).unwrap();
        assert_eq!(
            a.cleared_at,
            Some(t("2024-05-01T09:00:00Z")),
            "eventTime is the last resort"
        );

        // A deleted alarm cannot stay active: the delete reads as a clear.
        let v = json!({"@type": "AlarmDeleteEvent", "eventTime": "2024-05-01T09:05:00Z",
                       "event": {"alarm": tmf_alarm()}});
        let a = one(&v).unwrap();
        assert_eq!(
            (a.state, a.severity),
            (AlarmState::Cleared, Severity::Cleared)
        );
        assert_eq!(a.cleared_at, Some(t("2024-05-01T09:05:00Z")));

        let v = json!({"eventType": "AckAlarmsCreateEvent", "event": {"ackAlarms": {}}});
        let err = reason(&v);
        assert_eq!(err.code(), RejectCode::UnsupportedEvent);
        assert!(err.to_string().contains("AckAlarmsCreateEvent"), "{err}");

        let v = json!({"eventType": "AlarmCreateEvent", "event": {"alarm": {"id": "x"}}});
        assert_eq!(
            reason(&v).to_string(),
            "field `event.alarm.alarmedObject` is required but missing"
        );
    }

    #[test]
    fn tmf642_rejections_name_the_field() {
        let mut v = tmf_alarm();
        v["perceivedSeverity"] = json!("huge");
        let err = reason(&v);
        assert_eq!(err.code(), RejectCode::BadValue);
        assert_eq!(
            err.to_string(),
            "field `perceivedSeverity`: expected one of critical, major, minor, warning, \
             indeterminate, cleared, got \"huge\""
        );
        let mut v = tmf_alarm();
        v["alarmRaisedTime"] = json!("xyz");
        assert_eq!(reason(&v).code(), RejectCode::BadTime);
        let mut v = tmf_alarm();
        v["id"] = json!(1.5);
        assert_eq!(
            reason(&v).to_string(),
            "field `id`: expected a string or an integer, got number 1.5"
        );
        let mut v = tmf_alarm();
        v["alarmedObject"]["id"] = json!("  ");
        assert_eq!(reason(&v).code(), RejectCode::BadValue);
    }

    #[test]
    fn absurd_times_are_refused() {
        for (time, ok) in [
            ("1970-01-01T00:00:00Z", false),
            ("1999-12-31T23:59:59Z", false),
            ("2000-01-01T00:00:00Z", true),
            ("2100-12-31T23:59:59Z", true),
            ("2101-01-01T00:00:00Z", false),
        ] {
            let mut v = tmf_alarm();
            v["alarmRaisedTime"] = json!(time);
            let r = one(&v);
            assert_eq!(r.is_ok(), ok, "{time}: {r:?}");
            if let Err(e) = r {
                assert_eq!(e.code(), RejectCode::TimeOutOfRange);
            }
        }
    }

    #[test]
    fn whole_message_rejections() {
        let out = parse_alarm_message(b"huge");
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].as_ref().unwrap_err().to_string(),
            "not JSON: expected value at line 1 column 1"
        );
        let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(2000));
        let out = parse_alarm_message_with_limit(big.as_bytes(), 1000);
        assert_eq!(out[0].as_ref().unwrap_err().code(), RejectCode::TooLarge);
        assert!(parse_alarm_message_with_limit(VES7.as_bytes(), 2000)[0].is_ok());

        assert_eq!(reason(&json!([1, 2])).code(), RejectCode::UnknownFormat);
        assert_eq!(
            reason(&json!({"hello": 1})).code(),
            RejectCode::UnknownFormat
        );
        assert_eq!(
            reason(&json!({"eventList": []})).to_string(),
            "field `eventList`: the batch is empty"
        );
        assert_eq!(
            reason(&json!({"eventList": {}})).code(),
            RejectCode::WrongType
        );
        let out = parse_alarm_message(json!({"eventList": [1, {}]}).to_string().as_bytes());
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].as_ref().unwrap_err().to_string(),
            "field `eventList[0]`: expected an object, got number 1"
        );
        assert_eq!(
            out[1].as_ref().unwrap_err().to_string(),
            "field `eventList[1].commonEventHeader` is required but missing"
        );
    }

    #[test]
    fn rejections_name_the_batch_element_only_for_batches() {
        let src = Source::File {
            file: "alarms.jsonl".into(),
            line: 3,
        };
        let now = t("2024-05-02T00:00:00Z");
        let batch = json!({ "eventList": [inner(VES_STND)] }).to_string();
        let parsed = parse_alarms(batch.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES);
        assert!(parsed.batch);
        let rs = parsed.rejections(batch.as_bytes(), None, &src, now);
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].batch_index, Some(0));
        let element = inner(VES_STND).to_string();
        assert_eq!(rs[0].original.as_deref(), Some(element.as_str()));

        // Many bad elements: each rejection carries its own element, not the batch.
        let bad: Vec<Value> = (0..50).map(|_| inner(VES_STND)).collect();
        let big = json!({ "eventList": bad }).to_string();
        let rs = parse_alarms(big.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES).rejections(
            big.as_bytes(),
            None,
            &src,
            now,
        );
        assert_eq!(rs.len(), 50);
        for (i, r) in rs.iter().enumerate() {
            assert_eq!(r.batch_index, Some(i));
            assert_eq!(r.original.as_deref(), Some(element.as_str()));
            assert_eq!(r.original_size, element.len());
        }

        let parsed = parse_alarms(VES_STND.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES);
        assert!(!parsed.batch);
        let rs = parsed.rejections(VES_STND.as_bytes(), Some(b"Nokia123456"), &src, now);
        assert_eq!(rs[0].batch_index, None);
        assert_eq!(rs[0].key.as_deref(), Some("Nokia123456"));
        assert_eq!(rs[0].reason_code, RejectCode::BadTime);

        let empty = br#"{"eventList": []}"#;
        assert!(!parse_alarms(empty, DEFAULT_MAX_MESSAGE_BYTES).batch);
        let good = parse_alarms(VES7.as_bytes(), DEFAULT_MAX_MESSAGE_BYTES);
        assert!(good.rejections(VES7.as_bytes(), None, &src, now).is_empty());
    }

    #[test]
    fn future_times_are_the_callers_check() {
        let a = one(&tmf_alarm()).unwrap();
        let now = t("2024-05-01T08:29:00Z");
        assert!(check_not_in_future(&a, now, TimeDelta::minutes(5)).is_ok());
        let err = check_not_in_future(&a, now, TimeDelta::seconds(30)).unwrap_err();
        assert_eq!(err.code(), RejectCode::FutureTime);
        assert_eq!(
            err.to_string(),
            "raised time 2024-05-01T08:30:00Z is more than 30 s in the future \
             (now 2024-05-01T08:29:00Z)"
        );
    }

    /// JSON trees built from the field names the parsers look for, so the generated
    /// messages reach deep into every branch.
    fn arb_json() -> impl Strategy<Value = Value> {
        let names = prop::sample::select(vec![
            "event",
            "eventList",
            "commonEventHeader",
            "faultFields",
            "stndDefinedFields",
            "data",
            "domain",
            "eventId",
            "sourceName",
            "startEpochMicrosec",
            "lastEpochMicrosec",
            "eventSeverity",
            "alarmCondition",
            "alarmInterfaceA",
            "stndDefinedNamespace",
            "notificationType",
            "eventTime",
            "alarmId",
            "systemDN",
            "perceivedSeverity",
            "probableCause",
            "eventType",
            "alarm",
            "id",
            "alarmedObject",
            "state",
            "alarmRaisedTime",
            "alarmClearedTime",
            "alarmChangedTime",
            "@type",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            (1_400_000_000_000_000_i64..1_800_000_000_000_000).prop_map(Value::from),
            prop::sample::select(vec![
                "fault",
                "stndDefined",
                "measurement",
                "CRITICAL",
                "NORMAL",
                "cleared",
                "raised",
                "major",
                "3GPP-FaultSupervision",
                "notifyNewAlarm",
                "notifyClearedAlarm",
                "AlarmCreateEvent",
                "AlarmDeleteEvent",
                "2024-05-01T08:30:00Z",
                "1999-01-01T00:00:00Z",
                "xyz",
                "",
                "NE1",
            ])
            .prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(names.clone(), inner, 0..8).prop_map(
                    |m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                ),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
            let out = parse_alarm_message(&bytes);
            prop_assert!(!out.is_empty());
        }

        #[test]
        fn mutated_fixtures_never_panic(which in 0usize..4, at in any::<prop::sample::Index>(),
                                        byte in any::<u8>(), cut in any::<bool>()) {
            let src = [VES7, VES_STND, TMF_RAISED, TMF_CREATE][which];
            let mut bytes = src.as_bytes().to_vec();
            let i = at.index(bytes.len());
            if cut { bytes.truncate(i) } else { bytes[i] = byte }
            prop_assert!(!parse_alarm_message(&bytes).is_empty());
        }

        #[test]
        fn arbitrary_json_never_panics(v in arb_json()) {
            let out = parse_alarm_message(v.to_string().as_bytes());
            prop_assert!(!out.is_empty());
            for a in out.into_iter().flatten() {
                // Whatever is accepted obeys the invariants the engine relies on.
                prop_assert!(!a.id.trim().is_empty());
                prop_assert!(!a.object.trim().is_empty());
                prop_assert!(a.event_time >= a.raised_at);
                prop_assert_eq!(a.state == AlarmState::Cleared, a.severity == Severity::Cleared);
                prop_assert_eq!(a.cleared_at.is_some(), a.state == AlarmState::Cleared);
            }
        }
    }
}
