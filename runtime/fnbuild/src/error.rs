//! Everything that can stop a build, each saying whose move it is.

use std::path::PathBuf;
use std::process::ExitStatus;

/// Why a function crate did not become a component.
///
/// The user fixes everything except [`BuildError::Io`] (the machine): their toolchain,
/// their crate or their code. Nothing here is worth retrying unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Neither rustup's `wasm32-unknown-unknown` target nor the Debian route is
    /// installed; `missing` names each part that was looked for and not found.
    #[error(
        "no toolchain builds wasm32-unknown-unknown here; missing: {}. \
         Fix it with `rustup target add wasm32-unknown-unknown`, or on Debian \
         `apt-get install rustc-web rust-web-src lld-19`",
        missing.join("; ")
    )]
    NoToolchain {
        /// What was looked for and not found, one entry per part.
        missing: Vec<String>,
    },
    /// The directory holds no `Cargo.toml` with a `[package]`.
    #[error("{} is not a crate: no Cargo.toml with a [package] there", .0.display())]
    NotACrate(PathBuf),
    /// A cargo command failed: the crate does not compile, or its manifest is wrong.
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Cargo {
        /// The command that ran, e.g. `cargo build`.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// The last lines it wrote on stderr.
        stderr: String,
    },
    /// Cargo built the crate but no `.wasm` came out of it.
    #[error(
        "package {package} built no WebAssembly module: a function crate needs \
         `[lib] crate-type = [\"cdylib\", \"rlib\"]` in its Cargo.toml"
    )]
    NoArtifact {
        /// The package's name.
        package: String,
    },
    /// The core module cannot become a `tern:function` component (not a module, a
    /// foreign import, no embedded world).
    #[error("cannot make a component: {0}")]
    Componentize(String),
    /// The component came out invalid or without the `tern:function` handler export.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// Running a program or reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

impl BuildError {
    /// An [`BuildError::Io`] with what was being done.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| BuildError::Io { context, source }
    }
}
