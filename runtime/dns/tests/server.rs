//! `tern dns` against real queries: a [`DnsService`] on loopback, DNS messages built with
//! hickory-proto and sent over UDP and TCP from different loopback source addresses
//! (127.0.0.2 is in POP fra, .3 in ams, .4 in nyc, .1 in none), health reported over
//! HTTP. Every wait is bounded; nothing asserts on timing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use tern_dns::DnsService;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, UdpSocket};

/// Longest wait for one reply, and for a change to show in answers.
const WAIT: Duration = Duration::from_secs(10);

const FRA: &str = "127.0.0.2";
const AMS: &str = "127.0.0.3";
const NYC: &str = "127.0.0.4";
const NO_POP: &str = "127.0.0.1";

fn config(report_ttl: &str) -> tern_config::DnsConfig {
    config_with(report_ttl, "")
}

/// [`config`] with `top` (`key = value` lines) added to the top level.
fn config_with(report_ttl: &str, top: &str) -> tern_config::DnsConfig {
    let text = format!(
        r#"
        {top}
        listen = "127.0.0.1:0"
        report_listen = "127.0.0.1:0"
        name = "edge.tern.test."
        ttl = "7s"
        report_ttl = "{report_ttl}"
        fallback = ["192.0.2.100"]

        [[pops]]
        name = "fra"
        subnets = ["{FRA}/32", "10.1.0.0/16"]
        neighbors = ["ams", "nyc"]
        [[pops.edges]]
        name = "fra-1"
        addrs = ["192.0.2.11", "2001:db8:1::11"]
        [[pops.edges]]
        name = "fra-2"
        addrs = ["192.0.2.12", "2001:db8:1::12"]

        [[pops]]
        name = "ams"
        subnets = ["{AMS}/32"]
        neighbors = ["fra"]
        [[pops.edges]]
        name = "ams-1"
        addrs = ["192.0.2.21", "2001:db8:2::21"]

        [[pops]]
        name = "nyc"
        subnets = ["{NYC}/32"]
        [[pops.edges]]
        name = "nyc-1"
        addrs = ["198.51.100.31"]
        "#
    );
    tern_config::parse_dns_config(&text).expect("test config is valid")
}

fn query(name: &str, rtype: RecordType, edns: Option<Edns>) -> anyhow::Result<Message> {
    let mut message = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii(name)?, rtype));
    if let Some(edns) = edns {
        message.set_edns(edns);
    }
    Ok(message)
}

/// A message id that differs between queries of one test.
fn rand_id() -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Sends `message` over UDP from `from` (port chosen by the system) and returns the
/// reply with the same id.
async fn udp(server: SocketAddr, from: &str, message: &Message) -> anyhow::Result<Message> {
    let from: IpAddr = from.parse()?;
    let socket = UdpSocket::bind((from, 0)).await?;
    let bytes = message.to_vec()?;
    // Loopback drops nothing in practice; a second send covers the unlikely case.
    for _ in 0..2 {
        socket.send_to(&bytes, server).await?;
        let mut buf = vec![0; 4096];
        let deadline = tokio::time::Instant::now() + WAIT / 2;
        while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        {
            let (len, peer) = received?;
            let reply = Message::from_vec(&buf[..len])?;
            if peer == server && reply.metadata.id == message.metadata.id {
                return Ok(reply);
            }
        }
    }
    bail!("no UDP reply from {server}")
}

/// Sends `message` over TCP from `from` and returns the reply.
async fn tcp(server: SocketAddr, from: &str, message: &Message) -> anyhow::Result<Message> {
    let from: IpAddr = from.parse()?;
    let exchange = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind((from, 0).into())?;
        let mut stream = socket.connect(server).await?;
        let bytes = message.to_vec()?;
        stream.write_u16(u16::try_from(bytes.len())?).await?;
        stream.write_all(&bytes).await?;
        let len = stream.read_u16().await?;
        let mut reply = vec![0; usize::from(len)];
        stream.read_exact(&mut reply).await?;
        anyhow::Ok(Message::from_vec(&reply)?)
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .context("no TCP reply in time")?
}

/// The addresses of the answer section, as text.
fn addrs(reply: &Message) -> Vec<String> {
    reply
        .answers
        .iter()
        .map(|record| match &record.data {
            RData::A(a) => a.0.to_string(),
            RData::AAAA(aaaa) => aaaa.0.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// Asks for `edge.tern.test.` over UDP from `from`; checks the reply is authoritative,
/// NOERROR and carries the configured TTL; returns the addresses.
async fn ask(service: &DnsService, from: &str, rtype: RecordType) -> anyhow::Result<Vec<String>> {
    let reply = udp(
        service.dns_addr(),
        from,
        &query("edge.tern.test.", rtype, None)?,
    )
    .await?;
    ensure!(
        reply.metadata.response_code == ResponseCode::NoError,
        "{reply:?}"
    );
    ensure!(reply.metadata.authoritative, "{reply:?}");
    ensure!(reply.answers.iter().all(|r| r.ttl == 7), "{reply:?}");
    Ok(addrs(&reply))
}

/// A minimal HTTP/1.1 exchange: returns the status and the body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let (status, _, body) = http_with(addr, method, path, &[], body).await?;
    Ok((status, body))
}

/// [`http`] with extra `headers` (`Name: value` each); returns the status, the head
/// (status line and headers) and the body.
async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> anyhow::Result<(u16, String, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: tern-dns\r\nConnection: close\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let response = String::from_utf8(response)?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .context("no end of headers")?;
        let status = head
            .split(' ')
            .nth(1)
            .context("no status")?
            .parse::<u16>()?;
        anyhow::Ok((status, head.to_owned(), body.to_owned()))
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .context("no HTTP response in time")?
}

async fn report(service: &DnsService, edge: &str, state: &str) -> anyhow::Result<()> {
    let body = format!(r#"{{"edge": "{edge}", "state": "{state}"}}"#);
    let (status, text) = http(service.report_addr(), "POST", "/v1/health", &body).await?;
    ensure!(status == 204, "report {body}: {status} {text}");
    Ok(())
}

async fn health_table(service: &DnsService) -> anyhow::Result<serde_json::Value> {
    let (status, body) = http(service.report_addr(), "GET", "/v1/health", "").await?;
    ensure!(status == 200, "{status} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// The `health` of `edge` in the table.
fn health_of(table: &serde_json::Value, edge: &str) -> Option<String> {
    table["edges"]
        .as_array()?
        .iter()
        .find(|row| row["edge"] == edge)
        .and_then(|row| row["health"].as_str())
        .map(str::to_owned)
}

/// Asks until the answer to `from` is `want`, for at most [`WAIT`].
async fn wait_for_answer(
    service: &DnsService,
    from: &str,
    rtype: RecordType,
    want: &[&str],
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = ask(service, from, rtype).await?;
        if got == want {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("answer to {from} is still {got:?}, not {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_follow_health_reports() -> anyhow::Result<()> {
    let service = DnsService::start(&config("1h")).await?;

    // Nothing reported yet: the fallback for everyone; it has no IPv6 address, so AAAA
    // is NOERROR without records (the SOA says how long to cache that).
    assert_eq!(ask(&service, FRA, RecordType::A).await?, ["192.0.2.100"]);
    let reply = udp(
        service.dns_addr(),
        FRA,
        &query("edge.tern.test.", RecordType::AAAA, None)?,
    )
    .await?;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty(), "{reply:?}");
    assert_eq!(reply.authorities.len(), 1, "{reply:?}");
    assert_eq!(reply.authorities[0].record_type(), RecordType::SOA);

    for edge in ["fra-1", "fra-2", "ams-1", "nyc-1"] {
        report(&service, edge, "up").await?;
    }
    // Each client gets its own POP, with the configured TTL.
    assert_eq!(
        ask(&service, FRA, RecordType::A).await?,
        ["192.0.2.11", "192.0.2.12"]
    );
    assert_eq!(
        ask(&service, FRA, RecordType::AAAA).await?,
        ["2001:db8:1::11", "2001:db8:1::12"]
    );
    assert_eq!(ask(&service, AMS, RecordType::A).await?, ["192.0.2.21"]);
    assert_eq!(
        ask(&service, AMS, RecordType::AAAA).await?,
        ["2001:db8:2::21"]
    );
    assert_eq!(ask(&service, NYC, RecordType::A).await?, ["198.51.100.31"]);
    // A client of no POP: every healthy edge, in config order.
    assert_eq!(
        ask(&service, NO_POP, RecordType::A).await?,
        ["192.0.2.11", "192.0.2.12", "192.0.2.21", "198.51.100.31"]
    );
    // The same over TCP.
    let reply = tcp(
        service.dns_addr(),
        AMS,
        &query("edge.tern.test.", RecordType::A, None)?,
    )
    .await?;
    assert_eq!(addrs(&reply), ["192.0.2.21"]);
    assert!(reply.metadata.authoritative);
    assert_eq!(reply.answers[0].ttl, 7);

    // An edge reported down leaves the answers at once; its POP's other edge stays.
    report(&service, "fra-1", "down").await?;
    assert_eq!(ask(&service, FRA, RecordType::A).await?, ["192.0.2.12"]);
    // Its POP empty (down, drained): the first neighbor, then the next.
    report(&service, "fra-2", "disabled").await?;
    assert_eq!(ask(&service, FRA, RecordType::A).await?, ["192.0.2.21"]);
    report(&service, "ams-1", "down").await?;
    assert_eq!(ask(&service, FRA, RecordType::A).await?, ["198.51.100.31"]);
    assert_eq!(ask(&service, AMS, RecordType::A).await?, ["198.51.100.31"]);
    // No healthy IPv6 edge left anywhere, and no IPv6 fallback: no data, not NXDOMAIN.
    assert_eq!(
        ask(&service, FRA, RecordType::AAAA).await?,
        Vec::<String>::new()
    );
    // All down: the static fallback.
    report(&service, "nyc-1", "down").await?;
    for from in [FRA, AMS, NYC, NO_POP] {
        assert_eq!(ask(&service, from, RecordType::A).await?, ["192.0.2.100"]);
    }
    // And back.
    report(&service, "fra-2", "up").await?;
    assert_eq!(ask(&service, AMS, RecordType::A).await?, ["192.0.2.12"]);

    let table = health_table(&service).await?;
    assert_eq!(table["healthy"], 1, "{table}");
    assert_eq!(table["report_ttl_ms"], 3_600_000, "{table}");
    assert_eq!(health_of(&table, "fra-1").as_deref(), Some("down"));
    assert_eq!(health_of(&table, "fra-2").as_deref(), Some("up"));

    let (status, metrics) = http(service.report_addr(), "GET", "/metrics", "").await?;
    assert_eq!(status, 200);
    for kind in ["pop", "neighbor", "any", "fallback"] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("tern_dns_answers_total{{kind=\"{kind}\"}} ")))
            .with_context(|| format!("no {kind} line in\n{metrics}"))?;
        assert!(!line.ends_with(" 0"), "{line}");
    }
    assert!(
        metrics.lines().any(|l| l == "tern_dns_healthy_edges 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l == "tern_dns_edge_up{edge=\"fra-2\",pop=\"fra\"} 1"),
        "{metrics}"
    );
    service.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_subnet_option_picks_the_pop() -> anyhow::Result<()> {
    let service = DnsService::start(&config("1h")).await?;
    for edge in ["fra-1", "fra-2", "ams-1", "nyc-1"] {
        report(&service, edge, "up").await?;
    }
    // From 127.0.0.3 (ams) on behalf of a client in fra's 10.1.0.0/16.
    let mut edns = Edns::new();
    let subnet: ClientSubnet = "10.1.2.0/24".parse()?;
    edns.options_mut().insert(EdnsOption::Subnet(subnet));
    for reply in [
        udp(
            service.dns_addr(),
            AMS,
            &query("edge.tern.test.", RecordType::A, Some(edns.clone()))?,
        )
        .await?,
        tcp(
            service.dns_addr(),
            AMS,
            &query("edge.tern.test.", RecordType::A, Some(edns.clone()))?,
        )
        .await?,
    ] {
        assert_eq!(addrs(&reply), ["192.0.2.11", "192.0.2.12"]);
        let echoed = reply
            .edns
            .as_ref()
            .and_then(|e| e.option(EdnsCode::Subnet))
            .context("the client subnet option is echoed")?;
        let EdnsOption::Subnet(echoed) = echoed else {
            bail!("{echoed:?}");
        };
        assert_eq!(echoed.addr(), "10.1.2.0".parse::<IpAddr>()?);
        assert_eq!((echoed.source_prefix(), echoed.scope_prefix()), (24, 24));
    }
    // Without the option, the source address decides.
    assert_eq!(ask(&service, AMS, RecordType::A).await?, ["192.0.2.21"]);
    service.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_other_than_the_edge_name() -> anyhow::Result<()> {
    let service = DnsService::start(&config("1h")).await?;
    let server = service.dns_addr();
    for transport in ["udp", "tcp"] {
        let send = |message: Message| async move {
            if transport == "udp" {
                udp(server, NO_POP, &message).await
            } else {
                tcp(server, NO_POP, &message).await
            }
        };
        let outside = send(query("example.com.", RecordType::A, None)?).await?;
        assert_eq!(
            outside.metadata.response_code,
            ResponseCode::Refused,
            "{transport}"
        );
        assert!(!outside.metadata.authoritative);
        let parent = send(query("tern.test.", RecordType::A, None)?).await?;
        assert_eq!(
            parent.metadata.response_code,
            ResponseCode::Refused,
            "{transport}"
        );
        let inside = send(query("www.edge.tern.test.", RecordType::AAAA, None)?).await?;
        assert_eq!(
            inside.metadata.response_code,
            ResponseCode::NXDomain,
            "{transport}"
        );
        assert!(inside.metadata.authoritative);
        assert_eq!(inside.authorities.len(), 1, "the SOA");
        let soa = send(query("edge.tern.test.", RecordType::SOA, None)?).await?;
        assert_eq!(soa.metadata.response_code, ResponseCode::NoError);
        assert_eq!(soa.answers.len(), 1, "{soa:?}");
        assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
    }
    let (_, metrics) = http(service.report_addr(), "GET", "/metrics", "").await?;
    for line in [
        "tern_dns_refusals_total{rcode=\"refused\"} 4",
        "tern_dns_refusals_total{rcode=\"nxdomain\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    service.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reports_are_refused_and_change_nothing() -> anyhow::Result<()> {
    let service = DnsService::start(&config("1h")).await?;
    let addr = service.report_addr();
    let cases: &[(&str, &str, &str, u16)] = &[
        (
            "POST",
            "/v1/health",
            r#"{"edge": "lon-1", "state": "up"}"#,
            404,
        ),
        (
            "POST",
            "/v1/health",
            r#"{"edge": "fra-1", "state": "fine"}"#,
            400,
        ),
        ("POST", "/v1/health", r#"{"edge": "fra-1"}"#, 400),
        ("POST", "/v1/health", "edge=fra-1&state=up", 400),
        ("POST", "/v1/health", "", 400),
        (
            "PUT",
            "/v1/health",
            r#"{"edge": "fra-1", "state": "up"}"#,
            405,
        ),
        ("POST", "/metrics", "", 405),
        ("GET", "/v2/health", "", 404),
    ];
    for (method, path, body, want) in cases {
        let (status, text) = http(addr, method, path, body).await?;
        assert_eq!(status, *want, "{method} {path} {body}: {text}");
        assert!(text.contains("\"error\""), "{method} {path}: {text}");
    }
    let huge = format!(
        r#"{{"edge": "fra-1", "state": "up", "pad": "{}"}}"#,
        "x".repeat(4096)
    );
    let (status, _) = http(addr, "POST", "/v1/health", &huge).await?;
    assert_eq!(status, 413);
    // None of them made an edge healthy.
    assert_eq!(ask(&service, FRA, RecordType::A).await?, ["192.0.2.100"]);
    let table = health_table(&service).await?;
    assert_eq!(table["healthy"], 0, "{table}");
    assert_eq!(health_of(&table, "fra-1").as_deref(), Some("unreported"));
    let (_, metrics) = http(addr, "GET", "/metrics", "").await?;
    for line in [
        "tern_dns_health_reports_total{result=\"unknown_edge\"} 1",
        "tern_dns_health_reports_total{result=\"bad\"} 5",
        "tern_dns_health_reports_total{result=\"accepted\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    service.shutdown().await;
    Ok(())
}

/// With `report_tokens`, `/v1/health` (reports and the table) needs `Authorization:
/// Bearer` one of them: no token, a wrong one, one of the right length one byte off,
/// another scheme, two headers: 401 and nothing changes. Either token of a rotation
/// works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_and_the_table_need_one_of_the_tokens() -> anyhow::Result<()> {
    const OLD: &str = "0123456789abcdef0123456789abcdef";
    const NEW: &str = "the-token-rotated-in-0123456789abcdef";
    let service = DnsService::start(&config_with(
        "1h",
        &format!("report_tokens = [\"{OLD}\", \"{NEW}\"]"),
    ))
    .await?;
    let addr = service.report_addr();
    let mut off_by_one_byte = OLD.as_bytes().to_vec();
    off_by_one_byte[31] = b'e';
    let off_by_one_byte = String::from_utf8(off_by_one_byte)?;
    assert_eq!(off_by_one_byte.len(), OLD.len());
    let refused: Vec<Vec<String>> = vec![
        vec![],
        vec!["Authorization: Bearer not-the-token".into()],
        vec![format!("Authorization: Bearer {off_by_one_byte}")],
        vec![format!("Authorization: Bearer {}", &OLD[..31])],
        vec![format!("Authorization: Basic {OLD}")],
        vec![format!("Authorization: {OLD}")],
        vec![
            format!("Authorization: Bearer {OLD}"),
            format!("Authorization: Bearer {NEW}"),
        ],
    ];
    let up = r#"{"edge": "fra-1", "state": "up"}"#;
    for headers in &refused {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        for (method, body) in [("POST", up), ("POST", "not a report"), ("GET", "")] {
            let (status, head, text) =
                http_with(addr, method, "/v1/health", &headers, body).await?;
            assert_eq!(status, 401, "{method} with {headers:?}: {text}");
            assert!(
                head.to_ascii_lowercase()
                    .contains("www-authenticate: bearer realm=\"tern dns\""),
                "{head}"
            );
            assert!(text.contains("\"error\""), "{text}");
            assert!(!text.contains(OLD) && !text.contains(NEW), "{text}");
        }
    }
    // Nothing changed: still the fallback, every edge unreported.
    assert_eq!(ask(&service, FRA, RecordType::A).await?, ["192.0.2.100"]);
    let bearer = |token: &str| format!("Authorization: Bearer {token}");
    let read_table = async |token: &str| {
        let (status, _, body) = http_with(addr, "GET", "/v1/health", &[&bearer(token)], "").await?;
        ensure!(status == 200, "{status} {body}");
        anyhow::Ok(serde_json::from_str::<serde_json::Value>(&body)?)
    };
    let table = read_table(OLD).await?;
    assert_eq!(table["healthy"], 0, "{table}");
    for edge in ["fra-1", "fra-2", "ams-1", "nyc-1"] {
        assert_eq!(
            health_of(&table, edge).as_deref(),
            Some("unreported"),
            "{table}"
        );
    }

    // The old token and the rotated one both report, and read the table.
    for (token, edge) in [(OLD, "fra-1"), (NEW, "fra-2")] {
        let body = format!(r#"{{"edge": "{edge}", "state": "up"}}"#);
        let (status, _, text) =
            http_with(addr, "POST", "/v1/health", &[&bearer(token)], &body).await?;
        assert_eq!(status, 204, "{edge}: {text}");
    }
    let (status, _, _) = http_with(
        addr,
        "POST",
        "/v1/health",
        &[&format!("authorization: bearer   {NEW}")],
        r#"{"edge": "ams-1", "state": "disabled"}"#,
    )
    .await?;
    assert_eq!(status, 204, "the scheme in any case, spaces after it");
    let table = read_table(NEW).await?;
    assert_eq!(table["healthy"], 2, "{table}");
    assert_eq!(health_of(&table, "ams-1").as_deref(), Some("disabled"));
    wait_for_answer(&service, FRA, RecordType::A, &["192.0.2.11", "192.0.2.12"]).await?;
    // A valid token still gets the usual answers for bad reports.
    let (status, _, _) = http_with(addr, "POST", "/v1/health", &[&bearer(OLD)], "{}").await?;
    assert_eq!(status, 400);

    // /metrics is open, and counts the refused reports.
    let (status, metrics) = http(addr, "GET", "/metrics", "").await?;
    assert_eq!(status, 200);
    for line in [
        "tern_dns_health_reports_total{result=\"unauthorized\"} 14",
        "tern_dns_health_reports_total{result=\"accepted\"} 3",
        "tern_dns_health_reports_total{result=\"bad\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    service.shutdown().await;
    Ok(())
}

/// An edge's own `report_tokens` report for that edge and read the table, but a
/// report for another edge made with it is answered 403 and changes nothing: one
/// edge's token, stolen, cannot take the other edges out of the answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_token_reports_only_for_its_edge() -> anyhow::Result<()> {
    const ANY: &str = "0123456789abcdef0123456789abcdef";
    const OWN: &str = "fra-1-own-token-0123456789abcdef0123";
    let mut config = config_with("1h", &format!("report_tokens = [\"{ANY}\"]"));
    config.pops[0].edges[0].report_tokens =
        vec![tern_config::ReportToken::parse(OWN).map_err(anyhow::Error::msg)?];
    let service = DnsService::start(&config).await?;
    let addr = service.report_addr();
    let own = format!("Authorization: Bearer {OWN}");
    let post = async |edge: &str, state: &str| {
        let body = format!(r#"{{"edge": "{edge}", "state": "{state}"}}"#);
        let (status, _, text) = http_with(addr, "POST", "/v1/health", &[&own], &body).await?;
        anyhow::Ok((status, text))
    };

    assert_eq!(post("fra-1", "up").await?.0, 204);
    for (edge, state) in [("fra-2", "up"), ("ams-1", "down"), ("fra-2", "disabled")] {
        let (status, text) = post(edge, state).await?;
        assert_eq!(status, 403, "{edge} {state}: {text}");
        assert!(
            text.contains("may report only for its own edge") && !text.contains(OWN),
            "{text}"
        );
    }
    // An unknown edge is not the token's either.
    assert_eq!(post("nobody", "up").await?.0, 403);
    let (status, _, body) = http_with(addr, "GET", "/v1/health", &[&own], "").await?;
    assert_eq!(status, 200, "{body}");
    let table: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(table["healthy"], 1, "{table}");
    assert_eq!(health_of(&table, "fra-2").as_deref(), Some("unreported"));
    assert_eq!(health_of(&table, "ams-1").as_deref(), Some("unreported"));
    wait_for_answer(&service, FRA, RecordType::A, &["192.0.2.11"]).await?;

    // The token for any edge still reports for all of them, this one included.
    let any = format!("Authorization: Bearer {ANY}");
    for edge in ["fra-1", "fra-2"] {
        let body = format!(r#"{{"edge": "{edge}", "state": "up"}}"#);
        let (status, _, text) = http_with(addr, "POST", "/v1/health", &[&any], &body).await?;
        assert_eq!(status, 204, "{edge}: {text}");
    }
    wait_for_answer(&service, FRA, RecordType::A, &["192.0.2.11", "192.0.2.12"]).await?;
    let (_, metrics) = http(addr, "GET", "/metrics", "").await?;
    for line in [
        "tern_dns_health_reports_total{result=\"forbidden\"} 4",
        "tern_dns_health_reports_total{result=\"accepted\"} 3",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    service.shutdown().await;
    Ok(())
}

/// An edge that stops reporting leaves the answers once its last report is older than
/// `report_ttl`; one that keeps reporting stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_stops_reporting_expires() -> anyhow::Result<()> {
    let service = Arc::new(DnsService::start(&config("500ms")).await?);
    let fra2_reports = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let reporter = {
        let service = Arc::clone(&service);
        let fra2_reports = Arc::clone(&fra2_reports);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                report(&service, "fra-1", "up").await?;
                if fra2_reports.load(Ordering::Relaxed) {
                    report(&service, "fra-2", "up").await?;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        })
    };
    wait_for_answer(&service, FRA, RecordType::A, &["192.0.2.11", "192.0.2.12"]).await?;
    fra2_reports.store(false, Ordering::Relaxed);
    wait_for_answer(&service, FRA, RecordType::A, &["192.0.2.11"]).await?;
    let table = health_table(&service).await?;
    assert_eq!(
        health_of(&table, "fra-2").as_deref(),
        Some("expired"),
        "{table}"
    );
    // Nobody reports any more: the fallback.
    stop.store(true, Ordering::Relaxed);
    reporter.await??;
    wait_for_answer(&service, FRA, RecordType::A, &["192.0.2.100"]).await?;
    let service = Arc::into_inner(service).context("the reporter is done")?;
    service.shutdown().await;
    Ok(())
}
