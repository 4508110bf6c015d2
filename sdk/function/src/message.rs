//! The values a function sees and returns.

/// One message, as published (at `ingress`) or as stored (at `egress`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The message id, which is also its idempotency key.
    pub id: String,
    /// The channel it was published to.
    pub channel: String,
    /// The application's event name, if the publisher gave one.
    pub name: Option<String>,
    /// The body: UTF-8 text or arbitrary bytes.
    pub data: Vec<u8>,
    /// A MIME type for `data`, if the publisher gave one.
    pub content_type: Option<String>,
    /// Application headers, sorted by name.
    pub headers: Vec<(String, String)>,
    /// The publisher's client id, if its connection has one.
    pub client_id: Option<String>,
    /// Milliseconds since the Unix epoch: when the edge received the message
    /// (`ingress`) or when the log stored it (`egress`).
    pub timestamp_ms: u64,
}

impl Message {
    /// A message on `channel` with body `data` and nothing else (for tests).
    pub fn new(channel: &str, data: impl Into<Vec<u8>>) -> Self {
        Self {
            channel: channel.to_owned(),
            data: data.into(),
            ..Self::default()
        }
    }

    /// The body as text, if it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.data).ok()
    }

    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Sets header `name` (replacing its value if present, keeping the headers sorted).
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self
            .headers
            .binary_search_by(|(key, _)| key.as_str().cmp(name))
        {
            Ok(index) => self.headers[index].1 = value,
            Err(index) => self.headers.insert(index, (name.to_owned(), value)),
        }
    }

    /// The body parsed as JSON.
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, JsonError> {
        serde_json::from_slice(&self.data).map_err(JsonError)
    }

    /// Replaces the body with `value` as JSON and sets the content type to
    /// `application/json`.
    #[cfg(feature = "json")]
    pub fn set_json<T: serde::Serialize>(&mut self, value: &T) -> Result<(), JsonError> {
        self.data = serde_json::to_vec(value).map_err(JsonError)?;
        self.content_type = Some("application/json".to_owned());
        Ok(())
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
    /// Pass this message on instead. Its `id` and `channel` are ignored: a function
    /// cannot move a message; use [`crate::publish`] to copy it elsewhere.
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
            name: message.name.clone(),
            data: message.data.clone(),
            content_type: message.content_type.clone(),
            headers: message.headers.clone(),
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
            message.headers,
            vec![
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
        assert_eq!(message.content_type.as_deref(), Some("application/json"));
        let bad = Message::new("a", "{");
        let error = bad.json::<serde_json::Value>().expect_err("not JSON");
        assert!(error.to_string().contains("EOF"), "{error}");
    }
}
