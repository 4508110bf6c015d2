//! Client failover by name: the client resolves its URLs' hosts with its own
//! resolver, here pointed at a tiny DNS responder in this test (UDP on 127.0.0.1:0,
//! A answers from a table the test changes, built with hickory-proto's `Message`).
//! The primary name stops resolving → the client reaches the same cluster through a
//! fallback host on another domain and resumes with nothing lost; a primary
//! unresolvable from the start → the first connection goes through a fallback.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message as DnsMessage, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tern_client::Resolver;
use tokio::net::UdpSocket;

use super::*;

const PRIMARY: &str = "primary.tern.test";
const FALLBACK: &str = "fallback.other.test";

/// What the responder says about a name.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// This IPv4 address with this TTL (seconds); AAAA: no records.
    A(Ipv4Addr, u32),
    NxDomain,
}

/// An authoritative-looking DNS responder answering A queries from a table; any
/// name not in it is NXDOMAIN.
struct Dns {
    addr: SocketAddr,
    table: Mutex<HashMap<String, Answer>>,
    /// A queries seen, per name.
    asked: Mutex<HashMap<String, usize>>,
}

impl Dns {
    async fn start() -> anyhow::Result<Arc<Dns>> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let dns = Arc::new(Dns {
            addr: socket.local_addr()?,
            table: Mutex::new(HashMap::new()),
            asked: Mutex::new(HashMap::new()),
        });
        let serving = dns.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok((n, from)) = socket.recv_from(&mut buffer).await {
                if let Some(reply) = serving.answer(&buffer[..n]) {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        Ok(dns)
    }

    fn set(&self, name: &str, answer: Answer) {
        lock(&self.table).insert(name.to_owned(), answer);
    }

    /// How many A queries for `name` arrived so far.
    fn asked(&self, name: &str) -> usize {
        lock(&self.asked).get(name).copied().unwrap_or(0)
    }

    /// The response to the query in `packet`, if it is one.
    fn answer(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let request = DnsMessage::from_vec(packet).ok()?;
        let query = request.queries.first()?.clone();
        let name = query
            .name()
            .to_string()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if query.query_type() == RecordType::A {
            *lock(&self.asked).entry(name.clone()).or_default() += 1;
        }
        let mut response = DnsMessage::response(request.metadata.id, request.metadata.op_code);
        response.metadata.authoritative = true;
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.add_query(query.clone());
        match lock(&self.table).get(&name).copied() {
            Some(Answer::A(ip, ttl)) => {
                if query.query_type() == RecordType::A {
                    response.add_answer(Record::from_rdata(
                        query.name().clone(),
                        ttl,
                        RData::A(A(ip)),
                    ));
                }
            }
            Some(Answer::NxDomain) | None => {
                response.metadata.response_code = ResponseCode::NXDomain;
            }
        }
        response.to_vec().ok()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A client of `primary` (then `fallbacks`), resolving with `dns`.
fn by_name(dns: &Dns, primary: String, fallbacks: Vec<String>) -> ClientConfig {
    ClientConfig::new(primary, KEY)
        .fallback_urls(fallbacks)
        .resolver(Resolver::Servers(vec![dns.addr]))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
}

/// Waits for `state` to change (the connection in use was lost), then to be
/// connected again; returns that state.
async fn reconnected(
    state: &mut watch::Receiver<ConnectionState>,
) -> anyhow::Result<ConnectionState> {
    tokio::time::timeout(PATIENCE, state.changed())
        .await
        .context("the client notices the cut")??;
    let now = tokio::time::timeout(
        PATIENCE,
        state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
    )
    .await
    .context("connected again")??;
    Ok(now.clone())
}

/// The primary name answers NXDOMAIN (DNS failover away from it) and its connection
/// is cut: the client reaches the edge through the fallback host on another domain,
/// resumes the same connection, and gets what was published meanwhile, its own
/// queued publish included. Cut again with the primary back: the fallback that
/// worked is dialled first (within `fallback_retry`), its address taken from the
/// resolver's cache (TTL 3600 s: no new query). The primary's answers have TTL 0, so
/// its failover in DNS is seen on the very next attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_name_failing_in_dns_sends_the_client_to_a_fallback_host() -> anyhow::Result<()>
{
    let node = Node::start().await?;
    let to_primary = Proxy::start(node.addr()).await?;
    let to_fallback = Proxy::start(node.addr()).await?;
    let dns = Dns::start().await?;
    dns.set(PRIMARY, Answer::A(Ipv4Addr::LOCALHOST, 0));
    let primary = format!("ws://{PRIMARY}:{}", to_primary.addr.port());
    let fallback = format!("ws://{FALLBACK}:{}", to_fallback.addr.port());
    let client = Client::connect(by_name(&dns, primary.clone(), vec![fallback.clone()])).await?;
    let id = connection_id(&client)?;
    let now = client.state().borrow().clone();
    ensure!(
        matches!(&now, ConnectionState::Connected { url, .. } if *url == format!("{primary}/v1/ws")),
        "not connected through the primary name: {now:?}"
    );
    ensure!(dns.asked(PRIMARY) >= 1, "the primary name was never asked");
    let mut stream = client.attach("by-name", AttachFrom::Now).await?;
    let publisher = Client::connect(config(node.addr(), Format::Json)).await?;
    publisher
        .publish("by-name", vec![Message::new("1")])
        .await?;
    ensure!(texts(&take(&mut stream, 1).await?) == ["1"]);

    // DNS fails over away from the primary name; the fallback name does not answer
    // yet either, so the client stays away while messages are published.
    dns.set(PRIMARY, Answer::NxDomain);
    dns.set(FALLBACK, Answer::NxDomain);
    let mut state = client.state();
    state.borrow_and_update();
    to_primary.cut();
    tokio::time::timeout(PATIENCE, async {
        while dns.asked(FALLBACK) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .context("the client turns to the fallback host")?;
    let missed = publisher
        .publish("by-name", vec![Message::new("2"), Message::new("3")])
        .await?;
    let queued = {
        let client = client.clone();
        tokio::spawn(async move { client.publish("by-name", vec![Message::new("mine")]).await })
    };
    dns.set(FALLBACK, Answer::A(Ipv4Addr::LOCALHOST, 3600));

    let now = reconnected(&mut state).await?;
    let via_fallback = format!("{fallback}/v1/ws");
    ensure!(
        matches!(&now, ConnectionState::Connected { connection_id, resumed: true, url } if *connection_id == id && *url == via_fallback),
        "not resumed through the fallback host: {now:?}"
    );
    let mine = queued.await??;
    let got = take(&mut stream, 3).await?;
    ensure!(
        got == [
            ("2".to_owned(), missed[0].position),
            ("3".to_owned(), missed[1].position),
            ("mine".to_owned(), mine[0].position),
        ],
        "{got:?}"
    );

    // The primary resolves again, but the fallback that worked goes first for now.
    dns.set(PRIMARY, Answer::A(Ipv4Addr::LOCALHOST, 0));
    let fallback_asked = dns.asked(FALLBACK);
    state.borrow_and_update();
    to_fallback.cut();
    let now = reconnected(&mut state).await?;
    ensure!(
        matches!(&now, ConnectionState::Connected { connection_id, resumed: true, url } if *connection_id == id && *url == via_fallback),
        "the remembered fallback was not dialled first: {now:?}"
    );
    ensure!(
        dns.asked(FALLBACK) == fallback_asked,
        "the fallback's cached address (TTL 3600 s) was asked for again"
    );
    let live = publisher
        .publish("by-name", vec![Message::new("4")])
        .await?;
    ensure!(take(&mut stream, 1).await? == [("4".to_owned(), live[0].position)]);
    Ok(())
}

/// The primary name never resolves: the first connection goes through a fallback
/// host (another fallback's name resolves to an address where nothing listens, in
/// whichever order they come). With no fallback, `connect` fails and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_primary_name_leaves_the_first_connection_to_a_fallback()
-> anyhow::Result<()> {
    let node = Node::start().await?;
    let dns = Dns::start().await?;
    dns.set(FALLBACK, Answer::A(Ipv4Addr::LOCALHOST, 60));
    dns.set("dead.other.test", Answer::A(Ipv4Addr::LOCALHOST, 60));
    // A port held by a socket that does not listen: connections are refused.
    let dead = tokio::net::TcpSocket::new_v4()?;
    dead.bind("127.0.0.1:0".parse()?)?;
    let primary = format!("ws://{PRIMARY}:{}", node.addr().port());
    let fallback = format!("ws://{FALLBACK}:{}", node.addr().port());
    let client = Client::connect(by_name(
        &dns,
        primary.clone(),
        vec![
            format!("ws://dead.other.test:{}", dead.local_addr()?.port()),
            fallback.clone(),
        ],
    ))
    .await?;
    let now = client.state().borrow().clone();
    ensure!(
        matches!(&now, ConnectionState::Connected { resumed: false, url, .. } if *url == format!("{fallback}/v1/ws")),
        "not connected through the fallback host: {now:?}"
    );
    ensure!(
        dns.asked(PRIMARY) >= 1,
        "the primary name was not tried first"
    );
    let mut stream = client.attach("first", AttachFrom::Now).await?;
    let stored = client.publish("first", vec![Message::new("hi")]).await?;
    ensure!(take(&mut stream, 1).await? == [("hi".to_owned(), stored[0].position)]);

    match Client::connect(by_name(&dns, primary, Vec::new())).await {
        Err(ClientError::Transport(reason)) => {
            ensure!(
                reason.contains(PRIMARY) && reason.contains("NXDOMAIN"),
                "{reason}"
            );
        }
        Err(other) => bail!("wrong error: {other}"),
        Ok(_) => bail!("connected through a name that does not resolve"),
    }
    Ok(())
}
