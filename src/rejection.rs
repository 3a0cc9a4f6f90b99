//! What becomes of input that cannot be read.
//!
//! Every parser of the edge (alarms, inventory records, maintenance windows) answers either
//! a domain value or a [`RejectReason`]: one problem, named in words an operator can act on
//! (which field, what was expected, what came). The runtime wraps the reason into a
//! [`Rejection`] record and writes it to `alarms.rejected` together with the original bytes
//! and where they came from, so that nothing is ever dropped silently, a fixed message can be
//! replayed, and the count of rejections per [`RejectCode`] can be watched.
//!
//! Nothing here reads a clock or does I/O: the caller passes `rejected_at`. Nothing here
//! panics, whatever the bytes: a parser that could be crashed by one bad message would stop
//! the partition behind it.
//!
//! The crate-internal `json` module holds the small JSON reading helpers the parsers share,
//! so that every parser names fields (`event.faultFields.eventSeverity`, `routes[1].path[0].id`)
//! and describes bad values the same way.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// Default size limit of one message, in bytes (1 MiB, Kafka's default `message.max.bytes`).
/// A larger message is rejected before any parsing, so a runaway producer cannot make the
/// service spend memory and time on it.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Earliest accepted year of any timestamp. Anything earlier is a clock that was never set
/// (1970) or a unit mistake (seconds read as microseconds), never a real alarm.
pub const MIN_YEAR: i32 = 2000;

/// Latest accepted year of any timestamp (inclusive). Later is a unit mistake or garbage.
pub const MAX_YEAR: i32 = 2100;

/// At most this many bytes of JSON text are spent on the original message inside one
/// [`Rejection`]. The rejection topic has a message size limit too: a 5 MiB message
/// rejected for being too large cannot be copied whole. Beyond the budget the original is
/// cut and [`Rejection::original_truncated`] is set; [`Rejection::original_size`] always
/// tells the full size.
pub const ORIGINAL_BUDGET_BYTES: usize = 512 * 1024;

/// At most this many bytes of a Kafka key are kept in a [`Rejection`] (its `key` field)
/// and in the key of the rejection record. With [`ORIGINAL_BUDGET_BYTES`] this bounds a
/// rejection record well under Kafka's 1 MB default, whatever the input's key and value.
pub const KEY_BUDGET_BYTES: usize = 4 * 1024;

/// The key to write a rejection record under: the input's key, cut to
/// [`KEY_BUDGET_BYTES`] (on a character boundary when it is text).
pub fn rejection_record_key(key: Option<&[u8]>) -> Vec<u8> {
    let Some(key) = key else {
        return Vec::new();
    };
    if key.len() <= KEY_BUDGET_BYTES {
        return key.to_vec();
    }
    match std::str::from_utf8(key) {
        Ok(text) => {
            let mut end = KEY_BUDGET_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.as_bytes().get(..end).unwrap_or_default().to_vec()
        }
        Err(_) => key.get(..KEY_BUDGET_BYTES).unwrap_or_default().to_vec(),
    }
}

/// The elements of a VES `eventList` batch as their own JSON text, for rejections that
/// carry the bad element rather than the whole batch (a batch of a thousand bad elements
/// would otherwise be copied a thousand times). `None` when `original` is not such a batch.
pub fn batch_elements(original: &[u8]) -> Option<Vec<&serde_json::value::RawValue>> {
    #[derive(Deserialize)]
    struct Batch<'a> {
        #[serde(borrow, rename = "eventList")]
        event_list: Vec<&'a serde_json::value::RawValue>,
    }
    let body = original.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(original);
    serde_json::from_slice::<Batch<'_>>(body)
        .ok()
        .map(|b| b.event_list)
}

/// Machine-readable kind of a rejection: a stable name for dashboards, alerts and tests.
/// The human explanation is [`RejectReason`]'s `Display`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// The message is over the size limit; it was not parsed.
    TooLarge,
    /// The bytes are not JSON (or are empty).
    NotJson,
    /// JSON, but not one of the accepted message formats.
    UnknownFormat,
    /// A VES event that is not about faults: a domain other than `fault` or
    /// `stndDefined`, or a `stndDefined` namespace other than 3GPP fault supervision
    /// (heartbeats, measurements, file-ready notifications, ...).
    NotFaultEvent,
    /// A well-formed event of a kind that carries no alarm state (an acknowledgement, a
    /// 3GPP fault notification other than new/changed/cleared alarm).
    UnsupportedEvent,
    /// A required field is absent (or `null`).
    MissingField,
    /// A field is present with the wrong JSON type.
    WrongType,
    /// A field has the right type but a value outside what is allowed.
    BadValue,
    /// A field is not allowed in this object (a typo of a field name is caught here).
    UnknownField,
    /// A time that is not an RFC 3339 date-time.
    BadTime,
    /// A time before [`MIN_YEAR`] or after [`MAX_YEAR`].
    TimeOutOfRange,
    /// A time further in the future than the caller's allowance.
    FutureTime,
    /// Fields that contradict each other (a clear before its raise, an end before a start).
    Inconsistent,
    /// A Kafka record whose key does not name the same thing as its value.
    KeyMismatch,
    /// A rule of the record's content is broken (empty route, duplicate hop, ...).
    Invalid,
}

impl RejectCode {
    pub const ALL: [RejectCode; 15] = [
        Self::TooLarge,
        Self::NotJson,
        Self::UnknownFormat,
        Self::NotFaultEvent,
        Self::UnsupportedEvent,
        Self::MissingField,
        Self::WrongType,
        Self::BadValue,
        Self::UnknownField,
        Self::BadTime,
        Self::TimeOutOfRange,
        Self::FutureTime,
        Self::Inconsistent,
        Self::KeyMismatch,
        Self::Invalid,
    ];

    /// The snake_case name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::NotJson => "not_json",
            Self::UnknownFormat => "unknown_format",
            Self::NotFaultEvent => "not_fault_event",
            Self::UnsupportedEvent => "unsupported_event",
            Self::MissingField => "missing_field",
            Self::WrongType => "wrong_type",
            Self::BadValue => "bad_value",
            Self::UnknownField => "unknown_field",
            Self::BadTime => "bad_time",
            Self::TimeOutOfRange => "time_out_of_range",
            Self::FutureTime => "future_time",
            Self::Inconsistent => "inconsistent",
            Self::KeyMismatch => "key_mismatch",
            Self::Invalid => "invalid",
        }
    }
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one message (or one element of a VES batch) was rejected. The `Display` text is
/// meant for the person who must fix the producer: it names the field by its JSON path from
/// the message root and quotes what came (cut to a readable length).
///
/// Values inside are already rendered for display (`got` is `"huge"` with its quotes, or
/// `number 5`), so the reason stays small whatever the input was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    #[error("message is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },

    #[error("not JSON: {detail}")]
    NotJson { detail: String },

    #[error("not a recognised message: {detail}")]
    UnknownFormat { detail: String },

    /// `namespace` is the `stndDefinedNamespace` of a `stndDefined` event.
    #[error("{}", not_fault_text(domain, namespace.as_deref()))]
    NotFaultEvent {
        domain: String,
        namespace: Option<String>,
    },

    #[error("{detail}")]
    UnsupportedEvent { detail: String },

    #[error("field `{field}` is required but missing")]
    MissingField { field: String },

    #[error("field `{field}`: expected {expected}, got {got}")]
    WrongType {
        field: String,
        expected: &'static str,
        got: String,
    },

    #[error("field `{field}`: expected {expected}, got {got}")]
    BadValue {
        field: String,
        expected: String,
        got: String,
    },

    #[error("field `{field}` is not allowed here (allowed: {allowed})")]
    UnknownField { field: String, allowed: String },

    #[error("field `{field}`: {value} is not an RFC 3339 time (like \"2024-05-01T08:30:00Z\")")]
    BadTime { field: String, value: String },

    #[error(
        "field `{field}`: {time} is outside the accepted years {min} to {max}",
        min = MIN_YEAR,
        max = MAX_YEAR
    )]
    TimeOutOfRange { field: String, time: String },

    #[error("{what} {time} is more than {allowance} in the future (now {now})")]
    FutureTime {
        what: String,
        time: String,
        allowance: String,
        now: String,
    },

    #[error("{detail}")]
    Inconsistent { detail: String },

    #[error("field `{field}`: {value} does not match the record key {key}")]
    KeyMismatch {
        field: String,
        value: String,
        key: String,
    },

    #[error("field `{field}`: {problem}")]
    Invalid { field: String, problem: String },
}

fn not_fault_text(domain: &str, namespace: Option<&str>) -> String {
    match namespace {
        None => {
            format!("VES domain `{domain}` is not a fault event (accepted: fault, stndDefined)")
        }
        Some(ns) => format!(
            "VES stndDefined namespace `{ns}` is not fault supervision (expected \
             `3GPP-FaultSupervision`)"
        ),
    }
}

impl RejectReason {
    /// The machine-readable kind of this reason.
    pub fn code(&self) -> RejectCode {
        match self {
            Self::TooLarge { .. } => RejectCode::TooLarge,
            Self::NotJson { .. } => RejectCode::NotJson,
            Self::UnknownFormat { .. } => RejectCode::UnknownFormat,
            Self::NotFaultEvent { .. } => RejectCode::NotFaultEvent,
            Self::UnsupportedEvent { .. } => RejectCode::UnsupportedEvent,
            Self::MissingField { .. } => RejectCode::MissingField,
            Self::WrongType { .. } => RejectCode::WrongType,
            Self::BadValue { .. } => RejectCode::BadValue,
            Self::UnknownField { .. } => RejectCode::UnknownField,
            Self::BadTime { .. } => RejectCode::BadTime,
            Self::TimeOutOfRange { .. } => RejectCode::TimeOutOfRange,
            Self::FutureTime { .. } => RejectCode::FutureTime,
            Self::Inconsistent { .. } => RejectCode::Inconsistent,
            Self::KeyMismatch { .. } => RejectCode::KeyMismatch,
            Self::Invalid { .. } => RejectCode::Invalid,
        }
    }

    /// A time `what` (e.g. "raised time") lies beyond `now + allowance`. The parsers have no
    /// clock, so this check is the caller's (see `alarm::check_not_in_future`).
    pub fn future_time(
        what: &str,
        time: DateTime<Utc>,
        now: DateTime<Utc>,
        allowance: TimeDelta,
    ) -> Self {
        Self::FutureTime {
            what: what.to_string(),
            time: fmt_time(time),
            allowance: fmt_duration(allowance),
            now: fmt_time(now),
        }
    }
}

/// Where a rejected message came from: enough to find it again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// A Kafka record.
    Kafka {
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// A line of a replay input file (1-based; one message per line).
    File { file: String, line: u64 },
}

/// One rejected message, as written to `alarms.rejected` (JSON, snake_case fields; schema in
/// `topics/schemas/rejection.schema.json`).
///
/// The original is kept as text when it is valid UTF-8 (`original`), else base64
/// (`original_base64`); exactly one of the two is present unless the message had no value
/// at all (a Kafka tombstone). For a VES `eventList` batch, `original` is the whole batch
/// and `batch_index` says which element was rejected; the good elements were processed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    /// What is wrong, for a person.
    pub reason: String,
    /// What is wrong, for a machine.
    pub reason_code: RejectCode,
    pub source: Source,
    /// When the runtime rejected it (wall clock of the runtime, or the replay's clock).
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub rejected_at: DateTime<Utc>,
    /// Index of the rejected element inside a VES `eventList` batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_index: Option<usize>,
    /// The original message, when it is valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<String>,
    /// The original message in standard base64 (with padding), when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_base64: Option<String>,
    /// Size of the full original message in bytes (0 for a tombstone).
    pub original_size: usize,
    /// The original was cut to [`ORIGINAL_BUDGET_BYTES`].
    #[serde(default, skip_serializing_if = "is_false")]
    pub original_truncated: bool,
    /// The Kafka record key, when it had one and it is valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The Kafka record key in base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Rejection {
    /// Builds the record for `reason`. `original` is the message value (`None` for a Kafka
    /// tombstone). Never fails and never panics, whatever the bytes.
    pub fn new(
        reason: &RejectReason,
        original: Option<&[u8]>,
        source: Source,
        rejected_at: DateTime<Utc>,
    ) -> Self {
        let (text, b64, truncated) = match original {
            Some(bytes) => encode_bytes(bytes, ORIGINAL_BUDGET_BYTES),
            None => (None, None, false),
        };
        Rejection {
            reason: reason.to_string(),
            reason_code: reason.code(),
            source,
            rejected_at,
            batch_index: None,
            original: text,
            original_base64: b64,
            original_size: original.map_or(0, <[u8]>::len),
            original_truncated: truncated,
            key: None,
            key_base64: None,
        }
    }

    /// Marks the rejection as concerning element `index` of a VES `eventList` batch.
    pub fn with_batch_index(mut self, index: usize) -> Self {
        self.batch_index = Some(index);
        self
    }

    /// Records the Kafka key (as text when UTF-8, else base64; keys are small, a key over
    /// the budget is cut like the original).
    pub fn with_key(mut self, key: Option<&[u8]>) -> Self {
        if let Some(k) = key {
            let (text, b64, _) = encode_bytes(k, KEY_BUDGET_BYTES);
            self.key = text;
            self.key_base64 = b64;
        }
        self
    }

    /// The original bytes back (decoded from whichever field holds them), for replay; only
    /// their first part when `original_truncated`. `None` for a tombstone or if
    /// `original_base64` is not valid base64.
    pub fn original_bytes(&self) -> Option<Vec<u8>> {
        match (&self.original, &self.original_base64) {
            (Some(text), _) => Some(text.as_bytes().to_vec()),
            (None, Some(b64)) => base64_decode(b64),
            (None, None) => None,
        }
    }
}

/// Text if UTF-8, else base64; either cut to at most `budget` bytes of JSON output.
fn encode_bytes(bytes: &[u8], budget: usize) -> (Option<String>, Option<String>, bool) {
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            let (kept, truncated) = cut_text_to_json_budget(text, budget);
            (Some(kept.to_string()), None, truncated)
        }
        Err(_) => {
            let keep = (budget / 4) * 3;
            let truncated = bytes.len() > keep;
            let slice = bytes.get(..keep).unwrap_or(bytes);
            (None, Some(base64_encode(slice)), truncated)
        }
    }
}

/// Longest prefix of `text` (on a char boundary) whose JSON-escaped form fits in `budget`
/// bytes. Escaping matters: a control character takes 6 bytes (`\u0001`) in JSON.
fn cut_text_to_json_budget(text: &str, budget: usize) -> (&str, bool) {
    let mut used = 0usize;
    for (i, c) in text.char_indices() {
        let cost = match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0C}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if used + cost > budget {
            return (text.get(..i).unwrap_or(""), true);
        }
        used += cost;
    }
    (text, false)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4). A dozen lines do not need a dependency.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        let sextet = |shift: u32| {
            let i = ((n >> shift) & 63) as usize;
            char::from(B64.get(i).copied().unwrap_or(b'A'))
        };
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

/// Decodes standard base64 with padding; `None` if it is not.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.len() % 4 != 0 {
        return None;
    }
    let value = |c: u8| -> Option<u32> { B64.iter().position(|&b| b == c).map(|p| p as u32) };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let last = bytes.len() / 4;
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let [c0, c1, c2, c3] = <[u8; 4]>::try_from(chunk).ok()?;
        let is_last = i + 1 == last;
        let pad = match (c2, c3) {
            (b'=', b'=') if is_last => 2,
            (_, b'=') if is_last => 1,
            _ => 0,
        };
        let n = (value(c0)? << 18)
            | (value(c1)? << 12)
            | (if pad >= 2 { 0 } else { value(c2)? << 6 })
            | (if pad >= 1 { 0 } else { value(c3)? });
        out.push((n >> 16) as u8);
        if pad < 2 {
            out.push((n >> 8) as u8);
        }
        if pad < 1 {
            out.push(n as u8);
        }
    }
    Some(out)
}

/// RFC 3339 in UTC with `Z`, as every time in a reason is shown.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A duration for a person: "90 s", "5 min", "2 h", "1 h 30 min".
pub fn fmt_duration(d: TimeDelta) -> String {
    let secs = d.num_seconds();
    let (sign, secs) = if secs < 0 {
        ("-", secs.unsigned_abs())
    } else {
        ("", secs.unsigned_abs())
    };
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut parts = Vec::new();
    if h > 0 {
        parts.push(format!("{h} h"));
    }
    if m > 0 {
        parts.push(format!("{m} min"));
    }
    if s > 0 || parts.is_empty() {
        parts.push(format!("{s} s"));
    }
    format!("{sign}{}", parts.join(" "))
}

/// JSON reading helpers shared by the parsers of the edge. Every accessor knows the path of
/// the object it reads from, so every reason names the field from the message root.
pub(crate) mod json {
    use chrono::{DateTime, Datelike, Utc};
    use serde_json::{Map, Value};

    use super::{fmt_time, RejectReason, MAX_YEAR, MIN_YEAR};

    /// Longest value quoted in a reason, in characters.
    const SHOW_CHARS: usize = 60;

    /// Checks the size limit, then parses JSON. A leading UTF-8 byte-order mark is skipped
    /// (some Windows-born producers write one; it is not content).
    pub(crate) fn parse(bytes: &[u8], limit: usize) -> Result<Value, RejectReason> {
        if bytes.len() > limit {
            return Err(RejectReason::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(RejectReason::NotJson {
                detail: "the message is empty".into(),
            });
        }
        serde_json::from_slice(body).map_err(|e| RejectReason::NotJson {
            detail: e.to_string(),
        })
    }

    /// A string quoted for a reason, cut to a readable length.
    pub(crate) fn show(s: &str) -> String {
        let mut chars = s.chars();
        let head: String = chars.by_ref().take(SHOW_CHARS).collect();
        if chars.next().is_some() {
            format!("{head:?}…")
        } else {
            format!("{head:?}")
        }
    }

    /// A string cut to a readable length, unquoted (for field names).
    pub(crate) fn cut(s: &str) -> String {
        let mut chars = s.chars();
        let head: String = chars.by_ref().take(SHOW_CHARS).collect();
        if chars.next().is_some() {
            format!("{head}…")
        } else {
            head
        }
    }

    /// A JSON value described for a reason: `"huge"`, `number 5`, `an array`, `null`.
    pub(crate) fn describe(v: &Value) -> String {
        match v {
            Value::Null => "null".into(),
            Value::Bool(b) => format!("boolean {b}"),
            Value::Number(n) => format!("number {n}"),
            Value::String(s) => show(s),
            Value::Array(a) => format!("an array of {} elements", a.len()),
            Value::Object(_) => "an object".into(),
        }
    }

    /// `parent.key`, or `key` at the root.
    pub(crate) fn join(parent: &str, key: &str) -> String {
        if parent.is_empty() {
            key.to_string()
        } else {
            format!("{parent}.{key}")
        }
    }

    /// `parent[index]`.
    pub(crate) fn index(parent: &str, i: usize) -> String {
        format!("{parent}[{i}]")
    }

    /// Accepts only years [`MIN_YEAR`]..=[`MAX_YEAR`].
    pub(crate) fn check_year(field: &str, t: DateTime<Utc>) -> Result<DateTime<Utc>, RejectReason> {
        if (MIN_YEAR..=MAX_YEAR).contains(&t.year()) {
            Ok(t)
        } else {
            Err(RejectReason::TimeOutOfRange {
                field: field.to_string(),
                time: fmt_time(t),
            })
        }
    }

    /// An RFC 3339 date-time string (any offset; normalised to UTC) within the accepted years.
    pub(crate) fn parse_time(field: &str, s: &str) -> Result<DateTime<Utc>, RejectReason> {
        let t = DateTime::parse_from_rfc3339(s.trim())
            .map_err(|_| RejectReason::BadTime {
                field: field.to_string(),
                value: show(s),
            })?
            .with_timezone(&Utc);
        check_year(field, t)
    }

    /// A JSON object together with its path from the message root.
    #[derive(Debug, Clone)]
    pub(crate) struct Obj<'a> {
        pub(crate) path: String,
        pub(crate) map: &'a Map<String, Value>,
    }

    impl<'a> Obj<'a> {
        /// `v` as an object at `path`; a wrong type names the path.
        pub(crate) fn at(path: String, v: &'a Value) -> Result<Self, RejectReason> {
            match v {
                Value::Object(map) => Ok(Obj { path, map }),
                other => Err(RejectReason::WrongType {
                    field: if path.is_empty() {
                        "(message root)".into()
                    } else {
                        path
                    },
                    expected: "an object",
                    got: describe(other),
                }),
            }
        }

        pub(crate) fn field(&self, key: &str) -> String {
            join(&self.path, key)
        }

        /// The value of `key`; `null` counts as absent (producers write either).
        pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
            self.map.get(key).filter(|v| !v.is_null())
        }

        pub(crate) fn has(&self, key: &str) -> bool {
            self.get(key).is_some()
        }

        pub(crate) fn req(&self, key: &str) -> Result<&'a Value, RejectReason> {
            self.get(key).ok_or_else(|| RejectReason::MissingField {
                field: self.field(key),
            })
        }

        fn wrong(&self, key: &str, expected: &'static str, got: &Value) -> RejectReason {
            RejectReason::WrongType {
                field: self.field(key),
                expected,
                got: describe(got),
            }
        }

        /// A string that is not blank.
        pub(crate) fn req_str(&self, key: &str) -> Result<&'a str, RejectReason> {
            match self.req(key)? {
                Value::String(s) if !s.trim().is_empty() => Ok(s),
                Value::String(s) => Err(RejectReason::BadValue {
                    field: self.field(key),
                    expected: "a non-empty string".into(),
                    got: show(s),
                }),
                other => Err(self.wrong(key, "a string", other)),
            }
        }

        /// A string that may be empty.
        pub(crate) fn req_string_any(&self, key: &str) -> Result<&'a str, RejectReason> {
            match self.req(key)? {
                Value::String(s) => Ok(s),
                other => Err(self.wrong(key, "a string", other)),
            }
        }

        /// An optional string; absent, `null` and blank all read as `None`.
        pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&'a str>, RejectReason> {
            match self.get(key) {
                None => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(other) => Err(self.wrong(key, "a string", other)),
            }
        }

        /// A non-blank string, or a number rendered as text (3GPP lets some codes be either).
        pub(crate) fn req_str_or_number(&self, key: &str) -> Result<String, RejectReason> {
            match self.req(key)? {
                Value::Number(n) => Ok(n.to_string()),
                Value::String(_) => self.req_str(key).map(str::to_string),
                other => Err(self.wrong(key, "a string or a number", other)),
            }
        }

        pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>, RejectReason> {
            match self.get(key) {
                None => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(other) => Err(self.wrong(key, "a boolean", other)),
            }
        }

        pub(crate) fn req_obj(&self, key: &str) -> Result<Obj<'a>, RejectReason> {
            Obj::at(self.field(key), self.req(key)?)
        }

        pub(crate) fn req_array(&self, key: &str) -> Result<&'a [Value], RejectReason> {
            match self.req(key)? {
                Value::Array(a) => Ok(a),
                other => Err(self.wrong(key, "an array", other)),
            }
        }

        pub(crate) fn opt_array(&self, key: &str) -> Result<&'a [Value], RejectReason> {
            match self.get(key) {
                None => Ok(&[]),
                Some(Value::Array(a)) => Ok(a),
                Some(other) => Err(self.wrong(key, "an array", other)),
            }
        }

        /// One of `choices`, compared without regard to letter case (producers disagree on
        /// "CRITICAL" vs "critical"); the reason lists the canonical spellings.
        pub(crate) fn req_enum<T: Copy>(
            &self,
            key: &str,
            choices: &[(&str, T)],
        ) -> Result<T, RejectReason> {
            let s = match self.req(key)? {
                Value::String(s) => s,
                other => return Err(self.wrong(key, "a string", other)),
            };
            choices
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(s.trim()))
                .map(|(_, v)| *v)
                .ok_or_else(|| RejectReason::BadValue {
                    field: self.field(key),
                    expected: format!(
                        "one of {}",
                        choices
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    got: show(s),
                })
        }

        /// A required RFC 3339 time.
        pub(crate) fn req_time(&self, key: &str) -> Result<DateTime<Utc>, RejectReason> {
            match self.req(key)? {
                Value::String(s) => parse_time(&self.field(key), s),
                other => Err(self.wrong(key, "an RFC 3339 time string", other)),
            }
        }

        /// An optional RFC 3339 time (absent, `null` or `""` read as `None`).
        pub(crate) fn opt_time(&self, key: &str) -> Result<Option<DateTime<Utc>>, RejectReason> {
            match self.get(key) {
                None => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => parse_time(&self.field(key), s).map(Some),
                Some(other) => Err(self.wrong(key, "an RFC 3339 time string", other)),
            }
        }

        /// A required time in microseconds since the Unix epoch (VES `*EpochMicrosec`).
        /// A value that lands outside the accepted years gets a hint when it would fit as
        /// seconds or milliseconds, the usual producer mistake.
        pub(crate) fn req_epoch_micros(&self, key: &str) -> Result<DateTime<Utc>, RejectReason> {
            let field = self.field(key);
            let v = self.req(key)?;
            let micros: Option<i64> = match v {
                Value::Number(n) => n.as_i64().or_else(|| {
                    n.as_f64()
                        .filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e18)
                        .map(|f| f as i64)
                }),
                other => return Err(self.wrong(key, "a number of microseconds", other)),
            };
            let in_range = micros
                .and_then(DateTime::from_timestamp_micros)
                .and_then(|t| check_year(&field, t).ok());
            match in_range {
                Some(t) => Ok(t),
                None => {
                    let raw = describe(v);
                    let fits = |scale: i64| {
                        micros
                            .and_then(|m| m.checked_mul(scale))
                            .and_then(DateTime::from_timestamp_micros)
                            .is_some_and(|t| check_year(&field, t).is_ok())
                    };
                    let hint = if fits(1_000_000) {
                        " (it looks like seconds; VES wants microseconds)"
                    } else if fits(1_000) {
                        " (it looks like milliseconds; VES wants microseconds)"
                    } else {
                        ""
                    };
                    let as_time = micros
                        .and_then(DateTime::from_timestamp_micros)
                        .map(|t| format!(" = {}", fmt_time(t)))
                        .unwrap_or_default();
                    Err(RejectReason::TimeOutOfRange {
                        field,
                        time: format!("{raw} µs since 1970{as_time}{hint}"),
                    })
                }
            }
        }

        /// Rejects any key not in `allowed`: a misspelt optional field would otherwise be
        /// ignored without anyone noticing.
        pub(crate) fn deny_unknown(&self, allowed: &[&str]) -> Result<(), RejectReason> {
            match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
                None => Ok(()),
                Some(k) => Err(RejectReason::UnknownField {
                    field: join(&self.path, &cut(k)),
                    allowed: allowed.join(", "),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::json::{parse, Obj};
    use super::*;
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn kafka() -> Source {
        Source::Kafka {
            topic: "nms.alarms".into(),
            partition: 3,
            offset: 42,
        }
    }

    #[test]
    fn too_large_is_rejected_before_parsing() {
        let big = vec![b'x'; 5 * 1024 * 1024];
        let err = parse(&big, DEFAULT_MAX_MESSAGE_BYTES).unwrap_err();
        assert_eq!(err.code(), RejectCode::TooLarge);
        assert_eq!(
            err.to_string(),
            "message is 5242880 bytes, over the 1048576-byte limit"
        );
    }

    #[test]
    fn not_json_says_where() {
        let err = parse(b"huge alarm", 100).unwrap_err();
        assert_eq!(err.code(), RejectCode::NotJson);
        assert_eq!(
            err.to_string(),
            "not JSON: expected value at line 1 column 1"
        );
        let err = parse(b"  \n", 100).unwrap_err();
        assert_eq!(err.to_string(), "not JSON: the message is empty");
        // A byte-order mark is not content.
        assert!(parse(b"\xEF\xBB\xBF{}", 100).is_ok());
    }

    #[test]
    fn enum_reason_lists_the_choices() {
        let v: serde_json::Value = serde_json::json!({"perceivedSeverity": "huge"});
        let o = Obj::at(String::new(), &v).unwrap();
        let err = o
            .req_enum("perceivedSeverity", &[("critical", 1), ("major", 2)])
            .unwrap_err();
        assert_eq!(err.code(), RejectCode::BadValue);
        assert_eq!(
            err.to_string(),
            "field `perceivedSeverity`: expected one of critical, major, got \"huge\""
        );
    }

    #[test]
    fn time_reasons() {
        let v = serde_json::json!({"eventTime": "xyz", "old": "1970-01-01T00:00:00Z",
            "us": 1_413_378_172, "ok": 1_413_378_172_000_000_i64});
        let o = Obj::at(String::new(), &v).unwrap();
        let err = o.req_time("eventTime").unwrap_err();
        assert_eq!(err.code(), RejectCode::BadTime);
        assert!(err
            .to_string()
            .starts_with("field `eventTime`: \"xyz\" is not an RFC 3339 time"));
        let err = o.req_time("old").unwrap_err();
        assert_eq!(err.code(), RejectCode::TimeOutOfRange);
        assert!(err.to_string().contains("2000 to 2100"), "{err}");
        let err = o.req_epoch_micros("us").unwrap_err();
        assert!(err.to_string().contains("looks like seconds"), "{err}");
        assert_eq!(
            o.req_epoch_micros("ok").unwrap(),
            at("2014-10-15T13:02:52Z")
        );
    }

    #[test]
    fn future_time_reason() {
        let r = RejectReason::future_time(
            "raised time",
            at("2999-01-01T00:00:00Z"),
            at("2024-05-01T08:00:00Z"),
            TimeDelta::minutes(5),
        );
        assert_eq!(r.code(), RejectCode::FutureTime);
        assert_eq!(
            r.to_string(),
            "raised time 2999-01-01T00:00:00Z is more than 5 min in the future (now 2024-05-01T08:00:00Z)"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_duration(TimeDelta::seconds(90)), "1 min 30 s");
        assert_eq!(fmt_duration(TimeDelta::hours(2)), "2 h");
        assert_eq!(fmt_duration(TimeDelta::zero()), "0 s");
        assert_eq!(fmt_duration(TimeDelta::minutes(-5)), "-5 min");
    }

    #[test]
    fn base64_known_vectors_round_trip() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), plain.as_bytes());
        }
        assert_eq!(base64_decode("Zm9"), None);
        assert_eq!(base64_decode("Zg==Zg=="), None);
        assert_eq!(base64_decode("Z!=="), None);
    }

    #[test]
    fn rejection_keeps_text_or_base64_and_serializes() {
        let reason = RejectReason::NotJson { detail: "x".into() };
        let at = at("2024-05-01T08:00:00Z");
        let r = Rejection::new(&reason, Some(b"{bad"), kafka(), at).with_key(Some(b"NE1"));
        assert_eq!(r.original.as_deref(), Some("{bad"));
        assert_eq!(r.original_base64, None);
        assert_eq!(r.reason_code, RejectCode::NotJson);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["reason_code"], "not_json");
        assert_eq!(json["source"]["kind"], "kafka");
        assert_eq!(json["source"]["offset"], 42);
        assert_eq!(json["key"], "NE1");
        assert_eq!(json["rejected_at"], "2024-05-01T08:00:00Z");
        let back: Rejection = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);

        let binary = [0xff, 0xfe, 0x00, 0x01];
        let src = Source::File {
            file: "replay/alarms.jsonl".into(),
            line: 7,
        };
        let r = Rejection::new(&reason, Some(&binary), src, at).with_batch_index(2);
        assert_eq!(r.original, None);
        assert_eq!(r.original_base64.as_deref(), Some("//4AAQ=="));
        assert_eq!(r.original_bytes().unwrap(), binary);
        assert_eq!(r.batch_index, Some(2));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["source"],
            serde_json::json!({"kind": "file", "file": "replay/alarms.jsonl", "line": 7})
        );

        let tomb = Rejection::new(&reason, None, kafka(), at);
        assert_eq!(
            (tomb.original.clone(), tomb.original_base64.clone()),
            (None, None)
        );
        assert_eq!(tomb.original_size, 0);
    }

    #[test]
    fn huge_originals_are_cut_to_the_budget() {
        let big = vec![b'a'; 5 * 1024 * 1024];
        let reason = RejectReason::TooLarge {
            size: big.len(),
            limit: DEFAULT_MAX_MESSAGE_BYTES,
        };
        let r = Rejection::new(&reason, Some(&big), kafka(), at("2024-05-01T08:00:00Z"));
        assert!(r.original_truncated);
        assert_eq!(r.original_size, big.len());
        assert!(serde_json::to_vec(&r).unwrap().len() < ORIGINAL_BUDGET_BYTES + 1024);

        // Control characters cost 6 bytes each once escaped: the budget counts that.
        let ctl = vec![0x01u8; ORIGINAL_BUDGET_BYTES];
        let r = Rejection::new(&reason, Some(&ctl), kafka(), at("2024-05-01T08:00:00Z"));
        assert!(r.original_truncated);
        assert!(serde_json::to_vec(&r).unwrap().len() < ORIGINAL_BUDGET_BYTES + 1024);

        let bin = vec![0xffu8; 2 * 1024 * 1024];
        let r = Rejection::new(&reason, Some(&bin), kafka(), at("2024-05-01T08:00:00Z"));
        assert!(r.original_truncated);
        assert!(r.original_base64.unwrap().len() <= ORIGINAL_BUDGET_BYTES);
    }

    #[test]
    fn codes_are_stable_names() {
        for c in RejectCode::ALL {
            let json = serde_json::to_value(c).unwrap();
            assert_eq!(json, c.as_str());
        }
    }

    proptest! {
        #[test]
        fn rejection_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)),
        ) {
            let reason = RejectReason::NotJson { detail: "x".into() };
            let r = Rejection::new(&reason, Some(&bytes), kafka(), at("2024-05-01T08:00:00Z"))
                .with_key(key.as_deref());
            prop_assert_eq!(r.original_bytes().unwrap(), bytes);
            let json = serde_json::to_vec(&r).unwrap();
            let back: Rejection = serde_json::from_slice(&json).unwrap();
            prop_assert_eq!(back, r);
        }

        #[test]
        fn json_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes, 128);
        }
    }
}
