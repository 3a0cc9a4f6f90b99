//! The HTTP layer on its own (no Kafka): access control, parameter errors, readiness, and
//! where a caller is sent for a circuit another instance owns, against a fake directory.
//! The whole service behind it is tested in `operations_kafka.rs`.

mod common;

use std::sync::Arc;

use linewatch::http::{App, HttpServer, Inventory, Token};
use linewatch::live::{partition_for_key, Directory, Live, Member, STAGES};
use linewatch::views::CircuitView;
use serde_json::{json, Value};

struct Fake {
    members: Vec<Member>,
}

impl Directory for Fake {
    fn members(&self, _stage: &str) -> Result<Vec<Member>, String> {
        Ok(self.members.clone())
    }
}

struct NoInventory;

impl Inventory for NoInventory {
    fn circuit(&self, _circuit_id: &str, _partition: i32) -> Option<CircuitView> {
        None
    }
}

/// An instance owning partitions 0 and 1 of 4; "other" owns 2; nobody owns 3.
fn serve(token: Option<&str>) -> (HttpServer, Arc<Live>, String) {
    let live = Arc::new(Live::new("me", "http://127.0.0.1:1"));
    let directory = Fake {
        members: vec![
            Member {
                instance: "me".into(),
                url: "http://127.0.0.1:1".into(),
                partitions: vec![0, 1],
            },
            Member {
                instance: "other".into(),
                url: "http://other.example:9464".into(),
                partitions: vec![2],
            },
        ],
    };
    let app = App::new(
        live.clone(),
        Arc::new(directory),
        Arc::new(NoInventory),
        token.and_then(Token::new),
        None,
    );
    let server = HttpServer::start("127.0.0.1:0".parse().unwrap(), app).expect("listens");
    let base = format!("http://{}", server.local_addr);
    (server, live, base)
}

fn get(url: &str, token: Option<&str>) -> (u16, Option<String>, Value) {
    let reply = common::http::get(url, token);
    let body = serde_json::from_str(&reply.text).unwrap_or(Value::String(reply.text.clone()));
    (reply.status, reply.location, body)
}

fn own(live: &Live, partitions: &[i32]) {
    for s in STAGES {
        live.update_stage(s, |i| {
            i.joined = true;
            i.restoring = false;
            i.partitions = partitions.to_vec();
            i.partition_count = 4;
        });
    }
}

/// A circuit id that lands in partition `p` of 4.
fn circuit_in(p: i32) -> String {
    (0..)
        .map(|i| format!("C-{i}"))
        .find(|c| partition_for_key(c.as_bytes(), 4) == p)
        .expect("some id")
}

#[test]
fn the_api_needs_the_token_while_health_and_metrics_do_not() {
    let (_server, live, base) = serve(Some("t0ken"));
    live.set_replica_ready(3);
    own(&live, &[0, 1]);
    for path in [
        "/api/v1/tickets",
        "/api/v1/incidents",
        "/api/v1/circuits/C-1",
    ] {
        for token in [None, Some("wrong"), Some("t0ke")] {
            let (status, _, body) = get(&format!("{base}{path}"), token);
            assert_eq!(status, 401, "{path} {token:?}");
            assert_eq!(body, json!({"error": "unauthorized"}));
        }
        assert_ne!(
            get(&format!("{base}{path}"), Some("t0ken")).0,
            401,
            "{path}"
        );
    }
    for path in ["/healthz", "/readyz", "/openapi.json", "/"] {
        assert_eq!(get(&format!("{base}{path}"), None).0, 200, "{path}");
    }
}

#[test]
fn readiness_follows_the_replica_and_the_restores() {
    let (_server, live, base) = serve(None);
    let (status, _, body) = get(&format!("{base}/readyz"), None);
    assert_eq!(status, 503);
    assert!(body["reasons"].as_array().is_some_and(|r| !r.is_empty()));
    live.set_replica_ready(3);
    own(&live, &[0, 1]);
    assert_eq!(get(&format!("{base}/readyz"), None).0, 200);
    live.update_stage("circuits", |i| i.restoring = true);
    assert_eq!(get(&format!("{base}/readyz"), None).0, 503);
}

#[test]
fn a_circuit_is_answered_here_sent_to_its_owner_or_retried_later() {
    let (_server, live, base) = serve(None);
    own(&live, &[0, 1]);
    let here = circuit_in(0);
    let (status, _, body) = get(&format!("{base}/api/v1/circuits/{here}"), None);
    assert_eq!(status, 404, "owned here, unknown: {body}");
    assert_eq!(body["partition"], 0);

    let there = circuit_in(2);
    let (status, location, body) = get(&format!("{base}/api/v1/circuits/{there}"), None);
    assert_eq!(status, 307);
    assert_eq!(
        location.as_deref(),
        Some(format!("http://other.example:9464/api/v1/circuits/{there}").as_str())
    );
    assert_eq!(body["owner"]["instance"], "other");

    let nowhere = circuit_in(3);
    let (status, _, body) = get(&format!("{base}/api/v1/circuits/{nowhere}"), None);
    assert_eq!(status, 503);
    assert_eq!(body["error"], "no_owner");
}

#[test]
fn lists_name_their_partitions_and_the_other_instances_and_refuse_bad_parameters() {
    let (_server, live, base) = serve(None);
    own(&live, &[0, 1]);
    let (status, _, body) = get(&format!("{base}/api/v1/tickets"), None);
    assert_eq!(status, 200);
    assert_eq!(body["partitions"], json!([0, 1]));
    assert_eq!(body["partitionCount"], 4);
    assert_eq!(
        body["otherInstances"],
        json!([{"instance": "other", "url": "http://other.example:9464", "partitions": [2]}])
    );
    assert_eq!(body["tickets"], json!([]));
    for query in ["level=AAAA", "status=open", "limit=0", "limit=x"] {
        let (status, _, body) = get(&format!("{base}/api/v1/tickets?{query}"), None);
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"], "bad_request");
    }
    let (status, _, _) = get(&format!("{base}/api/v1/circuits?status=at_risk"), None);
    assert_eq!(status, 200);
    assert_eq!(
        get(&format!("{base}/api/v1/circuits?status=bad"), None).0,
        400
    );
}

/// Without a token the API answers only requests addressed to this machine (a page of
/// another site re-pointed at 127.0.0.1 still names its own host).
#[test]
fn without_a_token_only_local_host_names_are_answered() {
    use std::io::{Read, Write};
    let (server, live, base) = serve(None);
    own(&live, &[0, 1]);
    assert_eq!(get(&format!("{base}/api/v1/tickets"), None).0, 200);
    let mut stream = std::net::TcpStream::connect(server.local_addr).expect("connects");
    stream
        .write_all(
            b"GET /api/v1/tickets HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        )
        .expect("writes");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reads");
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(!reply.contains("tickets\""), "{reply}");
}
