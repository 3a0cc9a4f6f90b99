//! The Kafka side of linewatch: everything that talks to a broker lives below this module,
//! so that the domain engine never sees rdkafka.
//!
//! - [`topics`]: topics as code. The specs in `topics/*.toml` are loaded, created on a
//!   cluster and checked against it (`linewatch topics create|check|validate`).
//! - [`client_config`] and [`parse_client_override`]: one way to build an rdkafka
//!   [`ClientConfig`] from a bootstrap address and `-X key=value` overrides, shared by every
//!   command so that security settings (SASL, TLS) are given once, the same way.

pub mod bench;
pub mod directory;
pub mod send;
pub mod service;
pub mod topics;
pub mod watch;

use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

/// A `key=value` librdkafka property given on the command line (`-X key=value`).
pub type ClientOverride = (String, String);

/// Builds the base client configuration: `bootstrap.servers` plus the caller's overrides,
/// applied last so that they win (e.g. `-X security.protocol=SASL_SSL`).
pub fn client_config(bootstrap_servers: &str, overrides: &[ClientOverride]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap_servers);
    for (key, value) in overrides {
        config.set(key, value);
    }
    config
}

/// Parses one `key=value` client override. The value may itself contain `=` (SASL JAAS
/// strings do); only the first `=` splits.
///
/// # Errors
/// A message naming the bad argument when there is no `=` or the key is empty; it is meant
/// for clap's `value_parser`, which shows it to the user.
pub fn parse_client_override(arg: &str) -> Result<ClientOverride, String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        // The argument is not repeated: it may be a password given the wrong way.
        _ => Err("expected a librdkafka property as key=value (the argument is not shown: it may hold a secret)".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_splits_on_the_first_equals_sign() {
        assert_eq!(
            parse_client_override("sasl.jaas.config=a=b"),
            Ok(("sasl.jaas.config".to_owned(), "a=b".to_owned()))
        );
        assert!(parse_client_override("no-equals").is_err());
        assert!(parse_client_override("=value").is_err());
    }

    #[test]
    fn overrides_win_over_the_bootstrap_address() {
        let config = client_config(
            "a:9092",
            &[("bootstrap.servers".to_owned(), "b:9092".to_owned())],
        );
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
    }
}

/// Commit the producer's transaction without rdkafka's flush stall.
///
/// `commit_transaction` first flushes, and rdkafka's `flush` polls in steps of
/// min(remaining, 100 ms) while any record is in flight, so every commit cost at least
/// ~100 ms however little it carried. Polling "1 ms at a time" instead is a busy loop:
/// rdkafka hands librdkafka the remaining time in whole milliseconds, so every call
/// under a millisecond does not wait, and the drain spun at 15 % of the service's CPU
/// (a profile of `bench-kafka`). So the drain is librdkafka's own flush, which sends the
/// records held for `linger.ms` at once and sleeps on a condition until the broker has
/// acknowledged them (the producers report failed deliveries only, see
/// [`throughput_producer`], so nothing is left to serve on success), in slices that
/// serve error reports between them; the flush inside the commit is then a no-op.
///
/// The wait is cut to [`STOPPING_GRACE`] from the moment `stopping` says so (a SIGTERM
/// while the broker does not answer): the drain and the commit are done in slices that
/// look at it, and librdkafka resumes a commit whose call timed out.
///
/// # Errors
/// What `commit_transaction` returns; a drain that outlasts `timeout` leaves the rest to
/// the commit's own flush, whose timeout is the remaining time.
pub fn commit_drained(
    producer: &rdkafka::producer::BaseProducer,
    timeout: std::time::Duration,
    stopping: &dyn Fn() -> bool,
) -> Result<(), KafkaError> {
    use rdkafka::producer::Producer;
    use rdkafka::types::RDKafkaErrorCode;
    use std::time::{Duration, Instant};
    const SLICE_MS: i32 = 50;
    const COMMIT_SLICE: Duration = Duration::from_secs(1);
    let mut deadline = Instant::now() + timeout;
    let mut stop_seen = false;
    let mut look = |deadline: &mut Instant| {
        if !stop_seen && stopping() {
            stop_seen = true;
            *deadline = (*deadline).min(Instant::now() + STOPPING_GRACE);
        }
    };
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        // SAFETY: the pointer is the producer's live librdkafka handle, borrowed for the
        // call; rd_kafka_flush only reads the client's counters and wakes its threads.
        unsafe {
            rdkafka::bindings::rd_kafka_flush(producer.client().native_ptr(), SLICE_MS);
        }
        // A failed delivery's report stays queued (and in flight) until served.
        producer.poll(Duration::ZERO);
        look(&mut deadline);
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let slice = left.clamp(Duration::from_millis(100), COMMIT_SLICE);
        match producer.commit_transaction(slice) {
            Err(KafkaError::Transaction(e))
                if e.code() == RDKafkaErrorCode::OperationTimedOut
                    && e.is_retriable()
                    && Instant::now() + Duration::from_millis(100) < deadline =>
            {
                look(&mut deadline);
            }
            result => return result,
        }
    }
}

/// How long a commit may still wait once the caller is stopping.
pub const STOPPING_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Producer settings for throughput, shared by the stages and the bench's raw pipe so that
/// both are measured alike: large batches (1 MB) collected for up to 5 ms, lz4 compression
/// (measured in BENCHMARKS.md: it runs on librdkafka's threads, and the broker's CPU per
/// alarm fell by a fifth to a half, the service's and the raw pipe's rates rose, even on
/// loopback), delivery reports for failed records only. Each is a default: a value the
/// user gives with `-X` wins.
pub fn throughput_producer(config: &mut ClientConfig) -> &mut ClientConfig {
    // The user's own values (-X) win: these are defaults.
    for (key, value) in [
        ("linger.ms", "5"),
        ("batch.size", "1000000"),
        ("compression.type", "lz4"),
        // Delivery reports for failures only: a transaction's outcome is its commit, and
        // a report per record is work for nothing (and would hold the drain's flush).
        ("delivery.report.only.error", "true"),
    ] {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    config
}

/// The keys of client properties, without their values (for Debug output).
pub fn override_keys(overrides: &[ClientOverride]) -> Vec<String> {
    overrides
        .iter()
        .map(|(k, _)| format!("{k}=<hidden>"))
        .collect()
}

/// A Kafka error as it may be shown: librdkafka's text of a rejected client property
/// repeats the property's value, which may be a password (`-X sasl.password=...` with a
/// typo in the key, say), so that value is cut out.
pub fn redacted(error: &KafkaError) -> String {
    match error {
        KafkaError::ClientConfig(_, desc, key, value) => {
            let desc = if value.is_empty() {
                desc.clone()
            } else {
                desc.replace(value.as_str(), "<value hidden>")
            };
            format!("Kafka client setting {key:?} rejected: {desc}")
        }
        other => other.to_string(),
    }
}

/// `text` with the value of every rejected Kafka client property in `error`'s chain cut
/// out (for messages built from a whole error chain).
pub fn hide_config_values(text: &str, error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = text.to_string();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(KafkaError::ClientConfig(_, _, _, value)) = e.downcast_ref::<KafkaError>() {
            if !value.is_empty() {
                text = text.replace(value.as_str(), "<value hidden>");
            }
        }
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn a_rejected_property_never_shows_its_value() {
        let error = client_config(
            "localhost:9092",
            &[("sasl.pasword".into(), "hunter2".into())],
        )
        .create::<rdkafka::consumer::BaseConsumer>()
        .err()
        .expect("an unknown property is refused");
        assert!(
            error.to_string().contains("hunter2"),
            "librdkafka repeats it"
        );
        let shown = redacted(&error);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("sasl.pasword"), "{shown}");
        let chained = hide_config_values(&format!("error: {error}"), &error);
        assert!(!chained.contains("hunter2"), "{chained}");
    }
}
