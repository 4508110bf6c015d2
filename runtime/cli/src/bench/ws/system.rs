//! What the benchmark asks of the operating system: enough file descriptors for its
//! connections, a server's resident memory (now and at its peak), and what the
//! machine is.

use anyhow::{Context, bail};

/// File descriptors a process needs besides its connections (standard streams,
/// epoll, pipes to children, the runtime's own, a server's files).
pub(super) const SPARE_FDS: u64 = 256;

/// The open-files limit (`RLIMIT_NOFILE`) of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FdLimit {
    pub(super) soft: u64,
    pub(super) hard: u64,
}

/// Reads the open-files limit.
pub(super) fn fd_limit() -> anyhow::Result<FdLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    Ok(FdLimit {
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

/// Raises the soft open-files limit to at least `needed` (children started later
/// inherit it). Within the hard limit this always works; above it only a
/// privileged process may, and the error says what to do.
pub(super) fn raise_fd_limit(needed: u64) -> anyhow::Result<FdLimit> {
    let current = fd_limit()?;
    if current.soft >= needed {
        return Ok(current);
    }
    let wanted = libc::rlimit {
        rlim_cur: needed,
        rlim_max: current.hard.max(needed),
    };
    // SAFETY: `wanted` is a valid rlimit read by the call; nothing is retained.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        bail!(
            "{needed} open files are needed but RLIMIT_NOFILE is {} (hard {}) and cannot be \
             raised ({error}); run fewer connections or raise the hard limit (ulimit -Hn) first",
            current.soft,
            current.hard
        );
    }
    fd_limit()
}

/// The resident set size of process `pid` in KiB (`VmRSS` of /proc/PID/status).
pub(super) fn vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS")
}

/// The peak resident set size of process `pid` in KiB (`VmHWM` of /proc/PID/status):
/// since it started, or since [`reset_peak_rss`].
pub(super) fn vm_hwm_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM")
}

/// Resets the peak resident set size of process `pid` to its current one (writes
/// `5` to /proc/PID/clear_refs, Linux 4.0 and later), so that [`vm_hwm_kib`] tells
/// the peak of what follows. Allowed for a child process of the same user.
pub(super) fn reset_peak_rss(pid: u32) -> anyhow::Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, "5").with_context(|| format!("cannot write {path}"))
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_status_kib(&status, field).with_context(|| format!("{path} has no {field} line"))
}

/// The value of `FIELD:   N kB` in a /proc/PID/status text.
fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| {
        l.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    (fields.next() == Some("kB")).then_some(value)
}

/// `N cores (CPU model)`, as far as this process can tell.
pub(super) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cores} cores ({model})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_of_this_process() {
        let status = "Name:\ttern\nVmPeak:\t  100 kB\nVmHWM:\t   23456 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(12345));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(23456));
        assert_eq!(parse_status_kib("VmRSS:\t12 MB\n", "VmRSS"), None);
        assert_eq!(parse_status_kib("Name:\tx\n", "VmRSS"), None);
        assert_eq!(parse_status_kib("VmRSSx:\t12 kB\n", "VmRSS"), None);
        assert!(vm_rss_kib(std::process::id()).expect("readable") > 0);
        assert!(vm_hwm_kib(std::process::id()).expect("readable") > 0);
    }

    #[test]
    fn the_limit_never_goes_down() {
        let before = fd_limit().expect("readable");
        let after = raise_fd_limit(before.soft.min(64)).expect("already enough");
        assert_eq!(after, before);
    }
}
