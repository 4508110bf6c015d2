//! REST history paging (`GET /v1/channels/{channel}/messages?from=&until=&limit=&direction=`)
//! against a real log node and a real edge: every serial once and in order both ways,
//! the bounds, retention, and every bad parameter's 400.

use crate::support;

use serde_json::Value;
use support::{ADMIN_KEY, Cluster, http};
use tern_config::{EdgeLimitsConfig, StoreConfig};
use tern_link::ChannelName;
use tern_log::LogStore as _;

/// The `Authorization` header value of the key with every right.
fn bearer() -> String {
    format!("Bearer {ADMIN_KEY}")
}

/// Publishes messages with data `"1"`, `"2"` … `"count"` to `channel` over REST, in
/// batches of 100; they get serials 1 to `count`.
async fn publish(cluster: &Cluster, channel: &str, count: u64) {
    let mut next = 1;
    while next <= count {
        let batch: Vec<Value> = (next..=count.min(next + 99))
            .map(|n| serde_json::json!({"id": format!("m-{n}"), "data": n.to_string()}))
            .collect();
        next += batch.len() as u64;
        let body = serde_json::to_vec(&batch).expect("json");
        let (status, answer) = http(
            cluster.addr(),
            "POST",
            &format!("/v1/channels/{channel}/messages"),
            &[("Authorization", &bearer())],
            &body,
        )
        .await;
        assert_eq!(status, 201, "{answer}");
    }
}

/// One page: its serials in order (each message's data checked against its serial)
/// and `next`.
async fn page(cluster: &Cluster, channel: &str, query: &str) -> (Vec<u64>, Option<u64>) {
    let (status, body) = http(
        cluster.addr(),
        "GET",
        &format!("/v1/channels/{channel}/messages?{query}"),
        &[("Authorization", &bearer())],
        b"",
    )
    .await;
    assert_eq!(status, 200, "{query}: {body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    let serials = answer["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            let serial = m["position"]["serial"].as_u64().expect("serial");
            assert_eq!(m["channel"], channel);
            assert_eq!(m["message"]["data"], serial.to_string(), "{m}");
            assert_eq!(m["message"]["id"], format!("m-{serial}"), "{m}");
            serial
        })
        .collect();
    let next = match &answer["next"] {
        Value::Null => None,
        next => Some(next.as_u64().expect("next is a serial")),
    };
    (serials, next)
}

/// Follows `next` from `query` (as `from` forwards, as `until` backwards, the other
/// parameters repeated) until it is null: every serial seen in order, and the number
/// of pages.
async fn follow(cluster: &Cluster, channel: &str, query: &str) -> (Vec<u64>, usize) {
    let backwards = query.contains("direction=backwards");
    let (mut seen, mut pages) = (Vec::new(), 0);
    let mut cursor: Option<u64> = None;
    loop {
        let query = match cursor {
            None => query.to_owned(),
            Some(next) => {
                let name = if backwards { "until" } else { "from" };
                let mut pairs: Vec<String> = query
                    .split('&')
                    .filter(|pair| pair.split('=').next() != Some(name))
                    .map(str::to_owned)
                    .collect();
                pairs.push(format!("{name}={next}"));
                pairs.join("&")
            }
        };
        let (serials, next) = page(cluster, channel, &query).await;
        pages += 1;
        assert!(pages <= 1000, "paging does not end");
        seen.extend(serials);
        match next {
            Some(next) => cursor = Some(next),
            None => return (seen, pages),
        }
    }
}

#[tokio::test]
async fn pages_of_100_see_250_messages_once_in_order_both_ways() {
    let cluster = Cluster::start().await;
    publish(&cluster, "paged", 250).await;

    let first = page(&cluster, "paged", "limit=100").await;
    assert_eq!(first, ((1..=100).collect(), Some(101)));
    let (seen, pages) = follow(&cluster, "paged", "limit=100").await;
    assert_eq!(seen, (1..=250).collect::<Vec<_>>());
    assert_eq!(pages, 3);

    let newest = page(&cluster, "paged", "direction=backwards&limit=100").await;
    assert_eq!(newest, ((151..=250).rev().collect(), Some(150)));
    let (seen, pages) = follow(&cluster, "paged", "direction=backwards&limit=100").await;
    assert_eq!(seen, (1..=250).rev().collect::<Vec<_>>());
    assert_eq!(pages, 3);

    // The default limit is 100, the default direction forwards.
    assert_eq!(page(&cluster, "paged", "").await.1, Some(101));
    assert_eq!(
        page(&cluster, "paged", "direction=forwards&from=201").await,
        ((201..=250).collect(), None)
    );
}

#[tokio::test]
async fn from_and_until_bound_the_pages() {
    let cluster = Cluster::start().await;
    publish(&cluster, "bounded", 250).await;

    let (seen, pages) = follow(&cluster, "bounded", "from=10&until=20&limit=4").await;
    assert_eq!((seen, pages), ((10..=20).collect(), 3));
    let (seen, pages) = follow(
        &cluster,
        "bounded",
        "from=10&until=20&limit=4&direction=backwards",
    )
    .await;
    assert_eq!((seen, pages), ((10..=20).rev().collect(), 3));
    assert_eq!(
        page(&cluster, "bounded", "from=7&until=7&direction=backwards").await,
        (vec![7], None)
    );
    // `until` past the channel's end: the newest messages there are.
    assert_eq!(
        page(
            &cluster,
            "bounded",
            "until=100000&limit=5&direction=backwards"
        )
        .await,
        ((246..=250).rev().collect(), Some(245))
    );
    assert_eq!(
        page(&cluster, "bounded", "from=240&direction=backwards").await,
        ((240..=250).rev().collect(), None)
    );
    // Nothing in range, or nothing at all.
    assert_eq!(page(&cluster, "bounded", "from=251").await, (vec![], None));
    assert_eq!(
        page(
            &cluster,
            "bounded",
            "from=251&until=300&direction=backwards"
        )
        .await,
        (vec![], None)
    );
    assert_eq!(
        page(&cluster, "empty", "direction=backwards").await,
        (vec![], None)
    );
    assert_eq!(page(&cluster, "empty", "").await, (vec![], None));
}

#[tokio::test]
async fn bad_parameters_are_400_invalid_value_naming_the_parameter() {
    let cluster = Cluster::with_limits(EdgeLimitsConfig {
        history_max_limit: 500,
        ..EdgeLimitsConfig::default()
    })
    .await;
    publish(&cluster, "checked", 3).await;
    for (query, named) in [
        ("from=0", "`from`"),
        ("from=abc", "`from`"),
        ("from=", "`from`"),
        ("from=%ZZ", "`from`"),
        ("until=0", "`until`"),
        ("until=-3", "`until`"),
        ("from=3&until=2", "`from` (3) is after `until` (2)"),
        ("from=3&until=2&direction=backwards", "is after `until`"),
        ("limit=0", "`limit`"),
        ("limit=501", "from 1 to 500"),
        ("limit=many", "`limit`"),
        ("direction=up", "`direction`"),
        ("direction=", "`direction`"),
    ] {
        let (status, body) = http(
            cluster.addr(),
            "GET",
            &format!("/v1/channels/checked/messages?{query}"),
            &[("Authorization", &bearer())],
            b"",
        )
        .await;
        assert_eq!(status, 400, "{query}: {body}");
        let answer: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(answer["error"]["code"], 40003, "{query}: {body}");
        let message = answer["error"]["message"].as_str().expect("message");
        assert!(message.contains(named), "{query}: {message}");
    }
    // The largest limit allowed is fine.
    assert_eq!(
        page(&cluster, "checked", "limit=500").await,
        (vec![1, 2, 3], None)
    );
    // The key is checked before the parameters.
    let (status, _) = http(
        cluster.addr(),
        "GET",
        "/v1/channels/checked/messages?from=0",
        &[],
        b"",
    )
    .await;
    assert_eq!(status, 401);
}

/// Once retention removed the oldest messages, a page asking for them starts at the
/// oldest one still stored, and backwards paging ends there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_start_at_the_oldest_retained_message() {
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
    // 40 messages of 8 KiB each: several segments, the oldest beyond the byte limit.
    let padding = "x".repeat(8 * 1024);
    for n in 1..=40u64 {
        let body =
            serde_json::json!({"id": format!("m-{n}"), "data": n.to_string(), "name": padding});
        let (status, answer) = http(
            cluster.addr(),
            "POST",
            "/v1/channels/trimmed/messages",
            &[("Authorization", &bearer())],
            &serde_json::to_vec(&body).expect("json"),
        )
        .await;
        assert_eq!(status, 201, "{answer}");
    }
    let store = cluster.log.store.clone().expect("the log is serving");
    let report = store.enforce_retention().await.expect("retention");
    assert!(report.segments_removed > 0, "{report:?}");
    let first = store
        .channel_info(&ChannelName::parse("trimmed").expect("name"))
        .await
        .expect("channel info")
        .first_serial
        .expect("something is kept")
        .get();
    assert!(first > 1, "retention removed serial 1");

    let (serials, next) = page(&cluster, "trimmed", "from=1&limit=3").await;
    assert_eq!(
        (serials, next),
        ((first..first + 3).collect(), Some(first + 3))
    );
    let (seen, _) = follow(&cluster, "trimmed", "limit=7").await;
    assert_eq!(seen, (first..=40).collect::<Vec<_>>());
    let (seen, _) = follow(&cluster, "trimmed", "direction=backwards&limit=7").await;
    assert_eq!(seen, (first..=40).rev().collect::<Vec<_>>());
    let below = format!("until={}", first - 1);
    assert_eq!(page(&cluster, "trimmed", &below).await, (vec![], None));
    assert_eq!(
        page(&cluster, "trimmed", &format!("{below}&direction=backwards")).await,
        (vec![], None)
    );
}
