//! Every bad input of the client protocol, provoked for real over a socket: each gets
//! its documented error code, and the connection survives where the protocol says so.

use crate::support;

use support::{ADMIN_KEY, Client, Cluster, LIMITED_KEY, Next, http};
use tern_config::EdgeLimitsConfig;
use tern_protocol::{
    Attach, ClientFrame, Connect, ErrorCode, Format, Heartbeat, Message, Publish, Reconnect,
    ServerFrame,
};

/// The connection still answers: a HEARTBEAT with an id comes back (skipping other frames).
async fn still_alive(client: &mut Client) {
    client
        .send(&ClientFrame::Heartbeat(Heartbeat {
            id: Some(4242),
            connection_key: None,
        }))
        .await;
    client
        .recv_matching(|f| {
            matches!(
                f,
                ServerFrame::Heartbeat(Heartbeat {
                    id: Some(4242),
                    connection_key: None
                })
            )
            .then_some(())
        })
        .await;
}

async fn error_code(client: &mut Client) -> ErrorCode {
    match client.recv().await {
        ServerFrame::Error(e) => e.error.code,
        other => panic!("expected ERROR, got {other:?}"),
    }
}

async fn nack_code(client: &mut Client, msg_serial: u64) -> ErrorCode {
    match client.recv().await {
        ServerFrame::Nack(n) if n.msg_serial == msg_serial => n.error.code,
        other => panic!("expected NACK {msg_serial}, got {other:?}"),
    }
}

async fn detached_code(client: &mut Client, channel: &str) -> ErrorCode {
    match client.recv().await {
        ServerFrame::Detached(d) if d.channel == channel => d.error.expect("an error").code,
        other => panic!("expected DETACHED {channel}, got {other:?}"),
    }
}

fn publish(msg_serial: u64, channel: &str, messages: Vec<Message>) -> ClientFrame {
    ClientFrame::Publish(Publish {
        msg_serial,
        channel: channel.into(),
        messages,
    })
}

fn attach(channel: &str) -> ClientFrame {
    ClientFrame::Attach(Attach {
        channel: channel.into(),
        ..Attach::default()
    })
}

#[tokio::test]
async fn undecodable_frames_get_errors_and_the_connection_survives() {
    let cluster = Cluster::start().await;
    let mut json = cluster.connected(Format::Json, ADMIN_KEY).await;
    json.send_raw(b"{not json".to_vec()).await;
    assert_eq!(error_code(&mut json).await, ErrorCode::Malformed);
    json.send_raw(br#"{"type":"SUBSCRIBE_ALL"}"#.to_vec()).await;
    assert_eq!(error_code(&mut json).await, ErrorCode::UnknownFrame);
    json.send_raw(br#"{"no_type":1}"#.to_vec()).await;
    assert_eq!(error_code(&mut json).await, ErrorCode::Malformed);
    // A PUBLISH missing its messages, whose msg_serial is readable, is NACKed.
    json.send_raw(br#"{"type":"PUBLISH","msg_serial":5,"channel":"c"}"#.to_vec())
        .await;
    assert_eq!(nack_code(&mut json, 5).await, ErrorCode::Malformed);
    still_alive(&mut json).await;

    let mut msgpack = cluster.connected(Format::MsgPack, ADMIN_KEY).await;
    // A map of two entries cut short.
    msgpack.send_raw(vec![0x82, 0xa4, b't']).await;
    assert_eq!(error_code(&mut msgpack).await, ErrorCode::Malformed);
    // A map with an unknown type.
    let unknown = rmp_like_map_type("NOPE");
    msgpack.send_raw(unknown).await;
    assert_eq!(error_code(&mut msgpack).await, ErrorCode::UnknownFrame);
    still_alive(&mut msgpack).await;
}

/// A MessagePack map `{"type": kind}` written by hand.
fn rmp_like_map_type(kind: &str) -> Vec<u8> {
    let mut out = vec![0x81, 0xa4];
    out.extend_from_slice(b"type");
    out.push(0xa0 | u8::try_from(kind.len()).expect("short"));
    out.extend_from_slice(kind.as_bytes());
    out
}

#[tokio::test]
async fn an_oversized_websocket_message_ends_the_connection_with_1009() {
    let cluster = Cluster::with_limits(EdgeLimitsConfig {
        max_frame_bytes: 4096,
        ..EdgeLimitsConfig::default()
    })
    .await;
    let mut client = cluster.connected(Format::Json, ADMIN_KEY).await;
    let big = Message::new("x".repeat(10_000));
    client.send(&publish(1, "c", vec![big])).await;
    match client.recv().await {
        ServerFrame::Disconnected(d) => {
            assert_eq!(d.error.code, ErrorCode::FrameTooLarge);
            assert_eq!(d.reconnect, Reconnect::Retry);
        }
        other => panic!("expected DISCONNECTED, got {other:?}"),
    }
    match client.next().await {
        Next::Closed(Some(frame)) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
    // The same limit on an HTTP body: 413, nothing stored.
    let body = format!(r#"{{"data":"{}"}}"#, "x".repeat(10_000));
    let path = format!("/v1/channels/c/messages?key={ADMIN_KEY}");
    let (status, text) = http(cluster.addr(), "POST", &path, &[], body.as_bytes()).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("40009"), "{text}");
    let (status, text) = http(cluster.addr(), "GET", &path, &[], b"").await;
    assert_eq!(status, 200);
    assert!(text.contains("\"messages\":[]"), "{text}");
}

#[tokio::test]
async fn publish_limits_are_nacked_and_the_connection_survives() {
    let cluster = Cluster::with_limits(EdgeLimitsConfig {
        max_message_bytes: 1000,
        max_messages_per_publish: 3,
        ..EdgeLimitsConfig::default()
    })
    .await;
    let mut client = cluster.connected(Format::MsgPack, ADMIN_KEY).await;
    client
        .send(&publish(1, "c", vec![Message::new("y".repeat(2000))]))
        .await;
    assert_eq!(nack_code(&mut client, 1).await, ErrorCode::MessageTooLarge);
    client
        .send(&publish(2, "c", vec![Message::new("m"); 4]))
        .await;
    assert_eq!(nack_code(&mut client, 2).await, ErrorCode::TooManyMessages);
    client.send(&publish(3, "c", vec![])).await;
    assert_eq!(nack_code(&mut client, 3).await, ErrorCode::InvalidValue);
    let mut reserved = Message::new("r");
    reserved.headers.insert("tern-name".into(), "x".into());
    client.send(&publish(4, "c", vec![reserved])).await;
    assert_eq!(nack_code(&mut client, 4).await, ErrorCode::InvalidValue);
    let mut long_id = Message::new("i");
    long_id.id = Some("i".repeat(256));
    client.send(&publish(5, "c", vec![long_id])).await;
    assert_eq!(nack_code(&mut client, 5).await, ErrorCode::InvalidValue);
    // Nothing of it was stored.
    let (status, body) = http(
        cluster.addr(),
        "GET",
        &format!("/v1/channels/c/messages?key={ADMIN_KEY}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("\"messages\":[]"), "{body}");
    still_alive(&mut client).await;
}

#[tokio::test]
async fn invalid_channel_names_are_refused() {
    let cluster = Cluster::start().await;
    let mut client = cluster.connected(Format::Json, ADMIN_KEY).await;
    let long = "c".repeat(256);
    for name in ["", "with space", "$functions", "tab\there", long.as_str()] {
        client.send(&attach(name)).await;
        assert_eq!(
            detached_code(&mut client, name).await,
            ErrorCode::InvalidChannel
        );
        client
            .send(&publish(9, name, vec![Message::new("x")]))
            .await;
        assert_eq!(nack_code(&mut client, 9).await, ErrorCode::InvalidChannel);
    }
    still_alive(&mut client).await;
    let (status, body) = http(
        cluster.addr(),
        "POST",
        &format!("/v1/channels/%24functions/messages?key={ADMIN_KEY}"),
        &[],
        br#"{"data":"x"}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("40002"), "{body}");
}

#[tokio::test]
async fn frames_before_connect_are_refused_until_connect() {
    let cluster = Cluster::start().await;
    let mut client = cluster.client(Format::Json).await;
    client
        .send(&publish(7, "c", vec![Message::new("early")]))
        .await;
    assert_eq!(nack_code(&mut client, 7).await, ErrorCode::NotConnected);
    client.send(&attach("c")).await;
    assert_eq!(error_code(&mut client).await, ErrorCode::NotConnected);
    still_alive(&mut client).await;
    client.connect(ADMIN_KEY).await;
    client
        .send(&ClientFrame::Connect(Connect {
            key: Some(ADMIN_KEY.into()),
            ..Connect::default()
        }))
        .await;
    assert_eq!(error_code(&mut client).await, ErrorCode::AlreadyConnected);
    client
        .send(&publish(8, "c", vec![Message::new("now")]))
        .await;
    match client.recv().await {
        ServerFrame::Ack(a) => assert_eq!(a.msg_serial, 8),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn too_many_channels_detaches_the_extra_one() {
    let cluster = Cluster::with_limits(EdgeLimitsConfig {
        max_channels_per_connection: 2,
        ..EdgeLimitsConfig::default()
    })
    .await;
    let mut client = cluster.connected(Format::Json, ADMIN_KEY).await;
    for channel in ["a", "b"] {
        client.send(&attach(channel)).await;
        match client.recv().await {
            ServerFrame::Attached(a) => assert_eq!(a.channel, channel),
            other => panic!("{other:?}"),
        }
    }
    client.send(&attach("c")).await;
    assert_eq!(
        detached_code(&mut client, "c").await,
        ErrorCode::TooManyChannels
    );
    // Re-attaching one already attached is fine.
    client.send(&attach("a")).await;
    match client.recv().await {
        ServerFrame::Attached(a) => assert_eq!(a.channel, "a"),
        other => panic!("{other:?}"),
    }
    still_alive(&mut client).await;
}

#[tokio::test]
async fn operations_outside_the_key_are_forbidden_and_store_nothing() {
    let cluster = Cluster::start().await;
    let mut client = cluster.connected(Format::Json, LIMITED_KEY).await;
    client
        .send(&publish(1, "news:today", vec![Message::new("not allowed")]))
        .await;
    assert_eq!(nack_code(&mut client, 1).await, ErrorCode::Forbidden);
    client.send(&attach("chat:room")).await;
    assert_eq!(
        detached_code(&mut client, "chat:room").await,
        ErrorCode::Forbidden
    );
    client
        .send(&ClientFrame::Attach(Attach {
            channel: "news:today".into(),
            from: None,
            rewind: Some(tern_protocol::Rewind::Messages(5)),
        }))
        .await;
    assert_eq!(
        detached_code(&mut client, "news:today").await,
        ErrorCode::Forbidden
    );
    still_alive(&mut client).await;

    // REST: no key, a wrong key, and a key without the right.
    let path = "/v1/channels/news:today/messages";
    let (status, _) = http(cluster.addr(), "POST", path, &[], br#"{"data":"x"}"#).await;
    assert_eq!(status, 401);
    let bearer = format!("Bearer {LIMITED_KEY}x");
    let (status, body) = http(
        cluster.addr(),
        "POST",
        path,
        &[("Authorization", &bearer)],
        br#"{"data":"x"}"#,
    )
    .await;
    assert_eq!(status, 401);
    assert!(body.contains("40101"), "{body}");
    let bearer = format!("Bearer {LIMITED_KEY}");
    let (status, body) = http(
        cluster.addr(),
        "POST",
        path,
        &[("Authorization", &bearer)],
        br#"{"data":"x"}"#,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = http(
        cluster.addr(),
        "GET",
        path,
        &[("Authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(status, 403);

    // Nothing was stored on the channel.
    let admin = format!("Bearer {ADMIN_KEY}");
    let (status, body) = http(
        cluster.addr(),
        "GET",
        path,
        &[("Authorization", &admin)],
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("\"messages\":[]"), "{body}");
}

#[tokio::test]
async fn a_client_that_never_reads_is_disconnected_while_others_keep_receiving() {
    let cluster = Cluster::with_limits(EdgeLimitsConfig {
        outbound_queue_bytes: 256 * 1024,
        ..EdgeLimitsConfig::default()
    })
    .await;
    let mut stuck = cluster.connected(Format::Json, ADMIN_KEY).await;
    let mut reader = cluster.connected(Format::MsgPack, ADMIN_KEY).await;
    for client in [&mut stuck, &mut reader] {
        client.send(&attach("flood")).await;
        assert!(matches!(client.recv().await, ServerFrame::Attached(_)));
    }
    let mut publisher = cluster.connected(Format::MsgPack, ADMIN_KEY).await;
    // 80 × 25 × 8 KiB = 16 MiB: more than the kernel buffers and the outbox hold.
    let batches = 80u64;
    let per_batch = 25;
    let total = batches * per_batch;
    let payload = "p".repeat(8 * 1024);
    let mut received = 0u64;
    for i in 0..batches {
        publisher
            .send(&publish(
                i,
                "flood",
                vec![Message::new(payload.as_str()); per_batch as usize],
            ))
            .await;
        match publisher.recv().await {
            ServerFrame::Ack(a) => assert_eq!(a.msg_serial, i),
            other => panic!("{other:?}"),
        }
        // The reader keeps up.
        while received < (i + 1) * per_batch {
            match reader.recv().await {
                ServerFrame::Message(m) => {
                    received += 1;
                    assert_eq!(m.position.serial, received);
                }
                ServerFrame::Heartbeat(_) => {}
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(received, total);
    // The stuck client finds its messages, then DISCONNECTED SlowConsumer.
    let mut delivered = 0u64;
    loop {
        match stuck.next().await {
            Next::Frame(ServerFrame::Message(m)) => {
                delivered += 1;
                assert_eq!(m.position.serial, delivered);
            }
            Next::Frame(ServerFrame::Disconnected(d)) => {
                assert_eq!(d.error.code, ErrorCode::SlowConsumer);
                assert_eq!(d.reconnect, Reconnect::Retry);
                break;
            }
            Next::Frame(ServerFrame::Heartbeat(_)) => {}
            other => panic!("after {delivered} messages: {other:?}"),
        }
    }
    assert!(delivered < total, "the stuck client got everything");
    assert!(matches!(stuck.next().await, Next::Closed(Some(_))));
    // Reading on sends the client's close reply; then the stream ends.
    assert!(matches!(
        stuck.next().await,
        Next::Closed(None) | Next::Error(_)
    ));
    // The edge counts the connection as closed once its close handshake is over.
    let closed = "tern_edge_connections_closed_total{reason=\"slow_consumer\"} 1";
    for _ in 0..500 {
        let (_, metrics) = http(cluster.addr(), "GET", "/metrics", &[], b"").await;
        if metrics.contains(closed) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (_, metrics) = http(cluster.addr(), "GET", "/metrics", &[], b"").await;
    assert!(
        metrics.contains("tern_edge_connections_closed_total{reason=\"slow_consumer\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_text_message_that_is_not_utf8_ends_the_connection_with_1007() {
    use futures::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    let cluster = Cluster::start().await;
    let mut client = cluster.connected(Format::Json, ADMIN_KEY).await;
    let raw = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    client.ws.send(WsMessage::Frame(raw)).await.expect("send");
    match client.recv().await {
        ServerFrame::Disconnected(d) => assert_eq!(d.error.code, ErrorCode::Malformed),
        other => panic!("expected DISCONNECTED, got {other:?}"),
    }
    match client.next().await {
        Next::Closed(Some(frame)) => assert_eq!(u16::from(frame.code), 1007),
        other => panic!("expected close 1007, got {other:?}"),
    }
}
