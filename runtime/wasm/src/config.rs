//! What an operator sets: the host's shape ([`HostConfig`]) and each function's limits
//! ([`Limits`]).

use std::path::PathBuf;
use std::time::Duration;

use wasmtime::component::{ComponentType, Lower};

/// How the host is built: one per edge process.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// Where compiled machine code is kept between runs (`None`: compile every time).
    /// Entries are keyed by the component's SHA-256 and the engine's configuration, so
    /// a new wasmtime version or setting never loads stale code.
    pub cache_dir: Option<PathBuf>,
    /// Most instances alive at once, over every function (the pooling allocator's
    /// size). Default 1000.
    pub max_instances: u32,
    /// Largest linear memory any instance may have, in bytes: the pool's slot size and
    /// the ceiling for every function's [`Limits::memory_bytes`]. Default 64 MiB.
    pub max_memory_bytes: usize,
    /// How often the epoch advances (the resolution of call deadlines). Default 1 ms.
    pub epoch_tick: Duration,
    /// What a function's `edge()` import answers.
    pub edge: EdgeInfo,
    /// How long-running calls are stopped. Default [`Interruption::Epoch`].
    pub interruption: Interruption,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_instances: 1000,
            max_memory_bytes: 64 << 20,
            epoch_tick: Duration::from_millis(1),
            edge: EdgeInfo::default(),
            interruption: Interruption::Epoch,
        }
    }
}

/// How a call that runs too long is stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Interruption {
    /// A ticker thread advances the engine's epoch every [`HostConfig::epoch_tick`];
    /// a call gets `ceil(timeout / tick) + 1` ticks. Wall-clock based, cheap checks.
    #[default]
    Epoch,
    /// Every call gets `timeout in ms * per_ms` units of fuel (about one per wasm
    /// instruction): deterministic, but counts work rather than time, and costs more
    /// per instruction. Running out is reported as [`crate::CallError::Timeout`].
    Fuel {
        /// Fuel units granted per millisecond of [`Limits::timeout`].
        per_ms: u64,
    },
}

/// The edge a function runs on (what its `edge()` import answers).
#[derive(Clone, Debug, Default, PartialEq, Eq, ComponentType, Lower)]
#[component(record)]
pub struct EdgeInfo {
    /// The edge's name (its POP).
    pub name: String,
    /// The edge's region.
    pub region: String,
}

/// Per-function limits, checked on every call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest a call may run (per message in a batch). Default 2 ms.
    pub timeout: Duration,
    /// Largest linear memory an instance may grow to, in bytes; at most
    /// [`HostConfig::max_memory_bytes`]. Default 16 MiB.
    pub memory_bytes: usize,
    /// Most `publish` calls accepted per message; the rest are refused (the guest
    /// gets an error, the call goes on). Default 16.
    pub max_publishes: usize,
    /// Most `log` lines written per message; the rest are counted. Default 16.
    pub max_log_lines: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(2),
            memory_bytes: 16 << 20,
            max_publishes: 16,
            max_log_lines: 16,
        }
    }
}
