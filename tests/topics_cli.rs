//! Topics as code, end to end: the files in `topics/` are valid, and `linewatch topics
//! create|check` create them on a real broker and report exactly what differs after someone
//! changes a topic behind their back.
//!
//! Every run uses a fresh `--prefix`, so the test is isolated even on a shared cluster that
//! already holds the real topics (`KAFKA_BOOTSTRAP_SERVERS`).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use linewatch::kafka::topics::{self, PlanOptions, TopicSpec};
use rdkafka::admin::{AdminOptions, AlterConfig, NewPartitions, ResourceSpecifier};

const TOPICS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/topics");

fn load_specs() -> Vec<TopicSpec> {
    topics::load_dir(Path::new(TOPICS_DIR)).unwrap_or_else(|e| panic!("{e}"))
}

fn spec<'a>(specs: &'a [TopicSpec], name: &str) -> &'a TopicSpec {
    specs
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no topics/{name}.toml"))
}

/// Runs the real binary, as an operator would.
fn linewatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_linewatch"))
        .args(args)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .output()
        .expect("run linewatch")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The `DIFFERS` lines of a `check` report, without the marker.
fn differences(output: &Output) -> BTreeSet<String> {
    stdout(output)
        .lines()
        .filter_map(|line| line.strip_prefix("DIFFERS  "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_topic_file_parses_and_names_existing_json_schemas() {
    let specs = load_specs();
    assert!(specs.len() >= 12, "expected every topic of the pipeline");
    let problems = topics::verify_schemas(Path::new(TOPICS_DIR), &specs);
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(list.is_empty(), "schema problems:\n{}", list.join("\n"));

    let validate = linewatch(&["topics", "validate", "--topics-dir", TOPICS_DIR]);
    assert!(validate.status.success(), "{}", stdout(&validate));
}

#[tokio::test]
async fn create_check_and_report_exactly_what_was_changed() {
    let bootstrap = common::bootstrap();
    let prefix = format!("{}.", common::unique_name("topics-cli"));
    let specs = load_specs();
    let cli = |command: &str| {
        linewatch(&[
            "topics",
            command,
            "--topics-dir",
            TOPICS_DIR,
            "--bootstrap-servers",
            &bootstrap,
            "--prefix",
            &prefix,
            "--replication-factor",
            "1",
        ])
    };
    let all_missing: BTreeSet<String> = specs
        .iter()
        .map(|s| format!("{prefix}{}: missing", s.name))
        .collect();

    let before = cli("check");
    assert_eq!(before.status.code(), Some(1), "{}", stdout(&before));
    assert_eq!(differences(&before), all_missing);

    let create = cli("create");
    assert!(create.status.success(), "{}", stdout(&create));
    let summary = format!("{} created, 0 already existed", specs.len());
    assert!(stdout(&create).contains(&summary), "{}", stdout(&create));

    let again = cli("create");
    assert!(again.status.success(), "{}", stdout(&again));
    let summary = format!("0 created, {} already existed", specs.len());
    assert!(stdout(&again).contains(&summary), "{}", stdout(&again));

    let clean = cli("check");
    assert!(clean.status.success(), "{}", stdout(&clean));
    assert_eq!(differences(&clean), BTreeSet::new());

    // Change two topics behind the files' back: one more partition for the alarms, and the
    // inventory switched from compaction to deletion (which would lose circuits).
    let admin = common::admin(&bootstrap);
    let options = AdminOptions::new().operation_timeout(Some(common::ADMIN_TIMEOUT));
    let alarms = spec(&specs, "nms.alarms");
    let alarms_topic = format!("{prefix}{}", alarms.name);
    let grown = usize::try_from(alarms.partitions + 1).expect("positive partition count");
    let results = admin
        .create_partitions([&NewPartitions::new(&alarms_topic, grown)], &options)
        .await
        .expect("CreatePartitions request");
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    // AlterConfigs replaces the whole dynamic config, so the planned values are all sent
    // again and only cleanup.policy changes.
    let inventory = spec(&specs, "inventory.circuits");
    let plan = inventory.plan(&PlanOptions::new(prefix.clone(), Some(1)).expect("options"));
    let mut alter = AlterConfig::new(ResourceSpecifier::Topic(&plan.name));
    for (key, value) in &plan.configs {
        alter = alter.set(key, value);
    }
    alter = alter.set("cleanup.policy", "delete");
    let results = admin
        .alter_configs([&alter], &options)
        .await
        .expect("AlterConfigs request");
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let expected: BTreeSet<String> = [
        format!(
            "{alarms_topic}: partitions: expected {}, actual {grown}",
            alarms.partitions
        ),
        format!(
            "{}: config cleanup.policy: expected \"compact\", actual \"delete\"",
            plan.name
        ),
    ]
    .into_iter()
    .collect();
    // The broker's metadata may take a moment to show the new partition.
    let deadline = Instant::now() + Duration::from_secs(15);
    let changed = loop {
        let changed = cli("check");
        if differences(&changed) == expected || Instant::now() > deadline {
            break changed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(changed.status.code(), Some(1), "{}", stdout(&changed));
    assert_eq!(differences(&changed), expected, "{}", stdout(&changed));
    let summary = format!(
        "{} topics checked, {} match, 2 differ",
        specs.len(),
        specs.len() - 2
    );
    assert!(stdout(&changed).contains(&summary), "{}", stdout(&changed));

    // Leave a shared cluster as we found it.
    let names: Vec<String> = specs
        .iter()
        .map(|s| format!("{prefix}{}", s.name))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    admin
        .delete_topics(&names, &options)
        .await
        .expect("DeleteTopics request");
}

#[test]
fn check_fails_with_a_clear_error_when_the_cluster_is_unreachable() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let output = linewatch(&[
        "topics",
        "check",
        "--topics-dir",
        TOPICS_DIR,
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--timeout-secs",
        "2",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot read cluster metadata"), "{stderr}");
}
