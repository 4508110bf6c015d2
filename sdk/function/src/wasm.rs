//! The component side: wit-bindgen's bindings, the lent messages a [`Message`] reads
//! its fields from, and the moves between wit-bindgen's types and this crate's.

#![allow(unsafe_code)] // wit-bindgen's generated glue

use std::mem::ManuallyDrop;

use crate::{Action, EdgeInfo, Level, Message, Outgoing};

/// wit-bindgen's output for `wit/world.wit`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "batched-message-function",
        pub_export_macro: true,
        default_bindings_module: "tern_function::__private::bindings",
    });
}

use bindings::tern::function::{host, types};

/// A message the host lent to the current call, by its borrow handle.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Lent {
    /// The `message` of a `handle` call.
    One(u32),
    /// Message `index` of the `batch` of a `handle-batch` call.
    Batch { batch: u32, index: u32 },
}

/// The `message` behind a borrow handle, not dropped: the host owns it.
fn message(handle: u32) -> ManuallyDrop<types::Message> {
    // SAFETY: `handle` is the borrow the host passed to the call in progress.
    ManuallyDrop::new(unsafe { types::Message::from_handle(handle) })
}

/// The `batch` behind a borrow handle, not dropped: the host owns it.
fn batch(handle: u32) -> ManuallyDrop<types::Batch> {
    // SAFETY: `handle` is the borrow the host passed to the call in progress.
    ManuallyDrop::new(unsafe { types::Batch::from_handle(handle) })
}

/// One getter per field, reading the lent message from the host.
macro_rules! lent_getters {
    ($($field:ident: $ty:ty;)*) => {
        impl Lent {$(
            pub(crate) fn $field(&self) -> $ty {
                match *self {
                    Lent::One(handle) => message(handle).$field(),
                    Lent::Batch { batch: handle, index } => batch(handle).$field(index),
                }
            }
        )*}
    };
}

lent_getters! {
    id: String;
    channel: String;
    name: Option<String>;
    data: Vec<u8>;
    content_type: Option<String>;
    headers: Vec<(String, String)>;
    client_id: Option<String>;
    timestamp_ms: u64;
}

/// The message of a `handle` call.
pub fn lent_message(message: &types::Message) -> Message {
    Message::lent(Lent::One(message.handle()))
}

/// The messages of a `handle-batch` call, in order.
pub fn lent_batch(batch: &types::Batch) -> impl Iterator<Item = Message> {
    let handle = batch.handle();
    (0..batch.len()).map(move |index| {
        Message::lent(Lent::Batch {
            batch: handle,
            index,
        })
    })
}

fn into_wit_outgoing(message: Outgoing) -> types::Outgoing {
    let Outgoing {
        name,
        data,
        content_type,
        headers,
    } = message;
    types::Outgoing {
        name,
        data,
        content_type,
        headers,
    }
}

/// An action for the host.
pub fn into_wit_action(action: Action) -> types::Action {
    match action {
        Action::Pass => types::Action::Pass,
        Action::Replace(message) => {
            types::Action::Replace(into_wit_outgoing(message.into_outgoing()))
        }
        Action::Drop(reason) => types::Action::Drop(reason),
        Action::Reject(reason) => types::Action::Reject(reason),
    }
}

pub(crate) fn publish(channel: &str, message: Outgoing) -> Result<(), String> {
    host::publish(channel, &into_wit_outgoing(message))
}

pub(crate) fn log(level: Level, text: &str) {
    let level = match level {
        Level::Debug => types::Level::Debug,
        Level::Info => types::Level::Info,
        Level::Warn => types::Level::Warn,
        Level::Error => types::Level::Error,
    };
    host::log(level, text);
}

pub(crate) fn now_ms() -> u64 {
    host::now_ms()
}

pub(crate) fn edge() -> EdgeInfo {
    let types::EdgeInfo { name, region } = host::edge();
    EdgeInfo { name, region }
}
