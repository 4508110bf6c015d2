//! How sessions end, over real sockets: every PUBLISH the server read is answered
//! before CLOSED or DISCONNECTED (client CLOSE, slow consumer, shutdown); a client's
//! WebSocket close is answered; large publishes from several connections are batched
//! within the link's frame limit.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt as _;
use support::{ADMIN_KEY, Cluster, Next, PATIENCE};
use tern_config::EdgeLimitsConfig;
use tern_protocol::{
    Attach, ClientFrame, ErrorCode, Format, Heartbeat, Message, Publish, ServerFrame,
};
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn publish(msg_serial: u64, channel: &str, message: Message) -> Vec<u8> {
    tern_protocol::encode(
        Format::Json,
        &ClientFrame::Publish(Publish {
            msg_serial,
            channel: channel.into(),
            messages: vec![message],
        }),
    )
}

fn encode(frame: &ClientFrame) -> Vec<u8> {
    tern_protocol::encode(Format::Json, frame)
}

/// Several frames as one WebSocket message (a JSON array).
async fn send_together(client: &mut support::Client, frames: &[Vec<u8>]) {
    client
        .send_raw(tern_protocol::join(Format::Json, frames))
        .await;
}

/// Reads until CLOSED or DISCONNECTED; returns the msg_serials answered (ACK or NACK)
/// before it, and the last frame.
async fn answers_until_the_end(client: &mut support::Client) -> (BTreeSet<u64>, ServerFrame) {
    let mut answered = BTreeSet::new();
    loop {
        match client.recv().await {
            ServerFrame::Ack(a) => assert!(answered.insert(a.msg_serial), "answered twice"),
            ServerFrame::Nack(n) => assert!(answered.insert(n.msg_serial), "answered twice"),
            last @ (ServerFrame::Closed(_) | ServerFrame::Disconnected(_)) => {
                return (answered, last);
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn publish_then_close_in_one_message_is_acked_before_closed() {
    let cluster = Cluster::start().await;
    let mut client = cluster.connected(Format::Json, ADMIN_KEY).await;
    let frames = [
        publish(1, "bye", Message::new("last words")),
        encode(&ClientFrame::Close(tern_protocol::Close {})),
        // Ignored: it follows CLOSE.
        publish(2, "bye", Message::new("too late")),
    ];
    send_together(&mut client, &frames).await;
    match client.recv().await {
        ServerFrame::Ack(a) => assert_eq!(a.msg_serial, 1),
        other => panic!("expected the ACK first, got {other:?}"),
    }
    assert_eq!(
        client.recv().await,
        ServerFrame::Closed(tern_protocol::Closed {})
    );
    match client.next().await {
        Next::Closed(Some(frame)) => assert_eq!(u16::from(frame.code), 1000),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_gets_the_answers_of_its_publishes_before_disconnected() {
    let limits = EdgeLimitsConfig {
        outbound_queue_bytes: 64 * 1024,
        ..EdgeLimitsConfig::default()
    };
    let cluster = Cluster::with_limits(limits).await;
    let mut client = cluster.connected(Format::Json, ADMIN_KEY).await;
    client
        .send(&ClientFrame::Attach(Attach {
            channel: "echo".into(),
            ..Attach::default()
        }))
        .await;
    client
        .recv_matching(|f| matches!(f, ServerFrame::Attached(_)).then_some(()))
        .await;
    // Each round: 64 publishes in one WebSocket message (all read together), whose
    // fan-out back to this connection is several times its outbox budget.
    let payload = "p".repeat(3000);
    for round in 0..20u64 {
        let serials: Vec<u64> = (round * 64..round * 64 + 64).collect();
        let frames: Vec<_> = serials
            .iter()
            .map(|&s| publish(s, "echo", Message::new(payload.as_str())))
            .collect();
        send_together(&mut client, &frames).await;
        // Between rounds nothing is on its way (answers and echoes all read), so the
        // overflow comes from this round's echoes, after all 64 publishes were read.
        let mut answered = BTreeSet::new();
        let mut echoes = 0;
        loop {
            match client.recv().await {
                ServerFrame::Message(_) => echoes += 1,
                ServerFrame::Ack(a) => assert!(answered.insert(a.msg_serial)),
                ServerFrame::Nack(n) => assert!(answered.insert(n.msg_serial), "{n:?}"),
                ServerFrame::Disconnected(d) => {
                    assert_eq!(d.error.code, ErrorCode::SlowConsumer);
                    let missing: Vec<_> =
                        serials.iter().filter(|s| !answered.contains(s)).collect();
                    assert!(missing.is_empty(), "round {round}: unanswered {missing:?}");
                    assert!(matches!(client.next().await, Next::Closed(Some(_))));
                    return;
                }
                _ => {}
            }
            if answered.len() == serials.len() && echoes == serials.len() {
                break;
            }
        }
    }
    panic!("never a slow consumer: the test did not provoke what it tests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_publishes_in_flight_before_disconnected() {
    let cluster = Cluster::start().await;
    let mut clients = Vec::new();
    for format in [Format::Json, Format::Json] {
        clients.push(cluster.connected(format, ADMIN_KEY).await);
    }
    for client in &mut clients {
        let mut frames: Vec<_> = (0..64)
            .map(|s| publish(s, "going", Message::new("m".repeat(2000))))
            .collect();
        frames.push(encode(&ClientFrame::Heartbeat(Heartbeat {
            id: Some(99),
            connection_key: None,
        })));
        send_together(client, &frames).await;
    }
    // Every publish was read once the heartbeat after them is answered; then stop.
    let mut answered = Vec::new();
    for client in &mut clients {
        let mut mine = BTreeSet::new();
        loop {
            match client.recv().await {
                ServerFrame::Ack(a) => assert!(mine.insert(a.msg_serial)),
                ServerFrame::Nack(n) => assert!(mine.insert(n.msg_serial)),
                ServerFrame::Heartbeat(Heartbeat {
                    id: Some(99),
                    connection_key: None,
                }) => break,
                _ => {}
            }
        }
        answered.push(mine);
    }
    let Cluster { log: _log, edge } = cluster;
    let stopping = tokio::spawn(edge.shutdown());
    for (client, mut mine) in clients.iter_mut().zip(answered) {
        let (later, last) = answers_until_the_end(client).await;
        match last {
            ServerFrame::Disconnected(d) => assert_eq!(d.error.code, ErrorCode::ShuttingDown),
            other => panic!("{other:?}"),
        }
        for serial in later {
            assert!(mine.insert(serial), "answered twice");
        }
        assert_eq!(
            mine,
            (0..64).collect::<BTreeSet<u64>>(),
            "every PUBLISH answered"
        );
        match client.next().await {
            Next::Closed(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
            other => panic!("{other:?}"),
        }
        // Reading on sends the close reply, so the edge need not wait for it.
        assert!(matches!(
            client.next().await,
            Next::Closed(None) | Next::Error(_)
        ));
    }
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("shutdown finishes")
        .expect("shutdown task");
}

#[tokio::test]
async fn a_client_websocket_close_is_answered() {
    let cluster = Cluster::start().await;
    let mut client = cluster.connected(Format::MsgPack, ADMIN_KEY).await;
    client.ws.close(None).await.expect("close sent");
    let reply = tokio::time::timeout(PATIENCE, client.ws.next())
        .await
        .expect("an answer in time");
    match reply {
        Some(Ok(WsMessage::Close(_))) => {}
        other => panic!("expected the server's close reply, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(PATIENCE, client.ws.next())
            .await
            .expect("the end in time")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_headers_from_several_connections_are_all_stored() {
    let limits = EdgeLimitsConfig {
        max_frame_bytes: 1024 * 1024,
        max_message_bytes: 256 * 1024,
        ..EdgeLimitsConfig::default()
    };
    let cluster = Cluster::with_limits(limits).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(cluster.connected(Format::Json, ADMIN_KEY).await);
    }
    // 4 connections × 8 messages × 4 publishes × 200 KiB of headers: about 25 MiB
    // queued at once, more than a link frame (16 MiB) if batched by payload alone.
    let mut message = Message::new("small payload");
    message.headers = BTreeMap::from([("big".to_owned(), "h".repeat(200 * 1024))]);
    for client in &mut clients {
        for batch in 0..8u64 {
            let frames: Vec<_> = (0..4)
                .map(|i| publish(batch * 4 + i, "wide", message.clone()))
                .collect();
            send_together(client, &frames).await;
        }
    }
    for client in &mut clients {
        let mut acked = BTreeSet::new();
        while acked.len() < 32 {
            match client.recv().await {
                ServerFrame::Ack(a) => assert!(acked.insert(a.msg_serial)),
                ServerFrame::Nack(n) => panic!("NACK: {:?}", n.error),
                _ => {}
            }
        }
    }
}
