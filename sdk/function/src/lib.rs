//! Write Tern message functions in Rust.
//!
//! A message function decides the fate of every message on the channels it is bound
//! to: pass it, replace it, drop it or reject it. It is a plain Rust function; this
//! crate turns it into a WebAssembly component exporting the `tern:function` world
//! (`wit/world.wit`), and lets the same function run natively in unit tests.
//!
//! ```
//! use tern_function::{Action, Message};
//!
//! fn shout(mut message: Message) -> Action {
//!     match message.text().map(str::to_uppercase) {
//!         Some(loud) => {
//!             message.set_data(loud);
//!             Action::Replace(message)
//!         }
//!         None => Action::Reject("only text is allowed here".into()),
//!     }
//! }
//! tern_function::function!(shout);
//!
//! // Natively, with no WebAssembly: what a unit test does.
//! let outcome = tern_function::testing::run(shout, Message::new("chat:1", "hi"));
//! assert_eq!(outcome.action, Action::Replace(Message::new("chat:1", "HI")));
//! ```
//!
//! ```text
//!  edge (tern-wasm) ──handle(borrow<message>)──▶ function!(your_fn) ──▶ your_fn(Message) -> Action
//!        ▲   ◀── message.data(), … (read on first use)  │ publish / log / now_ms / edge
//!        └──────────── action ◀─────────────────────────┘ (host imports; natively: testing::run records them)
//! ```
//!
//! What it does not do: build the component (`tern fn build` does, see
//! `docs/functions.md`), or grant anything beyond the `host` interface: a function has
//! no filesystem, network, environment or randomness.
//!
//! `function!` also exports `handle-batch`, which runs the same function over each
//! message of a batch, so the edge can hand over many messages in one call.

mod message;
pub mod testing;
#[cfg(target_arch = "wasm32")]
mod wasm;

#[cfg(feature = "json")]
pub use message::JsonError;
pub use message::{Action, EdgeInfo, Level, Message, Outgoing};

/// Publishes `message` to `channel` once the current call returns successfully
/// (nothing is published if it traps, runs out of time or rejects its message).
///
/// Errors when `channel` is not a valid channel name or the call has published its
/// quota already.
pub fn publish(channel: &str, message: Outgoing) -> Result<(), String> {
    #[cfg(target_arch = "wasm32")]
    return wasm::publish(channel, message);
    #[cfg(not(target_arch = "wasm32"))]
    return testing::record_publish(channel, message);
}

/// Writes a line to the edge's log, tagged with the function's name.
pub fn log(level: Level, text: &str) {
    #[cfg(target_arch = "wasm32")]
    wasm::log(level, text);
    #[cfg(not(target_arch = "wasm32"))]
    testing::record_log(level, text);
}

/// Wall-clock time in milliseconds since the Unix epoch (natively: the time set by
/// [`testing::set_now_ms`], else the system clock).
pub fn now_ms() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return wasm::now_ms();
    #[cfg(not(target_arch = "wasm32"))]
    return testing::now_ms();
}

/// The edge running the function (natively: the one set by [`testing::set_edge`],
/// else `test`/`local`).
pub fn edge() -> EdgeInfo {
    #[cfg(target_arch = "wasm32")]
    return wasm::edge();
    #[cfg(not(target_arch = "wasm32"))]
    return testing::edge();
}

/// Exports a function `fn(Message) -> Action` as the component's `handle` and
/// `handle-batch`. Use it once per crate, at the top level:
///
/// ```ignore
/// fn handle(message: tern_function::Message) -> tern_function::Action {
///     tern_function::Action::Pass
/// }
/// tern_function::function!(handle);
/// ```
///
/// Natively (in `cargo test`) it expands to nothing but a check of the function's
/// type; call the function directly or through [`testing::run`].
#[macro_export]
macro_rules! function {
    ($handler:path) => {
        #[allow(dead_code)]
        const __TERN_FUNCTION_HANDLER: fn($crate::Message) -> $crate::Action = $handler;

        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        mod __tern_function_export {
            struct Export;

            impl $crate::__private::HandlerGuest for Export {
                fn handle(message: &$crate::__private::WitMessage) -> $crate::__private::WitAction {
                    $crate::__private::into_wit_action(super::__TERN_FUNCTION_HANDLER(
                        $crate::__private::lent_message(message),
                    ))
                }
            }

            impl $crate::__private::BatchGuest for Export {
                fn handle_batch(
                    batch: &$crate::__private::WitBatch,
                ) -> ::std::vec::Vec<$crate::__private::WitAction> {
                    $crate::__private::lent_batch(batch)
                        .map(|message| {
                            $crate::__private::into_wit_action(super::__TERN_FUNCTION_HANDLER(
                                message,
                            ))
                        })
                        .collect()
                }
            }

            $crate::__private::export!(Export with_types_in $crate::__private::bindings);
        }
    };
}

/// What `function!` expands to needs; not part of the API.
#[doc(hidden)]
#[cfg(target_arch = "wasm32")]
pub mod __private {
    pub use crate::wasm::bindings;
    pub use crate::wasm::bindings::export;
    pub use crate::wasm::bindings::exports::tern::function::batch_handler::Guest as BatchGuest;
    pub use crate::wasm::bindings::exports::tern::function::handler::Guest as HandlerGuest;
    pub use crate::wasm::bindings::tern::function::types::{
        Action as WitAction, Batch as WitBatch, Message as WitMessage,
    };
    pub use crate::wasm::{into_wit_action, lent_batch, lent_message};
}
