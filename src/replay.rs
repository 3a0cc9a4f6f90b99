//! `linewatch replay`: the engine over files, for checking figures by hand and for
//! comparing with the Kafka runtime. Same input, byte-identical output.
//!
//! Input folder (JSON Lines, one message per line, the formats of the topics; a missing
//! file is empty):
//! - `inventory.jsonl`: circuits (a `{"circuitId": .., "deleted": true}` line deletes one),
//!   applied first, as the inventory at the start of the replay;
//! - `alarms.jsonl`: TMF642 or VES alarms, ordered by event time;
//! - `maintenance.jsonl`: maintenance windows, at the time their notice was given;
//! - `commands.jsonl`: ticket commands, at their `at` time.
//!
//! Everything after the inventory is merged in event-time order (ties: windows before
//! commands before alarms, then by line), and the engine's clock follows the event time,
//! never moving back. After the last input the clock runs on to `until`, so that timers
//! (hold-down ends, post-restore feedback) fire. Output folder: `tickets.jsonl`,
//! `reminders.jsonl`, `circuits-status.jsonl`, `warnings.jsonl`, `kpi.jsonl`,
//! `incidents.jsonl` (one per output topic, same formats) and `rejections.jsonl`; with a
//! span asked for ([`ReplayOptions::figures_over`]), `figures-span.jsonl`: each circuit's figures over
//! it.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};

use crate::engine::{Engine, Input, Output, Sink};
use crate::intake::{decode_with, IntakeOptions, Stream};
use crate::policy::Policy;
use crate::rejection::{Rejection, Source};
use crate::sla::Span;
use crate::tmf621::Tmf621Version;

/// What a replay did, for the summary line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub inputs: u64,
    pub rejected: u64,
    /// Non-fault VES events dropped (heartbeats, measurements, ...; see
    /// [`crate::intake::NonFaultEvents`]).
    pub non_fault_dropped: u64,
    pub ticket_events: u64,
    pub tickets_opened: u64,
    /// SLA reminders (`sla.reminders`).
    pub reminders: u64,
    pub status_events: u64,
    pub warnings: u64,
    pub figures: u64,
    pub incident_events: u64,
    pub first_event: Option<DateTime<Utc>>,
    pub last_event: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: cannot write output: {error}")]
    Json {
        path: PathBuf,
        error: serde_json::Error,
    },
}

const FILES: [(&str, Stream); 4] = [
    ("inventory.jsonl", Stream::Inventory),
    ("alarms.jsonl", Stream::Alarms),
    ("maintenance.jsonl", Stream::Maintenance),
    ("commands.jsonl", Stream::Commands),
];

struct Record {
    time: Option<DateTime<Utc>>,
    stream: Stream,
    line: u64,
    file: &'static str,
    /// The original line, kept where a rejection is likely (unreadable lines, commands,
    /// windows); for the rest it is read again from the file in the rare case it is needed,
    /// so that a million alarms are not held twice in memory.
    raw: Option<Vec<u8>>,
    parsed: Result<Input, crate::rejection::RejectReason>,
    batch_index: Option<usize>,
}

/// Replay the input folder into the output folder. `until`: run the clock to this time
/// after the last input (default: one day after the last input).
///
/// # Errors
/// A [`ReplayError`] when a file cannot be read or written; bad lines are not errors, they
/// become rejections.
pub fn replay(
    input: &Path,
    output: &Path,
    policy: Policy,
    until: Option<DateTime<Utc>>,
) -> Result<ReplaySummary, ReplayError> {
    let options = ReplayOptions {
        until,
        ..ReplayOptions::default()
    };
    replay_with(input, output, policy, &options)
}

/// How a replay reads and writes, beyond its folders and policy; the default is what
/// [`replay`] does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Run the clock to this time after the last input (default: one day after it).
    pub until: Option<DateTime<Utc>>,
    /// The operator's intake options (how alarms are read, whether non-fault VES events
    /// are dropped or rejected), as `linewatch run` takes them.
    pub intake: IntakeOptions,
    /// The TMF621 form of the ticket events, as `linewatch run --tmf621-version` writes
    /// them.
    pub tmf621: Tmf621Version,
    /// Also write each circuit's figures over this span (any span: a day, a week, an
    /// hour; see [`crate::sla::figures_over`]) as of the end of the replay, one line per
    /// circuit in circuit-id order, in [`SPAN_FIGURES_FILE`]: every circuit of the
    /// inventory, and those no longer in it that the replay saw fail.
    pub figures_over: Option<Span>,
}

/// [`replay`] with every option.
///
/// # Errors
/// As [`replay`].
pub fn replay_with(
    input: &Path,
    output: &Path,
    policy: Policy,
    options: &ReplayOptions,
) -> Result<ReplaySummary, ReplayError> {
    let ReplayOptions {
        until,
        intake,
        tmf621,
        figures_over,
    } = *options;
    let options = &intake;
    let mut records = Vec::new();
    let mut non_fault_dropped = 0;
    for (name, stream) in FILES {
        let path = input.join(name);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(ReplayError::Io { path, error }),
        };
        for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
            let line = line.map_err(|error| ReplayError::Io {
                path: path.clone(),
                error,
            })?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let decoded = decode_with(stream, None, Some(&line), options);
            non_fault_dropped += decoded.dropped as u64;
            let batch = decoded.elements > 1;
            let results = decoded.results;
            // A bad element of a batch is rejected with that element, not the whole line.
            let elements = (batch && results.iter().any(|(_, r)| r.is_err()))
                .then(|| crate::rejection::batch_elements(&line))
                .flatten()
                .unwrap_or_default();
            for (i, parsed) in results {
                let keep =
                    parsed.is_err() || matches!(stream, Stream::Commands | Stream::Maintenance);
                let raw = match elements.get(i) {
                    Some(element) if parsed.is_err() => element.get().as_bytes().to_vec(),
                    _ => line.clone(),
                };
                records.push(Record {
                    time: parsed.as_ref().ok().and_then(event_time),
                    stream,
                    line: n as u64 + 1,
                    file: name,
                    raw: keep.then_some(raw),
                    parsed,
                    batch_index: batch.then_some(i),
                });
            }
        }
    }
    // Inventory first; then event-time order. Unreadable lines have no event time: they
    // sort first and are rejected at the replay's start.
    records.sort_by_key(|r| {
        (
            r.stream != Stream::Inventory,
            r.time.unwrap_or(DateTime::<Utc>::MIN_UTC),
            r.stream,
            r.line,
        )
    });
    let start = records.iter().filter_map(|r| r.time).min();

    std::fs::create_dir_all(output).map_err(|error| ReplayError::Io {
        path: output.into(),
        error,
    })?;
    let mut sinks = Sinks::create(output, tmf621)?;
    let mut rejections = Writer::create(&output.join("rejections.jsonl"))?;

    let mut engine = Engine::new(policy).by_instant();
    let mut summary = ReplaySummary {
        first_event: start,
        non_fault_dropped,
        ..Default::default()
    };
    let mut now = start.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    for rec in records {
        if let Some(t) = rec.time {
            now = now.max(t);
        }
        summary.inputs += 1;
        let mut outputs = engine.advance(now);
        let result = rec.parsed.and_then(|input| engine.handle(input, now));
        match result {
            Ok(more) => outputs.extend(more),
            Err(reason) => {
                let raw = match rec.raw {
                    Some(raw) => raw,
                    None => read_line(&input.join(rec.file), rec.line)?,
                };
                let source = Source::File {
                    file: rec.file.to_string(),
                    line: rec.line,
                };
                let mut rej = Rejection::new(&reason, Some(&raw), source, now);
                if let Some(i) = rec.batch_index {
                    rej = rej.with_batch_index(i);
                }
                rejections.write(&rej)?;
                summary.rejected += 1;
            }
        }
        sinks.write(outputs, &mut summary)?;
    }
    summary.last_event = Some(now);
    let end = until
        .or_else(|| now.checked_add_signed(Duration::days(1)))
        .unwrap_or(now)
        .max(now);
    let mut outputs = engine.advance(end);
    outputs.extend(engine.finish());
    sinks.write(outputs, &mut summary)?;
    sinks.finish()?;
    rejections.finish()?;
    if let Some(span) = figures_over {
        write_span_figures(&engine, span, end, &output.join(SPAN_FIGURES_FILE))?;
    }
    Ok(summary)
}

/// The file of the figures over a span ([`ReplayOptions::figures_over`]).
pub const SPAN_FIGURES_FILE: &str = "figures-span.jsonl";

/// Each circuit's figures over `span`, as of `end`, in circuit-id order.
fn write_span_figures(
    engine: &Engine,
    span: Span,
    end: DateTime<Utc>,
    path: &Path,
) -> Result<(), ReplayError> {
    let states = engine.states();
    let mut ids: Vec<&str> = engine.network().circuit_ids().chain(states.ids()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut out = Writer::create(path)?;
    for id in ids {
        if let Some(facts) = states.facts(id, engine.network(), engine.policy(), end) {
            out.write(&facts.figures_over(span, end))?;
        }
    }
    out.finish()
}

/// Line `n` (1-based) of a file.
fn read_line(path: &Path, n: u64) -> Result<Vec<u8>, ReplayError> {
    let io = |error| ReplayError::Io {
        path: path.into(),
        error,
    };
    let file = File::open(path).map_err(io)?;
    let index = usize::try_from(n.saturating_sub(1)).unwrap_or(usize::MAX);
    match BufReader::new(file).split(b'\n').nth(index) {
        Some(line) => line.map_err(io),
        None => Ok(Vec::new()),
    }
}

fn event_time(input: &Input) -> Option<DateTime<Utc>> {
    match input {
        Input::Alarm(a) => Some(a.event_time),
        Input::Maintenance(w) => Some(w.notice_given_at),
        Input::Command(c) => Some(c.at),
        Input::Inventory(_) | Input::CancelWindow { .. } => None,
    }
}

/// The output files, one per [`Sink`].
struct Sinks {
    files: Vec<(Sink, Writer)>,
    /// The form of the ticket events.
    tmf621: Tmf621Version,
}

impl Sinks {
    fn create(dir: &Path, tmf621: Tmf621Version) -> Result<Self, ReplayError> {
        let mut files = Vec::new();
        for sink in Sink::ALL {
            files.push((sink, Writer::create(&dir.join(file_name(sink)))?));
        }
        Ok(Self { files, tmf621 })
    }

    fn write(
        &mut self,
        outputs: Vec<Output>,
        summary: &mut ReplaySummary,
    ) -> Result<(), ReplayError> {
        for o in outputs {
            match &o {
                Output::Ticket(ev) => {
                    summary.ticket_events += 1;
                    if ev.sla_event == crate::ticket::SlaEvent::Opened {
                        summary.tickets_opened += 1;
                    }
                }
                Output::Reminder(_) => summary.reminders += 1,
                Output::Line(_) => summary.status_events += 1,
                Output::Warning(_) => summary.warnings += 1,
                Output::Figures(_) => summary.figures += 1,
                Output::Incident(_) => summary.incident_events += 1,
                Output::ParentTicket(_) => summary.ticket_events += 1,
            }
            let sink = o.sink();
            if let Some((_, w)) = self.files.iter_mut().find(|(s, _)| *s == sink) {
                let bytes = o
                    .to_json_as(self.tmf621)
                    .map_err(|error| ReplayError::Json {
                        path: w.path.clone(),
                        error,
                    })?;
                w.write_raw(&bytes)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<(), ReplayError> {
        for (_, w) in self.files {
            w.finish()?;
        }
        Ok(())
    }
}

/// The replay file of each sink (named after its topic).
pub fn file_name(sink: Sink) -> &'static str {
    match sink {
        Sink::Tickets => "tickets.jsonl",
        Sink::Reminders => "reminders.jsonl",
        Sink::Status => "circuits-status.jsonl",
        Sink::Warnings => "warnings.jsonl",
        Sink::Figures => "kpi.jsonl",
        Sink::Incidents => "incidents.jsonl",
    }
}

struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
}

impl Writer {
    fn create(path: &Path) -> Result<Self, ReplayError> {
        let file = File::create(path).map_err(|error| ReplayError::Io {
            path: path.into(),
            error,
        })?;
        Ok(Self {
            path: path.into(),
            out: BufWriter::new(file),
        })
    }

    fn write<T: serde::Serialize>(&mut self, value: &T) -> Result<(), ReplayError> {
        serde_json::to_writer(&mut self.out, value).map_err(|error| ReplayError::Json {
            path: self.path.clone(),
            error,
        })?;
        self.out.write_all(b"\n").map_err(|error| ReplayError::Io {
            path: self.path.clone(),
            error,
        })
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ReplayError> {
        self.out
            .write_all(bytes)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|error| ReplayError::Io {
                path: self.path.clone(),
                error,
            })
    }

    fn finish(mut self) -> Result<(), ReplayError> {
        self.out.flush().map_err(|error| ReplayError::Io {
            path: self.path,
            error,
        })
    }
}
