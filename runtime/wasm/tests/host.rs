//! The host against real components: the examples' pass-through and enricher, the
//! hostile guests under `tests/guests/`, and hand-made components with the wrong
//! world, version or imports. Run with `cargo test -p tern-wasm --test host`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tern_fnbuild::BuildOptions;
use tern_wasm::{
    Action, CallError, EdgeInfo, Function, Host, HostConfig, Limits, LoadError, MessageRef,
};

/// Builds the function crate at `path` (relative to the workspace root) once per
/// process and answers the component's bytes.
fn wasm(path: &str) -> Vec<u8> {
    static BUILT: OnceLock<Mutex<HashMap<String, Vec<u8>>>> = OnceLock::new();
    let built = BUILT.get_or_init(Mutex::default);
    // Held across the build: cargo would serialise concurrent builds on its lock anyway.
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(bytes) = built.get(path) {
        return bytes.clone();
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    let options = BuildOptions {
        target_dir: None,
        quiet: true,
    };
    let component = tern_fnbuild::build(&dir, &options)
        .unwrap_or_else(|e| panic!("building {path}: {e}"))
        .component;
    let bytes = std::fs::read(&component).expect("the component fnbuild wrote");
    built.insert(path.to_string(), bytes.clone());
    bytes
}

fn host() -> Host {
    Host::new(HostConfig {
        max_instances: 32,
        edge: EdgeInfo {
            name: "fra1".into(),
            region: "eu-central".into(),
        },
        ..HostConfig::default()
    })
    .expect("host")
}

/// Limits generous enough that a descheduled test thread never times out.
fn relaxed() -> Limits {
    Limits {
        timeout: Duration::from_secs(2),
        ..Limits::default()
    }
}

fn load(host: &Host, path: &str, limits: Limits) -> Function {
    let component = host.compile(&wasm(path)).expect("compiles");
    host.function(path, &component, limits).expect("loads")
}

fn message<'a>(channel: &'a str, name: Option<&'a str>, data: &'a [u8]) -> MessageRef<'a> {
    MessageRef {
        id: "m1",
        channel,
        name,
        data,
        content_type: Some("text/plain"),
        headers: &[("a", "1"), ("b", "2")],
        client_id: Some("client-7"),
        timestamp_ms: 1_700_000_000_000,
    }
}

/// The same function still answers an ordinary message with `Pass`.
fn still_passes(function: &Function) {
    match function.call(&message("chat:1", None, b"hello")) {
        Ok(invocation) => assert_eq!(invocation.action, Action::Pass),
        Err(other) => panic!("an ordinary message failed: {other}"),
    }
}

#[test]
fn pass_through_passes_single_and_batched() {
    let host = host();
    let component = host
        .compile(&wasm("functions/passthrough"))
        .expect("compiles");
    assert!(component.has_batch());
    assert_eq!(component.sha256_hex().len(), 64);
    let function = host
        .function("passthrough", &component, relaxed())
        .expect("loads");
    let data = vec![7u8; 256];
    let invocation = function
        .call(&message("chat:1", Some("hi"), &data))
        .expect("call");
    assert_eq!(invocation.action, Action::Pass);
    assert!(invocation.publishes.is_empty());

    let batch: Vec<MessageRef<'_>> = (0..64).map(|_| message("chat:1", None, &data)).collect();
    let answer = function.call_batch(&batch).expect("batch");
    assert_eq!(answer.actions, vec![Action::Pass; 64]);
    assert!(
        function
            .call_batch(&[])
            .expect("empty batch")
            .actions
            .is_empty()
    );
}

#[test]
fn host_imports_answer_the_configured_edge_and_the_clock() {
    let host = host();
    let function = load(&host, "functions/enricher", relaxed());
    let invocation = function
        .call(&message("chat:1", Some("hi"), b"hello"))
        .expect("call");
    let Action::Replace(replaced) = invocation.action else {
        panic!("expected a replacement, got {:?}", invocation.action);
    };
    let header = |name: &str| {
        replaced
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("x-pop").as_deref(), Some("fra1"));
    assert_eq!(header("x-region").as_deref(), Some("eu-central"));
    let server_ms: u64 = header("x-server-ms")
        .and_then(|v| v.parse().ok())
        .expect("x-server-ms is a number");
    assert!(server_ms > 1_700_000_000_000, "a wall clock: {server_ms}");
    // The rest of the message came through the getters and the lifting intact (the
    // edge keeps the id, channel, client id and time of a replaced message).
    assert_eq!(replaced.data, b"hello");
    assert_eq!(replaced.name.as_deref(), Some("hi"));
    assert_eq!(replaced.content_type.as_deref(), Some("text/plain"));
    assert!(replaced.headers.contains(&("a".into(), "1".into())));
}

#[test]
fn an_infinite_loop_times_out_and_the_function_recovers() {
    let host = host();
    let function = load(
        &host,
        "runtime/wasm/tests/guests/looping",
        Limits::default(),
    );
    let error = function
        .call(&message("chat:1", Some("loop"), b""))
        .expect_err("loops");
    assert!(
        matches!(error, CallError::Timeout { limit } if limit == Limits::default().timeout),
        "{error:?}"
    );
    assert_eq!(error.kind(), "timeout");
    still_passes(&function);
}

/// Pins the calling thread to `cpu`; false when the kernel refuses.
#[allow(unsafe_code)]
fn pin_to_cpu(cpu: usize) -> bool {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it; 0 names
    // the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Makes the calling thread SCHED_FIFO at `priority` (it then preempts any ordinary
/// thread on its CPU), or ordinary again with 0; false without root or CAP_SYS_NICE.
#[allow(unsafe_code)]
fn set_realtime(priority: i32) -> bool {
    let policy = if priority > 0 {
        libc::SCHED_FIFO
    } else {
        libc::SCHED_OTHER
    };
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid sched_param; 0 names the calling thread.
    unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
}

/// A call the kernel preempts for many times its limit, while it has used a fraction
/// of its CPU budget, is not a timeout (epochs count wall time; deadline.rs checks the
/// thread's CPU time before stopping a call). The preemption is real and does not
/// depend on the machine's load: the caller runs SCHED_FIFO on CPU 0, and a SCHED_FIFO
/// thread of higher priority, pinned to CPU 0, wakes 300 µs into the call and spins
/// for 40 ms.
#[test]
fn a_call_preempted_past_its_deadline_is_not_a_timeout() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("skipped: needs 2 CPUs (one for the epoch ticker), found {cpus}");
        return;
    }
    let limit = Duration::from_millis(5);
    let host = host();
    let function = load(
        &host,
        "runtime/wasm/tests/guests/looping",
        Limits {
            timeout: limit,
            ..Limits::default()
        },
    );
    // Turns for about 1.5 ms of guest work, measured on this machine.
    let probe_turns = 200_000u64;
    let probe = (0..3)
        .map(|_| {
            let data = probe_turns.to_string();
            function
                .call(&message("chat:1", Some("spin"), data.as_bytes()))
                .expect("an uncontended spin")
                .duration
        })
        .min()
        .expect("three probes");
    let turns = (probe_turns as f64 * 1.5e-3 / probe.as_secs_f64().max(1e-6)) as u64;

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let hog = std::thread::spawn(move || {
        let ready = pin_to_cpu(0) && set_realtime(2);
        let _ = ready_tx.send(ready);
        if !ready || go_rx.recv().is_err() {
            return;
        }
        std::thread::sleep(Duration::from_micros(300));
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(40) {
            std::hint::spin_loop();
        }
    });
    let ready = ready_rx.recv().unwrap_or(false) && pin_to_cpu(0) && set_realtime(1);
    if !ready {
        drop(go_tx);
        hog.join().expect("hog");
        eprintln!("skipped: SCHED_FIFO needs root or CAP_SYS_NICE");
        return;
    }
    let data = turns.to_string();
    go_tx.send(()).expect("the hog waits");
    let outcome = function.call(&message("chat:1", Some("spin"), data.as_bytes()));
    set_realtime(0);
    hog.join().expect("hog");
    let invocation = outcome.expect("a preempted call must not time out");
    assert_eq!(invocation.action, Action::Pass);
    assert!(
        invocation.duration >= limit * 3,
        "the call was not preempted ({:?} for {turns} turns), so this test tested nothing",
        invocation.duration
    );
    still_passes(&function);
}

#[test]
fn a_memory_bomb_hits_its_limit_and_the_function_recovers() {
    let host = host();
    let function = load(&host, "runtime/wasm/tests/guests/memory-bomb", relaxed());
    let error = function
        .call(&message("chat:1", Some("bomb"), b""))
        .expect_err("bombs");
    assert_eq!(
        error,
        CallError::MemoryLimit {
            limit: Limits::default().memory_bytes
        }
    );
    assert_eq!(error.kind(), "memory");
    still_passes(&function);
}

#[test]
fn a_trapping_function_fails_every_call_and_others_keep_working() {
    let host = host();
    let trapping = load(&host, "runtime/wasm/tests/guests/trapping", relaxed());
    let passthrough = load(&host, "functions/passthrough", relaxed());
    for _ in 0..3 {
        let error = trapping
            .call(&message("chat:1", None, b"x"))
            .expect_err("traps");
        assert!(
            matches!(&error, CallError::Trap(text) if text.contains("unreachable")),
            "{error:?}"
        );
        still_passes(&passthrough);
    }
    let batch = [message("chat:1", None, b"x"), message("chat:2", None, b"y")];
    let error = trapping.call_batch(&batch).expect_err("traps in a batch");
    assert_eq!(error.kind(), "trap");
}

#[test]
fn a_stack_overflow_traps_and_the_function_recovers() {
    let host = host();
    let function = load(&host, "runtime/wasm/tests/guests/stack-overflow", relaxed());
    let error = function
        .call(&message("chat:1", Some("deep"), b""))
        .expect_err("overflows");
    assert_eq!(error, CallError::Trap("stack overflow".into()));
    still_passes(&function);
}

#[test]
fn publishing_past_the_quota_is_refused_and_the_call_completes() {
    let host = host();
    let function = load(&host, "runtime/wasm/tests/guests/self-publish", relaxed());
    let invocation = function
        .call(&message("chat:1", Some("n"), b"copy me"))
        .expect("completes");
    let Action::Replace(tally) = invocation.action else {
        panic!("expected the tally, got {:?}", invocation.action);
    };
    let tally = String::from_utf8(tally.data).expect("text");
    assert!(
        tally.starts_with("published=16 refused=984 first-error=publish refused"),
        "{tally}"
    );
    assert!(tally.contains("quota of 16"), "{tally}");
    assert_eq!(invocation.publishes.len(), 16);
    for (channel, outgoing) in &invocation.publishes {
        assert_eq!(channel, "chat:1");
        assert_eq!(outgoing.data, b"copy me");
    }
    // A batch of two gets twice the quota.
    let batch = [message("a", None, b"1"), message("b", None, b"2")];
    let answer = function.call_batch(&batch).expect("completes");
    assert_eq!(answer.publishes.len(), 32);
}

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn log_lines_carry_the_function_name_and_are_capped_per_call() {
    let host = host();
    let function = load(&host, "runtime/wasm/tests/guests/self-publish", relaxed());
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        function
            .call(&message("chat:1", None, b"x"))
            .expect("completes")
    });
    let text = String::from_utf8(captured.0.lock().expect("log").clone()).expect("UTF-8");
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("chatty line")).collect();
    assert_eq!(lines.len(), Limits::default().max_log_lines, "{text}");
    assert!(lines[0].contains("INFO"), "{}", lines[0]);
    assert!(
        lines[0].contains("function=runtime/wasm/tests/guests/self-publish"),
        "{}",
        lines[0]
    );
    assert!(lines[15].contains("chatty line 15"), "{}", lines[15]);
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains("suppressed=84")),
        "{text}"
    );
}

#[test]
fn a_component_whose_start_needs_more_memory_than_its_limit_is_refused() {
    let host = host();
    let component = host
        .compile(&wasm("functions/passthrough"))
        .expect("compiles");
    let tiny = Limits {
        memory_bytes: 64 << 10,
        ..relaxed()
    };
    let error = host
        .function("passthrough", &component, tiny)
        .err()
        .expect("refused");
    assert!(matches!(error, LoadError::Instantiate(_)), "{error}");
    let too_big = Limits {
        memory_bytes: HostConfig::default().max_memory_bytes + 1,
        ..relaxed()
    };
    let error = host
        .function("passthrough", &component, too_big)
        .err()
        .expect("refused");
    assert!(matches!(error, LoadError::Limits(_)), "{error}");
}

#[test]
fn the_disk_cache_is_used_by_a_second_host() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = || HostConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        max_instances: 8,
        ..HostConfig::default()
    };
    let bytes = wasm("functions/passthrough");
    let first = Host::new(config()).expect("host");
    let compiled = first.compile(&bytes).expect("compiles");
    assert!(!compiled.compiled_from_cache());
    drop(first);

    let second = Host::new(config()).expect("host");
    let cached = second.compile(&bytes).expect("loads from the cache");
    assert!(cached.compiled_from_cache());
    assert_eq!(cached.sha256_hex(), compiled.sha256_hex());
    let function = second
        .function("passthrough", &cached, relaxed())
        .expect("loads");
    still_passes(&function);

    // Another engine configuration does not share entries.
    let fuel = Host::new(HostConfig {
        interruption: tern_wasm::Interruption::Fuel { per_ms: 1_000_000 },
        ..config()
    })
    .expect("host");
    assert!(
        !fuel
            .compile(&bytes)
            .expect("compiles")
            .compiled_from_cache()
    );
}

#[test]
fn fuel_interruption_stops_a_loop_too() {
    let host = Host::new(HostConfig {
        max_instances: 8,
        interruption: tern_wasm::Interruption::Fuel { per_ms: 100_000 },
        ..HostConfig::default()
    })
    .expect("host");
    let function = load(
        &host,
        "runtime/wasm/tests/guests/looping",
        Limits::default(),
    );
    let error = function
        .call(&message("chat:1", Some("loop"), b""))
        .expect_err("loops");
    assert_eq!(error.kind(), "timeout", "{error:?}");
    still_passes(&function);
}

#[test]
fn a_function_is_callable_from_many_threads() {
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<Function>();
    shareable::<Host>();
    let host = host();
    let function = load(&host, "functions/passthrough", relaxed());
    std::thread::scope(|scope| {
        for t in 0..4 {
            let function = function.clone();
            scope.spawn(move || {
                let channel = format!("chat:{t}");
                for _ in 0..200 {
                    let answer = function.call(&message(&channel, None, b"x"));
                    assert_eq!(answer.expect("call").action, Action::Pass);
                }
            });
        }
    });
}

// ---- components that must be refused --------------------------------------------

/// A component made from WIT text alone (its functions trap if called).
fn component_from_wit(wit: &str, world: &str) -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::new();
    let package = resolve.push_str("test.wit", wit).expect("WIT parses");
    let world = resolve
        .select_world(&[package], Some(world))
        .expect("world");
    let mut module =
        wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("metadata");
    wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("module")
        .validate(true)
        .encode()
        .expect("encodes")
}

/// The real world's text with `edit` applied.
fn world_text(edit: impl FnOnce(String) -> String) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk/function/wit/world.wit");
    edit(std::fs::read_to_string(path).expect("world.wit"))
}

fn refusal(bytes: &[u8]) -> String {
    let host = host();
    match host.compile(bytes) {
        Ok(_) => panic!("compiled"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn a_component_made_from_the_real_world_text_is_accepted() {
    // The control for the refusals below: the same route, unedited.
    let bytes = component_from_wit(&world_text(|w| w), "message-function");
    let host = host();
    let component = host.compile(&bytes).expect("accepted");
    assert!(!component.has_batch());
    // Its functions are `unreachable`: the batch fallback calls `handle` and traps.
    let function = host
        .function("dummy", &component, relaxed())
        .expect("loads");
    let error = function
        .call_batch(&[message("chat:1", None, b"")])
        .expect_err("traps");
    assert_eq!(error.kind(), "trap");
}

#[test]
fn corrupt_bytes_are_refused() {
    assert!(refusal(b"this is not wasm").contains("not a WebAssembly file"));
    let mut truncated = wasm("functions/passthrough");
    truncated.truncate(truncated.len() / 2);
    let text = refusal(&truncated);
    assert!(text.starts_with("invalid component"), "{text}");
}

#[test]
fn a_core_module_is_refused() {
    let text = refusal(b"\0asm\x01\0\0\0");
    assert!(
        text.contains("core WebAssembly module, not a component"),
        "{text}"
    );
}

#[test]
fn a_newer_world_version_is_refused_naming_both_versions() {
    let wit = world_text(|w| {
        w.replace(
            "package tern:function@0.1.0;",
            "package tern:function@0.2.0;",
        )
    });
    let text = refusal(&component_from_wit(&wit, "message-function"));
    assert_eq!(
        text,
        "built for tern:function@0.2.0; this edge supports tern:function@0.1.0"
    );
}

#[test]
fn a_different_handle_signature_is_refused_naming_both_types() {
    let wit = world_text(|w| {
        w.replace(
            "handle: func(message: borrow<message>) -> action;",
            "handle: func(message: borrow<message>) -> string;",
        )
    });
    let text = refusal(&component_from_wit(&wit, "message-function"));
    assert_eq!(
        text,
        "`tern:function/handler@0.1.0#handle` has type func(borrow<resource>) -> string; this edge expects func(borrow<resource>) -> action"
    );
}

#[test]
fn a_missing_handler_is_refused_naming_the_exports() {
    let wit = "package other:thing@1.0.0;\n\
               interface api { run: func(); }\n\
               world w { export api; }";
    let text = refusal(&component_from_wit(wit, "w"));
    assert_eq!(
        text,
        "the component does not export tern:function/handler@0.1.0; it exports: other:thing/api@1.0.0"
    );
}

#[test]
fn imports_beyond_host_are_refused_naming_them() {
    let wit = world_text(|w| {
        let w = w.replace(
            "world message-function {\n    import host;",
            "world message-function {\n    import host;\n    import wasi:cli/environment@0.2.0;",
        );
        w + "\npackage wasi:cli@0.2.0 {\n\
               interface environment { get-environment: func() -> list<tuple<string, string>>; }\n\
             }\n"
    });
    let text = refusal(&component_from_wit(&wit, "message-function"));
    assert_eq!(
        text,
        "the component imports wasi:cli/environment@0.2.0; a Tern function may import only tern:function/host@0.1.0 (no WASI)"
    );
}

#[test]
fn a_getter_the_world_does_not_have_is_refused_naming_it() {
    let wit = world_text(|w| {
        w.replace(
            "        timestamp-ms: func() -> u64;\n    }",
            "        timestamp-ms: func() -> u64;\n        secret: func() -> string;\n    }",
        )
    });
    let text = refusal(&component_from_wit(&wit, "message-function"));
    assert_eq!(
        text,
        "the component imports tern:function/types@0.1.0#[method]message.secret; a Tern function may import only tern:function/host@0.1.0 (no WASI)"
    );
}

#[test]
fn a_handle_borrowing_the_batch_resource_is_refused_at_load() {
    // check.rs renders both resources alike; the typed export tells them apart.
    let wit = world_text(|w| {
        w.replace(
            "    use types.{message, action};\n\n    /// Decides one message's fate.\n    handle: func(message: borrow<message>) -> action;",
            "    use types.{batch, action};\n\n    /// Decides one message's fate.\n    handle: func(message: borrow<batch>) -> action;",
        )
    });
    assert!(
        wit.contains("handle: func(message: borrow<batch>)"),
        "the edit applied"
    );
    let host = host();
    let component = host
        .compile(&component_from_wit(&wit, "message-function"))
        .expect("the shape matches");
    let error = host
        .function("swapped", &component, relaxed())
        .err()
        .expect("refused");
    assert!(error.to_string().contains("handle:"), "{error}");
}
