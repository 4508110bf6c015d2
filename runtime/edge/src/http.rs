//! The edge's HTTP routes, all on the listener's one port.
//!
//! ```text
//! GET  /v1/ws                              WebSocket upgrade (tern.v1.json | tern.v1.msgpack)
//! GET  /v1/sse?channels=a,b                Server-Sent Events (text/event-stream), see `sse`
//! POST /v1/channels/{channel}/messages     publish one message or an array → 201 {"results": […]}
//! GET  /v1/channels/{channel}/messages     history ?from=&until=&limit=&direction= → {"messages": […], "next": …}
//!                                          (paging: see `history`)
//! GET  /healthz  /readyz  /metrics         liveness, link readiness, Prometheus text
//! ```
//!
//! Errors are `{"error": ErrorInfo}` with the HTTP status of the code (`40300` → 403).
//! Keys come from `Authorization: Basic` (user `app.keyid`, password the secret),
//! `Authorization: Bearer app.keyid:secret`, or `?key=app.keyid:secret`.
//! `/v1/sse` and `/v1/channels/…` answer any origin (`Access-Control-Allow-Origin: *`,
//! and `OPTIONS` preflights), so a page served elsewhere can use them.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tern_config::{ApiKey, Operation as KeyOperation};
use tern_protocol::{ErrorCode, ErrorInfo, Format, Message, PublishResult};
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::debug;

use crate::body::HttpBody;
use crate::convert::to_publish_message;
use crate::link::{PublishJob, ReplyTo};
use crate::metrics::Route;
use crate::server::Shared;
use crate::session::{check_messages, forbidden, parse_channel};
use crate::ws;

/// The response type of every route.
pub(crate) type HttpResponse = Response<HttpBody>;

/// The methods of `/v1/channels/{channel}/messages`.
const CHANNEL_METHODS: &str = "GET, POST, OPTIONS";
/// The methods of `/v1/sse`.
const SSE_METHODS: &str = "GET, OPTIONS";

/// Answers one HTTP request.
pub(crate) async fn handle(request: Request<Incoming>, shared: Arc<Shared>) -> HttpResponse {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method().clone();
    match segments.as_slice() {
        ["v1", "ws"] => {
            shared.metrics.http_request(Route::WebSocket);
            if method != Method::GET {
                return method_not_allowed("GET");
            }
            upgrade(request, shared)
        }
        ["v1", "sse"] => {
            shared.metrics.http_request(Route::Sse);
            match method {
                Method::GET => crate::sse::open(&request, &shared),
                Method::OPTIONS => preflight(SSE_METHODS),
                _ => with_cors(method_not_allowed(SSE_METHODS)),
            }
        }
        ["v1", "admin", "functions", rest @ ..] => {
            shared.metrics.http_request(Route::Admin);
            let rest: Vec<String> = rest.iter().map(|s| (*s).to_owned()).collect();
            crate::admin::handle(request, shared, rest).await
        }
        ["v1", "channels", channel, "messages"] => {
            let channel = match percent_decode(channel) {
                Some(channel) => channel,
                None => {
                    return with_cors(error_response(ErrorInfo::new(
                        ErrorCode::InvalidChannel,
                        "the channel in the path is not valid percent-encoded UTF-8",
                    )));
                }
            };
            let response = match method {
                Method::POST => {
                    shared.metrics.http_request(Route::Publish);
                    publish(request, shared, channel).await
                }
                Method::GET => {
                    shared.metrics.http_request(Route::History);
                    crate::history::handle(&request, &shared, &channel).await
                }
                Method::OPTIONS => {
                    shared.metrics.http_request(Route::Other);
                    return preflight(CHANNEL_METHODS);
                }
                _ => {
                    shared.metrics.http_request(Route::Other);
                    method_not_allowed(CHANNEL_METHODS)
                }
            };
            with_cors(response)
        }
        ["healthz"] | ["readyz"] | ["metrics"] => {
            shared.metrics.http_request(Route::Admin);
            if method != Method::GET && method != Method::HEAD {
                return method_not_allowed("GET");
            }
            match segments[0] {
                "healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
                "readyz" => readiness(&request, &shared).await,
                _ => text(
                    StatusCode::OK,
                    {
                        let mut out = shared.metrics.render();
                        crate::functions::stats::render(&mut out, &shared.functions.metrics());
                        shared.lag.render(&mut out);
                        if let Some(health) = &shared.health {
                            health.render(&mut out);
                        }
                        out
                    },
                    "text/plain; version=0.0.4",
                ),
            }
        }
        _ => {
            shared.metrics.http_request(Route::Other);
            error_response(ErrorInfo::new(
                ErrorCode::NotFound,
                format!("no route {path}"),
            ))
        }
    }
}

/// `GET /readyz`: 200 `ready` while the link to the log is up and the functions
/// deployed in the log are in force, else 503 with the reason; from the start of
/// shutdown, 503 [`tern_health::remote::SHUTTING_DOWN`]. With `?ping` the log must
/// also answer a ping on the link within `health.timeout` (what `tern health` asks:
/// a frozen or unreachable log is noticed at once, not at the link's idle timeout).
async fn readiness(request: &Request<Incoming>, shared: &Shared) -> HttpResponse {
    let not_ready = |reason: String| {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{reason}\n"),
            "text/plain",
        )
    };
    if shared.is_leaving() {
        return not_ready(tern_health::remote::SHUTTING_DOWN.to_owned());
    }
    if !shared.metrics.link_is_up() {
        return not_ready("the link to the log is down".to_owned());
    }
    if !shared.functions.is_caught_up() {
        return not_ready(tern_health::remote::FUNCTIONS_NOT_IN_FORCE.to_owned());
    }
    let ping = request.uri().query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair == "ping" || pair.starts_with("ping="))
    });
    if ping && let Err(reason) = crate::health::ping_log(shared).await {
        return not_ready(reason);
    }
    text(StatusCode::OK, "ready\n".into(), "text/plain")
}

/// Checks the WebSocket handshake, answers 101 and hands the socket to a connection
/// task once hyper releases it.
fn upgrade(mut request: Request<Incoming>, shared: Arc<Shared>) -> HttpResponse {
    let headers = request.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .unwrap_or("")
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return error_response(ErrorInfo::new(
            ErrorCode::InvalidValue,
            "GET /v1/ws needs a WebSocket upgrade (Upgrade: websocket)",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        return error_response(ErrorInfo::new(
            ErrorCode::InvalidValue,
            "only WebSocket version 13 is spoken here",
        ));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return error_response(ErrorInfo::new(
            ErrorCode::InvalidValue,
            "the WebSocket handshake lacks Sec-WebSocket-Key",
        ));
    };
    let accept = derive_accept_key(key.as_bytes());
    // The subprotocol header wins; without it, `?format=msgpack` may choose.
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    let (format, subprotocol) = if offered.is_empty() {
        let msgpack = query_param(request.uri().query(), "format").as_deref() == Some("msgpack");
        (
            if msgpack {
                Format::MsgPack
            } else {
                Format::Json
            },
            None,
        )
    } else {
        match offered.iter().find_map(|p| Format::from_subprotocol(p)) {
            Some(format) => (format, Some(format.subprotocol())),
            None => {
                return error_response(ErrorInfo::new(
                    ErrorCode::InvalidValue,
                    format!(
                        "none of the offered subprotocols {offered:?} is spoken here; offer {} or {}",
                        tern_protocol::SUBPROTOCOL_JSON,
                        tern_protocol::SUBPROTOCOL_MSGPACK
                    ),
                ));
            }
        }
    };
    let limits = &shared.config.limits;
    if shared.metrics.open_connections() >= limits.max_connections as u64 {
        shared.metrics.connection_refused_limit();
        return error_response(ErrorInfo::new(
            ErrorCode::TooManyConnections,
            "this edge has too many connections; try another or later",
        ));
    }
    if shared.is_shutting_down() {
        return error_response(ErrorInfo::new(
            ErrorCode::ShuttingDown,
            "the edge is shutting down",
        ));
    }
    shared.metrics.connection_opened();
    let config = ws::websocket_config(limits.max_frame_bytes);
    let conn = shared.next_conn();
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                ws::serve(socket, shared, format, conn).await;
            }
            Err(error) => {
                debug!(%error, "WebSocket upgrade failed");
                shared
                    .metrics
                    .connection_closed(crate::metrics::CloseReason::Transport);
            }
        }
    });
    let mut response = Response::new(HttpBody::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(subprotocol) = subprotocol {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(subprotocol),
        );
    }
    response
}

#[derive(Serialize)]
struct PublishAnswer {
    results: Vec<PublishResult>,
}

async fn publish(request: Request<Incoming>, shared: Arc<Shared>, channel: String) -> HttpResponse {
    let key = match authenticate(&request, &shared) {
        Ok(key) => key,
        Err(error) => return error_response(error),
    };
    if let Err(error) = parse_channel(&channel) {
        return error_response(error);
    }
    if !key.capabilities.allows(&channel, KeyOperation::Publish) {
        return error_response(forbidden("publish to", &channel));
    }
    let max = shared.config.limits.max_frame_bytes;
    // The body must arrive within `connect_timeout`, like the headers.
    let body = match read_body(request, max, shared.config.limits.connect_timeout).await {
        Ok(body) => body,
        Err(error) => return error_response(error),
    };
    let messages = match parse_messages(&body) {
        Ok(messages) => messages,
        Err(error) => return error_response(error),
    };
    let prefix = format!("http:{}", ws::random_hex(16));
    let keys = match check_messages(&shared.config.limits, &messages, &prefix) {
        Ok(keys) => keys,
        Err(error) => return error_response(error),
    };
    let messages = messages
        .into_iter()
        .zip(keys)
        .map(|(message, key)| to_publish_message(&channel, message, key, None))
        .collect();
    let (tx, rx) = oneshot::channel();
    shared.publish(PublishJob {
        messages,
        reply: ReplyTo::Oneshot(tx),
    });
    match rx.await {
        Ok(Ok(results)) => json(StatusCode::CREATED, &PublishAnswer { results }),
        Ok(Err(error)) => error_response(error),
        Err(_) => error_response(ErrorInfo::new(
            ErrorCode::Internal,
            "the publish was dropped without an answer",
        )),
    }
}

/// One message object or an array of them.
fn parse_messages(body: &[u8]) -> Result<Vec<Message>, ErrorInfo> {
    let malformed = |e: serde_json::Error| {
        ErrorInfo::new(
            ErrorCode::Malformed,
            format!("the body must be a message object or an array of them: {e}"),
        )
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(malformed)?;
    if value.is_array() {
        serde_json::from_value(value).map_err(malformed)
    } else {
        serde_json::from_value(value)
            .map(|m| vec![m])
            .map_err(malformed)
    }
}

/// Reads a body of at most `max` bytes that must arrive within `timeout`.
pub(crate) async fn read_body(
    request: Request<Incoming>,
    max: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ErrorInfo> {
    let body = Limited::new(request.into_body(), max).collect();
    match tokio::time::timeout(timeout, body).await {
        Err(_) => Err(ErrorInfo::new(
            ErrorCode::IdleTimeout,
            format!("the body did not arrive within {} ms", timeout.as_millis()),
        )),
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(ErrorInfo::new(
            ErrorCode::FrameTooLarge,
            format!("the body is larger than the limit of {max} bytes"),
        )),
        Ok(Err(error)) => Err(ErrorInfo::new(
            ErrorCode::Malformed,
            format!("cannot read the body: {error}"),
        )),
    }
}

/// The key the request presents, checked against the config.
pub(crate) fn authenticate<'a>(
    request: &Request<Incoming>,
    shared: &'a Shared,
) -> Result<&'a ApiKey, ErrorInfo> {
    let presented = presented_key(request)?;
    let Some(presented) = presented else {
        return Err(ErrorInfo::new(
            ErrorCode::Unauthorized,
            "an API key is needed: Authorization: Bearer app.keyid:secret, Basic auth, or ?key=",
        ));
    };
    shared
        .config
        .authenticate(&presented)
        .ok_or_else(|| ErrorInfo::new(ErrorCode::InvalidCredentials, "the API key is not valid"))
}

/// The key a request presents (Bearer, Basic or `?key=`), if any.
pub(crate) fn presented_key(request: &Request<Incoming>) -> Result<Option<String>, ErrorInfo> {
    let presented = match request.headers().get(header::AUTHORIZATION) {
        Some(value) => {
            let value = value.to_str().unwrap_or("");
            if let Some(token) = strip_scheme(value, "Bearer") {
                Some(token.trim().to_owned())
            } else if let Some(encoded) = strip_scheme(value, "Basic") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok());
                match decoded.as_deref().and_then(|d| d.split_once(':')) {
                    Some((user, password)) => Some(format!("{user}:{password}")),
                    None => {
                        return Err(ErrorInfo::new(
                            ErrorCode::InvalidCredentials,
                            "Basic credentials must be base64(app.keyid:secret)",
                        ));
                    }
                }
            } else {
                return Err(ErrorInfo::new(
                    ErrorCode::InvalidCredentials,
                    "Authorization must be Basic or Bearer",
                ));
            }
        }
        None => query_param(request.uri().query(), "key"),
    };
    Ok(presented)
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (first, rest) = value.split_once(' ')?;
    first.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// The percent-decoded value of `name` in a query string.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| percent_decode(value))
}

/// Decodes `%XX` escapes; None if the result is not UTF-8 or an escape is broken.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a ErrorInfo,
}

/// `{"error": …}` with the code's HTTP status (`FrameTooLarge`: 413).
pub(crate) fn error_response(error: ErrorInfo) -> HttpResponse {
    let status = match error.code {
        // The one code whose HTTP status is not its first three digits.
        ErrorCode::FrameTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        code => {
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
    };
    json(status, &ErrorBody { error: &error })
}

pub(crate) fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut response = error_response(ErrorInfo::new(
        ErrorCode::MethodNotAllowed,
        format!("this route takes {allow}"),
    ));
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

pub(crate) fn json(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(HttpBody::full(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `response`, readable by a page of any origin (no cookies are involved: keys travel
/// in the URL or the Authorization header).
pub(crate) fn with_cors(mut response: HttpResponse) -> HttpResponse {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// The answer to a CORS preflight (`OPTIONS`) of a route taking `methods`.
fn preflight(methods: &'static str) -> HttpResponse {
    let mut response = Response::new(HttpBody::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(header::ALLOW, HeaderValue::from_static(methods));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    // Authorization is never covered by a wildcard; Last-Event-ID comes with an
    // EventSource's reconnection.
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, Last-Event-ID"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    with_cors(response)
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> HttpResponse {
    let mut response = Response::new(HttpBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_paths_decode() {
        assert_eq!(percent_decode("chat%3Aroom").as_deref(), Some("chat:room"));
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("cut%4"), None);
        assert_eq!(
            query_param(Some("from=3&key=a.b%3Asecret"), "key").as_deref(),
            Some("a.b:secret")
        );
        assert_eq!(query_param(Some("from=3"), "limit"), None);
    }

    #[test]
    fn bodies_hold_one_message_or_many() {
        assert_eq!(parse_messages(br#"{"data":"x"}"#).expect("one").len(), 1);
        assert_eq!(
            parse_messages(br#"[{"data":"x"},{"data":{"base64":"AAE="}}]"#)
                .expect("many")
                .len(),
            2
        );
        assert_eq!(
            parse_messages(b"[1]").expect_err("bad").code,
            ErrorCode::Malformed
        );
    }
}
