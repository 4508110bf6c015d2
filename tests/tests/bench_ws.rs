//! Smoke tests of `tern bench ws`, `tern bench functions` and `tern bench resume`
//! (both topologies): tiny workloads through the real command, its JSON output parsed
//! and its counts checked (every published message acknowledged, every expected
//! delivery made, none twice). The figures themselves are not
//! checked: this is about the plumbing, not the machine's speed.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use tern_tests::{EdgeProcess, LogProcess, TEST_KEY, tern_binary};

/// Longest one benchmark command may take (its own --timeout is shorter).
const COMMAND_LIMIT: Duration = Duration::from_secs(240);

/// Runs `tern bench ws --json ARGS` and returns its JSON records.
fn bench(args: &[&str]) -> anyhow::Result<Vec<Value>> {
    bench_command("ws", args)
}

/// Runs `tern bench COMMAND --json ARGS` and returns its JSON records.
fn bench_command(command: &str, args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let mut child = Command::new(tern_binary())
        .args(["bench", command, "--json", "--timeout", "120"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start tern bench {command}"))?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > COMMAND_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("tern bench {command} {args:?} did not finish in {COMMAND_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().map_err(|_| anyhow::anyhow!("stdout reader"))??;
    let stderr = err.join().map_err(|_| anyhow::anyhow!("stderr reader"))??;
    if !status.success() {
        bail!("tern bench {command} {args:?} failed ({status}):\n{stderr}\nstdout:\n{stdout}");
    }
    stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .with_context(|| format!("not a JSON record: {line:?}\nstderr:\n{stderr}"))
        })
        .collect()
}

fn number(record: &Value, field: &str) -> u64 {
    record[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a count in {record}"))
}

/// The one result record of `target`, with its counts checked.
fn checked_result(records: &[Value], target: &str, published: u64, deliveries: u64) -> Value {
    let results: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "result" && r["target"] == target)
        .collect();
    assert_eq!(results.len(), 1, "one {target} result in {records:?}");
    let result = results[0].clone();
    assert_eq!(number(&result, "published"), published, "{result}");
    assert_eq!(number(&result, "acked"), published, "{result}");
    assert_eq!(
        number(&result, "expected_deliveries"),
        deliveries,
        "{result}"
    );
    assert_eq!(number(&result, "delivered"), deliveries, "{result}");
    assert_eq!(number(&result, "missing"), 0, "{result}");
    assert_eq!(number(&result, "extra"), 0, "{result}");
    for field in ["deliveries_per_sec", "p50_ms", "p99_ms", "max_ms"] {
        assert!(
            result[field].as_f64().is_some_and(|v| v > 0.0),
            "{field} in {result}"
        );
    }
    result
}

fn nats_installed() -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("nats-server").is_file())
    })
}

#[test]
fn tern_dev_json_and_msgpack_counts_match() -> anyhow::Result<()> {
    // 4 subscribers on one channel: 200 messages, 800 deliveries, each checked in full.
    let records = bench(&[
        "--target",
        "tern",
        "--subscribers",
        "4",
        "--messages",
        "200",
        "--verify",
    ])?;
    let result = checked_result(&records, "tern", 200, 800);
    assert_eq!(result["format"], "json");
    assert_eq!(result["ack_means"], "fsync");

    // Two publishers over two channels, MessagePack, paced: 2 subscribers per channel.
    let records = bench(&[
        "--target",
        "tern",
        "--format",
        "msgpack",
        "--subscribers",
        "4",
        "--channels",
        "2",
        "--publishers",
        "2",
        "--rate",
        "2000",
        "--messages",
        "200",
        "--verify",
    ])?;
    let result = checked_result(&records, "tern", 200, 400);
    assert_eq!(result["format"], "msgpack");
    Ok(())
}

#[test]
fn nats_counts_match_and_ratios_are_printed() -> anyhow::Result<()> {
    if !nats_installed() {
        eprintln!("skipped: nats-server is not on PATH (scripts/setup.sh installs it)");
        return Ok(());
    }
    let records = bench(&["--subscribers", "4", "--messages", "200", "--verify"])?;
    checked_result(&records, "tern", 200, 800);
    let nats = checked_result(&records, "nats", 200, 800);
    assert_eq!(nats["ack_means"], "routed");
    let metrics: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "ratio")
        .filter_map(|r| r["metric"].as_str())
        .collect();
    assert_eq!(metrics, ["deliveries_per_sec", "p50_ms", "p99_ms"]);
    Ok(())
}

#[test]
fn idle_connections_report_memory() -> anyhow::Result<()> {
    let records = bench(&[
        "--target",
        "tern",
        "--scenario",
        "idle",
        "--connections",
        "50",
    ])?;
    let idle = records
        .iter()
        .find(|r| r["kind"] == "idle")
        .context("an idle record")?;
    assert_eq!(number(idle, "connections"), 50);
    assert!(number(idle, "rss_after_kib") > 0, "{idle}");
    assert!(idle["bytes_per_connection"].is_number(), "{idle}");
    Ok(())
}

#[test]
fn an_edge_given_by_url_and_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = LogProcess::start(&dir.path().join("log"))?;
    let edge = EdgeProcess::start(dir.path(), "edge-a", log.addr, &log.cert, "")?;
    let url = format!("http://{}", edge.addr);
    let records = bench(&[
        "--target",
        "tern",
        "--url",
        &url,
        "--key",
        TEST_KEY,
        "--subscribers",
        "3",
        "--messages",
        "100",
    ])?;
    checked_result(&records, "tern", 100, 300);

    // A wrong key is refused with the edge's reason, not a hang.
    let refused = bench(&[
        "--target",
        "tern",
        "--url",
        &url,
        "--key",
        "test.main:wrong",
        "--subscribers",
        "1",
        "--messages",
        "1",
    ]);
    let error = format!("{:#}", refused.expect_err("a wrong key fails the run"));
    assert!(error.contains("DISCONNECTED"), "{error}");
    Ok(())
}

/// `tern bench functions`: the three variants, both ratios and a swap under load that
/// lost and repeated nothing, through the real command (it builds the two example
/// functions, starts `tern dev` and deploys them).
#[test]
fn functions_bench_measures_three_variants_and_a_lossless_swap() -> anyhow::Result<()> {
    let functions = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions");
    let functions = functions.to_str().context("a UTF-8 path")?;
    let records = bench_command(
        "functions",
        &[
            "--functions",
            functions,
            "--channels",
            "2",
            "--publishers",
            "2",
            "--duration",
            "0.5",
            "--rounds",
            "1",
            "--swap-duration",
            "1",
        ],
    )?;
    let kinds = |kind: &'static str| records.iter().filter(move |r| r["kind"] == kind);
    let targets: Vec<&str> = kinds("result")
        .filter_map(|r| r["target"].as_str())
        .collect();
    assert_eq!(targets, ["none", "pass", "prof", "swap"], "{records:?}");
    for result in kinds("result") {
        assert!(number(result, "published") > 0, "{result}");
        assert_eq!(
            number(result, "acked"),
            number(result, "published"),
            "{result}"
        );
        assert_eq!(number(result, "missing"), 0, "{result}");
        assert_eq!(number(result, "extra"), 0, "{result}");
    }
    let ratios: Vec<&str> = kinds("ratio")
        .filter_map(|r| r["function"].as_str())
        .collect();
    assert_eq!(ratios, ["passthrough", "profanity"], "{records:?}");
    let swap = kinds("swap").next().context("a swap record")?;
    assert_eq!(number(swap, "from_version"), 1, "{swap}");
    assert_eq!(number(swap, "to_version"), 2, "{swap}");
    assert_eq!(number(swap, "missing"), 0, "{swap}");
    assert!(
        number(swap, "invocations_at_end") > number(swap, "invocations_at_swap"),
        "{swap}"
    );
    Ok(())
}

/// `tern bench resume` with small numbers: every replay is checked inside the bench
/// (each missed message once, in order, the connection resumed), so a run that ends
/// well and prints its records is the test.
#[test]
fn resume_bench_measures_latency_and_a_storm() -> anyhow::Result<()> {
    let records = bench_command(
        "resume",
        &[
            "--rounds",
            "3",
            "--missed",
            "10,200",
            "--storm-clients",
            "100",
            "--storm-channels",
            "4",
            "--storm-missed",
            "10",
        ],
    )?;
    check_resume_records(&records, "dev", &[10, 200], 100, &["dev"])
}

/// The same with `--topology split`: a `tern log` and a `tern edge` process, each
/// measured over the storm.
#[test]
fn resume_bench_split_measures_the_edge_and_the_log_apart() -> anyhow::Result<()> {
    let records = bench_command(
        "resume",
        &[
            "--topology",
            "split",
            "--rounds",
            "2",
            "--missed",
            "10,50",
            "--storm-clients",
            "60",
            "--storm-channels",
            "3",
            "--storm-missed",
            "5",
        ],
    )?;
    check_resume_records(&records, "split", &[10, 50], 60, &["edge", "log"])
}

/// One latency record per `missed` count and one storm record of `clients`, all of
/// `topology`, with CPU and memory figures for each of `roles`.
fn check_resume_records(
    records: &[Value],
    topology: &str,
    missed: &[u64],
    clients: u64,
    roles: &[&str],
) -> anyhow::Result<()> {
    let latency: Vec<&Value> = records.iter().filter(|r| r["kind"] == "latency").collect();
    let counts: Vec<u64> = latency.iter().map(|r| number(r, "missed")).collect();
    assert_eq!(counts, missed, "{records:?}");
    for record in &latency {
        assert_eq!(record["topology"], topology, "{record}");
        let first = record["first_p50_ms"].as_f64().context("first_p50_ms")?;
        let all = record["caught_up_p50_ms"]
            .as_f64()
            .context("caught_up_p50_ms")?;
        assert!(first > 0.0 && first <= all, "{record}");
    }
    let storm: Vec<&Value> = records.iter().filter(|r| r["kind"] == "storm").collect();
    assert_eq!(storm.len(), 1, "{records:?}");
    let storm = storm[0];
    assert_eq!(storm["topology"], topology, "{storm}");
    assert_eq!(number(storm, "clients"), clients, "{storm}");
    for role in roles {
        let before = number(storm, &format!("{role}_rss_before_kib"));
        let peak = number(storm, &format!("{role}_rss_peak_kib"));
        assert!(before > 0 && peak > 0, "{role} in {storm}");
        let cpu = storm[format!("{role}_cpu_s")].as_f64();
        assert!(cpu.is_some_and(|s| s >= 0.0), "{role} in {storm}");
        let from = storm[format!("{role}_rss_peak_from")].as_str();
        assert!(
            matches!(from, Some("VmHWM" | "sampled VmRSS")),
            "{role} in {storm}"
        );
    }
    let other_roles = ["dev", "edge", "log"]
        .into_iter()
        .filter(|role| !roles.contains(role));
    for role in other_roles {
        assert!(
            storm[format!("{role}_cpu_s")].is_null(),
            "{role} in {storm}"
        );
    }
    Ok(())
}
