//! Message functions on a real edge in front of a real log: deploys through the admin
//! API and `$functions`, ingress reject / drop / replace / publish, egress, failure
//! policies with hostile components, and the function metrics.

use crate::support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::{Value, json};
use support::{ADMIN_KEY, Cluster, http};
use tern_protocol::{Attach, ClientFrame, ErrorCode, Format, Message, Publish, ServerFrame};

/// The component of the function crate at `dir` (relative to the repository), built
/// once per test process.
fn component(dir: &str) -> Vec<u8> {
    static BUILT: OnceLock<parking_lot::Mutex<std::collections::HashMap<String, PathBuf>>> =
        OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock();
    let path = built.entry(dir.to_owned()).or_insert_with(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        tern_fnbuild::build(
            &root.join(dir),
            &tern_fnbuild::BuildOptions {
                target_dir: None,
                quiet: true,
            },
        )
        .unwrap_or_else(|e| panic!("building {dir}: {e}"))
        .component
    });
    std::fs::read(path).expect("component file")
}

async fn deploy(cluster: &Cluster, name: &str, dir: &str, binding: Value) -> (u16, Value) {
    let body = json!({
        "binding": binding,
        "wasm_base64": base64::engine::general_purpose::STANDARD.encode(component(dir)),
    });
    admin(
        cluster,
        "POST",
        &format!("/v1/admin/functions/{name}"),
        &body.to_string(),
    )
    .await
}

async fn admin(cluster: &Cluster, method: &str, path: &str, body: &str) -> (u16, Value) {
    let auth = format!("Bearer {ADMIN_KEY}");
    let (status, body) = http(
        cluster.addr(),
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// Publishes `texts` in one PUBLISH on `channel`; returns the answer.
async fn publish(
    client: &mut support::Client,
    serial: u64,
    channel: &str,
    texts: &[&str],
) -> ServerFrame {
    publish_named(client, serial, channel, None, texts).await
}

/// Publishes `texts` named `name` in one PUBLISH on `channel`; returns the answer.
async fn publish_named(
    client: &mut support::Client,
    serial: u64,
    channel: &str,
    name: Option<&str>,
    texts: &[&str],
) -> ServerFrame {
    client
        .send(&ClientFrame::Publish(Publish {
            msg_serial: serial,
            channel: channel.into(),
            messages: texts
                .iter()
                .map(|t| Message {
                    name: name.map(str::to_owned),
                    ..Message::new(*t)
                })
                .collect(),
        }))
        .await;
    client
        .recv_matching(|frame| match frame {
            ServerFrame::Ack(a) if a.msg_serial == serial => Some(frame.clone()),
            ServerFrame::Nack(n) if n.msg_serial == serial => Some(frame.clone()),
            _ => None,
        })
        .await
}

async fn history(cluster: &Cluster, channel: &str) -> Vec<String> {
    let auth = format!("Bearer {ADMIN_KEY}");
    let (status, body) = http(
        cluster.addr(),
        "GET",
        &format!("/v1/channels/{channel}/messages?limit=100"),
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("history JSON");
    body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            m["message"]["data"]
                .as_str()
                .unwrap_or("<binary>")
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_functions_reject_drop_replace_and_publish() {
    let cluster = Cluster::start().await;
    let (status, answer) = deploy(
        &cluster,
        "profanity",
        "functions/profanity",
        json!({"bind": ["chat:*"]}),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["version"], 1);
    let (status, answer) = deploy(
        &cluster,
        "redact",
        "functions/redact",
        json!({"bind": ["chat:*"], "order": 1}),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = deploy(
        &cluster,
        "router",
        "functions/router",
        json!({"bind": ["ops:#"]}),
    )
    .await;
    assert_eq!(status, 201, "{answer}");

    let mut client = cluster.connected(Format::Json, ADMIN_KEY).await;
    // Reject: NACK with the function's reason, nothing stored.
    match publish(&mut client, 1, "chat:1", &["hello", "well damn it"]).await {
        ServerFrame::Nack(nack) => {
            assert_eq!(nack.error.code, ErrorCode::FunctionRejected);
            assert!(
                nack.error.message.contains("damn"),
                "{}",
                nack.error.message
            );
        }
        other => panic!("expected a NACK, got {other:?}"),
    }
    // Replace: the PII redactor runs after the filter (order 1).
    match publish(&mut client, 2, "chat:1", &["mail me at bob@example.com"]).await {
        ServerFrame::Ack(ack) => assert_eq!(ack.results.len(), 1),
        other => panic!("expected an ACK, got {other:?}"),
    }
    assert_eq!(
        history(&cluster, "chat:1").await,
        vec!["mail me at [email]".to_owned()]
    );
    // A channel no function is bound to is untouched.
    assert!(matches!(
        publish(&mut client, 3, "news:1", &["damn"]).await,
        ServerFrame::Ack(_)
    ));
    // Publish: the router copies high-priority messages to alerts:<channel>.
    let high = r#"{"priority": "high", "text": "disk full"}"#;
    assert!(matches!(
        publish(&mut client, 4, "ops:db", &[high, "{}"]).await,
        ServerFrame::Ack(_)
    ));
    let alerts = tokio::time::timeout(support::PATIENCE, async {
        loop {
            let alerts = history(&cluster, "alerts:ops:db").await;
            if !alerts.is_empty() {
                return alerts;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the router's copy arrives");
    assert_eq!(alerts, vec![high.to_owned()]);

    // Stats are visible in the list and in /metrics.
    let (status, list) = admin(&cluster, "GET", "/v1/admin/functions", "").await;
    assert_eq!(status, 200);
    let profanity = list["functions"]
        .as_array()
        .and_then(|all| all.iter().find(|f| f["name"] == "profanity"))
        .expect("profanity listed");
    assert_eq!(profanity["stats"]["rejects"], 1);
    assert!(
        profanity["stats"]["invocations"].as_u64() >= Some(3),
        "{profanity}"
    );
    let (_, metrics) = http(cluster.addr(), "GET", "/metrics", &[], b"").await;
    assert!(
        metrics.contains("tern_function_verdicts_total{function=\"profanity\",stage=\"ingress\",verdict=\"reject\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_functions_are_contained_by_their_policy() {
    let cluster = Cluster::start().await;
    for (name, dir, channel, policy) in [
        (
            "looping",
            "runtime/wasm/tests/guests/looping",
            "loop:*",
            "fail-closed",
        ),
        (
            "bomb",
            "runtime/wasm/tests/guests/memory-bomb",
            "bomb:*",
            "fail-open",
        ),
        (
            "trapping",
            "runtime/wasm/tests/guests/trapping",
            "trap:*",
            "fail-closed",
        ),
        (
            "deep",
            "runtime/wasm/tests/guests/stack-overflow",
            "deep:*",
            "fail-closed",
        ),
        (
            "echo",
            "runtime/wasm/tests/guests/self-publish",
            "echo:*",
            "fail-open",
        ),
    ] {
        let (status, answer) = deploy(
            &cluster,
            name,
            dir,
            json!({"bind": [channel], "policy": policy}),
        )
        .await;
        assert_eq!(status, 201, "{name}: {answer}");
    }
    let mut client = cluster.connected(Format::Json, ADMIN_KEY).await;
    let mut serial = 0;
    for round in 0..3 {
        // The guests are hostile to messages with their name; each channel also
        // gets a harmless message that must pass (the instance was recycled).
        for (channel, name, expect) in [
            ("loop:1", Some("loop"), Some(ErrorCode::FunctionFailed)),
            ("loop:1", None, None),
            ("bomb:1", Some("bomb"), None),
            ("trap:1", None, Some(ErrorCode::FunctionFailed)),
            ("deep:1", Some("deep"), Some(ErrorCode::FunctionFailed)),
            ("deep:1", None, None),
            ("echo:1", None, None),
            ("calm:1", None, None),
        ] {
            serial += 1;
            let answer = publish_named(&mut client, serial, channel, name, &["x"]).await;
            match (expect, &answer) {
                (Some(code), ServerFrame::Nack(nack)) => {
                    assert_eq!(nack.error.code, code, "{channel} round {round}")
                }
                (None, ServerFrame::Ack(_)) => {}
                _ => panic!("{channel} round {round}: {answer:?}"),
            }
        }
    }
    // Every failure counted by kind.
    let (_, metrics) = http(cluster.addr(), "GET", "/metrics", &[], b"").await;
    for line in [
        "tern_function_failures_total{function=\"looping\",stage=\"ingress\",kind=\"timeout\"} 3",
        "tern_function_failures_total{function=\"trapping\",stage=\"ingress\",kind=\"trap\"} 3",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    // The self-publisher is bounded: 16 copies per call (the quota), and the copies'
    // own publishes are dropped, so 3 publishes store 3 × (1 + 16) messages.
    let echoes = tokio::time::timeout(support::PATIENCE, async {
        loop {
            let echoes = history(&cluster, "echo:1").await.len();
            if echoes >= 51 {
                return echoes;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the copies arrive");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(history(&cluster, "echo:1").await.len(), echoes);
    assert_eq!(echoes, 51, "{echoes} messages on echo:1");
    // Invalid components are refused before they reach the log.
    let bad = json!({"binding": {"bind": ["x:*"]}, "wasm_base64": base64::engine::general_purpose::STANDARD.encode(b"\0asm not really")});
    let (status, answer) = admin(
        &cluster,
        "POST",
        "/v1/admin/functions/bad",
        &bad.to_string(),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("component refused"),
        "{answer}"
    );
    let (_, list) = admin(&cluster, "GET", "/v1/admin/functions", "").await;
    assert!(!list.to_string().contains("\"bad\""), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_runs_before_fan_out_and_deploys_swap_live() {
    let cluster = Cluster::start().await;
    let mut subscriber = cluster.connected(Format::Json, ADMIN_KEY).await;
    subscriber
        .send(&ClientFrame::Attach(Attach {
            channel: "room:1".into(),
            ..Attach::default()
        }))
        .await;
    subscriber
        .recv_matching(|f| matches!(f, ServerFrame::Attached(_)).then_some(()))
        .await;
    let mut publisher = cluster.connected(Format::Json, ADMIN_KEY).await;
    assert!(matches!(
        publish(&mut publisher, 1, "room:1", &["before"]).await,
        ServerFrame::Ack(_)
    ));
    let (status, answer) = deploy(
        &cluster,
        "enricher",
        "functions/enricher",
        json!({"bind": ["room:*"], "stage": "egress"}),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert!(matches!(
        publish(&mut publisher, 2, "room:1", &["after"]).await,
        ServerFrame::Ack(_)
    ));
    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let ServerFrame::Message(m) = subscriber.recv().await {
            seen.push(m);
        }
    }
    assert_eq!(seen[0].message.headers.get("x-pop"), None);
    assert_eq!(
        seen[1].message.headers.get("x-pop").map(String::as_str),
        Some("test-edge")
    );
    // The log keeps what was published: egress changes only what this edge delivers.
    assert_eq!(
        history(&cluster, "room:1").await,
        vec!["before".to_owned(), "after".to_owned()]
    );
    // Remove, then rollback restores version 1 as version 2.
    let (status, _) = admin(&cluster, "DELETE", "/v1/admin/functions/enricher", "").await;
    assert_eq!(status, 201);
    let (status, answer) = admin(
        &cluster,
        "POST",
        "/v1/admin/functions/enricher/rollback",
        r#"{"to": 1}"#,
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["version"], 2);
}

/// An edge that starts in front of a log already holding deploys reports ready only
/// once they are in force: a message published right after `/readyz` turns 200
/// passes through them. The second edge has no compile cache, so compiling takes
/// long enough that a readiness reported at subscribe time would let it through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_is_ready_only_once_the_deployed_functions_are_in_force() {
    let first = Cluster::start().await;
    for name in ["profanity", "profanity-2", "profanity-3"] {
        let (status, answer) = deploy(
            &first,
            name,
            "functions/profanity",
            json!({"bind": ["chat:*"]}),
        )
        .await;
        assert_eq!(status, 201, "{answer}");
    }
    let Cluster { log, edge } = first;
    edge.shutdown().await;

    let second = Cluster::with(log, Default::default()).await;
    let mut client = second.connected(Format::Json, ADMIN_KEY).await;
    match publish(&mut client, 1, "chat:1", &["well damn it"]).await {
        ServerFrame::Nack(nack) => assert_eq!(nack.error.code, ErrorCode::FunctionRejected),
        other => panic!("the deployed filter was not in force when ready: {other:?}"),
    }
}
