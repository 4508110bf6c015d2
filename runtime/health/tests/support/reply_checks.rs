//! Checks one input must pass, shared by the bounded mutation test
//! (`tests/fuzz_corpus.rs`) and the `bird_replies` cargo-fuzz target.
//!
//! Input layout: the first byte picks a chunk size (1 to 64 bytes), the rest is what
//! a BIRD control socket sent. The stream is decoded whole and in chunks of that size;
//! both must give the same replies and the same error, nothing may panic, and every
//! reply is read as `show protocols`, `show route` and `enable`/`disable` answers
//! (routes read must be consistent: next hops only under unicast routes).

use tern_health::bird::{
    Destination, MAX_LINE_BYTES, MAX_REPLY_BYTES, ProtocolStatus, Reply, ReplyDecoder, ReplyError,
    Route, Toggled,
};

/// Runs every check on `input`.
pub(crate) fn check_input(input: &[u8]) {
    let Some((&split, stream)) = input.split_first() else {
        return;
    };
    let chunk = 1 + usize::from(split % 64);

    let mut whole = ReplyDecoder::new();
    let whole_result = whole.handle_bytes(stream);
    let whole_replies = drain(&mut whole);

    let mut pieces = ReplyDecoder::new();
    let mut pieces_result = Ok(());
    let mut pieces_replies = Vec::new();
    for part in stream.chunks(chunk) {
        pieces_result = pieces.handle_bytes(part);
        pieces_replies.extend(drain(&mut pieces));
        if pieces_result.is_err() {
            break;
        }
    }
    assert_eq!(
        whole_result, pieces_result,
        "same outcome whole and in chunks"
    );
    assert_eq!(
        whole_replies, pieces_replies,
        "same replies whole and in chunks"
    );
    if whole_result.is_err() {
        assert_eq!(whole.handle_bytes(b"0000 \n"), Err(ReplyError::Broken));
    }

    for reply in &whole_replies {
        check_reply(reply);
    }
}

fn drain(decoder: &mut ReplyDecoder) -> Vec<Reply> {
    std::iter::from_fn(|| decoder.poll_reply()).collect()
}

fn check_reply(reply: &Reply) {
    assert!(!reply.lines().is_empty());
    let bytes: usize = reply.lines().iter().map(|l| l.text.len() + 6).sum();
    // Replacement characters may triple invalid bytes; the bound still holds loosely.
    assert!(bytes <= 3 * MAX_REPLY_BYTES + 6 * reply.lines().len());
    for line in reply.lines() {
        assert!(line.code.value() <= 9999);
        assert!(!line.text.contains('\n'));
        assert!(line.text.len() <= 3 * MAX_LINE_BYTES);
    }
    assert_eq!(
        reply.error().is_some(),
        reply.lines().iter().any(|l| l.code.is_error())
    );

    if let Ok(rows) = ProtocolStatus::from_reply(reply) {
        assert_eq!(rows.len(), reply.with_code(1002).count());
        for row in rows {
            for column in [&row.name, &row.kind, &row.table] {
                assert!(!column.is_empty() && !column.contains(char::is_whitespace));
            }
        }
    }
    if let Ok(routes) = Route::from_reply(reply) {
        for route in routes {
            assert!(!route.network.is_empty() && !route.protocol.is_empty());
            assert!(route.next_hops.is_empty() || route.destination == Destination::Unicast);
            for hop in &route.next_hops {
                assert!(!hop.interface.is_empty() && !hop.interface.contains(char::is_whitespace));
            }
            let _ = route.as_path();
        }
    }
    for enable in [true, false] {
        let _ = Toggled::from_reply(reply, enable);
    }
}
