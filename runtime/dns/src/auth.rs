//! Who may use `/v1/health`: a request carrying `Authorization: Bearer TOKEN` with one
//! of the config's `report_tokens`. With no token configured (tern-config allows that
//! only on a loopback `report_listen`) every request may. Sans-IO: [`ReportAuth::check`]
//! takes the header values as they arrived.
//!
//! ```text
//!  Authorization values ──▶ exactly one? "Bearer" (any case) + spaces + TOKEN?
//!                       ──▶ TOKEN compared with every report token (constant time,
//!                           all of them, whichever matches) ──▶ Ok | AuthError
//! ```

use tern_config::ReportToken;

/// Why a request was refused; every variant is answered 401. The fault is the
/// client's (an edge's `[health.dns] token` or an operator's request): retrying with
/// the same header cannot help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    /// No `Authorization` header.
    #[error(
        "/v1/health needs \"Authorization: Bearer TOKEN\" with one of tern dns's report_tokens"
    )]
    Missing,
    /// Several headers, another scheme than `Bearer`, or no token after it.
    #[error("Authorization must be one header \"Bearer TOKEN\"")]
    Malformed,
    /// A token that is none of `report_tokens`.
    #[error("the bearer token is not one of tern dns's report_tokens")]
    Wrong,
}

/// The tokens `/v1/health` accepts.
#[derive(Debug)]
pub(crate) struct ReportAuth {
    tokens: Vec<ReportToken>,
}

impl ReportAuth {
    /// Accepts any of `tokens`; with none, accepts every request.
    pub(crate) fn new(tokens: &[ReportToken]) -> ReportAuth {
        ReportAuth {
            tokens: tokens.to_vec(),
        }
    }

    /// Whether requests are checked at all.
    pub(crate) fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Checks a request whose `Authorization` header values are `values`.
    pub(crate) fn check<'a>(
        &self,
        values: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), AuthError> {
        if !self.enabled() {
            return Ok(());
        }
        let mut values = values.into_iter();
        let value = values.next().ok_or(AuthError::Missing)?;
        if values.next().is_some() {
            return Err(AuthError::Malformed);
        }
        let presented = bearer(value).ok_or(AuthError::Malformed)?;
        // Every token is compared, so the time taken does not say which one matched
        // during a rotation.
        let mut matched = false;
        for token in &self.tokens {
            matched |= token.matches(presented);
        }
        if matched {
            Ok(())
        } else {
            Err(AuthError::Wrong)
        }
    }
}

/// The token of `Bearer TOKEN` (the scheme in any case, RFC 9110 §11.1), if `value`
/// is that.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    let (scheme, rest) = value.split_at_checked(SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let start = rest.iter().position(|&b| b != b' ')?;
    rest.get(start..)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "0123456789abcdef0123456789abcdef";
    const NEW: &str = "fedcba9876543210fedcba9876543210-next";

    fn auth() -> ReportAuth {
        let tokens = [OLD, NEW].map(|t| ReportToken::parse(t).expect("valid token"));
        ReportAuth::new(&tokens)
    }

    fn check(auth: &ReportAuth, values: &[&str]) -> Result<(), AuthError> {
        auth.check(values.iter().map(|v| v.as_bytes()))
    }

    #[test]
    fn either_token_in_a_bearer_header_passes() {
        let auth = auth();
        assert!(auth.enabled());
        for value in [
            format!("Bearer {OLD}"),
            format!("Bearer {NEW}"),
            format!("bearer {OLD}"),
            format!("BEARER   {NEW}"),
        ] {
            assert_eq!(check(&auth, &[&value]), Ok(()), "{value}");
        }
    }

    #[test]
    fn anything_else_is_refused_with_its_reason() {
        let auth = auth();
        let mut off_by_one_byte = OLD.as_bytes().to_vec();
        off_by_one_byte[7] ^= 0x01;
        let off_by_one_byte = String::from_utf8(off_by_one_byte).expect("ASCII");
        assert_eq!(off_by_one_byte.len(), OLD.len());
        let cases: Vec<(Vec<String>, AuthError)> = vec![
            (vec![], AuthError::Missing),
            (vec![format!("Bearer {off_by_one_byte}")], AuthError::Wrong),
            (vec![format!("Bearer {}", &OLD[1..])], AuthError::Wrong),
            (vec![format!("Bearer {OLD}x")], AuthError::Wrong),
            (vec![format!("Bearer {OLD} ")], AuthError::Wrong),
            (vec![format!("Bearer {OLD}{NEW}")], AuthError::Wrong),
            (vec!["Bearer ".to_owned()], AuthError::Malformed),
            (vec!["Bearer    ".to_owned()], AuthError::Malformed),
            (vec![OLD.to_owned()], AuthError::Malformed),
            (vec![format!("Basic {OLD}")], AuthError::Malformed),
            (vec![format!("Bearer{OLD}")], AuthError::Malformed),
            (vec![String::new()], AuthError::Malformed),
            (
                vec![format!("Bearer {OLD}"), format!("Bearer {NEW}")],
                AuthError::Malformed,
            ),
        ];
        for (values, want) in cases {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            assert_eq!(check(&auth, &values), Err(want), "{values:?}");
        }
    }

    #[test]
    fn without_tokens_nothing_is_checked() {
        let open = ReportAuth::new(&[]);
        assert!(!open.enabled());
        assert_eq!(check(&open, &[]), Ok(()));
        assert_eq!(check(&open, &["Basic whatever"]), Ok(()));
    }
}
