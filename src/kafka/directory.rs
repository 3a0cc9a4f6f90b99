//! Which instance owns which partitions: read from the stage consumer groups' membership,
//! as the group coordinator reports it. Each stage consumer's `client.id` carries its
//! instance id and HTTP base URL (`<instance>|<url>`), and each member's assignment names
//! its partitions; so an instance can tell a caller where another partition's circuits
//! are answered, with no registry of its own.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

use crate::kafka::client_config;
use crate::kafka::service::ServiceConfig;
use crate::live::{Directory, Member};

/// The `client.id` of a stage consumer of `instance`, reachable at `url`.
pub fn client_id(instance: &str, url: &str) -> String {
    format!("{instance}|{url}")
}

/// `(instance, url)` from a stage consumer's `client.id`; `None` for another client.
pub fn parse_client_id(client_id: &str) -> Option<(&str, &str)> {
    // The URL holds no '|' (checked at start); the instance id might.
    let (instance, url) = client_id.rsplit_once('|')?;
    (url.starts_with("http://") || url.starts_with("https://")).then_some((instance, url))
}

/// The partitions of `topic` in a consumer protocol assignment (version, then an array of
/// topic and partitions, then user data; big-endian).
pub fn assigned_partitions(assignment: &[u8], topic: &str) -> Option<Vec<i32>> {
    let mut r = Reader(assignment);
    let _version = r.i16()?;
    let topics = r.i32()?;
    let mut found = Vec::new();
    for _ in 0..topics.max(0) {
        let len = usize::try_from(r.i16()?).ok()?;
        let wanted = r.bytes(len)? == topic.as_bytes();
        let count = r.i32()?;
        for _ in 0..count.max(0) {
            let p = r.i32()?;
            if wanted {
                found.push(p);
            }
        }
    }
    found.sort_unstable();
    Some(found)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        self.bytes(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.bytes(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Describes the stage groups through a client of its own.
pub struct KafkaDirectory {
    client: BaseConsumer,
    config: Arc<ServiceConfig>,
}

impl KafkaDirectory {
    /// # Errors
    /// When the client cannot be created (bad client settings).
    pub fn new(config: &Arc<ServiceConfig>) -> Result<Self, KafkaError> {
        let client = client_config(&config.bootstrap_servers, &config.client_overrides)
            .set("group.id", format!("{}-directory", config.group_id))
            .create()?;
        Ok(KafkaDirectory {
            client,
            config: config.clone(),
        })
    }
}

impl Directory for KafkaDirectory {
    fn members(&self, stage: &str) -> Result<Vec<Member>, String> {
        let t = &self.config.topics;
        let topic = match stage {
            "fanout" => &t.alarms,
            "circuits" => &t.impacts,
            "incidents" => &t.incident_facts,
            other => return Err(format!("no stage {other}")),
        };
        let group = format!("{}-{stage}", self.config.group_id);
        let list = self
            .client
            .fetch_group_list(Some(&group), Duration::from_secs(5))
            .map_err(|e| format!("cannot describe group {group}: {e}"))?;
        let mut members = Vec::new();
        for g in list.groups() {
            for m in g.members() {
                let Some((instance, url)) = parse_client_id(m.client_id()) else {
                    continue;
                };
                let partitions = m
                    .assignment()
                    .and_then(|a| assigned_partitions(a, topic))
                    .unwrap_or_default();
                members.push(Member {
                    instance: instance.to_string(),
                    url: url.to_string(),
                    partitions,
                });
            }
        }
        members.sort_by(|a, b| a.instance.cmp(&b.instance));
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(1i16.to_be_bytes());
        b.extend((topics.len() as i32).to_be_bytes());
        for (name, parts) in topics {
            b.extend((name.len() as i16).to_be_bytes());
            b.extend(name.as_bytes());
            b.extend((parts.len() as i32).to_be_bytes());
            for p in *parts {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes()); // no user data
        b
    }

    #[test]
    fn partitions_of_one_topic_are_read_from_an_assignment() {
        let a = assignment(&[
            ("tickets.commands", &[2, 0]),
            ("linewatch.impacts", &[2, 0]),
        ]);
        assert_eq!(
            assigned_partitions(&a, "linewatch.impacts"),
            Some(vec![0, 2])
        );
        assert_eq!(assigned_partitions(&a, "other"), Some(vec![]));
        assert_eq!(assigned_partitions(&a[..7], "linewatch.impacts"), None);
    }

    #[test]
    fn client_ids_carry_instance_and_url() {
        let id = client_id("linewatch-host1", "http://10.0.0.5:9464");
        assert_eq!(
            parse_client_id(&id),
            Some(("linewatch-host1", "http://10.0.0.5:9464"))
        );
        assert_eq!(parse_client_id("rdkafka"), None);
        assert_eq!(parse_client_id("a|ftp://x"), None);
    }
}
