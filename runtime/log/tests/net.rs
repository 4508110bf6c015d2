//! The link over real QUIC on 127.0.0.1:0 with a real `EmbeddedStore` in a tempdir:
//! publish and acknowledgement, dedupe, subscriptions (replay then live tail),
//! protocol errors, slow consumers.
//!
//! Run with `cargo test -p tern-log --test net`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use tern_config::LinkServerConfig;
use tern_link::{
    ChannelName, Continuity, ErrorCode, Frame, FrameDecoder, Outcome, PROTOCOL_VERSION, Position,
    PublishMessage, Serial, SubscribeFrom, encode_to_vec,
};
use tern_log::net::{Subscription, SubscriptionEvent};
mod support;

use tern_log::conformance::channel;

use support::node::Node;

/// Every wait in these tests is bounded, so a bug fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);

fn link() -> LinkServerConfig {
    LinkServerConfig::default()
}

fn message(channel: &str, key: &str, payload: &[u8]) -> PublishMessage {
    PublishMessage {
        channel: channel.into(),
        idempotency_key: Bytes::copy_from_slice(key.as_bytes()),
        headers: vec![("k".into(), "v".into())],
        payload: Bytes::copy_from_slice(payload),
    }
}

fn appended(outcome: &Outcome) -> Position {
    match outcome {
        Outcome::Appended(position) => *position,
        other => panic!("expected Appended, got {other:?}"),
    }
}

async fn next_event(subscription: &mut Subscription) -> SubscriptionEvent {
    tokio::time::timeout(PATIENCE, subscription.next_event())
        .await
        .expect("event in time")
        .expect("stream not over")
}

/// Collects messages per channel until `want` messages arrived in all.
async fn collect(
    subscription: &mut Subscription,
    want: usize,
) -> BTreeMap<ChannelName, Vec<tern_link::StoredMessage>> {
    let mut got: BTreeMap<ChannelName, Vec<_>> = BTreeMap::new();
    let mut count = 0;
    while count < want {
        match next_event(subscription).await {
            SubscriptionEvent::Messages { channel, messages } => {
                count += messages.len();
                got.entry(channel).or_default().extend(messages);
            }
            SubscriptionEvent::Subscribed { .. } => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    got
}

fn assert_dense(messages: &[tern_link::StoredMessage], first: u64) {
    let serials: Vec<u64> = messages.iter().map(|m| m.position.serial.get()).collect();
    let expected: Vec<u64> = (first..first + messages.len() as u64).collect();
    assert_eq!(
        serials, expected,
        "serials must be dense, without gaps or repeats"
    );
}

/// Writes raw bytes on a fresh stream and returns the frames the node answers with
/// until it ends the stream or `until` holds for one of them.
async fn raw_exchange(
    conn: &quinn::Connection,
    bytes: &[u8],
    until: impl Fn(&Frame) -> bool,
) -> (Vec<Frame>, quinn::SendStream, quinn::RecvStream) {
    let (mut send, mut recv) = conn.open_bi().await.expect("open stream");
    send.write_all(bytes).await.expect("write");
    let mut decoder = FrameDecoder::new(tern_link::DEFAULT_MAX_FRAME_BYTES);
    let mut frames = Vec::new();
    loop {
        while let Some(frame) = decoder.next_frame().expect("node sends valid frames") {
            let done = until(&frame);
            frames.push(frame);
            if done {
                return (frames, send, recv);
            }
        }
        let chunk = tokio::time::timeout(PATIENCE, recv.read_chunk(65536, true))
            .await
            .expect("answer in time")
            .expect("stream readable");
        match chunk {
            Some(chunk) => decoder.extend(&chunk.bytes),
            None => return (frames, send, recv),
        }
    }
}

fn encoded(frame: &Frame) -> Vec<u8> {
    encode_to_vec(frame, tern_link::DEFAULT_MAX_FRAME_BYTES).expect("encodes")
}

#[tokio::test]
async fn publish_is_acknowledged_and_read_back() {
    let node = Node::start(link()).await;
    let client = node.client().await;
    let outcomes = client
        .publish(vec![
            message("chat:a", "k1", b"one"),
            message("chat:a", "k2", b"two"),
            message("chat:b", "k3", b"three"),
        ])
        .await
        .expect("publish");
    let positions: Vec<Position> = outcomes.iter().map(appended).collect();
    assert_eq!(positions[0].serial.get(), 1);
    assert_eq!(positions[1].serial.get(), 2);
    assert_eq!(positions[2].serial.get(), 1);

    let read = client
        .read(&channel("chat:a"), Serial::FIRST, 100)
        .await
        .expect("read");
    assert_eq!(read.messages.len(), 2);
    assert_eq!(read.messages[1].payload, Bytes::from_static(b"two"));
    assert_eq!(read.messages[1].position, positions[1]);
    assert_eq!(read.first_serial, Some(Serial::FIRST));

    assert!(client.ping().await.is_ok());
    client.close().await;
    node.stop().await;
}

#[tokio::test]
async fn a_read_since_a_time_starts_at_the_first_message_stored_then() {
    let node = Node::start(link()).await;
    let client = node.client().await;
    let mut stamps = Vec::new();
    for n in 0..3 {
        client
            .publish(vec![message("chat:t", &format!("k{n}"), b"x")])
            .await
            .expect("publish");
        let read = client
            .read(&channel("chat:t"), Serial::FIRST, 100)
            .await
            .expect("read");
        stamps.push(read.messages.last().expect("stored").timestamp_ms);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(stamps.is_sorted(), "{stamps:?}");
    // Expected: every message whose timestamp is at or after `since` (two stored in
    // the same millisecond both count).
    for since in [0, stamps[1], stamps[2], stamps[2] + 1] {
        let read = client
            .read_since(&channel("chat:t"), since, 100)
            .await
            .expect("read since");
        let serials: Vec<u64> = read
            .messages
            .iter()
            .map(|m| m.position.serial.get())
            .collect();
        let expected: Vec<u64> = (1..=3u64)
            .filter(|s| stamps[(*s - 1) as usize] >= since)
            .collect();
        assert_eq!(serials, expected, "since {since}");
        assert_eq!(read.first_serial, Some(Serial::FIRST));
        assert_eq!(read.last.map(|p| p.serial.get()), Some(3));
        assert!(!read.more);
    }
    let unknown = client
        .read_since(&channel("chat:never"), 0, 100)
        .await
        .expect("read since");
    assert!(unknown.messages.is_empty() && unknown.first_serial.is_none());
    client.close().await;
    node.stop().await;
}

#[tokio::test]
async fn duplicate_key_returns_the_original_position() {
    let node = Node::start(link()).await;
    let client = node.client().await;
    let first = client
        .publish(vec![message("chat:a", "same", b"original")])
        .await
        .expect("publish");
    let original = appended(&first[0]);
    let again = client
        .publish(vec![message("chat:a", "same", b"retry")])
        .await
        .expect("publish again");
    assert_eq!(again, vec![Outcome::Duplicate(original)]);
    let read = client
        .read(&channel("chat:a"), Serial::FIRST, 100)
        .await
        .expect("read");
    assert_eq!(read.messages.len(), 1);
    assert_eq!(read.messages[0].payload, Bytes::from_static(b"original"));
    node.stop().await;
}

#[tokio::test]
async fn invalid_channels_and_keys_are_rejected_one_by_one() {
    let node = Node::start(link()).await;
    let client = node.client().await;
    let outcomes = client
        .publish(vec![
            message("chat:a", "k1", b"fine"),
            message("bad name", "k2", b"refused"),
            message("chat:a", "", b"no key"),
            message("chat:a", "k4", b"fine too"),
        ])
        .await
        .expect("publish");
    assert_eq!(appended(&outcomes[0]).serial.get(), 1);
    assert!(matches!(&outcomes[1], Outcome::Rejected(e) if e.code == ErrorCode::InvalidChannel));
    assert!(matches!(&outcomes[2], Outcome::Rejected(e) if e.code == ErrorCode::InvalidKey));
    assert_eq!(appended(&outcomes[3]).serial.get(), 2);
    node.stop().await;
}

#[tokio::test]
async fn concurrent_publishes_are_pipelined_on_one_client() {
    let node = Node::start(link()).await;
    let client = node.client().await;
    let mut tasks = Vec::new();
    for i in 0..300 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .publish(vec![message("chat:p", &format!("k{i}"), b"x")])
                .await
        }));
    }
    let mut serials = HashSet::new();
    for task in tasks {
        let outcomes = task.await.expect("task").expect("publish");
        assert!(serials.insert(appended(&outcomes[0]).serial.get()));
    }
    assert_eq!(serials, (1..=300).collect());
    node.stop().await;
}

#[tokio::test]
async fn subscription_replays_then_tails_without_gaps_or_duplicates() {
    // Small replay chunks so replay and tail interleave many times.
    let node = Node::start(LinkServerConfig {
        read_batch: 16,
        ..link()
    })
    .await;
    let client = node.client().await;
    let ch = "chat:live";
    for batch in 0..20 {
        let messages = (0..10)
            .map(|i| message(ch, &format!("pre-{batch}-{i}"), b"before"))
            .collect();
        client.publish(messages).await.expect("publish before");
    }
    // Two publishers keep going while the subscriber replays.
    let mut publishers = Vec::new();
    for p in 0..2 {
        let client = client.clone();
        publishers.push(tokio::spawn(async move {
            for batch in 0..40 {
                let messages = (0..5)
                    .map(|i| message(ch, &format!("live-{p}-{batch}-{i}"), b"during"))
                    .collect();
                client.publish(messages).await.expect("publish during");
            }
        }));
    }
    let mut subscription = client
        .subscribe(&channel(ch), SubscribeFrom::Start)
        .await
        .expect("subscribe");
    match next_event(&mut subscription).await {
        SubscriptionEvent::Subscribed {
            next_serial,
            previous,
            continuity,
            ..
        } => {
            assert_eq!(next_serial, Serial::FIRST);
            assert_eq!(previous, None, "nothing comes before serial 1");
            assert_eq!(continuity, Continuity::Kept);
        }
        other => panic!("expected Subscribed first, got {other:?}"),
    }
    let total = 200 + 2 * 40 * 5;
    let got = collect(&mut subscription, total).await;
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let messages = &got[&channel(ch)];
    assert_eq!(messages.len(), total);
    assert_dense(messages, 1);
    let keys: HashSet<&Bytes> = messages.iter().map(|m| &m.idempotency_key).collect();
    assert_eq!(keys.len(), total, "every message exactly once");

    // Resuming after a known position continues right after it.
    let after = messages[99].position;
    let mut resumed = client
        .subscribe(&channel(ch), SubscribeFrom::After(after))
        .await
        .expect("resubscribe");
    match next_event(&mut resumed).await {
        SubscriptionEvent::Subscribed {
            next_serial,
            previous,
            continuity,
            ..
        } => {
            assert_eq!(next_serial.get(), 101);
            assert_eq!(previous, Some(after));
            assert_eq!(continuity, Continuity::Kept);
        }
        other => panic!("expected Subscribed, got {other:?}"),
    }
    let again = collect(&mut resumed, total - 100).await;
    assert_dense(&again[&channel(ch)], 101);

    // Reads are capped at the node's read_batch.
    let read = client
        .read(&channel(ch), Serial::FIRST, 1000)
        .await
        .expect("read");
    assert_eq!(read.messages.len(), 16);

    // A position from an unknown epoch is an explicit break, not a silent gap.
    let stale = Position {
        epoch: tern_link::Epoch(1),
        serial: Serial::FIRST,
    };
    let mut lost = client
        .subscribe(&channel(ch), SubscribeFrom::After(stale))
        .await
        .expect("subscribe");
    assert!(matches!(
        next_event(&mut lost).await,
        SubscriptionEvent::Subscribed {
            continuity: Continuity::Lost { .. },
            ..
        }
    ));
    node.stop().await;
}

/// The first event of a fresh subscription: `(next_serial, previous)`, checking that
/// continuity was kept.
async fn subscribed(subscription: &mut Subscription) -> (Serial, Option<Position>) {
    match next_event(subscription).await {
        SubscriptionEvent::Subscribed {
            next_serial,
            previous,
            continuity,
            ..
        } => {
            assert_eq!(continuity, Continuity::Kept);
            (next_serial, previous)
        }
        other => panic!("expected Subscribed first, got {other:?}"),
    }
}

#[tokio::test]
async fn latest_on_an_empty_channel_delivers_new_messages_from_serial_one() {
    let node = Node::start(link()).await;
    let client = node.client().await;
    let ch = channel("chat:fresh");
    let mut subscription = client
        .subscribe(&ch, SubscribeFrom::Latest)
        .await
        .expect("subscribe");
    assert_eq!(subscribed(&mut subscription).await, (Serial::FIRST, None));
    let outcomes = client
        .publish(
            (0..3)
                .map(|i| message(ch.as_str(), &format!("k{i}"), b"new"))
                .collect(),
        )
        .await
        .expect("publish");
    let got = collect(&mut subscription, 3).await;
    assert_dense(&got[&ch], 1);
    let positions: Vec<Position> = got[&ch].iter().map(|m| m.position).collect();
    assert_eq!(positions, outcomes.iter().map(appended).collect::<Vec<_>>());
    node.stop().await;
}

#[tokio::test]
async fn latest_skips_history_and_names_the_last_stored_position() {
    // Small replay chunks: a replay of the history would show up in the first event.
    let node = Node::start(LinkServerConfig {
        read_batch: 4,
        ..link()
    })
    .await;
    let client = node.client().await;
    let ch = channel("chat:history");
    let old = client
        .publish(
            (0..10)
                .map(|i| message(ch.as_str(), &format!("old{i}"), b"old"))
                .collect(),
        )
        .await
        .expect("publish history");
    let last = appended(&old[9]);

    // On a stream of its own, and added to a stream that already follows a channel.
    let mut alone = client
        .subscribe(&ch, SubscribeFrom::Latest)
        .await
        .expect("subscribe");
    assert_eq!(
        subscribed(&mut alone).await,
        (last.serial.next(), Some(last))
    );
    let other = channel("chat:other");
    let mut shared = client
        .subscribe(&other, SubscribeFrom::Start)
        .await
        .expect("subscribe other");
    assert_eq!(subscribed(&mut shared).await, (Serial::FIRST, None));
    shared
        .add(&ch, SubscribeFrom::Latest)
        .await
        .expect("add latest");
    assert_eq!(
        subscribed(&mut shared).await,
        (last.serial.next(), Some(last))
    );

    let new = client
        .publish(
            (0..3)
                .map(|i| message(ch.as_str(), &format!("new{i}"), b"new"))
                .collect(),
        )
        .await
        .expect("publish new");
    let new: Vec<Position> = new.iter().map(appended).collect();
    for subscription in [&mut alone, &mut shared] {
        let got = collect(subscription, 3).await;
        assert_eq!(got.len(), 1, "only the new messages of {ch}: {got:?}");
        let messages = &got[&ch];
        assert_dense(messages, 11);
        assert!(messages.iter().all(|m| m.payload == b"new"[..]));
        assert_eq!(messages.iter().map(|m| m.position).collect::<Vec<_>>(), new);
    }

    // The other two starting points say what came before too.
    let mut from_start = client
        .subscribe(&ch, SubscribeFrom::Start)
        .await
        .expect("subscribe from start");
    assert_eq!(subscribed(&mut from_start).await, (Serial::FIRST, None));
    let mut after = client
        .subscribe(&ch, SubscribeFrom::After(last))
        .await
        .expect("subscribe after");
    assert_eq!(
        subscribed(&mut after).await,
        (last.serial.next(), Some(last))
    );
    assert_dense(&collect(&mut after, 3).await[&ch], 11);
    node.stop().await;
}

#[tokio::test]
async fn two_channels_share_one_subscription_stream() {
    let node = Node::start(link()).await;
    let client = node.client().await;
    client
        .publish(vec![message("a", "a0", b"x"), message("b", "b0", b"x")])
        .await
        .expect("publish");
    let mut subscription = client
        .subscribe(&channel("a"), SubscribeFrom::Start)
        .await
        .expect("subscribe a");
    subscription
        .add(&channel("b"), SubscribeFrom::Start)
        .await
        .expect("subscribe b");
    let mut subscribed = HashSet::new();
    while subscribed.len() < 2 {
        if let SubscriptionEvent::Subscribed { channel, .. } = next_event(&mut subscription).await {
            subscribed.insert(channel);
        }
    }
    for i in 1..=20 {
        client
            .publish(vec![
                message("a", &format!("a{i}"), b"x"),
                message("b", &format!("b{i}"), b"x"),
            ])
            .await
            .expect("publish");
    }
    let got = collect(&mut subscription, 42).await;
    assert_dense(&got[&channel("a")], 1);
    assert_dense(&got[&channel("b")], 1);
    assert_eq!(got[&channel("a")].len(), 21);

    // Unsubscribing one leaves the other flowing.
    subscription
        .remove(&channel("a"))
        .await
        .expect("unsubscribe");
    loop {
        match next_event(&mut subscription).await {
            SubscriptionEvent::Unsubscribed { channel: c } => {
                assert_eq!(c, channel("a"));
                break;
            }
            SubscriptionEvent::Messages { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    client
        .publish(vec![
            message("a", "a-late", b"x"),
            message("b", "b-late", b"x"),
        ])
        .await
        .expect("publish");
    let got = collect(&mut subscription, 1).await;
    assert_eq!(got.keys().collect::<Vec<_>>(), vec![&channel("b")]);
    node.stop().await;
}

#[tokio::test]
async fn malformed_frames_are_answered_and_the_stream_goes_on() {
    let node = Node::start(link()).await;
    let conn = node.raw().await;
    // A frame of the right length and version whose body is not a frame.
    let mut bytes = vec![0, 0, 0, 3, PROTOCOL_VERSION, 0xff, 0xff];
    bytes.extend(encoded(&Frame::Ping { nonce: 7 }));
    let (frames, _send, _recv) =
        raw_exchange(&conn, &bytes, |f| matches!(f, Frame::Pong { .. })).await;
    assert!(matches!(
        &frames[0],
        Frame::Error(e) if e.code == ErrorCode::MalformedFrame && !e.fatal
    ));
    assert_eq!(frames[1], Frame::Pong { nonce: 7 });

    // A frame kind only the log sends is refused the same way.
    let (frames, _send, _recv) = raw_exchange(
        &conn,
        &[
            encoded(&Frame::Pong { nonce: 1 }),
            encoded(&Frame::Ping { nonce: 2 }),
        ]
        .concat(),
        |f| matches!(f, Frame::Pong { .. }),
    )
    .await;
    assert!(matches!(&frames[0], Frame::Error(e) if e.code == ErrorCode::MalformedFrame));
    assert_eq!(frames[1], Frame::Pong { nonce: 2 });
    node.stop().await;
}

#[tokio::test]
async fn oversized_and_wrong_version_frames_end_the_stream_not_the_connection() {
    let node = Node::start(link()).await;
    let conn = node.raw().await;

    let oversized = (u32::MAX - 8).to_be_bytes();
    let (frames, _send, _recv) = raw_exchange(&conn, &oversized, |_| false).await;
    assert_eq!(frames.len(), 1, "one error, then the end of the stream");
    assert!(matches!(
        &frames[0],
        Frame::Error(e) if e.code == ErrorCode::FrameTooLarge && e.fatal
    ));

    let mut wrong_version = encoded(&Frame::Ping { nonce: 1 });
    wrong_version[4] = PROTOCOL_VERSION + 1;
    let (frames, _send, _recv) = raw_exchange(&conn, &wrong_version, |_| false).await;
    assert_eq!(frames.len(), 1);
    assert!(matches!(
        &frames[0],
        Frame::Error(e) if e.code == ErrorCode::UnsupportedVersion && e.fatal
    ));

    // The connection still serves new streams.
    let (frames, _send, _recv) = raw_exchange(&conn, &encoded(&Frame::Ping { nonce: 3 }), |f| {
        matches!(f, Frame::Pong { .. })
    })
    .await;
    assert_eq!(frames, vec![Frame::Pong { nonce: 3 }]);
    node.stop().await;
}

#[tokio::test]
async fn requests_over_the_inflight_limit_are_refused_not_dropped() {
    let node = Node::start(LinkServerConfig {
        max_inflight_per_stream: 2,
        ..link()
    })
    .await;
    let conn = node.raw().await;
    let requests: Vec<u8> = (0..50u64)
        .flat_map(|id| {
            encoded(&Frame::Publish {
                request_id: id,
                messages: vec![message("chat:q", &format!("k{id}"), b"x")],
            })
        })
        .collect();
    let answered = std::sync::Mutex::new(HashSet::new());
    let (frames, _send, _recv) = raw_exchange(&conn, &requests, |f| {
        let id = match f {
            Frame::PublishResult { request_id, .. } | Frame::RequestFailed { request_id, .. } => {
                *request_id
            }
            _ => return false,
        };
        let mut answered = answered.lock().expect("not poisoned");
        answered.insert(id);
        answered.len() == 50
    })
    .await;
    let refused = frames
        .iter()
        .filter(|f| {
            matches!(f, Frame::RequestFailed { error, .. } if error.code == ErrorCode::TooManyRequests && error.retryable)
        })
        .count();
    let stored = frames
        .iter()
        .filter(|f| matches!(f, Frame::PublishResult { .. }))
        .count();
    assert_eq!(refused + stored, 50, "every request answered exactly once");
    assert!(
        refused > 0,
        "a burst of 50 over a limit of 2 is refused in part"
    );
    assert!(stored >= 2);
    node.stop().await;
}

#[tokio::test]
async fn slow_subscriber_is_dropped_while_publishing_goes_on() {
    let node = Node::start(LinkServerConfig {
        subscriber_queue_frames: 4,
        ..link()
    })
    .await;
    let publisher = node.client().await;
    let subscriber = node.client().await;
    let ch = channel("chat:firehose");
    let mut slow = subscriber
        .subscribe(&ch, SubscribeFrom::Start)
        .await
        .expect("subscribe");
    assert!(matches!(
        next_event(&mut slow).await,
        SubscriptionEvent::Subscribed { .. }
    ));
    // A healthy subscriber on another connection, read as fast as it comes, to show
    // it is unaffected.
    let batches = 300;
    let mut healthy = publisher
        .subscribe(&ch, SubscribeFrom::Start)
        .await
        .expect("subscribe");
    let healthy = tokio::spawn(async move {
        let mut count = 0;
        while count < batches {
            match next_event(&mut healthy).await {
                SubscriptionEvent::Messages { messages, .. } => count += messages.len(),
                SubscriptionEvent::Subscribed { .. } => {}
                other => panic!("healthy subscriber got {other:?}"),
            }
        }
        count
    });

    // Far more than the slow stream's QUIC window and queue can hold.
    let payload = vec![7u8; 16 * 1024];
    let mut stored = 0;
    for b in 0..batches {
        let outcomes = publisher
            .publish(vec![message(ch.as_str(), &format!("k{b}"), &payload)])
            .await
            .expect("publishing never waits on the slow subscriber");
        stored += outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Appended(_)))
            .count();
    }
    assert_eq!(stored, batches);
    assert_eq!(healthy.await.expect("healthy subscriber"), batches);

    // The slow one now reads: what got through, then the drop.
    let mut slow_count = 0;
    let reason = loop {
        match next_event(&mut slow).await {
            SubscriptionEvent::Messages { messages, .. } => slow_count += messages.len(),
            SubscriptionEvent::Closed(reason) => break reason,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(reason.is_slow_consumer(), "dropped as slow, got {reason:?}");
    assert!(reason.is_retryable());
    assert!(
        slow_count < batches,
        "the slow subscriber did not get everything"
    );
    assert!(slow.next_event().await.is_none());

    // Its connection is still good for other work.
    assert!(subscriber.ping().await.is_ok());
    node.stop().await;
}

#[tokio::test]
async fn shutdown_tells_clients_and_closes_the_store() {
    let node = Node::start(link()).await;
    let client = node.client().await;
    let mut subscription = client
        .subscribe(&channel("c"), SubscribeFrom::Start)
        .await
        .expect("subscribe");
    assert!(matches!(
        next_event(&mut subscription).await,
        SubscriptionEvent::Subscribed { .. }
    ));
    node.stop().await;
    let closed = loop {
        match next_event(&mut subscription).await {
            SubscriptionEvent::Closed(reason) => break reason,
            SubscriptionEvent::Messages { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(closed.is_retryable(), "{closed:?}");
    let error = client.ping().await.expect_err("node is gone");
    assert!(error.is_retryable(), "{error:?}");
}

#[tokio::test]
async fn store_failures_fail_the_whole_request() {
    use tern_log::LogStore;
    let node = Node::start(link()).await;
    let client = node.client().await;
    node.store
        .close()
        .await
        .expect("close the store under the server");
    let error = client
        .publish(vec![message("chat:a", "k1", b"x")])
        .await
        .expect_err("the store is closed");
    assert_eq!(error.code(), Some(ErrorCode::ShuttingDown));
    assert!(error.is_retryable());
    // The stream survives a failed request.
    assert!(client.ping().await.is_ok());
    // No orderly stop: the store is already closed. The runtime ends the server.
}

#[tokio::test]
async fn ping_answers_on_a_fresh_client() {
    let node = Node::start(link()).await;
    let client = node.client().await;
    let rtt = client.ping().await.expect("pong");
    assert!(rtt < PATIENCE);
    node.stop().await;
}
