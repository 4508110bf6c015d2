//! Message functions at the edge: which function runs on which message, and what its
//! answer does to the message.
//!
//! [`Functions`] holds the deployed functions (static ones from the config and those
//! applied from the log's `$functions` channel, see [`sync`]) as an immutable
//! [`Snapshot`] swapped atomically: a deploy never pauses traffic, and a message sees
//! either the old chain or the new one, never a mix.
//!
//! ```text
//!  PUBLISH ─▶ ingress chain (ordered bindings matching the channel)
//!               pass / replace ─▶ next function ─▶ … ─▶ link ─▶ log      ACK
//!               drop            ─▶ not stored                              ACK{dropped}
//!               reject          ─▶ not stored                              NACK FunctionRejected
//!               failure         ─▶ fail-closed: NACK FunctionFailed; fail-open: as pass
//!  log ─▶ hub ─▶ egress chain (once per message per edge) ─▶ deliver / replace / skip
//! ```
//!
//! A PUBLISH with several messages goes through each function in one batch call. Any
//! reject or fail-closed failure NACKs the whole PUBLISH (a NACK means nothing was
//! stored); drops are answered in the ACK. Messages a function publishes are sent
//! only when its PUBLISH is accepted; they pass the target channel's ingress chain,
//! but what functions publish while handling them is dropped ([`MAX_DEPTH`]), and
//! they carry ids derived from the original's, so a retried publish (or every edge
//! running the same egress function) stores them once.

pub(crate) mod stats;
pub(crate) mod sync;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tern_config::{BindingSpec, EdgeConfig, FailurePolicy, FunctionName, Stage};
use tern_link::{ChannelName, Position, PublishMessage, StoredMessage};
use tern_protocol::{ErrorCode, ErrorInfo};
use tern_wasm::{Action, CallError, MessageRef};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::convert::{self, HeaderView};
use crate::hub::{Egress, EgressOutcome};
use crate::link::{LinkHandle, PublishJob, ReplyTo};
use crate::metrics::Metrics;
use stats::{Failure, FunctionStats, StatsSnapshot, Verdict};
pub(crate) use tern_fnrecord::{BindingRecord, CHANNEL, FunctionRecord};

/// How many functions deep messages published by functions may go. At 1: a message
/// a function published passes the target channel's ingress chain, but whatever
/// functions publish while handling it is dropped and counted, so publishes cannot
/// loop or multiply (a call publishes at most its quota, and that is the end).
pub(crate) const MAX_DEPTH: u32 = 1;

/// Why functions could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FunctionsError {
    /// The WebAssembly host could not start.
    #[error("the function host could not start: {0}")]
    Host(String),
    /// A static function from the config could not be loaded.
    #[error("functions.static {name} ({path}): {reason}")]
    Static {
        /// The function.
        name: String,
        /// Its file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// One deployed function.
pub(crate) struct Deployed {
    pub(crate) name: FunctionName,
    pub(crate) version: u32,
    pub(crate) spec: BindingSpec,
    pub(crate) function: tern_wasm::Function,
    pub(crate) stats: Arc<FunctionStats>,
    /// Where its record is in `$functions`; `None` for a static function.
    pub(crate) position: Option<Position>,
}

impl std::fmt::Debug for Deployed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployed")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("spec", &self.spec)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl Deployed {
    fn matches(&self, channel: &str) -> bool {
        self.spec.patterns.iter().any(|p| p.matches(channel))
    }
}

/// The functions in force, by stage, in chain order.
#[derive(Debug, Default)]
struct Snapshot {
    by_name: BTreeMap<FunctionName, Arc<Deployed>>,
    ingress: Vec<Arc<Deployed>>,
    egress: Vec<Arc<Deployed>>,
}

impl Snapshot {
    fn with(&self, deployed: Option<Arc<Deployed>>, removed: &FunctionName) -> Snapshot {
        let mut by_name = self.by_name.clone();
        by_name.remove(removed);
        if let Some(deployed) = deployed {
            by_name.insert(deployed.name.clone(), deployed);
        }
        let chain = |stage: Stage| {
            let mut chain: Vec<_> = by_name
                .values()
                .filter(|d| d.spec.stage == stage)
                .cloned()
                .collect();
            chain.sort_by(|a, b| (a.spec.order, &a.name).cmp(&(b.spec.order, &b.name)));
            chain
        };
        Snapshot {
            ingress: chain(Stage::Ingress),
            egress: chain(Stage::Egress),
            by_name,
        }
    }
}

/// One version of a function as `$functions` recorded it (kept for rollback and
/// listing).
#[derive(Clone, Debug)]
pub(crate) struct VersionEntry {
    pub(crate) version: u32,
    pub(crate) binding: BindingRecord,
    pub(crate) wasm: Bytes,
    pub(crate) position: Position,
}

#[derive(Debug, Default)]
struct History {
    versions: HashMap<FunctionName, Vec<VersionEntry>>,
    stats: HashMap<FunctionName, Arc<FunctionStats>>,
    /// The last error applying a record for a function, shown by `tern fn list`.
    errors: HashMap<FunctionName, String>,
}

/// What `tern fn list` shows of one function.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct FunctionInfo {
    /// Its name.
    pub name: String,
    /// The version in force (0 for a static function).
    pub version: u32,
    /// `deployed` (from `$functions`) or `static` (from the config).
    pub source: String,
    /// Stage, policy, patterns, limits.
    pub stage: String,
    /// Failure policy.
    pub policy: String,
    /// Channel patterns.
    pub bind: Vec<String>,
    /// Time limit per call, microseconds.
    pub timeout_us: u64,
    /// Memory limit per instance, bytes.
    pub memory_bytes: u64,
    /// Place in the chain.
    pub order: i32,
    /// SHA-256 of the component.
    pub sha256: String,
    /// Every version recorded in `$functions`.
    pub versions: Vec<u32>,
    /// The last error applying a record for it on this edge, if any.
    pub error: Option<String>,
    /// What it did on this edge.
    pub stats: StatsSnapshot,
}

/// The edge's message functions. See the module docs.
pub(crate) struct Functions {
    host: tern_wasm::Host,
    max_message_bytes: usize,
    max_memory_bytes: usize,
    current: RwLock<Arc<Snapshot>>,
    /// Whether any ingress / egress function is bound: the message path checks this
    /// first and takes no lock when nothing is.
    any_ingress: AtomicBool,
    any_egress: AtomicBool,
    history: Mutex<History>,
    /// The last `$functions` position applied, and whether the edge has caught up with
    /// the channel since it started.
    applied: watch::Sender<Applied>,
    link: OnceLock<(LinkHandle, Arc<Metrics>)>,
}

impl std::fmt::Debug for Functions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Functions")
            .field("current", &self.current)
            .field("applied", &*self.applied.borrow())
            .finish_non_exhaustive()
    }
}

/// How far this edge has applied `$functions`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    pub(crate) position: Option<Position>,
    pub(crate) caught_up: bool,
}

impl Functions {
    /// The host, and every static function of the config loaded and bound.
    pub(crate) fn new(config: &EdgeConfig) -> Result<Functions, FunctionsError> {
        let host = tern_wasm::Host::new(tern_wasm::HostConfig {
            cache_dir: config.functions.cache_dir.clone(),
            max_instances: config.functions.max_instances,
            max_memory_bytes: config.functions.max_memory_bytes,
            edge: tern_wasm::EdgeInfo {
                name: config.name.clone(),
                region: config.region.clone(),
            },
            ..tern_wasm::HostConfig::default()
        })
        .map_err(|e| FunctionsError::Host(e.to_string()))?;
        let functions = Functions {
            host,
            max_message_bytes: config.limits.max_message_bytes,
            max_memory_bytes: config.functions.max_memory_bytes,
            current: RwLock::new(Arc::new(Snapshot::default())),
            any_ingress: AtomicBool::new(false),
            any_egress: AtomicBool::new(false),
            history: Mutex::new(History::default()),
            applied: watch::Sender::new(Applied::default()),
            link: OnceLock::new(),
        };
        for spec in &config.functions.static_functions {
            let fail = |reason: String| FunctionsError::Static {
                name: spec.name.to_string(),
                path: spec.path.display().to_string(),
                reason,
            };
            let wasm = std::fs::read(&spec.path).map_err(|e| fail(e.to_string()))?;
            let function = functions
                .load(&spec.name, &wasm, &spec.binding)
                .map_err(fail)?;
            functions.install(spec.name.clone(), 0, spec.binding.clone(), function, None);
        }
        Ok(functions)
    }

    /// Lets functions publish (set once the link runs).
    pub(crate) fn set_link(&self, link: LinkHandle, metrics: Arc<Metrics>) {
        let _ = self.link.set((link, metrics));
    }

    /// Compiles `wasm` (or takes it from the cache) and makes a function of it.
    fn load(
        &self,
        name: &FunctionName,
        wasm: &[u8],
        spec: &BindingSpec,
    ) -> Result<tern_wasm::Function, String> {
        let component = self.host.compile(wasm).map_err(|e| e.to_string())?;
        let limits = tern_wasm::Limits {
            timeout: spec.timeout,
            memory_bytes: spec.memory_bytes,
            ..tern_wasm::Limits::default()
        };
        self.host
            .function(name.as_str(), &component, limits)
            .map_err(|e| e.to_string())
    }

    /// Checks a component and binding as a deploy would apply them, without deploying.
    pub(crate) fn check(
        &self,
        name: &FunctionName,
        wasm: &[u8],
        spec: &BindingSpec,
    ) -> Result<(), String> {
        self.load(name, wasm, spec).map(drop)
    }

    fn stats_of(&self, name: &FunctionName) -> Arc<FunctionStats> {
        Arc::clone(self.history.lock().stats.entry(name.clone()).or_default())
    }

    /// Puts `function` in force under `name` (replacing any version), atomically.
    fn install(
        &self,
        name: FunctionName,
        version: u32,
        spec: BindingSpec,
        function: tern_wasm::Function,
        position: Option<Position>,
    ) {
        let stats = self.stats_of(&name);
        let deployed = Arc::new(Deployed {
            name: name.clone(),
            version,
            spec,
            function,
            stats,
            position,
        });
        self.swap(|snapshot| snapshot.with(Some(deployed), &name));
    }

    fn swap(&self, change: impl FnOnce(&Snapshot) -> Snapshot) {
        let mut current = self.current.write();
        let next = change(&current);
        self.any_ingress
            .store(!next.ingress.is_empty(), Ordering::Release);
        self.any_egress
            .store(!next.egress.is_empty(), Ordering::Release);
        *current = Arc::new(next);
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.read())
    }

    /// Applies one `$functions` message, in log order. Compiling blocks: call it
    /// where blocking is fine. A record this edge cannot apply leaves the function
    /// as it was, and the error is logged and shown by `tern fn list`.
    pub(crate) fn apply(&self, stored: &StoredMessage) {
        let position = stored.position;
        let record = match FunctionRecord::decode(&stored.payload) {
            Ok(record) => record,
            Err(error) => {
                warn!(%position, %error, "skipping a $functions record");
                return self.mark_applied(position);
            }
        };
        let name = match FunctionName::parse(record.name()) {
            Ok(name) => name,
            Err(error) => {
                warn!(%position, %error, "skipping a $functions record with a bad name");
                return self.mark_applied(position);
            }
        };
        match record {
            FunctionRecord::Deploy {
                binding,
                wasm,
                rollback_of,
                ..
            } => {
                let version = {
                    let mut history = self.history.lock();
                    let versions = history.versions.entry(name.clone()).or_default();
                    let version = versions.last().map_or(1, |v| v.version + 1);
                    versions.push(VersionEntry {
                        version,
                        binding: binding.clone(),
                        wasm: wasm.clone(),
                        position,
                    });
                    version
                };
                let started = Instant::now();
                let loaded = binding
                    .to_spec(self.max_memory_bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|spec| Ok((self.load(&name, &wasm, &spec)?, spec)));
                match loaded {
                    Ok((function, spec)) => {
                        self.install(name.clone(), version, spec, function, Some(position));
                        self.history.lock().errors.remove(&name);
                        info!(function = %name, version, ?rollback_of, %position, took = ?started.elapsed(), "function deployed");
                    }
                    Err(error) => {
                        warn!(function = %name, version, %position, %error, "cannot apply a deploy; the function stays as it was");
                        self.history.lock().errors.insert(name, error);
                    }
                }
            }
            FunctionRecord::Remove { .. } => {
                self.swap(|snapshot| snapshot.with(None, &name));
                info!(function = %name, %position, "function removed");
            }
        }
        self.mark_applied(position);
    }

    fn mark_applied(&self, position: Position) {
        self.applied
            .send_modify(|applied| applied.position = Some(position));
    }

    /// The edge has applied everything `$functions` held when it (re)subscribed.
    pub(crate) fn mark_caught_up(&self) {
        self.applied
            .send_if_modified(|applied| !std::mem::replace(&mut applied.caught_up, true));
    }

    /// Whether the functions in the log are in force here (readiness).
    pub(crate) fn is_caught_up(&self) -> bool {
        self.applied.borrow().caught_up
    }

    /// Follows what has been applied (the admin API waits for its own deploys).
    pub(crate) fn applied(&self) -> watch::Receiver<Applied> {
        self.applied.subscribe()
    }

    /// The recorded versions of `name`.
    pub(crate) fn versions(&self, name: &FunctionName) -> Vec<VersionEntry> {
        self.history
            .lock()
            .versions
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// What `tern fn list` shows: every function in force, and those whose last
    /// record failed to apply.
    pub(crate) fn list(&self) -> Vec<FunctionInfo> {
        let snapshot = self.snapshot();
        let history = self.history.lock();
        let mut names: Vec<&FunctionName> = snapshot.by_name.keys().collect();
        names.extend(
            history
                .errors
                .keys()
                .filter(|n| !snapshot.by_name.contains_key(*n)),
        );
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let versions = history.versions.get(name);
                let deployed = snapshot.by_name.get(name);
                let (stage, policy, bind, timeout_us, memory_bytes, order) = match deployed {
                    Some(d) => (
                        d.spec.stage.to_string(),
                        d.spec.policy.to_string(),
                        d.spec.patterns.iter().map(|p| p.to_string()).collect(),
                        u64::try_from(d.spec.timeout.as_micros()).unwrap_or(u64::MAX),
                        d.spec.memory_bytes as u64,
                        d.spec.order,
                    ),
                    None => ("-".into(), "-".into(), Vec::new(), 0, 0, 0),
                };
                FunctionInfo {
                    name: name.to_string(),
                    version: deployed.map_or(0, |d| d.version),
                    source: match deployed {
                        Some(d) if d.position.is_none() => "static".into(),
                        Some(_) => "deployed".into(),
                        None => "failed".into(),
                    },
                    stage,
                    policy,
                    bind,
                    timeout_us,
                    memory_bytes,
                    order,
                    sha256: deployed
                        .map(|d| d.function.component().sha256_hex().to_owned())
                        .unwrap_or_default(),
                    versions: versions
                        .map_or_else(Vec::new, |v| v.iter().map(|e| e.version).collect()),
                    error: history.errors.get(name).cloned(),
                    stats: history
                        .stats
                        .get(name)
                        .map(|s| s.snapshot())
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Every function's stats with its name and stage, for `/metrics`.
    pub(crate) fn metrics(&self) -> Vec<(String, Stage, Arc<FunctionStats>)> {
        self.snapshot()
            .by_name
            .values()
            .map(|d| (d.name.to_string(), d.spec.stage, Arc::clone(&d.stats)))
            .collect()
    }

    /// Runs the ingress chain over a publish, then hands what is left to the link;
    /// answers the publisher itself when nothing is left to store.
    pub(crate) fn publish(&self, job: PublishJob, link: &LinkHandle, metrics: &Metrics) {
        if !self.any_ingress.load(Ordering::Acquire) {
            return link.publish(job, metrics);
        }
        let PublishJob { messages, reply } = job;
        let outcome = self.run_ingress(messages);
        match outcome.result {
            Err(error) => reply.send(Err(error), metrics),
            Ok((kept, dropped)) => {
                if kept.is_empty() {
                    reply.send(Ok(ReplyTo::all_dropped(dropped)), metrics);
                } else if dropped.iter().any(Option::is_some) {
                    let reply = ReplyTo::WithDropped {
                        inner: Box::new(reply),
                        dropped,
                    };
                    link.publish(
                        PublishJob {
                            messages: kept,
                            reply,
                        },
                        metrics,
                    );
                } else {
                    link.publish(
                        PublishJob {
                            messages: kept,
                            reply,
                        },
                        metrics,
                    );
                }
                for message in outcome.published {
                    self.publish(
                        PublishJob {
                            messages: vec![message],
                            reply: ReplyTo::Discard,
                        },
                        link,
                        metrics,
                    );
                }
            }
        }
    }

    /// The ingress chain over one publish's messages.
    fn run_ingress(&self, messages: Vec<PublishMessage>) -> Chained {
        let snapshot = self.snapshot();
        let Some(first) = messages.first() else {
            return Chained::unchanged(messages);
        };
        let channel = first.channel.clone();
        let chain: Vec<&Arc<Deployed>> = snapshot
            .ingress
            .iter()
            .filter(|d| d.matches(&channel))
            .collect();
        if chain.is_empty() {
            return Chained::unchanged(messages);
        }
        if messages.iter().any(|m| m.channel != channel) {
            // Sessions publish to one channel at a time; anything else is ours, and
            // gets the chain one message at a time.
            let mut all = Chained::unchanged(Vec::new());
            for message in messages {
                let one = self.run_ingress(vec![message]);
                all.merge(one);
            }
            return all;
        }
        let now_ms = unix_ms();
        let mut alive: Vec<Option<PublishMessage>> = messages.into_iter().map(Some).collect();
        let mut dropped: Vec<Option<String>> = vec![None; alive.len()];
        let mut published = Vec::new();
        for deployed in chain {
            let indices: Vec<usize> = (0..alive.len()).filter(|&i| alive[i].is_some()).collect();
            if indices.is_empty() {
                break;
            }
            let views: Vec<HeaderView<'_>> = indices
                .iter()
                .filter_map(|&i| alive[i].as_ref().map(convert::header_view))
                .collect();
            let refs: Vec<MessageRef<'_>> = indices
                .iter()
                .zip(&views)
                .filter_map(|(&i, view)| alive[i].as_ref().map(|m| message_ref(m, view, now_ms)))
                .collect();
            let depth = views.first().map_or(0, |v| v.depth);
            let started = Instant::now();
            let answer = if refs.len() == 1 {
                deployed
                    .function
                    .call(&refs[0])
                    .map(|call| (vec![call.action], call.publishes))
            } else {
                deployed
                    .function
                    .call_batch(&refs)
                    .map(|call| (call.actions, call.publishes))
            };
            deployed.stats.record_call(refs.len(), started.elapsed());
            drop(refs);
            drop(views);
            let (actions, publishes) = match answer {
                Ok(answer) if answer.0.len() == indices.len() => answer,
                Ok(answer) => {
                    let error = format!(
                        "answered {} actions for {} messages",
                        answer.0.len(),
                        indices.len()
                    );
                    match self.failed(deployed, Failure::Other, error) {
                        Some(error) => return Chained::failed(error),
                        None => continue,
                    }
                }
                Err(error) => {
                    let failure = failure_of(&error);
                    match self.failed(deployed, failure, error.to_string()) {
                        Some(error) => return Chained::failed(error),
                        None => continue,
                    }
                }
            };
            let key = indices
                .first()
                .and_then(|&i| alive[i].as_ref())
                .map(|m| m.idempotency_key.clone())
                .unwrap_or_default();
            for (&index, action) in indices.iter().zip(actions) {
                match action {
                    Action::Pass => deployed.stats.record_verdict(Verdict::Pass),
                    Action::Replace(replacement) => {
                        deployed.stats.record_verdict(Verdict::Replace);
                        let Some(original) = alive[index].as_ref() else {
                            continue;
                        };
                        match convert::replaced(original, replacement, self.max_message_bytes) {
                            Ok(message) => alive[index] = Some(message),
                            Err(error) => {
                                if let Some(error) = self.failed(deployed, Failure::Other, error) {
                                    return Chained::failed(error);
                                }
                            }
                        }
                    }
                    Action::Drop(reason) => {
                        deployed.stats.record_verdict(Verdict::Drop);
                        alive[index] = None;
                        dropped[index] = Some(reason);
                    }
                    Action::Reject(reason) => {
                        deployed.stats.record_verdict(Verdict::Reject);
                        return Chained::failed(ErrorInfo::new(
                            ErrorCode::FunctionRejected,
                            format!("{}: {reason}", deployed.name),
                        ));
                    }
                }
            }
            published.extend(self.outgoing(deployed, &key, depth, publishes));
        }
        Chained {
            result: Ok((alive.into_iter().flatten().collect(), dropped)),
            published,
        }
    }

    /// Counts and logs a failed call; returns the NACK when the policy is fail-closed.
    fn failed(&self, deployed: &Deployed, failure: Failure, error: String) -> Option<ErrorInfo> {
        deployed.stats.record_failure(failure);
        warn!(function = %deployed.name, kind = failure.label(), policy = %deployed.spec.policy, %error, "function failed");
        match deployed.spec.policy {
            FailurePolicy::FailClosed => Some(ErrorInfo::new(
                ErrorCode::FunctionFailed,
                format!("{} failed ({}): {error}", deployed.name, failure.label()),
            )),
            FailurePolicy::FailOpen => None,
        }
    }

    /// The messages a call published, ready for the link (or none, past the depth).
    fn outgoing(
        &self,
        deployed: &Deployed,
        key: &Bytes,
        depth: u32,
        publishes: Vec<(String, tern_wasm::Outgoing)>,
    ) -> Vec<PublishMessage> {
        if publishes.is_empty() {
            return Vec::new();
        }
        deployed.stats.record_publishes(publishes.len());
        if depth >= MAX_DEPTH {
            deployed.stats.record_failure(Failure::Other);
            warn!(function = %deployed.name, count = publishes.len(), depth, "messages published by functions handling a function's message are dropped (a publish loop?)");
            return Vec::new();
        }
        publishes
            .into_iter()
            .enumerate()
            .map(|(i, (channel, message))| {
                let key = format!("{}~{}~{i}", String::from_utf8_lossy(key), deployed.name);
                convert::function_publish(channel, message, key, depth + 1)
            })
            .collect()
    }
}

/// The outcome of an ingress chain.
struct Chained {
    /// The messages to store and, per original message, the reason it was dropped;
    /// or the NACK.
    result: Result<(Vec<PublishMessage>, Vec<Option<String>>), ErrorInfo>,
    /// What the functions published.
    published: Vec<PublishMessage>,
}

impl Chained {
    fn unchanged(messages: Vec<PublishMessage>) -> Chained {
        let dropped = vec![None; messages.len()];
        Chained {
            result: Ok((messages, dropped)),
            published: Vec::new(),
        }
    }

    fn failed(error: ErrorInfo) -> Chained {
        Chained {
            result: Err(error),
            published: Vec::new(),
        }
    }

    fn merge(&mut self, other: Chained) {
        match (&mut self.result, other.result) {
            (Err(_), _) => {}
            (Ok(_), Err(error)) => {
                self.result = Err(error);
                self.published.clear();
                return;
            }
            (Ok((kept, dropped)), Ok((more, more_dropped))) => {
                kept.extend(more);
                dropped.extend(more_dropped);
            }
        }
        self.published.extend(other.published);
    }
}

impl Egress for Functions {
    fn is_active(&self) -> bool {
        self.any_egress.load(Ordering::Acquire)
    }

    fn apply(&self, channel: &ChannelName, stored: &StoredMessage) -> EgressOutcome {
        let snapshot = self.snapshot();
        let mut current: Option<StoredMessage> = None;
        let mut published = Vec::new();
        for deployed in snapshot
            .egress
            .iter()
            .filter(|d| d.matches(channel.as_str()))
        {
            let message = current.as_ref().unwrap_or(stored);
            let view = convert::stored_header_view(message);
            let message_ref = stored_ref(channel.as_str(), message, &view);
            let started = Instant::now();
            let answer = deployed.function.call(&message_ref);
            deployed.stats.record_call(1, started.elapsed());
            let depth = view.depth;
            drop(view);
            let call = match answer {
                Ok(call) => call,
                Err(error) => {
                    if self
                        .failed(deployed, failure_of(&error), error.to_string())
                        .is_some()
                    {
                        return EgressOutcome::Skip;
                    }
                    continue;
                }
            };
            published.extend(self.outgoing(
                deployed,
                &position_key(channel, stored),
                depth,
                call.publishes,
            ));
            match call.action {
                Action::Pass => deployed.stats.record_verdict(Verdict::Pass),
                Action::Replace(replacement) => {
                    deployed.stats.record_verdict(Verdict::Replace);
                    let base = current.take().unwrap_or_else(|| stored.clone());
                    current = Some(convert::replaced_stored(base, replacement));
                }
                Action::Drop(_) | Action::Reject(_) => {
                    deployed
                        .stats
                        .record_verdict(if matches!(call.action, Action::Drop(_)) {
                            Verdict::Drop
                        } else {
                            Verdict::Reject
                        });
                    self.send_published(published);
                    return EgressOutcome::Skip;
                }
            }
        }
        self.send_published(published);
        match current {
            Some(message) => EgressOutcome::Replace(message),
            None => EgressOutcome::Deliver,
        }
    }
}

impl Functions {
    fn send_published(&self, published: Vec<PublishMessage>) {
        let Some((link, metrics)) = self.link.get() else {
            return;
        };
        for message in published {
            self.publish(
                PublishJob {
                    messages: vec![message],
                    reply: ReplyTo::Discard,
                },
                link,
                metrics,
            );
        }
    }
}

/// The id base of messages an egress function publishes: the same on every edge, so
/// the log stores them once.
fn position_key(channel: &ChannelName, stored: &StoredMessage) -> Bytes {
    Bytes::from(format!("{channel}@{}", stored.position))
}

fn failure_of(error: &CallError) -> Failure {
    match error {
        CallError::Timeout { .. } => Failure::Timeout,
        CallError::MemoryLimit { .. } => Failure::Memory,
        CallError::Trap(_) => Failure::Trap,
        _ => Failure::Other,
    }
}

fn message_ref<'a>(
    message: &'a PublishMessage,
    view: &'a HeaderView<'a>,
    now_ms: u64,
) -> MessageRef<'a> {
    MessageRef {
        id: std::str::from_utf8(&message.idempotency_key).unwrap_or(""),
        channel: &message.channel,
        name: view.name,
        data: &message.payload,
        content_type: view.content_type,
        headers: &view.app,
        client_id: view.client_id,
        timestamp_ms: now_ms,
    }
}

fn stored_ref<'a>(
    channel: &'a str,
    message: &'a StoredMessage,
    view: &'a HeaderView<'a>,
) -> MessageRef<'a> {
    MessageRef {
        id: std::str::from_utf8(&message.idempotency_key).unwrap_or(""),
        channel,
        name: view.name,
        data: &message.payload,
        content_type: view.content_type,
        headers: &view.app,
        client_id: view.client_id,
        timestamp_ms: message.timestamp_ms,
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How long the admin API waits for its own deploy to be applied here.
pub(crate) const APPLY_TIMEOUT: Duration = Duration::from_secs(60);
