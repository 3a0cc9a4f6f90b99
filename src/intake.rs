//! The edge between raw messages and the engine: one decoder per input stream, shared by
//! the Kafka runtime and the replay command so that both accept and reject exactly the
//! same things.

use serde::{Deserialize, Serialize};

use crate::alarm::parse_alarm_message;
use crate::engine::{CommandAction, Input, TicketCommand};
use crate::inventory::parse_circuit_record;
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

/// Decode one record of `stream`. A VES batch gives one result per element; every other
/// record gives exactly one.
pub fn decode(
    stream: Stream,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Vec<Result<Input, RejectReason>> {
    match stream {
        Stream::Inventory => vec![parse_circuit_record(key, value).map(Input::Inventory)],
        Stream::Alarms => match value {
            Some(bytes) => parse_alarm_message(bytes)
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
    if bytes.len() > DEFAULT_MAX_MESSAGE_BYTES {
        return Err(RejectReason::TooLarge {
            size: bytes.len(),
            limit: DEFAULT_MAX_MESSAGE_BYTES,
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
