//! Planned works: maintenance windows announced to customers ahead of time.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::rejection::json::{self, Obj};
use crate::rejection::{fmt_time, RejectReason, DEFAULT_MAX_MESSAGE_BYTES};

/// A maintenance window. Time inside it is excluded from SLA clocks and outage totals only
/// when its notice met the policy's lead time (checked by the engine, not here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaintenanceWindow {
    pub window_id: String,
    /// Network objects worked on (same naming as the inventory).
    #[serde(default)]
    pub objects: Vec<String>,
    /// Circuits named directly.
    #[serde(default)]
    pub circuits: Vec<String>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub start: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub end: DateTime<Utc>,
    /// When the customers were notified.
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub notice_given_at: DateTime<Utc>,
    /// Emergency work for a major safety hazard (shorter notice applies).
    #[serde(default)]
    pub emergency: bool,
    /// Cross-border circuits (longer notice applies).
    #[serde(default)]
    pub cross_border: bool,
}

/// Field names of a [`MaintenanceWindow`] message (camelCase, as the serde attributes say).
const WINDOW_FIELDS: &[&str] = &[
    "windowId",
    "objects",
    "circuits",
    "start",
    "end",
    "noticeGivenAt",
    "emergency",
    "crossBorder",
];

/// Parses one message of the `maintenance.windows` topic (or one line of a file): the
/// camelCase JSON form of [`MaintenanceWindow`].
///
/// Checked here: `windowId` is not blank; `objects` and `circuits` are arrays of non-blank
/// strings and together name at least one thing (a window over nothing would excuse
/// nothing, and is a producer mistake); `start`, `end` and `noticeGivenAt` are RFC 3339
/// times in the years 2000 to 2100; `end` is after `start`; no unknown fields. Whether the
/// notice came early enough is the engine's business (it needs the policy and calendar),
/// not a reason to refuse the message. The size limit of [`DEFAULT_MAX_MESSAGE_BYTES`]
/// applies.
///
/// # Errors
/// A [`RejectReason`] naming the field (`objects[2]`, `end`).
pub fn parse_maintenance_window(bytes: &[u8]) -> Result<MaintenanceWindow, RejectReason> {
    let root = json::parse(bytes, DEFAULT_MAX_MESSAGE_BYTES)?;
    let o = Obj::at(String::new(), &root)?;
    o.deny_unknown(WINDOW_FIELDS)?;
    let window_id = o.req_str("windowId")?.to_string();
    let objects = string_list(&o, "objects")?;
    let circuits = string_list(&o, "circuits")?;
    if objects.is_empty() && circuits.is_empty() {
        return Err(RejectReason::Invalid {
            field: "objects".into(),
            problem: "a window must name at least one network object (`objects`) or circuit \
                      (`circuits`)"
                .into(),
        });
    }
    let start = o.req_time("start")?;
    let end = o.req_time("end")?;
    if end <= start {
        return Err(RejectReason::Inconsistent {
            detail: format!(
                "field `end` ({}) is not after `start` ({})",
                fmt_time(end),
                fmt_time(start)
            ),
        });
    }
    let notice_given_at = o.req_time("noticeGivenAt")?;
    Ok(MaintenanceWindow {
        window_id,
        objects,
        circuits,
        start,
        end,
        notice_given_at,
        emergency: o.opt_bool("emergency")?.unwrap_or(false),
        cross_border: o.opt_bool("crossBorder")?.unwrap_or(false),
    })
}

/// An optional array of non-blank strings (absent or `null` reads as empty).
fn string_list(o: &Obj<'_>, key: &str) -> Result<Vec<String>, RejectReason> {
    let field = o.field(key);
    o.opt_array(key)?
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
            Value::String(s) => Err(RejectReason::BadValue {
                field: json::index(&field, i),
                expected: "a non-empty string".into(),
                got: json::show(s),
            }),
            other => Err(RejectReason::WrongType {
                field: json::index(&field, i),
                expected: "a string",
                got: json::describe(other),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rejection::RejectCode;
    use proptest::prelude::*;
    use serde_json::json;

    const OBJECTS: &str = include_str!("../tests/fixtures/maintenance/valid/window_objects.json");
    const CIRCUITS: &str =
        include_str!("../tests/fixtures/maintenance/valid/window_circuits_emergency.json");

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn window() -> Value {
        serde_json::from_str(OBJECTS).unwrap()
    }

    fn reason(v: &Value) -> RejectReason {
        parse_maintenance_window(v.to_string().as_bytes()).unwrap_err()
    }

    #[test]
    fn fixtures_parse_and_agree_with_serde() {
        for src in [OBJECTS, CIRCUITS] {
            let w = parse_maintenance_window(src.as_bytes()).unwrap();
            let by_serde: MaintenanceWindow = serde_json::from_str(src).unwrap();
            assert_eq!(w, by_serde);
            let again = serde_json::to_vec(&w).unwrap();
            assert_eq!(parse_maintenance_window(&again).unwrap(), w);
        }
        let w = parse_maintenance_window(OBJECTS.as_bytes()).unwrap();
        assert_eq!(w.start, t("2024-05-10T16:00:00Z"));
        assert_eq!(w.objects, vec!["SZ-FT-OTN-01", "FIBRE-SZ-GZ-017"]);
        assert!(!w.emergency && !w.cross_border);
        let w = parse_maintenance_window(CIRCUITS.as_bytes()).unwrap();
        assert!(w.emergency);
        assert_eq!(w.circuits.len(), 2);
    }

    #[test]
    fn rules_of_a_window() {
        let mut v = window();
        v["end"] = v["start"].clone();
        let err = reason(&v);
        assert_eq!(err.code(), RejectCode::Inconsistent);
        assert_eq!(
            err.to_string(),
            "field `end` (2024-05-10T16:00:00Z) is not after `start` (2024-05-10T16:00:00Z)"
        );

        let mut v = window();
        v["objects"] = json!([]);
        let err = reason(&v);
        assert_eq!(err.code(), RejectCode::Invalid);
        assert!(err.to_string().contains("at least one"), "{err}");

        let mut v = window();
        v["objects"] = json!(["NE1", ""]);
        assert_eq!(
            reason(&v).to_string(),
            "field `objects[1]`: expected a non-empty string, got \"\""
        );

        let mut v = window();
        v["circuits"] = json!("C-1");
        assert_eq!(reason(&v).code(), RejectCode::WrongType);

        let mut v = window();
        v["start"] = json!("tomorrow");
        assert_eq!(reason(&v).code(), RejectCode::BadTime);

        let mut v = window();
        v["end"] = json!("2999-01-01T00:00:00Z");
        assert_eq!(reason(&v).code(), RejectCode::TimeOutOfRange);

        let mut v = window();
        v["crossborder"] = json!(true);
        assert_eq!(reason(&v).code(), RejectCode::UnknownField);

        let mut v = window();
        v.as_object_mut().unwrap().remove("noticeGivenAt");
        assert_eq!(
            reason(&v).to_string(),
            "field `noticeGivenAt` is required but missing"
        );

        let mut v = window();
        v["windowId"] = json!(" ");
        assert_eq!(reason(&v).code(), RejectCode::BadValue);

        // A late notice is the engine's business, not a malformed message.
        let mut v = window();
        v["noticeGivenAt"] = json!("2024-05-11T03:00:00+08:00");
        assert!(parse_maintenance_window(v.to_string().as_bytes()).is_ok());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_maintenance_window(&bytes);
        }

        #[test]
        fn mutated_fixture_never_panics(
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<bool>(),
        ) {
            let mut bytes = CIRCUITS.as_bytes().to_vec();
            let i = at.index(bytes.len());
            if cut { bytes.truncate(i) } else { bytes[i] = byte }
            if let Ok(w) = parse_maintenance_window(&bytes) {
                prop_assert!(w.end > w.start);
                prop_assert!(!(w.objects.is_empty() && w.circuits.is_empty()));
            }
        }
    }
}

/// Whether a window's notice met the policy's lead time for one customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NoticeCheck {
    /// Working days of notice the policy asks for this customer and kind of work.
    pub required_days: u32,
    /// Whole working days between the notice and the start of the works.
    pub given_days: u32,
    pub compliant: bool,
}

impl MaintenanceWindow {
    /// Does the window cover `circuit`: named directly, or working on an object of its
    /// routes (or an object above one, such as the NE holding a port)?
    pub fn affects(&self, circuit: crate::network::CircuitRef<'_>) -> bool {
        if self.circuits.iter().any(|c| c == circuit.circuit_id) {
            return true;
        }
        circuit
            .routes
            .impacting_objects()
            .any(|o| self.objects.iter().any(|w| w == o))
    }

    /// Was the notice early enough for a customer of `level`, under `policy`?
    pub fn notice_check(
        &self,
        level: crate::levels::CustomerLevel,
        policy: &crate::policy::Policy,
    ) -> NoticeCheck {
        let required_days =
            policy.notice_lead_working_days(level, self.emergency, self.cross_border);
        let given_days = policy.notice_days_given(self.notice_given_at, self.start);
        NoticeCheck {
            required_days,
            given_days,
            compliant: given_days >= required_days,
        }
    }
}
