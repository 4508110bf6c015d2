//! Checks one input must pass, shared by the bounded mutation test
//! (`tests/fuzz_corpus.rs`) and the `connection_keys` cargo-fuzz target.
//!
//! Input layout: the first byte picks the mode, the rest is the body.
//! - Mode even: the body, as text, is a key a client presented; [`Signer::verify`]
//!   never panics, and a key it accepts was signed with [`SECRET`] and re-issues to
//!   a key with the same claims.
//! - Mode odd: the body is the signed part of a key (version byte and claims); it is
//!   signed here, so the claims decoder sees what no forger could reach, and must
//!   refuse or accept without a panic; accepted claims round-trip.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use tern_connkey::Signer;

/// The secret of the checks.
pub(crate) const SECRET: &[u8] = b"fuzzing-secret-0123456789abcdef0";

/// Runs every check on `input`.
pub(crate) fn check_input(input: &[u8]) {
    let Some((&mode, body)) = input.split_first() else {
        return;
    };
    let signer = Signer::new(SECRET, &[]);
    let key = if mode % 2 == 0 {
        String::from_utf8_lossy(body).into_owned()
    } else {
        let mut signed = body.to_vec();
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, SECRET), &signed);
        signed.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(signed)
    };
    if let Ok(claims) = signer.verify(&key) {
        let again = signer
            .verify(&signer.issue(&claims))
            .expect("a re-issued key verifies");
        assert_eq!(again, claims, "re-issuing changed the claims");
        let _ = claims.check(0, "app", "key", None);
    }
}
