//! The recovery key: everything a client needs to resume its connection after it
//! lost its memory (a page reload, a process restart), as one opaque string to save.
//!
//! ```text
//!  key = base64url( JSON {"connection_key": …, "msg_serial": n, "channels": {name: position}} )
//! ```
//!
//! The layout is documented in docs/protocol.md §7.1 so that other clients can share it.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use tern_protocol::Position;

/// Longest recovery key accepted, in characters.
const MAX_CHARS: usize = 1 << 20;

/// What a recovery key holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Recovery {
    /// The latest connection key of the connection.
    pub(crate) connection_key: String,
    /// The next msg_serial the connection would have used.
    pub(crate) msg_serial: u64,
    /// The last position handed to the application, per attached channel.
    pub(crate) channels: BTreeMap<String, Position>,
}

impl Recovery {
    /// The key, as saved.
    pub(crate) fn encode(&self) -> String {
        // A struct of strings and integers always serializes.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads a saved key.
    pub(crate) fn decode(key: &str) -> Result<Self, String> {
        if key.len() > MAX_CHARS {
            return Err(format!("the recovery key is over {MAX_CHARS} characters"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(key.trim())
            .map_err(|_| "the recovery key is not base64url".to_owned())?;
        serde_json::from_slice(&bytes).map_err(|e| format!("the recovery key is malformed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let recovery = Recovery {
            connection_key: "AQ5l".into(),
            msg_serial: 42,
            channels: [(
                "chat:1".to_owned(),
                Position {
                    epoch: 3,
                    serial: 9,
                },
            )]
            .into_iter()
            .collect(),
        };
        assert_eq!(Recovery::decode(&recovery.encode()), Ok(recovery));
        assert!(Recovery::decode("not base64!").is_err());
        assert!(Recovery::decode(&URL_SAFE_NO_PAD.encode(b"{}")).is_err());
    }
}
