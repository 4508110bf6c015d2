//! Who may use `/v1/health`: a request carrying `Authorization: Bearer TOKEN` with one
//! of the config's `report_tokens` (for any edge) or an edge's own `report_tokens` (for
//! that edge only: [`Grant::Edge`], checked against the report once it is read). Both
//! kinds may read the table. With no token configured (tern-config allows that only on
//! a loopback `report_listen`) every request may. Sans-IO: [`ReportAuth::check`] takes
//! the header values as they arrived.
//!
//! ```text
//!  Authorization values ──▶ exactly one? "Bearer" (any case) + spaces + TOKEN?
//!                       ──▶ TOKEN compared with every token (constant time, all of
//!                           them, whichever matches) ──▶ Grant | AuthError
//! ```

use tern_config::{DnsConfig, ReportToken};

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
    /// A token that is none of `report_tokens`, the top level's or the edges'.
    #[error("the bearer token is not one of tern dns's report_tokens")]
    Wrong,
}

/// What a request's token lets it do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grant {
    /// Report for any edge (one of `report_tokens`, or no tokens configured).
    AnyEdge,
    /// Report for this edge only (one of its own `report_tokens`).
    Edge(String),
}

impl Grant {
    /// Whether a report for `edge` is allowed.
    pub(crate) fn allows(&self, edge: &str) -> bool {
        match self {
            Grant::AnyEdge => true,
            Grant::Edge(own) => own == edge,
        }
    }
}

/// The tokens `/v1/health` accepts, each with what it grants.
#[derive(Debug)]
pub(crate) struct ReportAuth {
    tokens: Vec<(ReportToken, Grant)>,
}

impl ReportAuth {
    /// Accepts any of `tokens` for any edge; with none, accepts every request.
    #[cfg(test)]
    pub(crate) fn new(tokens: &[ReportToken]) -> ReportAuth {
        ReportAuth {
            tokens: tokens
                .iter()
                .map(|token| (token.clone(), Grant::AnyEdge))
                .collect(),
        }
    }

    /// The config's `report_tokens`, for any edge, and each edge's own
    /// `report_tokens`, for that edge.
    pub(crate) fn from_config(config: &DnsConfig) -> ReportAuth {
        let any = config
            .report_tokens
            .iter()
            .map(|token| (token.clone(), Grant::AnyEdge));
        let own = config
            .pops
            .iter()
            .flat_map(|pop| &pop.edges)
            .flat_map(|edge| {
                edge.report_tokens
                    .iter()
                    .map(|token| (token.clone(), Grant::Edge(edge.name.clone())))
            });
        ReportAuth {
            tokens: any.chain(own).collect(),
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
    ) -> Result<Grant, AuthError> {
        if !self.enabled() {
            return Ok(Grant::AnyEdge);
        }
        let mut values = values.into_iter();
        let value = values.next().ok_or(AuthError::Missing)?;
        if values.next().is_some() {
            return Err(AuthError::Malformed);
        }
        let presented = bearer(value).ok_or(AuthError::Malformed)?;
        // Every token is compared, so the time taken does not say which one matched.
        // tern-config allows no token in two places, so at most one does.
        let mut matched = None;
        for (token, grant) in &self.tokens {
            if token.matches(presented) {
                matched = Some(grant);
            }
        }
        matched.cloned().ok_or(AuthError::Wrong)
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
        auth.check(values.iter().map(|v| v.as_bytes())).map(|_| ())
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
    fn an_edge_token_grants_that_edge_only() {
        const OWN: &str = "fra-1-own-token-0123456789abcdef0123";
        let text = format!(
            "name = \"edge.tern.test.\"\nfallback = [\"192.0.2.100\"]\nreport_tokens = [{OLD:?}]\n\
             [[pops]]\nname = \"fra\"\n[[pops.edges]]\nname = \"fra-1\"\naddrs = [\"192.0.2.11\"]\nreport_tokens = [{OWN:?}]\n\
             [[pops.edges]]\nname = \"fra-2\"\naddrs = [\"192.0.2.12\"]\n"
        );
        let config = tern_config::parse_dns_config(&text).expect("valid config");
        let auth = ReportAuth::from_config(&config);
        let grant = |token: &str| auth.check([format!("Bearer {token}").as_bytes()]);
        let own = grant(OWN).expect("the edge's own token");
        assert_eq!(own, Grant::Edge("fra-1".to_owned()));
        assert!(own.allows("fra-1") && !own.allows("fra-2"));
        let any = grant(OLD).expect("a token for any edge");
        assert!(any.allows("fra-1") && any.allows("fra-2"));
        assert_eq!(grant(NEW), Err(AuthError::Wrong));
    }

    #[test]
    fn without_tokens_nothing_is_checked() {
        let open = ReportAuth::new(&[]);
        assert!(!open.enabled());
        assert_eq!(check(&open, &[]), Ok(()));
        assert_eq!(check(&open, &["Basic whatever"]), Ok(()));
    }
}
