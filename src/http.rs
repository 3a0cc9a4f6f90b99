//! The HTTP listener of `linewatch run`: health, Prometheus metrics, the query API and the
//! NOC view (`docs/openapi.json` describes every endpoint).
//!
//! Health, readiness, metrics, the OpenAPI document and the NOC page's shell are open;
//! everything under `/api/v1/` (customer names and circuits are confidential) needs the
//! bearer token when one is configured. The listener binds to loopback unless told
//! otherwise, and [`check_exposure`] refuses a non-loopback address without a token.
//! No token, presented or configured, is ever logged or echoed.
//!
//! A connection has [`Timeouts::header_read`] to send each request's head, and is closed
//! after [`Timeouts::idle`] without a request; a request being answered is never cut.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::{debug, info, warn};

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
/// How long a reader of circuit views waits for the circuit stage to bring them up to its
/// committed state (it does so between two batches, after its commit); past this, the
/// answer holds the views of an earlier commit.
const FRESH_VIEWS_PATIENCE: Duration = Duration::from_secs(2);

/// How long a client may take over a request's head, and keep a connection without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// From a new connection, or from the first byte of a further request on it, until
    /// the request's head has been read; a connection still short of it is closed.
    pub header_read: Duration,
    /// How long a kept-alive connection may wait for its next request after an answer.
    pub idle: Duration,
}

impl Default for Timeouts {
    /// 10 s to send a request's head, 30 s between requests.
    fn default() -> Timeouts {
        Timeouts {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(30),
        }
    }
}

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
    Router::new()
        .route("/", get(|| async { Html(NOC_PAGE) }))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route("/api/v1/instance", get(instance))
        .route("/api/v1/tickets", get(tickets))
        .route("/api/v1/circuits", get(circuits))
        .route("/api/v1/circuits/{id}", get(circuit))
        .route("/api/v1/circuits/{id}/figures", get(circuit_figures))
        .route("/api/v1/incidents", get(incidents))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        // Around every route, the fallback and a wrong method alike: a path under /api/v1/
        // that does not exist is refused exactly as one that does, and says nothing more.
        .layer(middleware::from_fn_with_state(app.clone(), authorize))
        .layer(middleware::from_fn(answering))
        .with_state(app)
}

/// Whether `path` is the query API's (the token, or a local Host, is needed).
fn in_api(path: &str) -> bool {
    path == "/api/v1" || path.starts_with("/api/v1/")
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
        Self::start_with(listen, app, Timeouts::default())
    }

    /// [`HttpServer::start`] with other timeouts.
    ///
    /// # Errors
    /// When the address cannot be bound or the runtime cannot start.
    pub fn start_with(
        listen: SocketAddr,
        app: App,
        timeouts: Timeouts,
    ) -> std::io::Result<HttpServer> {
        Self::serve_with(TcpListener::bind(listen)?, app, timeouts)
    }

    /// Serve on a listener already bound.
    ///
    /// # Errors
    /// When the listener or the runtime cannot be set up.
    pub fn serve(listener: TcpListener, app: App) -> std::io::Result<HttpServer> {
        Self::serve_with(listener, app, Timeouts::default())
    }

    /// [`HttpServer::serve`] with other timeouts.
    ///
    /// # Errors
    /// When the listener or the runtime cannot be set up.
    pub fn serve_with(
        listener: TcpListener,
        app: App,
        timeouts: Timeouts,
    ) -> std::io::Result<HttpServer> {
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("http")
            .enable_all()
            .build()?;
        let listener = {
            let _context = runtime.enter();
            TimedListener {
                inner: tokio::net::TcpListener::from_std(listener)?,
                timeouts,
            }
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
                    let service = router(app).into_make_service_with_connect_info::<Activity>();
                    let serve = axum::serve(listener, service).with_graceful_shutdown(async {
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

/// The listener's connections, each with its [`Timeouts`].
struct TimedListener {
    inner: tokio::net::TcpListener,
    timeouts: Timeouts,
}

impl axum::serve::Listener for TimedListener {
    type Io = TimedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TimedStream, SocketAddr) {
        // axum's own accept loop: errors (too many open files, ...) are logged and retried.
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let activity = Activity::new(self.timeouts);
        let deadline = activity
            .deadline()
            .unwrap_or_else(tokio::time::Instant::now);
        let stream = TimedStream {
            inner: stream,
            activity,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        };
        (stream, addr)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// What a connection is doing, shared by its stream (which sees its bytes) and the
/// requests read from it (which know when a request's head has been read and answered).
#[derive(Clone)]
struct Activity(Arc<Mutex<Phase>>);

struct Phase {
    timeouts: Timeouts,
    /// Requests being answered: the connection then has no deadline (a slow answer is
    /// ours, not the client's).
    answering: u32,
    /// Whether bytes of a request have come since the last answer (or this is a new
    /// connection): the deadline is then the header-read one, which further bytes do not
    /// push back.
    reading_head: bool,
    deadline: tokio::time::Instant,
}

impl Activity {
    fn new(timeouts: Timeouts) -> Activity {
        Activity(Arc::new(Mutex::new(Phase {
            timeouts,
            answering: 0,
            reading_head: true,
            deadline: tokio::time::Instant::now() + timeouts.header_read,
        })))
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the connection is to be closed if nothing happens; `None` while answering.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        let phase = self.phase();
        (phase.answering == 0).then_some(phase.deadline)
    }

    /// Bytes have come in: the first of a request starts its header-read time.
    fn read_some(&self) {
        let mut phase = self.phase();
        if phase.answering == 0 && !phase.reading_head {
            phase.reading_head = true;
            phase.deadline = tokio::time::Instant::now() + phase.timeouts.header_read;
        }
    }

    /// An answer is going out: the connection is idle from now on.
    fn wrote_some(&self) {
        let mut phase = self.phase();
        if phase.answering == 0 {
            phase.reading_head = false;
            phase.deadline = tokio::time::Instant::now() + phase.timeouts.idle;
        }
    }

    /// A request's head has been read; until the guard is dropped it is being answered.
    fn answering(&self) -> Answering {
        self.phase().answering += 1;
        Answering(self.clone())
    }
}

impl Connected<axum::serve::IncomingStream<'_, TimedListener>> for Activity {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TimedListener>) -> Activity {
        stream.io().activity.clone()
    }
}

/// A request being answered (see [`Activity::answering`]).
struct Answering(Activity);

impl Drop for Answering {
    fn drop(&mut self) {
        let mut phase = self.0.phase();
        phase.answering = phase.answering.saturating_sub(1);
        if phase.answering == 0 {
            phase.reading_head = false;
            phase.deadline = tokio::time::Instant::now() + phase.timeouts.idle;
        }
    }
}

/// Marks each request as being answered, so that its connection's timeouts wait for it.
async fn answering(request: Request, next: Next) -> Response {
    let _answering = request
        .extensions()
        .get::<ConnectInfo<Activity>>()
        .map(|ConnectInfo(activity)| activity.answering());
    next.run(request).await
}

/// A connection that fails its reads and writes once its [`Activity`]'s deadline has
/// passed with nothing to read or write: hyper then closes it.
struct TimedStream {
    inner: tokio::net::TcpStream,
    activity: Activity,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl TimedStream {
    /// Whether the connection is out of time; if not, the task is woken at its deadline.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.activity.deadline() else {
            return false;
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            debug!("closing an HTTP connection that sent no complete request in time");
            true
        } else {
            false
        }
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "no complete request in time")
}

impl AsyncRead for TimedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.activity.read_some();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.activity.wrote_some();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // A client that does not read its answer is as idle as one that sends nothing.
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.activity.wrote_some();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
    if !in_api(request.uri().path()) {
        return next.run(request).await;
    }
    let Some(token) = &app.token else {
        // No token, so a loopback listener: only pages of this machine may ask. A page of
        // another site whose name has been re-pointed at 127.0.0.1 (DNS rebinding) still
        // sends its own name as the Host.
        if addressed_here(&request, &app.live.url) {
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
        .and_then(bearer);
    if presented.is_some_and(|p| token.matches(p)) {
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
        app.live.fresh_circuit_views(FRESH_VIEWS_PATIENCE).await;
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
    app.live.fresh_circuit_views(FRESH_VIEWS_PATIENCE).await;
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
    app.live.fresh_circuit_views(FRESH_VIEWS_PATIENCE).await;
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
    match owned_view(&app, &id, "").await {
        Ok(view) => Json(view).into_response(),
        Err(response) => response,
    }
}

/// The longest span `GET /api/v1/circuits/{id}/figures` answers: 366 days.
const MAX_FIGURES_SPAN: chrono::Duration = crate::sla::MAX_SPAN;

#[derive(Debug, Deserialize)]
struct FiguresQuery {
    from: Option<String>,
    to: Option<String>,
}

/// `[from, to)` of a figures request: both RFC 3339 instants with an offset, `from`
/// before `to`, at most [`MAX_FIGURES_SPAN`] apart.
fn figures_span(q: &FiguresQuery) -> Result<crate::sla::Span, BadRequest> {
    let instant = |name: &str, value: Option<&str>| {
        let value = value.map(str::trim).filter(|v| !v.is_empty()).ok_or_else(|| {
            BadRequest(format!(
                "{name} is required: an RFC 3339 time with an offset, e.g. 2026-03-01T00:00:00+08:00"
            ))
        })?;
        // A '+' left unescaped in a query string reads as a space: as written first (a
        // space may separate date and time), then with the spaces read as '+'.
        chrono::DateTime::parse_from_rfc3339(value)
            .or_else(|e| {
                chrono::DateTime::parse_from_rfc3339(&value.replace(' ', "+")).map_err(|_| e)
            })
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|e| {
                BadRequest(format!(
                    "{name} is not an RFC 3339 time with an offset ({e}), e.g. 2026-03-01T00:00:00+08:00"
                ))
            })
    };
    let from = instant("from", q.from.as_deref())?;
    let to = instant("to", q.to.as_deref())?;
    if to <= from {
        return Err(BadRequest("to must be after from".into()));
    }
    if to - from > MAX_FIGURES_SPAN {
        return Err(BadRequest(format!(
            "from and to may be at most {} days apart",
            MAX_FIGURES_SPAN.num_days()
        )));
    }
    Ok(crate::sla::Span::new(from, to))
}

/// `GET /api/v1/circuits/{id}/figures?from=&to=`: the circuit's figures over `[from, to)`,
/// counted from the same facts as its `kpi.circuits` records (`sla::figures_over`): a
/// span that is exactly a day, month, quarter or year of the policy's calendar is that
/// period (label, limits); any other span has no limits. As of the time the circuit's
/// state is known up to (its partition's event-time clock for a down circuit); for a
/// circuit with no state (no fault ever seen), as of now.
async fn circuit_figures(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<FiguresQuery>,
    uri: axum::http::Uri,
) -> Response {
    let span = match figures_span(&q) {
        Ok(span) => span,
        Err(e) => return e.into_response(),
    };
    let suffix = format!("/figures?{}", uri.query().unwrap_or_default());
    let view = match owned_view(&app, &id, &suffix).await {
        Ok(view) => view,
        Err(response) => return response,
    };
    let Some(facts) = view.facts else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not_found", "message": "no assurance level known for this circuit", "circuitId": id})),
        )
            .into_response();
    };
    let as_of = facts
        .as_of
        .unwrap_or_else(|| chrono::Utc::now().min(span.end));
    Json(facts.figures_over(span, as_of)).into_response()
}

/// The view of a circuit this instance owns; otherwise the answer to give: 503 while
/// starting or rebalancing, 404 for an unknown circuit, 307 to the owner (at
/// `/api/v1/circuits/{id}` followed by `suffix`).
async fn owned_view(app: &App, id: &str, suffix: &str) -> Result<CircuitView, Response> {
    let info = app.live.stage("circuits");
    let partition = partition_for_key(id.as_bytes(), info.partition_count);
    let body = |code: &str, message: &str| json!({"error": code, "message": message, "circuitId": id, "partition": partition});
    if info.partition_count == 0 || info.restoring {
        return Err(unavailable(body(
            "no_owner",
            "this instance is starting or restoring its state; try again",
        )));
    }
    if info.partitions.contains(&partition) {
        app.live.fresh_circuit_views(FRESH_VIEWS_PATIENCE).await;
        if let Some(view) = app.live.views.circuit(id) {
            return Ok(view);
        }
        if let Some(view) = app.inventory.circuit(id, partition) {
            return Ok(view);
        }
        return Err((
            StatusCode::NOT_FOUND,
            Json(body(
                "not_found",
                "no such circuit in the inventory or the state",
            )),
        )
            .into_response());
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
        return Err(unavailable(body(
            "no_owner",
            "no instance owns this circuit's partition right now (rebalancing); try again",
        )));
    };
    let location = format!(
        "{}/api/v1/circuits/{}{suffix}",
        owner.url.trim_end_matches('/'),
        encode(id)
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
    Err((StatusCode::TEMPORARY_REDIRECT, headers, Json(value)).into_response())
}

fn unavailable(body: Value) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        Json(body),
    )
        .into_response()
}

/// The credentials of an `Authorization: Bearer <token>` header, the scheme's name in any
/// case (RFC 7235); `None` for another scheme or no token.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim().split_once(' ')?;
    let credentials = credentials.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
}

/// Whether a request is addressed to this machine: one well-formed Host header naming it,
/// and, for a request in absolute form, the same of its URI's authority.
fn addressed_here(request: &Request, advertised: &str) -> bool {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(host), None) => host.to_str().ok(),
        _ => None,
    };
    host.is_some_and(|h| local_host(h, advertised))
        && request
            .uri()
            .authority()
            .is_none_or(|a| local_host(a.as_str(), advertised))
}

/// Whether a Host header names this machine's loopback or the advertised URL's host.
fn local_host(host: &str, advertised: &str) -> bool {
    let Some(host) = authority_host(host) else {
        return false;
    };
    let loopback = match &host {
        Host::Name(name) => name == "localhost",
        Host::Ip(ip) => ip.is_loopback(),
    };
    let advertised = advertised
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?', '#']).next())
        .and_then(authority_host);
    loopback || advertised.is_some_and(|a| a == host)
}

/// The host named by a Host header or a URL's authority.
#[derive(Debug, PartialEq, Eq)]
enum Host {
    /// A name, lowercased.
    Name(String),
    Ip(IpAddr),
}

/// The host of `host[:port]`, read strictly: a name of letters, digits, `-` and `.`, an
/// IPv4 address, or an IPv6 address in brackets; then nothing, or `:` and a port from 1 to
/// 65535 in digits. `None` for anything else (user info, a second colon, an empty or
/// named port, a bare IPv6 address).
fn authority_host(authority: &str) -> Option<Host> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (literal, port) = rest.split_once(']')?;
        (
            Host::Ip(IpAddr::V6(literal.parse::<Ipv6Addr>().ok()?)),
            port,
        )
    } else {
        let (name, port) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
        let name_like = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
        if name.is_empty() || !name.bytes().all(name_like) {
            return None;
        }
        let host = match name.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(name.to_ascii_lowercase()),
        };
        (host, port)
    };
    if !port.is_empty() {
        let digits = port.strip_prefix(':')?;
        let numeric =
            !digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit());
        if !numeric || !(1..=65535).contains(&digits.parse::<u32>().ok()?) {
            return None;
        }
    }
    Some(host)
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
            "127.0.0.2",
            "localhost",
            "LOCALHOST:1",
            "localhost:65535",
            "[::1]:9464",
            "[0:0:0:0:0:0:0:1]",
            "noc-1.example:9464",
            "NOC-1.example",
        ] {
            assert!(local_host(ok, url), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:9464",
            "10.0.0.1:9464",
            "[::2]:1",
            "localhost:evil",
            "localhost:",
            "localhost:0",
            "localhost:65536",
            "localhost:123456",
            "localhost:+80",
            "localhost:80:80",
            "localhost:80/x",
            " localhost",
            "localhost ",
            "user@localhost",
            "localhost@evil.example",
            "local host",
            "localhost%00",
            "::1",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[::1]:evil",
            "[localhost]",
            "[fe80::1%25lo]",
            ":9464",
        ] {
            assert!(!local_host(bad, url), "{bad:?}");
        }
        // The advertised URL is read with the same rules; a malformed one names nothing.
        assert!(local_host("noc-1.example", "http://noc-1.example/x?y"));
        assert!(local_host("[::1]", "http://[::1]:9464"));
        assert!(local_host("[2001:db8::1]:1", "https://[2001:db8::1]"));
        assert!(!local_host("noc-1.example", "http://noc-1.example:evil"));
        assert!(!local_host("noc-1.example", "http://u@noc-1.example"));
        assert!(!local_host("noc-1.example", "noc-1.example"));
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearerabc"), None);
    }

    #[test]
    fn the_api_is_everything_under_its_prefix() {
        for path in ["/api/v1", "/api/v1/", "/api/v1/tickets", "/api/v1/nope/x"] {
            assert!(in_api(path), "{path}");
        }
        for path in ["/", "/healthz", "/api/v10", "/api", "/api/v2/x"] {
            assert!(!in_api(path), "{path}");
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("C-1/2 x"), "C-1%2F2%20x");
    }
}
