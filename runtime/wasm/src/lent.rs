//! The messages of a call, lent to the guest as the `tern:function/types` resources
//! `message` (for `handle`) and `batch` (for `handle-batch`).
//!
//! Nothing is copied into the guest before it asks: the host passes a borrow handle,
//! and each getter the guest calls lowers one field straight from the edge's buffers.
//! A pass-through copies nothing; a filter copies the data it reads.
//!
//! ```text
//!  Function::call(&MessageRef) ─▶ Lent::lend(&[MessageRef]) ─▶ handle(borrow<message>)
//!        guest: message.data() ─▶ [method]message.data ─▶ Lent::get(0).data ─▶ lowered
//!  call returns ─▶ Lent::clear()
//! ```
//!
//! The edge's messages are borrowed for the call only, but a `Store`'s data must be
//! `'static`, so [`Lent`] keeps a lifetime-erased pointer. That is sound because the
//! pointer is set right before a call from a borrow that outlives it, cleared right
//! after, and read only by the getters, which run inside that call and hand their
//! values straight to the lowering of their results.

use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime::{StoreContextMut, bail};

use crate::imports::CallState;
use crate::message::MessageRef;

/// The name the world gives its types interface.
pub(crate) const TYPES: &str = "tern:function/types@0.1.0";

/// The host side of `resource message`: the one message of a `handle` call.
pub struct MessageResource;

/// The host side of `resource batch`: the messages of a `handle-batch` call.
pub struct BatchResource;

/// The messages lent to the call in progress (none between calls).
pub(crate) struct Lent {
    first: *const MessageRef<'static>,
    len: usize,
}

// SAFETY: `Lent` only points at messages during a call made by the thread that owns the
// store (a `Store` is used by one thread at a time); between calls it points at nothing.
#[allow(unsafe_code)]
unsafe impl Send for Lent {}

impl Default for Lent {
    fn default() -> Self {
        Self {
            first: std::ptr::null(),
            len: 0,
        }
    }
}

impl Lent {
    /// Lends `messages` until [`Lent::clear`], which the caller must call before
    /// `messages` goes away (right after the guest call returns).
    pub(crate) fn lend(&mut self, messages: &[MessageRef<'_>]) {
        self.first = messages.as_ptr().cast();
        self.len = messages.len();
    }

    /// Ends the loan.
    pub(crate) fn clear(&mut self) {
        *self = Lent::default();
    }

    /// Message `index` of the call in progress. The lifetimes are erased: the value
    /// must not outlive the host function that asked for it.
    #[allow(unsafe_code)]
    fn get(&self, index: u32) -> wasmtime::Result<MessageRef<'static>> {
        let index = index as usize;
        if index >= self.len {
            bail!(
                "message index {index} is out of range: the call is about {} message(s)",
                self.len
            );
        }
        // SAFETY: `first..first + len` was a live slice when lent and stays so until
        // `clear`, which runs after the guest call that this getter is part of.
        Ok(unsafe { *self.first.add(index) })
    }
}

/// Defines the `message` and `batch` resources and their getters in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    let mut types = linker.instance(TYPES)?;
    // The guest only ever borrows these, so there is nothing to drop.
    types.resource(
        "message",
        ResourceType::host::<MessageResource>(),
        |_, _| Ok(()),
    )?;
    types.resource(
        "batch",
        ResourceType::host::<BatchResource>(),
        |_, _| Ok(()),
    )?;
    types.func_wrap(
        "[method]batch.len",
        |cx: StoreContextMut<'_, CallState>, (_batch,): (Resource<BatchResource>,)| {
            Ok((u32::try_from(cx.data().lent.len).unwrap_or(u32::MAX),))
        },
    )?;

    /// For each field: `[method]message.<field>` (message 0) and
    /// `[method]batch.<field>` (message `index`), answering `$value` of message `$m`.
    macro_rules! getters {
        ($($field:literal => |$m:ident| $value:expr),* $(,)?) => {$(
            types.func_wrap(
                concat!("[method]message.", $field),
                |cx: StoreContextMut<'_, CallState>, (_message,): (Resource<MessageResource>,)| {
                    let $m = cx.data().lent.get(0)?;
                    Ok(($value,))
                },
            )?;
            types.func_wrap(
                concat!("[method]batch.", $field),
                |cx: StoreContextMut<'_, CallState>,
                 (_batch, index): (Resource<BatchResource>, u32)| {
                    let $m = cx.data().lent.get(index)?;
                    Ok(($value,))
                },
            )?;
        )*};
    }
    getters! {
        "id" => |m| m.id,
        "channel" => |m| m.channel,
        "name" => |m| m.name,
        "data" => |m| m.data,
        "content-type" => |m| m.content_type,
        "headers" => |m| m.headers,
        "client-id" => |m| m.client_id,
        "timestamp-ms" => |m| m.timestamp_ms,
    }
    Ok(())
}

/// The signature the world gives getter `name` of the types interface, as `check.rs`
/// renders it; `None` for a name the world does not have.
pub(crate) fn getter_signature(name: &str) -> Option<String> {
    const FIELDS: [(&str, &str); 8] = [
        ("id", "string"),
        ("channel", "string"),
        ("name", "option<string>"),
        ("data", "list<u8>"),
        ("content-type", "option<string>"),
        ("headers", "list<tuple<string, string>>"),
        ("client-id", "option<string>"),
        ("timestamp-ms", "u64"),
    ];
    if name == "[method]batch.len" {
        return Some("func(borrow<resource>) -> u32".into());
    }
    let (params, field) = match name.strip_prefix("[method]message.") {
        Some(field) => ("borrow<resource>", field),
        None => (
            "borrow<resource>, u32",
            name.strip_prefix("[method]batch.")?,
        ),
    };
    let (_, ty) = FIELDS.iter().find(|(f, _)| *f == field)?;
    Some(format!("func({params}) -> {ty}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getters_read_the_lent_messages_and_refuse_other_indexes() {
        let messages = [
            MessageRef {
                id: "a",
                channel: "chat:1",
                name: None,
                data: b"hi",
                content_type: None,
                headers: &[],
                client_id: None,
                timestamp_ms: 1,
            },
            MessageRef {
                id: "b",
                channel: "chat:2",
                name: Some("n"),
                data: b"yo",
                content_type: None,
                headers: &[("k", "v")],
                client_id: Some("c"),
                timestamp_ms: 2,
            },
        ];
        let mut lent = Lent::default();
        assert!(lent.get(0).is_err(), "nothing lent between calls");
        lent.lend(&messages);
        assert_eq!(lent.get(1).expect("in range").headers, &[("k", "v")]);
        assert_eq!(lent.get(0).expect("in range").id, "a");
        let error = lent.get(2).expect_err("out of range").to_string();
        assert!(error.contains("index 2 is out of range"), "{error}");
        lent.clear();
        assert!(lent.get(0).is_err());
    }

    #[test]
    fn getter_signatures_follow_the_world() {
        assert_eq!(
            getter_signature("[method]message.data").as_deref(),
            Some("func(borrow<resource>) -> list<u8>")
        );
        assert_eq!(
            getter_signature("[method]batch.client-id").as_deref(),
            Some("func(borrow<resource>, u32) -> option<string>")
        );
        assert_eq!(
            getter_signature("[method]batch.len").as_deref(),
            Some("func(borrow<resource>) -> u32")
        );
        assert_eq!(getter_signature("[method]message.secret"), None);
        assert_eq!(getter_signature("[constructor]message"), None);
    }
}
