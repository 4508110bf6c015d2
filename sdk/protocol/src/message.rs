//! Messages, their payloads and their positions.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a message sits in its channel: `serial` counts 1, 2, 3, … without gaps and
/// keeps counting across epochs; `epoch` changes only when the channel's history was
/// rebuilt, so a position from an older epoch is checked, never trusted blindly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    /// The history generation.
    pub epoch: u64,
    /// The message's number in its channel, from 1.
    pub serial: u64,
}

impl Position {
    /// `0:0`, the position before a channel's first message: what ATTACHED names when
    /// nothing precedes the delivery point, and an ATTACH `from` that asks for every
    /// message from the channel's first one.
    pub const BEFORE_FIRST: Position = Position {
        epoch: 0,
        serial: 0,
    };
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.serial)
    }
}

impl std::str::FromStr for Position {
    type Err = String;

    /// Parses `epoch:serial` (the form used in URLs and SSE event ids).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (epoch, serial) = text
            .split_once(':')
            .ok_or_else(|| format!("position {text:?} is not epoch:serial"))?;
        let epoch = epoch
            .parse()
            .map_err(|_| format!("epoch {epoch:?} is not a number"))?;
        let serial: u64 = serial
            .parse()
            .map_err(|_| format!("serial {serial:?} is not a number"))?;
        if serial == 0 {
            return Err("serials start at 1".into());
        }
        Ok(Position { epoch, serial })
    }
}

/// A message body. JSON carries text as a string and binary as `{"base64": "…"}`;
/// MessagePack carries text as `str` and binary as `bin`. Which of the two a
/// publisher sent is kept and delivered to subscribers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    /// UTF-8 text.
    Text(String),
    /// Arbitrary bytes.
    Binary(Bytes),
}

impl Default for Data {
    fn default() -> Self {
        Data::Text(String::new())
    }
}

impl Data {
    /// The body's bytes (UTF-8 for text).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Data::Text(text) => text.as_bytes(),
            Data::Binary(bytes) => bytes,
        }
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// True for an empty body.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<&str> for Data {
    fn from(text: &str) -> Self {
        Data::Text(text.to_owned())
    }
}

impl From<String> for Data {
    fn from(text: String) -> Self {
        Data::Text(text)
    }
}

impl From<Bytes> for Data {
    fn from(bytes: Bytes) -> Self {
        Data::Binary(bytes)
    }
}

impl From<Vec<u8>> for Data {
    fn from(bytes: Vec<u8>) -> Self {
        Data::Binary(bytes.into())
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Data::Text(text) => serializer.serialize_str(text),
            Data::Binary(bytes) if serializer.is_human_readable() => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("base64", &BASE64.encode(bytes))?;
                map.end()
            }
            Data::Binary(bytes) => serializer.serialize_bytes(bytes),
        }
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DataVisitor;

        impl<'de> Visitor<'de> for DataVisitor {
            type Value = Data;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, binary, or {\"base64\": \"…\"}")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Data, E> {
                Ok(Data::Text(text.to_owned()))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<Data, E> {
                Ok(Data::Text(text))
            }

            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Data, E> {
                Ok(Data::Binary(Bytes::copy_from_slice(bytes)))
            }

            fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Data, E> {
                Ok(Data::Binary(bytes.into()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Data, A::Error> {
                let mut decoded = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "base64" || decoded.is_some() {
                        return Err(de::Error::custom(format!(
                            "data object may only hold one \"base64\" field, found {key:?}"
                        )));
                    }
                    let text: String = map.next_value()?;
                    let bytes = BASE64
                        .decode(text.as_bytes())
                        .map_err(|e| de::Error::custom(format!("data.base64: {e}")))?;
                    decoded = Some(Data::Binary(bytes.into()));
                }
                decoded.ok_or_else(|| de::Error::custom("data object without \"base64\""))
            }
        }

        deserializer.deserialize_any(DataVisitor)
    }
}

/// One message, as published and as delivered.
///
/// Publishers set `name`, `data`, `content_type`, `headers` and optionally `id`;
/// the server fills in `id` (when absent), `client_id` and `timestamp` on delivery.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The message id, which is also its idempotency key: a publish that repeats an
    /// id already stored on the channel (within the dedupe window, 24 h by default)
    /// is acknowledged with the original position and not stored again. When absent
    /// the server uses `<connection id>:<msg_serial>:<index>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// An event name for the application (`"chat.message"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The body.
    #[serde(default)]
    pub data: Data,
    /// A MIME type for `data`, for the application and for functions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Application headers, delivered as given.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Set by the server: the publisher's client id, if its connection has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Set by the server: when the log stored the message, milliseconds since the
    /// Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
}

impl Message {
    /// A message with only a body.
    pub fn new(data: impl Into<Data>) -> Self {
        Self {
            data: data.into(),
            ..Self::default()
        }
    }

    /// The bytes that count against `max_message_bytes`: data, name, content type,
    /// id and headers.
    pub fn size(&self) -> usize {
        self.data.len()
            + self.name.as_ref().map_or(0, String::len)
            + self.content_type.as_ref().map_or(0, String::len)
            + self.id.as_ref().map_or(0, String::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}
