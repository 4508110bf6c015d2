//! Checks shared by every config section: numbers, sizes and durations in range,
//! socket addresses. Each records its problem under the key's path and returns `None`,
//! so that `compile()` goes on and reports every problem at once.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::error::Problems;
use crate::units::{RawByteSize, parse_duration, show_duration};

/// Parses `IP:PORT`, saying what is wrong in terms an operator recognises; the
/// messages show `default` as an example.
pub(crate) fn socket_addr(text: &str, default: SocketAddr) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let port = default.port();
    let example = format!("expected IP:PORT like \"{default}\" or \"[::1]:{port}\"");
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?} has no port: {example}"));
    };
    match port.parse::<u64>() {
        Ok(port) if port > u64::from(u16::MAX) => {
            return Err(format!("port {port} out of range (0..=65535)"));
        }
        Ok(_) => {}
        Err(_) => return Err(format!("{port:?} is not a port number: {example}")),
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<std::net::IpAddr>().is_err() {
        return Err(format!(
            "{host:?} is not an IP address (host names are not resolved): {example}"
        ));
    }
    Err(format!("{text:?} is not a socket address: {example}"))
}

/// Checks `value` against `range`, recording why not under `path`.
pub(crate) fn in_range<T: PartialOrd + Copy>(
    problems: &mut Problems,
    path: &str,
    value: T,
    range: &RangeInclusive<T>,
    show: impl Fn(T) -> String,
) -> Option<T> {
    if value < *range.start() {
        problems.push(
            path,
            format!(
                "{} is below the minimum of {}",
                show(value),
                show(*range.start())
            ),
        );
        None
    } else if value > *range.end() {
        problems.push(
            path,
            format!(
                "{} is above the maximum of {}",
                show(value),
                show(*range.end())
            ),
        );
        None
    } else {
        Some(value)
    }
}

/// A byte size in `range`, `default` when absent, `None` (problem recorded) when invalid.
pub(crate) fn bytes(
    problems: &mut Problems,
    path: &str,
    raw: Option<&RawByteSize>,
    default: u64,
    range: RangeInclusive<u64>,
) -> Option<u64> {
    let Some(raw) = raw else {
        return Some(default);
    };
    match raw.to_bytes() {
        Ok(n) => in_range(problems, path, n, &range, |n| n.to_string()),
        Err(message) => {
            problems.push(path, message);
            None
        }
    }
}

/// [`bytes`] for sizes held as `usize` (buffer lengths).
pub(crate) fn bytes_usize(
    problems: &mut Problems,
    path: &str,
    raw: Option<&RawByteSize>,
    default: usize,
    range: RangeInclusive<u64>,
) -> Option<usize> {
    let default = u64::try_from(default).unwrap_or(u64::MAX);
    let n = bytes(problems, path, raw, default, range)?;
    fits_usize(problems, path, n)
}

/// A count in `range`, `default` when absent, `None` (problem recorded) when invalid.
pub(crate) fn count(
    problems: &mut Problems,
    path: &str,
    raw: Option<i64>,
    default: usize,
    range: RangeInclusive<u64>,
) -> Option<usize> {
    let Some(raw) = raw else {
        return Some(default);
    };
    let Ok(n) = u64::try_from(raw) else {
        problems.push(path, format!("{raw} is negative"));
        return None;
    };
    let n = in_range(problems, path, n, &range, |n| n.to_string())?;
    fits_usize(problems, path, n)
}

pub(crate) fn fits_usize(problems: &mut Problems, path: &str, n: u64) -> Option<usize> {
    match usize::try_from(n) {
        Ok(n) => Some(n),
        Err(_) => {
            problems.push(path, format!("{n} does not fit in this platform's memory"));
            None
        }
    }
}

/// A duration in `range`, `default` when absent, `None` (problem recorded) when invalid.
pub(crate) fn duration(
    problems: &mut Problems,
    path: &str,
    raw: Option<&str>,
    default: Duration,
    range: RangeInclusive<Duration>,
) -> Option<Duration> {
    let Some(text) = raw else {
        return Some(default);
    };
    match parse_duration(text) {
        Ok(d) => in_range(problems, path, d, &range, show_duration),
        Err(message) => {
            problems.push(path, message);
            None
        }
    }
}
