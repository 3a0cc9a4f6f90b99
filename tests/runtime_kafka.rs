//! The Kafka runtime on the real broker, with `linewatch run` as child processes: the
//! same answers as the replay command, through crashes, scale-out and a paused zombie,
//! and bad input that never stops the pipeline.

mod common;
mod pipeline;

use std::time::Duration;

use pipeline::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_run_gives_the_same_tickets_figures_and_incidents_as_replay() {
    let setup = setup("same").await;
    let scenario = storm(11, 80, 70);
    setup.load_inventory(&scenario);
    let instance = setup.start("a");
    let commands = setup.feed(&scenario, |_| {});
    let run = read_outputs(&setup.bootstrap, &setup.topics);
    run.save(&setup.dir.join("run"));
    instance.stop();
    let replay = setup.replay(&scenario, &commands);
    assert!(
        final_tickets(&replay.tickets).len() >= 20,
        "a storm worth the name"
    );
    assert!(
        !final_incidents(&replay.incidents).is_empty(),
        "some incidents"
    );
    assert_same_answers(&run, &replay);
}

/// Producers that do not place records as the topics say get the answers of the replay:
/// the service routes each record by its content to the partition that keeps its state.
/// Alarms keyed by object but placed by librdkafka's default CRC32 partitioner
/// (`consistent_random`, the default of confluent-kafka in Python, Go and .NET): every
/// notification of an object on one partition, in order, but not the one whose task keeps
/// the object's state. Commands with no key, each on a partition other than its circuit's.
#[tokio::test(flavor = "multi_thread")]
async fn producers_that_partition_otherwise_get_the_same_answers_as_replay() {
    let setup = setup("keying").await;
    let scenario = storm(11, 80, 70);
    setup.load_inventory(&scenario);
    let instance = setup.start("a");
    let commands = setup.feed_keyed(
        &scenario,
        Keying::ConsistentRandom,
        Keying::Misplaced,
        |_| {},
    );
    let run = read_outputs(&setup.bootstrap, &setup.topics);
    run.save(&setup.dir.join("run"));
    instance.stop();
    let t = &setup.topics;
    // The test exercises the routing: records were sent on, both kinds.
    assert!(!read_topic(&setup.bootstrap, &t.alarms_repartition).is_empty());
    assert!(!read_topic(&setup.bootstrap, &t.commands_repartition).is_empty());
    let replay = setup.replay(&scenario, &commands);
    assert!(
        final_tickets(&replay.tickets).len() >= 20,
        "a storm worth the name"
    );
    assert_same_answers(&run, &replay);
    // The same rejections as the replay (a command for a ticket closed before the
    // command's time is refused by both), each naming the record as it was sent: the
    // commands topic, no key.
    let reasons = |records: &[serde_json::Value]| {
        let mut r: Vec<String> = records
            .iter()
            .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
            .collect();
        r.sort();
        r
    };
    assert_eq!(reasons(&run.rejections), reasons(&replay.rejections));
    for r in &run.rejections {
        assert_eq!(r["source"]["topic"], serde_json::json!(t.commands), "{r}");
        assert!(r["key"].is_null(), "{r}");
    }
}

/// A seed for the random points of a test, printed so that a failure can be replayed
/// (set LINEWATCH_TEST_SEED).
fn seed() -> u64 {
    let seed = std::env::var("LINEWATCH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    eprintln!("LINEWATCH_TEST_SEED={seed}");
    seed
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_at_random_points_and_restarted_nothing_is_duplicated_or_lost() {
    let setup = setup("crash").await;
    let scenario = storm(23, 80, 70);
    let mut rng = Rng::new(seed());
    setup.load_inventory(&scenario);
    let mut instance = Some(setup.start("a"));
    let mut kills = 0;
    let commands = setup.feed(&scenario, |_phase| {
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(300 + rng.below(3000)));
            if let Some(i) = instance.take() {
                i.kill();
                kills += 1;
            }
            instance = Some(setup.start("a"));
        }
    });
    let run = read_outputs(&setup.bootstrap, &setup.topics);
    run.save(&setup.dir.join("run"));
    if let Some(i) = instance.take() {
        i.stop();
    }
    assert_eq!(kills, 6);
    let replay = setup.replay(&scenario, &commands);
    // No ticket event twice, none missing from any ticket's sequence...
    ticket_histories(&run.tickets);
    // ...and the same tickets, figures and incidents as an uninterrupted run.
    assert_same_answers(&run, &replay);
}

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_share_the_work_while_one_joins_and_one_leaves() {
    let setup = setup("scale").await;
    let scenario = storm(37, 80, 70);
    setup.load_inventory(&scenario);
    let mut running: Vec<Instance> = ["a", "b", "c"].iter().map(|n| setup.start(n)).collect();
    let commands = setup.feed(&scenario, |phase| {
        std::thread::sleep(Duration::from_millis(1500));
        if phase == 1 {
            running.push(setup.start("d"));
        } else if let Some(pos) = running.iter().position(|i| i.name == "b") {
            running.remove(pos).stop();
        }
    });
    let run = read_outputs(&setup.bootstrap, &setup.topics);
    run.save(&setup.dir.join("run"));
    let names: Vec<String> = running.iter().map(|i| i.name.clone()).collect();
    assert_eq!(names, ["a", "c", "d"]);
    for i in running {
        i.stop();
    }
    let replay = setup.replay(&scenario, &commands);
    ticket_histories(&run.tickets);
    assert_same_answers(&run, &replay);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_paused_past_its_session_timeout_writes_nothing_that_counts() {
    let setup = setup("zombie").await;
    let scenario = storm(41, 80, 70);
    setup.load_inventory(&scenario);
    let zombie = setup.start("a");
    let other = setup.start("b");
    // Both members own partitions of every stage before the storm starts.
    for i in [&zombie, &other] {
        i.wait_for_log(Duration::from_secs(120), |log| {
            ["fanout", "circuits", "incidents"].iter().all(|stage| {
                log.lines().rev().any(|l| {
                    l.contains(&format!("stage=\"{stage}\" partitions={{"))
                        && l.contains("partitions assigned")
                        && !l.contains("partitions={}")
                })
            })
        });
    }
    let commands = setup.feed(&scenario, |phase| {
        if phase == 1 {
            std::thread::sleep(Duration::from_millis(200));
            zombie.signal("STOP");
            // Past session.timeout.ms (6 s): the group moves its partitions to "b".
            std::thread::sleep(Duration::from_secs(12));
            zombie.signal("CONT");
        }
    });
    let run = read_outputs(&setup.bootstrap, &setup.topics);
    run.save(&setup.dir.join("run"));
    let log = std::fs::read_to_string(&zombie.log).expect("zombie log");
    zombie.stop();
    other.stop();
    assert!(
        log.contains("assignment lost") || log.contains("restarting the stage"),
        "the paused instance noticed it had been replaced"
    );
    let replay = setup.replay(&scenario, &commands);
    ticket_histories(&run.tickets);
    assert_same_answers(&run, &replay);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_lands_in_the_rejection_topic_with_its_reason_and_processing_goes_on() {
    let setup = setup("poison").await;
    let t = &setup.topics;
    let scenario = storm(5, 8, 0);
    produce(&setup.bootstrap, &t.inventory, &scenario.inventory);
    let bad_inventory = Rec {
        key: "DL-BAD".into(),
        value: serde_json::json!({ "circuitId": "DL-BAD", "routes": "none" }),
        partition: None,
    };
    produce(&setup.bootstrap, &t.inventory, &[bad_inventory]);
    // Wall-clock mode: the inputs below are live.
    let instance = Instance::start_with(
        &setup.bootstrap,
        &setup.prefix,
        &setup.group,
        "a",
        &setup.dir,
        &["--idle-after-ms", "1000"],
    );
    let now = chrono::Utc::now();
    let alarm = |id: &str, raised: String| {
        serde_json::json!({
            "id": id, "state": "raised", "perceivedSeverity": "critical", "probableCause": "LOS",
            "alarmType": "communicationsAlarm", "alarmedObject": { "id": "ACC-000/0/1" },
            "sourceSystemId": "nms-1", "alarmRaisedTime": raised,
        })
    };
    let mut wrong_type = alarm("WT-1", now.to_rfc3339());
    wrong_type["perceivedSeverity"] = serde_json::json!(5);
    let raw = |key: &str, bytes: Vec<u8>| (key.to_string(), bytes);
    let poison: Vec<(String, Vec<u8>)> = vec![
        raw("ACC-000/0/1", b"{\"id\": 7".to_vec()),
        raw("ACC-000/0/1", wrong_type.to_string().into_bytes()),
        raw(
            "ACC-000/0/1",
            alarm("FUT-1", "9999-01-01T00:00:00Z".into())
                .to_string()
                .into_bytes(),
        ),
        raw(
            "ACC-000/0/1",
            alarm("OLD-1", "1899-01-01T00:00:00Z".into())
                .to_string()
                .into_bytes(),
        ),
        raw(
            "ACC-000/0/1",
            alarm("SOON-1", (now + chrono::Duration::days(3)).to_rfc3339())
                .to_string()
                .into_bytes(),
        ),
        raw("ACC-000/0/1", vec![0xff, 0xfe, 0x00, 0x01]),
        raw("ACC-000/0/1", {
            let mut big = alarm("BIG-1", now.to_rfc3339());
            big["additionalText"] = serde_json::json!("x".repeat(5 * 1024 * 1024));
            big.to_string().into_bytes()
        }),
    ];
    let producer: rdkafka::producer::BaseProducer = common::producer_config(&setup.bootstrap)
        .set("message.max.bytes", "10000000")
        .create()
        .expect("producer");
    for (key, bytes) in &poison {
        rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).expect("flush");
        producer
            .send(
                rdkafka::producer::BaseRecord::to(&t.alarms)
                    .key(key)
                    .payload(bytes),
            )
            .expect("send");
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).expect("flush");
    // A command for a circuit that has no ticket.
    let stray = Rec {
        key: "NO-SUCH-CIRCUIT".into(),
        value: serde_json::json!({
            "ticketId": "TT-0000000000000000", "circuitId": "NO-SUCH-CIRCUIT",
            "action": "acknowledge", "at": now.to_rfc3339(),
        }),
        partition: None,
    };
    produce(&setup.bootstrap, &t.commands, &[stray]);
    // And after all that, a good alarm: it still opens its tickets.
    let good = Rec {
        key: "ACC-000/0/1".into(),
        value: alarm("GOOD-1", (now - chrono::Duration::minutes(1)).to_rfc3339()),
        partition: None,
    };
    produce(&setup.bootstrap, &t.alarms, &[good]);

    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (rejected, tickets) = loop {
        let out = read_outputs(&setup.bootstrap, t);
        let opened = out
            .tickets
            .iter()
            .any(|e| e["slaEvent"]["kind"] == "opened");
        if (out.rejections.len() >= 9 && opened) || std::time::Instant::now() > deadline {
            break (out.rejections, out.tickets);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    instance.stop();
    let codes: Vec<(String, String)> = rejected
        .iter()
        .map(|r| {
            (
                r["source"]["topic"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r["reason_code"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expect = |topic: &str, code: &str| {
        assert!(
            codes.iter().any(|(t, c)| t == topic && c == code),
            "a {code} rejection from {topic}: {codes:?}"
        );
    };
    expect(&t.inventory, "missing_field");
    expect(&t.alarms, "not_json");
    expect(&t.alarms, "wrong_type");
    expect(&t.alarms, "time_out_of_range");
    expect(&t.alarms, "future_time");
    expect(&t.alarms, "too_large");
    expect(&t.commands, "invalid");
    assert_eq!(codes.len(), 9, "one rejection per bad record: {codes:?}");
    for r in &rejected {
        assert!(
            r["reason"].as_str().is_some_and(|s| !s.is_empty()),
            "a reason: {r}"
        );
        assert!(
            r["source"]["offset"].as_i64().is_some(),
            "the source offset: {r}"
        );
        assert!(
            r["source"]["partition"].as_i64().is_some(),
            "the source partition: {r}"
        );
    }
    let big = rejected
        .iter()
        .find(|r| r["reason_code"] == "too_large")
        .expect("the 5 MB message");
    assert!(big["original_size"]
        .as_u64()
        .is_some_and(|n| n > 5 * 1024 * 1024));
    assert_eq!(big["original_truncated"], true);
    assert!(
        tickets.iter().any(|e| e["slaEvent"]["kind"] == "opened"),
        "the good alarm after the bad ones opened tickets"
    );
}
