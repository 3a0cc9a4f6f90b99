//! The HTTP layer on its own (no Kafka): access control, parameter errors, readiness, and
//! where a caller is sent for a circuit another instance owns, against a fake directory.
//! The whole service behind it is tested in `operations_kafka.rs`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use linewatch::http::{App, HttpServer, Inventory, Timeouts, Token};
use linewatch::live::{partition_for_key, Directory, Live, Member, STAGES};
use linewatch::views::CircuitView;
use serde_json::{json, Value};

struct Fake {
    members: Vec<Member>,
    /// How long each look-up takes.
    delay: Duration,
}

impl Directory for Fake {
    fn members(&self, _stage: &str) -> Result<Vec<Member>, String> {
        std::thread::sleep(self.delay);
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
    serve_with(token, Timeouts::default(), Duration::ZERO)
}

/// [`serve`] with other timeouts, and a directory answering after `delay`.
fn serve_with(
    token: Option<&str>,
    timeouts: Timeouts,
    delay: Duration,
) -> (HttpServer, Arc<Live>, String) {
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
        delay,
    };
    let app = App::new(
        live.clone(),
        Arc::new(directory),
        Arc::new(NoInventory),
        token.and_then(Token::new),
        None,
    );
    let server =
        HttpServer::start_with("127.0.0.1:0".parse().unwrap(), app, timeouts).expect("listens");
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

/// Send `request` (a whole request, `Connection: close`) as it is, and read the reply.
fn raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("sets a timeout");
    stream.write_all(request.as_bytes()).expect("writes");
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

/// The status of a raw reply (0 when there is none).
fn status(reply: &str) -> u16 {
    reply
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A Host header is read strictly: a name or an address, then nothing or a port in digits.
#[test]
fn without_a_token_a_malformed_host_is_refused() {
    let (server, live, _base) = serve(None);
    own(&live, &[0, 1]);
    let ask = |head: &str| {
        let reply = raw(
            server.local_addr,
            &format!("GET /api/v1/tickets HTTP/1.1\r\n{head}Connection: close\r\n\r\n"),
        );
        if status(&reply) != 200 {
            assert!(!reply.contains("tickets\""), "{reply}");
        }
        status(&reply)
    };
    for host in ["localhost:9464", "LOCALHOST", "127.0.0.1:1", "[::1]:65535"] {
        assert_eq!(ask(&format!("Host: {host}\r\n")), 200, "{host}");
    }
    for host in [
        "localhost:evil",
        "localhost:",
        "localhost:0",
        "localhost:65536",
        "localhost:80:80",
        "127.0.0.1:9464:evil",
        "[::1]evil",
        "[::1]:x",
        "evil@localhost",
        "localhost@evil.example",
    ] {
        assert_eq!(ask(&format!("Host: {host}\r\n")), 403, "{host}");
    }
    // One Host, and the same rule for the authority of a request in absolute form.
    assert_eq!(
        ask("Host: localhost\r\nHost: evil.example\r\n"),
        403,
        "two hosts"
    );
    let reply = raw(
        server.local_addr,
        "GET http://evil.example/api/v1/tickets HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&reply), 403, "{reply}");
}

/// A path under /api/v1/ that does not exist is refused like one that does: nobody
/// without the token learns which paths exist.
#[test]
fn unknown_api_paths_need_the_token_too() {
    let (server, live, base) = serve(Some("t0ken"));
    own(&live, &[0, 1]);
    for path in [
        "/api/v1",
        "/api/v1/",
        "/api/v1/nope",
        "/api/v1/tickets/x",
        "/api/v1/circuits/C-1/x",
    ] {
        for token in [None, Some("wrong")] {
            let reply = common::http::get(&format!("{base}{path}"), token);
            assert_eq!(reply.status, 401, "{path} {token:?}");
            assert_eq!(reply.json(), json!({"error": "unauthorized"}), "{path}");
            assert_eq!(
                reply.www_authenticate.as_deref(),
                Some("Bearer realm=\"linewatch\"")
            );
        }
        assert_eq!(
            get(&format!("{base}{path}"), Some("t0ken")).0,
            404,
            "{path}"
        );
    }
    // Nor another method on a known path.
    let reply = raw(
        server.local_addr,
        "DELETE /api/v1/tickets HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&reply), 401, "{reply}");
    // Without a token, a request for another host is refused before any routing too.
    let (server, _live, _base) = serve(None);
    let reply = raw(
        server.local_addr,
        "GET /api/v1/nope HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&reply), 403, "{reply}");
}

/// The scheme's name is case-insensitive (RFC 7235); the token itself is not.
#[test]
fn the_bearer_scheme_is_accepted_in_any_case() {
    let (server, _live, _base) = serve(Some("t0ken"));
    let ask = |authorization: &str| {
        status(&raw(
            server.local_addr,
            &format!(
                "GET /api/v1/instance HTTP/1.1\r\nHost: localhost\r\n\
                 Authorization: {authorization}\r\nConnection: close\r\n\r\n"
            ),
        ))
    };
    for ok in [
        "Bearer t0ken",
        "bearer t0ken",
        "BEARER t0ken",
        "bEaReR t0ken",
    ] {
        assert_eq!(ask(ok), 200, "{ok}");
    }
    for bad in [
        "bearer T0KEN",
        "bearer wrong",
        "Basic t0ken",
        "bearer",
        "bearert0ken",
    ] {
        assert_eq!(ask(bad), 401, "{bad}");
    }
}

/// Timeouts of a second, for the tests of slow clients.
const SHORT: Timeouts = Timeouts {
    header_read: Duration::from_secs(1),
    idle: Duration::from_secs(1),
};

/// How long after its timeout a connection must be closed by.
const MARGIN: Duration = Duration::from_secs(3);

/// Wait for the server to close `stream`, writing `trickle` (if any) a byte every 200 ms
/// meanwhile; how long it took, or a panic if it stays open past the timeout's margin.
fn closed_within(mut stream: TcpStream, trickle: &[u8], what: &str) -> Duration {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("sets a timeout");
    let mut trickle = trickle.iter().cycle();
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            start.elapsed() < SHORT.header_read + MARGIN,
            "{what}: still open after {:?}",
            start.elapsed()
        );
        if let Some(byte) = trickle.next() {
            if stream.write_all(&[*byte]).is_err() {
                return start.elapsed();
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(n) => panic!(
                "{what}: unexpected reply {}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return start.elapsed(),
        }
    }
}

/// A client that sends part of a request and then nothing (or a byte now and then) is
/// closed once the header-read timeout has passed, and so is one that sends nothing.
#[test]
fn a_partial_request_is_closed_after_the_header_read_timeout() {
    let (server, _live, _base) = serve_with(None, SHORT, Duration::ZERO);
    for (what, sent, trickle) in [
        ("nothing", &b""[..], &b""[..]),
        ("half a request line", b"GET /heal", b""),
        (
            "headers without their end",
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n",
            b"",
        ),
        (
            "a header a byte at a time",
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ",
            b"a",
        ),
    ] {
        let mut stream = TcpStream::connect(server.local_addr).expect("connects");
        stream.write_all(sent).expect("writes");
        let took = closed_within(stream, trickle, what);
        assert!(
            took >= Duration::from_millis(500),
            "{what}: closed after {took:?}"
        );
    }
}

/// A kept-alive connection serves further requests, and is closed after the idle timeout
/// without one.
#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let (server, _live, _base) = serve_with(None, SHORT, Duration::ZERO);
    let mut stream = TcpStream::connect(server.local_addr).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("sets a timeout");
    for _ in 0..3 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("writes");
        let mut reply = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&reply).contains("{\"status\":\"ok\"}") {
            let n = stream.read(&mut buf).expect("reads the answer");
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&reply));
            reply.extend_from_slice(&buf[..n]);
        }
        // Less than the idle timeout between requests: the connection stays.
        std::thread::sleep(Duration::from_millis(600));
    }
    let took = closed_within(stream, b"", "idle");
    assert!(took >= Duration::from_millis(100), "closed after {took:?}");
}

/// The timeouts are the client's: an answer that takes longer than them is not cut.
#[test]
fn a_slow_answer_outlasts_the_timeouts() {
    let (_server, live, base) = serve_with(None, SHORT, Duration::from_millis(2500));
    own(&live, &[0, 1]);
    let started = Instant::now();
    let (status, _, body) = get(&format!("{base}/api/v1/tickets"), None);
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the directory was asked"
    );
}

mod scenario;

#[test]
fn figures_over_any_span_come_from_the_circuits_facts_and_bad_spans_are_refused() {
    use linewatch::engine::{Engine, Input, Output};
    use linewatch::inventory::{InventoryChange, ObjectKind};
    use linewatch::levels::{AssuranceLevel, CustomerLevel, Scope, Severity};
    use linewatch::policy::Policy;
    use scenario::{alarm, circuit, clear, element, run, sh};

    // An AAA circuit owned here, down 08:00-10:00 on 10 March 2026 (Shanghai).
    let (_server, live, base) = serve(None);
    own(&live, &[0, 1]);
    let id = circuit_in(0);
    let path = vec![
        element(ObjectKind::Ne, "CPE-H", "cpe", "CPE"),
        element(ObjectKind::Port, "PTN-H/1/1", "transmission", "PTN"),
    ];
    let inventory = circuit(
        &id,
        CustomerLevel::Bronze,
        AssuranceLevel::Aaa,
        Scope::IntraCity,
        vec![path],
    );
    let los = alarm(
        "H1",
        "PTN-NMS",
        "PTN-H/1/1",
        "LOS",
        Severity::Critical,
        sh(2026, 3, 10, 8, 0, 0),
    );
    let mut engine = Engine::new(Policy::builtin());
    let out = run(
        &mut engine,
        vec![
            Input::Inventory(InventoryChange::Upsert(Box::new(inventory))),
            Input::Alarm(los.clone()),
            Input::Alarm(clear(&los, sh(2026, 3, 10, 10, 0, 0))),
        ],
        sh(2026, 3, 10, 10, 0, 0),
    );
    // Its view as built with the partition's clock at 12:00: the facts are known up to
    // then (the circuit has been up since 10:00), and the figures are as of then.
    let view = engine
        .states()
        .view(
            &id,
            0,
            engine.network(),
            engine.policy(),
            Some(sh(2026, 3, 10, 12, 0, 0)),
        )
        .expect("a view");
    live.views.put_circuit(view);
    let url =
        |from: &str, to: &str| format!("{base}/api/v1/circuits/{id}/figures?from={from}&to={to}");

    // The day of the fault, as its kpi.circuits record has it.
    let (status, _, body) = get(
        &url("2026-03-10T00:00:00%2B08:00", "2026-03-11T00:00:00%2B08:00"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let day = out
        .iter()
        .rev()
        .find_map(|o| match o {
            Output::Figures(f) if f.period == "2026-03-10" => {
                Some(serde_json::to_value(f).unwrap())
            }
            _ => None,
        })
        .expect("a day record");
    // The record is as of the restoration; the answer as of 12:00, all else equal.
    assert_eq!(body["asOf"], "2026-03-10T04:00:00Z");
    let mut day = day;
    day["asOf"] = body["asOf"].clone();
    day["availability"] = body["availability"].clone();
    assert_eq!(body, day);
    assert_eq!(body["availability"], 1.0 - 7200.0 / (12.0 * 3600.0));
    assert_eq!(
        (body["failures"].as_u64(), body["outageSeconds"].as_u64()),
        (Some(1), Some(7200))
    );

    // As the OpenAPI document describes it.
    let openapi: Value = serde_json::from_str(include_str!("../docs/openapi.json")).unwrap();
    let schema = json!({
        "$ref": "#/components/schemas/SpanFigures",
        "components": openapi["components"],
    });
    let described = jsonschema::validator_for(&schema).expect("SpanFigures compiles");
    assert!(described.is_valid(&body), "{body}");
    assert!(!described.is_valid(&json!({"period": 2026})));

    // The year, with its limits: 2 h is past AAA's 52.56 min budget.
    let (status, _, body) = get(
        &url("2026-01-01T00:00:00%2B08:00", "2027-01-01T00:00:00%2B08:00"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["period"].as_str(), body["status"].as_str()),
        (Some("2026"), Some("breached"))
    );
    assert_eq!(body["failureLimit"], 4);

    // An hour, written in UTC: half of it down; no limits for a span that is no period.
    let (status, _, body) = get(&url("2026-03-10T01:30:00Z", "2026-03-10T02:30:00Z"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["period"], "2026-03-10T01:30:00Z/2026-03-10T02:30:00Z");
    assert_eq!(
        (body["failures"].as_u64(), body["outageSeconds"].as_u64()),
        (Some(0), Some(1800))
    );
    assert_eq!(body["availability"], 0.5);
    assert!(described.is_valid(&body), "{body}");
    assert_eq!(
        (body["failureLimit"].clone(), body["status"].clone()),
        (Value::Null, json!("ok"))
    );
    // An unescaped '+' arrives as a space, and is read as the '+' it was.
    let (status, _, body) = get(
        &url("2026-03-10T09:30:00+08:00", "2026-03-10T10:30:00+08:00"),
        None,
    );
    assert_eq!(
        (status, body["outageSeconds"].as_u64()),
        (200, Some(1800)),
        "{body}"
    );

    // A space between date and time is RFC 3339 too.
    let (status, _, body) = get(
        &url(
            "2026-03-10%2009:30:00%2B08:00",
            "2026-03-10T10:30:00%2B08:00",
        ),
        None,
    );
    assert_eq!(
        (status, body["outageSeconds"].as_u64()),
        (200, Some(1800)),
        "{body}"
    );

    // Bad spans: 400 with the reason.
    for (query, reason) in [
        ("to=2026-03-11T00:00:00Z", "from is required"),
        ("from=2026-03-10T00:00:00Z", "to is required"),
        (
            "from=yesterday&to=2026-03-11T00:00:00Z",
            "from is not an RFC 3339 time",
        ),
        (
            "from=2026-03-10T00:00:00&to=2026-03-11T00:00:00Z",
            "from is not an RFC 3339 time",
        ),
        (
            "from=2026-03-11T00:00:00Z&to=2026-03-11T00:00:00Z",
            "to must be after from",
        ),
        (
            "from=2026-03-11T00:00:00Z&to=2026-03-10T00:00:00Z",
            "to must be after from",
        ),
        (
            "from=2025-01-01T00:00:00Z&to=2026-01-02T00:00:01Z",
            "at most 366 days",
        ),
    ] {
        let (status, _, body) = get(
            &format!("{base}/api/v1/circuits/{id}/figures?{query}"),
            None,
        );
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"], "bad_request");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{query}: {message}");
    }
    // 366 days is allowed.
    let (status, _, _) = get(&url("2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z"), None);
    assert_eq!(status, 200);

    // Another instance's circuit: sent there, with the same question.
    let there = circuit_in(2);
    let query = "from=2026-03-10T00:00:00Z&to=2026-03-11T00:00:00Z";
    let (status, location, _) = get(
        &format!("{base}/api/v1/circuits/{there}/figures?{query}"),
        None,
    );
    assert_eq!(status, 307);
    assert_eq!(
        location.as_deref(),
        Some(format!("http://other.example:9464/api/v1/circuits/{there}/figures?{query}").as_str())
    );
    // A circuit owned here but unknown: 404.
    let unknown = format!("{id}-X");
    let unknown = if partition_for_key(unknown.as_bytes(), 4) <= 1 {
        unknown
    } else {
        circuit_in(1)
    };
    let (status, _, _) = get(
        &format!("{base}/api/v1/circuits/{unknown}/figures?{query}"),
        None,
    );
    assert_eq!(status, 404);
}
