//! Anycast, DNS failover, client fallback and drain on a real topology in network
//! namespaces (issue 6), built by scripts/topology.sh and run with the configs of
//! edge-config/examples/topology/ (tern_tests::netns):
//!
//! - `killed_edge_is_withdrawn_and_its_clients_resume_elsewhere`: 20 clients publish
//!   and subscribe through the anycast address; `kill -9` of the edge the router
//!   routes them to: its `tern health` withdraws the route after `fall` failed probes,
//!   the clients reconnect through the same address to another edge and resume: every
//!   acknowledged message reaches its subscriber once, in order, at its acknowledged
//!   position.
//! - `frozen_edge_is_withdrawn_and_its_clients_resume_elsewhere`: the same with SIGSTOP
//!   (the process alongside fails its probes); SIGCONT brings it back and it announces
//!   again.
//! - `dns_answers_follow_edge_health_and_fall_back`: `tern dns` answers the three edges;
//!   one killed leaves the answers; all killed, the static fallback set; the last edge's
//!   `tern health` keeps its route (the anycast guard, `min_announcing = 1`).
//! - `unresolvable_primary_name_falls_back_to_another_host`: a client whose primary
//!   host does not resolve reaches an edge through its fallback host (resolved by
//!   `tern dns`), and after that edge is killed, another one through the same name.
//! - `rolling_restart_with_drain_loses_nothing`: each edge in turn gets SIGTERM (it
//!   leaves anycast, sends its clients elsewhere, exits 0), starts again and is
//!   announced again, while 20 clients publish: nothing acknowledged lost, nothing
//!   twice.
//! - `the_topology_configs_match_the_script` (no root needed): the example configs
//!   and BIRD configs name the addresses topology.sh plans.
//!
//! Needs root, `ip` and `bird`; otherwise each test prints why on stderr and passes
//! without running. Each builds its own topology and removes it (also on failure).
//! Withdrawal times and outages (per client: last delivery before the break to the
//! first after it) are printed, never asserted. Run with `--nocapture` to see them:
//! `cargo test -p tern-tests --test topology -- --nocapture`.
//!
//! ```text
//!  test thread in the client ns: 20 tern-clients ──ws://10.77.100.10:8080──▶ router ──▶ edge (best BGP path)
//!                                DNS queries ──▶ tern dns ◀── reports ── tern health (one per edge)
//! ```

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use futures::StreamExt as _;
use hickory_proto::op::{Message as DnsMessage, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tern_client::{
    AttachFrom, ChannelEvent, ChannelStream, Client, ClientConfig, ConnectionState, Resolver,
};
use tern_config::HealthRunner;
use tern_protocol::{Data, Message, Position};
use tern_tests::netns::{self, DNS_PORT, DNS_REPORT_PORT, EDGE_PORT, EDGES, Topology};
use tern_tests::{TEST_KEY, http};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Longest wait for anything here.
const PATIENCE: Duration = Duration::from_secs(30);
/// Clients on the anycast address.
const CLIENTS: usize = 20;
/// Pause between a client's acknowledged publish and its next one.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// The edge name `tern dns` answers.
const DNS_NAME: &str = "edge.tern.test.";

/// The topology, or `None` (after saying why on stderr) when it cannot be built here.
fn topology_or_skip(test: &str) -> anyhow::Result<Option<Topology>> {
    if let Some(reason) = netns::skip_reason() {
        eprintln!("topology::{test}: SKIPPED: {reason}");
        return Ok(None);
    }
    Topology::up().map(Some)
}

/// A client of `url`: quick reconnects, a 1 s heartbeat (a frozen edge is noticed
/// after about two seconds of silence).
fn client_config(url: impl Into<String>, name: &str) -> ClientConfig {
    ClientConfig::new(url, TEST_KEY)
        .client_id(name)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .heartbeat_interval(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(5))
}

/// One message a subscriber got.
struct Delivery {
    id: String,
    position: Position,
    at: Instant,
}

/// What one client published and received.
#[derive(Default)]
struct Record {
    /// Acknowledged publishes, in order: id and position.
    acked: Vec<(String, Position)>,
    delivered: Vec<Delivery>,
    /// A stream event that must not happen (continuity lost, detached).
    failure: Option<String>,
}

/// One client that publishes on its own channel and subscribes to it.
struct Member {
    name: String,
    client: Client,
    connection_id: String,
    record: Arc<Mutex<Record>>,
}

impl Member {
    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Clients publishing and subscribing until [`Fleet::finish`].
struct Fleet {
    members: Vec<Member>,
    stop: watch::Sender<bool>,
    publishers: Vec<JoinHandle<anyhow::Result<()>>>,
    readers: Vec<JoinHandle<()>>,
}

/// Totals of a finished [`Fleet`].
struct Totals {
    acked: usize,
    delivered: usize,
    resumed: usize,
}

impl Fleet {
    /// Connects `count` clients (`config(i)` each), attaches each to its channel and
    /// starts publishing; returns once every one has had a few deliveries.
    async fn start(count: usize, config: impl Fn(usize) -> ClientConfig) -> anyhow::Result<Fleet> {
        let (stop, stopped) = watch::channel(false);
        let mut fleet = Fleet {
            members: Vec::with_capacity(count),
            stop,
            publishers: Vec::with_capacity(count),
            readers: Vec::with_capacity(count),
        };
        for i in 0..count {
            let name = format!("c{i}");
            let client = tokio::time::timeout(PATIENCE, Client::connect(config(i)))
                .await
                .with_context(|| format!("{name} did not connect"))??;
            let connection_id = match &*client.state().borrow() {
                ConnectionState::Connected { connection_id, .. } => connection_id.clone(),
                other => bail!("{name} connected, then {other:?}"),
            };
            let channel = format!("topology:{name}");
            let stream = client.attach(channel.clone(), AttachFrom::Now).await?;
            let record: Arc<Mutex<Record>> = Arc::default();
            fleet
                .readers
                .push(tokio::spawn(read(stream, Arc::clone(&record))));
            fleet.publishers.push(tokio::spawn(publish(
                client.clone(),
                name.clone(),
                channel,
                Arc::clone(&record),
                stopped.clone(),
            )));
            fleet.members.push(Member {
                name,
                client,
                connection_id,
                record,
            });
        }
        fleet.wait_delivered_after(Instant::now(), 3).await?;
        Ok(fleet)
    }

    /// Waits (at most [`PATIENCE`]) until every client has had `count` deliveries
    /// after `at`.
    async fn wait_delivered_after(&self, at: Instant, count: usize) -> anyhow::Result<()> {
        let until = Instant::now() + PATIENCE;
        for member in &self.members {
            loop {
                let (got, failure) = {
                    let record = member.record();
                    let got = record.delivered.iter().filter(|d| d.at > at).count();
                    (got, record.failure.clone())
                };
                if let Some(failure) = failure {
                    bail!("{}: {failure}", member.name);
                }
                if got >= count {
                    break;
                }
                ensure!(
                    Instant::now() < until,
                    "{} had {got} of {count} deliveries in {PATIENCE:?}: {:?}",
                    member.name,
                    *member.client.state().borrow()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Per client, the longest time between two consecutive deliveries around a
    /// break that started at `from` and was over by `to`: from the last delivery
    /// before it to the first after it.
    fn outages(&self, from: Instant, to: Instant) -> Vec<Duration> {
        self.members
            .iter()
            .map(|member| {
                let record = member.record();
                record
                    .delivered
                    .windows(2)
                    .filter(|pair| pair[1].at >= from && pair[0].at <= to)
                    .map(|pair| pair[1].at - pair[0].at)
                    .max()
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Stops publishing, waits until every acknowledged message is delivered, and
    /// checks each client: every acknowledged message delivered exactly once, in
    /// order, at its acknowledged position, serials dense; nothing else delivered.
    /// Closes the clients.
    async fn finish(self) -> anyhow::Result<Totals> {
        self.stop.send_replace(true);
        for (publisher, member) in self.publishers.into_iter().zip(&self.members) {
            tokio::time::timeout(PATIENCE, publisher)
                .await
                .with_context(|| format!("{} still publishing", member.name))?
                .context("publisher task")??;
        }
        let until = Instant::now() + PATIENCE;
        for member in &self.members {
            loop {
                let (acked, delivered) = {
                    let record = member.record();
                    (record.acked.len(), record.delivered.len())
                };
                if delivered >= acked {
                    break;
                }
                ensure!(
                    Instant::now() < until,
                    "{}: {delivered} of {acked} acknowledged messages delivered",
                    member.name
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Room for a duplicate to show up.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut totals = Totals {
            acked: 0,
            delivered: 0,
            resumed: 0,
        };
        for member in &self.members {
            if let ConnectionState::Connected { connection_id, .. } =
                &*member.client.state().borrow()
                && *connection_id == member.connection_id
            {
                totals.resumed += 1;
            }
            let record = member.record();
            if let Some(failure) = &record.failure {
                bail!("{}: {failure}", member.name);
            }
            check_record(&member.name, &record)?;
            totals.acked += record.acked.len();
            totals.delivered += record.delivered.len();
        }
        for member in &self.members {
            member.client.close().await;
        }
        for reader in self.readers {
            reader.abort();
        }
        Ok(totals)
    }
}

/// Every acknowledged message delivered once, in publish order, at its acknowledged
/// position; serials dense; nothing delivered that was not acknowledged.
fn check_record(name: &str, record: &Record) -> anyhow::Result<()> {
    let ids: HashSet<&str> = record.delivered.iter().map(|d| d.id.as_str()).collect();
    ensure!(
        ids.len() == record.delivered.len(),
        "{name}: a message delivered twice"
    );
    ensure!(
        record.delivered.len() == record.acked.len(),
        "{name}: {} delivered, {} acknowledged",
        record.delivered.len(),
        record.acked.len()
    );
    for (i, ((id, position), delivery)) in record.acked.iter().zip(&record.delivered).enumerate() {
        ensure!(
            *id == delivery.id && *position == delivery.position,
            "{name}: delivery {i} is {} at {:?}; acknowledged {id} at {position:?}",
            delivery.id,
            delivery.position
        );
        if i > 0 {
            let previous = record.delivered[i - 1].position;
            ensure!(
                delivery.position.epoch == previous.epoch
                    && delivery.position.serial == previous.serial + 1,
                "{name}: serials not dense: {previous:?} then {:?}",
                delivery.position
            );
        }
    }
    Ok(())
}

/// Records what `stream` delivers; a lost continuity or a detach is a failure.
async fn read(mut stream: ChannelStream, record: Arc<Mutex<Record>>) {
    while let Some(event) = stream.next().await {
        let mut record = record.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            ChannelEvent::Message { position, message } => {
                let id = match &message.data {
                    Data::Text(text) => text.clone(),
                    other => format!("{other:?}"),
                };
                record.delivered.push(Delivery {
                    id,
                    position,
                    at: Instant::now(),
                });
            }
            other => {
                record.failure = Some(format!("unexpected {other:?}"));
                return;
            }
        }
    }
}

/// Publishes `NAME-N` on `channel` until `stop`, each until acknowledged (a
/// retryable error retried with the same id, so it is stored once).
async fn publish(
    client: Client,
    name: String,
    channel: String,
    record: Arc<Mutex<Record>>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    for n in 0u64.. {
        if *stop.borrow() {
            break;
        }
        let id = format!("{name}-{n}");
        let mut message = Message::new(id.clone());
        message.id = Some(id.clone());
        let give_up = Instant::now() + PATIENCE;
        let position = loop {
            match client
                .publish(channel.as_str(), vec![message.clone()])
                .await
            {
                Ok(results) => break results.first().context("one result")?.position,
                Err(error) if error.is_retryable() && Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => bail!("{name}: publishing {id}: {error}"),
            }
        };
        record
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .acked
            .push((id, position));
        tokio::time::sleep(PUBLISH_EVERY).await;
    }
    Ok(())
}

/// The `p`th percentile (nearest rank) of `values`.
fn percentile(values: &[Duration], p: usize) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// `p50 X, p99 Y, max Z` of `outages`, in seconds.
fn outage_summary(outages: &[Duration]) -> String {
    format!(
        "p50 {:.3}s, p99 {:.3}s, max {:.3}s",
        percentile(outages, 50).as_secs_f64(),
        percentile(outages, 99).as_secs_f64(),
        outages
            .iter()
            .max()
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
    )
}

/// Open client connections on `edge` (its `/metrics`, over its unicast address).
async fn connections_open(edge: &netns::Edge) -> anyhow::Result<u64> {
    let response = http::get(edge.http_addr(), "/metrics", None).await?;
    Ok(http::metric(&response.body, "tern_edge_connections_open"))
}

/// How a break is made to the edge the clients use.
#[derive(Clone, Copy)]
enum Break {
    Kill,
    Freeze,
}

/// The kill and freeze scenarios: 20 clients on the anycast address, the edge the
/// router routes them to killed or frozen; prints the withdrawal time and outages.
fn break_routed_edge(test: &str, how: Break) -> anyhow::Result<()> {
    let Some(topology) = topology_or_skip(test)? else {
        return Ok(());
    };
    topology.run_in_client(async |t: &Topology| {
        t.start().await?;
        let url = t.anycast_url()?;
        let fleet = Fleet::start(CLIENTS, |i| client_config(url.clone(), &format!("c{i}"))).await?;
        let victim = t
            .routed_edge()
            .await?
            .context("the router has no route to the anycast address")?;
        let edge = t.edge(&victim)?;
        let verb = match how {
            Break::Kill => "kill -9",
            Break::Freeze => "SIGSTOP",
        };
        t.progress(&format!("{CLIENTS} clients publishing through the anycast address to {victim}; {verb} {victim}"));
        let broken = Instant::now();
        match how {
            Break::Kill => edge.kill()?,
            Break::Freeze => edge.freeze()?,
        }
        let routes = t
            .wait_routes(PATIENCE, &format!("the route to {victim} withdrawn"), |routes| {
                !routes.iter().any(|r| r.protocol == victim)
                    && routes.iter().any(|r| r.primary)
            })
            .await?;
        let withdrawn = broken.elapsed();
        let now_routed = routes
            .iter()
            .find(|r| r.primary)
            .map(|r| r.protocol.clone())
            .context("no best route")?;
        t.progress(&format!(
            "router no longer routes to {victim} {:.3}s after {verb}; now {now_routed}",
            withdrawn.as_secs_f64()
        ));
        let after = Instant::now();
        fleet.wait_delivered_after(after, 5).await?;
        let resumed = Instant::now();
        let outages = fleet.outages(broken, broken);
        let on_new = connections_open(t.edge(&now_routed)?).await?;
        ensure!(
            on_new >= CLIENTS as u64,
            "{now_routed} has {on_new} connections open, not the {CLIENTS} clients"
        );
        if let Break::Freeze = how {
            edge.thaw()?;
            t.wait_announced(&victim, PATIENCE).await?;
            t.progress(&format!("{victim} thawed (SIGCONT) and announced again"));
        }
        let totals = fleet.finish().await?;
        ensure!(
            totals.resumed == CLIENTS,
            "{} of {CLIENTS} clients kept their connection (resumed)",
            totals.resumed
        );
        eprintln!(
            "RESULT {test}: withdrawal {:.3}s after {verb} (0.5s probes, fall 2); {CLIENTS} clients moved {victim} -> {now_routed} \
             ({on_new} connections open there), all delivering again {:.3}s after {verb}; per-client outage {}; \
             {} acknowledged, {} delivered: each once, in order; {} of {CLIENTS} resumed their connection",
            withdrawn.as_secs_f64(),
            (resumed - broken).as_secs_f64(),
            outage_summary(&outages),
            totals.acked,
            totals.delivered,
            totals.resumed,
        );
        Ok(())
    })
}

#[test]
fn killed_edge_is_withdrawn_and_its_clients_resume_elsewhere() -> anyhow::Result<()> {
    break_routed_edge("killed_edge", Break::Kill)
}

#[test]
fn frozen_edge_is_withdrawn_and_its_clients_resume_elsewhere() -> anyhow::Result<()> {
    break_routed_edge("frozen_edge", Break::Freeze)
}

#[test]
fn rolling_restart_with_drain_loses_nothing() -> anyhow::Result<()> {
    let Some(topology) = topology_or_skip("rolling_restart")? else {
        return Ok(());
    };
    topology.run_in_client(async |t: &Topology| {
        t.start().await?;
        let url = t.anycast_url()?;
        let fleet = Fleet::start(CLIENTS, |i| client_config(url.clone(), &format!("c{i}"))).await?;
        let mut moved: Vec<Duration> = Vec::new();
        for edge in t.edges() {
            let routed = t.routed_edge().await?;
            let carrying = routed.as_deref() == Some(edge.name.as_str());
            t.progress(&format!(
                "SIGTERM {} ({})",
                edge.name,
                if carrying { "the clients' edge" } else { "no clients" }
            ));
            let term = Instant::now();
            let status = edge.terminate(PATIENCE).await?;
            let exited = term.elapsed();
            ensure!(status.success(), "{} exited with {status}\n{}", edge.name, edge.log_tail(40));
            edge.start().await?;
            t.wait_announced(&edge.name, PATIENCE).await?;
            let back = term.elapsed();
            fleet.wait_delivered_after(Instant::now(), 3).await?;
            let now = Instant::now();
            let outages = fleet.outages(term, now);
            if carrying {
                moved.extend(&outages);
            }
            t.progress(&format!(
                "{} exited 0 {:.3}s after SIGTERM, announced again after {:.3}s; router now routes to {}; outage {}",
                edge.name,
                exited.as_secs_f64(),
                back.as_secs_f64(),
                t.routed_edge().await?.unwrap_or_default(),
                outage_summary(&outages)
            ));
        }
        let totals = fleet.finish().await?;
        eprintln!(
            "RESULT rolling_restart: {EDGES} edges drained and restarted one by one under {CLIENTS} clients; \
             outage of the clients moved by a drain {}; {} acknowledged, {} delivered: none lost, none twice, \
             in order; {} of {CLIENTS} kept their connection (resumed)",
            outage_summary(&moved),
            totals.acked,
            totals.delivered,
            totals.resumed
        );
        Ok(())
    })
}

/// A query for `name`'s A records.
fn dns_query(name: &str) -> anyhow::Result<DnsMessage> {
    let mut message = DnsMessage::new(rand::random(), MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    Ok(message)
}

/// Asks `server` over UDP for the A records of [`DNS_NAME`]; checks the answer is
/// authoritative, NOERROR and has `ttl`; returns the addresses, sorted.
async fn dns_answer(server: SocketAddr, ttl: u32) -> anyhow::Result<Vec<Ipv4Addr>> {
    let query = dns_query(DNS_NAME)?;
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    let bytes = query.to_vec()?;
    for _ in 0..3 {
        socket.send_to(&bytes, server).await?;
        let mut buf = vec![0; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(received) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        {
            let (len, peer) = received?;
            let Some(bytes) = buf.get(..len) else {
                continue;
            };
            let reply = DnsMessage::from_vec(bytes)?;
            if peer != server || reply.metadata.id != query.metadata.id {
                continue;
            }
            ensure!(
                reply.metadata.response_code == ResponseCode::NoError,
                "{reply:?}"
            );
            ensure!(reply.metadata.authoritative, "{reply:?}");
            ensure!(
                reply.answers.iter().all(|r| r.ttl == ttl),
                "TTL not {ttl}: {reply:?}"
            );
            let mut addrs: Vec<Ipv4Addr> = reply
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect();
            addrs.sort();
            return Ok(addrs);
        }
    }
    bail!("no DNS answer from {server}")
}

/// Starts the topology and waits until `tern dns` answers every edge; returns its
/// address and the edges' addresses.
async fn start_with_every_edge_answered(
    t: &Topology,
) -> anyhow::Result<(SocketAddr, Vec<Ipv4Addr>)> {
    t.start().await?;
    let server = t.dns_addr()?;
    let all: Vec<Ipv4Addr> = t.edges().iter().map(|e| e.addr).collect();
    wait_answer(server, &all).await?;
    Ok((server, all))
}

/// Waits (at most [`PATIENCE`]) until `tern dns` answers exactly `want` (sorted).
async fn wait_answer(server: SocketAddr, want: &[Ipv4Addr]) -> anyhow::Result<()> {
    let until = Instant::now() + PATIENCE;
    let mut want = want.to_vec();
    want.sort();
    loop {
        let got = dns_answer(server, 1).await?;
        if got == want {
            return Ok(());
        }
        ensure!(
            Instant::now() < until,
            "tern dns answers {got:?}, never {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn dns_answers_follow_edge_health_and_fall_back() -> anyhow::Result<()> {
    let Some(topology) = topology_or_skip("dns")? else {
        return Ok(());
    };
    topology.run_in_client(async |t: &Topology| {
        let (server, all) = start_with_every_edge_answered(t).await?;
        t.progress(&format!("tern dns answers {all:?}"));

        // One edge goes: it leaves the answers.
        let mut left: Vec<Ipv4Addr> = all.clone();
        let mut times = Vec::new();
        for (i, edge) in t.edges().iter().enumerate() {
            left.retain(|a| *a != edge.addr);
            let killed = Instant::now();
            edge.kill()?;
            if i + 1 < EDGES {
                wait_answer(server, &left).await?;
                times.push(killed.elapsed());
                t.progress(&format!(
                    "kill -9 {}: gone from the answers after {:.3}s",
                    edge.name,
                    killed.elapsed().as_secs_f64()
                ));
                // Withdrawn too before the next one goes, so that the anycast guard
                // sees the last edge alone.
                t.wait_routes(PATIENCE, &format!("{} withdrawn", edge.name), |routes| {
                    !routes.iter().any(|r| r.protocol == edge.name)
                })
                .await?;
            } else {
                // None healthy: the static fallback (the anycast address).
                let fallback = t.plan().anycast()?;
                wait_answer(server, &[fallback]).await?;
                times.push(killed.elapsed());
                t.progress(&format!(
                    "kill -9 {}, the last: tern dns answers the fallback {fallback} after {:.3}s",
                    edge.name,
                    killed.elapsed().as_secs_f64()
                ));
                // The last edge keeps announcing: min_announcing = 1.
                let until = Instant::now() + PATIENCE;
                while !edge.health_log().contains("anycast guard held") {
                    ensure!(
                        Instant::now() < until,
                        "{}'s tern health never held the last route:\n{}",
                        edge.name,
                        edge.health_log()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let routes = t.anycast_routes().await?;
                ensure!(
                    routes.iter().any(|r| r.protocol == edge.name),
                    "the last edge's route is gone: {routes:?}"
                );
            }
        }
        let times: Vec<String> = times.iter().map(|d| format!("{:.3}s", d.as_secs_f64())).collect();
        eprintln!(
            "RESULT dns: edges left tern dns's answers {} after kill -9 (0.5s probes, fall 2, TTL 1s); \
             with none left it answers the fallback set; the last edge kept its route (anycast guard)",
            times.join(", ")
        );
        Ok(())
    })
}

/// The one edge holding a client connection. tern health's probe is one too, for a
/// few milliseconds every interval: an edge counts with the fewest of a few samples;
/// an edge that does not answer (killed) holds none.
async fn holding_the_client(t: &Topology) -> anyhow::Result<&netns::Edge> {
    let mut holding = Vec::new();
    for edge in t.edges() {
        let mut fewest = u64::MAX;
        for _ in 0..5 {
            fewest = fewest.min(connections_open(edge).await.unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        if fewest >= 1 {
            holding.push(edge);
        }
    }
    match holding[..] {
        [edge] => Ok(edge),
        _ => bail!(
            "not one edge holds the client: {:?}",
            holding.iter().map(|e| &e.name).collect::<Vec<_>>()
        ),
    }
}

#[test]
fn unresolvable_primary_name_falls_back_to_another_host() -> anyhow::Result<()> {
    let Some(topology) = topology_or_skip("fallback_host")? else {
        return Ok(());
    };
    topology.run_in_client(async |t: &Topology| {
        let (server, _) = start_with_every_edge_answered(t).await?;
        // The primary's domain is not tern dns's zone: REFUSED, it never resolves.
        let primary = format!("ws://edge.primary.test:{EDGE_PORT}");
        let fallback = format!("ws://{}:{EDGE_PORT}", DNS_NAME.trim_end_matches('.'));
        let config = |i: usize| {
            client_config(primary.clone(), &format!("f{i}"))
                .fallback_urls([fallback.clone()])
                .resolver(Resolver::Servers(vec![server]))
        };
        let fleet = Fleet::start(1, config).await?;
        let url = match &*fleet.members[0].client.state().borrow() {
            ConnectionState::Connected { url, .. } => url.clone(),
            other => bail!("not connected: {other:?}"),
        };
        ensure!(url.starts_with(&fallback), "connected to {url}, not the fallback {fallback}");
        let on = holding_the_client(t).await?;
        t.progress(&format!("connected through the fallback host {url} to {}; kill -9 it", on.name));
        let killed = Instant::now();
        on.kill()?;
        fleet.wait_delivered_after(Instant::now(), 5).await?;
        let back = killed.elapsed();
        let outages = fleet.outages(killed, killed);
        let now_on = holding_the_client(t).await?;
        let totals = fleet.finish().await?;
        eprintln!(
            "RESULT fallback_host: primary {primary} unresolvable, connected through {url} to {}; after kill -9 of it, \
             delivering again through the fallback name on {} {:.3}s later (outage {}); {} acknowledged, {} delivered, \
             once each, in order",
            on.name,
            now_on.name,
            back.as_secs_f64(),
            outage_summary(&outages),
            totals.acked,
            totals.delivered
        );
        Ok(())
    })
}

#[test]
fn the_topology_configs_match_the_script() -> anyhow::Result<()> {
    let plan = netns::plan("tern")?;
    let dir = netns::examples_dir();
    let anycast = plan.anycast()?;
    let log_addr = plan.addr("log")?;
    let dns_addr = plan.addr("dns")?;

    let log = tern_config::load_log_config(&dir.join("log.toml"))?;
    ensure!(log.listen.ip() == log_addr, "log listens on {}", log.listen);

    let dns = tern_config::load_dns_config(&dir.join("dns.toml"))?;
    ensure!(
        dns.listen == SocketAddr::from((dns_addr, DNS_PORT)),
        "{}",
        dns.listen
    );
    ensure!(
        dns.report_listen == SocketAddr::from((dns_addr, DNS_REPORT_PORT)),
        "{}",
        dns.report_listen
    );
    ensure!(
        dns.fallback == [std::net::IpAddr::from(anycast)],
        "{:?}",
        dns.fallback
    );
    ensure!(dns.ttl == Duration::from_secs(1), "{:?}", dns.ttl);
    let dns_edges: Vec<(String, Vec<std::net::IpAddr>)> = dns
        .pops
        .iter()
        .flat_map(|pop| pop.edges.iter().map(|e| (e.name.clone(), e.addrs.clone())))
        .collect();
    let router_bird = std::fs::read_to_string(dir.join("bird-router.conf"))?;

    for n in 1..=EDGES {
        let name = format!("edge{n}");
        let addr = plan.addr(&name)?;
        let gateway: Ipv4Addr = plan.get(&format!("{name}_gateway"))?.parse()?;
        let edge = tern_config::load_edge_config(&dir.join(format!("{name}.toml")))?;
        ensure!(edge.name == name, "{name}.toml names {}", edge.name);
        ensure!(edge.listen.port() == EDGE_PORT, "{name}: {}", edge.listen);
        ensure!(
            edge.log.addr.ip() == log_addr,
            "{name}: log at {}",
            edge.log.addr
        );
        ensure!(
            edge.log.addr.port() == log.listen.port(),
            "{name}: log at {}",
            edge.log.addr
        );
        let health = &edge.health;
        ensure!(
            health.enabled && health.runner == HealthRunner::TernHealth,
            "{name}: {health:?}"
        );
        let reports = health.dns.as_ref().context("[health.dns]")?;
        ensure!(
            reports.report_urls == [dns.report_listen],
            "{name} reports to {:?}",
            reports.report_urls
        );
        ensure!(health.bird.is_some(), "{name}: no [health.bird]");
        ensure!(
            dns_edges.contains(&(name.clone(), vec![addr.into()])),
            "dns.toml does not answer {addr} for {name}: {dns_edges:?}"
        );
        let bird = std::fs::read_to_string(dir.join(format!("bird-{name}.conf")))?;
        for needle in [
            format!("router id {addr};"),
            format!("local {addr} as 6500{n};"),
            format!("neighbor {gateway} as 65000;"),
            format!("route {anycast}/32 blackhole;"),
        ] {
            ensure!(bird.contains(&needle), "bird-{name}.conf lacks {needle:?}");
        }
        for needle in [
            format!("protocol bgp {name} from edge"),
            format!("source address {gateway};"),
            format!("neighbor {addr} as 6500{n};"),
        ] {
            ensure!(
                router_bird.contains(&needle),
                "bird-router.conf lacks {needle:?}"
            );
        }
    }
    ensure!(dns_edges.len() == EDGES, "{dns_edges:?}");
    ensure!(
        router_bird.contains(&format!("import where net = {anycast}/32;")),
        "bird-router.conf imports something else than {anycast}/32"
    );
    Ok(())
}
