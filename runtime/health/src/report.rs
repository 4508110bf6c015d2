//! Talking to `tern dns`: the health reports an edge sends each interval, and the
//! site count the anycast guard reads from its health table.
//!
//! | call | to each of `[health.dns] report_urls` |
//! |------|----------------------------------------|
//! | [`DnsReporter::report`] | `POST /v1/health` `{"edge": NAME, "state": "up"\|"down"\|"disabled"}`, expecting 2xx (tern dns answers 204) |
//! | [`DnsSiteCount`] | `GET /v1/health`: this site, plus the other entries of `edges` whose `health` is `up`; the first server that answers wins |
//!
//! Both carry `Authorization: Bearer TOKEN` when `[health.dns] token` is set (a
//! `tern dns` with `report_tokens` answers 401 to anything else; the header is marked
//! sensitive, and the token never appears in logs).
//!
//! One plain HTTP/1.1 request per connection, the whole exchange bounded by the
//! timeout and the answer by [`MAX_ANSWER_BYTES`]. Each report URL has a task of its
//! own that posts the newest state (older ones not yet sent are skipped, never
//! queued), so a slow or dead DNS server never holds up the health loop nor another
//! server; failures are logged (a warning when a server starts failing, then quietly
//! until it answers again) and counted.
//!
//! ```text
//!  health loop ──report(state)──▶ watch ──▶ task per URL ──POST /v1/health──▶ tern dns
//!                                             └─ done(seq) ◀── wait_reported(seq, timeout)
//!  AnycastController ──announcing_sites()──▶ DnsSiteCount ──GET /v1/health──▶ first that answers
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tern_config::ReportToken;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::anycast::{SiteCount, SiteCountError};
use crate::hysteresis::HealthState;
use crate::metrics::HealthMetrics;

/// Largest answer read from `tern dns`, headers excluded.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// One request to `addr` with a JSON body (or none), under `timeout`; returns the
/// status and the body (at most [`MAX_ANSWER_BYTES`]).
pub(crate) async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    authorized_request(addr, method, path, body, None, timeout).await
}

/// [`request`], with `Authorization: Bearer TOKEN` when `token` is given.
async fn authorized_request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    token: Option<&ReportToken>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
        // The connection task ends with the exchange (or when this future is dropped
        // on timeout: the sender goes, and the connection with it).
        let driver = tokio::spawn(connection);
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, addr.to_string())
            .header(http::header::CONNECTION, "close");
        if body.is_some() {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = token {
            // Visible ASCII (tern-config checks), so always a valid header value; the
            // error names no part of the token.
            let mut value = http::HeaderValue::try_from(format!("Bearer {}", token.expose()))
                .map_err(|_| "the [health.dns] token is not a valid header value".to_owned())?;
            value.set_sensitive(true);
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| format!("bad request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?
            .to_bytes();
        driver.abort();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

/// One report, as `POST /v1/health` carries it.
fn report_body(edge: &str, state: HealthState) -> Vec<u8> {
    serde_json::json!({ "edge": edge, "state": state.as_str() })
        .to_string()
        .into_bytes()
}

/// Posts one report to `addr`.
async fn post_report(
    addr: SocketAddr,
    edge: &str,
    state: HealthState,
    token: Option<&ReportToken>,
    timeout: Duration,
) -> Result<(), String> {
    let body = report_body(edge, state);
    let (status, answer) =
        authorized_request(addr, Method::POST, "/v1/health", Some(body), token, timeout).await?;
    if status.is_success() {
        Ok(())
    } else {
        let answer = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
        Err(format!("answered {status}: {answer}"))
    }
}

/// A numbered state to report: the sequence number lets the loop wait until a given
/// report went out.
#[derive(Clone, Copy, Debug)]
struct Pending {
    seq: u64,
    state: HealthState,
}

/// Reports the edge's state to every configured `tern dns`, each from a task of its
/// own. The tasks end when the reporter is dropped.
#[derive(Debug)]
pub struct DnsReporter {
    pending: watch::Sender<Pending>,
    /// Per URL: the last sequence number it finished (reported or failed).
    done: Vec<watch::Receiver<u64>>,
    tasks: Vec<JoinHandle<()>>,
    seq: u64,
}

impl DnsReporter {
    /// Starts one task per URL of `urls`; nothing is sent before the first
    /// [`DnsReporter::report`]. Every report carries `token` when given (`[health.dns]
    /// token`). Must be called inside a tokio runtime.
    pub fn start(
        edge: String,
        urls: &[SocketAddr],
        token: Option<ReportToken>,
        timeout: Duration,
        metrics: Arc<HealthMetrics>,
    ) -> DnsReporter {
        let (pending, _) = watch::channel(Pending {
            seq: 0,
            state: HealthState::Down,
        });
        let edge: Arc<str> = edge.into();
        let token = token.map(Arc::new);
        let mut done = Vec::with_capacity(urls.len());
        let mut tasks = Vec::with_capacity(urls.len());
        for &addr in urls {
            let (done_tx, done_rx) = watch::channel(0);
            done.push(done_rx);
            tasks.push(tokio::spawn(report_to(
                addr,
                Arc::clone(&edge),
                token.clone(),
                pending.subscribe(),
                done_tx,
                timeout,
                Arc::clone(&metrics),
            )));
        }
        DnsReporter {
            pending,
            done,
            tasks,
            seq: 0,
        }
    }

    /// Hands `state` to every URL's task and returns at once; returns its sequence
    /// number for [`DnsReporter::wait_reported`].
    pub fn report(&mut self, state: HealthState) -> u64 {
        self.seq += 1;
        self.pending.send_replace(Pending {
            seq: self.seq,
            state,
        });
        self.seq
    }

    /// Waits until every URL's task is done with report `seq` (sent, or failed), at
    /// most `timeout`; returns whether all were.
    pub async fn wait_reported(&self, seq: u64, timeout: Duration) -> bool {
        let waits = self.done.iter().cloned().map(|mut done| async move {
            done.wait_for(|finished| *finished >= seq).await.is_ok()
        });
        tokio::time::timeout(timeout, futures::future::join_all(waits))
            .await
            .is_ok_and(|all| all.into_iter().all(|ok| ok))
    }
}

impl Drop for DnsReporter {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One URL's task: posts each newest pending state, records it done.
async fn report_to(
    addr: SocketAddr,
    edge: Arc<str>,
    token: Option<Arc<ReportToken>>,
    mut pending: watch::Receiver<Pending>,
    done: watch::Sender<u64>,
    timeout: Duration,
    metrics: Arc<HealthMetrics>,
) {
    let mut failing = false;
    while pending.changed().await.is_ok() {
        let Pending { seq, state } = *pending.borrow_and_update();
        metrics.dns_report_sent();
        match post_report(addr, &edge, state, token.as_deref(), timeout).await {
            Ok(()) => {
                if failing {
                    tracing::info!(dns = %addr, %state, "health reports reach tern dns again");
                }
                failing = false;
            }
            Err(error) => {
                metrics.dns_report_failed();
                if failing {
                    tracing::debug!(dns = %addr, %state, %error, "health report to tern dns failed");
                } else {
                    tracing::warn!(dns = %addr, %state, %error, "health report to tern dns failed (further failures are logged at debug until it answers)");
                }
                failing = true;
            }
        }
        done.send_replace(seq);
    }
}

/// The health table of `GET /v1/health`, as far as the site count needs it.
#[derive(Deserialize)]
struct Table {
    edges: Vec<TableEdge>,
}

#[derive(Deserialize)]
struct TableEdge {
    /// The edge's name.
    edge: String,
    /// `up`, `down`, `disabled`, `expired` or `unreported`: what tern dns makes of
    /// the edge now (a stale report is `expired`).
    health: String,
}

/// This site and the other edges that are up in a health table.
fn count_sites(body: &[u8], own: &str) -> Result<u32, String> {
    let table: Table = serde_json::from_slice(body)
        .map_err(|e| format!("the health table does not parse: {e}"))?;
    let others = table
        .edges
        .iter()
        .filter(|e| e.edge != own && e.health == "up")
        .count();
    Ok(u32::try_from(others).unwrap_or(u32::MAX).saturating_add(1))
}

/// The anycast guard's count of announcing sites, read from the health table of the
/// first `tern dns` that answers: every other edge that is up there (an edge
/// announces while it is up), plus this one. The controller asks only while this site
/// announces, and then it counts whatever it reported (`down` while de-preferring,
/// `disabled` while the guard holds a drain). With no URL, or none answering, the
/// count is unknown and the controller freezes.
#[derive(Clone, Debug)]
pub struct DnsSiteCount {
    edge: String,
    urls: Vec<SocketAddr>,
    token: Option<ReportToken>,
    timeout: Duration,
}

impl DnsSiteCount {
    /// The count for the edge named `edge` (as it reports itself), asking `urls` in
    /// order, each within `timeout`, with `token` when given (`[health.dns] token`).
    pub fn new(
        edge: impl Into<String>,
        urls: Vec<SocketAddr>,
        token: Option<ReportToken>,
        timeout: Duration,
    ) -> DnsSiteCount {
        DnsSiteCount {
            edge: edge.into(),
            urls,
            token,
            timeout,
        }
    }
}

impl SiteCount for DnsSiteCount {
    async fn announcing_sites(&self) -> Result<u32, SiteCountError> {
        let mut errors = Vec::with_capacity(self.urls.len());
        for &addr in &self.urls {
            let answer = authorized_request(
                addr,
                Method::GET,
                "/v1/health",
                None,
                self.token.as_ref(),
                self.timeout,
            )
            .await;
            match answer {
                Ok((status, body)) if status.is_success() => match count_sites(&body, &self.edge) {
                    Ok(count) => return Ok(count),
                    Err(e) => errors.push(format!("{addr}: {e}")),
                },
                Ok((status, _)) => errors.push(format!("{addr}: answered {status}")),
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        if errors.is_empty() {
            return Err(SiteCountError(
                "no [health.dns] report_urls to ask".to_owned(),
            ));
        }
        Err(SiteCountError(format!(
            "no tern dns answered GET /v1/health: {}",
            errors.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    use hyper::server::conn::http1;
    use hyper::service::service_fn;

    /// What a stub saw of one request.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Seen {
        method: Method,
        /// The `Authorization` header, if any.
        authorization: Option<String>,
        body: String,
    }

    /// A tern dns stand-in: records every request, answers GET with `table` and POST
    /// with `status`; with `token`, answers 401 to a request without `Bearer token`.
    async fn stub(
        table: &'static str,
        status: StatusCode,
        token: Option<&'static str>,
    ) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = Arc::clone(&kept);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let seen = Arc::clone(&seen);
                        async move {
                            let method = request.method().clone();
                            let authorization = request
                                .headers()
                                .get(http::header::AUTHORIZATION)
                                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let allowed = token.is_none_or(|token| {
                                authorization.as_deref() == Some(&*format!("Bearer {token}"))
                            });
                            let get = method == Method::GET;
                            seen.lock().expect("lock").push(Seen {
                                method,
                                authorization,
                                body: String::from_utf8_lossy(&body).into_owned(),
                            });
                            let (answer, status) = match (allowed, get) {
                                (false, _) => ("", StatusCode::UNAUTHORIZED),
                                (true, true) => (table, StatusCode::OK),
                                (true, false) => ("", status),
                            };
                            let mut response = http::Response::new(Full::new(Bytes::from(answer)));
                            *response.status_mut() = status;
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, seen)
    }

    /// The bodies of the POSTs `seen` recorded.
    fn posted(seen: &Mutex<Vec<Seen>>) -> Vec<String> {
        seen.lock()
            .expect("lock")
            .iter()
            .filter(|s| s.method == Method::POST)
            .map(|s| s.body.clone())
            .collect()
    }

    const TABLE: &str = r#"{"report_ttl_ms": 3000, "healthy": 2, "edges": [
        {"edge": "a", "pop": "fra", "health": "up", "state": "up", "age_ms": 4},
        {"edge": "b", "pop": "fra", "health": "expired", "state": "up", "age_ms": 9000},
        {"edge": "c", "pop": "ams", "health": "up", "state": "up", "age_ms": 1},
        {"edge": "d", "pop": "ams", "health": "unreported", "state": null, "age_ms": null}]}"#;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn token(text: &str) -> Option<ReportToken> {
        Some(ReportToken::parse(text).expect("valid token"))
    }

    fn unreachable_addr() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    }

    /// Reports `states` in turn, waiting for each to be done everywhere.
    async fn report_all(reporter: &mut DnsReporter, states: &[HealthState]) {
        for &state in states {
            let seq = reporter.report(state);
            assert!(
                reporter.wait_reported(seq, Duration::from_secs(20)).await,
                "every task finished report {seq}"
            );
        }
    }

    #[tokio::test]
    async fn reports_reach_every_server_in_order_and_failures_are_counted() {
        let (a, seen_a) = stub(TABLE, StatusCode::NO_CONTENT, None).await;
        let (b, seen_b) = stub(TABLE, StatusCode::NOT_FOUND, None).await;
        let dead = unreachable_addr();
        let metrics = Arc::new(HealthMetrics::default());
        let mut reporter = DnsReporter::start(
            "fra-1".into(),
            &[a, b, dead],
            None,
            Duration::from_secs(5),
            Arc::clone(&metrics),
        );
        report_all(
            &mut reporter,
            &[HealthState::Down, HealthState::Up, HealthState::Disabled],
        )
        .await;
        let want = [
            r#"{"edge":"fra-1","state":"down"}"#,
            r#"{"edge":"fra-1","state":"up"}"#,
            r#"{"edge":"fra-1","state":"disabled"}"#,
        ];
        assert_eq!(posted(&seen_a), want);
        assert_eq!(posted(&seen_b), want);
        assert!(
            seen_a
                .lock()
                .expect("lock")
                .iter()
                .all(|s| s.authorization.is_none()),
            "no token configured, no header"
        );
        let (sent, failed) = metrics.dns_reports();
        assert_eq!(
            (sent, failed),
            (9, 6),
            "b answers 404 and the dead one refuses"
        );
    }

    /// With a token, every report and every table read carries it; without it (or
    /// with another), a tern dns that wants one refuses, and that is a failure.
    #[tokio::test]
    async fn the_token_goes_with_every_report_and_table_read() {
        let (dns, seen) = stub(TABLE, StatusCode::NO_CONTENT, Some(TOKEN)).await;
        let metrics = Arc::new(HealthMetrics::default());
        let mut reporter = DnsReporter::start(
            "c".into(),
            &[dns],
            token(TOKEN),
            Duration::from_secs(5),
            Arc::clone(&metrics),
        );
        report_all(&mut reporter, &[HealthState::Up, HealthState::Down]).await;
        assert_eq!(metrics.dns_reports(), (2, 0), "both accepted");
        let count = DnsSiteCount::new("c", vec![dns], token(TOKEN), Duration::from_secs(5));
        assert_eq!(count.announcing_sites().await, Ok(2));
        {
            let seen = seen.lock().expect("lock");
            let methods: Vec<&Method> = seen.iter().map(|s| &s.method).collect();
            assert_eq!(methods, [&Method::POST, &Method::POST, &Method::GET]);
            let bearer = format!("Bearer {TOKEN}");
            for request in seen.iter() {
                assert_eq!(request.authorization.as_deref(), Some(bearer.as_str()));
            }
        }
        assert!(
            !format!("{reporter:?}{count:?}").contains(TOKEN),
            "Debug hides the token"
        );

        // Without the token, or with another: 401, a failed report, no count.
        for other in [None, token("another-token-of-32-characters-00")] {
            let metrics = Arc::new(HealthMetrics::default());
            let mut reporter = DnsReporter::start(
                "c".into(),
                &[dns],
                other.clone(),
                Duration::from_secs(5),
                Arc::clone(&metrics),
            );
            report_all(&mut reporter, &[HealthState::Up]).await;
            assert_eq!(metrics.dns_reports(), (1, 1), "{other:?}");
            let e = DnsSiteCount::new("c", vec![dns], other, Duration::from_secs(5))
                .announcing_sites()
                .await
                .expect_err("refused");
            assert!(e.0.contains("401"), "{e}");
        }
    }

    #[tokio::test]
    async fn the_site_count_comes_from_the_first_server_that_answers() {
        let (a, _) = stub(TABLE, StatusCode::NO_CONTENT, None).await;
        let (bad, _) = stub("{not json", StatusCode::NO_CONTENT, None).await;
        let dead = unreachable_addr();
        let five = Duration::from_secs(5);
        // a and c are up: as c, a plus itself; as b (expired there), a and c plus
        // itself.
        let count = DnsSiteCount::new("c", vec![dead, bad, a], None, five);
        assert_eq!(count.announcing_sites().await, Ok(2));
        let count = DnsSiteCount::new("b", vec![a], None, five);
        assert_eq!(count.announcing_sites().await, Ok(3));
        let e = DnsSiteCount::new("c", vec![dead, bad], None, five)
            .announcing_sites()
            .await
            .expect_err("nobody answers usably");
        assert!(
            e.0.contains("cannot connect") && e.0.contains("does not parse"),
            "{e}"
        );
        let e = DnsSiteCount::new("c", Vec::new(), None, five)
            .announcing_sites()
            .await
            .expect_err("nobody to ask");
        assert!(e.0.contains("no [health.dns]"), "{e}");
    }
}
