//! The HTTP side: where edges report their health, and where operators read it. The
//! routes and the JSON they carry are the crate's contract with the edges; they are
//! documented in the crate docs. Both methods of `/v1/health` go through
//! [`ReportAuth`](crate::auth::ReportAuth) first: a refused request is answered 401
//! before its body is read, and changes nothing. A report made with an edge's own
//! token for another edge is answered 403 and changes nothing either.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{debug, info, warn};

use crate::auth::{AuthError, Grant};
use crate::health::{EdgeState, Health, HealthReport, MAX_REPORT_BYTES, ReportError};
use crate::metrics::ReportResult;
use crate::server::Shared;

/// Time a client gets to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client gets to send a report's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed as soon as they are accepted. Each edge
/// needs one at a time, operators and scrapers a few.
const MAX_CONNECTIONS: usize = 1024;

/// Accepts connections on `listener` and serves each until `stop` turns true.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    warn!(%error, "health report listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, "health report listener: too many connections; closing this one");
            continue;
        };
        let shared = Arc::clone(&shared);
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(request, &shared).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                debug!(%peer, %error, "health report connection ended with an error");
            }
        });
    }
}

async fn handle(request: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let health_route = request.uri().path() == "/v1/health"
        && matches!(*request.method(), Method::GET | Method::POST);
    let mut grant = Grant::AnyEdge;
    if health_route {
        let authorization = request.headers().get_all(AUTHORIZATION);
        match shared
            .auth
            .check(authorization.iter().map(|v| v.as_bytes()))
        {
            Ok(granted) => grant = granted,
            Err(refused) => return unauthorized(request.method(), refused, shared),
        }
    }
    match (request.method(), request.uri().path()) {
        (&Method::POST, "/v1/health") => take_report(request, &grant, shared).await,
        (&Method::GET, "/v1/health") => table(shared),
        (&Method::GET, "/metrics") => {
            let text = {
                let health = shared.health.lock();
                shared
                    .metrics
                    .render(&shared.topology, &health, Instant::now())
            };
            respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text,
            )
        }
        (_, "/v1/health") => not_allowed("GET, POST"),
        (_, "/metrics") => not_allowed("GET"),
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    }
}

async fn take_report(
    request: Request<Incoming>,
    grant: &Grant,
    shared: &Shared,
) -> Response<Full<Bytes>> {
    let body = Limited::new(request.into_body(), MAX_REPORT_BYTES).collect();
    let report = match tokio::time::timeout(BODY_TIMEOUT, body).await {
        Err(_) => Err(ReportError::Malformed(
            "the body did not arrive in time".into(),
        )),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ReportError::TooLarge)
        }
        Ok(Err(error)) => Err(ReportError::Malformed(format!(
            "cannot read the body: {error}"
        ))),
        Ok(Ok(body)) => HealthReport::from_json(&body.to_bytes()),
    };
    let taken = report.and_then(|report| {
        if !grant.allows(&report.edge) {
            return Err(ReportError::NotYours(report.edge));
        }
        let now = Instant::now();
        let reported = shared.health.lock().handle_report(now, &report)?;
        if reported.before != reported.after {
            let topology = &shared.topology;
            info!(
                edge = %report.edge,
                pop = topology.pop_name(topology.edge_pop(reported.edge)),
                from = ?reported.before,
                to = ?reported.after,
                "edge health changed"
            );
        }
        Ok(())
    });
    match taken {
        Ok(()) => {
            shared.metrics.report(ReportResult::Accepted);
            empty(StatusCode::NO_CONTENT)
        }
        Err(report_error) => {
            let (result, status) = match &report_error {
                ReportError::UnknownEdge(_) => (ReportResult::UnknownEdge, StatusCode::NOT_FOUND),
                ReportError::NotYours(_) => (ReportResult::Forbidden, StatusCode::FORBIDDEN),
                ReportError::TooLarge => (ReportResult::Bad, StatusCode::PAYLOAD_TOO_LARGE),
                ReportError::Malformed(_) => (ReportResult::Bad, StatusCode::BAD_REQUEST),
            };
            shared.metrics.report(result);
            debug!(error = %report_error, "health report refused");
            error(status, &report_error.to_string())
        }
    }
}

/// A `/v1/health` request without one of the report tokens: 401, nothing changed.
fn unauthorized(method: &Method, refused: AuthError, shared: &Shared) -> Response<Full<Bytes>> {
    if *method == Method::POST {
        shared.metrics.report(ReportResult::Unauthorized);
    }
    debug!(%method, error = %refused, "health endpoint request refused");
    let mut response = error(StatusCode::UNAUTHORIZED, &refused.to_string());
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer realm=\"tern dns\""),
    );
    response
}

/// `GET /v1/health`: the table.
fn table(shared: &Shared) -> Response<Full<Bytes>> {
    #[derive(Serialize)]
    struct Table<'a> {
        report_ttl_ms: u128,
        healthy: usize,
        edges: Vec<Row<'a>>,
    }
    #[derive(Serialize)]
    struct Row<'a> {
        edge: &'a str,
        pop: &'a str,
        health: Health,
        state: Option<EdgeState>,
        age_ms: Option<u128>,
    }
    let topology = &shared.topology;
    let now = Instant::now();
    let table = {
        let health = shared.health.lock();
        let edges: Vec<Row<'_>> = topology
            .edges()
            .map(|edge| {
                let last = health.last_report(now, edge);
                Row {
                    edge: topology.edge_name(edge),
                    pop: topology.pop_name(topology.edge_pop(edge)),
                    health: health.health(now, edge),
                    state: last.map(|(state, _)| state),
                    age_ms: last.map(|(_, age)| age.as_millis()),
                }
            })
            .collect();
        Table {
            report_ttl_ms: health.report_ttl().as_millis(),
            healthy: edges.iter().filter(|row| row.health == Health::Up).count(),
            edges,
        }
    };
    match serde_json::to_vec(&table) {
        Ok(body) => respond(StatusCode::OK, "application/json", body),
        Err(json_error) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the table: {json_error}"),
        ),
    }
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": message }).to_string();
    respond(status, "application/json", body)
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(ALLOW, http::HeaderValue::from_static(allow));
    response
}
