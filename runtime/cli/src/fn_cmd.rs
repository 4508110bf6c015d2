//! `tern fn`: message functions on this machine — build a crate into a component,
//! scaffold a new crate. Both are thin over `tern-fnbuild`.
//!
//! ```text
//! $ tern fn new chat-filter
//! created ./chat-filter (a Tern function crate); build it with: tern fn build chat-filter
//! $ tern fn build chat-filter
//! building chat-filter with rustup target wasm32-unknown-unknown (…)
//!    Compiling chat-filter v0.1.0 (…)                          (cargo's lines, on stderr)
//! built chat-filter/target/wasm/tern-fn/chat-filter.wasm (24.1 KiB component from 23.6 KiB module) in 3.2s
//! ```
//!
//! The `built` line goes to stdout, progress to stderr; a failure exits 1 with the error.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use tern_fnbuild::{BuildError, BuildOptions, NewOptions};

/// Flags of `tern fn`.
#[derive(Debug, Args)]
pub(crate) struct FnArgs {
    #[command(subcommand)]
    command: FnCommand,
}

#[derive(Debug, Subcommand)]
enum FnCommand {
    /// Build a function crate into a WebAssembly component (.wasm).
    Build(BuildArgs),
    /// Create a function crate: an example function, its unit tests and a host test.
    New(NewArgs),
    /// List the functions in force on an edge, with their counters.
    List(crate::deploy_cmd::ListArgs),
    /// Bring an earlier version of a function back (as a new version).
    Rollback(crate::deploy_cmd::RollbackArgs),
    /// Remove a function from every edge.
    Remove(crate::deploy_cmd::RemoveArgs),
}

/// Flags of `tern fn build`.
#[derive(Debug, Args)]
struct BuildArgs {
    /// The crate's directory.
    #[arg(default_value = ".", value_name = "PATH")]
    path: PathBuf,
    /// Cargo target directory for the wasm build [default: <workspace target>/wasm].
    #[arg(long, value_name = "DIR")]
    target_dir: Option<PathBuf>,
    /// Print only the result line (and errors).
    #[arg(long, short)]
    quiet: bool,
}

/// Flags of `tern fn new`.
#[derive(Debug, Args)]
struct NewArgs {
    /// The crate's name (ASCII letters, digits, `-`, `_`).
    name: String,
    /// Create the crate in this directory [default: the current one].
    #[arg(long, default_value = ".", value_name = "DIR")]
    dir: PathBuf,
    /// The sdk/ directory of a Tern checkout, for crates outside one [default: the
    /// checkout this tern was built from].
    #[arg(long, value_name = "PATH")]
    sdk: Option<PathBuf>,
}

/// Runs a `tern fn` subcommand.
pub(crate) async fn run(args: FnArgs) -> anyhow::Result<()> {
    // `build` and `new` block (cargo, files); nothing else runs meanwhile.
    match args.command {
        FnCommand::Build(args) => build(args),
        FnCommand::New(args) => new(args),
        FnCommand::List(args) => crate::deploy_cmd::list(args).await,
        FnCommand::Rollback(args) => crate::deploy_cmd::rollback(args).await,
        FnCommand::Remove(args) => crate::deploy_cmd::remove(args).await,
    }
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let options = BuildOptions {
        target_dir: args.target_dir,
        quiet: args.quiet,
    };
    let built = match tern_fnbuild::build(&args.path, &options) {
        Ok(built) => built,
        // Unless quiet, cargo's output is on the screen already: no second copy.
        Err(BuildError::Cargo {
            command, status, ..
        }) if !args.quiet && command == "cargo build" => {
            anyhow::bail!(
                "cannot build {}: `{command}` failed ({status}); its output is above",
                args.path.display()
            )
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot build {}", args.path.display()));
        }
    };
    println!(
        "built {} ({} component from {} module) in {:.1}s",
        shorter(&built.component).display(),
        kib(built.component_bytes),
        kib(built.core_bytes),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn new(args: NewArgs) -> anyhow::Result<()> {
    let sdk = args.sdk.unwrap_or_else(|| {
        // This tern's own checkout: runtime/cli/../../sdk.
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk")
    });
    let made = tern_fnbuild::new_function(&NewOptions {
        name: args.name.clone(),
        dir: args.dir,
        sdk,
    })?;
    let dir = shorter(&made.crate_dir);
    println!("created {} (a Tern function crate)", dir.display());
    if let Some(membership) = made.member_of {
        println!(
            "add \"{}\" to `members` in {}, then build it with: tern fn build {}",
            membership.member,
            membership.workspace_manifest.display(),
            dir.display()
        );
    } else {
        println!("build it with: tern fn build {}", dir.display());
    }
    Ok(())
}

/// `path` relative to the current directory when it is under it.
fn shorter(path: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| cwd.canonicalize().ok())
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .filter(|relative| !relative.as_os_str().is_empty())
        .unwrap_or_else(|| path.to_path_buf())
}

/// A size in KiB with one decimal.
fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}
