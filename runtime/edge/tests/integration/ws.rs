//! The edge over real sockets: a real log node, a real edge on 127.0.0.1:0, and plain
//! WebSocket clients speaking protocol v1 by hand.

use crate::support;

use std::collections::BTreeMap;

use support::{ADMIN_KEY, Cluster, Next, http};
use tern_config::{EdgeLimitsConfig, StoreConfig};
use tern_link::ChannelName;
use tern_log::LogStore as _;
use tern_protocol::{
    Attach, ClientFrame, Connect, Data, Detach, ErrorCode, Format, Heartbeat, Message, Position,
    Publish, Reconnect, ServerFrame,
};

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

/// The ATTACHED for `channel` (skipping other frames).
async fn attached(client: &mut support::Client, channel: &str) -> tern_protocol::Attached {
    client
        .recv_matching(|f| match f {
            ServerFrame::Attached(a) if a.channel == channel => Some(a.clone()),
            ServerFrame::Detached(d) if d.channel == channel => panic!("detached: {d:?}"),
            _ => None,
        })
        .await
}

async fn ack(client: &mut support::Client, msg_serial: u64) -> Vec<tern_protocol::PublishResult> {
    client
        .recv_matching(|f| match f {
            ServerFrame::Ack(a) if a.msg_serial == msg_serial => Some(a.results.clone()),
            ServerFrame::Nack(n) if n.msg_serial == msg_serial => panic!("nack: {n:?}"),
            _ => None,
        })
        .await
}

async fn nack(client: &mut support::Client, msg_serial: u64) -> tern_protocol::ErrorInfo {
    client
        .recv_matching(|f| match f {
            ServerFrame::Nack(n) if n.msg_serial == msg_serial => Some(n.error.clone()),
            ServerFrame::Ack(a) if a.msg_serial == msg_serial => panic!("ack: {a:?}"),
            _ => None,
        })
        .await
}

async fn message(client: &mut support::Client) -> tern_protocol::MessageFrame {
    client
        .recv_matching(|f| match f {
            ServerFrame::Message(m) => Some(m.clone()),
            _ => None,
        })
        .await
}

#[tokio::test]
async fn publish_and_receive_in_both_formats() {
    let cluster = Cluster::start().await;
    for format in Format::ALL {
        let channel = format!("room-{format:?}");
        let mut subscriber = cluster.connected(format, ADMIN_KEY).await;
        subscriber.send(&attach(&channel)).await;
        let at = attached(&mut subscriber, &channel).await;
        assert!(!at.resumed);
        // Nothing precedes the delivery point: 0:0, before the channel's first message.
        assert_eq!(at.position, Some(Position::BEFORE_FIRST));

        let mut publisher = cluster.connected(format, ADMIN_KEY).await;
        let mut text = Message::new("hello");
        text.name = Some("greeting".into());
        text.headers = BTreeMap::from([("k".to_owned(), "v".to_owned())]);
        let binary = Message::new(Data::Binary(vec![0, 1, 2, 255].into()));
        publisher
            .send(&publish(0, &channel, vec![text.clone(), binary.clone()]))
            .await;
        let results = ack(&mut publisher, 0).await;
        assert_eq!(results.len(), 2);
        assert_eq!(results[1].position.serial, results[0].position.serial + 1);

        let first = message(&mut subscriber).await;
        assert_eq!(first.position, results[0].position);
        assert_eq!(first.message.data, text.data);
        assert_eq!(first.message.name.as_deref(), Some("greeting"));
        assert_eq!(first.message.headers, text.headers);
        assert!(first.message.timestamp.is_some());
        assert!(
            first
                .message
                .id
                .as_deref()
                .is_some_and(|id| id.ends_with(":0:0"))
        );
        let second = message(&mut subscriber).await;
        assert_eq!(second.position, results[1].position);
        assert_eq!(second.message.data, binary.data);
    }
}

#[tokio::test]
async fn two_subscribers_see_the_same_order() {
    let cluster = Cluster::start().await;
    let mut a = cluster.connected(Format::Json, ADMIN_KEY).await;
    let mut b = cluster.connected(Format::MsgPack, ADMIN_KEY).await;
    for client in [&mut a, &mut b] {
        client.send(&attach("order")).await;
        attached(client, "order").await;
    }
    let mut p1 = cluster.connected(Format::Json, ADMIN_KEY).await;
    let mut p2 = cluster.connected(Format::MsgPack, ADMIN_KEY).await;
    for i in 0..20u64 {
        p1.send(&publish(i, "order", vec![Message::new(format!("p1-{i}"))]))
            .await;
        p2.send(&publish(i, "order", vec![Message::new(format!("p2-{i}"))]))
            .await;
    }
    for i in 0..20 {
        ack(&mut p1, i).await;
        ack(&mut p2, i).await;
    }
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    for _ in 0..40 {
        seen_a.push(message(&mut a).await);
        seen_b.push(message(&mut b).await);
    }
    assert_eq!(seen_a, seen_b);
    for pair in seen_a.windows(2) {
        assert_eq!(pair[1].position.serial, pair[0].position.serial + 1);
    }
}

#[tokio::test]
async fn rest_publish_then_history_and_resume_from_a_position() {
    let cluster = Cluster::start().await;
    let auth = ("Authorization", format!("Bearer {ADMIN_KEY}"));
    let (status, body) = http(
        cluster.addr(),
        "POST",
        "/v1/channels/hist/messages",
        &[(auth.0, &auth.1)],
        br#"[{"data":"one","id":"m-1"},{"data":"two"},{"data":{"base64":"AAE="}}]"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);

    // Retrying the same id is acknowledged with the original position.
    let (status, body) = http(
        cluster.addr(),
        "POST",
        &format!(
            "/v1/channels/hist/messages?key={}",
            ADMIN_KEY.replace(':', "%3A")
        ),
        &[],
        br#"{"data":"one","id":"m-1"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let again: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(again["results"][0]["duplicate"], true);
    assert_eq!(again["results"][0]["position"], results[0]["position"]);

    let (status, body) = http(
        cluster.addr(),
        "GET",
        "/v1/channels/hist/messages?from=2&limit=1",
        &[(auth.0, &auth.1)],
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(page["messages"][0]["message"]["data"], "two");
    assert_eq!(page["next"], 3);

    // A subscriber resuming after the first message gets the other two, then live ones.
    let first: Position = serde_json::from_value(results[0]["position"].clone()).expect("position");
    let mut client = cluster.connected(Format::MsgPack, ADMIN_KEY).await;
    client
        .send(&ClientFrame::Attach(Attach {
            channel: "hist".into(),
            from: Some(first),
            rewind: None,
        }))
        .await;
    let at = attached(&mut client, "hist").await;
    assert!(at.resumed, "{at:?}");
    assert_eq!(at.position, Some(first));
    assert_eq!(
        message(&mut client).await.message.data,
        Data::Text("two".into())
    );
    assert_eq!(
        message(&mut client).await.message.data,
        Data::Binary(vec![0, 1].into())
    );
    client
        .send(&publish(0, "hist", vec![Message::new("four")]))
        .await;
    assert_eq!(message(&mut client).await.position.serial, 4);

    // Rewind 2 delivers the last two.
    let mut rewinder = cluster.connected(Format::Json, ADMIN_KEY).await;
    rewinder
        .send(&ClientFrame::Attach(Attach {
            channel: "hist".into(),
            from: None,
            rewind: Some(tern_protocol::Rewind::Messages(2)),
        }))
        .await;
    let at = attached(&mut rewinder, "hist").await;
    assert_eq!(at.position.map(|p| p.serial), Some(2));
    assert_eq!(message(&mut rewinder).await.position.serial, 3);
    assert_eq!(message(&mut rewinder).await.position.serial, 4);
}

fn attach_from(channel: &str, from: Position) -> ClientFrame {
    ClientFrame::Attach(Attach {
        channel: channel.into(),
        from: Some(from),
        rewind: None,
    })
}

/// `from: 0:0` asks for every message from the channel's first one: honoured on an
/// empty channel and on one that still stores serial 1; once retention removed serial
/// 1, an explicit `ContinuityLost` naming the position before the first stored
/// message. Serial 0 in another epoch is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_from_0_0_on_empty_stored_and_trimmed_channels() {
    let mut store = StoreConfig {
        segment_bytes: 64 * 1024,
        checkpoint_bytes: 64 * 1024,
        ..StoreConfig::default()
    };
    store.retention.max_age = None;
    store.retention.max_bytes = Some(128 * 1024);
    let cluster = Cluster::with(
        support::LogNode::with_store(store).await,
        EdgeLimitsConfig::default(),
    )
    .await;

    // An empty channel: a plain attach and an attach from 0:0 both name 0:0, and the
    // second one is honoured (`resumed`).
    let mut plain = cluster.connected(Format::Json, ADMIN_KEY).await;
    plain.send(&attach("fresh")).await;
    let at = attached(&mut plain, "fresh").await;
    assert_eq!(
        (at.position, at.resumed),
        (Some(Position::BEFORE_FIRST), false)
    );
    let mut early = cluster.connected(Format::MsgPack, ADMIN_KEY).await;
    early
        .send(&attach_from("fresh", Position::BEFORE_FIRST))
        .await;
    let at = attached(&mut early, "fresh").await;
    assert!(at.resumed && at.error.is_none(), "{at:?}");
    assert_eq!(at.position, Some(Position::BEFORE_FIRST));

    let mut publisher = cluster.connected(Format::Json, ADMIN_KEY).await;
    let names = ["a", "b", "c"].map(Message::new).to_vec();
    publisher.send(&publish(0, "fresh", names)).await;
    let results = ack(&mut publisher, 0).await;
    for client in [&mut plain, &mut early] {
        for result in &results {
            assert_eq!(message(client).await.position, result.position);
        }
    }

    // A channel that still stores serial 1: everything from it, then live messages.
    let mut late = cluster.connected(Format::Json, ADMIN_KEY).await;
    late.send(&attach_from("fresh", Position::BEFORE_FIRST))
        .await;
    let at = attached(&mut late, "fresh").await;
    assert!(at.resumed && at.error.is_none(), "{at:?}");
    assert_eq!(at.position, Some(Position::BEFORE_FIRST));
    for result in &results {
        assert_eq!(message(&mut late).await.position, result.position);
    }
    publisher
        .send(&publish(1, "fresh", vec![Message::new("d")]))
        .await;
    let d = ack(&mut publisher, 1).await;
    assert_eq!(message(&mut late).await.position, d[0].position);

    // Serial 0 goes with epoch 0 only.
    let epoch = d[0].position.epoch;
    late.send(&attach_from("other", Position { epoch, serial: 0 }))
        .await;
    match late
        .recv_matching(|f| match f {
            ServerFrame::Detached(d) if d.channel == "other" => Some(d.clone()),
            _ => None,
        })
        .await
        .error
    {
        Some(error) => assert_eq!(error.code, ErrorCode::InvalidValue),
        None => panic!("refused without an error"),
    }

    // A channel whose first messages retention removed.
    let payload = "x".repeat(8 * 1024);
    let mut stored = Vec::new();
    for i in 0..40 {
        publisher
            .send(&publish(
                2 + i,
                "trimmed",
                vec![Message::new(payload.as_str())],
            ))
            .await;
        stored.extend(ack(&mut publisher, 2 + i).await);
    }
    let log_store = cluster.log.store.clone().expect("the log is serving");
    let report = log_store.enforce_retention().await.expect("retention");
    assert!(report.segments_removed > 0, "{report:?}");
    let info = log_store
        .channel_info(&ChannelName::parse("trimmed").expect("name"))
        .await
        .expect("channel info");
    let first = info.first_serial.expect("something is kept").get();
    assert!(first > 1, "retention removed serial 1");
    let mut trimmed = cluster.connected(Format::MsgPack, ADMIN_KEY).await;
    trimmed
        .send(&attach_from("trimmed", Position::BEFORE_FIRST))
        .await;
    let at = attached(&mut trimmed, "trimmed").await;
    assert!(!at.resumed);
    assert_eq!(
        at.error.map(|e| e.code),
        Some(ErrorCode::ContinuityLost),
        "never a silent gap"
    );
    assert_eq!(
        at.position,
        Some(Position {
            epoch: stored[0].position.epoch,
            serial: first - 1
        })
    );
    for serial in first..=40 {
        assert_eq!(message(&mut trimmed).await.position.serial, serial);
    }
}

#[tokio::test]
async fn heartbeats_detach_and_close() {
    let cluster = Cluster::start().await;
    let mut client = cluster.connected(Format::Json, ADMIN_KEY).await;
    client
        .send(&ClientFrame::Heartbeat(Heartbeat {
            id: Some(7),
            connection_key: None,
        }))
        .await;
    assert_eq!(
        client.recv().await,
        ServerFrame::Heartbeat(Heartbeat {
            id: Some(7),
            connection_key: None
        })
    );
    client.send(&attach("d")).await;
    attached(&mut client, "d").await;
    client
        .send(&ClientFrame::Detach(Detach {
            channel: "d".into(),
        }))
        .await;
    match client.recv().await {
        ServerFrame::Detached(d) => assert_eq!((d.channel.as_str(), d.error), ("d", None)),
        other => panic!("{other:?}"),
    }
    client
        .send(&ClientFrame::Close(tern_protocol::Close {}))
        .await;
    assert_eq!(
        client.recv().await,
        ServerFrame::Closed(tern_protocol::Closed {})
    );
    assert!(matches!(client.next().await, Next::Closed(_)));
}

#[tokio::test]
async fn bad_keys_are_refused_for_good() {
    let cluster = Cluster::start().await;
    for (key, code) in [
        (None, ErrorCode::Unauthorized),
        (
            Some("app.admin:wrong-secret-0123456789"),
            ErrorCode::InvalidCredentials,
        ),
        (Some("nonsense"), ErrorCode::InvalidCredentials),
    ] {
        let mut client = cluster.client(Format::Json).await;
        client
            .send(&ClientFrame::Connect(Connect {
                key: key.map(Into::into),
                ..Connect::default()
            }))
            .await;
        match client.recv().await {
            ServerFrame::Disconnected(d) => {
                assert_eq!(d.error.code, code);
                assert_eq!(d.reconnect, Reconnect::Never);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(client.next().await, Next::Closed(_)));
    }
}

#[tokio::test]
async fn the_link_comes_back_after_the_log_restarts_without_loss_or_repeats() {
    let mut cluster = Cluster::start().await;
    let mut subscriber = cluster.connected(Format::Json, ADMIN_KEY).await;
    subscriber.send(&attach("r")).await;
    attached(&mut subscriber, "r").await;
    let mut publisher = cluster.connected(Format::MsgPack, ADMIN_KEY).await;
    for i in 0..5 {
        publisher
            .send(&publish(i, "r", vec![Message::new(format!("m{i}"))]))
            .await;
        ack(&mut publisher, i).await;
    }
    for serial in 1..=5 {
        assert_eq!(message(&mut subscriber).await.position.serial, serial);
    }

    cluster.log.stop().await;
    tokio::time::timeout(support::PATIENCE, async {
        while cluster.edge.ready() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the edge notices the log is gone");
    publisher
        .send(&publish(5, "r", vec![Message::new("lost")]))
        .await;
    let error = nack(&mut publisher, 5).await;
    assert!(
        matches!(
            error.code,
            ErrorCode::LogUnavailable | ErrorCode::LogTimeout
        ),
        "{error:?}"
    );
    assert!(error.retryable);

    // An ATTACH while the log is away waits, and is answered once it is back.
    let mut late = cluster.connected(Format::Json, ADMIN_KEY).await;
    late.send(&attach("r")).await;

    cluster.log.serve().await;
    cluster.wait_ready().await;
    let at = attached(&mut late, "r").await;
    assert_eq!(at.position.map(|p| p.serial), Some(5));
    for i in 6..11 {
        publisher
            .send(&publish(i, "r", vec![Message::new(format!("m{i}"))]))
            .await;
        ack(&mut publisher, i).await;
    }
    // Serial 6 onwards, once each, in order (the NACKed publish was not stored).
    for serial in 6..=10 {
        let got = message(&mut subscriber).await;
        assert_eq!(got.position.serial, serial, "{got:?}");
    }
    subscriber
        .send(&ClientFrame::Heartbeat(Heartbeat {
            id: Some(1),
            connection_key: None,
        }))
        .await;
    assert_eq!(
        subscriber
            .recv_matching(|f| match f {
                ServerFrame::Message(m) => Some(Err(m.clone())),
                ServerFrame::Heartbeat(Heartbeat {
                    id: Some(1),
                    connection_key: None,
                }) => Some(Ok(())),
                _ => None,
            })
            .await,
        Ok(()),
        "nothing more than the ten messages"
    );
}

#[tokio::test]
async fn shutdown_sends_clients_elsewhere() {
    let cluster = Cluster::start().await;
    let mut clients = Vec::new();
    for format in Format::ALL {
        let mut client = cluster.connected(format, ADMIN_KEY).await;
        client.send(&attach("s")).await;
        attached(&mut client, "s").await;
        clients.push(client);
    }
    let addr = cluster.addr();
    let support::Cluster { log: _log, edge } = cluster;
    let stopping = tokio::spawn(edge.shutdown());
    for client in &mut clients {
        match client.recv().await {
            ServerFrame::Disconnected(d) => {
                assert_eq!(d.error.code, ErrorCode::ShuttingDown);
                assert_eq!(d.reconnect, Reconnect::Elsewhere);
            }
            other => panic!("{other:?}"),
        }
        match client.next().await {
            Next::Closed(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
            other => panic!("{other:?}"),
        }
        // Reading on sends the close reply.
        assert!(matches!(
            client.next().await,
            Next::Closed(None) | Next::Error(_)
        ));
    }
    tokio::time::timeout(support::PATIENCE, stopping)
        .await
        .expect("shutdown finishes")
        .expect("shutdown task");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}
