//! Builds a Tern message-function crate into a WebAssembly component: what
//! `tern fn build` runs, and what host tests call to get the component they load.
//!
//! ```text
//!  crate dir ──cargo metadata──▶ package, target dir
//!      │
//!      ├──probe + choose──▶ Toolchain (rustup target | Debian rustc-web) or NoToolchain
//!      │
//!      └──cargo build --release --target wasm32-unknown-unknown──▶ core module (.wasm)
//!                                                                      │ componentize:
//!                  <target>/tern-fn/<package>.wasm ◀── validate ◀── wit-component
//! ```
//!
//! # Toolchains
//! Functions are built for `wasm32-unknown-unknown` (not `wasm32-wasip2`, which pulls
//! WASI imports in); `wit-component` then wraps the core module using the world
//! wit-bindgen embedded in it, with no WASI adapter. Two ways to get a compiler for
//! that target are tried, in order ([`choose`] decides from a [`Probe`]):
//!
//! 1. **rustup**: the `wasm32-unknown-unknown` target installed for the `rustc` cargo
//!    runs (`<sysroot>/lib/rustlib/wasm32-unknown-unknown/lib` exists). Install it with
//!    `rustup target add wasm32-unknown-unknown` (`scripts/setup.sh` does).
//! 2. **Debian**, for machines that cannot download rustup's target: `rustc-web`
//!    (`/usr/bin/rustc`), `rust-web-src` (the standard library's sources under
//!    `/usr/lib/rustlib/src/rust/library`) and `lld-19` (`wasm-ld-19`). The standard
//!    library is then compiled along with the function:
//!    `RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 cargo build -Zbuild-std=std,panic_abort`,
//!    linked with `wasm-ld-19`.
//!
//! With neither, [`build`] returns [`BuildError::NoToolchain`] naming each missing
//! part and both fixes.
//!
//! Every build uses release settings tuned for small modules, set through the
//! environment so a function crate needs no profile of its own: no debug info,
//! stripped, `panic = "abort"`, one codegen unit.
//!
//! # Scaffolding
//! [`new_function`] (`tern fn new`) writes a function crate: an example function with
//! native unit tests, and `tests/host.rs`, which builds the crate with [`build`] and
//! runs the component through `tern-function-test`. Inside a Tern checkout it is a
//! workspace member; elsewhere its own workspace with path dependencies on the SDK.
//!
//! # What it does not do
//! Install toolchains, optimise with `wasm-opt`, or load and run the component (that
//! is `tern-wasm`). Crates in other languages: any tool that makes a `tern:function`
//! component works; [`componentize`] accepts any core module with an embedded world.

mod cargo;
mod componentize;
mod error;
mod new;
mod toolchain;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use componentize::{component_exports, componentize};
pub use error::BuildError;
pub use new::{Membership, NewError, NewFunction, NewOptions, new_function};
pub use toolchain::{Probe, TARGET, Toolchain, choose, probe};

/// Tells apart the temporary files of builds running at once in this process.
static PARTIAL_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How [`build`] runs.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Cargo's target directory for the wasm build; the component goes to its
    /// `tern-fn/` folder. Default: `<the crate's workspace target dir>/wasm`, apart from
    /// native builds so a build started from `cargo test` never waits on its lock.
    pub target_dir: Option<PathBuf>,
    /// No progress lines on stderr (cargo's own output included); errors still carry
    /// cargo's last lines.
    pub quiet: bool,
}

/// A component [`build`] wrote.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Built {
    /// The package's name.
    pub package: String,
    /// The component: `<target dir>/tern-fn/<package>.wasm`.
    pub component: PathBuf,
    /// Size of the core module cargo produced.
    pub core_bytes: u64,
    /// Size of the component.
    pub component_bytes: u64,
    /// The toolchain that compiled it.
    pub toolchain: Toolchain,
}

/// Builds the function crate at `crate_dir` (a Tern workspace member or a standalone
/// crate) into a validated component exporting `tern:function/handler`.
///
/// Blocking: runs cargo twice (`metadata`, then `build`), so it takes as long as the
/// compile does. The component is written to a temporary file and renamed into
/// place, so a watcher never reads half of it.
pub fn build(crate_dir: &Path, options: &BuildOptions) -> Result<Built, BuildError> {
    let manifest = crate_dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(BuildError::NotACrate(crate_dir.to_owned()));
    }
    let package = cargo::package(&manifest)?;
    if !package.cdylib {
        return Err(BuildError::NoArtifact {
            package: package.name,
        });
    }
    let toolchain =
        choose(&probe(crate_dir)).map_err(|missing| BuildError::NoToolchain { missing })?;
    let target_dir = options
        .target_dir
        .clone()
        .unwrap_or_else(|| package.target_directory.join("wasm"));
    if !options.quiet {
        eprintln!("building {} with {toolchain}", package.name);
    }
    let core_path = cargo::build(&manifest, &package, &target_dir, &toolchain, options.quiet)?;
    let core = std::fs::read(&core_path).map_err(BuildError::io(format!(
        "cannot read {}",
        core_path.display()
    )))?;
    let component = componentize(&core)?;

    let out_dir = target_dir.join("tern-fn");
    std::fs::create_dir_all(&out_dir).map_err(BuildError::io(format!(
        "cannot create {}",
        out_dir.display()
    )))?;
    let out = out_dir.join(format!("{}.wasm", package.name));
    // Unique per build: two processes may build the same package at once.
    let partial = out_dir.join(format!(
        ".{}.{}.{}.partial",
        package.name,
        std::process::id(),
        PARTIAL_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&partial, &component).map_err(BuildError::io(format!(
        "cannot write {}",
        partial.display()
    )))?;
    std::fs::rename(&partial, &out)
        .map_err(BuildError::io(format!("cannot write {}", out.display())))?;
    Ok(Built {
        package: package.name,
        component: out,
        core_bytes: core.len() as u64,
        component_bytes: component.len() as u64,
        toolchain,
    })
}
