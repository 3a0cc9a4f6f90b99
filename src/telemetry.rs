//! The service's Prometheus metrics: their names, help texts and the gauges computed from
//! the views at scrape time. Recorded through the `metrics` facade; the exporter is
//! installed by `linewatch run` (see [`crate::http`]).
//!
//! Labels take values from small fixed sets only (topic, stage, outcome, rejection
//! reason code, ticket event kind, assurance level, ticket status): nothing grows with the
//! number of circuits.

use metrics::{describe_counter, describe_gauge, describe_histogram, gauge, Unit};

use crate::views::Counts;

pub const MESSAGES_IN: &str = "linewatch_messages_in_total";
pub const MESSAGES_OUT: &str = "linewatch_messages_out_total";
pub const REJECTIONS: &str = "linewatch_rejections_total";
pub const NON_FAULT_EVENTS: &str = "linewatch_non_fault_events_total";
pub const TICKET_EVENTS: &str = "linewatch_ticket_events_total";
pub const TRANSACTIONS: &str = "linewatch_transactions_total";
pub const RESTORE_RECORDS: &str = "linewatch_restore_records_total";
pub const STAGE_RESTARTS: &str = "linewatch_stage_restarts_total";
pub const STAGE_STALLED: &str = "linewatch_stage_stalled";
pub const OVERSIZED_RECORDS: &str = "linewatch_oversized_records_total";
pub const REPARTITIONED: &str = "linewatch_repartitioned_total";
pub const TRANSACTION_DURATION: &str = "linewatch_transaction_duration_seconds";
pub const PROCESSING_LATENCY: &str = "linewatch_processing_latency_seconds";
pub const CONSUMER_LAG: &str = "linewatch_consumer_lag_records";
pub const RESTORE_PENDING: &str = "linewatch_restore_partitions_pending";
pub const OPEN_TICKETS: &str = "linewatch_open_tickets";
pub const TICKETS_AT_RISK: &str = "linewatch_tickets_at_risk";
pub const TICKETS_BREACHED: &str = "linewatch_tickets_breached";
pub const CIRCUITS_DOWN: &str = "linewatch_circuits_down";
pub const CIRCUITS_AT_RISK: &str = "linewatch_circuits_at_risk";
pub const CIRCUITS_BREACHED: &str = "linewatch_circuits_breached";
pub const OPEN_INCIDENTS: &str = "linewatch_open_incidents";
pub const READY: &str = "linewatch_ready";
pub const INVENTORY_CIRCUITS: &str = "linewatch_inventory_circuits";

/// Every metric the service exports (histograms without their `_bucket`, `_sum` and
/// `_count` suffixes).
pub const METRIC_NAMES: &[&str] = &[
    MESSAGES_IN,
    MESSAGES_OUT,
    REJECTIONS,
    NON_FAULT_EVENTS,
    TICKET_EVENTS,
    TRANSACTIONS,
    RESTORE_RECORDS,
    STAGE_RESTARTS,
    STAGE_STALLED,
    OVERSIZED_RECORDS,
    REPARTITIONED,
    TRANSACTION_DURATION,
    PROCESSING_LATENCY,
    CONSUMER_LAG,
    RESTORE_PENDING,
    OPEN_TICKETS,
    TICKETS_AT_RISK,
    TICKETS_BREACHED,
    CIRCUITS_DOWN,
    CIRCUITS_AT_RISK,
    CIRCUITS_BREACHED,
    OPEN_INCIDENTS,
    READY,
    INVENTORY_CIRCUITS,
];

/// Bucket bounds of the two histograms, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Register the help texts (once, after the recorder is installed).
pub fn describe() {
    describe_counter!(
        MESSAGES_IN,
        "Records consumed from each input topic in committed transactions"
    );
    describe_counter!(
        MESSAGES_OUT,
        "Records written to each output topic in committed transactions"
    );
    describe_counter!(
        REJECTIONS,
        "Inputs sent to the rejection topic, by reason code"
    );
    describe_counter!(
        NON_FAULT_EVENTS,
        "VES events on the alarm topic that are not about faults (heartbeats, measurements, ...), dropped unread, by VES domain; counted when read, so a stage restarted from its last commit counts again what it reads again"
    );
    describe_counter!(
        TICKET_EVENTS,
        "Committed ticket events, by SLA event kind (opened, restored, escalated, ...)"
    );
    describe_counter!(
        TRANSACTIONS,
        "Kafka transactions of each stage, by outcome (committed, aborted)"
    );
    describe_counter!(
        RESTORE_RECORDS,
        "Changelog records read to restore state on assignment"
    );
    describe_counter!(
        STAGE_RESTARTS,
        "Stage restarts from the last commit (after an abort or a fence)"
    );
    describe_gauge!(
        STAGE_STALLED,
        "1 while a stage keeps failing without committing anything between its restarts"
    );
    describe_counter!(
        OVERSIZED_RECORDS,
        "Output records over the producer's size limit, left out of their transaction (a bug: every output is bounded at intake)"
    );
    describe_counter!(
        REPARTITIONED,
        "Input records read on a partition other than their key's (by content: the alarmed object, the command's circuit) and sent on to it"
    );
    describe_histogram!(
        TRANSACTION_DURATION,
        Unit::Seconds,
        "Time from begin to commit of each transaction"
    );
    describe_histogram!(
        PROCESSING_LATENCY,
        Unit::Seconds,
        "Time from an input record's Kafka timestamp to the commit of the transaction that consumed it"
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Records behind the end of each input topic, summed over the owned partitions"
    );
    describe_gauge!(
        RESTORE_PENDING,
        "Assigned partitions whose state is still being restored"
    );
    describe_gauge!(
        OPEN_TICKETS,
        "Open tickets of the owned partitions, by assurance level and status"
    );
    describe_gauge!(
        TICKETS_AT_RISK,
        "Open tickets past their at-risk point and not yet breached"
    );
    describe_gauge!(
        TICKETS_BREACHED,
        "Open tickets past their restoration deadline"
    );
    describe_gauge!(CIRCUITS_DOWN, "Circuits of the owned partitions now down");
    describe_gauge!(
        CIRCUITS_AT_RISK,
        "Circuits at risk of an annual limit (year figures)"
    );
    describe_gauge!(
        CIRCUITS_BREACHED,
        "Circuits past an annual limit (year figures)"
    );
    describe_gauge!(OPEN_INCIDENTS, "Open incidents of the owned partitions");
    describe_gauge!(
        READY,
        "1 when the inventory replica and every assigned partition's state are caught up"
    );
    describe_gauge!(
        INVENTORY_CIRCUITS,
        "Circuits in this instance's inventory replica"
    );
}

/// The VES 7.2 domains, the label values of [`NON_FAULT_EVENTS`]; any other domain is
/// counted as `other` (the label set stays fixed whatever producers send).
pub const VES_DOMAINS: &[&str] = &[
    "fault",
    "heartbeat",
    "measurement",
    "mobileFlow",
    "notification",
    "other",
    "perf3gpp",
    "pnfRegistration",
    "sipSignaling",
    "stateChange",
    "stndDefined",
    "syslog",
    "thresholdCrossingAlert",
    "voiceQuality",
];

/// A non-fault VES event was dropped at intake: a debug line and the counter, labelled
/// with its domain if it is one of [`VES_DOMAINS`], else `other`.
pub fn non_fault_event_dropped(domain: &str) {
    let label = VES_DOMAINS
        .iter()
        .find(|d| **d == domain)
        .copied()
        .unwrap_or("other");
    tracing::debug!(domain = label, "non-fault VES event dropped");
    metrics::counter!(NON_FAULT_EVENTS, "domain" => label).increment(1);
}

/// Set the state gauges from the views (called at each scrape): every combination of
/// assurance level and open status once, zero where there are none.
pub fn set_state_gauges(counts: &Counts) {
    use crate::levels::AssuranceLevel;
    use crate::ticket::TicketStatus;
    for level in AssuranceLevel::ALL {
        for status in [
            TicketStatus::Acknowledged,
            TicketStatus::InProgress,
            TicketStatus::Resolved,
        ] {
            let n = counts
                .open_tickets
                .iter()
                .find(|(key, _)| *key == (level, status))
                .map_or(0, |(_, n)| *n);
            gauge!(OPEN_TICKETS, "assurance_level" => level.as_str(), "status" => serde_name(&status))
                .set(n as f64);
        }
    }
    gauge!(TICKETS_AT_RISK).set(counts.tickets_at_risk as f64);
    gauge!(TICKETS_BREACHED).set(counts.tickets_breached as f64);
    gauge!(CIRCUITS_DOWN).set(counts.circuits_down as f64);
    gauge!(CIRCUITS_AT_RISK).set(counts.circuits_at_risk as f64);
    gauge!(CIRCUITS_BREACHED).set(counts.circuits_breached as f64);
    gauge!(OPEN_INCIDENTS).set(counts.open_incidents as f64);
}

/// The wire name of a ticket status or SLA event (the `kind` of a tagged one), used as a
/// label value.
pub fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(o)) => o
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("other")
            .to_string(),
        _ => "other".to_string(),
    }
}
