//! Which compiler builds `wasm32-unknown-unknown` here: a decision over what was found
//! ([`Probe`] → [`choose`], pure) and the few file-system looks that fill a [`Probe`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target every function is built for: no WASI, so the component imports only
/// what the `tern:function` world grants.
pub const TARGET: &str = "wasm32-unknown-unknown";

/// Where Debian's `rustc-web` lives (its sysroot is `/usr`).
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
/// The standard library's sources `rust-web-src` installs, which `-Zbuild-std` compiles.
const DEBIAN_LIBRARY_SRC: &str = "/usr/lib/rustlib/src/rust/library";
/// The WebAssembly linker `lld-19` installs.
const DEBIAN_LINKER: &str = "wasm-ld-19";

/// How a function crate is compiled to a core WebAssembly module.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Toolchain {
    /// rustup's precompiled standard library for `wasm32-unknown-unknown`: a plain
    /// `cargo build --target wasm32-unknown-unknown`.
    Rustup {
        /// The sysroot of the `rustc` cargo runs, which holds the target's library.
        sysroot: PathBuf,
    },
    /// Debian's `rustc-web` with `rust-web-src` and `lld-19`: the standard library is
    /// compiled from source (`RUSTC_BOOTSTRAP=1 cargo build -Zbuild-std=std,panic_abort`)
    /// and linked with `wasm-ld-19`.
    Debian {
        /// The compiler (`/usr/bin/rustc`).
        rustc: PathBuf,
        /// The linker (`wasm-ld-19` found on `PATH`).
        linker: PathBuf,
    },
}

impl fmt::Display for Toolchain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Toolchain::Rustup { sysroot } => {
                write!(f, "rustup target {TARGET} ({})", sysroot.display())
            }
            Toolchain::Debian { rustc, linker } => write!(
                f,
                "Debian rustc-web ({}) with -Zbuild-std and {}",
                rustc.display(),
                linker.display()
            ),
        }
    }
}

/// What was found on this machine: the input of [`choose`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// The sysroot `rustc --print sysroot` printed (`None`: no `rustc` answered).
    pub sysroot: Option<PathBuf>,
    /// Whether `<sysroot>/lib/rustlib/wasm32-unknown-unknown/lib` exists.
    pub rustup_target: bool,
    /// Whether `/usr/bin/rustc` exists (package `rustc-web`).
    pub debian_rustc: bool,
    /// Whether `/usr/lib/rustlib/src/rust/library` exists (package `rust-web-src`).
    pub debian_library_src: bool,
    /// `wasm-ld-19` on `PATH` (package `lld-19`).
    pub debian_linker: Option<PathBuf>,
}

/// Picks the toolchain: rustup's target when installed, else the Debian route when all
/// three of its parts are there. Otherwise returns what is missing, one item per part,
/// for [`crate::BuildError::NoToolchain`].
pub fn choose(probe: &Probe) -> Result<Toolchain, Vec<String>> {
    if let (Some(sysroot), true) = (&probe.sysroot, probe.rustup_target) {
        return Ok(Toolchain::Rustup {
            sysroot: sysroot.clone(),
        });
    }
    if let (true, true, Some(linker)) = (
        probe.debian_rustc,
        probe.debian_library_src,
        &probe.debian_linker,
    ) {
        return Ok(Toolchain::Debian {
            rustc: PathBuf::from(DEBIAN_RUSTC),
            linker: linker.clone(),
        });
    }
    let mut missing = vec![match &probe.sysroot {
        Some(sysroot) => format!(
            "the {TARGET} target of the rustc at {} (no {})",
            sysroot.display(),
            target_lib(sysroot).display()
        ),
        None => "a rustc that answers `rustc --print sysroot`".to_owned(),
    }];
    if !probe.debian_rustc {
        missing.push(format!("{DEBIAN_RUSTC} (package rustc-web)"));
    }
    if !probe.debian_library_src {
        missing.push(format!("{DEBIAN_LIBRARY_SRC} (package rust-web-src)"));
    }
    if probe.debian_linker.is_none() {
        missing.push(format!("{DEBIAN_LINKER} on PATH (package lld-19)"));
    }
    Err(missing)
}

/// Looks at this machine: asks the `rustc` cargo would run (`$RUSTC`, else `rustc`,
/// run in `crate_dir` so a `rust-toolchain.toml` there counts) for its sysroot, and
/// checks the Debian route's three paths.
pub fn probe(crate_dir: &Path) -> Probe {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .current_dir(crate_dir)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| PathBuf::from(text.trim()))
        .filter(|path| !path.as_os_str().is_empty());
    Probe {
        rustup_target: sysroot
            .as_deref()
            .is_some_and(|sysroot| target_lib(sysroot).is_dir()),
        sysroot,
        debian_rustc: Path::new(DEBIAN_RUSTC).is_file(),
        debian_library_src: Path::new(DEBIAN_LIBRARY_SRC).is_dir(),
        debian_linker: find_on_path(DEBIAN_LINKER),
    }
}

/// The directory holding a sysroot's precompiled library for [`TARGET`].
fn target_lib(sysroot: &Path) -> PathBuf {
    sysroot.join("lib/rustlib").join(TARGET).join("lib")
}

/// The first `PATH` entry holding a file called `name`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BuildError;

    fn debian_complete() -> Probe {
        Probe {
            sysroot: Some(PathBuf::from("/usr")),
            rustup_target: false,
            debian_rustc: true,
            debian_library_src: true,
            debian_linker: Some(PathBuf::from("/usr/bin/wasm-ld-19")),
        }
    }

    #[test]
    fn rustup_target_comes_first() {
        let probe = Probe {
            sysroot: Some(PathBuf::from("/home/u/.rustup/toolchains/stable")),
            rustup_target: true,
            ..debian_complete()
        };
        assert_eq!(
            choose(&probe),
            Ok(Toolchain::Rustup {
                sysroot: PathBuf::from("/home/u/.rustup/toolchains/stable")
            })
        );
    }

    #[test]
    fn debian_route_when_the_target_is_missing() {
        assert_eq!(
            choose(&debian_complete()),
            Ok(Toolchain::Debian {
                rustc: PathBuf::from("/usr/bin/rustc"),
                linker: PathBuf::from("/usr/bin/wasm-ld-19"),
            })
        );
    }

    #[test]
    fn debian_route_needs_all_three_parts() {
        for probe in [
            Probe {
                debian_rustc: false,
                ..debian_complete()
            },
            Probe {
                debian_library_src: false,
                ..debian_complete()
            },
            Probe {
                debian_linker: None,
                ..debian_complete()
            },
        ] {
            assert!(choose(&probe).is_err(), "{probe:?}");
        }
    }

    #[test]
    fn no_toolchain_says_what_is_missing_and_both_fixes() {
        let probe = Probe {
            sysroot: Some(PathBuf::from("/opt/rust")),
            debian_library_src: true,
            ..Probe::default()
        };
        let missing = choose(&probe).expect_err("nothing usable in this probe");
        let message = BuildError::NoToolchain { missing }.to_string();
        assert!(
            message.contains(
                "wasm32-unknown-unknown target of the rustc at /opt/rust \
                 (no /opt/rust/lib/rustlib/wasm32-unknown-unknown/lib)"
            ),
            "{message}"
        );
        assert!(
            message.contains("/usr/bin/rustc (package rustc-web)"),
            "{message}"
        );
        assert!(
            message.contains("wasm-ld-19 on PATH (package lld-19)"),
            "{message}"
        );
        // rust-web-src was found, so it is not named as missing.
        assert!(!message.contains("(package rust-web-src)"), "{message}");
        assert!(
            message.contains("rustup target add wasm32-unknown-unknown"),
            "{message}"
        );
        assert!(
            message.contains("apt-get install rustc-web rust-web-src lld-19"),
            "{message}"
        );
    }

    #[test]
    fn no_rustc_at_all() {
        let missing = choose(&Probe::default()).expect_err("empty probe");
        assert_eq!(missing.len(), 4);
        assert!(missing[0].contains("rustc --print sysroot"), "{missing:?}");
    }

    #[test]
    fn probe_finds_this_machines_rustc() {
        // Whatever this machine has, the rustc that runs cargo test answers.
        let probe = probe(Path::new(env!("CARGO_MANIFEST_DIR")));
        assert!(probe.sysroot.is_some(), "{probe:?}");
    }
}
