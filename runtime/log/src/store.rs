//! The [`LogStore`] trait: what every log backend offers, and the types it speaks.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tern_link::{ChannelName, Epoch, ErrorCode, Position, Serial, StoredMessage, WireError};
use tokio::sync::broadcast;

/// One message to append.
#[derive(Clone, Debug, PartialEq)]
pub struct AppendRequest {
    /// The channel it goes to.
    pub channel: ChannelName,
    /// Its idempotency key (1 to 255 bytes): a retry with the same key on the same
    /// channel inside the dedupe window is answered with the original position.
    pub idempotency_key: Bytes,
    /// Headers, stored as given.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub payload: Bytes,
}

/// The durable outcome of one [`AppendRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored at this position.
    Appended(Position),
    /// The key was seen inside the dedupe window; nothing was stored this time.
    Duplicate(Position),
    /// This message was refused on its own; the rest of the batch is unaffected.
    Rejected(RecordError),
}

/// Why one message of a batch was refused. The publisher's fault: retrying the same
/// message fails the same way.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The idempotency key is empty or longer than 255 bytes.
    #[error("idempotency key must be 1 to 255 bytes, got {0}")]
    InvalidKey(usize),
    /// Payload plus headers exceed the store's per-message limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Payload and header bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// More headers than the format can hold (65 535).
    #[error("{0} headers; at most 65535 are allowed")]
    TooManyHeaders(usize),
}

impl RecordError {
    /// The link error a publisher receives.
    pub fn to_wire(&self) -> WireError {
        let code = match self {
            RecordError::InvalidKey(_) => ErrorCode::InvalidKey,
            RecordError::TooLarge { .. } | RecordError::TooManyHeaders(_) => {
                ErrorCode::MessageTooLarge
            }
        };
        WireError::new(code, self.to_string())
    }
}

/// Why a store operation failed as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The disk is full or a file size limit was hit. Nothing of the batch was
    /// stored; earlier data is intact; later appends may succeed once space frees up.
    #[error("storage full, nothing of this batch was stored: {0}")]
    StorageFull(String),
    /// An I/O error other than a full disk. For reads, the store goes on serving; for
    /// a failed fsync the store stops accepting appends until restarted, because the
    /// kernel may have dropped the unsynced pages (acknowledging after that would lie).
    #[error("storage failed while {context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The store refused the append because an earlier write or fsync failed.
    #[error("store is failed after an earlier storage error and accepts no appends: {0}")]
    Failed(String),
    /// The whole batch is over the batch limit.
    #[error("batch of {size} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge {
        /// Bytes in the batch.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The store is closed.
    #[error("the store is closed")]
    Closed,
    /// Stored data is not what the store wrote (found on read, after recovery).
    #[error("corrupt data in {file}: {detail}")]
    Corrupt {
        /// The file.
        file: String,
        /// What was wrong.
        detail: String,
    },
}

impl LogError {
    /// The link error an edge receives for this failure.
    pub fn to_wire(&self) -> WireError {
        let code = match self {
            LogError::StorageFull(_) => ErrorCode::StorageFull,
            LogError::Io { .. } | LogError::Failed(_) | LogError::Corrupt { .. } => {
                ErrorCode::StorageFailed
            }
            LogError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
            LogError::Closed => ErrorCode::ShuttingDown,
        };
        WireError::new(code, self.to_string())
    }
}

/// How much one read may return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimit {
    /// At most this many messages.
    pub messages: usize,
    /// At most this many bytes of keys, headers and payloads, except that the first
    /// message is returned whatever its size (so a read always makes progress).
    pub bytes: usize,
}

impl From<usize> for ReadLimit {
    /// A limit on the number of messages only.
    fn from(messages: usize) -> Self {
        Self {
            messages,
            bytes: usize::MAX,
        }
    }
}

/// What a read returned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReadResult {
    /// Messages from the requested serial on, in order, within the limit.
    pub messages: Vec<StoredMessage>,
    /// The first serial still stored (older ones were removed by retention).
    pub first_serial: Option<Serial>,
    /// True when the read stopped at its limit with more durable messages after the
    /// last one returned; false when it reached the channel's last durable message.
    pub more: bool,
    /// The channel's last durable position when it was read (`None`: nothing stored
    /// yet, or an unknown channel).
    pub last: Option<Position>,
}

/// What the store knows about one channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelInfo {
    /// First serial still stored.
    pub first_serial: Option<Serial>,
    /// Last durable position.
    pub last: Option<Position>,
    /// Where each epoch of the channel's history starts, oldest first: `(epoch, first
    /// serial assigned in it)`. Kept even after retention removed the messages.
    pub epochs: Vec<(Epoch, Serial)>,
}

impl ChannelInfo {
    /// The position the message with `serial` was assigned, whether or not retention
    /// has removed it since: its epoch is the one whose range holds `serial` in
    /// [`epochs`](Self::epochs), which outlive the messages. `None` for a serial not
    /// assigned yet. A subscriber holding this position can continue right after it
    /// as long as the messages after it are stored.
    pub fn assigned_position(&self, serial: Serial) -> Option<Position> {
        let last = self.last?;
        if serial > last.serial {
            return None;
        }
        if serial == last.serial {
            return Some(last);
        }
        let epoch = epoch_of(&self.epochs, serial)?;
        Some(Position { epoch, serial })
    }
}

/// The epoch that assigned `serial`, given a channel's epoch table (`(epoch, first
/// serial assigned in it)`, oldest first): the newest epoch starting at or before
/// `serial`, since later epochs only replaced serials from their own start on.
pub(crate) fn epoch_of(epochs: &[(Epoch, Serial)], serial: Serial) -> Option<Epoch> {
    epochs
        .iter()
        .rev()
        .find(|(_, start)| *start <= serial)
        .map(|(epoch, _)| *epoch)
}

/// Messages that just became durable, for live tails. Sent once per group commit.
#[derive(Debug, Default)]
pub struct CommittedBatch {
    /// Per channel, the new messages in serial order.
    pub channels: Vec<(ChannelName, Vec<StoredMessage>)>,
}

/// What a retention pass removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segment files deleted.
    pub segments_removed: usize,
    /// Bytes freed.
    pub bytes_removed: u64,
}

/// A durable, ordered, deduplicating per-channel log.
///
/// Every backend passes [`crate::conformance`]. The contract:
/// - `append` returns only once every outcome is durable under the store's policy;
///   outcomes are per message and in request order; serials are dense per channel.
/// - `read` and `tail` deliver only durable messages.
/// - Anything sent on `tail` after a call to `tail` returned is also visible to
///   `read` by the time it is sent, so "read until `more` is false, then follow the
///   tail and skip what was read" never loses or repeats a message.
pub trait LogStore: Send + Sync + 'static {
    /// Appends a batch; see the trait docs.
    fn append(
        &self,
        batch: Vec<AppendRequest>,
    ) -> impl Future<Output = Result<Vec<AppendOutcome>, LogError>> + Send;

    /// Durable messages of `channel` from serial `from` on, within `limit` (a
    /// message count, or a [`ReadLimit`] that also bounds bytes).
    fn read(
        &self,
        channel: &ChannelName,
        from: Serial,
        limit: impl Into<ReadLimit> + Send,
    ) -> impl Future<Output = Result<ReadResult, LogError>> + Send;

    /// The serial of the first durable message of `channel` stored at or after
    /// `since_ms` (milliseconds since the Unix epoch), if any: reading from it gives
    /// everything stored since then. Message timestamps never decrease along a
    /// channel, whatever the wall clock does.
    fn first_serial_since(
        &self,
        channel: &ChannelName,
        since_ms: u64,
    ) -> impl Future<Output = Result<Option<Serial>, LogError>> + Send;

    /// What the store knows of `channel` (all `None`/empty for an unknown channel).
    fn channel_info(
        &self,
        channel: &ChannelName,
    ) -> impl Future<Output = Result<ChannelInfo, LogError>> + Send;

    /// The last durable position of `channel`.
    fn last_position(
        &self,
        channel: &ChannelName,
    ) -> impl Future<Output = Result<Option<Position>, LogError>> + Send {
        async move { Ok(self.channel_info(channel).await?.last) }
    }

    /// Follows every message as it becomes durable. A receiver that falls more than
    /// the store's tail capacity behind gets `RecvError::Lagged` and must re-read.
    fn tail(&self) -> broadcast::Receiver<Arc<CommittedBatch>>;

    /// Removes what the retention policy no longer keeps.
    fn enforce_retention(&self) -> impl Future<Output = Result<RetentionReport, LogError>> + Send;

    /// Flushes, checkpoints and stops accepting appends.
    fn close(&self) -> impl Future<Output = Result<(), LogError>> + Send;
}
