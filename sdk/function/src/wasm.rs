//! The component side: wit-bindgen's bindings and the moves between its types and
//! this crate's (field by field, no copies).

#![allow(unsafe_code)] // wit-bindgen's generated glue

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

/// A message from the host, as this crate's type.
pub fn from_wit_message(message: types::Message) -> Message {
    let types::Message {
        id,
        channel,
        name,
        data,
        content_type,
        headers,
        client_id,
        timestamp_ms,
    } = message;
    Message {
        id,
        channel,
        name,
        data,
        content_type,
        headers,
        client_id,
        timestamp_ms,
    }
}

fn into_wit_message(message: Message) -> types::Message {
    let Message {
        id,
        channel,
        name,
        data,
        content_type,
        headers,
        client_id,
        timestamp_ms,
    } = message;
    types::Message {
        id,
        channel,
        name,
        data,
        content_type,
        headers,
        client_id,
        timestamp_ms,
    }
}

/// An action for the host.
pub fn into_wit_action(action: Action) -> types::Action {
    match action {
        Action::Pass => types::Action::Pass,
        Action::Replace(message) => types::Action::Replace(into_wit_message(message)),
        Action::Drop(reason) => types::Action::Drop(reason),
        Action::Reject(reason) => types::Action::Reject(reason),
    }
}

pub(crate) fn publish(channel: &str, message: Outgoing) -> Result<(), String> {
    let Outgoing {
        name,
        data,
        content_type,
        headers,
    } = message;
    host::publish(
        channel,
        &types::Outgoing {
            name,
            data,
            content_type,
            headers,
        },
    )
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
