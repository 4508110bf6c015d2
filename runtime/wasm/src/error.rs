//! The three fallible boundaries: building the host (operator's config), loading a
//! component (the function author's component, or an operator's limits), and calling a
//! function (the function's behaviour on one message).

use std::time::Duration;

/// The host could not be built: the operator's [`crate::HostConfig`] or the machine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// A setting is out of range.
    #[error("host config: {0}")]
    Config(String),
    /// wasmtime refused the engine configuration (for example: not enough virtual
    /// address space for the instance pool).
    #[error("cannot build the WebAssembly engine: {0}")]
    Engine(String),
}

/// A component was refused. Every variant except [`LoadError::Limits`] is the
/// function author's to fix; retrying the same bytes gives the same answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (it does not start with the `\\0asm` magic bytes)")]
    NotWasm,
    /// The bytes are a core WebAssembly module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component: build the function with `tern fn build`, which wraps the module into a component"
    )]
    CoreModule,
    /// The bytes claim to be a component but do not validate or compile.
    #[error("invalid component (corrupt or unsupported): {0}")]
    Invalid(String),
    /// The component is built for another version of the `tern:function` world.
    #[error(
        "built for tern:function@{found}; this edge supports tern:function@{}",
        crate::WORLD_VERSION
    )]
    WrongVersion {
        /// The version the component names.
        found: String,
    },
    /// The component does not export the handler interface.
    #[error(
        "the component does not export tern:function/handler@{}; it exports: {exports}",
        crate::WORLD_VERSION
    )]
    MissingExport {
        /// What it does export, comma-separated (`nothing` when empty).
        exports: String,
    },
    /// An export or the host import has a different type than this edge's world.
    #[error("`{name}` has type {found}; this edge expects {expected}")]
    Signature {
        /// The export or import, e.g. `tern:function/handler@0.1.0#handle`.
        name: String,
        /// Its type in the component.
        found: String,
        /// The type this edge's world gives it.
        expected: String,
    },
    /// The component imports something the host does not grant.
    #[error(
        "the component imports {}; a Tern function may import only tern:function/host@{} (no WASI)",
        .0.join(", "),
        crate::WORLD_VERSION
    )]
    ForbiddenImports(Vec<String>),
    /// The component was accepted but an instance could not be made (its start code
    /// trapped, ran too long, or needs more memory than its limit).
    #[error("the function cannot be instantiated: {0}")]
    Instantiate(String),
    /// The operator's limits for this function are out of range (operator config).
    #[error("function limits: {0}")]
    Limits(String),
}

/// One call failed. The function is at fault, except [`CallError::Instantiate`] when
/// the host's instance pool is exhausted (load). The instance involved is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The call ran past its deadline and was interrupted.
    #[error("function ran longer than its {limit:?} limit")]
    Timeout {
        /// The deadline the call had.
        limit: Duration,
    },
    /// The function needed more memory than its limit (a growth was refused and the
    /// function then failed).
    #[error("function needed more than its {limit} bytes of memory")]
    MemoryLimit {
        /// The memory cap of the instance, in bytes.
        limit: usize,
    },
    /// The function trapped: a panic (`unreachable`), a stack overflow, an
    /// out-of-bounds access, ...
    #[error("function trapped: {0}")]
    Trap(String),
    /// No instance could be made for the call (pool exhausted, start code failed).
    #[error("function instance could not be created: {0}")]
    Instantiate(String),
    /// The function answered something the host cannot use (an invalid value, or a
    /// batch answer with the wrong number of actions).
    #[error("function answered badly: {0}")]
    BadAnswer(String),
}

impl CallError {
    /// A short, fixed label for metrics: `timeout`, `memory`, `trap`, `instantiate` or
    /// `bad-answer`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Timeout { .. } => "timeout",
            CallError::MemoryLimit { .. } => "memory",
            CallError::Trap(_) => "trap",
            CallError::Instantiate(_) => "instantiate",
            CallError::BadAnswer(_) => "bad-answer",
        }
    }
}
