//! `linewatch run` on the real broker: inventory and alarms in, one committed ticket per
//! impacted circuit out, bad input on the rejection topic, a clean stop on request.

mod common;
mod scenario;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::Message;

use linewatch::inventory::ObjectKind;
use linewatch::kafka::service::{self, ServiceConfig, TopicNames};
use linewatch::levels::{AssuranceLevel, CustomerLevel, Scope};
use linewatch::policy::Policy;
use scenario::*;

/// Read every committed record of `topic` until `done` says enough or 60 s pass.
fn read_until(
    bootstrap: &str,
    topic: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let consumer: BaseConsumer = common::consumer_config(bootstrap, &common::unique_name("reader"))
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while Instant::now() < deadline && !done(&seen) {
        if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(200)) {
            if let Some(payload) = msg.payload() {
                seen.push(serde_json::from_slice(payload).expect("output is JSON"));
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn run_opens_one_committed_ticket_per_circuit_and_rejects_bad_input() {
    let bootstrap = common::bootstrap();
    let prefix = format!("{}.", common::unique_name("svc"));
    let topics = TopicNames::with_prefix(&prefix);
    common::create_service_topics(&bootstrap, &prefix, 3).await;

    let producer: BaseProducer = common::producer_config(&bootstrap)
        .create()
        .expect("producer");
    for i in 0..2 {
        let path = vec![
            element(ObjectKind::Ne, &format!("CPE-{i}"), "cpe", "CPE"),
            element(
                ObjectKind::Port,
                &format!("BJ-SDH-1/4/{i}"),
                "transmission",
                "SDH",
            ),
        ];
        let c = circuit(
            &format!("K{i}"),
            CustomerLevel::Gold,
            AssuranceLevel::Aa,
            Scope::InterProvince,
            vec![path],
        );
        let value = serde_json::to_vec(&c).expect("json");
        producer
            .send(
                BaseRecord::to(&topics.inventory)
                    .key(&c.circuit_id)
                    .payload(&value),
            )
            .expect("send");
    }
    let raised = (Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let alarm = serde_json::json!({
        "id": "SDH-77", "state": "raised", "perceivedSeverity": "critical",
        "probableCause": "LOS", "alarmType": "communicationsAlarm",
        "alarmedObject": { "id": "BJ-SDH-1/4" }, "sourceSystemId": "sdh-nms",
        "alarmRaisedTime": raised,
    })
    .to_string();
    producer
        .send(
            BaseRecord::to(&topics.alarms)
                .key("BJ-SDH-1/4")
                .payload(&alarm),
        )
        .expect("send");
    producer
        .send(
            BaseRecord::to(&topics.alarms)
                .key("junk")
                .payload("{\"id\": 7"),
        )
        .expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");

    let shutdown = Arc::new(AtomicBool::new(false));
    let config = ServiceConfig {
        bootstrap_servers: bootstrap.clone(),
        client_overrides: Vec::new(),
        group_id: common::unique_name("linewatch"),
        transactional_id: common::unique_name("linewatch-tx"),
        topics: topics.clone(),
        policy: Policy::builtin(),
        tick: Duration::from_millis(200),
        idle_after: Duration::from_secs(1),
        http: None,
        intake: Default::default(),
        tmf621: Default::default(),
    };
    let flag = shutdown.clone();
    let worker = std::thread::spawn(move || service::run(config, flag));

    let b = bootstrap.clone();
    let t = topics.tickets.clone();
    let tickets = tokio::task::spawn_blocking(move || read_until(&b, &t, |s| s.len() >= 2))
        .await
        .expect("reader");
    let b = bootstrap.clone();
    let r = topics.rejected.clone();
    let rejected = tokio::task::spawn_blocking(move || read_until(&b, &r, |s| !s.is_empty()))
        .await
        .expect("reader");

    shutdown.store(true, Ordering::Relaxed);
    let summary = tokio::task::spawn_blocking(move || worker.join())
        .await
        .expect("join")
        .expect("service thread")
        .expect("service ran");

    let opened: Vec<_> = tickets
        .iter()
        .filter(|e| e["slaEvent"]["kind"] == "opened")
        .collect();
    assert_eq!(
        opened.len(),
        2,
        "one ticket per circuit on the card: {tickets:#?}"
    );
    let mut circuits: Vec<String> = opened
        .iter()
        .map(|e| {
            e["event"]["troubleTicket"]["relatedEntity"][0]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    circuits.sort();
    assert_eq!(circuits, vec!["K0", "K1"]);
    for e in &opened {
        assert_eq!(
            e["event"]["troubleTicket"]["relatedParty"][1]["id"],
            "transport"
        );
        // AA between provinces: 5 hours.
        assert_eq!(
            e["event"]["troubleTicket"]["sla"]["restoreLimitMinutes"],
            300
        );
    }
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["reason_code"], "not_json");
    assert_eq!(rejected[0]["source"]["topic"], topics.alarms.as_str());
    assert_eq!(rejected[0]["original"], "{\"id\": 7");
    assert_eq!(summary.rejected, 1);
    assert!(summary.transactions >= 1);
}
