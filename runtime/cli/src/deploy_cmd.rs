//! `tern deploy` and `tern fn list | rollback | remove`: the client of an edge's admin
//! API for message functions (`/v1/admin/functions`, see `tern-edge`'s `admin` module).
//!
//! Every command talks to one edge (`--edge`, default `http://127.0.0.1:8080`, where
//! `tern dev` listens) with an admin key taken from `--key`, else `TERN_ADMIN_KEY`, else
//! `./.tern/dev-key` (written by `tern dev`, which makes its dev key an admin key). A
//! deploy reaches every edge through the log; the edge asked answers once it applied it.
//!
//! ```text
//! tern deploy f.wasm --name n --bind 'chat:*'
//!     read + sanity-check f.wasm, check the binding ──▶ POST /v1/admin/functions/n
//!                                                   ◀── 201 {version, position, applied_ms}
//!     "function n v3 deployed (bind chat:*, ingress) in 12 ms"
//! ```
//!
//! Failures exit 1 with one line: a missing file, an edge that does not answer ("is
//! `tern dev` running?"), or the edge's error as `<code> (<name>): <message>`.
//!
//! Not here: building components (`tern fn build`), TLS to the edge, several edges at
//! once. [`AdminClient`] is also what `tern dev` deploys its functions directory with.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::Args;
use serde::{Deserialize, Serialize};
use tern_config::{BindingSpec, FailurePolicy, FunctionName, RawBindingSpec, RawByteSize, Stage};
use tern_protocol::ErrorInfo;

use crate::http_client::{self, Endpoint, HttpError, Request};

/// Where `tern dev` keeps its key, relative to the current directory.
const DEV_KEY_FILE: &str = ".tern/dev-key";
/// Largest component `tern deploy` sends: base64 of it must fit the edge's 16 MiB body.
const MAX_COMPONENT_BYTES: u64 = 12 << 20;
/// A deploy waits for the edge to check the component and apply the record (the edge
/// itself gives up applying after 60 s).
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(120);
/// Every other request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest `--key` file (`.tern/dev-key` is one line).
const MAX_KEY_FILE_BYTES: u64 = 4096;
/// Memory ceiling for checking a binding here: the largest any edge allows. The edge
/// checks against its own (`[functions] max_memory`).
const LOCAL_MEMORY_CEILING: usize = 4 << 30;

/// Which edge, and the admin key to present.
#[derive(Debug, Clone, Args)]
pub(crate) struct AdminArgs {
    /// The edge's HTTP address.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    edge: String,
    /// Admin key (`app.keyid:secret`); default: $TERN_ADMIN_KEY, else ./.tern/dev-key.
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
}

/// Flags of `tern deploy`.
#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    /// The component (`.wasm`), as `tern fn build` writes it.
    #[arg(value_name = "FILE.wasm")]
    file: PathBuf,
    /// The function's name (a-z, 0-9, `-`, `_`); deploying a name again makes a new version.
    #[arg(long)]
    name: String,
    /// Channel pattern it applies to (`chat:*`, `sensors:#`); repeat for several.
    #[arg(long = "bind", value_name = "PATTERN", required = true)]
    bind: Vec<String>,
    /// Where it runs: `ingress` (before the log) or `egress` (before fan-out) [default: ingress].
    #[arg(long, value_parser = parse_stage)]
    stage: Option<Stage>,
    /// What a failure does to the message: `fail-closed` (NACK) or `fail-open` (pass it on)
    /// [default: fail-closed].
    #[arg(long, value_parser = parse_policy)]
    policy: Option<FailurePolicy>,
    /// Time one call may take (`2ms`, `500us`) [default: 2ms].
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Memory of one instance (`16MiB`) [default: 16MiB].
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// Place in the chain of functions bound to a channel (ascending) [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    order: Option<i32>,
    #[command(flatten)]
    admin: AdminArgs,
}

/// Flags of `tern fn list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Print the edge's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    admin: AdminArgs,
}

/// Flags of `tern fn rollback`.
#[derive(Debug, Args)]
pub(crate) struct RollbackArgs {
    /// The function.
    name: String,
    /// The version to bring back [default: the one before the version in force].
    #[arg(long, value_name = "VERSION")]
    to: Option<u32>,
    #[command(flatten)]
    admin: AdminArgs,
}

/// Flags of `tern fn remove`.
#[derive(Debug, Args)]
pub(crate) struct RemoveArgs {
    /// The function.
    name: String,
    #[command(flatten)]
    admin: AdminArgs,
}

/// `tern deploy`: sends a component with its binding; prints the version in force.
pub(crate) async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let name = parse_name(&args.name)?;
    let binding = RawBindingSpec {
        bind: args.bind,
        stage: args.stage,
        policy: args.policy,
        timeout: args.timeout,
        memory: args.memory.map(RawByteSize::Text),
        order: args.order,
    };
    let spec = binding
        .compile("", LOCAL_MEMORY_CEILING)
        .context("invalid binding")?;
    let wasm = read_component(&args.file).await?;
    let client = AdminClient::from_args(&args.admin)?;
    let started = Instant::now();
    let applied = client.deploy(&name, &binding, &wasm).await?;
    println!(
        "{}",
        deployed_line(&name, applied.version, &spec, started.elapsed())
    );
    Ok(())
}

/// `tern fn list`: the functions in force on the edge, with their counters.
pub(crate) async fn list(args: ListArgs) -> anyhow::Result<()> {
    let client = AdminClient::from_args(&args.admin)?;
    if args.json {
        let body = client
            .call("GET", "/v1/admin/functions", None, REQUEST_TIMEOUT)
            .await?;
        let value: serde_json::Value =
            serde_json::from_slice(&body).context("the edge's answer is not JSON")?;
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let listing = client.list().await?;
    if listing.functions.is_empty() {
        println!("no functions on edge {}", listing.edge);
    } else {
        print!("{}", table(&listing.functions));
    }
    Ok(())
}

/// `tern fn rollback`: brings an earlier version back (as a new version).
pub(crate) async fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let name = parse_name(&args.name)?;
    let client = AdminClient::from_args(&args.admin)?;
    let started = Instant::now();
    let applied = client.rollback(&name, args.to).await?;
    let to = args
        .to
        .map_or_else(|| "the version before".to_owned(), |to| format!("v{to}"));
    println!(
        "function {name} rolled back to {to}: v{} in force, in {} ms",
        applied.version.unwrap_or_default(),
        started.elapsed().as_millis()
    );
    Ok(())
}

/// `tern fn remove`: takes the function off every edge.
pub(crate) async fn remove(args: RemoveArgs) -> anyhow::Result<()> {
    let name = parse_name(&args.name)?;
    let client = AdminClient::from_args(&args.admin)?;
    let started = Instant::now();
    client.remove(&name).await?;
    println!(
        "function {name} removed in {} ms",
        started.elapsed().as_millis()
    );
    Ok(())
}

/// The line printed for a deploy, by `tern deploy` and `tern dev`:
/// `function profanity v3 deployed (bind chat:*, ingress) in 12 ms`.
pub(crate) fn deployed_line(
    name: &FunctionName,
    version: Option<u32>,
    spec: &BindingSpec,
    took: Duration,
) -> String {
    let version = version.map_or_else(String::new, |v| format!(" v{v}"));
    format!(
        "function {name}{version} deployed (bind {}, {}) in {} ms",
        describe_patterns(spec),
        spec.stage,
        took.as_millis()
    )
}

/// The patterns of a binding, space-separated.
pub(crate) fn describe_patterns(spec: &BindingSpec) -> String {
    spec.patterns
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads a component for deploying, refusing what is plainly not one.
pub(crate) async fn read_component(path: &Path) -> anyhow::Result<Vec<u8>> {
    let metadata = match tokio::fs::metadata(path).await {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} does not exist (build a function with `tern fn build DIR`)",
            path.display()
        ),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot read {}", path.display()));
        }
    };
    if !metadata.is_file() {
        bail!("{} is not a file", path.display());
    }
    if metadata.len() > MAX_COMPONENT_BYTES {
        bail!(
            "{} is {:.1} MiB; the admin API takes components up to {} MiB",
            path.display(),
            metadata.len() as f64 / f64::from(1 << 20),
            MAX_COMPONENT_BYTES >> 20
        );
    }
    let wasm = tokio::fs::read(path)
        .await
        .with_context(|| format!("cannot read {}", path.display()))?;
    check_component_header(&wasm).with_context(|| path.display().to_string())?;
    Ok(wasm)
}

/// Refuses files that are not WebAssembly, and core modules (a component is needed).
/// Anything past the header is for the edge to judge against its world.
pub(crate) fn check_component_header(wasm: &[u8]) -> anyhow::Result<()> {
    match wasm.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => bail!(
            "a core WebAssembly module, not a component: build the crate with `tern fn build`, \
             which wraps it in the tern:function world"
        ),
        Some([0, b'a', b's', b'm', ..]) => Ok(()),
        _ => bail!("not a WebAssembly file (no \\0asm header)"),
    }
}

fn parse_name(text: &str) -> anyhow::Result<FunctionName> {
    FunctionName::parse(text).map_err(|message| anyhow::anyhow!("--name: {message}"))
}

fn parse_stage(text: &str) -> Result<Stage, String> {
    match text {
        "ingress" => Ok(Stage::Ingress),
        "egress" => Ok(Stage::Egress),
        _ => Err("expected `ingress` or `egress`".to_owned()),
    }
}

fn parse_policy(text: &str) -> Result<FailurePolicy, String> {
    match text {
        "fail-closed" => Ok(FailurePolicy::FailClosed),
        "fail-open" => Ok(FailurePolicy::FailOpen),
        _ => Err("expected `fail-closed` or `fail-open`".to_owned()),
    }
}

/// The admin key: `--key`, else `$TERN_ADMIN_KEY`, else `./.tern/dev-key`.
fn admin_key(flag: Option<&str>) -> anyhow::Result<String> {
    if let Some(key) = flag {
        return Ok(key.trim().to_owned());
    }
    if let Ok(key) = std::env::var("TERN_ADMIN_KEY")
        && !key.trim().is_empty()
    {
        return Ok(key.trim().to_owned());
    }
    let path = Path::new(DEV_KEY_FILE);
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.len() <= MAX_KEY_FILE_BYTES => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Ok(text.trim().to_owned())
        }
        Ok(_) => bail!("{} is too large to hold a key", path.display()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!(
            "no admin key: pass --key app.keyid:secret, set TERN_ADMIN_KEY, \
             or run this where `tern dev` keeps ./.tern/dev-key"
        ),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// An error the edge answered with (`{"error": {...}}`).
#[derive(Debug)]
struct AdminError(ErrorInfo);

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.code, self.0.message)
    }
}

impl std::error::Error for AdminError {}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorInfo,
}

/// What the edge answers to a deploy, rollback or remove.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Applied {
    /// The version now in force (none after a remove).
    #[serde(default)]
    pub(crate) version: Option<u32>,
    /// From the record being stored to it being in force on the edge asked.
    #[serde(default)]
    pub(crate) applied_ms: f64,
}

/// `GET /v1/admin/functions`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Listing {
    /// The edge's name.
    pub(crate) edge: String,
    /// Every function in force there (and those whose last deploy failed there).
    pub(crate) functions: Vec<FunctionInfo>,
}

/// One function as the edge lists it. Fields this tern does not know are ignored,
/// missing ones default, so a newer or older edge still lists.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct FunctionInfo {
    pub(crate) name: String,
    pub(crate) version: u32,
    pub(crate) source: String,
    pub(crate) stage: String,
    pub(crate) policy: String,
    pub(crate) bind: Vec<String>,
    pub(crate) timeout_us: u64,
    pub(crate) memory_bytes: u64,
    pub(crate) order: i32,
    pub(crate) sha256: String,
    pub(crate) error: Option<String>,
    pub(crate) stats: Stats,
}

/// A function's counters on one edge.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Stats {
    pub(crate) invocations: u64,
    passes: u64,
    drops: u64,
    rejects: u64,
    traps: u64,
    timeouts: u64,
    p50_us: f64,
    p99_us: f64,
}

impl FunctionInfo {
    /// True if this is `sha256` bound as `spec`: deploying that again changes nothing.
    pub(crate) fn is(&self, sha256: &str, spec: &BindingSpec) -> bool {
        self.error.is_none()
            && self.sha256 == sha256
            && self.stage == spec.stage.as_str()
            && self.policy == spec.policy.as_str()
            && self.bind
                == spec
                    .patterns
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            && u128::from(self.timeout_us) == spec.timeout.as_micros()
            && self.memory_bytes == spec.memory_bytes as u64
            && self.order == spec.order
    }
}

/// The body of a deploy.
#[derive(Serialize)]
struct DeployBody<'a> {
    binding: &'a RawBindingSpec,
    wasm_base64: String,
}

/// Talks to one edge's admin API with one key.
#[derive(Debug, Clone)]
pub(crate) struct AdminClient {
    endpoint: Endpoint,
    key: String,
}

impl AdminClient {
    /// A client for `endpoint`, presenting `key`.
    pub(crate) fn new(endpoint: Endpoint, key: String) -> Self {
        Self { endpoint, key }
    }

    fn from_args(args: &AdminArgs) -> anyhow::Result<Self> {
        let endpoint = Endpoint::parse(&args.edge).context("--edge")?;
        Ok(Self::new(endpoint, admin_key(args.key.as_deref())?))
    }

    /// The functions in force on the edge.
    pub(crate) async fn list(&self) -> anyhow::Result<Listing> {
        let body = self
            .call("GET", "/v1/admin/functions", None, REQUEST_TIMEOUT)
            .await?;
        serde_json::from_slice(&body)
            .context("the edge's list of functions is not what this tern expects")
    }

    /// Deploys `wasm` as `name`, bound as `binding`.
    pub(crate) async fn deploy(
        &self,
        name: &FunctionName,
        binding: &RawBindingSpec,
        wasm: &[u8],
    ) -> anyhow::Result<Applied> {
        let body = serde_json::to_vec(&DeployBody {
            binding,
            wasm_base64: base64::engine::general_purpose::STANDARD.encode(wasm),
        })?;
        let answer = self
            .call(
                "POST",
                &format!("/v1/admin/functions/{name}"),
                Some(&body),
                DEPLOY_TIMEOUT,
            )
            .await?;
        parse_applied(&answer)
    }

    /// Rolls `name` back to `to`, or to the version before the one in force.
    pub(crate) async fn rollback(
        &self,
        name: &FunctionName,
        to: Option<u32>,
    ) -> anyhow::Result<Applied> {
        let body = match to {
            Some(to) => serde_json::to_vec(&serde_json::json!({ "to": to }))?,
            None => Vec::new(),
        };
        let answer = self
            .call(
                "POST",
                &format!("/v1/admin/functions/{name}/rollback"),
                Some(&body),
                DEPLOY_TIMEOUT,
            )
            .await?;
        parse_applied(&answer)
    }

    /// Removes `name`.
    pub(crate) async fn remove(&self, name: &FunctionName) -> anyhow::Result<Applied> {
        let answer = self
            .call(
                "DELETE",
                &format!("/v1/admin/functions/{name}"),
                None,
                DEPLOY_TIMEOUT,
            )
            .await?;
        parse_applied(&answer)
    }

    /// True when the edge answers `GET /readyz` with 200 (linked, functions applied).
    pub(crate) async fn is_ready(&self) -> bool {
        let request = Request {
            method: "GET",
            path: "/readyz",
            bearer: None,
            json: None,
        };
        matches!(
            http_client::send(&self.endpoint, request, REQUEST_TIMEOUT).await,
            Ok(response) if response.status == 200
        )
    }

    /// One request; a 2xx answer's body, or the edge's error.
    async fn call(
        &self,
        method: &str,
        path: &str,
        json: Option<&[u8]>,
        timeout: Duration,
    ) -> anyhow::Result<Vec<u8>> {
        let request = Request {
            method,
            path,
            bearer: Some(&self.key),
            json,
        };
        let endpoint = &self.endpoint;
        let response = match http_client::send(endpoint, request, timeout).await {
            Ok(response) => response,
            Err(HttpError::Unreachable(error)) => bail!(
                "cannot reach the edge at {endpoint} ({error}): is `tern dev` running? \
                 (another edge: --edge URL)"
            ),
            Err(error) => bail!("{method} {endpoint}{path}: {error}"),
        };
        if (200..300).contains(&response.status) {
            return Ok(response.body);
        }
        match serde_json::from_slice::<ErrorBody>(&response.body) {
            Ok(body) => Err(AdminError(body.error).into()),
            Err(_) => {
                let text = String::from_utf8_lossy(&response.body);
                let text: String = text.chars().take(300).collect();
                bail!(
                    "{method} {endpoint}{path}: HTTP {} {}",
                    response.status,
                    text.trim()
                )
            }
        }
    }
}

fn parse_applied(body: &[u8]) -> anyhow::Result<Applied> {
    serde_json::from_slice(body).context("the edge's answer is not what this tern expects")
}

/// `tern fn list`'s table, one row per function, the error last.
fn table(functions: &[FunctionInfo]) -> String {
    const HEADER: [&str; 14] = [
        "NAME",
        "VERSION",
        "STAGE",
        "POLICY",
        "BIND",
        "INVOCATIONS",
        "PASSES",
        "DROPS",
        "REJECTS",
        "TRAPS",
        "TIMEOUTS",
        "P50 µs",
        "P99 µs",
        "ERROR",
    ];
    let rows: Vec<[String; 14]> = functions
        .iter()
        .map(|f| {
            let s = &f.stats;
            let micros = |v: f64| {
                if s.invocations == 0 {
                    "-".to_owned()
                } else {
                    format!("{v:.1}")
                }
            };
            [
                f.name.clone(),
                match f.source.as_str() {
                    "static" => "static".to_owned(),
                    _ if f.version == 0 => "-".to_owned(),
                    _ => format!("v{}", f.version),
                },
                f.stage.clone(),
                f.policy.clone(),
                if f.bind.is_empty() {
                    "-".to_owned()
                } else {
                    f.bind.join(" ")
                },
                s.invocations.to_string(),
                s.passes.to_string(),
                s.drops.to_string(),
                s.rejects.to_string(),
                s.traps.to_string(),
                s.timeouts.to_string(),
                micros(s.p50_us),
                micros(s.p99_us),
                f.error
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |e| e.replace(['\n', '\r'], " ")),
            ]
        })
        .collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADER.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (index, (cell, width)) in row.iter().zip(widths).enumerate() {
            let pad = width.saturating_sub(cell.chars().count());
            // Counters align right, text left; the last column is not padded.
            if index == row.len() - 1 {
                line.push_str(cell);
            } else if (5..13).contains(&index) {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
                line.push_str("  ");
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(bind: &[&str]) -> BindingSpec {
        RawBindingSpec {
            bind: bind.iter().map(|b| (*b).to_owned()).collect(),
            ..RawBindingSpec::default()
        }
        .compile("", LOCAL_MEMORY_CEILING)
        .expect("valid binding")
    }

    #[test]
    fn the_deploy_line_names_version_patterns_and_stage() {
        let name = FunctionName::parse("profanity").expect("valid");
        assert_eq!(
            deployed_line(
                &name,
                Some(3),
                &spec(&["chat:*", "room:#"]),
                Duration::from_millis(12)
            ),
            "function profanity v3 deployed (bind chat:* room:#, ingress) in 12 ms"
        );
    }

    #[test]
    fn headers_tell_components_from_modules_and_junk() {
        assert!(check_component_header(b"\0asm\x0d\0\x01\0rest").is_ok());
        let module = check_component_header(b"\0asm\x01\0\0\0").expect_err("a core module");
        assert!(module.to_string().contains("tern fn build"), "{module}");
        for junk in [&b""[..], b"\0asm", b"hello world, not wasm"] {
            let error = check_component_header(junk).expect_err("junk");
            assert!(
                error.to_string().contains("not a WebAssembly file"),
                "{error}"
            );
        }
    }

    #[test]
    fn an_identical_deploy_is_recognised() {
        let spec = spec(&["chat:*"]);
        let listed = FunctionInfo {
            name: "f".into(),
            version: 2,
            source: "deployed".into(),
            stage: "ingress".into(),
            policy: "fail-closed".into(),
            bind: vec!["chat:*".into()],
            timeout_us: 2000,
            memory_bytes: 16 << 20,
            order: 0,
            sha256: "ab".into(),
            ..FunctionInfo::default()
        };
        assert!(listed.is("ab", &spec));
        assert!(!listed.is("cd", &spec));
        assert!(!listed.is("ab", &super::tests::spec(&["chat:*", "x"])));
        let failed = FunctionInfo {
            error: Some("boom".into()),
            ..listed
        };
        assert!(!failed.is("ab", &spec));
    }

    #[test]
    fn the_table_aligns_and_shows_errors_last() {
        let row = FunctionInfo {
            name: "profanity".into(),
            version: 3,
            source: "deployed".into(),
            stage: "ingress".into(),
            policy: "fail-closed".into(),
            bind: vec!["chat:*".into()],
            stats: Stats {
                invocations: 10,
                passes: 9,
                rejects: 1,
                p50_us: 1.5,
                p99_us: 7.0,
                ..Stats::default()
            },
            ..FunctionInfo::default()
        };
        let failed = FunctionInfo {
            name: "broken".into(),
            source: "failed".into(),
            stage: "-".into(),
            policy: "-".into(),
            error: Some("component refused:\nwrong world".into()),
            ..FunctionInfo::default()
        };
        let text = table(&[row, failed]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("NAME       VERSION  STAGE"), "{text}");
        assert!(lines[0].ends_with("P99 µs  ERROR"), "{text}");
        assert!(
            lines[1].starts_with("profanity  v3       ingress"),
            "{text}"
        );
        assert!(
            lines[1].contains("1.5") && lines[1].contains("7.0"),
            "{text}"
        );
        assert!(lines[1].ends_with('-'), "{text}");
        assert!(lines[2].starts_with("broken     -"), "{text}");
        assert!(
            lines[2].ends_with("component refused: wrong world"),
            "{text}"
        );
        // Every column starts at the same place on every line.
        let column = |line: &str, at: &str| line.find(at).expect("present");
        assert_eq!(column(lines[0], "STAGE"), column(lines[1], "ingress"));
    }

    #[test]
    fn stages_and_policies_parse_from_flags() {
        assert_eq!(parse_stage("egress"), Ok(Stage::Egress));
        assert!(parse_stage("Egress").is_err());
        assert_eq!(parse_policy("fail-open"), Ok(FailurePolicy::FailOpen));
        assert!(parse_policy("open").is_err());
    }
}
