//! # linewatch
//!
//! Alarm correlation and SLA tracking for enterprise dedicated lines, on Apache Kafka.
//!
//! ## Layout
//! The domain engine is pure (no Kafka, no clock, no I/O; time is passed in):
//! - [`levels`]: customer and assurance levels, scopes, severities.
//! - [`policy`] and [`calendar`]: the SLA policy file (every number of DOMAIN.md) and the
//!   working-day calendar.
//! - [`alarm`]: TMF642 and ONAP VES alarms, parsed and normalised.
//! - [`inventory`]: circuits, their routes and the network objects on them.
//! - [`maintenance`]: planned-works windows.
//! - [`rejection`]: what becomes of input that cannot be read.
//! - [`correlation`]: which circuits an alarm hits, and whether each is down.
//! - [`ticket`]: fault tickets, their SLA deadlines and TMF621 events.
//! - [`tmf621`]: the TMF621 version of the ticket events (v4.0.0, or v5.0.1 by
//!   configuration), applied when they are serialized.
//! - [`incident`] and [`parent_ticket`]: mass outages, as `incidents` records and as
//!   TMF621 parent tickets of the circuits' tickets.
//! - [`engine`]: the facade the runtimes drive: input and time in, events out.
//! - [`views`]: what the NOC sees of the committed state (circuits, open tickets, budgets,
//!   incidents), read by the query API.
//!
//! Around it: [`intake`] (one decoder per input stream), [`replay`] (the engine over
//! files), [`simulate`] (a seeded network and its alarm traffic), [`config`] (the `run`
//! settings). The Kafka side lives in [`kafka`] and never leaks into the engine.

pub mod alarm;
pub mod calendar;
pub mod changes;
pub mod config;
pub mod correlation;
pub mod engine;
pub mod http;
pub mod incident;
pub mod intake;
pub mod inventory;
pub mod kafka;
pub mod levels;
pub mod live;
pub mod maintenance;
pub mod network;
pub mod parent_ticket;
pub mod policy;
pub mod rejection;
pub mod replay;
pub mod simulate;
pub mod sla;
pub mod telemetry;
pub mod ticket;
pub mod timestamp;
pub mod tmf621;
pub mod views;
