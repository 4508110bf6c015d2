//! How a client message is stored on the link, and how a stored message is delivered.
//!
//! The link carries a payload, an idempotency key and opaque headers; the client
//! protocol's extra fields travel as reserved headers whose names start with `tern-`:
//!
//! ```text
//! Message{id, name, content_type, headers, data}  ──▶  PublishMessage{
//!                                                        idempotency_key: id | "<conn>:<msg_serial>:<index>",
//!                                                        headers: tern-name, tern-content-type, tern-client-id,
//!                                                                 tern-binary ("1" for binary data), app headers…,
//!                                                        payload: data bytes }
//! StoredMessage ──▶ Message{id: key, timestamp, client_id, name, content_type, headers, data}
//! ```

use bytes::Bytes;
use tern_link::{Epoch, Outcome, PublishMessage, Serial, StoredMessage};
use tern_protocol::{Data, ErrorCode, ErrorInfo, Message, Position, PublishResult};

/// Prefix of the header names the edge reserves for itself.
pub(crate) const RESERVED_PREFIX: &str = "tern-";
const NAME: &str = "tern-name";
const CONTENT_TYPE: &str = "tern-content-type";
const CLIENT_ID: &str = "tern-client-id";
const BINARY: &str = "tern-binary";
/// How many functions deep a message published by a function is (absent: 0).
const FN_DEPTH: &str = "tern-fn-depth";

/// A stored or published message's headers, split into the reserved fields and the
/// application's headers (borrowed: what a function call reads).
#[derive(Debug)]
pub(crate) struct HeaderView<'a> {
    pub(crate) name: Option<&'a str>,
    pub(crate) content_type: Option<&'a str>,
    pub(crate) client_id: Option<&'a str>,
    pub(crate) binary: bool,
    pub(crate) depth: u32,
    pub(crate) app: Vec<(&'a str, &'a str)>,
}

fn view_of(headers: &[(String, String)]) -> HeaderView<'_> {
    let mut view = HeaderView {
        name: None,
        content_type: None,
        client_id: None,
        binary: false,
        depth: 0,
        app: Vec::new(),
    };
    for (name, value) in headers {
        match name.as_str() {
            NAME => view.name = Some(value),
            CONTENT_TYPE => view.content_type = Some(value),
            CLIENT_ID => view.client_id = Some(value),
            BINARY => view.binary = value == "1",
            FN_DEPTH => view.depth = value.parse().unwrap_or(u32::MAX),
            _ => view.app.push((name, value)),
        }
    }
    view
}

/// The headers of a message about to be published, as a function sees them.
pub(crate) fn header_view(message: &PublishMessage) -> HeaderView<'_> {
    view_of(&message.headers)
}

/// The headers of a stored message, as a function sees them.
pub(crate) fn stored_header_view(message: &StoredMessage) -> HeaderView<'_> {
    view_of(&message.headers)
}

/// The headers of a function's replacement (or published message): its name,
/// content type and application headers (any `tern-` header it set is ignored: the
/// reserved ones are the edge's), with `kept` reserved headers of the original.
fn function_headers(
    name: Option<String>,
    content_type: Option<String>,
    app: Vec<(String, String)>,
    data: &[u8],
    kept: impl IntoIterator<Item = (String, String)>,
    was_binary: bool,
) -> Vec<(String, String)> {
    let mut headers = Vec::with_capacity(app.len() + 4);
    if let Some(name) = name {
        headers.push((NAME.to_owned(), name));
    }
    if let Some(content_type) = content_type {
        headers.push((CONTENT_TYPE.to_owned(), content_type));
    }
    headers.extend(kept);
    if was_binary || std::str::from_utf8(data).is_err() {
        headers.push((BINARY.to_owned(), "1".to_owned()));
    }
    headers.extend(
        app.into_iter()
            .filter(|(name, _)| !name.starts_with(RESERVED_PREFIX)),
    );
    headers
}

fn kept_headers(headers: &[(String, String)]) -> (Vec<(String, String)>, bool) {
    let kept = headers
        .iter()
        .filter(|(name, _)| name == CLIENT_ID || name == FN_DEPTH)
        .cloned()
        .collect();
    let binary = headers
        .iter()
        .any(|(name, value)| name == BINARY && value == "1");
    (kept, binary)
}

/// `original` with a function's replacement: same channel, id and publisher; body,
/// name, content type and application headers from the replacement. Errs when the
/// replacement is over `max_message_bytes`.
pub(crate) fn replaced(
    original: &PublishMessage,
    replacement: tern_wasm::Outgoing,
    max_message_bytes: usize,
) -> Result<PublishMessage, String> {
    let size = replacement.data.len()
        + replacement.name.as_ref().map_or(0, String::len)
        + replacement.content_type.as_ref().map_or(0, String::len)
        + original.idempotency_key.len()
        + replacement
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if size > max_message_bytes {
        return Err(format!(
            "its replacement is {size} bytes, over max_message_bytes ({max_message_bytes})"
        ));
    }
    let (kept, binary) = kept_headers(&original.headers);
    let headers = function_headers(
        replacement.name,
        replacement.content_type,
        replacement.headers,
        &replacement.data,
        kept,
        binary,
    );
    Ok(PublishMessage {
        channel: original.channel.clone(),
        idempotency_key: original.idempotency_key.clone(),
        headers,
        payload: Bytes::from(replacement.data),
    })
}

/// A stored message as an egress function replaced it (same position, id, time).
pub(crate) fn replaced_stored(
    original: StoredMessage,
    replacement: tern_wasm::Outgoing,
) -> StoredMessage {
    let (kept, binary) = kept_headers(&original.headers);
    let headers = function_headers(
        replacement.name,
        replacement.content_type,
        replacement.headers,
        &replacement.data,
        kept,
        binary,
    );
    StoredMessage {
        headers,
        payload: Bytes::from(replacement.data),
        ..original
    }
}

/// A message a function published, `depth` functions deep, with id `key`.
pub(crate) fn function_publish(
    channel: String,
    message: tern_wasm::Outgoing,
    key: String,
    depth: u32,
) -> PublishMessage {
    let headers = function_headers(
        message.name,
        message.content_type,
        message.headers,
        &message.data,
        [(FN_DEPTH.to_owned(), depth.to_string())],
        false,
    );
    PublishMessage {
        channel,
        idempotency_key: Bytes::from(key),
        headers,
        payload: Bytes::from(message.data),
    }
}

/// An ATTACH `from` as a cursor: the link position it names, or `None` for `0:0`
/// (before the channel's first message). Serial 0 in another epoch names nothing.
pub(crate) fn to_link_cursor(
    position: Position,
) -> Result<Option<tern_link::Position>, &'static str> {
    match Serial::new(position.serial) {
        Some(serial) => Ok(Some(tern_link::Position {
            epoch: Epoch(position.epoch),
            serial,
        })),
        None if position == Position::BEFORE_FIRST => Ok(None),
        None => Err(
            "`from.serial` starts at 1; only `{\"epoch\": 0, \"serial\": 0}` (before the channel's first message) has serial 0",
        ),
    }
}

/// A cursor as the client protocol writes it: `0:0` before the channel's first message.
pub(crate) fn to_client_cursor(cursor: Option<tern_link::Position>) -> Position {
    cursor.map_or(Position::BEFORE_FIRST, to_client_position)
}

/// A link position as the client protocol writes it.
pub(crate) fn to_client_position(position: tern_link::Position) -> Position {
    Position {
        epoch: position.epoch.0,
        serial: position.serial.get(),
    }
}

/// The message as the link stores it. `key` is its idempotency key (already checked
/// for length by the caller); `client_id` is the publisher's, if any.
pub(crate) fn to_publish_message(
    channel: &str,
    message: Message,
    key: String,
    client_id: Option<&str>,
) -> PublishMessage {
    let Message {
        name,
        data,
        content_type,
        headers: app_headers,
        ..
    } = message;
    let mut headers = Vec::with_capacity(app_headers.len() + 4);
    if let Some(name) = name {
        headers.push((NAME.to_owned(), name));
    }
    if let Some(content_type) = content_type {
        headers.push((CONTENT_TYPE.to_owned(), content_type));
    }
    if let Some(client_id) = client_id {
        headers.push((CLIENT_ID.to_owned(), client_id.to_owned()));
    }
    let payload = match data {
        Data::Text(text) => Bytes::from(text),
        Data::Binary(bytes) => {
            headers.push((BINARY.to_owned(), "1".to_owned()));
            bytes
        }
    };
    headers.extend(app_headers);
    PublishMessage {
        channel: channel.to_owned(),
        idempotency_key: Bytes::from(key),
        headers,
        payload,
    }
}

/// The message as a subscriber receives it. A payload that was published as text
/// but is not UTF-8 (written by something other than an edge) is delivered as binary.
pub(crate) fn to_client_message(stored: &StoredMessage) -> Message {
    let mut message = Message {
        id: Some(String::from_utf8_lossy(&stored.idempotency_key).into_owned()),
        timestamp: Some(stored.timestamp_ms),
        ..Message::default()
    };
    let mut binary = false;
    for (name, value) in &stored.headers {
        match name.as_str() {
            NAME => message.name = Some(value.clone()),
            CONTENT_TYPE => message.content_type = Some(value.clone()),
            CLIENT_ID => message.client_id = Some(value.clone()),
            BINARY => binary = value == "1",
            FN_DEPTH => {}
            _ => {
                message.headers.insert(name.clone(), value.clone());
            }
        }
    }
    message.data = match (binary, std::str::from_utf8(&stored.payload)) {
        (false, Ok(text)) => Data::Text(text.to_owned()),
        _ => Data::Binary(stored.payload.clone()),
    };
    message
}

/// The answer to a publish from the log's outcomes: every message stored (or a
/// duplicate) gives its result; any rejection fails the whole publish.
pub(crate) fn outcomes_to_results(outcomes: Vec<Outcome>) -> Result<Vec<PublishResult>, ErrorInfo> {
    outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Outcome::Appended(position) => Ok(PublishResult {
                position: to_client_position(position),
                duplicate: false,
                dropped: None,
            }),
            Outcome::Duplicate(position) => Ok(PublishResult {
                position: to_client_position(position),
                duplicate: true,
                dropped: None,
            }),
            Outcome::Rejected(error) => Err(ErrorInfo::new(
                ErrorCode::LogRejected,
                format!("the log refused a message: {}", error.message),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(publish: PublishMessage) -> StoredMessage {
        StoredMessage {
            position: tern_link::Position {
                epoch: Epoch(3),
                serial: Serial::FIRST,
            },
            timestamp_ms: 1234,
            idempotency_key: publish.idempotency_key,
            headers: publish.headers,
            payload: publish.payload,
        }
    }

    #[test]
    fn messages_survive_the_link() {
        let mut message = Message::new(Data::Binary(vec![0, 159, 146, 150].into()));
        message.name = Some("n".into());
        message.content_type = Some("application/octet-stream".into());
        message.headers.insert("k".into(), "v".into());
        let publish = to_publish_message("ch", message.clone(), "key-1".into(), Some("alice"));
        let back = to_client_message(&stored(publish));
        assert_eq!(back.data, message.data);
        assert_eq!(back.name, message.name);
        assert_eq!(back.content_type, message.content_type);
        assert_eq!(back.headers, message.headers);
        assert_eq!(back.client_id.as_deref(), Some("alice"));
        assert_eq!(back.id.as_deref(), Some("key-1"));
        assert_eq!(back.timestamp, Some(1234));

        let text = to_client_message(&stored(to_publish_message(
            "ch",
            Message::new("héllo"),
            "k".into(),
            None,
        )));
        assert_eq!(text.data, Data::Text("héllo".into()));
        assert_eq!(text.client_id, None);
    }

    #[test]
    fn foreign_non_utf8_payloads_arrive_as_binary() {
        let mut publish = to_publish_message("ch", Message::new("x"), "k".into(), None);
        publish.payload = Bytes::from_static(&[0xff, 0xfe]);
        assert_eq!(
            to_client_message(&stored(publish)).data,
            Data::Binary(Bytes::from_static(&[0xff, 0xfe]))
        );
    }

    #[test]
    fn a_rejection_fails_the_publish() {
        let p = tern_link::Position {
            epoch: Epoch(1),
            serial: Serial::FIRST,
        };
        let ok = outcomes_to_results(vec![Outcome::Appended(p), Outcome::Duplicate(p)])
            .expect("all stored");
        assert!(!ok[0].duplicate && ok[1].duplicate);
        let rejected = tern_link::WireError::new(tern_link::ErrorCode::StorageFull, "disk full");
        let error = outcomes_to_results(vec![Outcome::Appended(p), Outcome::Rejected(rejected)])
            .expect_err("rejected");
        assert_eq!(error.code, ErrorCode::LogRejected);
        assert!(error.message.contains("disk full"));
    }

    #[test]
    fn cursors_name_0_0_before_the_first_message() {
        assert_eq!(to_link_cursor(Position::BEFORE_FIRST), Ok(None));
        assert!(
            to_link_cursor(Position {
                epoch: 1,
                serial: 0
            })
            .is_err()
        );
        let p = Position {
            epoch: 3,
            serial: 9,
        };
        let cursor = to_link_cursor(p).expect("a position");
        assert_eq!(to_client_cursor(cursor), p);
        assert_eq!(to_client_cursor(None), Position::BEFORE_FIRST);
    }
}
