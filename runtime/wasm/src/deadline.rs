//! Call deadlines that do not fire because the machine was busy.
//!
//! Epoch interruption counts wall-clock time: a call preempted for 5 ms by the kernel
//! would miss a 2 ms deadline without having run at all, and under `fail-closed` a good
//! message would be refused. Reading the thread's CPU clock on every call would fix it
//! but costs a system call (~400 ns on a VM, more than a pass-through call), so the
//! clock is read only once the wall-clock deadline has passed:
//!
//! ```text
//!  wall deadline ──▶ callback: mark the thread's CPU time, extend by one limit
//!  next deadline ──▶ CPU since the mark ≥ half the limit?  ── yes ─▶ Interrupt (timeout)
//!                      │ no: the thread was mostly waiting for a CPU
//!                      └──▶ extend by one limit, up to MAX_WINDOWS extensions, then Interrupt
//! ```
//!
//! So a function that really computes is stopped after about twice its limit of wall
//! time on an idle machine (and after at most `MAX_WINDOWS + 1` limits on a saturated
//! one); a call that was only preempted finishes. Fuel interruption needs none of this:
//! it counts the guest's own instructions.

use std::time::Duration;

use wasmtime::UpdateDeadline;

/// Extensions granted to a call whose thread gets less than half a CPU before it is
/// stopped anyway: 24 more limits (48 ms for the default 2 ms).
const MAX_WINDOWS: u32 = 24;

/// The deadline state of the call in progress on one instance.
#[derive(Debug, Default)]
pub(crate) struct Deadline {
    /// The call's time limit.
    limit: Duration,
    /// Epoch ticks that stand for `limit`.
    ticks: u64,
    /// The thread's CPU time when the wall-clock deadline first passed.
    overrun_mark: Option<Duration>,
    /// Extensions granted so far.
    windows: u32,
}

impl Deadline {
    /// Starts a call limited to `limit`, which is `ticks` epoch ticks.
    pub(crate) fn arm(&mut self, limit: Duration, ticks: u64) {
        *self = Deadline {
            limit,
            ticks: ticks.max(1),
            overrun_mark: None,
            windows: 0,
        };
    }

    /// The epoch deadline passed: extend it or stop the call.
    pub(crate) fn on_epoch_deadline(&mut self) -> UpdateDeadline {
        self.decide(thread_cpu_time())
    }

    /// [`Deadline::on_epoch_deadline`] with the thread's CPU time given.
    fn decide(&mut self, cpu_now: Duration) -> UpdateDeadline {
        let Some(mark) = self.overrun_mark else {
            self.overrun_mark = Some(cpu_now);
            self.windows = 1;
            return UpdateDeadline::Continue(self.ticks);
        };
        let used_since_mark = cpu_now.saturating_sub(mark);
        if used_since_mark >= self.limit / 2 || self.windows >= MAX_WINDOWS {
            return UpdateDeadline::Interrupt;
        }
        self.windows += 1;
        UpdateDeadline::Continue(self.ticks)
    }
}

/// CPU time the calling thread has used.
#[allow(unsafe_code)]
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on
    // every Linux since 2.6.12.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if status != 0 {
        // Cannot happen with a valid clock id; report "no CPU used" so the call falls
        // back to the wall-clock cap of MAX_WINDOWS extensions.
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_millis(2);

    fn armed() -> Deadline {
        let mut deadline = Deadline::default();
        deadline.arm(LIMIT, 3);
        deadline
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_first_overrun_extends_by_one_limit() {
        let mut deadline = armed();
        assert!(matches!(
            deadline.decide(ms(100)),
            UpdateDeadline::Continue(3)
        ));
    }

    #[test]
    fn a_busy_call_is_stopped_at_the_second_deadline() {
        let mut deadline = armed();
        deadline.decide(ms(100));
        assert!(matches!(
            deadline.decide(ms(101)),
            UpdateDeadline::Interrupt
        ));
    }

    #[test]
    fn a_starved_call_is_extended_until_it_has_used_half_a_limit() {
        let mut deadline = armed();
        deadline.decide(ms(100));
        let mut cpu = ms(100);
        for _ in 0..5 {
            cpu += Duration::from_micros(100);
            assert!(matches!(deadline.decide(cpu), UpdateDeadline::Continue(3)));
        }
        // 500 µs so far; 500 more reaches half the limit.
        cpu += Duration::from_micros(500);
        assert!(matches!(deadline.decide(cpu), UpdateDeadline::Interrupt));
    }

    #[test]
    fn a_call_that_never_gets_a_cpu_is_stopped_after_max_windows() {
        let mut deadline = armed();
        let mut extensions = 0;
        while let UpdateDeadline::Continue(_) = deadline.decide(ms(100)) {
            extensions += 1;
            assert!(extensions <= MAX_WINDOWS, "never stopped");
        }
        assert_eq!(extensions, MAX_WINDOWS);
    }

    #[test]
    fn arming_again_forgets_the_last_call() {
        let mut deadline = armed();
        deadline.decide(ms(100));
        deadline.arm(LIMIT, 3);
        assert!(matches!(
            deadline.decide(ms(200)),
            UpdateDeadline::Continue(3)
        ));
    }

    #[test]
    fn the_thread_cpu_clock_moves_when_the_thread_works() {
        let before = thread_cpu_time();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        assert!(thread_cpu_time() > before, "{x}");
    }
}
