//! The host: one wasmtime Engine (pooling allocator, epoch interruption), one Linker
//! with the `host` imports, the epoch ticker thread and the disk cache.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::cache::{DiskCache, sha256_hex};
use crate::check::{self, Exports};
use crate::config::{EdgeInfo, HostConfig, Interruption, Limits};
use crate::error::{HostError, LoadError};
use crate::function::Function;
use crate::imports::{self, CallState, MAX_TABLE_ELEMENTS};
use crate::lent;

/// Core instances one component instance may hold (a Rust function has the main
/// module and a couple of small wit-component shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;
/// Native stack wasm code may use per call, in bytes (wasmtime's default).
const MAX_WASM_STACK: usize = 512 << 10;
/// Tables one component instance may hold (the main module's and the shims').
const TABLES_PER_COMPONENT: u32 = 4;

/// The wasmtime host of one edge. Cloning shares it; the epoch ticker thread stops
/// when the last clone and the last [`Function`] made by it are dropped.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

/// What every function made by a host shares.
pub(crate) struct HostInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<CallState>,
    pub(crate) edge: Arc<EdgeInfo>,
    pub(crate) interruption: Interruption,
    pub(crate) epoch_tick: Duration,
    max_memory_bytes: usize,
    cache: Option<DiskCache>,
    _ticker: Option<Ticker>,
}

impl Host {
    /// Builds the engine, the linker and (with [`Interruption::Epoch`]) the ticker.
    pub fn new(config: HostConfig) -> Result<Host, HostError> {
        let HostConfig {
            cache_dir,
            max_instances,
            max_memory_bytes,
            epoch_tick,
            edge,
            interruption,
        } = config;
        if max_instances == 0 {
            return Err(HostError::Config("max_instances must be at least 1".into()));
        }
        if max_memory_bytes < 1 << 16 {
            return Err(HostError::Config(format!(
                "max_memory_bytes is {max_memory_bytes}; a WebAssembly memory needs at least one 64 KiB page"
            )));
        }
        if epoch_tick.is_zero() {
            return Err(HostError::Config(
                "epoch_tick must be more than zero".into(),
            ));
        }
        if interruption == (Interruption::Fuel { per_ms: 0 }) {
            return Err(HostError::Config(
                "fuel per millisecond must be more than zero".into(),
            ));
        }

        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(max_instances)
            .total_core_instances(max_instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
            .total_memories(max_instances)
            .total_tables(max_instances.saturating_mul(TABLES_PER_COMPONENT))
            .max_memory_size(max_memory_bytes)
            .table_elements(MAX_TABLE_ELEMENTS);
        let mut engine_config = Config::new();
        engine_config
            .wasm_component_model(true)
            // Synchronous calls only: without this every call sets up concurrency
            // state (DESIGN §7: ~220 ns vs ~600 ns per call).
            .concurrency_support(false)
            // A trap's message is enough; backtraces cost on every trap.
            .wasm_backtrace_max_frames(None)
            // Deep recursion traps as a stack overflow well inside the caller's
            // thread stack (tokio workers have 2 MiB).
            .max_wasm_stack(MAX_WASM_STACK)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        match interruption {
            Interruption::Epoch => engine_config.epoch_interruption(true),
            Interruption::Fuel { .. } => engine_config.consume_fuel(true),
        };
        let engine =
            Engine::new(&engine_config).map_err(|e| HostError::Engine(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        imports::add_to_linker(&mut linker)
            .and_then(|()| lent::add_to_linker(&mut linker))
            .map_err(|e| HostError::Engine(format!("{e:#}")))?;

        let ticker = match interruption {
            Interruption::Epoch => Some(Ticker::start(engine.clone(), epoch_tick)?),
            Interruption::Fuel { .. } => None,
        };
        let cache = cache_dir.map(|dir: PathBuf| DiskCache::new(dir, &engine));
        Ok(Host {
            inner: Arc::new(HostInner {
                engine,
                linker,
                edge: Arc::new(edge),
                interruption,
                epoch_tick,
                max_memory_bytes,
                cache,
                _ticker: ticker,
            }),
        })
    }

    /// Checks and compiles a component, or loads its machine code from the disk
    /// cache. Refuses anything that is not a `tern:function@0.1.0` component granted
    /// only the `host` imports, saying what is wrong.
    ///
    /// Compiling takes milliseconds to seconds of CPU: call it off the message path.
    pub fn compile(&self, wasm: &[u8]) -> Result<Component, LoadError> {
        check::header(wasm)?;
        let sha256_hex = sha256_hex(wasm);
        let engine = &self.inner.engine;
        let cached = self
            .inner
            .cache
            .as_ref()
            .and_then(|cache| cache.load(engine, &sha256_hex));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(component) => component,
            None => wasmtime::component::Component::new(engine, wasm)
                .map_err(|e| LoadError::Invalid(format!("{e:#}")))?,
        };
        let exports = check::check(engine, &component)?;
        if let (Some(cache), false) = (&self.inner.cache, from_cache) {
            cache.store(&sha256_hex, &component);
        }
        Ok(Component {
            inner: Arc::new(ComponentInner {
                component,
                exports,
                sha256_hex,
                from_cache,
            }),
        })
    }

    /// A callable function: `component` pre-linked, with a pool of warm instances.
    /// One instance is made now, so a component whose start code fails or whose
    /// memory does not fit `limits` is refused here rather than on its first message.
    pub fn function(
        &self,
        name: &str,
        component: &Component,
        limits: Limits,
    ) -> Result<Function, LoadError> {
        if limits.memory_bytes > self.inner.max_memory_bytes {
            return Err(LoadError::Limits(format!(
                "memory_bytes {} is more than the host's max_memory_bytes {}",
                limits.memory_bytes, self.inner.max_memory_bytes
            )));
        }
        if limits.timeout.is_zero() {
            return Err(LoadError::Limits("timeout must be more than zero".into()));
        }
        if !Engine::same(component.inner.component.engine(), &self.inner.engine) {
            return Err(LoadError::Instantiate(
                "the component was compiled by another host".into(),
            ));
        }
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component.inner.component)
            .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
        Function::new(
            Arc::clone(&self.inner),
            name,
            component.clone(),
            pre,
            limits,
        )
    }
}

/// A checked, compiled component; cheap to clone.
#[derive(Clone)]
pub struct Component {
    inner: Arc<ComponentInner>,
}

struct ComponentInner {
    component: wasmtime::component::Component,
    exports: Exports,
    sha256_hex: String,
    from_cache: bool,
}

impl Component {
    /// SHA-256 of the component's bytes, lower-case hex: its identity in the cache
    /// and in deploys.
    pub fn sha256_hex(&self) -> &str {
        &self.inner.sha256_hex
    }

    /// Whether the component exports `handle-batch`.
    pub fn has_batch(&self) -> bool {
        self.inner.exports.handle_batch.is_some()
    }

    /// Whether the machine code came from the disk cache rather than a compile.
    pub fn compiled_from_cache(&self) -> bool {
        self.inner.from_cache
    }

    pub(crate) fn exports(&self) -> Exports {
        self.inner.exports
    }
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Component")
            .field("sha256", &self.inner.sha256_hex)
            .field("has_batch", &self.has_batch())
            .field("from_cache", &self.inner.from_cache)
            .finish()
    }
}

/// The thread that advances the engine's epoch every tick; stopped and joined on drop.
struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine, tick: Duration) -> Result<Ticker, HostError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tern-wasm-epoch".into())
            .spawn(move || {
                // Any message or a dropped sender stops the thread.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    engine.increment_epoch();
                }
            })
            .map_err(|e| HostError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(Ticker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
