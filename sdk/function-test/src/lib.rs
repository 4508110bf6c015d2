//! Host tests for Tern message functions: run the real component, the way an edge
//! does, from a function crate's `tests/*.rs`.
//!
//! ```text
//!  Component::build(env!("CARGO_MANIFEST_DIR"))
//!     │ once per crate per process (cached; a build error is cached too)
//!     ├─ tern_fnbuild::build ──▶ <workspace target>/wasm/tern-fn/<package>.wasm
//!     └─ Host (one per process) ─ compile ─ function(package, Limits) ──▶ tern_wasm::Function
//!
//!  component.call(Message)       ──▶ MessageRef ──▶ Function::call       ──▶ Outcome
//!  component.call_batch(Vec<..>) ──▶ [MessageRef] ─▶ Function::call_batch ──▶ Vec<Action>
//! ```
//!
//! It speaks `tern_function`'s types, so a host test reads like the crate's native
//! unit tests and can check that both give the same answers:
//!
//! ```ignore
//! use tern_function::{Action, Message};
//! use tern_function_test::Component;
//!
//! #[test]
//! fn the_component_rejects_what_the_native_function_rejects() {
//!     let component = Component::build(env!("CARGO_MANIFEST_DIR"));
//!     let message = Message::new("chat:1", "well damn");
//!     let native = tern_function::testing::run(profanity::handle, message.clone());
//!     assert_eq!(component.call(message).action, native.action);
//! }
//! ```
//!
//! The host is the edge's (`tern-wasm`) with its default [`Limits`](tern_wasm::Limits)
//! except the call timeout, [`TIMEOUT`] instead of 2 ms: a test machine running many
//! builds at once must not turn a descheduled thread into a failed test. Its
//! `edge()` import answers [`EDGE_NAME`] / [`EDGE_REGION`], what
//! `tern_function::testing` answers natively.
//!
//! What it does not do: capture the function's log lines (the host writes them to
//! `tracing` under target `tern::function`), bind functions to channels or apply
//! failure policies (that is the edge), or build anything but Rust function crates.
//!
//! Every crate under `functions/` must have a host test that calls
//! [`Component::build`]; `tests/every_function_has_a_host_test.rs` fails when one
//! does not.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tern_fnbuild::BuildOptions;
use tern_function::{Action, Message, Outgoing};
use tern_wasm::{EdgeInfo, Function, Host, HostConfig, Limits, MessageRef};

/// What the component's `edge()` import answers for the edge's name.
pub const EDGE_NAME: &str = "test";
/// What the component's `edge()` import answers for the edge's region.
pub const EDGE_REGION: &str = "local";
/// How long one call may run (per message in a batch).
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// A function crate built into its component and loaded in the host; cheap to clone.
#[derive(Clone)]
pub struct Component {
    function: Function,
}

/// What one call did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The function's answer.
    pub action: Action,
    /// `(channel, message)` for each message the function published, in order (none
    /// when it rejected its message: the host discards them).
    pub published: Vec<(String, Outgoing)>,
}

/// One cell per crate directory: the first test to ask builds, the others wait.
type Built = Arc<OnceLock<Result<Component, String>>>;

impl Component {
    /// Builds the function crate at `crate_dir` with `tern_fnbuild::build` (what
    /// `tern fn build` runs) and loads it into this process's host. Later calls for the
    /// same crate return the same component.
    ///
    /// # Panics
    /// When the crate does not build or the host refuses the component, with the error
    /// text (this is a test helper: the test fails, saying why).
    pub fn build(crate_dir: &str) -> Component {
        match Self::try_build(Path::new(crate_dir)) {
            Ok(component) => component,
            Err(error) => panic!("{error}"),
        }
    }

    /// [`Component::build`] without the panic.
    pub fn try_build(crate_dir: &Path) -> Result<Component, String> {
        static BUILT: OnceLock<Mutex<HashMap<PathBuf, Built>>> = OnceLock::new();
        let key = crate_dir
            .canonicalize()
            .unwrap_or_else(|_| crate_dir.to_owned());
        let cell = BUILT
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone();
        // Built outside the map's lock, so crates build in parallel.
        cell.get_or_init(|| load(&key)).clone()
    }

    /// Calls the component's `handle` with `message`.
    ///
    /// # Panics
    /// When the call fails (trap, timeout, memory): use [`Component::try_call`] to
    /// test a function that should fail.
    pub fn call(&self, message: Message) -> Outcome {
        self.try_call(message)
            .unwrap_or_else(|error| panic!("the call failed: {error}"))
    }

    /// Calls the component's `handle` with `message`; a failed call is the host's
    /// error text (`function trapped: ...`, `function ran longer than ...`).
    pub fn try_call(&self, message: Message) -> Result<Outcome, String> {
        let headers = borrowed_headers(&message);
        let invocation = self
            .function
            .call(&message_ref(&message, &headers))
            .map_err(|error| error.to_string())?;
        Ok(Outcome {
            action: action(&message, invocation.action),
            published: published(invocation.publishes),
        })
    }

    /// Calls the component's `handle-batch` with `messages` (or `handle` on each when
    /// the component has no batch export): one action per message, in order.
    ///
    /// # Panics
    /// When the batch call fails.
    pub fn call_batch(&self, messages: Vec<Message>) -> Vec<Action> {
        let headers: Vec<Vec<(&str, &str)>> = messages.iter().map(borrowed_headers).collect();
        let refs: Vec<MessageRef<'_>> = messages
            .iter()
            .zip(&headers)
            .map(|(message, headers)| message_ref(message, headers))
            .collect();
        match self.function.call_batch(&refs) {
            Ok(invocation) => messages
                .iter()
                .zip(invocation.actions)
                .map(|(message, answer)| action(message, answer))
                .collect(),
            Err(error) => panic!("the batch call failed: {error}"),
        }
    }
}

/// This process's host, made on first use.
fn host() -> Result<&'static Host, String> {
    static HOST: OnceLock<Result<Host, String>> = OnceLock::new();
    HOST.get_or_init(|| {
        Host::new(HostConfig {
            // Test processes load a handful of functions; a small pool reserves less
            // address space.
            max_instances: 64,
            edge: EdgeInfo {
                name: EDGE_NAME.into(),
                region: EDGE_REGION.into(),
            },
            ..HostConfig::default()
        })
        .map_err(|error| format!("cannot start the WebAssembly host: {error}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Builds, compiles and loads the crate at `crate_dir`.
fn load(crate_dir: &Path) -> Result<Component, String> {
    let built = tern_fnbuild::build(
        crate_dir,
        &BuildOptions {
            target_dir: None,
            quiet: true,
        },
    )
    .map_err(|error| format!("cannot build {}: {error}", crate_dir.display()))?;
    let bytes = std::fs::read(&built.component)
        .map_err(|error| format!("cannot read {}: {error}", built.component.display()))?;
    let host = host()?;
    let component = host
        .compile(&bytes)
        .map_err(|error| format!("the host refused {}: {error}", built.component.display()))?;
    let limits = Limits {
        timeout: TIMEOUT,
        ..Limits::default()
    };
    let function = host
        .function(&built.package, &component, limits)
        .map_err(|error| format!("the host cannot load {}: {error}", built.package))?;
    Ok(Component { function })
}

fn borrowed_headers(message: &Message) -> Vec<(&str, &str)> {
    message
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

fn message_ref<'a>(message: &'a Message, headers: &'a [(&'a str, &'a str)]) -> MessageRef<'a> {
    MessageRef {
        id: message.id(),
        channel: message.channel(),
        name: message.name(),
        data: message.data(),
        content_type: message.content_type(),
        headers,
        client_id: message.client_id(),
        timestamp_ms: message.timestamp_ms(),
    }
}

/// The component's answer for `original` as the SDK's action: a replacement is the
/// original with the new name, body, content type and headers, as on an edge.
fn action(original: &Message, action: tern_wasm::Action) -> Action {
    match action {
        tern_wasm::Action::Pass => Action::Pass,
        tern_wasm::Action::Replace(replacement) => {
            let mut message = original.clone();
            message.set_name(replacement.name);
            message.set_data(replacement.data);
            message.set_content_type(replacement.content_type);
            message.set_headers(replacement.headers);
            Action::Replace(message)
        }
        tern_wasm::Action::Drop(reason) => Action::Drop(reason),
        tern_wasm::Action::Reject(reason) => Action::Reject(reason),
    }
}

fn published(publishes: Vec<(String, tern_wasm::Outgoing)>) -> Vec<(String, Outgoing)> {
    publishes
        .into_iter()
        .map(|(channel, message)| {
            let outgoing = Outgoing {
                name: message.name,
                data: message.data,
                content_type: message.content_type,
                headers: message.headers,
            };
            (channel, outgoing)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_that_is_not_a_crate_fails_with_the_build_error() {
        let dir = std::env::temp_dir().join("tern-function-test-no-such-crate");
        let error = Component::try_build(&dir)
            .err()
            .expect("nothing to build there");
        assert!(error.starts_with("cannot build "), "{error}");
        // The error is cached: asking again answers the same without building.
        assert_eq!(Component::try_build(&dir).err(), Some(error));
    }

    #[test]
    fn messages_convert_field_by_field() {
        let message = Message::new("chat:1", vec![0, 1, 2])
            .with_id("m1")
            .with_name("n".to_owned())
            .with_content_type("application/octet-stream".to_owned())
            .with_header("b", "2")
            .with_header("a", "1")
            .with_client_id("c1".to_owned())
            .with_timestamp_ms(42u64);
        let headers = borrowed_headers(&message);
        let borrowed = message_ref(&message, &headers);
        assert_eq!(borrowed.id, "m1");
        assert_eq!(borrowed.channel, "chat:1");
        assert_eq!(borrowed.name, Some("n"));
        assert_eq!(borrowed.data, [0, 1, 2]);
        assert_eq!(borrowed.content_type, Some("application/octet-stream"));
        assert_eq!(borrowed.headers, [("a", "1"), ("b", "2")]);
        assert_eq!(borrowed.client_id, Some("c1"));
        assert_eq!(borrowed.timestamp_ms, 42);

        let back = action(
            &message,
            tern_wasm::Action::Replace(tern_wasm::Outgoing {
                name: None,
                data: vec![9],
                content_type: None,
                headers: vec![("z".into(), "1".into())],
            }),
        );
        let expected = message
            .clone()
            .with_name(None)
            .with_data(vec![9])
            .with_content_type(None)
            .with_headers(vec![("z".to_owned(), "1".to_owned())]);
        assert_eq!(back, Action::Replace(expected));
        assert_eq!(
            action(&message, tern_wasm::Action::Reject("no".into())),
            Action::Reject("no".into())
        );
        assert_eq!(
            action(&message, tern_wasm::Action::Drop("x".into())),
            Action::Drop("x".into())
        );
        assert_eq!(action(&message, tern_wasm::Action::Pass), Action::Pass);
    }
}
