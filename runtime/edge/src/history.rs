//! REST history, `GET /v1/channels/{channel}/messages?from=&until=&limit=&direction=`:
//! one page of a channel's stored messages, oldest or newest first, read from the
//! channel's log node.
//!
//! The log reads only forwards from a serial, and caps each answer (its `read_batch`
//! messages and its frame size). Serials are dense, so a backwards page is the forward
//! read of the `limit` serials ending at `until`, reversed; when the log cuts that read
//! short (large messages), it is read again nearer `until` with fewer messages (the
//! count found, then halving), so a page costs a few reads, never one per message.
//! Without `until`, or with an `until` past the channel's end, the channel's last serial
//! comes from a read from past any serial, which the log answers with the channel's
//! last position and no messages. Not here: caching, bounds by time, reading anything
//! but the log.
//!
//! ```text
//!  query ─▶ PageRequest::parse ─▶ page(log, request) ─▶ Page { messages, next } ─▶ JSON
//!                                  │ forwards:  read(from, n ≤ until-from+1) ─▶ keep ≤ until
//!                                  │ backwards: end = until | last_serial()
//!                                  │            read(max(from, end-n+1)) ─▶ cut short? smaller n
//!                                  │            ─▶ keep from..=end, newest first
//!                                  ▼
//!                LogReads: LinkReads (LogClient::read),
//!                          or a store in memory in the tests
//! ```
//!
//! Paging contract (docs/protocol.md §12.2): `next` is the serial to pass as `from`
//! (forwards) or as `until` (backwards) for the next page, the other parameters
//! repeated; `null` when nothing more in range is stored.

use std::future::Future;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use tern_config::Operation as KeyOperation;
use tern_link::{ChannelName, Serial, StoredMessage};
use tern_log::ReadResult;
use tern_log::net::{ClientError, LogClient};
use tern_protocol::{ErrorCode, ErrorInfo, MessageFrame};
use tracing::debug;

use crate::convert::{to_client_message, to_client_position};
use crate::http::{HttpResponse, authenticate, error_response, json, percent_decode};
use crate::server::Shared;
use crate::session::{forbidden, parse_channel};

/// `limit` when the request names none (or `history_max_limit`, if that is smaller).
pub(crate) const DEFAULT_LIMIT: usize = 100;

/// Which way a page runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Oldest first, from `from` up to `until` (`direction=forwards`, the default).
    Forwards,
    /// Newest first, from `until` down to `from` (`direction=backwards`).
    Backwards,
}

/// One history request's parameters, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PageRequest {
    /// The lowest serial wanted (inclusive). Default 1.
    pub(crate) from: Serial,
    /// The highest serial wanted (inclusive); `None`: up to the channel's last.
    pub(crate) until: Option<Serial>,
    /// Most messages in the page, 1 to `history_max_limit`.
    pub(crate) limit: u32,
    /// Which way the page runs.
    pub(crate) direction: Direction,
}

impl PageRequest {
    /// Reads `from`, `until`, `limit` and `direction` from a query string; other
    /// parameters (`key`) are left alone. A bad value is `InvalidValue` naming it.
    pub(crate) fn parse(query: Option<&str>, max_limit: usize) -> Result<Self, ErrorInfo> {
        let from = serial_param(query, "from")?.unwrap_or(Serial::FIRST);
        let until = serial_param(query, "until")?;
        if let Some(until) = until.filter(|until| *until < from) {
            return Err(invalid(format!(
                "`from` ({from}) is after `until` ({until})"
            )));
        }
        let limit = match param(query, "limit")? {
            None => DEFAULT_LIMIT.min(max_limit),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=max_limit).contains(&n) => n,
                _ => {
                    return Err(invalid(format!(
                        "`limit` must be a number from 1 to {max_limit}, not {text:?}"
                    )));
                }
            },
        };
        let direction = match param(query, "direction")?.as_deref() {
            None | Some("forwards") => Direction::Forwards,
            Some("backwards") => Direction::Backwards,
            Some(other) => {
                return Err(invalid(format!(
                    "`direction` must be `forwards` or `backwards`, not {other:?}"
                )));
            }
        };
        Ok(Self {
            from,
            until,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            direction,
        })
    }
}

/// One page of history.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Page {
    /// The messages, in the page's direction.
    pub(crate) messages: Vec<StoredMessage>,
    /// The next page's `from` (forwards) or `until` (backwards); `None` when nothing
    /// more in range is stored.
    pub(crate) next: Option<Serial>,
}

/// What a page needs from the channel's log.
pub(crate) trait LogReads {
    /// Up to `limit` stored messages from serial `from` on, in order (from the oldest
    /// retained one if `from` is older); the log may return fewer, with `more` set.
    fn read(
        &self,
        from: Serial,
        limit: u32,
    ) -> impl Future<Output = Result<ReadResult, ErrorInfo>> + Send;

    /// The channel's last durable serial; `None` when it has none.
    fn last_serial(&self) -> impl Future<Output = Result<Option<Serial>, ErrorInfo>> + Send;
}

/// Reads the page `request` asks for.
pub(crate) async fn page(log: &impl LogReads, request: &PageRequest) -> Result<Page, ErrorInfo> {
    match request.direction {
        Direction::Forwards => forwards(log, request).await,
        Direction::Backwards => backwards(log, request).await,
    }
}

async fn forwards(log: &impl LogReads, request: &PageRequest) -> Result<Page, ErrorInfo> {
    // Never load messages past `until`.
    let limit = request.until.map_or(request.limit, |until| {
        span(request.from, until).min(request.limit)
    });
    let read = log.read(request.from, limit).await?;
    let until = request.until;
    let mut messages = read.messages;
    messages.retain(|m| in_range(m, request.from, until));
    let next = messages
        .last()
        .map(|m| m.position.serial)
        .filter(|last| read.more && until.is_none_or(|until| *last < until))
        .map(Serial::next);
    Ok(Page { messages, next })
}

async fn backwards(log: &impl LogReads, request: &PageRequest) -> Result<Page, ErrorInfo> {
    let from = request.from;
    // `known_end`: `end` is at most the channel's last serial as the log last said.
    let (mut end, mut known_end) = match request.until {
        Some(until) => (until, false),
        None => match log.last_serial().await? {
            Some(last) => (last, true),
            None => return Ok(Page::default()),
        },
    };
    let mut count = request.limit;
    let mut shrunk = false;
    loop {
        if end < from {
            return Ok(Page::default());
        }
        let back = u64::from(count).saturating_sub(1);
        let start = Serial::new(end.get().saturating_sub(back))
            .unwrap_or(Serial::FIRST)
            .max(from);
        let want = span(start, end);
        let read = log.read(start, want).await?;
        match read.messages.last().map(|m| m.position.serial) {
            // Nothing stored from `start` on: `end` is past the channel's end.
            None if !known_end => {
                known_end = true;
                match log.last_serial().await? {
                    Some(last) if last < end => {
                        (end, count, shrunk) = (last, request.limit, false);
                        continue;
                    }
                    _ => return Ok(Page::default()),
                }
            }
            // The channel ends before `end`: the page ends at its last message.
            Some(last) if last < end && !read.more && !known_end => {
                known_end = true;
                (end, count, shrunk) = (last, request.limit, false);
                continue;
            }
            // Cut short by the log's caps: fewer messages, nearer `end`.
            Some(last) if last < end && read.more && want > 1 => {
                let got = u32::try_from(read.messages.len()).unwrap_or(u32::MAX);
                count = if shrunk { got.min(want / 2) } else { got }.max(1);
                shrunk = true;
                debug!(%start, %end, got, next_count = count, "backwards history read cut short");
                continue;
            }
            _ => {}
        }
        let first_stored = read.first_serial;
        let mut messages = read.messages;
        messages.retain(|m| in_range(m, from, Some(end)));
        messages.reverse();
        // Serials are dense: the one below the oldest returned is the next page's
        // `until`, if it is in range and still stored.
        let next = messages
            .last()
            .and_then(|m| Serial::new(m.position.serial.get() - 1))
            .filter(|next| *next >= from && first_stored.is_none_or(|first| *next >= first));
        return Ok(Page { messages, next });
    }
}

/// How many serials `from..=until` holds, as a read limit.
fn span(from: Serial, until: Serial) -> u32 {
    let gap = until.get().saturating_sub(from.get());
    u32::try_from(gap).map_or(u32::MAX, |gap| gap.saturating_add(1))
}

fn in_range(message: &StoredMessage, from: Serial, until: Option<Serial>) -> bool {
    let serial = message.position.serial;
    serial >= from && until.is_none_or(|until| serial <= until)
}

/// The raw value of `name` in a query string, percent-decoded; an error names it when
/// it does not decode.
fn param(query: Option<&str>, name: &str) -> Result<Option<String>, ErrorInfo> {
    let raw = query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value);
    match raw {
        None => Ok(None),
        Some(raw) => percent_decode(raw).map(Some).ok_or_else(|| {
            invalid(format!(
                "`{name}` is not valid percent-encoded UTF-8: {raw:?}"
            ))
        }),
    }
}

fn serial_param(query: Option<&str>, name: &str) -> Result<Option<Serial>, ErrorInfo> {
    let Some(text) = param(query, name)? else {
        return Ok(None);
    };
    match text.parse::<u64>().ok().and_then(Serial::new) {
        Some(serial) => Ok(Some(serial)),
        None => Err(invalid(format!(
            "`{name}` must be a serial number from 1 to {}, not {text:?}",
            u64::MAX
        ))),
    }
}

fn invalid(why: String) -> ErrorInfo {
    ErrorInfo::new(ErrorCode::InvalidValue, why)
}

/// The log's failure at `what` as the client sees it: 504 when it did not answer in
/// time, else 503.
fn log_error(error: &ClientError, what: &str) -> ErrorInfo {
    match error {
        ClientError::Timeout(_) => ErrorInfo::new(
            ErrorCode::LogTimeout,
            format!("the log did not answer {what}: {error}"),
        ),
        _ => ErrorInfo::new(
            ErrorCode::LogUnavailable,
            format!("the log could not answer {what}: {error}"),
        ),
    }
}

/// [`LogReads`] over the edge's link client.
struct LinkReads<'a> {
    client: LogClient,
    channel: &'a ChannelName,
}

impl LogReads for LinkReads<'_> {
    async fn read(&self, from: Serial, limit: u32) -> Result<ReadResult, ErrorInfo> {
        self.client
            .read(self.channel, from, limit)
            .await
            .map_err(|error| log_error(&error, "the read"))
    }

    async fn last_serial(&self) -> Result<Option<Serial>, ErrorInfo> {
        // A read from past any serial costs the log no disk access and answers the
        // channel's last position.
        let beyond = Serial::new(u64::MAX).unwrap_or(Serial::FIRST);
        self.client
            .read(self.channel, beyond, 1)
            .await
            .map(|read| read.last.map(|position| position.serial))
            .map_err(|error| log_error(&error, "which message of the channel is the last"))
    }
}

#[derive(Serialize)]
struct HistoryAnswer {
    messages: Vec<MessageFrame>,
    next: Option<u64>,
}

/// Answers `GET /v1/channels/{channel}/messages`: the key, the channel name, the
/// `history` capability, then the parameters are checked, in that order.
pub(crate) async fn handle(
    request: &Request<Incoming>,
    shared: &Shared,
    channel: &str,
) -> HttpResponse {
    let key = match authenticate(request, shared) {
        Ok(key) => key,
        Err(error) => return error_response(error),
    };
    let name = match parse_channel(channel) {
        Ok(name) => name,
        Err(error) => return error_response(error),
    };
    if !key.capabilities.allows(channel, KeyOperation::History) {
        return error_response(forbidden("read the history of", channel));
    }
    let page_request = match PageRequest::parse(
        request.uri().query(),
        shared.config.limits.history_max_limit,
    ) {
        Ok(page_request) => page_request,
        Err(error) => return error_response(error),
    };
    let Some(client) = shared.link.client() else {
        return error_response(ErrorInfo::new(
            ErrorCode::LogUnavailable,
            "the link to the log is down",
        ));
    };
    let reads = LinkReads {
        client,
        channel: &name,
    };
    match page(&reads, &page_request).await {
        Ok(page) => {
            let messages = page
                .messages
                .iter()
                .map(|stored| MessageFrame {
                    channel: channel.to_owned(),
                    position: to_client_position(stored.position),
                    message: to_client_message(stored),
                })
                .collect();
            let next = page.next.map(Serial::get);
            json(StatusCode::OK, &HistoryAnswer { messages, next })
        }
        Err(error) => error_response(error),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use tern_link::{Epoch, Position};

    use super::*;

    /// A channel in memory that reads like the embedded store behind the link server:
    /// serials `first..=last` stored, each read capped at `read_batch` messages and
    /// `max_bytes` payload bytes (the first message always returned).
    struct MemLog {
        first: u64,
        last: u64,
        read_batch: usize,
        max_bytes: usize,
        size: fn(u64) -> usize,
        reads: AtomicUsize,
        probes: AtomicUsize,
    }

    impl MemLog {
        /// `1..=last` stored (nothing for 0), no caps worth mentioning.
        fn new(last: u64) -> Self {
            Self {
                first: 1,
                last,
                read_batch: 1000,
                max_bytes: usize::MAX,
                size: |_| 10,
                reads: AtomicUsize::new(0),
                probes: AtomicUsize::new(0),
            }
        }

        fn calls(&self) -> (usize, usize) {
            (
                self.reads.load(Ordering::Relaxed),
                self.probes.load(Ordering::Relaxed),
            )
        }
    }

    impl LogReads for MemLog {
        async fn read(&self, from: Serial, limit: u32) -> Result<ReadResult, ErrorInfo> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let mut out = ReadResult::default();
            if self.last < self.first {
                return Ok(out);
            }
            out.first_serial = Serial::new(self.first);
            let max = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .min(self.read_batch)
                .max(1);
            let mut bytes = 0usize;
            for serial in from.get().max(self.first)..=self.last {
                let size = (self.size)(serial);
                if !out.messages.is_empty() && bytes.saturating_add(size) > self.max_bytes {
                    out.more = true;
                    break;
                }
                bytes += size;
                out.messages.push(StoredMessage {
                    position: Position {
                        epoch: Epoch(1),
                        serial: Serial::new(serial).expect("serials start at 1"),
                    },
                    timestamp_ms: 0,
                    idempotency_key: Bytes::from(format!("k{serial}")),
                    headers: Vec::new(),
                    payload: Bytes::from(vec![b'x'; size]),
                });
                if serial == self.last {
                    break;
                }
                if out.messages.len() >= max {
                    out.more = true;
                    break;
                }
            }
            Ok(out)
        }

        async fn last_serial(&self) -> Result<Option<Serial>, ErrorInfo> {
            self.probes.fetch_add(1, Ordering::Relaxed);
            Ok(Serial::new(self.last).filter(|_| self.last >= self.first))
        }
    }

    fn serial(n: u64) -> Serial {
        Serial::new(n).expect("non-zero")
    }

    fn request(query: &str) -> PageRequest {
        PageRequest::parse(Some(query), 1000).expect("valid query")
    }

    fn serials(page: &Page) -> Vec<u64> {
        page.messages
            .iter()
            .map(|m| m.position.serial.get())
            .collect()
    }

    async fn get(log: &MemLog, query: &str) -> Page {
        page(log, &request(query)).await.expect("page")
    }

    /// Follows `next` from `query` until it is null; every serial seen, in order, and
    /// the most log reads one page took.
    async fn follow(log: &MemLog, query: &str) -> (Vec<u64>, usize) {
        let mut request = request(query);
        let (mut seen, mut most_reads) = (Vec::new(), 0);
        for _ in 0..10_000 {
            let before = log.calls().0;
            let page = page(log, &request).await.expect("page");
            most_reads = most_reads.max(log.calls().0 - before);
            seen.extend(serials(&page));
            match (page.next, request.direction) {
                (None, _) => return (seen, most_reads),
                (Some(next), Direction::Forwards) => request.from = next,
                (Some(next), Direction::Backwards) => request.until = Some(next),
            }
        }
        panic!("paging did not end");
    }

    #[test]
    fn parameters_parse_with_defaults() {
        let parsed = PageRequest::parse(None, 1000).expect("no query");
        assert_eq!(
            parsed,
            PageRequest {
                from: Serial::FIRST,
                until: None,
                limit: 100,
                direction: Direction::Forwards
            }
        );
        assert_eq!(
            PageRequest::parse(Some("key=a.b%3Ac"), 50)
                .expect("q")
                .limit,
            50
        );
        assert_eq!(
            request("from=3&until=9&limit=7&direction=backwards&key=x"),
            PageRequest {
                from: serial(3),
                until: Some(serial(9)),
                limit: 7,
                direction: Direction::Backwards
            }
        );
        assert_eq!(request("from=4&until=4").until, Some(serial(4)));
        assert_eq!(request("direction=forwards").direction, Direction::Forwards);
    }

    #[test]
    fn bad_parameters_are_invalid_values_naming_the_parameter() {
        for (query, named) in [
            ("from=0", "`from`"),
            ("from=x", "`from`"),
            ("from=", "`from`"),
            ("from=-1", "`from`"),
            ("from=%zz", "`from`"),
            ("from=18446744073709551616", "`from`"),
            ("until=0", "`until`"),
            ("until=1.5", "`until`"),
            ("from=5&until=4", "`from` (5) is after `until` (4)"),
            ("limit=0", "`limit`"),
            ("limit=1001", "`limit`"),
            ("limit=ten", "`limit`"),
            ("direction=sideways", "`direction`"),
            ("direction=", "`direction`"),
            ("direction=Backwards", "`direction`"),
        ] {
            let error = PageRequest::parse(Some(query), 1000).expect_err(query);
            assert_eq!(error.code, ErrorCode::InvalidValue, "{query}");
            assert!(error.message.contains(named), "{query}: {}", error.message);
        }
    }

    #[tokio::test]
    async fn forwards_pages_see_every_serial_once_in_order() {
        let log = MemLog::new(250);
        let first = get(&log, "limit=100").await;
        assert_eq!(serials(&first), (1..=100).collect::<Vec<_>>());
        assert_eq!(first.next, Some(serial(101)));
        let (seen, _) = follow(&log, "limit=100").await;
        assert_eq!(seen, (1..=250).collect::<Vec<_>>());
        let last = get(&log, "from=201&limit=100").await;
        assert_eq!((serials(&last).len(), last.next), (50, None));
        assert_eq!(get(&log, "from=251").await, Page::default());
    }

    #[tokio::test]
    async fn backwards_pages_run_newest_first_and_end_at_the_oldest() {
        let log = MemLog::new(250);
        let first = get(&log, "direction=backwards&limit=100").await;
        assert_eq!(serials(&first), (151..=250).rev().collect::<Vec<_>>());
        assert_eq!(first.next, Some(serial(150)));
        assert_eq!(
            log.calls(),
            (1, 1),
            "one probe for the last serial, one read"
        );
        let (seen, most_reads) = follow(&log, "direction=backwards&limit=100").await;
        assert_eq!(seen, (1..=250).rev().collect::<Vec<_>>());
        assert_eq!(most_reads, 1);
        let last = get(&log, "direction=backwards&until=50&limit=100").await;
        assert_eq!(serials(&last), (1..=50).rev().collect::<Vec<_>>());
        assert_eq!(last.next, None);
    }

    #[tokio::test]
    async fn from_and_until_bound_both_directions() {
        let log = MemLog::new(250);
        let (seen, _) = follow(&log, "from=10&until=20&limit=3").await;
        assert_eq!(seen, (10..=20).collect::<Vec<_>>());
        let (seen, _) = follow(&log, "from=10&until=20&limit=3&direction=backwards").await;
        assert_eq!(seen, (10..=20).rev().collect::<Vec<_>>());
        let exact = get(&log, "from=10&until=20&limit=11").await;
        assert_eq!((serials(&exact).len(), exact.next), (11, None));
        let one = get(&log, "from=7&until=7&direction=backwards").await;
        assert_eq!((serials(&one), one.next), (vec![7], None));
        // Bounded forwards reads never ask the log for more than the range holds.
        let before = log.calls().0;
        assert_eq!(
            serials(&get(&log, "from=1&until=2&limit=1000").await),
            [1, 2]
        );
        assert_eq!(log.calls().0, before + 1);
    }

    #[tokio::test]
    async fn an_until_past_the_end_starts_at_the_last_message() {
        let log = MemLog::new(250);
        let far = get(&log, "direction=backwards&until=100000&limit=100").await;
        assert_eq!(serials(&far), (151..=250).rev().collect::<Vec<_>>());
        assert_eq!(far.next, Some(serial(150)));
        assert_eq!(log.calls(), (2, 1), "an empty read, a probe, a read");
        // Partly past the end: the read shows where the channel ends.
        let near = get(&log, "direction=backwards&until=300&limit=100").await;
        assert_eq!(serials(&near), (151..=250).rev().collect::<Vec<_>>());
        let forwards = get(&log, "until=100000&limit=100&from=200").await;
        assert_eq!((serials(&forwards).len(), forwards.next), (51, None));
    }

    #[tokio::test]
    async fn retention_moves_the_start_up_to_the_oldest_stored() {
        let log = MemLog {
            first: 101,
            ..MemLog::new(250)
        };
        let forwards = get(&log, "from=1&limit=30").await;
        assert_eq!(serials(&forwards), (101..=130).collect::<Vec<_>>());
        assert_eq!(forwards.next, Some(serial(131)));
        let (seen, _) = follow(&log, "direction=backwards&limit=100").await;
        assert_eq!(seen, (101..=250).rev().collect::<Vec<_>>());
        let gone = get(&log, "direction=backwards&until=100").await;
        assert_eq!(gone, Page::default());
        let gone = get(&log, "until=100").await;
        assert_eq!(gone, Page::default());
        let straddling = get(&log, "from=90&until=110&direction=backwards").await;
        assert_eq!(
            (serials(&straddling), straddling.next),
            ((101..=110).rev().collect(), None)
        );
    }

    #[tokio::test]
    async fn an_empty_channel_has_an_empty_page() {
        let log = MemLog::new(0);
        assert_eq!(get(&log, "").await, Page::default());
        assert_eq!(get(&log, "direction=backwards").await, Page::default());
        assert_eq!(
            get(&log, "direction=backwards&until=5").await,
            Page::default()
        );
    }

    #[tokio::test]
    async fn reads_cut_short_by_the_log_still_page_through_everything() {
        // Messages of 100 to 1000 bytes, reads capped at 2000 bytes: a few per read.
        let log = MemLog {
            max_bytes: 2000,
            size: |serial| 100 + (serial * 37 % 10) as usize * 100,
            ..MemLog::new(250)
        };
        let (seen, _) = follow(&log, "limit=100").await;
        assert_eq!(seen, (1..=250).collect::<Vec<_>>());
        let (seen, most_reads) = follow(&log, "direction=backwards&limit=100").await;
        assert_eq!(seen, (1..=250).rev().collect::<Vec<_>>());
        // The count found, then halving: log2(100) + a few reads at most per page.
        assert!(most_reads <= 9, "{most_reads} reads for one page");
        let page = get(&log, "direction=backwards&until=200&limit=100").await;
        assert_eq!(
            page.messages.first().map(|m| m.position.serial),
            Some(serial(200))
        );
        assert!(!page.messages.is_empty());
    }

    #[tokio::test]
    async fn a_huge_newest_message_costs_few_reads() {
        // The worst case for "ask for as many as came last time": every read nearer
        // the end comes back one message shorter, cut before the huge one.
        let log = MemLog {
            max_bytes: 100_000,
            size: |serial| if serial == 1000 { 100_000 } else { 10 },
            ..MemLog::new(1000)
        };
        let before = log.calls().0;
        let page = get(&log, "direction=backwards&limit=1000").await;
        let reads = log.calls().0 - before;
        assert_eq!((serials(&page), page.next), (vec![1000], Some(serial(999))));
        // 1000, then the 999 that came, then halving down to 1.
        assert!(reads <= 12, "{reads} reads for one page");
        let (seen, _) = follow(&log, "direction=backwards&limit=1000").await;
        assert_eq!(seen, (1..=1000).rev().collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_limit_above_the_logs_read_batch_is_read_in_one_more_step() {
        let log = MemLog {
            read_batch: 100,
            ..MemLog::new(1000)
        };
        let forwards = get(&log, "limit=500").await;
        assert_eq!(
            (serials(&forwards).len(), forwards.next),
            (100, Some(serial(101)))
        );
        let before = log.calls().0;
        let backwards = get(&log, "direction=backwards&until=900&limit=500").await;
        assert_eq!(serials(&backwards), (801..=900).rev().collect::<Vec<_>>());
        assert_eq!(backwards.next, Some(serial(800)));
        assert_eq!(log.calls().0 - before, 2);
    }
}
