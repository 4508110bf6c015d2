//! The link driver: the edge's one connection to its log node, and the tasks around it.
//!
//! - The **link task** owns the [`LogClient`], the edge's subscription stream and the
//!   [`Hub`]. It connects with jittered exponential backoff (`log.reconnect_min` to
//!   `log.reconnect_max`) forever, each attempt given up after a second or so (longer
//!   as the backoff grows), so a log coming back is found soon after it listens; a log
//!   killed and restarted on its address resets the old connection at once (see
//!   `tern_log::net::tls`). After every (re)connect it resubscribes each followed
//!   channel after the last position the hub delivered, so nothing is lost or repeated.
//!   Sessions talk to it through a bounded command queue ([`LinkHandle::attach`] …).
//! - The **batcher task** takes publishes from a bounded queue, sends each batch as
//!   one `LogClient::publish` (several batches in flight) and answers every publish
//!   from its messages' outcomes: through the connection's outbox, or a oneshot for
//!   REST. With the link down, or its queue full, it answers `LogUnavailable` at once.
//!   A batch is cut by the upper bound of its encoded size, well below the link's
//!   frame limit, so one publisher's large messages never fail another's. On shutdown
//!   it answers everything queued (`LogUnavailable`), waits for the batches in flight,
//!   and only then lets the link task close the client.
//!
//! ```text
//!  sessions ─commands─▶ link task ─▶ Hub ─▶ outboxes          (fan-out, catch-up reads)
//!                        │  ▲ Subscribed/Messages
//!                        ▼  │
//!                      LogClient ◀── batcher ◀─publish jobs── sessions, REST
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng as _;
use tern_config::LinkClientConfig;
use tern_link::{ChannelName, PublishMessage, SubscribeFrom};
use tern_log::net::{ClientError, LogClient, LogClientConfig, Subscription, SubscriptionEvent};
use tern_protocol::{ErrorCode, ErrorInfo, Operation, PublishResult};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::convert::outcomes_to_results;
use crate::hub::{ConnKey, Hub, HubOutput, ReadFrom, SubscriberHandle};
use crate::metrics::Metrics;
use crate::outbox::{Outbox, PublishReply};
use crate::session::AttachFrom;

/// Commands queued for the link task.
const COMMAND_QUEUE: usize = 4096;
/// Publishes queued for the batcher.
const PUBLISH_QUEUE: usize = 4096;
/// Most messages in one batch sent to the log.
const BATCH_MESSAGES: usize = 1024;
/// Most bytes in one batch sent to the log, by the upper bound of its encoded size
/// ([`encoded_bound`]): a quarter of the link's frame limit. A single publish larger
/// than this is sent in parts.
const BATCH_BYTES: usize = tern_link::DEFAULT_MAX_FRAME_BYTES / 4;
/// Batches in flight to the log at once.
const BATCHES_IN_FLIGHT: usize = 8;
/// How often the hub's timers run (linger, parked reads) and the link is checked.
const TICK: Duration = Duration::from_millis(50);
/// Catch-up reads in flight at once (they share the log client's request slots with
/// publishes; more wait).
const READS_IN_FLIGHT: usize = 16;
/// A subscription stream dropped as a slow consumer after living at least this long is
/// replaced at once; sooner, after `reconnect_min` (so a stream that cannot keep up
/// does not loop).
const STABLE_STREAM: Duration = Duration::from_secs(1);
/// The shortest time a connection attempt gets before it is given up and retried
/// (longer as the backoff grows, up to `request_timeout`, so a slow network still
/// gets through). A log that is not listening yet answers nothing (UDP), and QUIC
/// alone would resend its first packet only after 1 s, 3 s …: short attempts
/// retried with the backoff reach a restarted log soon after it listens.
const CONNECT_ATTEMPT_MIN: Duration = Duration::from_secs(1);

/// A request to the hub, from a connection.
#[derive(Debug)]
pub(crate) enum HubCommand {
    Attach {
        handle: SubscriberHandle,
        channel: ChannelName,
        from: AttachFrom,
        granted: Vec<Operation>,
    },
    Detach {
        conn: ConnKey,
        channel: ChannelName,
        error: Option<ErrorInfo>,
    },
    Closed {
        conn: ConnKey,
        channels: Vec<ChannelName>,
    },
}

/// Where the answer to a publish goes.
#[derive(Debug)]
pub(crate) enum ReplyTo {
    /// A WebSocket connection's outbox, for this PUBLISH.
    Outbox {
        outbox: Arc<Outbox>,
        msg_serial: u64,
    },
    /// A REST request.
    Oneshot(oneshot::Sender<Result<Vec<PublishResult>, ErrorInfo>>),
    /// `inner`, for a publish some of whose messages a function dropped: `dropped`
    /// has one entry per original message (the reason, for a dropped one), and the
    /// link's results fill the others in order.
    WithDropped {
        inner: Box<ReplyTo>,
        dropped: Vec<Option<String>>,
    },
    /// Nobody waits (a message a function published); failures are logged.
    Discard,
}

impl ReplyTo {
    /// Answers the publish.
    pub(crate) fn send(self, result: Result<Vec<PublishResult>, ErrorInfo>, metrics: &Metrics) {
        metrics.answered(result.is_ok());
        self.deliver(result);
    }

    /// The results of a publish whose every message a function dropped.
    pub(crate) fn all_dropped(dropped: Vec<Option<String>>) -> Vec<PublishResult> {
        dropped.into_iter().map(dropped_result).collect()
    }

    fn deliver(self, result: Result<Vec<PublishResult>, ErrorInfo>) {
        match self {
            ReplyTo::WithDropped { inner, dropped } => {
                let result = result.and_then(|stored| {
                    let kept = dropped.iter().filter(|d| d.is_none()).count();
                    if kept != stored.len() {
                        return Err(ErrorInfo::new(
                            ErrorCode::Internal,
                            format!("{} results for {kept} stored messages", stored.len()),
                        ));
                    }
                    let mut stored = stored.into_iter();
                    Ok(dropped
                        .into_iter()
                        .map(|reason| match reason {
                            Some(_) => dropped_result(reason),
                            None => stored.next().unwrap_or_else(|| dropped_result(None)),
                        })
                        .collect())
                });
                inner.deliver(result);
            }
            ReplyTo::Discard => {
                if let Err(error) = result {
                    warn!(%error, "a message published by a function was not stored");
                }
            }
            ReplyTo::Outbox { outbox, msg_serial } => {
                outbox.reply(PublishReply { msg_serial, result });
            }
            ReplyTo::Oneshot(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

fn dropped_result(reason: Option<String>) -> PublishResult {
    PublishResult {
        position: tern_protocol::Position::BEFORE_FIRST,
        duplicate: false,
        dropped: Some(reason.unwrap_or_default()),
    }
}

/// A publish waiting for the batcher.
#[derive(Debug)]
pub(crate) struct PublishJob {
    pub(crate) messages: Vec<PublishMessage>,
    pub(crate) reply: ReplyTo,
}

/// What sessions and the HTTP API hold to reach the link. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct LinkHandle {
    commands: mpsc::Sender<HubCommand>,
    publishes: mpsc::Sender<PublishJob>,
    client: watch::Receiver<Option<LogClient>>,
}

impl LinkHandle {
    /// Queues a hub command (waits while the queue is full).
    pub(crate) async fn command(&self, command: HubCommand) {
        if self.commands.send(command).await.is_err() {
            debug!("link task gone; hub command dropped");
        }
    }

    /// Queues a publish without waiting; its answer goes where `job.reply` says. With
    /// the queue full (the log is slow) it is answered `LogUnavailable` at once.
    pub(crate) fn publish(&self, job: PublishJob, metrics: &Metrics) {
        metrics.published(job.messages.len());
        match self.publishes.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => job.reply.send(
                Err(unavailable(
                    "the edge has too many publishes waiting for the log; nothing was stored, retry later",
                )),
                metrics,
            ),
            Err(mpsc::error::TrySendError::Closed(job)) => job.reply.send(
                Err(unavailable(
                    "the edge is shutting down; nothing was stored",
                )),
                metrics,
            ),
        }
    }

    /// Follows the link's client (`None` while the link is down).
    pub(crate) fn client_watch(&self) -> watch::Receiver<Option<LogClient>> {
        self.client.clone()
    }

    /// The connected client, if the link is up.
    pub(crate) fn client(&self) -> Option<LogClient> {
        self.client
            .borrow()
            .as_ref()
            .filter(|client| !client.is_closed())
            .cloned()
    }
}

/// Starts the link and batcher tasks. They end when every [`LinkHandle`] is dropped
/// or `shutdown` turns true (the batcher first, once it answered every publish; then
/// the link task). Turn it only after the connections are gone.
pub(crate) fn start(
    config: LinkClientConfig,
    ca: std::path::PathBuf,
    hub: Hub,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> (LinkHandle, Vec<tokio::task::JoinHandle<()>>) {
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let (publishes, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
    let (client_tx, client_rx) = watch::channel(None);
    let request_timeout = config.request_timeout;
    let link = LinkTask {
        config,
        ca,
        hub,
        metrics: Arc::clone(&metrics),
        client: None,
        subscription: None,
        client_tx,
        failures: 0,
        retry_at: None,
        resubscribe_at: None,
        stream_since: None,
        reads: Arc::new(Semaphore::new(READS_IN_FLIGHT)),
    };
    // The link task stops (closing the client) only after the batcher finished.
    let (batcher_done, link_shutdown) = watch::channel(false);
    let batcher_client = client_rx.clone();
    let tasks = vec![
        tokio::spawn(link.run(command_rx, link_shutdown)),
        tokio::spawn(async move {
            batcher(
                publish_rx,
                batcher_client,
                metrics,
                shutdown,
                request_timeout,
            )
            .await;
            let _ = batcher_done.send(true);
        }),
    ];
    let handle = LinkHandle {
        commands,
        publishes,
        client: client_rx,
    };
    (handle, tasks)
}

type ReadAnswer = (
    ChannelName,
    ConnKey,
    u64,
    Result<tern_log::ReadResult, String>,
);

struct LinkTask {
    config: LinkClientConfig,
    ca: std::path::PathBuf,
    hub: Hub,
    metrics: Arc<Metrics>,
    client: Option<LogClient>,
    subscription: Option<Subscription>,
    client_tx: watch::Sender<Option<LogClient>>,
    /// Connection attempts failed in a row (for the backoff).
    failures: u32,
    /// When to try connecting again.
    retry_at: Option<tokio::time::Instant>,
    /// When to resubscribe on a new stream after the last one failed.
    resubscribe_at: Option<tokio::time::Instant>,
    /// When the current subscription stream was opened.
    stream_since: Option<tokio::time::Instant>,
    /// Slots for catch-up reads ([`READS_IN_FLIGHT`]).
    reads: Arc<Semaphore>,
}

impl LinkTask {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<HubCommand>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let (read_tx, mut read_rx) = mpsc::channel::<ReadAnswer>(1024);
        let mut connecting: Option<oneshot::Receiver<Result<LogClient, ClientError>>> =
            Some(self.connect());
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let drained = self.hub.drain_signal();
        loop {
            self.carry_out(&read_tx).await;
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                command = commands.recv() => match command {
                    Some(command) => self.handle_command(command),
                    None => break,
                },
                event = next_event(&mut self.subscription) => self.handle_event(event),
                Some((channel, conn, generation, result)) = read_rx.recv() => {
                    self.hub.handle_read_result(&channel, conn, generation, result);
                }
                () = drained.notified() => self.hub.handle_drained(),
                result = async { connecting.as_mut().expect("guarded by the branch condition").await }, if connecting.is_some() => {
                    connecting = None;
                    match result {
                        Ok(Ok(client)) => self.link_up(client),
                        Ok(Err(error)) => self.schedule_reconnect(&error.to_string()),
                        Err(_) => self.schedule_reconnect("connect task ended"),
                    }
                }
                () = tokio::time::sleep_until(self.retry_at.unwrap_or(far)), if self.retry_at.is_some() => {
                    self.retry_at = None;
                    connecting = Some(self.connect());
                }
                () = tokio::time::sleep_until(self.resubscribe_at.unwrap_or(far)), if self.resubscribe_at.is_some() => {
                    self.resubscribe_at = None;
                    if self.client.is_some() {
                        self.hub.handle_link_up();
                    }
                }
                _ = tick.tick() => {
                    self.hub.handle_tick(Instant::now());
                    if self.client.as_ref().is_some_and(LogClient::is_closed) {
                        self.link_down("the connection to the log closed");
                    }
                }
            }
        }
        if let Some(client) = self.client.take() {
            client.close().await;
        }
        let _ = self.client_tx.send(None);
        self.metrics.set_link_up(false);
    }

    /// Starts a connection attempt; its result arrives on the returned channel.
    fn connect(&self) -> oneshot::Receiver<Result<LogClient, ClientError>> {
        let (tx, rx) = oneshot::channel();
        let config = self.config.clone();
        let ca = self.ca.clone();
        let client_config = LogClientConfig {
            request_timeout: config.request_timeout,
            idle_timeout: config.idle_timeout,
            connect_timeout: self
                .backoff_step()
                .max(CONNECT_ATTEMPT_MIN)
                .min(config.request_timeout),
            ..LogClientConfig::default()
        };
        tokio::spawn(async move {
            let result =
                LogClient::connect_with(config.addr, &config.server_name, &ca, client_config).await;
            let _ = tx.send(result);
        });
        rx
    }

    /// The backoff step after `failures` failures in a row: exponential from
    /// `reconnect_min` to `reconnect_max`.
    fn backoff_step(&self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(20);
        self.config
            .reconnect_min
            .saturating_mul(1 << exp)
            .min(self.config.reconnect_max)
    }

    /// When to try again after a failure: the backoff step, with jitter (half to all
    /// of it).
    fn schedule_reconnect(&mut self, why: &str) {
        self.failures = self.failures.saturating_add(1);
        let delay = self
            .backoff_step()
            .mul_f64(rand::rng().random_range(0.5..=1.0));
        if self.failures == 1 || self.failures.is_power_of_two() {
            warn!(addr = %self.config.addr, attempt = self.failures, ?delay, reason = why, "cannot reach the log; retrying");
        }
        self.retry_at = Some(tokio::time::Instant::now() + delay);
    }

    fn link_up(&mut self, client: LogClient) {
        info!(addr = %client.remote_addr(), "link to the log is up");
        self.failures = 0;
        self.client = Some(client.clone());
        self.subscription = None;
        let _ = self.client_tx.send(Some(client));
        self.metrics.set_link_up(true);
        self.hub.handle_link_up();
    }

    fn link_down(&mut self, why: &str) {
        warn!(reason = why, "link to the log is down");
        self.resubscribe_at = None;
        self.schedule_reconnect(why);
        self.client = None;
        self.subscription = None;
        let _ = self.client_tx.send(None);
        self.metrics.set_link_up(false);
        self.hub.handle_link_down();
    }

    fn handle_command(&mut self, command: HubCommand) {
        match command {
            HubCommand::Attach {
                handle,
                channel,
                from,
                granted,
            } => self.hub.handle_attach(handle, channel, from, granted),
            HubCommand::Detach {
                conn,
                channel,
                error,
            } => self
                .hub
                .handle_detach(Instant::now(), conn, &channel, error),
            HubCommand::Closed { conn, channels } => {
                self.hub
                    .handle_connection_closed(Instant::now(), conn, &channels);
            }
        }
    }

    /// Hands a subscription event to the hub.
    fn handle_event(&mut self, event: Option<SubscriptionEvent>) {
        match event {
            Some(SubscriptionEvent::Subscribed {
                channel,
                next_serial,
                previous,
                continuity,
                ..
            }) => {
                self.hub
                    .handle_subscribed(&channel, next_serial, previous, continuity);
            }
            Some(SubscriptionEvent::Messages { channel, messages }) => {
                self.hub.handle_messages(&channel, &messages);
            }
            Some(SubscriptionEvent::Unsubscribed { channel }) => {
                self.hub.handle_unsubscribed(Instant::now(), &channel);
            }
            Some(SubscriptionEvent::Error(error)) => {
                // It names no channel: a subscribe it refused is sent again when
                // unconfirmed for `request_timeout`, a failed replay ends with
                // Unsubscribed (both handled by the hub).
                warn!(%error, "the log reported an error on the subscription stream");
            }
            Some(SubscriptionEvent::Closed(error)) if error.is_slow_consumer() => {
                // Lost nothing but time: the hub resubscribes after what it delivered.
                let stable = self
                    .stream_since
                    .is_some_and(|since| since.elapsed() >= STABLE_STREAM);
                self.subscription_failed("the log dropped the stream as a slow consumer");
                if stable && self.resubscribe_at.is_some() {
                    self.resubscribe_at = Some(tokio::time::Instant::now());
                }
            }
            Some(SubscriptionEvent::Closed(error)) => {
                self.subscription_failed(&format!("the stream ended: {error}"));
            }
            Some(_) => {}
            None => self.subscription_failed("the stream ended"),
        }
    }

    /// Carries out what the hub asked for.
    async fn carry_out(&mut self, reads: &mpsc::Sender<ReadAnswer>) {
        while let Some(output) = self.hub.poll_output() {
            match output {
                // Paused after a failure: everything is resubscribed when it ends.
                HubOutput::Subscribe { .. } | HubOutput::Unsubscribe { .. }
                    if self.resubscribe_at.is_some() => {}
                HubOutput::Subscribe { channel, from } => self.subscribe(&channel, from).await,
                HubOutput::Unsubscribe { channel } => {
                    if let Some(subscription) = &mut self.subscription {
                        let removed = tokio::time::timeout(
                            self.config.request_timeout,
                            subscription.remove(&channel),
                        )
                        .await;
                        if !matches!(removed, Ok(Ok(()))) {
                            self.subscription_failed("unsubscribe failed");
                        }
                    }
                }
                HubOutput::Read {
                    channel,
                    conn,
                    generation,
                    from,
                    limit,
                } => match self.client.clone() {
                    Some(client) => {
                        let reads = reads.clone();
                        let slots = Arc::clone(&self.reads);
                        tokio::spawn(async move {
                            let result = match slots.acquire_owned().await {
                                Ok(_slot) => match from {
                                    ReadFrom::Serial(from) => {
                                        client.read(&channel, from, limit).await
                                    }
                                    ReadFrom::Since(since_ms) => {
                                        client.read_since(&channel, since_ms, limit).await
                                    }
                                }
                                .map_err(|e| e.to_string()),
                                Err(_) => Err("the edge is shutting down".to_owned()),
                            };
                            let _ = reads.send((channel, conn, generation, result)).await;
                        });
                    }
                    None => self.hub.handle_read_result(
                        &channel,
                        conn,
                        generation,
                        Err("the link to the log is down".into()),
                    ),
                },
            }
        }
    }

    async fn subscribe(&mut self, channel: &ChannelName, from: SubscribeFrom) {
        let Some(client) = &self.client else {
            // Resubscribed when the link comes up.
            return;
        };
        let timeout = self.config.request_timeout;
        let ok = match &mut self.subscription {
            Some(subscription) => {
                matches!(
                    tokio::time::timeout(timeout, subscription.add(channel, from)).await,
                    Ok(Ok(()))
                )
            }
            None => match tokio::time::timeout(timeout, client.subscribe(channel, from)).await {
                Ok(Ok(subscription)) => {
                    self.subscription = Some(subscription);
                    self.stream_since = Some(tokio::time::Instant::now());
                    true
                }
                _ => false,
            },
        };
        if !ok {
            self.subscription_failed("subscribe failed");
        }
    }

    /// The subscription stream failed: after a pause the hub resubscribes every
    /// channel after its last delivered position on a new stream (or after
    /// reconnecting) — nothing lost, nothing repeated.
    fn subscription_failed(&mut self, why: &str) {
        warn!(reason = why, "subscription stream to the log failed");
        self.subscription = None;
        self.hub.handle_link_down();
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            self.resubscribe_at = Some(tokio::time::Instant::now() + self.config.reconnect_min);
        } else if self.client.is_some() {
            self.link_down(why);
        }
    }
}

/// The next event of the subscription, or never when there is none.
async fn next_event(subscription: &mut Option<Subscription>) -> Option<SubscriptionEvent> {
    match subscription {
        Some(subscription) => subscription.next_event().await,
        None => std::future::pending().await,
    }
}

/// An upper bound of the bytes `message` takes in a link frame (postcard: a string
/// or byte string is its bytes after a varint length of at most 10 bytes).
fn encoded_bound(message: &PublishMessage) -> usize {
    const LEN: usize = 10;
    let headers: usize = message
        .headers
        .iter()
        .map(|(name, value)| name.len() + value.len() + 2 * LEN)
        .sum();
    message.channel.len()
        + message.idempotency_key.len()
        + message.payload.len()
        + headers
        + 4 * LEN
}

/// Sends publishes to the log in batches until `shutdown`; then answers what is
/// queued and waits (up to `request_timeout`) for the batches in flight.
async fn batcher(
    mut jobs: mpsc::Receiver<PublishJob>,
    client: watch::Receiver<Option<LogClient>>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
    request_timeout: Duration,
) {
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    // A job taken from the queue that did not fit the batch before.
    let mut carried: Option<PublishJob> = None;
    loop {
        if let Some(job) = carried.take() {
            send_batch(job, &mut jobs, &mut carried, &client, &metrics, &slots).await;
            continue;
        }
        let first = tokio::select! {
            job = jobs.recv() => match job {
                Some(job) => job,
                None => break,
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
                continue;
            }
        };
        send_batch(first, &mut jobs, &mut carried, &client, &metrics, &slots).await;
    }
    // Stopping: nothing new comes in; what is queued was never sent.
    jobs.close();
    let never_sent = || unavailable("the edge is shutting down; nothing was stored");
    if let Some(job) = carried.take() {
        job.reply.send(Err(never_sent()), &metrics);
    }
    while let Ok(job) = jobs.try_recv() {
        job.reply.send(Err(never_sent()), &metrics);
    }
    let all = u32::try_from(BATCHES_IN_FLIGHT).unwrap_or(u32::MAX);
    if tokio::time::timeout(request_timeout, slots.acquire_many(all))
        .await
        .is_err()
    {
        debug!("publish batches still in flight at shutdown");
    }
}

/// Sends `first` with as many queued jobs as fit in one batch (a job that does not
/// fit is left in `carried` for the next). Waits for a slot, not for the answer.
async fn send_batch(
    first: PublishJob,
    jobs: &mut mpsc::Receiver<PublishJob>,
    carried: &mut Option<PublishJob>,
    client: &watch::Receiver<Option<LogClient>>,
    metrics: &Arc<Metrics>,
    slots: &Arc<Semaphore>,
) {
    let mut count = first.messages.len();
    let mut bytes: usize = first.messages.iter().map(encoded_bound).sum();
    let mut batch = vec![first];
    while count < BATCH_MESSAGES && bytes < BATCH_BYTES {
        let Ok(job) = jobs.try_recv() else { break };
        let size: usize = job.messages.iter().map(encoded_bound).sum();
        if count + job.messages.len() > BATCH_MESSAGES || bytes + size > BATCH_BYTES {
            *carried = Some(job);
            break;
        }
        count += job.messages.len();
        bytes += size;
        batch.push(job);
    }
    let client = client.borrow().as_ref().filter(|c| !c.is_closed()).cloned();
    let Some(client) = client else {
        for job in batch {
            job.reply.send(
                Err(unavailable(
                    "the link to the log is down; nothing was stored",
                )),
                metrics,
            );
        }
        return;
    };
    let Ok(slot) = Arc::clone(slots).acquire_owned().await else {
        for job in batch {
            job.reply
                .send(Err(unavailable("the edge is shutting down")), metrics);
        }
        return;
    };
    let metrics = Arc::clone(metrics);
    tokio::spawn(async move {
        if let [job] = batch.as_slice()
            && bytes > BATCH_BYTES
            && job.messages.len() > 1
        {
            // One publish too large for a batch: sent in parts.
            if let Some(job) = batch.pop() {
                let result = publish_in_parts(&client, job.messages, &metrics).await;
                job.reply.send(result, &metrics);
            }
            drop(slot);
            return;
        }
        let mut counts = Vec::with_capacity(batch.len());
        let mut messages = Vec::with_capacity(count);
        let mut replies = Vec::with_capacity(batch.len());
        for job in batch {
            counts.push(job.messages.len());
            messages.extend(job.messages);
            replies.push(job.reply);
        }
        metrics.log_batch();
        let result = client.publish(messages).await;
        drop(slot);
        match result {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for (reply, count) in replies.into_iter().zip(counts) {
                    let mine: Vec<_> = outcomes.by_ref().take(count).collect();
                    reply.send(outcomes_to_results(mine), &metrics);
                }
            }
            Err(error) => {
                let info = publish_error(&error);
                for reply in replies {
                    reply.send(Err(info.clone()), &metrics);
                }
            }
        }
    });
}

/// Publishes one job's messages in parts of at most [`BATCH_BYTES`] (or one message
/// each), one after the other. A failure after a stored part cannot say "nothing was
/// stored": it is reported as `LogRejected` (some may be stored; ids make a retry safe).
async fn publish_in_parts(
    client: &LogClient,
    messages: Vec<PublishMessage>,
    metrics: &Metrics,
) -> Result<Vec<PublishResult>, ErrorInfo> {
    let mut outcomes = Vec::with_capacity(messages.len());
    let mut messages = messages.into_iter().peekable();
    while messages.peek().is_some() {
        let mut part = Vec::new();
        let mut bytes = 0;
        while let Some(message) = messages.peek() {
            let size = encoded_bound(message);
            if !part.is_empty() && bytes + size > BATCH_BYTES {
                break;
            }
            bytes += size;
            part.extend(messages.next());
        }
        metrics.log_batch();
        match client.publish(part).await {
            Ok(stored) => outcomes.extend(stored),
            Err(error) => {
                let mut info = publish_error(&error);
                if !outcomes.is_empty() && info.code == ErrorCode::LogUnavailable {
                    info = ErrorInfo::new(
                        ErrorCode::LogRejected,
                        format!(
                            "part of the publish was stored, then the log failed: {}",
                            info.message
                        ),
                    );
                }
                return Err(info);
            }
        }
    }
    outcomes_to_results(outcomes)
}

fn unavailable(why: &str) -> ErrorInfo {
    ErrorInfo::new(ErrorCode::LogUnavailable, why)
}

/// The client-facing error for a failed publish call.
fn publish_error(error: &ClientError) -> ErrorInfo {
    match error {
        ClientError::Timeout(after) => ErrorInfo::new(
            ErrorCode::LogTimeout,
            format!(
                "the log did not answer within {after:?}; the messages may or may not be stored (retrying with the same ids is safe)"
            ),
        ),
        // Closed: the client was closed under the request after it was handed over;
        // whether the log stored the messages is unknown.
        ClientError::ConnectionLost(_) | ClientError::Protocol(_) | ClientError::Closed => {
            ErrorInfo::new(
                ErrorCode::LogTimeout,
                format!(
                    "the link to the log failed before the answer came ({error}); the messages may or may not be stored (retrying with the same ids is safe)"
                ),
            )
        }
        ClientError::Server(wire) if wire.retryable => ErrorInfo::new(
            ErrorCode::LogUnavailable,
            format!("the log could not take the messages: {}", wire.message),
        ),
        ClientError::Server(wire) => ErrorInfo::new(
            ErrorCode::LogRejected,
            format!("the log refused the messages: {}", wire.message),
        ),
        ClientError::TooLarge(e) => ErrorInfo::new(
            ErrorCode::LogRejected,
            format!("the publish does not fit in a link frame: {e}"),
        ),
        other => unavailable(&format!("the log cannot be reached: {other}")),
    }
}
