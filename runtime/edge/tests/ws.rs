//! The edge over real sockets: a real log node, a real edge on 127.0.0.1:0, and plain
//! WebSocket clients speaking protocol v1 by hand.

mod support;

use std::collections::BTreeMap;

use support::{ADMIN_KEY, Cluster, Next, http};
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
        assert_eq!(at.position, None);

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
            rewind: Some(2),
        }))
        .await;
    let at = attached(&mut rewinder, "hist").await;
    assert_eq!(at.position.map(|p| p.serial), Some(2));
    assert_eq!(message(&mut rewinder).await.position.serial, 3);
    assert_eq!(message(&mut rewinder).await.position.serial, 4);
}

#[tokio::test]
async fn heartbeats_detach_and_close() {
    let cluster = Cluster::start().await;
    let mut client = cluster.connected(Format::Json, ADMIN_KEY).await;
    client
        .send(&ClientFrame::Heartbeat(Heartbeat { id: Some(7) }))
        .await;
    assert_eq!(
        client.recv().await,
        ServerFrame::Heartbeat(Heartbeat { id: Some(7) })
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
        .send(&ClientFrame::Heartbeat(Heartbeat { id: Some(1) }))
        .await;
    assert_eq!(
        subscriber
            .recv_matching(|f| match f {
                ServerFrame::Message(m) => Some(Err(m.clone())),
                ServerFrame::Heartbeat(Heartbeat { id: Some(1) }) => Some(Ok(())),
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
