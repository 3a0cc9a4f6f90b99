//! The Kafka runtime on the real broker, with `linewatch run` as child processes: the
//! same answers as the replay command, through crashes, scale-out and a paused zombie,
//! and bad input that never stops the pipeline.

mod common;
mod pipeline;

use std::time::Duration;

use linewatch::kafka::service::TopicNames;
use pipeline::*;

const SETTLE: Duration = Duration::from_secs(3);
const LIMIT: Duration = Duration::from_secs(240);

struct Setup {
    bootstrap: String,
    prefix: String,
    group: String,
    topics: TopicNames,
    /// Logs of the instances, the replay's files and the run's output, kept for a look
    /// after a failure (under target/tmp).
    dir: std::path::PathBuf,
}

async fn setup(name: &str) -> Setup {
    let bootstrap = common::bootstrap();
    let prefix = format!("{}.", common::unique_name(name));
    common::create_service_topics(&bootstrap, &prefix, PARTITIONS).await;
    Setup {
        topics: TopicNames::with_prefix(&prefix),
        group: common::unique_name(&format!("{name}-lw")),
        bootstrap,
        dir: {
            let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(&prefix);
            std::fs::create_dir_all(&d).expect("dir");
            d
        },
        prefix,
    }
}

impl Setup {
    fn start(&self, name: &str) -> Instance {
        Instance::start(
            &self.bootstrap,
            &self.prefix,
            &self.group,
            name,
            self.dir.as_path(),
        )
    }

    fn settle(&self) {
        wait_quiescent(&self.bootstrap, &self.group, &self.topics, SETTLE, LIMIT);
    }

    /// Feed the scenario in its two phases, with the ticketing system's commands between
    /// them, calling `during` while each phase is being processed; return the commands.
    fn feed(&self, s: &Scenario, mut during: impl FnMut(u32)) -> Vec<Rec> {
        produce(&self.bootstrap, &self.topics.inventory, &s.inventory);
        produce(&self.bootstrap, &self.topics.alarms, &s.phase1);
        during(1);
        self.settle();
        let tickets = read_outputs(&self.bootstrap, &self.topics).tickets;
        let commands = commands_at_split(&open_tickets(&tickets), s.split);
        assert!(
            !commands.is_empty(),
            "the scenario has tickets open at the split"
        );
        produce(&self.bootstrap, &self.topics.commands, &commands);
        self.settle();
        produce(&self.bootstrap, &self.topics.alarms, &s.phase2);
        during(2);
        self.settle();
        commands
    }

    fn replay(&self, s: &Scenario, commands: &[Rec]) -> Outputs {
        let alarms: Vec<Rec> = s.phase1.iter().chain(&s.phase2).cloned().collect();
        replay(
            &self.dir.as_path().join("replay"),
            &s.inventory,
            &alarms,
            commands,
            s.end,
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_gives_the_same_tickets_figures_and_incidents_as_replay() {
    let setup = setup("same").await;
    let scenario = storm(11, 80, 70);
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
