//! What the `$functions` channel holds: one [`FunctionRecord`] per message, in the
//! order every edge applies them. Written by an edge's admin API, read back by every
//! edge's follower (`tern-edge`, `functions/sync.rs`); fuzzed by
//! `fuzz/fuzz_targets/function_records.rs`.
//!
//! A record is postcard-encoded behind a one-byte format version, so a future format
//! can be told apart from damage. The component travels inside its deploy record:
//! the log is the only place functions are stored, and an edge that starts later
//! replays the channel from the start to reach the same state as the others.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tern_config::{BindingSpec, ConfigError, FailurePolicy, RawBindingSpec, RawByteSize, Stage};

/// The channel deploys are written to.
pub const CHANNEL: &str = "$functions";

/// The first byte of every record this edge writes.
const FORMAT_V1: u8 = 1;

/// One change to the deployed functions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FunctionRecord {
    /// Deploy (or replace) function `name` with this component and binding.
    Deploy {
        /// The function's name.
        name: String,
        /// How it is bound (checked again on apply).
        binding: BindingRecord,
        /// The component's bytes.
        wasm: Bytes,
        /// When it is a rollback: the version whose component and binding it restores.
        rollback_of: Option<u32>,
    },
    /// Remove function `name` (its bindings stop at once).
    Remove {
        /// The function's name.
        name: String,
    },
}

/// A [`BindingSpec`] as stored: plain numbers, so the encoding needs no
/// self-describing format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BindingRecord {
    /// Channel patterns, as written.
    pub patterns: Vec<String>,
    /// Where it runs.
    pub stage: Stage,
    /// What a failure does to the message.
    pub policy: FailurePolicy,
    /// Time limit per call, microseconds.
    pub timeout_us: u64,
    /// Memory limit per instance, bytes.
    pub memory_bytes: u64,
    /// Place in the chain.
    pub order: i32,
}

impl BindingRecord {
    /// The stored form of `spec`.
    pub fn from_spec(spec: &BindingSpec) -> Self {
        Self {
            patterns: spec
                .patterns
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            stage: spec.stage,
            policy: spec.policy,
            timeout_us: u64::try_from(spec.timeout.as_micros()).unwrap_or(u64::MAX),
            memory_bytes: spec.memory_bytes as u64,
            order: spec.order,
        }
    }

    /// The spec again, checked as a config would be (`max_memory_bytes` is this
    /// edge's ceiling).
    pub fn to_spec(&self, max_memory_bytes: usize) -> Result<BindingSpec, ConfigError> {
        RawBindingSpec {
            bind: self.patterns.clone(),
            stage: Some(self.stage),
            policy: Some(self.policy),
            timeout: Some(format!("{}us", self.timeout_us)),
            memory: Some(RawByteSize::Count(
                i64::try_from(self.memory_bytes).unwrap_or(i64::MAX),
            )),
            order: Some(self.order),
        }
        .compile("binding", max_memory_bytes)
    }
}

/// Why a `$functions` message could not be read as a record (written by a newer edge,
/// or damaged).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// An empty payload.
    #[error("empty $functions record")]
    Empty,
    /// A format this edge does not know.
    #[error(
        "$functions record format {0} is not known to this edge (it knows 1): written by a newer edge?"
    )]
    UnknownFormat(u8),
    /// Not a valid record.
    #[error("damaged $functions record: {0}")]
    Damaged(String),
}

impl FunctionRecord {
    /// The bytes stored in the log.
    pub fn encode(&self) -> Bytes {
        let mut bytes = vec![FORMAT_V1];
        // Serializing owned strings, bytes and integers into a Vec cannot fail.
        bytes.extend(postcard::to_stdvec(self).expect("a record always serializes"));
        Bytes::from(bytes)
    }

    /// A record read back from the log.
    pub fn decode(bytes: &[u8]) -> Result<FunctionRecord, RecordError> {
        match bytes.split_first() {
            None => Err(RecordError::Empty),
            Some((&FORMAT_V1, rest)) => {
                postcard::from_bytes(rest).map_err(|e| RecordError::Damaged(e.to_string()))
            }
            Some((&other, _)) => Err(RecordError::UnknownFormat(other)),
        }
    }

    /// The function the record is about.
    pub fn name(&self) -> &str {
        match self {
            FunctionRecord::Deploy { name, .. } | FunctionRecord::Remove { name } => name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_bytes_are_errors() {
        let deploy = FunctionRecord::Deploy {
            name: "profanity".into(),
            binding: BindingRecord {
                patterns: vec!["chat:*".into()],
                stage: Stage::Ingress,
                policy: FailurePolicy::FailOpen,
                timeout_us: 2000,
                memory_bytes: 1 << 24,
                order: -1,
            },
            wasm: Bytes::from_static(b"\0asm"),
            rollback_of: Some(2),
        };
        let bytes = deploy.encode();
        assert_eq!(FunctionRecord::decode(&bytes).expect("round trip"), deploy);
        let FunctionRecord::Deploy { binding, .. } = &deploy else {
            unreachable!("built as a deploy above")
        };
        let spec = binding.to_spec(64 << 20).expect("a valid binding");
        assert_eq!(&BindingRecord::from_spec(&spec), binding);
        assert!(matches!(
            FunctionRecord::decode(&[]),
            Err(RecordError::Empty)
        ));
        assert!(matches!(
            FunctionRecord::decode(&[9, 1, 2]),
            Err(RecordError::UnknownFormat(9))
        ));
        assert!(matches!(
            FunctionRecord::decode(&bytes[..bytes.len() - 3]),
            Err(RecordError::Damaged(_))
        ));
    }
}
