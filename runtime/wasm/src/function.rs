//! A callable function: `InstancePre` plus a small pool of warm instances.
//!
//! ```text
//!  call ─▶ pool.pop() or instantiate ─▶ arm limits ─▶ lend message ─▶ handle(borrow<message>)
//!        ─▶ end the loan ─┬─ Ok: instance back to the pool
//!                         └─ Err: instance dropped, CallError
//! ```
//!
//! A warm instance is a `Store` with one component instance in it and the typed
//! functions of its exports, looked up and type-checked once. Calls on different threads take different instances;
//! the pool's lock is held only to pop or push.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::component::{InstancePre, Resource, TypedFunc};
use wasmtime::{Store, Trap};

use crate::config::{Interruption, Limits};
use crate::error::{CallError, LoadError};
use crate::host::{Component, HostInner};
use crate::imports::CallState;
use crate::lent::{BatchResource, MessageResource};
use crate::message::{Action, MessageRef, Outgoing};

/// What one call decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The message's fate.
    pub action: Action,
    /// Messages to publish, in the order the function published them, each with its
    /// channel (already checked to be a valid, non-system channel name). Empty when
    /// the action is [`Action::Reject`].
    pub publishes: Vec<(String, Outgoing)>,
    /// How long the call took, instance included.
    pub duration: Duration,
}

/// What one batch call decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInvocation {
    /// One action per message, in order.
    pub actions: Vec<Action>,
    /// Messages to publish, in order. With `handle-batch` they cannot be told apart by
    /// message, so they are kept even when some message was rejected; without it
    /// (one `handle` per message) a rejected message's publishes are left out, as in
    /// [`Function::call`].
    pub publishes: Vec<(String, Outgoing)>,
    /// How long the whole batch took.
    pub duration: Duration,
}

/// A function ready to be called from any thread; cheap to clone.
#[derive(Clone)]
pub struct Function {
    inner: Arc<FunctionInner>,
}

struct FunctionInner {
    name: Arc<str>,
    limits: Limits,
    component: Component,
    pre: InstancePre<CallState>,
    host: Arc<HostInner>,
    /// The epoch ticks (or fuel) one message gets, worked out once.
    single_budget: u64,
    warm: Mutex<Vec<Warm>>,
    warm_cap: usize,
}

/// One instance, ready to take a call.
struct Warm {
    store: Store<CallState>,
    handle: HandleFunc,
    handle_batch: Option<HandleBatchFunc>,
}

/// The least time instantiation (start code included) gets.
const START_TIMEOUT: Duration = Duration::from_millis(100);

/// `handle` and `handle-batch` as the host calls them: a borrow of the lent message(s).
type HandleFunc = TypedFunc<(Resource<MessageResource>,), (Action,)>;
type HandleBatchFunc = TypedFunc<(Resource<BatchResource>,), (Vec<Action>,)>;

/// The handle every call lends: the host has one message (or batch) out at a time, so
/// the getters need no table lookup.
const LENT: u32 = 0;

impl Function {
    pub(crate) fn new(
        host: Arc<HostInner>,
        name: &str,
        component: Component,
        pre: InstancePre<CallState>,
        limits: Limits,
    ) -> Result<Function, LoadError> {
        let single_budget = budget(&host, limits.timeout);
        let warm_cap = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
        let function = Function {
            inner: Arc::new(FunctionInner {
                name: name.into(),
                limits,
                component,
                pre,
                host,
                single_budget,
                warm: Mutex::new(Vec::with_capacity(warm_cap)),
                warm_cap,
            }),
        };
        let first = function
            .instantiate()
            .map_err(|e| LoadError::Instantiate(e.to_string()))?;
        function.give_back(first);
        Ok(function)
    }

    /// The name it was loaded under (used in its log lines).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its limits.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// The component it runs.
    pub fn component(&self) -> &Component {
        &self.inner.component
    }

    /// Runs `handle` on one message.
    pub fn call(&self, message: &MessageRef<'_>) -> Result<Invocation, CallError> {
        let started = Instant::now();
        let mut warm = self.take()?;
        let limit = self.arm(&mut warm.store, 1);
        warm.store
            .data_mut()
            .lent
            .lend(std::slice::from_ref(message));
        let answer = warm
            .handle
            .call(&mut warm.store, (Resource::new_borrow(LENT),));
        warm.store.data_mut().lent.clear();
        match answer {
            Ok((action,)) => {
                let mut publishes = warm.store.data_mut().finish();
                if matches!(action, Action::Reject(_)) {
                    publishes.clear();
                }
                self.give_back(warm);
                Ok(Invocation {
                    action,
                    publishes,
                    duration: started.elapsed(),
                })
            }
            Err(error) => Err(self.failed(warm, &error, limit)),
        }
    }

    /// Runs `handle-batch` on `messages` (or `handle` on each, in order, when the
    /// component has no batch export). The time limit and the publish and log quotas
    /// scale with the number of messages. On error no message has an action; call
    /// them one by one to find the one at fault.
    pub fn call_batch(&self, messages: &[MessageRef<'_>]) -> Result<BatchInvocation, CallError> {
        let started = Instant::now();
        if messages.is_empty() {
            return Ok(BatchInvocation {
                actions: Vec::new(),
                publishes: Vec::new(),
                duration: started.elapsed(),
            });
        }
        let mut warm = self.take()?;
        let Some(handle_batch) = warm.handle_batch else {
            return self.call_each(warm, messages, started);
        };
        let limit = self.arm(&mut warm.store, messages.len());
        warm.store.data_mut().lent.lend(messages);
        let answer = handle_batch.call(&mut warm.store, (Resource::new_borrow(LENT),));
        warm.store.data_mut().lent.clear();
        match answer {
            Ok((actions,)) if actions.len() == messages.len() => {
                let publishes = warm.store.data_mut().finish();
                self.give_back(warm);
                Ok(BatchInvocation {
                    actions,
                    publishes,
                    duration: started.elapsed(),
                })
            }
            Ok((actions,)) => {
                warm.store.data_mut().finish();
                Err(CallError::BadAnswer(format!(
                    "handle-batch answered {} actions for {} messages",
                    actions.len(),
                    messages.len()
                )))
            }
            Err(error) => Err(self.failed(warm, &error, limit)),
        }
    }

    /// The batch fallback: `handle` per message on one instance.
    fn call_each(
        &self,
        mut warm: Warm,
        messages: &[MessageRef<'_>],
        started: Instant,
    ) -> Result<BatchInvocation, CallError> {
        let handle = warm.handle;
        let mut actions = Vec::with_capacity(messages.len());
        let mut publishes = Vec::new();
        for message in messages {
            let limit = self.arm(&mut warm.store, 1);
            warm.store
                .data_mut()
                .lent
                .lend(std::slice::from_ref(message));
            let answer = handle.call(&mut warm.store, (Resource::new_borrow(LENT),));
            warm.store.data_mut().lent.clear();
            match answer {
                Ok((action,)) => {
                    let published = warm.store.data_mut().finish();
                    if !matches!(action, Action::Reject(_)) {
                        publishes.extend(published);
                    }
                    actions.push(action);
                }
                Err(error) => return Err(self.failed(warm, &error, limit)),
            }
        }
        self.give_back(warm);
        Ok(BatchInvocation {
            actions,
            publishes,
            duration: started.elapsed(),
        })
    }

    /// A warm instance, or a new one when none is idle.
    fn take(&self) -> Result<Warm, CallError> {
        let idle = self.inner.warm.lock().pop();
        match idle {
            Some(warm) => Ok(warm),
            None => self.instantiate(),
        }
    }

    /// Keeps `warm` for the next call unless the pool is full.
    fn give_back(&self, warm: Warm) {
        let mut pool = self.inner.warm.lock();
        if pool.len() < self.inner.warm_cap {
            pool.push(warm);
            return;
        }
        drop(pool);
        drop(warm);
    }

    /// Sets the deadline and quotas for a call over `messages` messages; answers the
    /// time limit it stands for.
    fn arm(&self, store: &mut Store<CallState>, messages: usize) -> Duration {
        let inner = &*self.inner;
        store.data_mut().begin(&inner.limits, messages);
        let (limit, units) = if messages == 1 {
            (inner.limits.timeout, inner.single_budget)
        } else {
            let limit = inner
                .limits
                .timeout
                .saturating_mul(u32::try_from(messages).unwrap_or(u32::MAX));
            (limit, budget(&inner.host, limit))
        };
        self.set_budget(store, limit, units);
        limit
    }

    /// Epoch ticks or fuel for the next call, limited to `limit`.
    fn set_budget(&self, store: &mut Store<CallState>, limit: Duration, units: u64) {
        match self.inner.host.interruption {
            Interruption::Epoch => {
                store.data_mut().deadline.arm(limit, units);
                store.set_epoch_deadline(units);
            }
            Interruption::Fuel { .. } => store
                .set_fuel(units)
                .expect("fuel is enabled in engines built for Interruption::Fuel"),
        }
    }

    /// A fresh instance, its exports looked up and type-checked once.
    fn instantiate(&self) -> Result<Warm, CallError> {
        let inner = &*self.inner;
        let state = CallState::new(
            Arc::clone(&inner.name),
            Arc::clone(&inner.host.edge),
            &inner.limits,
        );
        let mut store = Store::new(&inner.host.engine, state);
        store.limiter(|state| state as &mut dyn wasmtime::ResourceLimiter);
        // Past the wall-clock deadline, deadline.rs decides by the thread's CPU time.
        store
            .epoch_deadline_callback(|mut store| Ok(store.data_mut().deadline.on_epoch_deadline()));
        // Start code gets the budget of one message, but at least START_TIMEOUT: a
        // busy machine must not refuse a deploy because instantiating was preempted.
        store.data_mut().begin(&inner.limits, 1);
        let limit = inner.limits.timeout.max(START_TIMEOUT);
        self.set_budget(&mut store, limit, budget(&inner.host, limit));
        let instance = match inner.pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(error) => {
                return Err(
                    match classify(store.data_mut(), &error, limit, &inner.limits) {
                        Some(failure) => failure,
                        None => CallError::Instantiate(format!("{error:#}")),
                    },
                );
            }
        };
        store.data_mut().finish();
        let exports = inner.component.exports();
        let missing = || CallError::Instantiate("an export checked at load is missing".into());
        // The one type check, which also tells the `message` and `batch` resources
        // apart (check.rs renders both as `borrow<resource>`).
        let handle = instance
            .get_func(&mut store, exports.handle)
            .ok_or_else(missing)?
            .typed::<(Resource<MessageResource>,), (Action,)>(&store)
            .map_err(|e| CallError::Instantiate(format!("handle: {e:#}")))?;
        let handle_batch = match exports.handle_batch {
            Some(index) => Some(
                instance
                    .get_func(&mut store, index)
                    .ok_or_else(missing)?
                    .typed::<(Resource<BatchResource>,), (Vec<Action>,)>(&store)
                    .map_err(|e| CallError::Instantiate(format!("handle-batch: {e:#}")))?,
            ),
            None => None,
        };
        Ok(Warm {
            store,
            handle,
            handle_batch,
        })
    }

    /// Turns a failed call into a [`CallError`], dropping the instance.
    fn failed(&self, mut warm: Warm, error: &wasmtime::Error, limit: Duration) -> CallError {
        let state = warm.store.data_mut();
        let failure = classify(state, error, limit, &self.inner.limits)
            .unwrap_or_else(|| CallError::BadAnswer(format!("{error:#}")));
        tracing::debug!(function = %self.inner.name, kind = failure.kind(), error = %failure, "function call failed; instance dropped");
        failure
    }
}

/// Traps, timeouts and refused memory as a [`CallError`]; `None` for other errors
/// (values the host could not lift or lower).
fn classify(
    state: &mut CallState,
    error: &wasmtime::Error,
    limit: Duration,
    limits: &Limits,
) -> Option<CallError> {
    state.finish();
    let memory = CallError::MemoryLimit {
        limit: limits.memory_bytes,
    };
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt | Trap::OutOfFuel) => Some(CallError::Timeout { limit }),
        Some(_) if state.memory_refused => Some(memory),
        Some(Trap::UnreachableCodeReached) => Some(CallError::Trap(
            "`unreachable` executed (the function panicked or aborted)".into(),
        )),
        Some(Trap::StackOverflow) => Some(CallError::Trap("stack overflow".into())),
        Some(trap) => Some(CallError::Trap(trap.to_string())),
        None if state.memory_refused => Some(memory),
        None => None,
    }
}

/// Epoch ticks (`ceil(limit / tick) + 1`) or fuel units for a call limited to `limit`.
fn budget(host: &HostInner, limit: Duration) -> u64 {
    let units = match host.interruption {
        Interruption::Epoch => limit.as_nanos().div_ceil(host.epoch_tick.as_nanos()) + 1,
        Interruption::Fuel { per_ms } => limit
            .as_nanos()
            .saturating_mul(u128::from(per_ms))
            .div_ceil(1_000_000),
    };
    u64::try_from(units).unwrap_or(u64::MAX)
}
