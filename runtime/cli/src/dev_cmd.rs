//! `tern dev`: a log node and an edge in one process, for trying Tern on one machine.
//!
//! Data lives in `--data-dir` (default `./.tern`): the embedded store and its
//! development certificate in `log/`, the development API key in `dev-key`, created
//! on first start (random secret, allowed everything on every channel) and reused
//! after, and compiled functions in `fn-cache/`. The dev key is also the edge's admin
//! key, so `tern deploy` and `tern fn list` run from the same directory need no
//! `--key`. The log listens on 127.0.0.1 on a free port; the edge on
//! 127.0.0.1:`--port` (default 8080; 0 picks a free one).
//!
//! With a functions directory (`--functions DIR`; by default `functions/` next to the
//! data dir when it exists, so `./functions` for the default `./.tern`), every
//! function crate there with a built component and a `[package.metadata.tern]`
//! binding is deployed once the edge is ready, and deployed again when its component
//! or binding changes (see [`crate::dev_functions`]). `tern dev` builds nothing:
//! `tern fn build` does.
//!
//! Prints on stdout, first line stable for scripts:
//!
//! ```text
//! tern dev listening on http://127.0.0.1:8080
//! WebSocket  ws://127.0.0.1:8080/v1/ws  (subprotocol tern.v1.json or tern.v1.msgpack)
//! API key    dev.local:3f9c…
//! …a curl publish and history example, and then one line per function deployed:
//! function profanity v3 deployed (bind chat:*, ingress) in 12 ms
//! ```

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use tern_config::{
    ApiKey, Capabilities, ChannelPattern, ClusterSecret, EdgeConfig, LinkServerConfig,
    LogNodeConfig, Operations,
};
use tern_edge::{Edge, EdgeHandle};
use tern_log::EmbeddedStore;
use tern_log::net::{LogServer, tls};
use tracing::info;

use crate::deploy_cmd::AdminClient;
use crate::dev_functions::FunctionsDir;
use crate::http_client::Endpoint;

/// The dev key's app and id.
const DEV_APP: &str = "dev";
const DEV_KEY_ID: &str = "local";

/// Flags of `tern dev`.
#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// Port of the edge on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Directory for the log's data, its certificate, the dev key and the function cache.
    #[arg(long, value_name = "DIR", default_value = "./.tern")]
    data_dir: PathBuf,
    /// Directory of function crates to deploy and redeploy when rebuilt [default:
    /// `functions` next to the data dir, if it exists].
    #[arg(long, value_name = "DIR")]
    functions: Option<PathBuf>,
}

/// Runs the log and the edge until SIGINT or SIGTERM. The banner is printed once the
/// edge is ready.
pub(crate) async fn run(args: DevArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir;
    let log_dir = data_dir.join("log");
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("cannot create data directory {}", log_dir.display()))?;
    let key = dev_key(&data_dir.join("dev-key"))?;
    let cluster_secret = cluster_secret(&data_dir.join("cluster-secret"))?;
    let cache_dir = data_dir.join("fn-cache");
    std::fs::create_dir_all(&cache_dir)
        .with_context(|| format!("cannot create {}", cache_dir.display()))?;
    let functions_dir = functions_dir(args.functions, &data_dir)?;

    let log_config = LogNodeConfig::default();
    let cert = tls::ensure_self_signed(&log_dir, "127.0.0.1")?;
    let store_config = log_config.store.clone();
    let open_dir = log_dir.clone();
    let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&open_dir, store_config))
        .await
        .context("store opening task failed")?
        .with_context(|| format!("cannot open the store in {}", log_dir.display()))?;
    let server = LogServer::bind(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        &cert.files,
        store,
        &LinkServerConfig::default(),
    )?;
    let log_addr = server
        .local_addr()
        .context("cannot read the log's address")?;
    let (stop_log, log_stopped) = tokio::sync::oneshot::channel::<()>();
    let log = tokio::spawn(server.serve_until(async {
        let _ = log_stopped.await;
    }));
    info!(%log_addr, "log node serving");

    let mut config = EdgeConfig {
        name: "dev".to_owned(),
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)),
        keys: vec![key.clone()],
        // The same key deploys functions; as an admin key it grants nothing else.
        admin_keys: vec![ApiKey {
            capabilities: Capabilities::default(),
            ..key.clone()
        }],
        ..EdgeConfig::default()
    };
    config.log.addr = log_addr;
    config.log.ca = Some(cert.files.cert.clone());
    config.cluster.connection_key_secret = Some(cluster_secret);
    config.functions.cache_dir = Some(cache_dir);
    let max_memory_bytes = config.functions.max_memory_bytes;
    let edge = Edge::start(config).await.context("cannot start the edge")?;
    let addr = edge.local_addr();
    wait_until_ready(&edge).await;
    let key_text = format!("{}.{}:{}", key.app, key.key_id, key.secret);
    crate::announce(&format!(
        "tern dev listening on http://{addr}\n\
         WebSocket  ws://{addr}/v1/ws  (subprotocol tern.v1.json or tern.v1.msgpack)\n\
         API key    {key_text}\n\
         Data       {data}\n\
         Publish    curl -u '{key_text}' -d '{{\"data\":\"hello\"}}' http://{addr}/v1/channels/hello/messages\n\
         History    curl -u '{key_text}' 'http://{addr}/v1/channels/hello/messages?from=1&limit=10'\n\
         Functions  {functions}\n",
        data = data_dir.display(),
        functions = functions_dir.as_ref().map_or_else(
            || "none (--functions DIR deploys a directory of function crates)".to_owned(),
            |dir| format!(
                "{} (deployed when built with `tern fn build`, again on change)",
                dir.display()
            )
        ),
    ));
    let watcher = match functions_dir {
        Some(dir) => {
            let endpoint = Endpoint::parse(&addr.to_string()).context("the edge's own address")?;
            let client = AdminClient::new(endpoint, key_text.clone());
            Some(tokio::spawn(
                FunctionsDir::new(dir, client, max_memory_bytes).run(),
            ))
        }
        None => None,
    };
    let signal = crate::wait_for_signal().await?;
    info!(signal, "stopping");
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    edge.shutdown().await;
    let _ = stop_log.send(());
    log.await.context("log task failed")??;
    info!("stopped");
    Ok(())
}

/// Waits until the edge is ready (its link to the log is up and the deployed
/// functions are in force), so that the banner's URLs work as soon as it is printed.
/// Says so on stderr if that takes a while; gives up waiting after [`READY_WAIT`]
/// with a warning (the edge keeps trying, and `/readyz` tells when it is ready).
async fn wait_until_ready(edge: &EdgeHandle) {
    let started = std::time::Instant::now();
    let mut told = false;
    while !edge.ready() {
        let waited = started.elapsed();
        if waited >= READY_WAIT {
            tracing::warn!(
                ?waited,
                "the edge is not ready yet; starting anyway (see /readyz)"
            );
            return;
        }
        if !told && waited >= std::time::Duration::from_secs(2) {
            eprintln!(
                "tern dev: waiting for the edge to reach the log and apply the deployed functions…"
            );
            told = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Longest wait for the edge to become ready before the banner is printed anyway.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The functions directory: `flag` when given (it must exist), else `functions/` next
/// to the data dir when it exists. (Not the current directory's: a data dir elsewhere,
/// as `tern bench` uses, must not pick up the examples of the directory it runs in.)
fn functions_dir(flag: Option<PathBuf>, data_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    if let Some(dir) = flag {
        if !dir.is_dir() {
            bail!("--functions {}: not a directory", dir.display());
        }
        return Ok(Some(dir));
    }
    let beside_data = data_dir
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("functions");
    Ok(beside_data.is_dir().then_some(beside_data))
}

/// The dev key in `path`, created (mode 0600) with a random secret if missing.
fn dev_key(path: &Path) -> anyhow::Result<ApiKey> {
    let secret = match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = text.trim();
            let Some(secret) = text.strip_prefix(&format!("{DEV_APP}.{DEV_KEY_ID}:")) else {
                bail!(
                    "{} does not hold a dev key ({DEV_APP}.{DEV_KEY_ID}:<secret>); delete it to get a new one",
                    path.display()
                );
            };
            if secret.len() < tern_config::edge::MIN_SECRET_CHARS {
                bail!(
                    "the secret in {} is too short; delete the file to get a new one",
                    path.display()
                );
            }
            secret.to_owned()
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let secret = random_secret();
            write_private(path, &format!("{DEV_APP}.{DEV_KEY_ID}:{secret}\n"))
                .with_context(|| format!("cannot write {}", path.display()))?;
            info!(path = %path.display(), "created a dev API key");
            secret
        }
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    let everything = ChannelPattern::parse("*").context("the pattern `*`")?;
    Ok(ApiKey {
        app: DEV_APP.to_owned(),
        key_id: DEV_KEY_ID.to_owned(),
        secret,
        capabilities: Capabilities::new([(everything, Operations::ALL)]),
    })
}

/// The secret that signs connection keys, in `path`, created (mode 0600) if missing:
/// connections resume across restarts of `tern dev`.
fn cluster_secret(path: &Path) -> anyhow::Result<ClusterSecret> {
    let secret = match std::fs::read_to_string(path) {
        Ok(text) => text.trim().to_owned(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let secret = random_hex(32);
            write_private(path, &format!("{secret}\n"))
                .with_context(|| format!("cannot write {}", path.display()))?;
            secret
        }
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    if secret.len() < 32 {
        bail!(
            "the secret in {} is too short; delete the file to get a new one",
            path.display()
        );
    }
    Ok(ClusterSecret::new(&secret))
}

fn random_secret() -> String {
    random_hex(16)
}

/// `bytes` random bytes as lowercase hex.
fn random_hex(bytes: usize) -> String {
    use rand::RngCore as _;
    let mut raw = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}
