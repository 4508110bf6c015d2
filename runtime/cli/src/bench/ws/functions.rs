//! `tern bench functions`: what message functions cost end to end. Publish throughput
//! through one edge with no function, with the pass-through at ingress and with the
//! profanity filter at ingress — same edge, same workload, interleaved in rounds —
//! then a live deploy that swaps a function under load.
//!
//! ```text
//! tern fn build DIR/passthrough, DIR/profanity ─▶ tern dev (child, temporary data)
//!   ─▶ deploy fnbench-pass (bind <run>-pass:*), fnbench-prof (bind <run>-prof:*)
//!   ─▶ rounds × [none, pass, prof]: the same pub/sub load on that variant's channels
//!   ─▶ ratios pass ÷ none, prof ÷ none (acknowledged publishes/s, mean of the rounds)
//!   ─▶ swap: fnbench-swap = passthrough on <run>-swap:*; halfway through a run,
//!            deploy the profanity filter as fnbench-swap ─▶ deploy time, messages lost
//! ```
//!
//! Payloads are English words (not one repeated byte) so the filter scans what it
//! would in a chat. Every publish must be acknowledged (a NACK fails the run) and every
//! acknowledged message delivered once; the swap run fails on any loss or duplicate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tern_config::{FunctionName, RawBindingSpec};

use super::super::workload::run_nonce;
use super::load::{self, Mode, Plan, PubSubMeasurement, Run};
use super::report::{Printer, PubSubRow, RowLabels};
use super::{FormatArg, on_load_runtime, system, temp_dir, tern};
use crate::deploy_cmd::{AdminClient, FunctionInfo};
use crate::http_client::Endpoint;

/// Throughput targets of the functions issue: with a function ÷ without.
const PASS_TARGET: f64 = 0.85;
const PROFANITY_TARGET: f64 = 0.75;

/// Flags of `tern bench functions`.
#[derive(Debug, Args)]
pub(crate) struct FnBenchArgs {
    /// The directory holding the `passthrough` and `profanity` function crates, built
    /// with `tern fn build` before the run.
    #[arg(long, value_name = "DIR", default_value = "functions")]
    functions: PathBuf,
    /// Channels per variant, one subscriber each.
    #[arg(long, value_name = "N", default_value_t = 4)]
    channels: usize,
    /// Publisher connections per run.
    #[arg(long, value_name = "N", default_value_t = 4)]
    publishers: usize,
    /// Payload bytes per message (at least 45: the payload carries a send stamp).
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    size: usize,
    /// Seconds of publishing per run.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    duration: f64,
    /// Rounds of [none, pass-through, profanity]; the ratios use the mean of the rounds.
    #[arg(long, value_name = "N", default_value_t = 2)]
    rounds: usize,
    /// Seconds of publishing in the swap run (the deploy starts halfway).
    #[arg(long, value_name = "SECS", default_value_t = 8.0)]
    swap_duration: f64,
    /// Publishes awaiting acknowledgement per publisher.
    #[arg(long, value_name = "N", default_value_t = 64)]
    inflight: usize,
    /// Messages per publisher published but not yet delivered to every subscriber.
    #[arg(long, value_name = "N", default_value_t = 256)]
    window: usize,
    /// Tern encoding.
    #[arg(long, value_enum, default_value_t = FormatArg::Json)]
    format: FormatArg,
    /// Worker threads of the load generator's runtime (1 = a current-thread runtime).
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Where the started edge keeps its data (the default temporary directory if unset).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Longest the whole benchmark may take, builds excluded.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    timeout: u64,
}

/// One configuration measured: which function, if any, runs at ingress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    NoFunction,
    PassThrough,
    Profanity,
}

impl Variant {
    const ALL: [Variant; 3] = [
        Variant::NoFunction,
        Variant::PassThrough,
        Variant::Profanity,
    ];

    /// Its row label (the table's first column holds six characters) and the suffix
    /// of its channels.
    fn label(self) -> &'static str {
        match self {
            Variant::NoFunction => "none",
            Variant::PassThrough => "pass",
            Variant::Profanity => "prof",
        }
    }
}

/// A ratio of throughput with a function to throughput without, in the same run.
#[derive(Debug, Serialize)]
struct FunctionRatio {
    /// Always `"ratio"`.
    kind: &'static str,
    metric: &'static str,
    function: &'static str,
    with_function: f64,
    without_function: f64,
    ratio: f64,
    target: f64,
}

/// What the live swap measured.
#[derive(Debug, Serialize)]
struct SwapRow {
    /// Always `"swap"`.
    kind: &'static str,
    /// From sending the deploy to the edge answering that it is in force.
    deploy_ms: f64,
    /// The edge's own figure: from the record being stored to it being in force.
    applied_ms: f64,
    /// Version in force before and after.
    from_version: u32,
    to_version: u32,
    published: u64,
    acked: u64,
    expected_deliveries: u64,
    delivered: u64,
    missing: u64,
    extra: u64,
    /// Calls the function had by the time the swap was in force, and at the end.
    invocations_at_swap: u64,
    invocations_at_end: u64,
}

/// Runs the benchmark; fails when a run fails, or the swap lost or repeated a message.
pub(crate) async fn run(args: FnBenchArgs) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    system::raise_fd_limit(2 * (plan.connections + plan.publishers) as u64 + system::SPARE_FDS)?;
    let passthrough = build(&args.functions.join("passthrough")).await?;
    let profanity = build(&args.functions.join("profanity")).await?;
    let mut printer = Printer::new(args.json);
    printer.note(&format!(
        "tern bench functions: per run {} subscribers on {} channels, {} publishers, {} B \
         messages of English words, unpaced, {:.1} s; {} rounds of [no function, pass-through \
         at ingress, profanity filter at ingress], then a live swap under load",
        plan.connections, plan.channels, plan.publishers, plan.size, args.duration, args.rounds
    ));
    printer.note(&format!(
        "machine: {}; load generator and edge share it; one `tern dev` (log and edge in one \
         process, ACK after fsync) serves every run",
        system::machine()
    ));

    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let data = temp_dir(
        &args.dir.clone().unwrap_or_else(std::env::temp_dir),
        "tern-bench-fn-",
    )?;
    eprintln!(
        "functions: starting `tern dev` with its data in {}",
        data.path().display()
    );
    let (child, edge) = tern::start_dev(data.path(), deadline).await?;
    let outcome = async {
        let admin = AdminClient::new(
            Endpoint::parse(&format!("http://{}", edge.url.authority))?,
            edge.key.clone(),
        );
        let prefix = format!("fnbench-{:x}", run_nonce());
        let bench = Bench {
            args: &args,
            plan,
            edge: &edge,
            admin,
            prefix,
            deadline,
        };
        bench
            .deploy("fnbench-pass", Variant::PassThrough, &passthrough)
            .await?;
        bench
            .deploy("fnbench-prof", Variant::Profanity, &profanity)
            .await?;
        bench.throughput(&mut printer).await?;
        bench.swap(&mut printer, &passthrough, &profanity).await
    }
    .await;
    child.conclude(outcome, data).await
}

/// The plan every run follows.
fn plan(args: &FnBenchArgs) -> anyhow::Result<Plan> {
    if args.channels == 0 || args.publishers == 0 || args.rounds == 0 {
        bail!("--channels, --publishers and --rounds must be at least 1");
    }
    if args.inflight == 0 || args.window == 0 {
        bail!("--inflight and --window must be at least 1");
    }
    if args.size < load::STAMP_LEN {
        bail!(
            "--size must be at least {} bytes: every payload carries a send stamp",
            load::STAMP_LEN
        );
    }
    let duration = |secs: f64, flag: &str| {
        Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| !d.is_zero())
            .with_context(|| format!("{flag} must be a positive number of seconds"))
    };
    duration(args.swap_duration, "--swap-duration")?;
    Ok(Plan {
        mode: Mode::PubSub,
        connections: args.channels,
        channels: args.channels,
        publishers: args.publishers,
        size: args.size,
        rate: 0.0,
        messages: None,
        duration: Some(duration(args.duration, "--duration")?),
        inflight: args.inflight,
        window: args.window,
    })
}

/// A built component.
struct Built {
    path: PathBuf,
    wasm: Vec<u8>,
    sha256: String,
}

/// `tern fn build DIR`, with cargo's progress on stderr.
async fn build(dir: &Path) -> anyhow::Result<Built> {
    if !dir.join("Cargo.toml").is_file() {
        bail!(
            "{} is not a function crate: run from the repository root, or give --functions DIR \
             holding `passthrough` and `profanity`",
            dir.display()
        );
    }
    eprintln!("functions: building {}", dir.display());
    let crate_dir = dir.to_owned();
    let built = tokio::task::spawn_blocking(move || {
        tern_fnbuild::build(
            &crate_dir,
            &tern_fnbuild::BuildOptions {
                target_dir: None,
                quiet: false,
            },
        )
    })
    .await
    .context("the build task failed")?
    .with_context(|| format!("building {}", dir.display()))?;
    let wasm = tokio::fs::read(&built.component)
        .await
        .with_context(|| format!("cannot read {}", built.component.display()))?;
    Ok(Built {
        sha256: hex(&Sha256::digest(&wasm)),
        path: built.component,
        wasm,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One benchmark against one edge.
struct Bench<'a> {
    args: &'a FnBenchArgs,
    plan: Plan,
    edge: &'a tern::Edge,
    admin: AdminClient,
    /// Channel prefix of this run.
    prefix: String,
    deadline: Instant,
}

impl Bench<'_> {
    /// The channels of a variant: `<prefix>-<suffix>:<i>`.
    fn channels(&self, suffix: &str) -> Vec<String> {
        (0..self.plan.channels)
            .map(|i| format!("{}-{suffix}:{i}", self.prefix))
            .collect()
    }

    fn binding(&self, suffix: &str) -> RawBindingSpec {
        RawBindingSpec {
            bind: vec![format!("{}-{suffix}:*", self.prefix)],
            ..RawBindingSpec::default()
        }
    }

    /// Deploys `component` as `name`, bound at ingress to `variant`'s channels.
    async fn deploy(&self, name: &str, variant: Variant, component: &Built) -> anyhow::Result<()> {
        let name = FunctionName::parse(name).map_err(anyhow::Error::msg)?;
        let applied = self
            .admin
            .deploy(&name, &self.binding(variant.label()), &component.wasm)
            .await
            .with_context(|| format!("deploying {}", component.path.display()))?;
        eprintln!(
            "functions: {name} v{} deployed ({} bytes, bound to {}-{}:*)",
            applied.version.unwrap_or(0),
            component.wasm.len(),
            self.prefix,
            variant.label()
        );
        Ok(())
    }

    /// One pub/sub run on `channels`; `run` lets the caller watch its phase.
    async fn measure(
        &self,
        label: &'static str,
        channels: Vec<String>,
        run: Arc<Run>,
    ) -> anyhow::Result<PubSubMeasurement> {
        let target = tern::TernTarget::new(
            self.edge,
            self.args.format.format(),
            false,
            channels,
            self.plan.size,
        )
        .await?
        .with_text_pad();
        let work = load::drive_pubsub(label, Arc::new(target), run, self.deadline);
        on_load_runtime(self.args.threads, work).await
    }

    /// Rounds of the three variants; prints each run and the ratios.
    async fn throughput(&self, printer: &mut Printer) -> anyhow::Result<()> {
        let mut sums = [0.0f64; 3];
        for round in 1..=self.args.rounds {
            for (slot, variant) in Variant::ALL.into_iter().enumerate() {
                eprintln!(
                    "functions: round {round}/{}: {}",
                    self.args.rounds,
                    variant.label()
                );
                let run = Run::new(self.plan.clone());
                let measured = self
                    .measure(variant.label(), self.channels(variant.label()), run)
                    .await
                    .with_context(|| format!("round {round}, {}", variant.label()))?;
                let row = PubSubRow::new(self.labels(variant.label()), &self.plan, &measured);
                printer.pubsub(&row);
                if row.missing > 0 || row.extra > 0 {
                    bail!(
                        "round {round}, {}: {} deliveries missing, {} extra",
                        variant.label(),
                        row.missing,
                        row.extra
                    );
                }
                sums[slot] += row.publishes_per_sec;
            }
        }
        let rounds = self.args.rounds as f64;
        let [none, pass, prof] = sums.map(|sum| sum / rounds);
        for (function, with_function, target) in [
            ("passthrough", pass, PASS_TARGET),
            ("profanity", prof, PROFANITY_TARGET),
        ] {
            let ratio = FunctionRatio {
                kind: "ratio",
                metric: "publishes_per_sec",
                function,
                with_function,
                without_function: none,
                ratio: with_function / none.max(f64::MIN_POSITIVE),
                target,
            };
            if self.args.json {
                println!("{}", serde_json::to_string(&ratio)?);
            } else {
                println!(
                    "ratio {function} at ingress / no function, acknowledged publishes/s (mean of \
                     {} rounds): {:.3}x ({:.0} vs {:.0}; target >= {:.2}x: {})",
                    self.args.rounds,
                    ratio.ratio,
                    with_function,
                    none,
                    target,
                    if ratio.ratio >= target {
                        "met"
                    } else {
                        "MISSED"
                    }
                );
            }
        }
        Ok(())
    }

    /// Deploys the pass-through as `fnbench-swap`, then, halfway through a run on its
    /// channels, deploys the profanity filter under the same name.
    async fn swap(
        &self,
        printer: &mut Printer,
        passthrough: &Built,
        profanity: &Built,
    ) -> anyhow::Result<()> {
        let name = FunctionName::parse("fnbench-swap").map_err(anyhow::Error::msg)?;
        let binding = self.binding("swap");
        let first = self
            .admin
            .deploy(&name, &binding, &passthrough.wasm)
            .await
            .context("deploying the pass-through as fnbench-swap")?;
        let from_version = first.version.unwrap_or(0);
        let duration = Duration::try_from_secs_f64(self.args.swap_duration)?;
        let plan = Plan {
            duration: Some(duration),
            ..self.plan.clone()
        };
        let run = Run::new(plan.clone());
        let mut phase = run.phase();
        eprintln!(
            "functions: swap: fnbench-swap v{from_version} (pass-through) under load; the \
             profanity filter is deployed after {:.1} s",
            duration.as_secs_f64() / 2.0
        );
        let load = self.measure("swap", self.channels("swap"), Arc::clone(&run));
        let swapper = async {
            if !load::wait_for_go(&mut phase).await? {
                bail!("the swap run stopped before publishing");
            }
            tokio::time::sleep(duration / 2).await;
            let sent = Instant::now();
            let applied = self
                .admin
                .deploy(&name, &binding, &profanity.wasm)
                .await
                .context("deploying the profanity filter as fnbench-swap under load")?;
            let deploy_ms = sent.elapsed().as_secs_f64() * 1000.0;
            let at_swap = self.swap_info(&name).await?;
            anyhow::Ok((applied, deploy_ms, at_swap))
        };
        let (measured, swapped) = tokio::join!(load, swapper);
        let measured = measured.context("the swap run")?;
        let (applied, deploy_ms, at_swap) = swapped?;
        let at_end = self.swap_info(&name).await?;
        if at_end.sha256 != profanity.sha256 {
            bail!(
                "after the swap fnbench-swap runs {} (v{}), not the profanity filter",
                at_end.sha256,
                at_end.version
            );
        }
        let row = PubSubRow::new(self.labels("swap"), &plan, &measured);
        printer.pubsub(&row);
        let swap = SwapRow {
            kind: "swap",
            deploy_ms,
            applied_ms: applied.applied_ms,
            from_version,
            to_version: applied.version.unwrap_or(0),
            published: row.published,
            acked: row.acked,
            expected_deliveries: row.expected_deliveries,
            delivered: row.delivered,
            missing: row.missing,
            extra: row.extra,
            invocations_at_swap: at_swap.stats.invocations,
            invocations_at_end: at_end.stats.invocations,
        };
        if self.args.json {
            println!("{}", serde_json::to_string(&swap)?);
        } else {
            println!(
                "swap under load: fnbench-swap v{} (pass-through) -> v{} (profanity): deploy \
                 answered in {:.1} ms (in force {:.1} ms after the record was stored); {} \
                 published, {} acknowledged, {} missing, {} extra; {} calls after the swap",
                swap.from_version,
                swap.to_version,
                swap.deploy_ms,
                swap.applied_ms,
                swap.published,
                swap.acked,
                swap.missing,
                swap.extra,
                swap.invocations_at_end
                    .saturating_sub(swap.invocations_at_swap)
            );
        }
        if swap.missing > 0 || swap.extra > 0 || swap.acked != swap.published {
            bail!(
                "the swap lost or repeated messages: {} published, {} acknowledged, {} missing, \
                 {} extra",
                swap.published,
                swap.acked,
                swap.missing,
                swap.extra
            );
        }
        if swap.invocations_at_end <= swap.invocations_at_swap {
            bail!("no message went through the new version after the swap");
        }
        Ok(())
    }

    /// `fnbench-swap` as the edge lists it.
    async fn swap_info(&self, name: &FunctionName) -> anyhow::Result<FunctionInfo> {
        self.admin
            .list()
            .await?
            .functions
            .into_iter()
            .find(|f| f.name == name.as_str())
            .context("fnbench-swap is not listed")
    }

    fn labels(&self, target: &'static str) -> RowLabels {
        RowLabels {
            target,
            scenario: "functions",
            format: self.args.format.name(),
            ack_means: "fsync",
            positions: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: FnBenchArgs,
    }

    fn parse(args: &[&str]) -> FnBenchArgs {
        Cli::try_parse_from(std::iter::once("functions").chain(args.iter().copied()))
            .expect("parses")
            .args
    }

    #[test]
    fn defaults_make_a_plan_and_bad_flags_are_refused() {
        let made = plan(&parse(&[])).expect("valid");
        assert_eq!(
            (made.connections, made.channels, made.publishers),
            (4, 4, 4)
        );
        assert_eq!(made.size, 256);
        assert_eq!(made.duration, Some(Duration::from_secs(5)));
        for bad in [
            &["--size", "10"][..],
            &["--channels", "0"],
            &["--rounds", "0"],
            &["--duration", "0"],
            &["--swap-duration=-1"],
            &["--inflight", "0"],
        ] {
            assert!(plan(&parse(bad)).is_err(), "{bad:?}");
        }
    }
}
