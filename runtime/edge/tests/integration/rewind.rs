//! ATTACH `rewind` with a span of time, over a real edge and log: the messages the
//! log stored within the span are delivered first, none before it, then live ones;
//! a span holding nothing attaches at the channel's last position.

use crate::support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::{ADMIN_KEY, Client, Cluster};
use tern_protocol::{
    Attach, Attached, ClientFrame, Format, Message, MessageFrame, Publish, Rewind, ServerFrame,
};

/// Publishes `text` on `channel` and waits for its ACK.
async fn publish(client: &mut Client, msg_serial: u64, channel: &str, text: &str) {
    client
        .send(&ClientFrame::Publish(Publish {
            msg_serial,
            channel: channel.into(),
            messages: vec![Message::new(text)],
        }))
        .await;
    client
        .recv_matching(|f| match f {
            ServerFrame::Ack(a) if a.msg_serial == msg_serial => Some(()),
            ServerFrame::Nack(n) => panic!("nack: {n:?}"),
            _ => None,
        })
        .await;
}

async fn next_message(client: &mut Client) -> MessageFrame {
    client
        .recv_matching(|f| match f {
            ServerFrame::Message(m) => Some(m.clone()),
            _ => None,
        })
        .await
}

async fn attach_rewinding(cluster: &Cluster, channel: &str, span: Duration) -> (Client, Attached) {
    let mut client = cluster.connected(Format::MsgPack, ADMIN_KEY).await;
    client
        .send(&ClientFrame::Attach(Attach {
            channel: channel.into(),
            from: None,
            rewind: Some(Rewind::Span(span)),
        }))
        .await;
    let attached = client
        .recv_matching(|f| match f {
            ServerFrame::Attached(a) => Some(a.clone()),
            ServerFrame::Detached(d) => panic!("detached: {d:?}"),
            _ => None,
        })
        .await;
    (client, attached)
}

fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since_epoch.as_millis()).expect("fits")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewind_span_delivers_what_was_stored_within_it() {
    let cluster = Cluster::start().await;
    let mut publisher = cluster.connected(Format::Json, ADMIN_KEY).await;
    let mut watcher = cluster.connected(Format::Json, ADMIN_KEY).await;
    watcher
        .send(&ClientFrame::Attach(Attach {
            channel: "span".into(),
            ..Attach::default()
        }))
        .await;
    watcher
        .recv_matching(|f| matches!(f, ServerFrame::Attached(_)).then_some(()))
        .await;

    // Two old messages, a gap of 3 s, two new ones; the watcher learns when the log
    // stored them.
    publish(&mut publisher, 0, "span", "old-1").await;
    publish(&mut publisher, 1, "span", "old-2").await;
    next_message(&mut watcher).await;
    let old = next_message(&mut watcher).await;
    let old_ms = old
        .message
        .timestamp
        .expect("stored messages carry their time");
    tokio::time::sleep(Duration::from_secs(3)).await;
    publish(&mut publisher, 2, "span", "new-1").await;
    publish(&mut publisher, 3, "span", "new-2").await;

    // A span reaching back to just after the old ones: only the new ones. (The
    // edge takes its own clock when the ATTACH arrives, a little later than ours,
    // so the span's start falls in the 3 s gap unless the machine stalls that long.)
    let span = Duration::from_millis(now_ms() - old_ms - 1);
    let (mut rewinder, at) = attach_rewinding(&cluster, "span", span).await;
    assert!(at.error.is_none(), "{at:?}");
    assert_eq!(
        at.position,
        Some(old.position),
        "the position before the first"
    );
    for (serial, text) in [(3, "new-1"), (4, "new-2")] {
        let m = next_message(&mut rewinder).await;
        assert_eq!(m.position.serial, serial);
        assert_eq!(m.message.data, tern_protocol::Data::Text(text.into()));
    }
    // Then live, with nothing repeated.
    publish(&mut publisher, 4, "span", "live").await;
    assert_eq!(next_message(&mut rewinder).await.position.serial, 5);

    // A span reaching back over everything: from the first message.
    let (mut all, at) = attach_rewinding(&cluster, "span", Duration::from_secs(3600)).await;
    assert_eq!(at.position, Some(tern_protocol::Position::BEFORE_FIRST));
    for serial in 1..=5 {
        assert_eq!(next_message(&mut all).await.position.serial, serial);
    }

    // A span holding nothing: attached at the last position, then live.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (mut late, at) = attach_rewinding(&cluster, "span", Duration::from_millis(10)).await;
    assert_eq!(at.position.map(|p| p.serial), Some(5));
    publish(&mut publisher, 5, "span", "later").await;
    assert_eq!(next_message(&mut late).await.position.serial, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewind_span_needs_the_history_capability_and_a_valid_span() {
    let cluster = Cluster::start().await;
    // May subscribe to `news:*`, but not read its history.
    let mut client = cluster.connected(Format::Json, support::LIMITED_KEY).await;
    client
        .send(&ClientFrame::Attach(Attach {
            channel: "news:span".into(),
            from: None,
            rewind: Some(Rewind::Span(Duration::from_secs(60))),
        }))
        .await;
    let detached = client
        .recv_matching(|f| match f {
            ServerFrame::Detached(d) => Some(d.clone()),
            ServerFrame::Attached(a) => panic!("attached without history: {a:?}"),
            _ => None,
        })
        .await;
    assert_eq!(
        detached.error.map(|e| e.code),
        Some(tern_protocol::ErrorCode::Forbidden)
    );

    // Not a span: the frame is malformed, and the session goes on.
    client
        .send_raw(br#"{"type":"ATTACH","channel":"span","rewind":"2 days"}"#.to_vec())
        .await;
    let error = client
        .recv_matching(|f| match f {
            ServerFrame::Error(e) => Some(e.clone()),
            _ => None,
        })
        .await;
    assert_eq!(error.error.code, tern_protocol::ErrorCode::Malformed);
}
