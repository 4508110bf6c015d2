//! The values a function sees and returns.

use std::cell::OnceCell;
use std::fmt;

/// One message, as published (at `ingress`) or as stored (at `egress`).
///
/// In a component the edge lends the message for the call and nothing is copied into
/// the function until an accessor asks: [`Message::data`] copies the body once (later
/// calls answer the copy), a pass-through copies nothing. Made with [`Message::new`]
/// (natively, in tests) every field is already here. A message must not be kept past
/// the call it was handed to: the fields it had not read went with the call (a later
/// read traps, or answers the message of the call in progress).
#[derive(Clone, Default)]
pub struct Message {
    id: OnceCell<String>,
    channel: OnceCell<String>,
    name: OnceCell<Option<String>>,
    data: OnceCell<Vec<u8>>,
    content_type: OnceCell<Option<String>>,
    headers: OnceCell<Vec<(String, String)>>,
    client_id: OnceCell<Option<String>>,
    timestamp_ms: OnceCell<u64>,
    /// Where unread fields come from; `None` for a message made here.
    #[cfg(target_arch = "wasm32")]
    lent: Option<crate::wasm::Lent>,
}

/// The accessor, setter and builder of each field: the accessor reads a lent
/// message's field from the host on first use.
macro_rules! fields {
    ($($field:ident: $ty:ty => $borrowed:ty, |$v:ident| $borrow:expr, $set:ident, $with:ident, $doc:literal;)*) => {
        impl Message {$(
            #[doc = $doc]
            pub fn $field(&self) -> $borrowed {
                let $v = self.$field.get_or_init(|| {
                    #[cfg(target_arch = "wasm32")]
                    if let Some(lent) = &self.lent {
                        return lent.$field();
                    }
                    <$ty>::default()
                });
                $borrow
            }

            #[doc = concat!("Sets ", stringify!($field), " (a function changes what it passes on with [`Action::Replace`]).")]
            pub fn $set(&mut self, value: impl Into<$ty>) {
                self.$field = OnceCell::from(value.into());
            }

            #[doc = concat!("This message with ", stringify!($field), " set (for tests).")]
            pub fn $with(mut self, value: impl Into<$ty>) -> Self {
                self.$set(value);
                self
            }
        )*}
    };
}

fields! {
    id: String => &str, |v| v.as_str(), set_id, with_id,
        "The message id, which is also its idempotency key.";
    channel: String => &str, |v| v.as_str(), set_channel, with_channel,
        "The channel it was published to.";
    name: Option<String> => Option<&str>, |v| v.as_deref(), set_name, with_name,
        "The application's event name, if the publisher gave one.";
    data: Vec<u8> => &[u8], |v| v.as_slice(), set_data, with_data,
        "The body: UTF-8 text or arbitrary bytes.";
    content_type: Option<String> => Option<&str>, |v| v.as_deref(), set_content_type, with_content_type,
        "A MIME type for the body, if the publisher gave one.";
    headers: Vec<(String, String)> => &[(String, String)], |v| v.as_slice(), set_headers, with_headers,
        "Application headers, sorted by name.";
    client_id: Option<String> => Option<&str>, |v| v.as_deref(), set_client_id, with_client_id,
        "The publisher's client id, if its connection has one.";
    timestamp_ms: u64 => u64, |v| *v, set_timestamp_ms, with_timestamp_ms,
        "Milliseconds since the Unix epoch: when the edge received the message (`ingress`) or when the log stored it (`egress`).";
}

impl Message {
    /// A message on `channel` with body `data` and nothing else (for tests).
    pub fn new(channel: &str, data: impl Into<Vec<u8>>) -> Self {
        Self::default().with_channel(channel).with_data(data)
    }

    /// A message lent by the host: every field is read on first use.
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn lent(lent: crate::wasm::Lent) -> Self {
        Self {
            lent: Some(lent),
            ..Self::default()
        }
    }

    /// The body as text, if it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(self.data()).ok()
    }

    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Sets header `name` (replacing its value if present, keeping the headers sorted).
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let mut headers = self.headers().to_vec();
        let value = value.into();
        match headers.binary_search_by(|(key, _)| key.as_str().cmp(name)) {
            Ok(index) => headers[index].1 = value,
            Err(index) => headers.insert(index, (name.to_owned(), value)),
        }
        self.set_headers(headers);
    }

    /// This message with header `name` set (for tests).
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.set_header(name, value);
        self
    }

    /// The body parsed as JSON.
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, JsonError> {
        serde_json::from_slice(self.data()).map_err(JsonError)
    }

    /// Replaces the body with `value` as JSON and sets the content type to
    /// `application/json`.
    #[cfg(feature = "json")]
    pub fn set_json<T: serde::Serialize>(&mut self, value: &T) -> Result<(), JsonError> {
        self.set_data(serde_json::to_vec(value).map_err(JsonError)?);
        self.set_content_type(Some("application/json".to_owned()));
        Ok(())
    }
}

impl Message {
    /// The name, body, content type and headers, moved out (a lent message's are read
    /// first): what replaces a message.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn into_outgoing(self) -> Outgoing {
        let _ = (
            self.name(),
            self.data(),
            self.content_type(),
            self.headers(),
        );
        Outgoing {
            name: self.name.into_inner().flatten(),
            data: self.data.into_inner().unwrap_or_default(),
            content_type: self.content_type.into_inner().flatten(),
            headers: self.headers.into_inner().unwrap_or_default(),
        }
    }
}

/// Messages are equal when every field is (a lent message's fields are read to compare).
impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
            && self.channel() == other.channel()
            && self.name() == other.name()
            && self.data() == other.data()
            && self.content_type() == other.content_type()
            && self.headers() == other.headers()
            && self.client_id() == other.client_id()
            && self.timestamp_ms() == other.timestamp_ms()
    }
}

impl Eq for Message {}

/// Shows every field (a lent message's fields are read to show them).
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id())
            .field("channel", &self.channel())
            .field("name", &self.name())
            .field("data", &String::from_utf8_lossy(self.data()))
            .field("content_type", &self.content_type())
            .field("headers", &self.headers())
            .field("client_id", &self.client_id())
            .field("timestamp_ms", &self.timestamp_ms())
            .finish()
    }
}

/// A body that is not the JSON expected; its text says where and why.
#[cfg(feature = "json")]
#[derive(Debug)]
pub struct JsonError(serde_json::Error);

#[cfg(feature = "json")]
impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(feature = "json")]
impl std::error::Error for JsonError {}

/// What happens to a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Pass it on unchanged (the cheapest answer: nothing is copied back).
    Pass,
    /// Pass the message on with this one's name, body, content type and headers. Its id,
    /// channel, client id and time are ignored: the edge keeps the original's (a
    /// function cannot move a message; use [`crate::publish`] to copy it elsewhere).
    Replace(Message),
    /// Store and deliver nothing; the publisher still gets an ACK saying the message
    /// was dropped, with this reason.
    Drop(String),
    /// Refuse it: the publisher gets a NACK carrying this reason.
    Reject(String),
}

/// A message a function publishes to another channel with [`crate::publish`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outgoing {
    /// The application's event name.
    pub name: Option<String>,
    /// The body.
    pub data: Vec<u8>,
    /// A MIME type for `data`.
    pub content_type: Option<String>,
    /// Application headers.
    pub headers: Vec<(String, String)>,
}

impl Outgoing {
    /// A copy of `message`'s name, body, content type and headers.
    pub fn from_message(message: &Message) -> Self {
        Self {
            name: message.name().map(str::to_owned),
            data: message.data().to_vec(),
            content_type: message.content_type().map(str::to_owned),
            headers: message.headers().to_vec(),
        }
    }

    /// A message whose body is `value` as JSON.
    #[cfg(feature = "json")]
    pub fn json<T: serde::Serialize>(value: &T) -> Result<Self, JsonError> {
        Ok(Self {
            data: serde_json::to_vec(value).map_err(JsonError)?,
            content_type: Some("application/json".to_owned()),
            ..Self::default()
        })
    }
}

/// Where the function runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeInfo {
    /// The edge's name (its POP).
    pub name: String,
    /// The edge's region.
    pub region: String,
}

/// How important a log line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Detail for debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the function handled.
    Warn,
    /// Something the function could not handle.
    Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_header_keeps_headers_sorted_and_replaces() {
        let mut message = Message::new("a", "x");
        message.set_header("b", "1");
        message.set_header("a", "2");
        message.set_header("c", "3");
        message.set_header("b", "4");
        assert_eq!(
            message.headers(),
            [
                ("a".to_owned(), "2".to_owned()),
                ("b".to_owned(), "4".to_owned()),
                ("c".to_owned(), "3".to_owned())
            ]
        );
        assert_eq!(message.header("b"), Some("4"));
        assert_eq!(message.header("z"), None);
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_round_trip_and_error() {
        let mut message = Message::new("a", "{\"n\": 1}");
        let value: serde_json::Value = message.json().expect("valid JSON");
        assert_eq!(value["n"], 1);
        message.set_json(&vec![1, 2]).expect("serializable");
        assert_eq!(message.text(), Some("[1,2]"));
        assert_eq!(message.content_type(), Some("application/json"));
        let bad = Message::new("a", "{");
        let error = bad.json::<serde_json::Value>().expect_err("not JSON");
        assert!(error.to_string().contains("EOF"), "{error}");
    }
}
