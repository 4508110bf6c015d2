//! The values that cross the boundary: [`MessageRef`], what the edge lends a call
//! (read by the guest through the getters of `lent.rs`, field by field, straight from
//! the edge's borrowed buffers), and [`Action`] / [`Outgoing`], lifted straight out of
//! guest memory. Names must match `sdk/function/wit/world.wit` (`tern:function/types`);
//! `check.rs` holds the same shapes as text.

use wasmtime::component::{ComponentType, Lift};

/// One message handed to a function, borrowed from the edge's buffers.
#[derive(Clone, Copy, Debug)]
pub struct MessageRef<'a> {
    /// The message id (its idempotency key).
    pub id: &'a str,
    /// The channel it was published to.
    pub channel: &'a str,
    /// The application's event name.
    pub name: Option<&'a str>,
    /// The body.
    pub data: &'a [u8],
    /// A MIME type for `data`.
    pub content_type: Option<&'a str>,
    /// Application headers, sorted by name.
    pub headers: &'a [(&'a str, &'a str)],
    /// The publisher's client id.
    pub client_id: Option<&'a str>,
    /// Milliseconds since the Unix epoch: received (ingress) or stored (egress).
    pub timestamp_ms: u64,
}

/// What a function decided for one message.
#[derive(Clone, Debug, PartialEq, Eq, ComponentType, Lift)]
#[component(variant)]
pub enum Action {
    /// Pass it on unchanged.
    #[component(name = "pass")]
    Pass,
    /// Pass the message on with this name, body, content type and headers instead (the
    /// edge keeps its id, channel, client id and time).
    #[component(name = "replace")]
    Replace(Outgoing),
    /// Store and deliver nothing; the publisher still gets an ACK, with this reason.
    #[component(name = "drop")]
    Drop(String),
    /// Refuse it: the publisher gets a NACK carrying this reason.
    #[component(name = "reject")]
    Reject(String),
}

impl Action {
    /// A short, fixed label for metrics: `pass`, `replace`, `drop` or `reject`.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Replace(_) => "replace",
            Action::Drop(_) => "drop",
            Action::Reject(_) => "reject",
        }
    }
}

/// A message a function published to another channel during a call, or the new
/// content of a message it replaced.
#[derive(Clone, Debug, Default, PartialEq, Eq, ComponentType, Lift)]
#[component(record)]
pub struct Outgoing {
    /// The application's event name.
    pub name: Option<String>,
    /// The body.
    pub data: Vec<u8>,
    /// A MIME type for `data`.
    #[component(name = "content-type")]
    pub content_type: Option<String>,
    /// Application headers.
    pub headers: Vec<(String, String)>,
}

/// A log line's level, as the guest gives it.
// Only ever made by lifting a guest's value, which the compiler does not see.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, ComponentType, Lift)]
#[component(enum)]
#[repr(u8)]
pub(crate) enum Level {
    #[component(name = "debug")]
    Debug,
    #[component(name = "info")]
    Info,
    #[component(name = "warn")]
    Warn,
    #[component(name = "error")]
    Error,
}
