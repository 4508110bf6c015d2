//! Limits and edge cases of the link's network side, each found in review as a bug
//! and kept as a regression test (real QUIC on 127.0.0.1:0, real `EmbeddedStore` in a
//! tempdir).
//!
//! Run with `cargo test -p tern-log --test net_review`.
//!
//! Every test takes [`LOCK`] first: some of them measure the process's memory, which
//! other tests running at the same time would disturb.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use tern_config::LinkServerConfig;
use tern_link::{
    ChannelName, ErrorCode, Frame, FrameDecoder, Outcome, PublishMessage, StoredMessage,
    SubscribeFrom, encode_to_vec,
};
use tern_log::net::{ClientError, LogClientConfig, Subscription, SubscriptionEvent};
use tern_log::{AppendRequest, LogStore};
mod support;

use tern_log::conformance::channel;

use support::node::Node;

/// Every wait is bounded, so a bug fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(60);

/// Serialises the tests of this file (memory measurements are process-wide).
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn link() -> LinkServerConfig {
    LinkServerConfig::default()
}

fn message(channel: &str, key: &str, payload: &[u8]) -> PublishMessage {
    PublishMessage {
        channel: channel.into(),
        idempotency_key: Bytes::copy_from_slice(key.as_bytes()),
        headers: vec![],
        payload: Bytes::copy_from_slice(payload),
    }
}

fn encoded(frame: &Frame) -> Vec<u8> {
    encode_to_vec(frame, tern_link::DEFAULT_MAX_FRAME_BYTES).expect("encodes")
}

/// Reads events until `want` messages arrived in all, or the stream closed.
async fn collect_or_closed(
    subscription: &mut Subscription,
    want: usize,
) -> Result<BTreeMap<ChannelName, Vec<StoredMessage>>, (usize, ClientError)> {
    let mut got: BTreeMap<ChannelName, Vec<_>> = BTreeMap::new();
    let mut count = 0;
    while count < want {
        let event = tokio::time::timeout(PATIENCE, subscription.next_event())
            .await
            .expect("event in time")
            .expect("stream not over");
        match event {
            SubscriptionEvent::Messages { channel, messages } => {
                count += messages.len();
                got.entry(channel).or_default().extend(messages);
            }
            SubscriptionEvent::Subscribed { .. } => {}
            SubscriptionEvent::Closed(error) => return Err((count, error)),
            other => panic!("unexpected event {other:?}"),
        }
    }
    Ok(got)
}

/// A field of /proc/self/status, in KiB.
fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)
                .and_then(|rest| rest.trim_start_matches(':').trim().split(' ').next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("{field} not in /proc/self/status"))
}

/// Regression (found in review): `handle_tail` (stream.rs) counts the frames one committed batch produces
/// against `subscriber_queue_frames`, and emits one `Messages` frame per channel. One
/// group commit touching more channels than the queue holds (default 1024) drops a
/// subscriber that reads as fast as it can, as "slow" — and again after every
/// resubscribe, since the edge follows all its channels on one stream.
#[tokio::test]
async fn one_commit_over_many_channels_does_not_drop_a_fast_subscriber() {
    let _serial = LOCK.lock().await;
    let node = Node::start(link()).await;
    let client = node.client().await;
    let n = 1100;
    let names: Vec<String> = (0..n).map(|i| format!("room:{i}")).collect();
    // One stored message per channel, so that the replay shows when each is live.
    client
        .publish(
            names
                .iter()
                .map(|c| message(c, &format!("{c}/0"), b"x"))
                .collect(),
        )
        .await
        .expect("publish before");
    let mut subscription = client
        .subscribe(&channel(&names[0]), SubscribeFrom::Start)
        .await
        .expect("subscribe");
    for name in &names[1..] {
        subscription
            .add(&channel(name), SubscribeFrom::Start)
            .await
            .expect("add");
    }
    collect_or_closed(&mut subscription, n)
        .await
        .expect("replay of every channel");

    // Every channel is live. One publish, one message per channel: one group commit.
    let publish = client.publish(
        names
            .iter()
            .map(|c| message(c, &format!("{c}/1"), b"y"))
            .collect(),
    );
    let (published, got) = tokio::join!(publish, collect_or_closed(&mut subscription, n));
    published.expect("publish during");
    match got {
        Ok(got) => assert_eq!(got.len(), n, "one new message on every channel"),
        Err((count, error)) => panic!(
            "a subscriber reading as fast as it can was dropped after {count} of {n} \
             messages: {error:?} (slow consumer: {})",
            error.is_slow_consumer()
        ),
    }
    node.stop().await;
}

/// Regression (found in review): the outbox is bounded in frames (`subscriber_queue_frames`, default 1024) plus
/// `max_inflight_per_stream` answers, not in bytes, and answers keep being produced
/// while the peer reads nothing. A peer sending 100 tiny `Read` requests and never
/// reading makes the node materialise and hold 100 answers of ~1.8 MB each (~180 MB) —
/// with the defaults up to (1024 + 256) × 16 MiB ≈ 20 GiB per stream, × 4096 streams
/// per connection. Shown without measuring memory: after a quiet period a new message
/// is published; every answer that does not contain it was computed (and held) while
/// the peer was not reading.
#[tokio::test]
async fn a_peer_that_reads_nothing_cannot_pin_unbounded_answers() {
    let _serial = LOCK.lock().await;
    let node = Node::start(link()).await;
    let client = node.client().await;
    let ch = "big";
    let payload = vec![5u8; 900 * 1024];
    for i in 0..2 {
        client
            .publish(vec![message(ch, &format!("k{i}"), &payload)])
            .await
            .expect("publish");
    }
    let conn = node.raw().await;
    let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
    let reads = 100u64;
    let requests: Vec<u8> = (0..reads)
        .flat_map(|id| {
            encoded(&Frame::Read {
                request_id: id,
                channel: ch.into(),
                from_serial: 1,
                limit: 1000,
            })
        })
        .collect();
    send.write_all(&requests).await.expect("write requests");
    let rss_before = proc_status_kib("VmRSS");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = proc_status_kib("VmRSS");
    client
        .publish(vec![message(ch, "k-late", &payload)])
        .await
        .expect("publish late");

    let mut decoder = FrameDecoder::new(tern_link::DEFAULT_MAX_FRAME_BYTES);
    let mut answers = 0;
    let mut stale_bytes = 0usize;
    while answers < reads {
        while let Some(frame) = decoder.next_frame().expect("valid frames") {
            match frame {
                Frame::ReadResult { messages, .. } => {
                    answers += 1;
                    if messages.len() < 3 {
                        stale_bytes += messages.iter().map(|m| m.payload.len()).sum::<usize>();
                    }
                }
                Frame::RequestFailed { .. } => answers += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        if answers == reads {
            break;
        }
        let chunk = tokio::time::timeout(PATIENCE, recv.read_chunk(1 << 20, true))
            .await
            .unwrap_or_else(|_| panic!("answer {answers} of {reads} in time"))
            .expect("readable")
            .expect("not finished");
        decoder.extend(&chunk.bytes);
    }
    eprintln!(
        "answers computed while the peer read nothing: {} MiB (VmRSS {} -> {} MiB)",
        stale_bytes >> 20,
        rss_before >> 10,
        rss_after >> 10
    );
    assert!(
        stale_bytes <= 32 << 20,
        "the node held {} MiB of answers for a peer that read nothing",
        stale_bytes >> 20
    );
    node.stop().await;
}

/// Regression (found in review): `handle_read` (stream.rs) asks the store for `min(limit, read_batch)` messages
/// and only then cuts the answer to one frame (`truncate_to_frame`); `replay_one` does
/// the same without cutting. With 64 KiB messages and a 1 MiB + 64 KiB frame (the
/// smallest valid frame for the default 1 MiB messages), one read materialises ~64 MB
/// to send ~1 MB. With the defaults (1 MiB messages, read_batch 1000) one tiny `Read`
/// request costs ~1 GiB, and a stream may have 256 in flight.
#[tokio::test]
async fn a_read_does_not_materialise_far_more_than_one_frame() {
    let _serial = LOCK.lock().await;
    let max_frame_bytes = (1 << 20) + (64 << 10);
    let node = Node::start(LinkServerConfig {
        max_frame_bytes,
        ..link()
    })
    .await;
    let ch = channel("history");
    let payload = Bytes::from(vec![9u8; 64 * 1024]);
    for batch in 0..10 {
        let requests = (0..100)
            .map(|i| AppendRequest {
                channel: ch.clone(),
                idempotency_key: Bytes::from(format!("k{batch}-{i}")),
                headers: vec![],
                payload: payload.clone(),
            })
            .collect();
        node.store.append(requests).await.expect("append");
    }
    let client = node
        .client_with(LogClientConfig {
            max_frame_bytes,
            ..LogClientConfig::default()
        })
        .await;
    client.ping().await.expect("warm up");
    // Reset the high-water mark to the current RSS (Linux >= 4.0).
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    let before = proc_status_kib("VmHWM");
    let reads = (0..8).map(|_| client.read(&ch, tern_link::Serial::FIRST, 1000));
    let answers = tokio::time::timeout(PATIENCE, futures::future::join_all(reads))
        .await
        .expect("reads in time");
    let mut sent = 0;
    for answer in answers {
        sent += answer.expect("read").messages.len();
    }
    let peak_growth_mib = (proc_status_kib("VmHWM").saturating_sub(before)) >> 10;
    eprintln!("8 reads answered with {sent} messages; peak RSS grew by {peak_growth_mib} MiB");
    assert!(
        peak_growth_mib <= 48,
        "answering 8 reads of ~1 MiB each raised peak memory by {peak_growth_mib} MiB"
    );
    node.stop().await;
}

/// Regression (found in review): `FrameDecoder::next_frame` (link codec.rs) reserves the whole announced frame
/// (`self.buf.reserve(total - len)`) as soon as the 4-byte length prefix arrives, so
/// 4 bytes from a peer cost the node a `max_frame_bytes` (16 MiB) allocation, per
/// stream, 4096 streams per connection (64 GiB of address space per connection for
/// 16 KiB of traffic; an abort on allocation failure under strict overcommit or an
/// address-space limit). The codec docs say nothing of the body is buffered before
/// the length is checked; it is reserved instead.
#[tokio::test]
async fn a_length_prefix_alone_does_not_reserve_the_whole_frame() {
    let _serial = LOCK.lock().await;
    let node = Node::start(link()).await;
    let conn = node.raw().await;
    let before = proc_status_kib("VmSize");
    let streams = 256;
    let mut held = Vec::new();
    // Just under the 16 MiB limit.
    let prefix = ((16u32 << 20) - 64).to_be_bytes();
    for _ in 0..streams {
        let (mut send, recv) = conn.open_bi().await.expect("open stream");
        send.write_all(&prefix).await.expect("write prefix");
        held.push((send, recv));
    }
    // Let the node read every prefix.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let growth_mib = proc_status_kib("VmSize").saturating_sub(before) >> 10;
    eprintln!("{streams} streams × 4 bytes grew the address space by {growth_mib} MiB");
    assert!(
        growth_mib < 1024,
        "{streams} length prefixes (1 KiB sent) reserved {growth_mib} MiB"
    );
    drop(held);
    node.stop().await;
}

/// Regression (found in review): a caller that stops waiting for a publish (a `timeout` around it, a dropped
/// `select!` branch) releases its slot at once (client.rs `request`: the permit is a
/// local), although the node still works on the request. The client then sends more
/// than `max_inflight` requests, and the node refuses innocent publishes with
/// `TooManyRequests` — contradicting the client docs ("the node's own per-stream limit
/// is never hit").
#[tokio::test]
async fn cancelled_publishes_do_not_make_the_node_refuse_later_ones() {
    let _serial = LOCK.lock().await;
    let node = Node::start(LinkServerConfig {
        max_inflight_per_stream: 2,
        ..link()
    })
    .await;
    let client = node
        .client_with(LogClientConfig {
            max_inflight: 2,
            ..LogClientConfig::default()
        })
        .await;
    client.ping().await.expect("warm up");
    let mut refused = 0;
    for round in 0..10 {
        // Two publishes whose callers give up right after sending them.
        for i in 0..2 {
            let publish = client.publish(vec![message("q", &format!("gone-{round}-{i}"), b"x")]);
            assert!(
                publish.now_or_never().is_none(),
                "not answered synchronously"
            );
            tokio::task::yield_now().await;
        }
        let outcome = tokio::time::timeout(
            PATIENCE,
            client.publish(vec![message("q", &format!("kept-{round}"), b"x")]),
        )
        .await
        .expect("answer in time");
        match outcome {
            Ok(outcomes) => assert!(matches!(outcomes[0], Outcome::Appended(_))),
            Err(error) if error.code() == Some(ErrorCode::TooManyRequests) => refused += 1,
            Err(error) => panic!("unexpected error {error:?}"),
        }
        // Let the abandoned ones finish before the next round.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        refused, 0,
        "{refused} of 10 publishes within the client's limit were refused with TooManyRequests"
    );
    node.stop().await;
}

/// Regression (found in review): at shutdown the node stops reading the request stream, answers what is in
/// flight, then sends a fatal `ShuttingDown`. But the client's writer task
/// (client.rs `write_requests`) fails *every* waiting call with `ConnectionLost` as
/// soon as one later write fails on the stopped stream — before the answers the node
/// is still sending for earlier requests arrive. Those answers are then dropped
/// ("answer for a request nobody waits for"). Shown with a slow read in flight; a
/// publish in flight at that moment is reported lost the same way although the node
/// stored and acknowledged it.
#[tokio::test]
async fn shutdown_answers_reach_the_callers_of_in_flight_requests() {
    let _serial = LOCK.lock().await;
    let mut node = Node::start(link()).await;
    let ch = channel("history");
    let payload = Bytes::from(vec![9u8; 64 * 1024]);
    for batch in 0..10 {
        let requests = (0..100)
            .map(|i| AppendRequest {
                channel: ch.clone(),
                idempotency_key: Bytes::from(format!("k{batch}-{i}")),
                headers: vec![],
                payload: payload.clone(),
            })
            .collect();
        node.store.append(requests).await.expect("append");
    }
    let client = node.client().await;
    let started = tokio::time::Instant::now();
    client
        .read(&ch, tern_link::Serial::FIRST, 1000)
        .await
        .expect("read");
    let read_takes = started.elapsed();
    eprintln!("one read takes {read_takes:?}");

    // A read in flight when shutdown begins...
    let in_flight = {
        let client = client.clone();
        let ch = ch.clone();
        tokio::spawn(async move { client.read(&ch, tern_link::Serial::FIRST, 1000).await })
    };
    tokio::time::sleep(read_takes / 4).await;
    node.begin_stop();
    // ...while the edge's other tasks keep sending requests, as a busy edge does.
    let mut late = Vec::new();
    for i in 0..20 {
        let client = client.clone();
        late.push(tokio::spawn(async move {
            client
                .publish(vec![message("late", &format!("late-{i}"), b"x")])
                .await
        }));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let result = tokio::time::timeout(PATIENCE, in_flight)
        .await
        .expect("in-flight read ends")
        .expect("task");
    match result {
        Ok(read) => assert!(!read.messages.is_empty()),
        Err(error) => {
            panic!("the node answers requests in flight at shutdown, yet the caller got {error:?}")
        }
    }
    node.stop().await;
}
