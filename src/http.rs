//! The HTTP listener of `linewatch run`: health, Prometheus metrics, the query API and the
//! NOC view (`docs/openapi.json` describes every endpoint).
//!
//! Health, readiness, metrics, the OpenAPI document and the NOC page's shell are open;
//! everything under `/api/v1/` (customer names and circuits are confidential) needs the
//! bearer token when one is configured. The listener binds to loopback unless told
//! otherwise, and [`check_exposure`] refuses a non-loopback address without a token.
//! No token, presented or configured, is ever logged or echoed.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics::gauge;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::levels::AssuranceLevel;
use crate::live::{partition_for_key, Directory, Live, Member};
use crate::sla::Status;
use crate::telemetry;
use crate::ticket::TicketStatus;
use crate::views::{CircuitView, TicketFilter};

/// The NOC view: one self-contained page, no build step.
const NOC_PAGE: &str = include_str!("http/noc.html");
/// The query API's description.
const OPENAPI: &str = include_str!("../docs/openapi.json");

/// How long requests in flight may take to finish when the listener stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How often the metrics recorder's histograms are drained.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// How long the membership of another stage's group is reused before asking again.
const DIRECTORY_TTL: Duration = Duration::from_secs(3);

/// A bearer token: compared in constant time, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// `None` for an empty or blank token.
    pub fn new(token: &str) -> Option<Token> {
        let t = token.trim();
        (!t.is_empty()).then(|| Token(t.to_string()))
    }

    fn matches(&self, presented: &str) -> bool {
        // Equal digests, compared without an early exit: neither the length nor a prefix
        // of the token leaks through timing.
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(presented.as_bytes());
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(redacted)")
    }
}

/// Looks up circuits this instance has no state for in its inventory replica.
pub trait Inventory: Send + Sync {
    fn circuit(&self, circuit_id: &str, partition: i32) -> Option<CircuitView>;
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct App {
    pub live: Arc<Live>,
    pub directory: Arc<dyn Directory>,
    pub inventory: Arc<dyn Inventory>,
    pub token: Option<Token>,
    pub metrics: Option<PrometheusHandle>,
    cache: Arc<Mutex<MemberCache>>,
}

/// Members of each stage's group, with when they were read.
type MemberCache = BTreeMap<String, (Instant, Vec<Member>)>;

impl App {
    pub fn new(
        live: Arc<Live>,
        directory: Arc<dyn Directory>,
        inventory: Arc<dyn Inventory>,
        token: Option<Token>,
        metrics: Option<PrometheusHandle>,
    ) -> App {
        App {
            live,
            directory,
            inventory,
            token,
            metrics,
            cache: Arc::default(),
        }
    }

    /// The other instances owning partitions of `stage` (cached for a few seconds).
    async fn others(&self, stage: &str) -> Result<Vec<Member>, String> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, members)) = cache.get(stage) {
                if at.elapsed() < DIRECTORY_TTL {
                    return Ok(members.clone());
                }
            }
        }
        let directory = self.directory.clone();
        let name = stage.to_string();
        let members = tokio::task::spawn_blocking(move || directory.members(&name))
            .await
            .map_err(|e| format!("directory lookup failed: {e}"))??;
        let others: Vec<Member> = members
            .into_iter()
            .filter(|m| m.instance != self.live.instance)
            .collect();
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(stage.to_string(), (Instant::now(), others.clone()));
        }
        Ok(others)
    }
}

/// Refuse to expose the API without a token: a listener on anything but loopback needs one.
///
/// # Errors
/// A message naming the address and the two ways out.
pub fn check_exposure(listen: SocketAddr, token: Option<&Token>) -> Result<(), String> {
    if listen.ip().is_loopback() || token.is_some() {
        Ok(())
    } else {
        Err(format!(
            "the HTTP listener {listen} is not a loopback address, and the query API and NOC \
             view show confidential customer data: set a bearer token (LINEWATCH_HTTP_TOKEN \
             or --http-token-file), or listen on 127.0.0.1"
        ))
    }
}

/// The routes.
pub fn router(app: App) -> Router {
    let api = Router::new()
        .route("/api/v1/instance", get(instance))
        .route("/api/v1/tickets", get(tickets))
        .route("/api/v1/circuits", get(circuits))
        .route("/api/v1/circuits/{id}", get(circuit))
        .route("/api/v1/incidents", get(incidents))
        .route_layer(middleware::from_fn_with_state(app.clone(), authorize));
    Router::new()
        .route("/", get(|| async { Html(NOC_PAGE) }))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .merge(api)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(app)
}

/// A running listener; dropping it stops it (requests in flight get [`SHUTDOWN_GRACE`]).
pub struct HttpServer {
    pub local_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Bind `listen` (here, so that a taken port is an error at start) and serve on a
    /// thread of its own.
    ///
    /// # Errors
    /// When the address cannot be bound or the runtime cannot start.
    pub fn start(listen: SocketAddr, app: App) -> std::io::Result<HttpServer> {
        Self::serve(TcpListener::bind(listen)?, app)
    }

    /// Serve on a listener already bound.
    ///
    /// # Errors
    /// When the listener or the runtime cannot be set up.
    pub fn serve(listener: TcpListener, app: App) -> std::io::Result<HttpServer> {
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("http")
            .enable_all()
            .build()?;
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let upkeep = app.metrics.clone();
        let thread = std::thread::Builder::new()
            .name("http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    // Histogram samples wait in buckets until drained: drain them even when
                    // nobody scrapes, so that they cannot pile up.
                    if let Some(handle) = upkeep {
                        tokio::spawn(async move {
                            loop {
                                tokio::time::sleep(UPKEEP_EVERY).await;
                                handle.run_upkeep();
                            }
                        });
                    }
                    let (drain, draining) = tokio::sync::oneshot::channel::<()>();
                    let serve = axum::serve(listener, router(app)).with_graceful_shutdown(async {
                        let _ = draining.await;
                    });
                    let server = tokio::spawn(async move {
                        if let Err(e) = serve.await {
                            warn!(error = %e, "HTTP listener stopped");
                        }
                    });
                    let _ = stopped.await;
                    let _ = drain.send(());
                    // Requests in flight get a moment to finish; a client that never
                    // completes its request does not hold up the service's stop.
                    if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
                        warn!("HTTP connections still open at shutdown; closing them");
                    }
                });
                runtime.shutdown_timeout(Duration::from_millis(100));
            })?;
        info!(address = %local_addr, "HTTP listener up");
        Ok(HttpServer {
            local_addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": code, "message": message}))).into_response()
}

/// A bad query parameter (400), with what is allowed.
struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, "bad_request", &self.0)
    }
}

async fn authorize(State(app): State<App>, request: Request, next: Next) -> Response {
    let Some(token) = &app.token else {
        // No token, so a loopback listener: only pages of this machine may ask. A page of
        // another site whose name has been re-pointed at 127.0.0.1 (DNS rebinding) still
        // sends its own name as the Host.
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if local_host(host, &app.live.url) {
            return next.run(request).await;
        }
        info!(path = %request.uri().path(), "request for another host name refused");
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "without a token, the API answers only requests addressed to localhost or the advertised URL",
        );
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|p| token.matches(p.trim())) {
        return next.run(request).await;
    }
    info!(
        path = %request.uri().path(),
        credentials = if presented.is_some() { "wrong" } else { "missing" },
        "unauthorized request"
    );
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "unauthorized"})),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"linewatch\""),
    );
    response
}

async fn readyz(State(app): State<App>) -> Response {
    if app.live.ready() {
        Json(json!({"ready": true})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reasons": app.live.not_ready_reasons()})),
        )
            .into_response()
    }
}

async fn metrics_text(State(app): State<App>) -> Response {
    let Some(handle) = &app.metrics else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "metrics are not recorded",
        );
    };
    // While a stage restores, its views are partial: the gauges keep their last values
    // rather than dip.
    if app.live.ready() {
        telemetry::set_state_gauges(&app.live.views.counts());
    }
    gauge!(telemetry::READY).set(if app.live.ready() { 1.0 } else { 0.0 });
    gauge!(telemetry::INVENTORY_CIRCUITS).set(app.live.inventory_circuits() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

async fn instance(State(app): State<App>) -> Response {
    let circuits = app.live.stage("circuits");
    let incidents = app.live.stage("incidents");
    Json(json!({
        "instance": app.live.instance,
        "url": app.live.url,
        "ready": app.live.ready(),
        "circuitPartitions": circuits.partitions,
        "incidentPartitions": incidents.partitions,
        "circuitPartitionCount": circuits.partition_count,
        "incidentPartitionCount": incidents.partition_count,
    }))
    .into_response()
}

/// The header of every list: who answers, for which partitions, and who has the others;
/// or 503 while the stage's share is not restored (a list would be partial).
async fn list_header(app: &App, stage: &str) -> Result<serde_json::Map<String, Value>, Response> {
    let info = app.live.stage(stage);
    if !info.joined || info.restoring {
        return Err(unavailable(json!({
            "error": "restoring",
            "message": format!("the {stage} stage of this instance is restoring its partitions' state; try again"),
        })));
    }
    let others = match app.others(stage).await {
        Ok(m) => m,
        Err(e) => {
            warn!(stage, error = %e, "cannot list the other instances");
            Vec::new()
        }
    };
    let mut header = serde_json::Map::new();
    header.insert("instance".into(), json!(app.live.instance));
    header.insert("url".into(), json!(app.live.url));
    header.insert("partitions".into(), json!(info.partitions));
    header.insert("partitionCount".into(), json!(info.partition_count));
    header.insert("otherInstances".into(), json!(others));
    Ok(header)
}

#[derive(Debug, Deserialize)]
struct TicketQuery {
    team: Option<String>,
    level: Option<String>,
    status: Option<String>,
    limit: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CircuitQuery {
    status: Option<String>,
    limit: Option<String>,
}

/// A query value read as the wire name of `T` (e.g. "AAA", "inProgress", "at_risk").
fn wire<T: serde::de::DeserializeOwned>(
    name: &str,
    value: Option<&str>,
    allowed: &str,
) -> Result<Option<T>, BadRequest> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => serde_json::from_value(Value::String(v.to_string()))
            .map(Some)
            .map_err(|_| BadRequest(format!("{name} must be one of {allowed}"))),
    }
}

fn limit(value: Option<&str>, default: usize) -> Result<usize, BadRequest> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=5000).contains(&n) => Ok(n),
            _ => Err(BadRequest(
                "limit must be a whole number from 1 to 5000".into(),
            )),
        },
    }
}

async fn tickets(State(app): State<App>, Query(q): Query<TicketQuery>) -> Response {
    let filter = (|| {
        Ok::<_, BadRequest>(TicketFilter {
            team: q.team.clone().filter(|t| !t.is_empty()),
            level: wire::<AssuranceLevel>("level", q.level.as_deref(), "AAA, AA, A, ordinary")?,
            status: wire::<TicketStatus>(
                "status",
                q.status.as_deref(),
                "acknowledged, inProgress, resolved",
            )?,
        })
    })();
    let (filter, limit) = match (filter, limit(q.limit.as_deref(), 200)) {
        (Ok(f), Ok(l)) => (f, l),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    let mut body = match list_header(&app, "circuits").await {
        Ok(b) => b,
        Err(e) => return e,
    };
    body.insert(
        "tickets".into(),
        json!(app.live.views.tickets(&filter, limit)),
    );
    Json(Value::Object(body)).into_response()
}

async fn circuits(State(app): State<App>, Query(q): Query<CircuitQuery>) -> Response {
    let status = match wire::<Status>("status", q.status.as_deref(), "ok, at_risk, breached") {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let limit = match limit(q.limit.as_deref(), 50) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let mut body = match list_header(&app, "circuits").await {
        Ok(b) => b,
        Err(e) => return e,
    };
    body.insert(
        "circuits".into(),
        json!(app.live.views.budget(status, limit)),
    );
    Json(Value::Object(body)).into_response()
}

async fn incidents(State(app): State<App>) -> Response {
    let mut body = match list_header(&app, "incidents").await {
        Ok(b) => b,
        Err(e) => return e,
    };
    body.insert("incidents".into(), json!(app.live.views.incidents()));
    Json(Value::Object(body)).into_response()
}

async fn circuit(State(app): State<App>, Path(id): Path<String>) -> Response {
    let info = app.live.stage("circuits");
    let partition = partition_for_key(id.as_bytes(), info.partition_count);
    let body = |code: &str, message: &str| json!({"error": code, "message": message, "circuitId": id, "partition": partition});
    if info.partition_count == 0 || info.restoring {
        return unavailable(body(
            "no_owner",
            "this instance is starting or restoring its state; try again",
        ));
    }
    if info.partitions.contains(&partition) {
        if let Some(view) = app.live.views.circuit(&id) {
            return Json(view).into_response();
        }
        if let Some(view) = app.inventory.circuit(&id, partition) {
            return Json(view).into_response();
        }
        return (
            StatusCode::NOT_FOUND,
            Json(body(
                "not_found",
                "no such circuit in the inventory or the state",
            )),
        )
            .into_response();
    }
    let owner = match app.others("circuits").await {
        Ok(members) => members
            .into_iter()
            .find(|m| m.partitions.contains(&partition)),
        Err(e) => {
            warn!(error = %e, "cannot find the owner of a circuit's partition");
            None
        }
    };
    let Some(owner) = owner else {
        return unavailable(body(
            "no_owner",
            "no instance owns this circuit's partition right now (rebalancing); try again",
        ));
    };
    let location = format!(
        "{}/api/v1/circuits/{}",
        owner.url.trim_end_matches('/'),
        encode(&id)
    );
    let mut value = body(
        "not_owned",
        "another instance owns this circuit's partition: ask it (see Location)",
    );
    value["owner"] = json!({"instance": owner.instance, "url": owner.url});
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, v);
    }
    (StatusCode::TEMPORARY_REDIRECT, headers, Json(value)).into_response()
}

fn unavailable(body: Value) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(body),
    )
        .into_response()
}

/// Whether a Host header names this machine's loopback or the advertised URL's host.
fn local_host(host: &str, advertised: &str) -> bool {
    let name = |h: &str| -> String {
        let h = h.trim();
        let bare = if let Some(rest) = h.strip_prefix('[') {
            rest.split(']').next().unwrap_or_default()
        } else if h.matches(':').count() == 1 {
            h.split(':').next().unwrap_or_default()
        } else {
            h
        };
        bare.to_ascii_lowercase()
    };
    let host = name(host);
    if host.is_empty() {
        return false;
    }
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let advertised_host = advertised
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or_default())
        .map(name)
        .unwrap_or_default();
    loopback || (!advertised_host.is_empty() && host == advertised_host)
}

/// Percent-encode a path segment.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_and_never_print() {
        let t = Token::new(" s3cret ").unwrap();
        assert!(t.matches("s3cret"));
        assert!(!t.matches("s3cre"));
        assert!(!t.matches(""));
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(Token::new("  ").is_none());
    }

    #[test]
    fn a_non_loopback_listener_needs_a_token() {
        let open: SocketAddr = "0.0.0.0:9464".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        assert!(check_exposure(local, None).is_ok());
        let err = check_exposure(open, None).unwrap_err();
        assert!(err.contains("0.0.0.0:9464"), "{err}");
        assert!(check_exposure(open, Token::new("x").as_ref()).is_ok());
    }

    #[test]
    fn only_local_host_names_pass_without_a_token() {
        let url = "http://noc-1.example:9464";
        for ok in [
            "127.0.0.1:9464",
            "localhost",
            "LOCALHOST:1",
            "[::1]:9464",
            "noc-1.example:9464",
        ] {
            assert!(local_host(ok, url), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:9464",
            "10.0.0.1:9464",
            "[::2]:1",
        ] {
            assert!(!local_host(bad, url), "{bad}");
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("C-1/2 x"), "C-1%2F2%20x");
    }
}
