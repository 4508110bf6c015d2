//! [`HttpBody`]: the body of every HTTP response the edge sends — all at once, or a
//! stream of chunks (Server-Sent Events).
//!
//! ```text
//!  route ──HttpBody::full(bytes)──▶ hyper (Content-Length, one write)
//!  SSE driver ──chunks──▶ bounded channel ──HttpBody::stream(rx)──▶ hyper (chunked)
//! ```
//!
//! A plain enum rather than a boxed body: a whole body costs what `Full` costs (no
//! allocation, exact size hint), and a stream is a bounded channel's receiver, so the
//! producer feels the client's pace. When hyper drops the body (the client went away,
//! a write failed), the channel closes and the producer notices.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// A response body: whole, or streamed from a channel. See the module docs.
#[derive(Debug)]
pub(crate) enum HttpBody {
    /// The whole body.
    Full(Full<Bytes>),
    /// Chunks as a producer sends them; the body ends when the sender is dropped.
    Stream(mpsc::Receiver<Bytes>),
}

impl HttpBody {
    /// A whole body.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        HttpBody::Full(Full::new(bytes.into()))
    }

    /// An empty body.
    pub(crate) fn empty() -> Self {
        HttpBody::full(Bytes::new())
    }

    /// A body streamed from `chunks`.
    pub(crate) fn stream(chunks: mpsc::Receiver<Bytes>) -> Self {
        HttpBody::Stream(chunks)
    }
}

impl Body for HttpBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            HttpBody::Full(full) => Pin::new(full).poll_frame(cx),
            HttpBody::Stream(chunks) => chunks
                .poll_recv(cx)
                .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            HttpBody::Full(full) => full.is_end_stream(),
            HttpBody::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            HttpBody::Full(full) => full.size_hint(),
            HttpBody::Stream(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    #[tokio::test]
    async fn whole_bodies_keep_their_size_and_streams_end_with_their_sender() {
        let full = HttpBody::full(Bytes::from_static(b"hello"));
        assert_eq!(full.size_hint().exact(), Some(5));
        assert_eq!(
            full.collect().await.expect("infallible").to_bytes(),
            Bytes::from_static(b"hello")
        );

        let (tx, rx) = mpsc::channel(2);
        let stream = HttpBody::stream(rx);
        assert_eq!(stream.size_hint().exact(), None);
        tx.send(Bytes::from_static(b"a")).await.expect("open");
        tx.send(Bytes::from_static(b"b")).await.expect("open");
        drop(tx);
        assert_eq!(
            stream.collect().await.expect("infallible").to_bytes(),
            Bytes::from_static(b"ab")
        );
    }

    #[tokio::test]
    async fn dropping_a_stream_closes_its_sender() {
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        drop(HttpBody::stream(rx));
        assert!(tx.is_closed());
    }
}
