//! `tern-config` (placeholder while being written).
