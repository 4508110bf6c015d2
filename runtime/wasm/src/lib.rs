//! The wasmtime host for Tern message functions.
//!
//! A message function is a WebAssembly component exporting the `tern:function@0.1.0`
//! world (`sdk/function/wit/world.wit`). This crate loads such components, checks
//! them, compiles them once (caching the machine code on disk), keeps warm instances
//! and calls them with per-call limits: a time deadline (epoch interruption; once the
//! wall-clock deadline passes, the thread's CPU time decides, so a preempted call is
//! not a timeout), a memory cap, a publish quota and a log quota.
//!
//! ```text
//!  Host::new(HostConfig)       one Engine (pooling allocator, epoch ticker thread),
//!     │                        one Linker with the `host` imports
//!     ├─ compile(bytes) ──▶ Component   checked (world, version, signatures, imports),
//!     │                                 compiled or loaded from the disk cache
//!     └─ function(name, &Component, Limits) ──▶ Function   InstancePre + warm pool
//!                                                  │
//!   call(&MessageRef) ──▶ take a warm instance ──▶ handle(message) ──▶ Invocation
//!   call_batch(&[MessageRef]) ──▶ handle-batch (or handle per message) ──▶ BatchInvocation
//!                              instance back to the pool; dropped after any error
//! ```
//!
//! Key types: [`Host`], [`Component`], [`Function`], [`MessageRef`] (what the edge
//! hands over, borrowed: lowered straight into the guest), [`Action`] and
//! [`Invocation`] (what comes back), [`CallError`] (why a call failed, with a
//! [`CallError::kind`] for metrics).
//!
//! What it does not do: bindings, chains and failure policies (the edge decides what a
//! [`CallError`] means for the message), deploys, or metrics export. It grants no WASI:
//! a function can publish, log, read the clock and ask which edge runs it, nothing else.
//!
//! Containment: nothing a function does can panic the host or hold a thread past its
//! deadline (two limits of wall time on an idle machine, at most 25 on a saturated one). A trap, timeout or memory refusal becomes a [`CallError`]; the instance
//! that failed is dropped, never reused, and the next call gets a fresh one.

mod cache;
mod check;
mod config;
mod deadline;
mod error;
mod function;
mod host;
mod imports;
mod lent;
mod message;

pub use config::{EdgeInfo, HostConfig, Interruption, Limits};
pub use error::{CallError, HostError, LoadError};
pub use function::{BatchInvocation, Function, Invocation};
pub use host::{Component, Host};
pub use lent::{BatchResource, MessageResource};
pub use message::{Action, MessageRef, Outgoing};

/// The `tern:function` version this host runs.
pub const WORLD_VERSION: &str = "0.1.0";
