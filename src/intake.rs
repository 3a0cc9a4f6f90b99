//! The edge between raw messages and the engine: one decoder per input stream, shared by
//! the Kafka runtime and the replay command so that both accept and reject exactly the
//! same things.
//!
//! What is not a fault at all (VES heartbeats, measurements, 3GPP heartbeats and file-ready
//! notifications on the alarm topic) is dropped here and counted by VES domain in
//! `linewatch_non_fault_events_total`, unless [`IntakeOptions::non_fault_events`] asks
//! for one rejection record each ([`decode_with`]).

use serde::{Deserialize, Serialize};

use crate::alarm::{parse_alarms_with, AlarmOptions};
use crate::engine::{CommandAction, Input, TicketCommand};
use crate::inventory::{parse_circuit_record, InventoryChange};
use crate::maintenance::parse_maintenance_window;
use crate::rejection::{RejectReason, DEFAULT_MAX_MESSAGE_BYTES, MAX_YEAR, MIN_YEAR};

/// The input streams of the service (one topic each, one file each in replay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Circuit inventory (compacted; a null value deletes the circuit named by the key).
    Inventory,
    /// Maintenance windows (planned works).
    Maintenance,
    /// Ticket commands from the ticketing system.
    Commands,
    /// NMS alarms, TMF642 or VES.
    Alarms,
}

/// Longest identifier accepted (alarm ids, alarmed objects, source systems, circuit,
/// customer, window and ticket ids), in bytes. Ids become Kafka keys and are repeated in
/// every record about them; an NMS sending a kilobyte-long id is broken, not verbose.
pub const MAX_ID_BYTES: usize = 256;

/// Longest free text kept (an alarm's probable cause, type, specific problem and object
/// type; a customer's name; a command's author and note), in bytes. Longer alarm text is
/// cut (the alarm still counts: a critical fault with a rambling probable cause must still
/// open its tickets); longer text elsewhere is rejected.
pub const MAX_TEXT_BYTES: usize = 1024;

/// Largest ticket command accepted, in bytes. A command is a few ids, a time and a short
/// note (at most [`MAX_TEXT_BYTES`] each); one waiting for the event-time clock is kept,
/// original bytes included, in the circuit stage's changelog, whose records must stay
/// well under Kafka's 1 MB.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;

/// What intake does with a VES event that is not about faults (a heartbeat, a
/// measurement, a 3GPP notification outside fault supervision): the alarm topic of an
/// ONAP or O-RAN deployment carries them by the thousand (an O-RAN SC emitter's heartbeat
/// every 20 s is about 4 300 a day per device), and none can open a ticket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NonFaultEvents {
    /// Count them by VES domain in `linewatch_non_fault_events_total` and drop them.
    #[default]
    Drop,
    /// Write one rejection record each (reason code `not_fault_event`), as for any input
    /// the service cannot use: to find out what an NMS sends.
    Reject,
}

impl NonFaultEvents {
    /// The choice's name on the command line and in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            NonFaultEvents::Drop => "drop",
            NonFaultEvents::Reject => "reject",
        }
    }
}

impl std::str::FromStr for NonFaultEvents {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "drop" => Ok(NonFaultEvents::Drop),
            "reject" => Ok(NonFaultEvents::Reject),
            _ => Err(format!("unknown choice {s:?}; expected drop or reject")),
        }
    }
}

impl std::fmt::Display for NonFaultEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operator's choices about inputs (`linewatch run` and `replay` flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct IntakeOptions {
    /// How alarms are read (where a 3GPP alarm's object comes from).
    pub alarms: AlarmOptions,
    /// Whether non-fault VES events are dropped or rejected.
    pub non_fault_events: NonFaultEvents,
}

/// One record decoded by [`decode_with`].
#[derive(Debug)]
pub struct Decoded {
    /// How many elements the record held: a VES batch's length, else 1 (dropped events
    /// included). A caller tells a batch by `elements > 1`, as with [`decode`].
    pub elements: usize,
    /// The result of each element kept, with the element's index in the record.
    pub results: Vec<(usize, Result<Input, RejectReason>)>,
    /// Non-fault events dropped.
    pub dropped: usize,
}

/// Decode one record of `stream`. A VES batch gives one result per element; every other
/// record gives exactly one. Every input passes [`admit`]: ids the service cannot use are
/// rejected, over-long alarm text is cut. Nothing is dropped: a non-fault VES event is a
/// rejection here (see [`decode_with`]).
pub fn decode(
    stream: Stream,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Vec<Result<Input, RejectReason>> {
    decode_only(stream, key, value, &AlarmOptions::default())
}

/// [`decode`] with the operator's options: alarms are read as `options.alarms` says, and
/// with [`NonFaultEvents::Drop`] a non-fault VES event gives no result; it is counted in
/// `linewatch_non_fault_events_total` (labelled by VES domain) and in
/// [`Decoded::dropped`].
pub fn decode_with(
    stream: Stream,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    options: &IntakeOptions,
) -> Decoded {
    let all = decode_only(stream, key, value, &options.alarms);
    let elements = all.len();
    let mut dropped = 0;
    let mut results = Vec::with_capacity(elements);
    for (i, r) in all.into_iter().enumerate() {
        match &r {
            Err(RejectReason::NotFaultEvent { domain, namespace })
                if options.non_fault_events == NonFaultEvents::Drop =>
            {
                let domain = if namespace.is_some() {
                    "stndDefined"
                } else {
                    domain.as_str()
                };
                crate::telemetry::non_fault_event_dropped(domain);
                dropped += 1;
            }
            _ => results.push((i, r)),
        }
    }
    Decoded {
        elements,
        results,
        dropped,
    }
}

/// The limits every input is held to once parsed, whatever its format: identifiers are
/// at most [`MAX_ID_BYTES`] and hold no control characters; alarm text over
/// [`MAX_TEXT_BYTES`] is cut (with a trailing `…`), other text over it is rejected.
///
/// # Errors
/// [`RejectReason::Invalid`] naming the field and the limit.
pub fn admit(input: &mut Input) -> Result<(), RejectReason> {
    match input {
        Input::Alarm(a) => {
            check_id("id", &a.id)?;
            check_id("sourceSystemId", &a.source_system)?;
            check_id("alarmedObject.id", &a.object)?;
            cut_text(&mut a.probable_cause);
            cut_text(&mut a.alarm_type);
            if let Some(t) = &mut a.specific_problem {
                cut_text(t);
            }
            if let Some(t) = &mut a.object_type {
                cut_text(t);
            }
        }
        Input::Inventory(InventoryChange::Delete { circuit_id }) => {
            check_id("circuitId", circuit_id)?;
        }
        Input::Inventory(InventoryChange::Upsert(c)) => {
            check_id("circuitId", &c.circuit_id)?;
            check_id("customer.id", &c.customer.id)?;
            check_text("customer.name", &c.customer.name)?;
            for (r, route) in c.routes.iter().enumerate() {
                for (e, el) in route.path.iter().enumerate() {
                    // The field path is only written for a reason (this runs for every
                    // element of every circuit loaded).
                    let fields = [
                        ("id", Some(&el.id)),
                        ("domain", el.domain.as_ref()),
                        ("neType", el.ne_type.as_ref()),
                        ("ne", el.ne.as_ref()),
                        ("card", el.card.as_ref()),
                    ];
                    for (name, v) in fields {
                        if let Some(problem) = v.and_then(|v| id_problem(v)) {
                            return Err(RejectReason::Invalid {
                                field: format!("routes[{r}].path[{e}].{name}"),
                                problem,
                            });
                        }
                    }
                }
            }
        }
        Input::Maintenance(w) => {
            check_id("windowId", &w.window_id)?;
            for (i, o) in w.objects.iter().enumerate() {
                check_id(&format!("objects[{i}]"), o)?;
            }
            for (i, c) in w.circuits.iter().enumerate() {
                check_id(&format!("circuits[{i}]"), c)?;
            }
        }
        Input::CancelWindow { window_id } => check_id("key", window_id)?,
        Input::Command(c) => {
            check_id("ticketId", &c.ticket_id)?;
            check_id("circuitId", &c.circuit_id)?;
            if let Some(by) = &c.by {
                check_text("by", by)?;
            }
            if let Some(note) = &c.note {
                check_text("note", note)?;
            }
        }
    }
    Ok(())
}

fn check_id(field: &str, id: &str) -> Result<(), RejectReason> {
    match id_problem(id) {
        None => Ok(()),
        Some(problem) => Err(RejectReason::Invalid {
            field: field.into(),
            problem,
        }),
    }
}

/// What is wrong with an identifier, if anything.
fn id_problem(id: &str) -> Option<String> {
    if id.len() > MAX_ID_BYTES {
        Some(format!(
            "an identifier of {} bytes; at most {MAX_ID_BYTES} are accepted",
            id.len()
        ))
    } else {
        id.chars().find(|c| c.is_control()).map(|c| {
            format!(
                "an identifier with the control character U+{:04X}; ids are printable text",
                u32::from(c)
            )
        })
    }
}

fn check_text(field: &str, text: &str) -> Result<(), RejectReason> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(RejectReason::Invalid {
            field: field.into(),
            problem: format!(
                "{} bytes of text; at most {MAX_TEXT_BYTES} are accepted",
                text.len()
            ),
        });
    }
    Ok(())
}

/// Cut `text` to at most [`MAX_TEXT_BYTES`], on a character boundary, marking the cut.
fn cut_text(text: &mut String) {
    if text.len() <= MAX_TEXT_BYTES {
        return;
    }
    let mut end = MAX_TEXT_BYTES - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
}

fn decode_only(
    stream: Stream,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    alarm_options: &AlarmOptions,
) -> Vec<Result<Input, RejectReason>> {
    let mut results = parse_only(stream, key, value, alarm_options);
    for r in &mut results {
        if let Ok(input) = r {
            if let Err(reason) = admit(input) {
                *r = Err(reason);
            }
        }
    }
    results
}

fn parse_only(
    stream: Stream,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    alarm_options: &AlarmOptions,
) -> Vec<Result<Input, RejectReason>> {
    match stream {
        Stream::Inventory => vec![parse_circuit_record(key, value).map(Input::Inventory)],
        Stream::Alarms => match value {
            Some(bytes) => parse_alarms_with(bytes, DEFAULT_MAX_MESSAGE_BYTES, alarm_options)
                .results
                .into_iter()
                .map(|r| r.map(Input::Alarm))
                .collect(),
            None => vec![Err(RejectReason::MissingField {
                field: "(record value)".into(),
            })],
        },
        Stream::Maintenance => match (value, key) {
            (Some(bytes), _) => vec![parse_maintenance_window(bytes).map(Input::Maintenance)],
            // A tombstone on the compacted topic cancels the window named by the key.
            (None, Some(key)) => vec![std::str::from_utf8(key)
                .ok()
                .filter(|k| !k.trim().is_empty())
                .map(|k| Input::CancelWindow {
                    window_id: k.to_string(),
                })
                .ok_or_else(|| RejectReason::Invalid {
                    field: "key".into(),
                    problem:
                        "a window cancellation (null value) needs the window id as a UTF-8 key"
                            .into(),
                })],
            (None, None) => vec![Err(RejectReason::MissingField {
                field: "(record value)".into(),
            })],
        },
        Stream::Commands => match value {
            Some(bytes) => vec![parse_command(bytes).map(Input::Command)],
            None => vec![Err(RejectReason::MissingField {
                field: "(record value)".into(),
            })],
        },
    }
}

/// Parse a ticket command (schema `topics/schemas/ticket-command.schema.json`).
///
/// # Errors
/// [`RejectReason::TooLarge`], [`RejectReason::NotJson`] or [`RejectReason::Invalid`] with
/// serde's account of what is wrong and where.
pub fn parse_command(bytes: &[u8]) -> Result<TicketCommand, RejectReason> {
    if bytes.len() > MAX_COMMAND_BYTES {
        return Err(RejectReason::TooLarge {
            size: bytes.len(),
            limit: MAX_COMMAND_BYTES,
        });
    }
    let cmd = serde_json::from_slice::<TicketCommand>(bytes).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            RejectReason::NotJson {
                detail: e.to_string(),
            }
        } else {
            RejectReason::Invalid {
                field: "(command)".into(),
                problem: e.to_string(),
            }
        }
    })?;
    let year = chrono::Datelike::year(&cmd.at);
    if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
        return Err(RejectReason::TimeOutOfRange {
            field: "at".into(),
            time: cmd.at.to_rfc3339(),
        });
    }
    match (cmd.action, cmd.cause) {
        (CommandAction::Reclassify, None) => Err(RejectReason::MissingField {
            field: "cause".into(),
        }),
        (CommandAction::Acknowledge | CommandAction::Close, Some(_)) => {
            Err(RejectReason::Invalid {
                field: "cause".into(),
                problem: "only a reclassify command carries a cause".into(),
            })
        }
        _ => Ok(cmd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rejection::RejectCode;
    use crate::ticket::FaultCause;

    #[test]
    fn commands_parse_and_bad_ones_say_why() {
        let ok = br#"{"ticketId":"TT-1","circuitId":"C1","action":"reclassify","cause":"customer","at":"2026-01-01T00:00:00Z"}"#;
        let cmd = parse_command(ok).expect("valid command");
        assert_eq!(cmd.action, CommandAction::Reclassify);
        assert_eq!(cmd.cause, Some(FaultCause::Customer));

        let unknown = br#"{"ticketId":"TT-1","circuitId":"C1","action":"escalate","at":"2026-01-01T00:00:00Z"}"#;
        let err = parse_command(unknown).expect_err("unknown action");
        assert_eq!(err.code(), RejectCode::Invalid);
        assert!(err.to_string().contains("escalate"), "{err}");

        assert_eq!(
            parse_command(b"{nope").expect_err("not json").code(),
            RejectCode::NotJson
        );
    }

    fn alarm(id: &str, object: &str, cause: &str) -> Vec<u8> {
        serde_json::json!({
            "id": id, "state": "raised", "perceivedSeverity": "critical",
            "probableCause": cause, "alarmType": "communicationsAlarm",
            "alarmedObject": { "id": object }, "alarmRaisedTime": "2026-01-01T00:00:00Z",
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn ids_the_service_cannot_use_are_rejected_naming_the_field() {
        let long = "N".repeat(MAX_ID_BYTES + 1);
        for (bytes, field) in [
            (alarm(&long, "NE1", "LOS"), "id"),
            (alarm("A-1", "NE1\u{0}", "LOS"), "alarmedObject.id"),
            (alarm("A-1\n", "NE1", "LOS"), "id"),
        ] {
            let got = decode(Stream::Alarms, None, Some(&bytes));
            match &got[0] {
                Err(RejectReason::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        // Ids that merely look like the runtime's own keys are ordinary ids.
        for id in ["~meta", "~pending/1", "~watermark"] {
            assert!(decode(Stream::Alarms, None, Some(&alarm(id, id, "LOS")))[0].is_ok());
        }
        let cmd = format!(
            r#"{{"ticketId":"TT-1","circuitId":"{long}","action":"acknowledge","at":"2026-01-01T00:00:00Z"}}"#
        );
        let got = decode(Stream::Commands, None, Some(cmd.as_bytes()));
        assert!(
            matches!(&got[0], Err(RejectReason::Invalid { field, .. }) if field == "circuitId"),
            "{got:?}"
        );
    }

    #[test]
    fn overlong_alarm_text_is_cut_and_the_alarm_still_counts() {
        let cause = "é".repeat(500_000);
        let got = decode(Stream::Alarms, None, Some(&alarm("A-1", "NE1", &cause)));
        let Ok(Input::Alarm(a)) = &got[0] else {
            panic!("{got:?}");
        };
        assert!(a.probable_cause.len() <= MAX_TEXT_BYTES);
        assert!(a.probable_cause.ends_with('…'));
        assert!(a.probable_cause.starts_with("éé"));
    }

    #[test]
    fn a_command_padded_past_its_limit_is_rejected_unread() {
        let mut cmd = br#"{"ticketId":"TT-1","circuitId":"C1","action":"acknowledge","at":"2026-01-01T00:00:00Z"}"#.to_vec();
        cmd.extend(std::iter::repeat_n(b' ', MAX_COMMAND_BYTES));
        let got = decode(Stream::Commands, None, Some(&cmd));
        assert!(
            matches!(&got[0], Err(RejectReason::TooLarge { limit, .. }) if *limit == MAX_COMMAND_BYTES),
            "{got:?}"
        );
    }

    #[test]
    fn duplicate_keys_last_wins_except_in_commands_which_are_rejected() {
        let dup = br#"{"id":"A-1","state":"raised","perceivedSeverity":"critical","probableCause":"AIS","probableCause":"LOS","alarmType":"x","alarmedObject":{"id":"NE1"},"alarmRaisedTime":"2026-01-01T00:00:00Z"}"#;
        let got = decode(Stream::Alarms, None, Some(dup));
        let Ok(Input::Alarm(a)) = &got[0] else {
            panic!("{got:?}");
        };
        assert_eq!(a.probable_cause, "LOS", "the last value wins");
        let cmd = br#"{"ticketId":"TT-1","ticketId":"TT-2","circuitId":"C1","action":"acknowledge","at":"2026-01-01T00:00:00Z"}"#;
        let got = decode(Stream::Commands, None, Some(cmd));
        assert!(
            matches!(&got[0], Err(e) if e.to_string().contains("duplicate field")),
            "{got:?}"
        );
    }

    fn ves(domain: &str, id: &str) -> serde_json::Value {
        serde_json::json!({
            "commonEventHeader": {
                "domain": domain, "eventId": id, "sourceName": "NE1",
                "startEpochMicrosec": 1_767_225_600_000_000_i64,
                "lastEpochMicrosec": 1_767_225_600_000_000_i64
            },
            "faultFields": {"alarmCondition": "LOS", "eventSeverity": "MAJOR"}
        })
    }

    fn reject_all() -> IntakeOptions {
        IntakeOptions {
            non_fault_events: NonFaultEvents::Reject,
            ..IntakeOptions::default()
        }
    }

    #[test]
    fn non_fault_events_are_dropped_unless_asked_to_reject_them() {
        let heartbeat = serde_json::json!({ "event": ves("heartbeat", "hb-1") }).to_string();
        let got = decode_with(
            Stream::Alarms,
            None,
            Some(heartbeat.as_bytes()),
            &IntakeOptions::default(),
        );
        assert_eq!((got.elements, got.dropped), (1, 1));
        assert!(got.results.is_empty(), "{:?}", got.results);

        let got = decode_with(
            Stream::Alarms,
            None,
            Some(heartbeat.as_bytes()),
            &reject_all(),
        );
        assert_eq!((got.elements, got.dropped), (1, 0));
        assert!(
            matches!(&got.results[..], [(0, Err(e))] if e.code() == RejectCode::NotFaultEvent),
            "{:?}",
            got.results
        );
        // `decode` drops nothing.
        assert!(decode(Stream::Alarms, None, Some(heartbeat.as_bytes()))[0].is_err());

        // Only non-fault events are dropped: a bad fault event is still rejected.
        let mut bad = ves("fault", "f-1");
        bad["faultFields"]["eventSeverity"] = serde_json::json!("SEVERE");
        let got = decode_with(
            Stream::Alarms,
            None,
            Some(serde_json::json!({ "event": bad }).to_string().as_bytes()),
            &IntakeOptions::default(),
        );
        assert_eq!(got.dropped, 0);
        assert!(matches!(&got.results[..], [(0, Err(e))] if e.code() == RejectCode::BadValue));
    }

    #[test]
    fn a_batch_keeps_the_index_of_each_element_around_dropped_ones() {
        let mut bad = ves("fault", "f-1");
        bad["faultFields"]["eventSeverity"] = serde_json::json!("SEVERE");
        let batch = serde_json::json!({ "eventList": [
            ves("heartbeat", "hb-1"), bad, ves("measurement", "m-1"), ves("fault", "f-2")
        ]})
        .to_string();
        let got = decode_with(
            Stream::Alarms,
            None,
            Some(batch.as_bytes()),
            &IntakeOptions::default(),
        );
        assert_eq!((got.elements, got.dropped), (4, 2));
        let indexes: Vec<(usize, bool)> =
            got.results.iter().map(|(i, r)| (*i, r.is_ok())).collect();
        assert_eq!(indexes, [(1, false), (3, true)]);
        let got = decode_with(Stream::Alarms, None, Some(batch.as_bytes()), &reject_all());
        assert_eq!((got.elements, got.dropped, got.results.len()), (4, 0, 4));
    }

    #[test]
    fn dropped_events_are_counted_by_domain_with_a_fixed_label_set() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let stnd_heartbeat = serde_json::json!({
            "commonEventHeader": {
                "domain": "stndDefined", "stndDefinedNamespace": "3GPP-Heartbeat",
                "eventId": "hb", "sourceName": "NE1",
                "startEpochMicrosec": 1_767_225_600_000_000_i64,
                "lastEpochMicrosec": 1_767_225_600_000_000_i64
            },
            "stndDefinedFields": {"data": {"notificationType": "notifyHeartbeat"}}
        });
        let batch = serde_json::json!({ "eventList": [
            ves("heartbeat", "hb-1"), ves("heartbeat", "hb-2"), ves("measurement", "m-1"),
            ves("circuit-42-probe", "x"), stnd_heartbeat, ves("fault", "f-1")
        ]})
        .to_string();
        metrics::with_local_recorder(&recorder, || {
            let got = decode_with(
                Stream::Alarms,
                None,
                Some(batch.as_bytes()),
                &IntakeOptions::default(),
            );
            assert_eq!(got.dropped, 5);
        });
        let text = handle.render();
        for line in [
            "linewatch_non_fault_events_total{domain=\"heartbeat\"} 2",
            "linewatch_non_fault_events_total{domain=\"measurement\"} 1",
            "linewatch_non_fault_events_total{domain=\"stndDefined\"} 1",
            "linewatch_non_fault_events_total{domain=\"other\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(!text.contains("circuit-42"), "{text}");
    }

    #[test]
    fn a_missing_value_is_rejected_not_dropped() {
        for stream in [Stream::Alarms, Stream::Commands] {
            let got = decode(stream, Some(b"k"), None);
            assert_eq!(got.len(), 1);
            assert!(got[0].is_err(), "{stream:?}");
        }
        assert!(decode(Stream::Maintenance, None, None)[0].is_err());
        assert!(matches!(
            decode(Stream::Maintenance, Some(b"W-1"), None)[0],
            Ok(Input::CancelWindow { ref window_id }) if window_id == "W-1"
        ));
    }
}
