//! What one message costs through a function: the pass-through and the profanity
//! filter on 256-byte messages, one call per message and batches of 64 (criterion
//! reports per message for batches), next to the same logic as a native closure, with
//! epoch interruption (the default) and with fuel.
//!
//! `cargo bench -p tern-wasm --bench call -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tern_fnbuild::BuildOptions;
use tern_wasm::{Action, Function, Host, HostConfig, Interruption, Limits, MessageRef};

const BATCH: usize = 64;
/// Enough fuel that a benchmark call never runs out (the limit is not what is measured).
const FUEL_PER_MS: u64 = 1_000_000_000;

/// 256 bytes of clean text: the filter scans every word and passes.
fn body() -> Vec<u8> {
    let text = "the quick brown fox jumps over the lazy dog while a friendly otter waves ";
    text.bytes().cycle().take(256).collect()
}

/// A message with every field set: name, content type, two headers, client id. Each
/// string is a separate allocation in the guest (canonical ABI), so fields cost.
fn typical(data: &[u8]) -> MessageRef<'_> {
    MessageRef {
        id: "client-7:42",
        channel: "chat:lobby",
        name: Some("say"),
        data,
        content_type: Some("text/plain"),
        headers: &[("lang", "en"), ("x-trace", "abc123")],
        client_id: Some("client-7"),
        timestamp_ms: 1_700_000_000_000,
    }
}

/// A message with only what every message has: id, channel, body.
fn minimal(data: &[u8]) -> MessageRef<'_> {
    MessageRef {
        id: "client-7:42",
        channel: "chat:lobby",
        name: None,
        data,
        content_type: None,
        headers: &[],
        client_id: None,
        timestamp_ms: 1_700_000_000_000,
    }
}

fn component_bytes(path: &str) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    let options = BuildOptions {
        target_dir: None,
        quiet: true,
    };
    let built =
        tern_fnbuild::build(&dir, &options).unwrap_or_else(|e| panic!("building {path}: {e}"));
    std::fs::read(&built.component).expect("the component fnbuild wrote")
}

fn function(host: &Host, name: &str, wasm: &[u8]) -> Function {
    let component = host.compile(wasm).expect("compiles");
    // A generous deadline: the limit is not what is measured, and a benchmark thread
    // preempted by other work must not fail a call.
    let limits = Limits {
        timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    host.function(name, &component, limits).expect("loads")
}

fn native_profanity(message: &MessageRef<'_>) -> Action {
    match std::str::from_utf8(message.data)
        .ok()
        .and_then(profanity::blocked_word)
    {
        Some(word) => Action::Reject(format!("message contains a blocked word: {word:?}")),
        None => Action::Pass,
    }
}

type Shape = for<'a> fn(&'a [u8]) -> MessageRef<'a>;

fn one_function(
    c: &mut Criterion,
    name: &str,
    functions: &[(&str, Function)],
    native: fn(&MessageRef<'_>) -> Action,
) {
    let data = body();
    for (shape_name, shape) in [("minimal", minimal as Shape), ("typical", typical as Shape)] {
        let single = shape(&data);
        let batch: Vec<MessageRef<'_>> = (0..BATCH).map(|_| shape(&data)).collect();

        let mut group = c.benchmark_group(format!("{name}/{shape_name}/single"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("native", |b| b.iter(|| native(black_box(&single))));
        for (label, function) in functions {
            assert_eq!(
                function.call(&single).expect("call").action,
                native(&single)
            );
            group.bench_function(*label, |b| {
                b.iter(|| function.call(black_box(&single)).expect("call"))
            });
        }
        group.finish();

        let mut group = c.benchmark_group(format!("{name}/{shape_name}/batch{BATCH}"));
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function("native", |b| {
            b.iter(|| black_box(&batch).iter().map(native).collect::<Vec<_>>())
        });
        for (label, function) in functions {
            group.bench_function(*label, |b| {
                b.iter(|| function.call_batch(black_box(&batch)).expect("batch"))
            });
        }
        group.finish();
    }
}

fn calls(c: &mut Criterion) {
    let epoch = Host::new(HostConfig::default()).expect("epoch host");
    let fuel = Host::new(HostConfig {
        interruption: Interruption::Fuel {
            per_ms: FUEL_PER_MS,
        },
        ..HostConfig::default()
    })
    .expect("fuel host");

    for (name, path, native) in [
        (
            "passthrough",
            "functions/passthrough",
            (|_: &MessageRef<'_>| Action::Pass) as fn(&MessageRef<'_>) -> Action,
        ),
        ("profanity", "functions/profanity", native_profanity),
    ] {
        let wasm = component_bytes(path);
        let functions = [
            ("wasm-epoch", function(&epoch, name, &wasm)),
            ("wasm-fuel", function(&fuel, name, &wasm)),
        ];
        one_function(c, name, &functions, native);
    }
}

criterion_group!(benches, calls);
criterion_main!(benches);
