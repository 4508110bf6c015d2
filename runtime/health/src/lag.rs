//! The event loop's lag: how late a timer on the edge's runtime fires. A task sleeps
//! [`LAG_TICK`] again and again and records how late each wake-up came. A runtime
//! blocked by a busy task wakes it late by as long as it was blocked.
//!
//! [`LagMonitor`] runs in the edge, whoever runs the health loop, and keeps two
//! figures that several readers can share without resetting anything:
//!
//! | figure  | what                                                                | on `/metrics`                           |
//! |---------|---------------------------------------------------------------------|-----------------------------------------|
//! | worst   | the worst lateness over the last one to two probe cycles (`interval` + `timeout`) | `tern_edge_event_loop_lag_seconds` (gauge) |
//! | stalls  | wake-ups later than `[health] max_event_loop_lag`, since the edge started | `tern_edge_event_loop_stalls_total` (counter) |
//!
//! The health loop's `load` check fails when `stalls` grew since the last probe, so
//! one stall fails exactly one probe, whether the loop runs in the edge or in
//! `tern health` (which reads both series from the edge's `/metrics`, see
//! [`EventLoop::from_metrics`]). The worst figure says how bad it was.
//!
//! ```text
//!  timer task: sleep_until(due) ─▶ late = now - due ─▶ Window::record (sans-IO)
//!                                                       ├─▶ worst of this window and the one before
//!                                                       └─▶ late > max_event_loop_lag? stalls += 1
//! ```

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tern_config::HealthConfig;
use tokio::task::JoinHandle;

/// How often the lag monitor's timer is due.
pub const LAG_TICK: Duration = Duration::from_millis(100);
/// The gauge of the worst lateness over the last probe cycle or two.
pub const LAG_SERIES: &str = "tern_edge_event_loop_lag_seconds";
/// The counter of wake-ups later than `max_event_loop_lag`.
pub const STALLS_SERIES: &str = "tern_edge_event_loop_stalls_total";

/// What the lag monitor has seen of an event loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventLoop {
    /// The worst lateness of the timer over the last one to two probe cycles.
    pub worst: Duration,
    /// Wake-ups later than `max_event_loop_lag` since the edge started.
    pub stalls: u64,
}

impl EventLoop {
    /// Reads [`LAG_SERIES`] and [`STALLS_SERIES`] from a Prometheus text exposition
    /// (the edge's `/metrics`); `None` unless both are there and well formed.
    pub fn from_metrics(text: &str) -> Option<EventLoop> {
        let worst: f64 = sample(text, LAG_SERIES)?.parse().ok()?;
        let worst = Duration::try_from_secs_f64(worst).ok()?;
        let stalls = sample(text, STALLS_SERIES)?.parse().ok()?;
        Some(EventLoop { worst, stalls })
    }
}

/// The value of the unlabelled sample `name` in a Prometheus text exposition.
pub(crate) fn sample<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        rest.strip_prefix(' ').map(str::trim)
    })
}

#[derive(Debug, Default)]
struct Seen {
    worst_micros: AtomicU64,
    stalls: AtomicU64,
}

/// Measures the lag of the runtime it was started on (see the module docs). The
/// timer task stops when the monitor is dropped.
#[derive(Debug)]
pub struct LagMonitor {
    seen: Arc<Seen>,
    task: JoinHandle<()>,
}

impl LagMonitor {
    /// Starts the timer task on the current tokio runtime: the worst lateness is kept
    /// for one to two `window`s, and wake-ups later than `threshold` count as stalls.
    pub fn start(window: Duration, threshold: Duration) -> LagMonitor {
        let seen = Arc::new(Seen::default());
        let task = tokio::spawn(watch(Arc::clone(&seen), window, threshold));
        LagMonitor { seen, task }
    }

    /// The monitor a health loop with `config` reads: its window is one probe cycle
    /// (`interval` + `timeout`), so that the worst lateness is normally seen by a probe
    /// (one delayed past that, by a slow BIRD say, may miss it; the stall count, which
    /// the check uses, misses nothing), and its threshold is `max_event_loop_lag`.
    pub fn for_health(config: &HealthConfig) -> LagMonitor {
        LagMonitor::start(config.interval + config.timeout, config.max_event_loop_lag)
    }

    /// What it has seen so far.
    pub fn event_loop(&self) -> EventLoop {
        EventLoop {
            worst: Duration::from_micros(self.seen.worst_micros.load(Ordering::Relaxed)),
            stalls: self.seen.stalls.load(Ordering::Relaxed),
        }
    }

    /// Appends [`LAG_SERIES`] and [`STALLS_SERIES`] to a Prometheus text exposition.
    pub fn render(&self, out: &mut String) {
        let seen = self.event_loop();
        let _ = writeln!(
            out,
            "# HELP {LAG_SERIES} Worst lateness of a {} ms timer on the edge's runtime over the last one to two health probe cycles.\n\
             # TYPE {LAG_SERIES} gauge\n{LAG_SERIES} {}",
            LAG_TICK.as_millis(),
            seen.worst.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "# HELP {STALLS_SERIES} Wake-ups of that timer later than health.max_event_loop_lag.\n\
             # TYPE {STALLS_SERIES} counter\n{STALLS_SERIES} {}",
            seen.stalls
        );
    }
}

impl Drop for LagMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The timer task: records every wake-up's lateness in a [`Window`] and publishes
/// what it says.
async fn watch(seen: Arc<Seen>, window: Duration, threshold: Duration) {
    let mut figures = Window::new(tokio::time::Instant::now().into_std(), window, threshold);
    loop {
        let due = tokio::time::Instant::now() + LAG_TICK;
        tokio::time::sleep_until(due).await;
        let now = tokio::time::Instant::now();
        let late = now.saturating_duration_since(due);
        let stalled = figures.record(now.into_std(), late);
        seen.worst_micros.store(
            u64::try_from(figures.worst().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if stalled {
            seen.stalls.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The lag figures over time (sans-IO): the worst lateness of the current window and
/// the one before it, so that a reader sees every wake-up for at least one whole
/// window, and whether a wake-up is a stall.
#[derive(Debug)]
struct Window {
    length: Duration,
    threshold: Duration,
    started: std::time::Instant,
    previous: Duration,
    current: Duration,
}

impl Window {
    fn new(now: std::time::Instant, length: Duration, threshold: Duration) -> Window {
        Window {
            length,
            threshold,
            started: now,
            previous: Duration::ZERO,
            current: Duration::ZERO,
        }
    }

    /// A wake-up at `now`, `late` after it was due; true when it is a stall (later
    /// than the threshold).
    fn record(&mut self, now: std::time::Instant, late: Duration) -> bool {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed >= self.length {
            // Two windows or more without a wake-up (all of it blocked): the one
            // before is empty. This late wake-up counts in the new window.
            self.previous = if elapsed >= self.length * 2 {
                Duration::ZERO
            } else {
                self.current
            };
            self.current = Duration::ZERO;
            self.started = now;
        }
        self.current = self.current.max(late);
        late > self.threshold
    }

    /// The worst lateness of this window and the one before.
    fn worst(&self) -> Duration {
        self.previous.max(self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks the only thread of a current-thread runtime for `long`, after letting
    /// the timer task arm its sleep, then lets it wake up late.
    async fn block_runtime(long: Duration) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        std::thread::sleep(long);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    /// Waits (at most 5 s) until `monitor` says `done`.
    async fn until(monitor: &LagMonitor, done: impl Fn(EventLoop) -> bool) -> EventLoop {
        for _ in 0..500 {
            let seen = monitor.event_loop();
            if done(seen) {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        monitor.event_loop()
    }

    #[test]
    fn the_worst_lateness_is_kept_one_to_two_windows_and_stalls_pass_the_threshold() {
        let ms = Duration::from_millis;
        let t0 = std::time::Instant::now();
        let mut window = Window::new(t0, ms(1000), ms(300));
        assert!(!window.record(t0 + ms(100), ms(2)));
        assert!(window.record(t0 + ms(900), ms(400)), "past the threshold");
        assert!(!window.record(t0 + ms(950), ms(300)), "at it: not a stall");
        assert_eq!(window.worst(), ms(400));
        // The next window still shows it …
        assert!(!window.record(t0 + ms(1100), ms(1)));
        assert_eq!(window.worst(), ms(400));
        assert!(!window.record(t0 + ms(1900), ms(50)));
        assert_eq!(window.worst(), ms(400));
        // … the one after does not.
        assert!(!window.record(t0 + ms(2150), ms(3)));
        assert_eq!(window.worst(), ms(50));
        // A gap of two windows or more: only the late wake-up that ends it counts.
        assert!(window.record(t0 + ms(5000), ms(2800)));
        assert_eq!(window.worst(), ms(2800));
        assert!(!window.record(t0 + ms(8000), ms(1)));
        assert_eq!(
            window.worst(),
            ms(1),
            "three windows on, nothing in between"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_blocked_runtime_is_a_stall() {
        // The timer is due up to one tick after the block starts, so a 500 ms block
        // makes it at least 400 ms late.
        let threshold = Duration::from_millis(300);
        let monitor = LagMonitor::start(Duration::from_secs(60), threshold);
        block_runtime(LAG_TICK * 5).await;
        let seen = until(&monitor, |s| s.stalls > 0).await;
        assert!(seen.stalls >= 1, "blocked 500 ms: {seen:?}");
        assert!(seen.worst > threshold, "blocked 500 ms: {seen:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn what_is_rendered_reads_back() {
        let monitor = LagMonitor::start(Duration::from_secs(5), Duration::from_millis(50));
        block_runtime(LAG_TICK * 2).await;
        let seen = until(&monitor, |s| s.stalls > 0).await;
        let mut text = String::from("tern_edge_event_loop_lag_seconds_max 9\n");
        monitor.render(&mut text);
        assert_eq!(EventLoop::from_metrics(&text), Some(seen), "{text}");
    }

    #[test]
    fn samples_are_read_by_their_exact_name_and_must_be_well_formed() {
        let both = "tern_edge_event_loop_lag_seconds 0.25\ntern_edge_event_loop_stalls_total 3\n";
        assert_eq!(
            EventLoop::from_metrics(both),
            Some(EventLoop {
                worst: Duration::from_millis(250),
                stalls: 3
            })
        );
        assert_eq!(
            EventLoop::from_metrics("tern_edge_event_loop_lag_seconds 0.25\n"),
            None
        );
        for bad in ["-1", "NaN", "+Inf", "x"] {
            let text = format!("{LAG_SERIES} {bad}\n{STALLS_SERIES} 3\n");
            assert_eq!(EventLoop::from_metrics(&text), None, "{bad}");
        }
        let text = format!("{LAG_SERIES} 0\n{STALLS_SERIES} -3\n");
        assert_eq!(EventLoop::from_metrics(&text), None);
        assert_eq!(sample("a_total 9\na 17\n", "a"), Some("17"));
        assert_eq!(sample("a x\n", "a"), Some("x"));
    }
}
