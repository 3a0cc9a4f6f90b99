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
        _ => Err(format!(
            "expected a librdkafka property as key=value, got {arg:?}"
        )),
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
