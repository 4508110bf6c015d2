//! Catch-up over real sockets: a subscriber far behind on large messages gets every
//! one of them through the default 1 MiB outbound budget, paced by its own reading,
//! instead of being disconnected as a slow consumer.

use crate::support;

use support::{ADMIN_KEY, Cluster, Next};
use tern_protocol::{Attach, ClientFrame, Data, Format, Message, Position, Publish, ServerFrame};

/// Messages in the backlog; more than one catch-up read (256) and, at 8 KB each,
/// several times the outbound budget.
const BACKLOG: u64 = 300;
const MESSAGE_BYTES: usize = 8 * 1000;
/// Messages per PUBLISH (stays under the 256 KiB frame limit).
const PER_PUBLISH: u64 = 20;

/// Publishes the backlog on `channel`; returns the position of its last message.
async fn publish_backlog(cluster: &Cluster, channel: &str) -> Position {
    let mut publisher = cluster.connected(Format::Json, ADMIN_KEY).await;
    let body = "x".repeat(MESSAGE_BYTES);
    let mut last = None;
    for batch in 0..BACKLOG / PER_PUBLISH {
        let messages = (0..PER_PUBLISH)
            .map(|_| Message::new(Data::Text(body.clone())))
            .collect();
        publisher
            .send(&ClientFrame::Publish(Publish {
                msg_serial: batch,
                channel: channel.into(),
                messages,
            }))
            .await;
        last = publisher
            .recv_matching(|f| match f {
                ServerFrame::Ack(a) if a.msg_serial == batch => {
                    Some(a.results.last().map(|r| r.position))
                }
                ServerFrame::Nack(n) => panic!("nack: {n:?}"),
                _ => None,
            })
            .await;
    }
    last.expect("positions")
}

/// Attaches `channel` with `attach` and reads until the whole backlog arrived:
/// ATTACHED first, then serials 1 to BACKLOG in order, never a DISCONNECTED.
async fn catch_up(cluster: &Cluster, format: Format, attach: Attach) -> tern_protocol::Attached {
    let channel = attach.channel.clone();
    let mut client = cluster.connected(format, ADMIN_KEY).await;
    client.send(&ClientFrame::Attach(attach)).await;
    let mut attached = None;
    let mut expected = 1;
    while expected <= BACKLOG {
        match client.next().await {
            Next::Frame(ServerFrame::Attached(a)) if a.channel == channel => {
                assert!(attached.is_none(), "a second ATTACHED: {a:?}");
                attached = Some(a);
            }
            Next::Frame(ServerFrame::Message(m)) => {
                assert!(attached.is_some(), "MESSAGE before ATTACHED");
                assert_eq!(m.position.serial, expected, "in order, no gap");
                match &m.message.data {
                    Data::Text(text) => assert_eq!(text.len(), MESSAGE_BYTES),
                    other => panic!("unexpected data {other:?}"),
                }
                expected += 1;
            }
            Next::Frame(ServerFrame::Disconnected(d)) => {
                panic!("disconnected after {} messages: {d:?}", expected - 1)
            }
            Next::Frame(_) => {}
            other => panic!(
                "connection ended after {} messages: {other:?}",
                expected - 1
            ),
        }
    }
    attached.expect("ATTACHED")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewind_over_a_large_backlog_is_paced_not_disconnected() {
    let cluster = Cluster::start().await;
    let last = publish_backlog(&cluster, "big").await;
    assert_eq!(last.serial, BACKLOG);
    for format in Format::ALL {
        let at = catch_up(
            &cluster,
            format,
            Attach {
                channel: "big".into(),
                from: None,
                rewind: Some(tern_protocol::Rewind::Messages(
                    u32::try_from(BACKLOG).expect("small"),
                )),
            },
        )
        .await;
        assert_eq!(at.position, Some(Position::BEFORE_FIRST));
        assert!(at.error.is_none(), "{at:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_over_a_large_backlog_is_paced_not_disconnected() {
    let cluster = Cluster::start().await;
    publish_backlog(&cluster, "big").await;
    let at = catch_up(
        &cluster,
        Format::Json,
        Attach {
            channel: "big".into(),
            from: Some(Position::BEFORE_FIRST),
            rewind: None,
        },
    )
    .await;
    assert!(at.resumed && at.error.is_none(), "{at:?}");
}
