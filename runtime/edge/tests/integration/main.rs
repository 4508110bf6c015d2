//! tern-edge's integration tests: a real log node and real edges on loopback, driven
//! by clients that speak the protocol by hand ([`support`]).
//!
//! One test binary for all of them: each links wasmtime, so nine binaries took about
//! half a gigabyte of disk and nine slow links. Run one area with a filter, e.g.
//! `cargo test -p tern-edge --test integration sse::`.

mod support;

mod bad_input;
mod catch_up;
mod ending;
mod functions;
mod health;
mod history;
mod rewind;
mod sse;
mod ws;
