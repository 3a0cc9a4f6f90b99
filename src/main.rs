//! The `linewatch` command line. Only argument parsing and printing live here; the work is
//! done by the library (`linewatch::kafka::topics`, ...), which the tests call directly.
//!
//! Exit codes: 0 success, 1 the cluster differs from `topics/` (`topics check`) or a file is
//! invalid (`topics validate`), 2 any error (bad arguments, unreachable cluster, ...).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use linewatch::kafka::topics::{self, PlanOptions, TopicAdmin};
use linewatch::kafka::{client_config, parse_client_override, ClientOverride};

/// Alarm correlation and SLA tracking for enterprise dedicated lines, on Apache Kafka.
#[derive(Debug, Parser)]
#[command(name = "linewatch", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or check the Kafka topics described in topics/ (one TOML file per topic).
    #[command(subcommand)]
    Topics(TopicsCommand),
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Create the topics that do not exist yet.
    ///
    /// Existing topics are left unchanged and listed (use `check` to compare them with
    /// their files). Waits until every new partition has a leader. Exits 0 when all exist.
    Create(ClusterArgs),
    /// Compare the cluster with the topic files; exit 1 if anything differs.
    ///
    /// Prints every difference: missing topics, partition counts, replication factors and
    /// each config value the files set (expected vs actual). Configs the files do not
    /// mention are not compared.
    Check(ClusterArgs),
    /// Check the topic files offline (no cluster needed).
    ///
    /// Parses every topic file and checks that the key and value schemas they name exist
    /// and are JSON. Exits 1 on the first invalid file or on any schema problem.
    Validate(TopicsDirArgs),
}

#[derive(Debug, Args)]
struct TopicsDirArgs {
    /// Directory holding one <topic>.toml per topic; schema paths are relative to it.
    #[arg(long, default_value = "topics", value_name = "DIR")]
    topics_dir: PathBuf,
}

#[derive(Debug, Args)]
struct ClusterArgs {
    #[command(flatten)]
    dir: TopicsDirArgs,

    /// Kafka bootstrap servers, host:port[,host:port...].
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", value_name = "SERVERS")]
    bootstrap_servers: String,

    /// A librdkafka client property, e.g. -X security.protocol=SASL_SSL. Repeatable; applied
    /// after --bootstrap-servers, so it wins.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_client_override)]
    client_overrides: Vec<ClientOverride>,

    /// Prepended to every topic name, e.g. "staging." or a random test-run prefix, so that
    /// several isolated copies of the topics can share one cluster.
    #[arg(long, default_value = "", value_name = "PREFIX")]
    prefix: String,

    /// Cap every topic's replication factor (and min.insync.replicas) at N. For
    /// development clusters with fewer brokers than production (use 1 on a single
    /// broker); without it the files' production values are used as written.
    #[arg(long, value_name = "N")]
    replication_factor: Option<i32>,

    /// Timeout for each admin request, and for new topics to get partition leaders.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    timeout_secs: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Topics(TopicsCommand::Validate(args)) => validate(&args),
        Command::Topics(TopicsCommand::Create(args)) => {
            let (admin, plans) = prepare(&args)?;
            let report = runtime()?.block_on(admin.create(&plans))?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Topics(TopicsCommand::Check(args)) => {
            let (admin, plans) = prepare(&args)?;
            let report = runtime()?.block_on(admin.check(&plans))?;
            println!("{report}");
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn validate(args: &TopicsDirArgs) -> anyhow::Result<ExitCode> {
    let specs = match topics::load_dir(&args.topics_dir) {
        Ok(specs) => specs,
        Err(error) => {
            println!("invalid: {error}");
            return Ok(ExitCode::from(1));
        }
    };
    let problems = topics::verify_schemas(&args.topics_dir, &specs);
    for problem in &problems {
        println!("schema problem: {problem}");
    }
    println!(
        "{} topic files, {} schema problems",
        specs.len(),
        problems.len()
    );
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn prepare(args: &ClusterArgs) -> anyhow::Result<(TopicAdmin, Vec<topics::TopicPlan>)> {
    let specs = topics::load_dir(&args.dir.topics_dir)?;
    let options = PlanOptions::new(args.prefix.clone(), args.replication_factor)?;
    let plans = topics::plan_all(&specs, &options)?;
    let config = client_config(&args.bootstrap_servers, &args.client_overrides);
    let admin = TopicAdmin::new(&config, Duration::from_secs(args.timeout_secs))?;
    Ok((admin, plans))
}

/// The admin commands are one-shot: a small current-thread runtime is enough (the blocking
/// metadata call goes to tokio's blocking pool).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
