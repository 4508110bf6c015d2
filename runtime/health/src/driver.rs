//! [`HealthDriver`]: the health loop of one edge, run on the edge's own runtime.
//!
//! Every `interval` it runs the probes ([`Prober`]), feeds the drain file to
//! [`Hysteresis::handle_drain`] and the checks to [`Hysteresis::handle_probe`], then
//! acts on the state it is in:
//!
//! 1. `[health.bird]`: one [`AnycastController::reconcile`] (announce, de-prefer or
//!    withdraw; a BIRD that restarted is put back by the next cycle);
//! 2. `[health.dns]`: the state handed to the [`DnsReporter`] (each `tern dns` gets it
//!    from a task of its own: a slow server never holds up the loop);
//! 3. on entering `disabled` through the drain file, once the route is withdrawn and
//!    the reports are out (bounded by `timeout`): every connected client is told to
//!    reconnect elsewhere ([`ProbedEdge::send_clients_elsewhere`]). The edge keeps
//!    running and serving whoever still comes; when the file is gone it is `down` and
//!    must rise again.
//!
//! [`HealthDriver::leave`] is the SIGTERM path: `disabled` at once and for good,
//! withdraw, report `disabled` and wait for the reports (bounded), then the loop ends;
//! the edge then sends its clients elsewhere and stops (tern-edge's shutdown).
//!
//! The drain file and SIGTERM thus share everything but the exit. This departs from
//! issue 6's wording ("SIGTERM (or the drain file) → … exits") on purpose: operators
//! take a site out of rotation with the file without stopping it (to look at it, to
//! upgrade BIRD, to let traffic move before a restart), and bring it back by removing
//! the file, after which it must pass `rise` probes again like any edge coming up.
//!
//! The anycast guard's site count comes from the `tern dns` health table
//! ([`DnsSiteCount`]: the other edges up there, plus this one): `min_announcing = 0`
//! turns the guard off; otherwise a count that cannot be read freezes the controller
//! (nothing is withdrawn), and tern-config requires `[health.dns]` with a non-zero
//! floor.
//!
//! ```text
//!   tick ─▶ Prober::run ─▶ drain? ─▶ Hysteresis ─▶ state ─┬─▶ AnycastController::reconcile ─▶ BIRD
//!                                     │ Transition        ├─▶ DnsReporter::report ─▶ tern dns (POST /v1/health)
//!                                     ▼                   └─▶ entered disabled by drain: send clients elsewhere
//!                         tracing + HealthMetrics + HealthStatus (watch)
//!   leave() ─▶ handle_shutdown ─▶ reconcile(disabled) ─▶ report(disabled), wait ─▶ loop ends
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_config::HealthConfig;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::anycast::{AnycastController, InvalidSettings};
use crate::hysteresis::{HealthState, Hysteresis, ProbeReport, Transition};
use crate::metrics::HealthMetrics;
use crate::probes::{ProbedEdge, Prober};
use crate::report::{DnsReporter, DnsSiteCount};
use crate::settings::HealthSettings;

/// What the loop has seen so far, for tests and status pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthStatus {
    /// The current state.
    pub state: HealthState,
    /// Probes run so far.
    pub probes: u64,
    /// The last probe's checks.
    pub last_probe: Option<ProbeReport>,
    /// The last change of state.
    pub last_transition: Option<Transition>,
}

/// A running health loop.
#[derive(Debug)]
pub struct HealthDriver {
    leave: mpsc::Sender<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    status: watch::Receiver<HealthStatus>,
    metrics: Arc<HealthMetrics>,
    /// Longest [`HealthDriver::leave`] waits for the loop.
    leave_bound: Duration,
}

impl HealthDriver {
    /// Starts the loop of the edge named `edge_name` with `config` (its `[health]`)
    /// on the current tokio runtime; the first probe runs at once. Counters go to
    /// `metrics`. Fails only on settings tern-config would have refused.
    pub fn start<E: ProbedEdge>(
        edge_name: &str,
        config: &HealthConfig,
        edge: Arc<E>,
        metrics: Arc<HealthMetrics>,
    ) -> Result<HealthDriver, InvalidSettings> {
        let settings = HealthSettings::from_config(config)?;
        let urls = config.report_urls().to_vec();
        let anycast = match &config.bird {
            Some(_) => Some(AnycastController::new(
                &settings,
                DnsSiteCount::new(
                    edge_name,
                    urls.clone(),
                    config.report_token().cloned(),
                    config.timeout,
                ),
            )?),
            None => None,
        };
        let reporter = DnsReporter::start(
            edge_name.to_owned(),
            &urls,
            config.report_token().cloned(),
            config.timeout,
            Arc::clone(&metrics),
        );
        let initial = HealthStatus {
            state: HealthState::Down,
            probes: 0,
            last_probe: None,
            last_transition: None,
        };
        metrics.set_state(HealthState::Down);
        let (status_tx, status) = watch::channel(initial);
        let (leave, leave_rx) = mpsc::channel(1);
        // A cycle in progress, then the leaving cycle: BIRD (a few commands and the
        // site count) and the reports, each bounded by its own timeout.
        let steps = u32::try_from(urls.len())
            .unwrap_or(u32::MAX)
            .saturating_add(8);
        let bird_timeout = config.bird.as_ref().map_or(Duration::ZERO, |b| b.timeout);
        let leave_bound = config.interval + (config.timeout + bird_timeout) * steps;
        let driver = Driver {
            prober: Prober::new(Arc::clone(&edge), config),
            edge,
            hysteresis: Hysteresis::new(settings.rise, settings.fall),
            anycast,
            reporter,
            metrics: Arc::clone(&metrics),
            status: status_tx,
            timeout: config.timeout,
        };
        let task = tokio::spawn(driver.run(settings.interval, leave_rx));
        Ok(HealthDriver {
            leave,
            task,
            status,
            metrics,
            leave_bound,
        })
    }

    /// The loop's status, updated after every probe.
    pub fn status(&self) -> watch::Receiver<HealthStatus> {
        self.status.clone()
    }

    /// The loop's counters.
    pub fn metrics(&self) -> &Arc<HealthMetrics> {
        &self.metrics
    }

    /// Leaves anycast and DNS for good (SIGTERM): the state goes `disabled`, BIRD is
    /// told to withdraw, every `tern dns` gets `disabled`; returns once that is done
    /// (each step bounded by its timeout), and the loop has ended.
    pub async fn leave(self) {
        let (done, left) = oneshot::channel();
        let asked = self.leave.send(done).await.is_ok();
        if !asked || tokio::time::timeout(self.leave_bound, left).await.is_err() {
            tracing::warn!("the health loop did not confirm leaving anycast and DNS in time");
        }
        self.task.abort();
    }
}

impl Drop for HealthDriver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The loop's state, owned by its task.
struct Driver<E> {
    prober: Prober<E>,
    edge: Arc<E>,
    hysteresis: Hysteresis,
    anycast: Option<AnycastController<DnsSiteCount>>,
    reporter: DnsReporter,
    metrics: Arc<HealthMetrics>,
    status: watch::Sender<HealthStatus>,
    timeout: Duration,
}

impl<E: ProbedEdge> Driver<E> {
    async fn run(mut self, interval: Duration, mut leave: mpsc::Receiver<oneshot::Sender<()>>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                asked = leave.recv() => {
                    // `None`: the driver is gone without leaving (its drop aborts
                    // this task anyway); BIRD and DNS are left as they are.
                    if let Some(done) = asked {
                        self.leave().await;
                        let _ = done.send(());
                    }
                    return;
                }
                _ = ticker.tick() => self.cycle().await,
            }
        }
    }

    /// One probe and what follows from it.
    async fn cycle(&mut self) {
        let probe = self.prober.run().await;
        let now = Instant::now();
        self.metrics.record_probe(&probe.report, probe.lag);
        for failure in probe.report.failures() {
            tracing::debug!(check = %failure.name, detail = %failure.detail, elapsed = ?failure.elapsed, "health check failed");
        }
        // A drain that starts or ends is this cycle's change; the probe taken
        // meanwhile does not count toward rising again.
        let transition = probe
            .drain
            .and_then(|present| self.hysteresis.handle_drain(now, present))
            .or_else(|| self.hysteresis.handle_probe(now, &probe.report));
        let drained = transition
            .as_ref()
            .is_some_and(|t| t.to == HealthState::Disabled);
        self.record(transition, Some(probe.report));
        let state = self.hysteresis.state();
        self.act(state, drained).await;
        if drained {
            tracing::info!("drained: telling every client to reconnect elsewhere");
            self.edge.send_clients_elsewhere();
        }
    }

    /// SIGTERM: disabled for good, withdrawn and reported before returning.
    async fn leave(&mut self) {
        let transition = self.hysteresis.handle_shutdown(Instant::now());
        self.record(transition, None);
        self.act(HealthState::Disabled, true).await;
        tracing::info!("left anycast and DNS");
    }

    fn record(&mut self, transition: Option<Transition>, probe: Option<ProbeReport>) {
        if let Some(t) = &transition {
            self.metrics.transition(t.to);
        }
        let state = self.hysteresis.state();
        self.metrics.set_state(state);
        let probes = self.metrics.probes();
        self.status.send_modify(|status| {
            status.state = state;
            status.probes = probes;
            if probe.is_some() {
                status.last_probe = probe;
            }
            if transition.is_some() {
                status.last_transition = transition;
            }
        });
    }

    /// Puts BIRD and DNS in line with `state`; with `wait`, returns only once the
    /// reports are out (or `timeout` passed).
    async fn act(&mut self, state: HealthState, wait: bool) {
        if let Some(anycast) = &mut self.anycast {
            // Errors are logged and counted by the controller, which changed nothing.
            let _ = anycast.reconcile(state).await;
            self.metrics.set_anycast(anycast.metrics());
        }
        let seq = self.reporter.report(state);
        if wait && !self.reporter.wait_reported(seq, self.timeout * 2).await {
            tracing::warn!(%state, "not every tern dns took the health report in time");
        }
    }
}
