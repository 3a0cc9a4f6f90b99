//! Inputs at the edges, on the real broker with `linewatch run` as a child process: ids
//! that look like the runtime's own keys, oversized fields and keys, a restart on a quiet
//! network. None of them may stop a stage or crash an instance, before or after a restart.

mod common;
mod pipeline;

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};

use pipeline::*;

/// A circuit whose path is one CPE and one access port.
fn circuit(id: &str, port: &str) -> Rec {
    Rec {
        key: id.to_string(),
        value: json!({
            "circuitId": id,
            "customer": { "id": "CUST-1", "name": "Customer 1", "level": "gold" },
            "assuranceLevel": "AA",
            "scope": "intra_city",
            "service": "data",
            "routes": [{ "role": "working", "path": [
                { "kind": "ne", "id": format!("CPE-{id}"), "domain": "cpe", "neType": "CPE" },
                { "kind": "port", "id": port, "domain": "transmission", "neType": "PTN" },
            ]}],
        }),
        partition: None,
    }
}

/// A TMF642 alarm on `object`, raised a minute ago (or cleared now), without a source
/// system unless one is given.
fn alarm(id: &str, object: &str, cleared: bool) -> Value {
    let raised = Utc::now() - chrono::Duration::minutes(1);
    let mut v = json!({
        "id": id, "state": "raised", "perceivedSeverity": "critical", "probableCause": "LOS",
        "alarmType": "communicationsAlarm", "alarmedObject": { "id": object },
        "alarmRaisedTime": raised.to_rfc3339(),
    });
    if cleared {
        v["state"] = json!("cleared");
        v["perceivedSeverity"] = json!("cleared");
        v["alarmClearedTime"] = json!(Utc::now().to_rfc3339());
    }
    v
}

fn rec(key: &str, value: Value) -> Rec {
    Rec {
        key: key.to_string(),
        value,
        partition: None,
    }
}

/// An instance whose watermarks follow the wall clock after a second of quiet: the
/// inputs here are live.
fn live_instance(setup: &Setup, name: &str) -> Instance {
    Instance::start_with(
        &setup.bootstrap,
        &setup.prefix,
        &setup.group,
        name,
        &setup.dir,
        &["--idle-after-ms", "1000"],
    )
}

/// The circuit a ticket event is about.
fn circuit_of(event: &Value) -> String {
    event["event"]["troubleTicket"]["relatedEntity"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["role"] == "affectedCircuit"))
        .and_then(|e| e["id"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Wait until the ticket events satisfy `done`; return them (panics after `limit`, naming
/// `what`).
fn wait_for_tickets(
    setup: &Setup,
    instance: &mut Instance,
    limit: Duration,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        assert!(
            instance.is_running(),
            "{what}: the instance exited (log: {})",
            instance.log.display()
        );
        let tickets = read_topic(&setup.bootstrap, &setup.topics.tickets)
            .into_iter()
            .map(|(_, v)| v)
            .collect::<Vec<_>>();
        if done(&tickets) {
            return tickets;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within {limit:?} in {} events: opened {:?}, restored {:?} (log: {})",
            tickets.len(),
            events_of(&tickets, "opened"),
            events_of(&tickets, "restored"),
            instance.log.display()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn events_of(tickets: &[Value], kind: &str) -> Vec<String> {
    let mut circuits: Vec<String> = tickets
        .iter()
        .filter(|e| e["slaEvent"]["kind"] == kind)
        .map(circuit_of)
        .collect();
    circuits.sort();
    circuits.dedup();
    circuits
}

#[tokio::test(flavor = "multi_thread")]
async fn ids_that_look_like_the_runtimes_own_keys_survive_a_restart() {
    let setup = setup("edge-ids").await;
    let t = &setup.topics;
    // Circuits named like the runtime's bookkeeping keys of earlier releases, on one port.
    let ids = [
        "~meta",
        "~pending/00000000000000000000",
        "~watermark",
        "DL-1",
    ];
    let inventory: Vec<Rec> = ids.iter().map(|id| circuit(id, "ACC-1/0/1")).collect();
    produce(&setup.bootstrap, &t.inventory, &inventory);
    let mut a = live_instance(&setup, "a");
    // An alarm with id `~meta` and no source system: its key, and the incident's, is `~meta`.
    produce(
        &setup.bootstrap,
        &t.alarms,
        &[rec("ACC-1/0/1", alarm("~meta", "ACC-1/0/1", false))],
    );
    let mut expected: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    expected.sort();
    wait_for_tickets(
        &setup,
        &mut a,
        Duration::from_secs(120),
        "a ticket for each circuit",
        |t| events_of(t, "opened") == expected,
    );
    // Every instance reading this state back, and every later start, must go on.
    a.stop();
    let mut b = live_instance(&setup, "b");
    b.wait_for_log(Duration::from_secs(120), |log| {
        log.matches("state restored").count() >= 3
    });
    produce(
        &setup.bootstrap,
        &t.alarms,
        &[rec("ACC-1/0/1", alarm("~meta", "ACC-1/0/1", true))],
    );
    let tickets = wait_for_tickets(
        &setup,
        &mut b,
        Duration::from_secs(120),
        "every ticket restored after the restart",
        |t| events_of(t, "restored") == expected,
    );
    // No ticket opened twice: the restored state was the committed one.
    assert_eq!(
        tickets
            .iter()
            .filter(|e| e["slaEvent"]["kind"] == "opened")
            .count(),
        ids.len()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(b.is_running(), "still running after the clear");
    b.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_fields_keys_and_batches_never_stop_ticketing() {
    let setup = setup("edge-size").await;
    let t = &setup.topics;
    produce(
        &setup.bootstrap,
        &t.inventory,
        &[circuit("DL-1", "ACC-1/0/1"), circuit("DL-2", "ACC-2/0/1")],
    );
    let mut a = live_instance(&setup, "a");
    // A valid critical alarm with a 900 KB probable cause...
    let mut huge = alarm("HUGE-1", "ACC-1/0/1", false);
    huge["probableCause"] = json!("x".repeat(900 * 1024));
    // ...a record with a 700 KB key, and a VES batch of 2 000 bad elements.
    let long_key = "K".repeat(700 * 1024);
    let bad_element = json!({ "commonEventHeader": { "domain": "fault" } });
    let batch = json!({ "eventList": vec![bad_element; 2000] });
    let producer: rdkafka::producer::BaseProducer = common::producer_config(&setup.bootstrap)
        .set("message.max.bytes", "10000000")
        .create()
        .expect("producer");
    for (key, value) in [
        ("ACC-1/0/1".to_string(), huge.to_string()),
        (long_key.clone(), "{\"id\": \"LONGKEY-1\"".to_string()),
        ("ACC-9".to_string(), batch.to_string()),
    ] {
        producer
            .send(
                rdkafka::producer::BaseRecord::to(&t.alarms)
                    .key(&key)
                    .payload(&value),
            )
            .expect("send");
        rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).expect("flush");
    }
    // Then a good alarm on another circuit: it still gets its ticket.
    produce(
        &setup.bootstrap,
        &t.alarms,
        &[rec("ACC-2/0/1", alarm("GOOD-1", "ACC-2/0/1", false))],
    );
    let tickets = wait_for_tickets(
        &setup,
        &mut a,
        Duration::from_secs(120),
        "tickets for the huge alarm and the good one",
        |t| events_of(t, "opened") == ["DL-1", "DL-2"],
    );
    let opened = tickets
        .iter()
        .find(|e| e["slaEvent"]["kind"] == "opened" && circuit_of(e) == "DL-1")
        .expect("DL-1's ticket");
    assert!(
        opened.to_string().len() < 64 * 1024,
        "the ticket event carries the cut text, not 900 KB"
    );
    let rejections: Vec<(String, Value)> = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = read_topic(&setup.bootstrap, &t.rejected);
            if r.len() >= 2001 || Instant::now() > deadline {
                break r;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    assert_eq!(
        rejections.len(),
        2001,
        "one per bad element and the long key"
    );
    let total: usize = rejections
        .iter()
        .map(|(k, v)| k.len() + v.to_string().len())
        .sum();
    assert!(
        total < 4 * 1024 * 1024,
        "rejections carry their element, not the batch: {total} bytes"
    );
    let keyed = rejections
        .iter()
        .find(|(_, v)| v["key"].as_str().is_some_and(|k| k.starts_with("KKK")))
        .expect("the long key's rejection");
    assert!(keyed.0.len() <= 4096, "the record key is cut");
    assert!(a.is_running());
    let health = a.http_url();
    let ready = ureq::get(&format!("{health}/readyz"))
        .call()
        .expect("readyz");
    assert_eq!(ready.status(), 200, "no stage is stalled");
    a.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_restart_on_a_quiet_network_a_new_alarm_gets_its_ticket() {
    let setup = setup("edge-quiet").await;
    let t = &setup.topics;
    produce(
        &setup.bootstrap,
        &t.inventory,
        &[circuit("DL-1", "ACC-1/0/1")],
    );
    // Old data on every alarms partition.
    let old: Vec<Rec> = (0..PARTITIONS)
        .map(|p| Rec {
            key: format!("OLD-{p}"),
            value: alarm(&format!("OLD-{p}"), &format!("OLD-{p}"), false),
            partition: Some(p),
        })
        .collect();
    produce(&setup.bootstrap, &t.alarms, &old);
    let a = live_instance(&setup, "a");
    a.wait_for_log(Duration::from_secs(120), |log| {
        log.matches("state restored").count() >= 3
    });
    // Time to read the old alarms; a clean stop commits what was read.
    std::thread::sleep(Duration::from_secs(5));
    a.stop();
    let mut b = live_instance(&setup, "b");
    b.wait_for_log(Duration::from_secs(120), |log| {
        log.matches("state restored").count() >= 3
    });
    // One new alarm, raised now (after every watermark of the first run), on one
    // partition only: the others stay quiet.
    let mut new = alarm("NEW-1", "ACC-1/0/1", false);
    new["alarmRaisedTime"] = json!(Utc::now().to_rfc3339());
    produce(&setup.bootstrap, &t.alarms, &[rec("ACC-1/0/1", new)]);
    // Quiet partitions follow the wall clock after a second of quiet (--idle-after-ms),
    // whether or not they hold old data; a minute is ample on a loaded CI machine.
    wait_for_tickets(
        &setup,
        &mut b,
        Duration::from_secs(60),
        "the new alarm's ticket",
        |t| events_of(t, "opened") == ["DL-1"],
    );
    b.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_that_do_not_fit_together_stop_the_service_with_their_names() {
    use rdkafka::admin::{AdminOptions, NewPartitions};
    let setup = setup("edge-topology").await;
    let t = &setup.topics;
    // tickets.commands must be co-partitioned with linewatch.impacts.
    let admin = common::admin(&setup.bootstrap);
    let results = admin
        .create_partitions(
            &[NewPartitions::new(&t.commands, (PARTITIONS + 1) as usize)],
            &AdminOptions::new(),
        )
        .await
        .expect("CreatePartitions request");
    for r in results {
        r.expect("partitions added");
    }
    let mut a = live_instance(&setup, "a");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Ok(Some(status)) = a.child.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the service kept running with mismatched topics (log: {})",
            a.log.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!status.success(), "a failure exit status");
    let log = std::fs::read_to_string(&a.log).expect("log");
    assert!(
        log.contains(&t.commands) && log.contains(&t.impacts) && log.contains("co-partitioned"),
        "the error names the topics: {log}"
    );
    assert!(
        !log.contains("restarting the stage"),
        "not restarted over and over"
    );
}

/// A restore that outlasts `max.poll.interval.ms` (6 s here) keeps the instance in its
/// group: the restore reads between polls of the stage's consumer, its assignment paused,
/// instead of holding the consumer unpolled until it is done (the group would then drop
/// the member, and the restore would start over on the next assignment, and again).
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_longer_than_the_poll_interval_keeps_the_instance_in_its_group() {
    let setup = setup("edge-long-restore").await;
    let t = &setup.topics;
    produce(
        &setup.bootstrap,
        &t.inventory,
        &[circuit("DL-1", "ACC-1/0/1")],
    );
    // Circuits with a year of closed faults each, as a previous owner left them.
    let history: Vec<Value> = (0..20)
        .map(|d| {
            let start = format!("2026-03-{:02}T10:00:00Z", d + 1);
            let end = format!("2026-03-{:02}T11:30:00Z", d + 1);
            json!({ "startedAt": start, "down": [{ "start": start, "end": end }], "counted": true })
        })
        .collect();
    let states: Vec<Rec> = (0..CIRCUITS_RESTORED)
        .map(|i| Rec {
            key: format!("OLD-{i:06}"),
            value: json!({ "kind": "circuit", "version": 1, "state": {
                "impacts": { "active": {} }, "last_status": null, "fault": null,
                "suppressed_until_up": false, "history": history, "excluded": [],
                "ident": ["CUST-OLD", "AA"], "figures_due": null, "faults_opened": 20,
            }}),
            partition: Some(i as i32 % PARTITIONS),
        })
        .collect();
    produce(&setup.bootstrap, &t.circuit_changelog, &states);
    let mut a = Instance::start_with(
        &setup.bootstrap,
        &setup.prefix,
        &setup.group,
        "a",
        &setup.dir,
        &["--idle-after-ms", "1000", "-X", "max.poll.interval.ms=6000"],
    );
    a.wait_for_log(Duration::from_secs(300), |log| {
        log.matches("state restored").count() >= 3
    });
    let log = std::fs::read_to_string(&a.log).expect("log");
    let restored: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("state restored") && l.contains("stage=\"circuits\""))
        .collect();
    let seconds: f64 = restored
        .first()
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("seconds="))
        })
        .and_then(|s| s.parse().ok())
        .expect("the restore's duration in its log line");
    assert!(
        seconds > 6.0,
        "the restore took {seconds} s, not longer than max.poll.interval.ms: the test shows \
         nothing (more state records needed on this machine)"
    );
    // Processing goes on, in the same group generation: no second restore, no revocation.
    let mut new = alarm("NEW-1", "ACC-1/0/1", false);
    new["alarmRaisedTime"] = json!(Utc::now().to_rfc3339());
    produce(&setup.bootstrap, &t.alarms, &[rec("ACC-1/0/1", new)]);
    wait_for_tickets(
        &setup,
        &mut a,
        Duration::from_secs(60),
        "the new alarm's ticket",
        |t| events_of(t, "opened") == ["DL-1"],
    );
    let log = std::fs::read_to_string(&a.log).expect("log");
    let circuit_restores = log
        .lines()
        .filter(|l| l.contains("state restored") && l.contains("stage=\"circuits\""))
        .count();
    assert_eq!(
        circuit_restores, 1,
        "one restore, not one per lost membership"
    );
    assert!(
        !log.contains("partitions revoked") && !log.contains("maximum poll interval"),
        "the instance stayed in its group (log: {})",
        a.log.display()
    );
    a.stop();
}

/// How many circuit states the long restore reads: enough for more than 6 s in a debug
/// build on this project's 2-core machine.
const CIRCUITS_RESTORED: usize = 240_000;

/// A maintenance window called off (its tombstone on `maintenance.windows`) while a fault
/// that noted it is open: `linewatch run` applies the cancellation to the fault, as
/// `replay` does — the works' time counts again and the deadline moves back, announced by
/// a `plannedWorksNoted` event.
#[tokio::test(flavor = "multi_thread")]
async fn a_window_called_off_moves_back_the_deadline_of_the_fault_that_noted_it() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let setup = setup("edge-window-off").await;
    let t = &setup.topics;
    produce(
        &setup.bootstrap,
        &t.inventory,
        &[circuit("DL-1", "ACC-1/0/1")],
    );
    let now = Utc::now();
    let window = json!({
        "windowId": "MW-1", "objects": [], "circuits": ["DL-1"],
        "start": (now - chrono::Duration::minutes(30)).to_rfc3339(),
        "end": (now + chrono::Duration::hours(2)).to_rfc3339(),
        "noticeGivenAt": (now - chrono::Duration::days(30)).to_rfc3339(),
        "emergency": false, "crossBorder": false,
    });
    produce(&setup.bootstrap, &t.maintenance, &[rec("MW-1", window)]);
    let mut a = live_instance(&setup, "a");
    a.wait_for_log(Duration::from_secs(120), |log| {
        log.matches("state restored").count() >= 3
    });
    produce(
        &setup.bootstrap,
        &t.alarms,
        &[rec("ACC-1/0/1", alarm("LOS-1", "ACC-1/0/1", false))],
    );
    let restore_by = |e: &Value| e["event"]["troubleTicket"]["sla"]["restoreBy"].clone();
    let opened = wait_for_tickets(&setup, &mut a, Duration::from_secs(60), "the ticket", |t| {
        events_of(t, "opened") == ["DL-1"]
    });
    let opened = opened
        .iter()
        .find(|e| e["slaEvent"]["kind"] == "opened")
        .map(restore_by)
        .expect("opened");
    // The window's tombstone.
    let producer: BaseProducer = common::producer_config(&setup.bootstrap)
        .create()
        .expect("producer");
    producer
        .send(BaseRecord::<str, [u8]>::to(&t.maintenance).key("MW-1"))
        .expect("tombstone queued");
    producer.flush(Duration::from_secs(30)).expect("flush");
    let events = wait_for_tickets(
        &setup,
        &mut a,
        Duration::from_secs(60),
        "the cancellation's event",
        |t| events_of(t, "plannedWorksNoted") == ["DL-1"],
    );
    let noted = events
        .iter()
        .find(|e| e["slaEvent"]["kind"] == "plannedWorksNoted")
        .map(restore_by)
        .expect("noted");
    let at = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default()).expect("a time")
    };
    assert!(
        at(&noted) < at(&opened),
        "the deadline moves back once the works are called off: {opened} then {noted}"
    );
    a.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incident_of_thousands_of_circuits_survives_a_restart() {
    let setup = setup("edge-big").await;
    let t = &setup.topics;
    // 2 500 circuits behind one access port: one incident whose state (about 450 bytes a
    // circuit) is over the producer's 1 MB record limit, so its changelog record goes in
    // parts.
    let n = 2_500;
    let ids: Vec<String> = (0..n).map(|i| format!("DL-{i:05}")).collect();
    let inventory: Vec<Rec> = ids.iter().map(|id| circuit(id, "ACC-9/0/1")).collect();
    produce(&setup.bootstrap, &t.inventory, &inventory);
    let mut a = live_instance(&setup, "a");
    produce(
        &setup.bootstrap,
        &t.alarms,
        &[rec("ACC-9/0/1", alarm("LOS-9", "ACC-9/0/1", false))],
    );
    wait_for_tickets(
        &setup,
        &mut a,
        Duration::from_secs(180),
        "a ticket for each circuit",
        |t| events_of(t, "opened").len() == n,
    );
    // The incident with every circuit is committed before the restart.
    let deadline = Instant::now() + Duration::from_secs(60);
    let incidents = || -> Vec<Value> {
        read_topic(&setup.bootstrap, &t.incidents)
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    };
    while !incidents()
        .iter()
        .any(|r| r["circuitCount"] == n && r["downCount"] == n)
    {
        assert!(Instant::now() < deadline, "no incident of {n} circuits");
        std::thread::sleep(Duration::from_millis(500));
    }
    a.stop();
    let mut b = live_instance(&setup, "b");
    b.wait_for_log(Duration::from_secs(120), |log| {
        log.matches("state restored").count() >= 3
    });
    produce(
        &setup.bootstrap,
        &t.alarms,
        &[rec("ACC-9/0/1", alarm("LOS-9", "ACC-9/0/1", true))],
    );
    wait_for_tickets(
        &setup,
        &mut b,
        Duration::from_secs(180),
        "every ticket restored after the restart",
        |t| events_of(t, "restored").len() == n,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let incidents = loop {
        let incidents = incidents();
        if incidents.iter().any(|r| r["downCount"] == 0) {
            break incidents;
        }
        assert!(Instant::now() < deadline, "no record of the restoration");
        std::thread::sleep(Duration::from_millis(500));
    };
    b.stop();
    // The restored instance went on from the incident's state: its records continue the
    // sequence (a lost state starts again at 1, repeating event ids) and keep every
    // circuit.
    let mut event_ids: Vec<&str> = incidents
        .iter()
        .filter_map(|r| r["eventId"].as_str())
        .collect();
    let records = event_ids.len();
    event_ids.sort_unstable();
    event_ids.dedup();
    assert_eq!(event_ids.len(), records, "an incident event id repeated");
    let last = incidents
        .iter()
        .max_by_key(|r| r["sequence"].as_u64())
        .expect("records");
    assert!(last["sequence"].as_u64() > Some(1), "{}", last["eventId"]);
    assert_eq!(
        (&last["circuitCount"], &last["downCount"]),
        (&json!(n), &json!(0))
    );
}
