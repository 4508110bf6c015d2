//! Connection keys: what CONNECTED hands a client so that it can resume its
//! connection on any edge of the cluster (CONNECT `resume`), and what stops anyone
//! from resuming someone else's.
//!
//! A key is self-contained, so an edge needs no state to honour it (edges keep
//! cursors, not data): it names the connection, the API key and client id it ran
//! under and when it expires, signed with the cluster's secret (HMAC-SHA256). Every
//! edge of the cluster shares the secret; after a rotation the previous secrets still
//! verify while keys signed with them can be alive.
//!
//! ```text
//!  key  = base64url( VERSION ‖ postcard(Claims) ‖ HMAC-SHA256(secret, VERSION ‖ postcard(Claims)) )
//!  issue(claims) ─▶ key            verify(key) ─▶ Claims ─▶ Claims::check(now, api key, client id)
//! ```
//!
//! A key is valid until `expires_unix_ms`; the edge issues keys valid for the state
//! TTL plus the refresh interval and sends a fresh one every refresh interval, so a
//! client can resume for at least the state TTL after its connection dropped.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// The first byte of every key: the layout of what follows.
const VERSION: u8 = 1;
/// Bytes of the HMAC-SHA256 tag.
const TAG_BYTES: usize = 32;
/// Longest key accepted, in characters: longer text is refused before it is decoded.
pub const MAX_KEY_CHARS: usize = 1024;

/// What a connection key says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The connection's id.
    pub connection_id: String,
    /// The app of the API key the connection authenticated with.
    pub app: String,
    /// The id of that API key.
    pub key_id: String,
    /// The client id the connection ran under, if any.
    pub client_id: Option<String>,
    /// When the key stops being valid, in milliseconds since the Unix epoch.
    pub expires_unix_ms: u64,
}

/// Why a key cannot resume a connection. The `Display` text is meant for the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not a key at all: wrong length, not base64url, unknown version, bad claims.
    #[error("the connection key is malformed")]
    Malformed,
    /// Well formed, but not signed by this cluster (or altered).
    #[error("the connection key was not issued by this cluster")]
    BadSignature,
    /// Signed by the cluster, but too old.
    #[error("the connection key expired {ago_ms} ms ago: the state TTL has passed")]
    Expired {
        /// How long ago.
        ago_ms: u64,
    },
    /// Presented with another API key than the one the connection ran under.
    #[error("the connection key belongs to another API key")]
    OtherApiKey,
    /// Presented with another client id than the one the connection ran under.
    #[error("the connection key belongs to another client id")]
    OtherClientId,
}

impl Claims {
    /// Checks that these claims, already verified, let a client presenting API key
    /// `app.key_id` and `client_id` resume at `now_unix_ms`.
    pub fn check(
        &self,
        now_unix_ms: u64,
        app: &str,
        key_id: &str,
        client_id: Option<&str>,
    ) -> Result<(), Refused> {
        if now_unix_ms > self.expires_unix_ms {
            return Err(Refused::Expired {
                ago_ms: now_unix_ms - self.expires_unix_ms,
            });
        }
        if self.app != app || self.key_id != key_id {
            return Err(Refused::OtherApiKey);
        }
        if self.client_id.as_deref() != client_id {
            return Err(Refused::OtherClientId);
        }
        Ok(())
    }
}

/// Issues and verifies connection keys with the cluster's secrets.
pub struct Signer {
    /// The secret that signs, then the previous ones (verify only).
    keys: Vec<hmac::Key>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("secrets", &self.keys.len())
            .finish()
    }
}

impl Signer {
    /// Signs with `current`; also accepts keys signed with any of `previous`.
    pub fn new(current: &[u8], previous: &[&[u8]]) -> Self {
        let keys = std::iter::once(current)
            .chain(previous.iter().copied())
            .map(|secret| hmac::Key::new(hmac::HMAC_SHA256, secret))
            .collect();
        Self { keys }
    }

    /// The key for `claims`.
    pub fn issue(&self, claims: &Claims) -> String {
        let mut bytes = vec![VERSION];
        // Serializing plain strings and integers into a Vec cannot fail.
        bytes = postcard::to_extend(claims, bytes).unwrap_or_else(|_| vec![VERSION]);
        let tag = hmac::sign(&self.keys[0], &bytes);
        bytes.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The claims of `key` if one of the secrets signed it (compared in constant
    /// time). Says nothing about expiry: see [`Claims::check`].
    pub fn verify(&self, key: &str) -> Result<Claims, Refused> {
        if key.len() > MAX_KEY_CHARS {
            return Err(Refused::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(key)
            .map_err(|_| Refused::Malformed)?;
        if bytes.len() < 1 + TAG_BYTES || bytes[0] != VERSION {
            return Err(Refused::Malformed);
        }
        let (signed, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
        if !self
            .keys
            .iter()
            .any(|secret| hmac::verify(secret, signed, tag).is_ok())
        {
            return Err(Refused::BadSignature);
        }
        match postcard::take_from_bytes::<Claims>(&signed[1..]) {
            Ok((claims, [])) => Ok(claims),
            _ => Err(Refused::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OTHER: &[u8] = b"fedcba9876543210fedcba9876543210";

    fn claims() -> Claims {
        Claims {
            connection_id: "edge-a-0123456789abcdef".into(),
            app: "app".into(),
            key_id: "k1".into(),
            client_id: Some("alice".into()),
            expires_unix_ms: 1_000_000,
        }
    }

    #[test]
    fn an_issued_key_verifies_and_checks_out_until_it_expires() {
        let signer = Signer::new(SECRET, &[]);
        let key = signer.issue(&claims());
        assert!(key.len() < 200, "{key}");
        let verified = signer.verify(&key).expect("valid");
        assert_eq!(verified, claims());
        assert_eq!(
            verified.check(1_000_000, "app", "k1", Some("alice")),
            Ok(())
        );
        assert_eq!(
            verified.check(1_000_250, "app", "k1", Some("alice")),
            Err(Refused::Expired { ago_ms: 250 })
        );
    }

    #[test]
    fn another_api_key_or_client_id_cannot_use_it() {
        let claims = claims();
        assert_eq!(
            claims.check(0, "app", "k2", Some("alice")),
            Err(Refused::OtherApiKey)
        );
        assert_eq!(
            claims.check(0, "other", "k1", Some("alice")),
            Err(Refused::OtherApiKey)
        );
        assert_eq!(
            claims.check(0, "app", "k1", Some("mallory")),
            Err(Refused::OtherClientId)
        );
        assert_eq!(
            claims.check(0, "app", "k1", None),
            Err(Refused::OtherClientId)
        );
    }

    #[test]
    fn a_key_of_another_cluster_or_altered_is_refused() {
        let ours = Signer::new(SECRET, &[]);
        let theirs = Signer::new(OTHER, &[]);
        let key = theirs.issue(&claims());
        assert_eq!(ours.verify(&key), Err(Refused::BadSignature));

        // Flip each byte of a valid key in turn: never accepted.
        let bytes = URL_SAFE_NO_PAD.decode(ours.issue(&claims())).expect("b64");
        for i in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[i] ^= 0x01;
            let verdict = ours.verify(&URL_SAFE_NO_PAD.encode(&altered));
            assert!(
                matches!(verdict, Err(Refused::BadSignature | Refused::Malformed)),
                "byte {i}: {verdict:?}"
            );
        }
    }

    #[test]
    fn previous_secrets_verify_but_never_sign() {
        let before = Signer::new(OTHER, &[]);
        let rotated = Signer::new(SECRET, &[OTHER]);
        let old_key = before.issue(&claims());
        assert_eq!(rotated.verify(&old_key), Ok(claims()));
        let new_key = rotated.issue(&claims());
        assert_eq!(before.verify(&new_key), Err(Refused::BadSignature));
    }

    #[test]
    fn garbage_is_malformed() {
        let signer = Signer::new(SECRET, &[]);
        for key in ["", "not base64!", "AAAA", &"A".repeat(MAX_KEY_CHARS + 1)] {
            assert_eq!(signer.verify(key), Err(Refused::Malformed), "{key:?}");
        }
        // Signed, but the claims do not decode.
        let mut bytes = vec![VERSION, 0xff, 0xff];
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SECRET), &bytes);
        bytes.extend_from_slice(tag.as_ref());
        assert_eq!(
            signer.verify(&URL_SAFE_NO_PAD.encode(bytes)),
            Err(Refused::Malformed)
        );
    }
}
