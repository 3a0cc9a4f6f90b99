//! `linewatch watch`: a live terminal view of what the service publishes, for the demo and
//! for a NOC screen without a browser. It reads the output topics with `read_committed`
//! and redraws, once a second: open tickets soonest deadline first with their countdowns,
//! incidents with their circuits down, circuits at risk of or past their annual limits,
//! and the latest SLA warnings.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use serde_json::Value;

use crate::kafka::service::TopicNames;
use crate::kafka::{client_config, ClientOverride};

/// What the view shows, built from the output records (pure; the terminal is elsewhere).
#[derive(Debug, Default)]
pub struct Board {
    /// Ticket id → its latest trouble ticket.
    tickets: BTreeMap<String, Value>,
    /// Incident id → its latest record.
    incidents: BTreeMap<String, Value>,
    /// `<circuit>@<year>` → latest yearly figures.
    figures: BTreeMap<String, Value>,
    warnings: Vec<String>,
    pub events: u64,
    pub rejected: u64,
}

impl Board {
    /// Fold in one record of `topic` (one of `t`'s output topics).
    pub fn apply(&mut self, t: &TopicNames, topic: &str, value: &Value) {
        self.events += 1;
        if topic == t.tickets {
            let ticket = &value["event"]["troubleTicket"];
            // An incident's parent ticket: the incidents topic shows the incident.
            if ticket["@type"] == crate::parent_ticket::PARENT_TICKET_TYPE {
                return;
            }
            if let Some(id) = ticket["id"].as_str() {
                if ticket["status"] == "closed" {
                    self.tickets.remove(id);
                } else {
                    self.tickets.insert(id.to_string(), ticket.clone());
                }
            }
        } else if topic == t.incidents {
            if let Some(id) = value["incidentId"].as_str() {
                if value["status"] == "closed" {
                    self.incidents.remove(id);
                } else {
                    self.incidents.insert(id.to_string(), value.clone());
                }
            }
        } else if topic == t.figures {
            let period = value["period"].as_str().unwrap_or_default();
            if period.len() == 4 {
                let key = format!(
                    "{}@{period}",
                    value["circuitId"].as_str().unwrap_or_default()
                );
                self.figures.insert(key, value.clone());
            }
        } else if topic == t.warnings {
            let line = match value["kind"].as_str() {
                Some("risk") => format!(
                    "{} {}: {} -> {}",
                    value["at"].as_str().unwrap_or_default(),
                    value["circuitId"].as_str().unwrap_or_default(),
                    value["from"].as_str().unwrap_or_default(),
                    value["to"].as_str().unwrap_or_default()
                ),
                Some("late_notice") => format!(
                    "planned works {} announced too late for {} circuit(s)",
                    value["windowId"].as_str().unwrap_or_default(),
                    value["late"].as_array().map_or(0, Vec::len)
                ),
                _ => value.to_string(),
            };
            self.warnings.push(line);
            if self.warnings.len() > 5 {
                self.warnings.remove(0);
            }
        } else if topic == t.rejected {
            self.rejected += 1;
        }
    }

    /// The view as text, with countdowns as of `now`, at most `rows` rows per table.
    pub fn render(&self, now: DateTime<Utc>, rows: usize) -> String {
        let mut out = String::new();
        let down = self
            .tickets
            .values()
            .filter(|t| t["resolutionDate"].is_null())
            .count();
        out.push_str(&format!(
            "linewatch  {}  open tickets {} ({} down)  incidents {}  records {}  rejected {}\n\n",
            now.format("%Y-%m-%d %H:%M:%S UTC"),
            self.tickets.len(),
            down,
            self.incidents.len(),
            self.events,
            self.rejected
        ));
        out.push_str("OPEN TICKETS (soonest restore deadline first)\n");
        out.push_str(&format!(
            "{:<20} {:<12} {:<9} {:<13} {:>11} {:>3}  {}\n",
            "ticket", "circuit", "level", "status", "restore in", "esc", "root cause"
        ));
        let mut tickets: Vec<&Value> = self.tickets.values().collect();
        tickets.sort_by_key(|t| {
            t["sla"]["restoreBy"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        });
        for t in tickets.iter().take(rows) {
            let circuit = t["relatedEntity"]
                .as_array()
                .and_then(|a| a.iter().find(|e| e["role"] == "affectedCircuit"))
                // TMF621 v4 names it `id`, v5 `entity.id`.
                .and_then(|e| e["id"].as_str().or(e["entity"]["id"].as_str()))
                .unwrap_or_default();
            let countdown = if t["resolutionDate"].is_null() {
                t["sla"]["restoreBy"]
                    .as_str()
                    .and_then(|s| s.parse::<DateTime<Utc>>().ok())
                    .map(|by| countdown(by - now))
                    .unwrap_or_default()
            } else {
                "restored".to_string()
            };
            out.push_str(&format!(
                "{:<20} {:<12} {:<9} {:<13} {:>11} {:>3}  {} on {}\n",
                t["id"].as_str().unwrap_or_default(),
                circuit,
                t["sla"]["assuranceLevel"].as_str().unwrap_or_default(),
                t["status"].as_str().unwrap_or_default(),
                countdown,
                t["sla"]["escalationLevel"].as_u64().unwrap_or_default(),
                t["rootCause"]["probableCause"].as_str().unwrap_or_default(),
                t["rootCause"]["object"].as_str().unwrap_or_default(),
            ));
        }
        if self.tickets.len() > rows {
            out.push_str(&format!("... and {} more\n", self.tickets.len() - rows));
        }
        out.push_str("\nINCIDENTS\n");
        for i in self.incidents.values().take(rows) {
            out.push_str(&format!(
                "{:<22} {:<9} {:>3}/{:<3} circuits down  root {} on {}\n",
                i["incidentId"].as_str().unwrap_or_default(),
                i["status"].as_str().unwrap_or_default(),
                i["downCount"].as_u64().unwrap_or_default(),
                i["circuitCount"].as_u64().unwrap_or_default(),
                i["rootAlarm"]["probableCause"].as_str().unwrap_or_default(),
                i["rootAlarm"]["object"].as_str().unwrap_or_default(),
            ));
        }
        out.push_str("\nCIRCUITS AT RISK OR PAST THEIR ANNUAL LIMITS\n");
        let mut risky: Vec<&Value> = self
            .figures
            .values()
            .filter(|f| f["status"] != "ok")
            .collect();
        risky.sort_by_key(|f| f["status"] != "breached");
        for f in risky.iter().take(rows) {
            out.push_str(&format!(
                "{:<12} {:<9} {:<9} failures {:>2}  outage {:>6} min  availability {}\n",
                f["circuitId"].as_str().unwrap_or_default(),
                f["period"].as_str().unwrap_or_default(),
                f["status"].as_str().unwrap_or_default(),
                f["failures"].as_u64().unwrap_or_default(),
                f["outageSeconds"].as_u64().unwrap_or_default() / 60,
                f["availability"]
                    .as_f64()
                    .map(|a| format!("{:.4} %", a * 100.0))
                    .unwrap_or_default(),
            ));
        }
        out.push_str("\nLATEST SLA WARNINGS\n");
        for w in &self.warnings {
            out.push_str(w);
            out.push('\n');
        }
        out
    }
}

/// `+1h05m` ahead, `-0h12m` overdue.
fn countdown(d: chrono::Duration) -> String {
    let sign = if d < chrono::Duration::zero() {
        "-"
    } else {
        ""
    };
    let m = d.num_minutes().abs();
    format!("{sign}{}h{:02}m", m / 60, m % 60)
}

/// Follow the output topics until `stop` is set, redrawing the terminal once a second.
///
/// # Errors
/// When the consumer cannot be created or subscribe.
pub fn watch(
    bootstrap_servers: &str,
    overrides: &[ClientOverride],
    topics: &TopicNames,
    stop: Arc<AtomicBool>,
) -> Result<(), rdkafka::error::KafkaError> {
    let mut cfg = client_config(bootstrap_servers, overrides);
    cfg.set(
        "group.id",
        format!("linewatch-watch-{}", std::process::id()),
    )
    .set("enable.auto.commit", "false")
    .set("auto.offset.reset", "earliest")
    .set("isolation.level", "read_committed");
    let consumer: BaseConsumer = cfg.create()?;
    consumer.subscribe(&[
        topics.tickets.as_str(),
        topics.incidents.as_str(),
        topics.figures.as_str(),
        topics.warnings.as_str(),
        topics.rejected.as_str(),
    ])?;
    let mut board = Board::default();
    let mut drawn = Instant::now() - Duration::from_secs(2);
    while !stop.load(Ordering::Relaxed) {
        if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) {
            if let Some(value) = msg
                .payload()
                .and_then(|p| serde_json::from_slice::<Value>(p).ok())
            {
                board.apply(topics, msg.topic(), &value);
            }
        }
        if drawn.elapsed() >= Duration::from_secs(1) {
            drawn = Instant::now();
            // Clear the screen and home the cursor, then draw.
            print!("\x1b[2J\x1b[H{}", board.render(Utc::now(), 15));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_board_shows_open_tickets_with_countdowns_and_forgets_closed_ones() {
        let t = TopicNames::with_prefix("");
        let mut b = Board::default();
        let ticket = |id: &str, status: &str, restore_by: &str| {
            json!({ "event": { "troubleTicket": {
                "id": id, "status": status, "resolutionDate": null,
                "relatedEntity": [{ "id": "DL-1", "role": "affectedCircuit" }],
                "rootCause": { "probableCause": "LOS", "object": "RING-1" },
                "sla": { "assuranceLevel": "AA", "restoreBy": restore_by, "escalationLevel": 1 },
            }}})
        };
        b.apply(
            &t,
            &t.tickets,
            &ticket("TT-1", "acknowledged", "2026-03-02T14:00:00Z"),
        );
        b.apply(
            &t,
            &t.tickets,
            &ticket("TT-2", "acknowledged", "2026-03-02T11:00:00Z"),
        );
        b.apply(&t, &t.rejected, &json!({}));
        // An incident's parent ticket is not one more open ticket.
        b.apply(
            &t,
            &t.tickets,
            &json!({ "event": { "troubleTicket": {
                "id": "INC-1", "status": "inProgress", "@type": "MassOutageTicket",
            }}}),
        );
        let now: DateTime<Utc> = "2026-03-02T10:30:00Z".parse().expect("time");
        let view = b.render(now, 10);
        assert!(view.contains("open tickets 2 (2 down)"), "{view}");
        assert!(!view.contains("INC-1"), "{view}");
        // The circuit of a TMF621 v5 ticket (nested under entity).
        let v5 = crate::tmf621::to_v5(ticket("TT-5", "acknowledged", "2026-03-02T12:00:00Z"));
        b.apply(&t, &t.tickets, &v5);
        let view = b.render(now, 10);
        let row = view
            .lines()
            .find(|l| l.starts_with("TT-5"))
            .expect("TT-5 shown");
        assert!(row.contains("DL-1"), "{row}");
        assert!(view.contains("rejected 1"), "{view}");
        let first = view.find("TT-2").expect("TT-2 shown");
        assert!(
            first < view.find("TT-1").expect("TT-1 shown"),
            "soonest first"
        );
        assert!(view.contains("0h30m") && view.contains("3h30m"), "{view}");
        b.apply(
            &t,
            &t.tickets,
            &ticket("TT-2", "closed", "2026-03-02T11:00:00Z"),
        );
        assert!(!b.render(now, 10).contains("TT-2"));
        assert_eq!(countdown(chrono::Duration::minutes(-75)), "-1h15m");
    }
}
