//! The two cargo runs: `cargo metadata` to find the package and its target directory,
//! and `cargo build` for `wasm32-unknown-unknown`, whose JSON messages name the module.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::BuildError;
use crate::toolchain::{TARGET, Toolchain};

/// How many of cargo's last stderr lines a [`BuildError::Cargo`] carries.
const STDERR_TAIL_LINES: usize = 40;
/// Longer stderr lines are cut to this many bytes in the tail.
const STDERR_LINE_MAX: usize = 1000;

/// Size over speed and no panic machinery: what every function build uses, set
/// through the environment so the crate's own profile needs nothing.
const PROFILE_ENV: [(&str, &str); 4] = [
    ("CARGO_PROFILE_RELEASE_DEBUG", "false"),
    ("CARGO_PROFILE_RELEASE_STRIP", "true"),
    ("CARGO_PROFILE_RELEASE_PANIC", "abort"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1"),
];

/// The package a build is about, from `cargo metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Package {
    /// Its name (`[package] name`).
    pub(crate) name: String,
    /// Its id in cargo's JSON messages.
    pub(crate) id: String,
    /// Whether its library target has crate type `cdylib`.
    pub(crate) cdylib: bool,
    /// The workspace's target directory (`CARGO_TARGET_DIR` counts).
    pub(crate) target_directory: PathBuf,
}

/// The cargo cargo itself runs us under (`$CARGO` under `cargo test`), else `cargo`.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")))
}

/// Runs `cargo metadata` on `manifest` and finds its package.
pub(crate) fn package(manifest: &Path) -> Result<Package, BuildError> {
    let output = cargo()
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest)
        .stdin(Stdio::null())
        .output()
        .map_err(BuildError::io("cannot run `cargo metadata`"))?;
    if !output.status.success() {
        return Err(BuildError::Cargo {
            command: "cargo metadata".to_owned(),
            status: output.status,
            stderr: tail(String::from_utf8_lossy(&output.stderr).lines()),
        });
    }
    let metadata: Value = serde_json::from_slice(&output.stdout).map_err(|error| {
        BuildError::io("cannot read `cargo metadata` output")(std::io::Error::other(error))
    })?;
    let manifest = manifest.canonicalize().map_err(BuildError::io(format!(
        "cannot resolve {}",
        manifest.display()
    )))?;
    find_package(&metadata, &manifest)
        .ok_or_else(|| BuildError::NotACrate(manifest.parent().unwrap_or(&manifest).to_owned()))
}

/// The package of `cargo metadata` output whose manifest is `manifest` (canonical).
fn find_package(metadata: &Value, manifest: &Path) -> Option<Package> {
    let target_directory = PathBuf::from(metadata.get("target_directory")?.as_str()?);
    metadata
        .get("packages")?
        .as_array()?
        .iter()
        .find(|package| {
            package
                .get("manifest_path")
                .and_then(Value::as_str)
                .and_then(|path| Path::new(path).canonicalize().ok())
                .is_some_and(|path| path == manifest)
        })
        .and_then(|package| {
            let cdylib = package
                .get("targets")?
                .as_array()?
                .iter()
                .filter_map(|target| target.get("crate_types")?.as_array())
                .flatten()
                .any(|kind| kind.as_str() == Some("cdylib"));
            Some(Package {
                name: package.get("name")?.as_str()?.to_owned(),
                id: package.get("id")?.as_str()?.to_owned(),
                cdylib,
                target_directory: target_directory.clone(),
            })
        })
}

/// Runs `cargo build --release --target wasm32-unknown-unknown` on `manifest` with
/// `toolchain`; returns the core module's path. Cargo's progress goes to stderr
/// unless `quiet`; its last lines are kept for the error either way.
pub(crate) fn build(
    manifest: &Path,
    package: &Package,
    target_dir: &Path,
    toolchain: &Toolchain,
    quiet: bool,
) -> Result<PathBuf, BuildError> {
    let mut command = cargo();
    command
        .args(["build", "--lib", "--release", "--target", TARGET])
        .args(["--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .envs(PROFILE_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Toolchain::Debian { rustc, linker } = toolchain {
        command
            .arg("-Zbuild-std=std,panic_abort")
            .env("RUSTC", rustc)
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", linker);
    }
    let mut child = command
        .spawn()
        .map_err(BuildError::io("cannot run `cargo build`"))?;
    let stderr = child.stderr.take().expect("stderr was piped above");
    let stdout = child.stdout.take().expect("stdout was piped above");

    // stderr on its own thread, so neither pipe can fill up and stall cargo.
    let stderr_reader = std::thread::spawn(move || {
        let mut lines = VecDeque::with_capacity(STDERR_TAIL_LINES);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !quiet {
                eprintln!("{line}");
            }
            if lines.len() == STDERR_TAIL_LINES {
                lines.pop_front();
            }
            lines.push_back(truncate(line));
        }
        lines
    });
    let mut artifact = None;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some(path) = wasm_artifact(&line, &package.id) {
            artifact = Some(path);
        }
    }
    let status = child
        .wait()
        .map_err(BuildError::io("cannot wait for `cargo build`"))?;
    let stderr_tail = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        return Err(BuildError::Cargo {
            command: "cargo build".to_owned(),
            status,
            stderr: tail(stderr_tail.iter().map(String::as_str)),
        });
    }
    artifact.ok_or_else(|| BuildError::NoArtifact {
        package: package.name.clone(),
    })
}

/// The `.wasm` file a `compiler-artifact` message for `package_id` names, if it is one.
fn wasm_artifact(line: &str, package_id: &str) -> Option<PathBuf> {
    let message: Value = serde_json::from_str(line).ok()?;
    if message.get("reason")?.as_str()? != "compiler-artifact"
        || message.get("package_id")?.as_str()? != package_id
    {
        return None;
    }
    message
        .get("filenames")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find(|name| name.ends_with(".wasm"))
        .map(PathBuf::from)
}

/// The last [`STDERR_TAIL_LINES`] of `lines`, joined.
fn tail<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    let lines: Vec<&str> = lines.collect();
    let start = lines.len().saturating_sub(STDERR_TAIL_LINES);
    lines[start..]
        .iter()
        .map(|line| truncate((*line).to_owned()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `line` cut to [`STDERR_LINE_MAX`] bytes (at a character boundary).
fn truncate(mut line: String) -> String {
    if line.len() > STDERR_LINE_MAX {
        let mut end = STDERR_LINE_MAX;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "path+file:///w/functions/passthrough#0.1.0";

    #[test]
    fn artifact_is_the_packages_wasm() {
        let line = format!(
            r#"{{"reason":"compiler-artifact","package_id":"{ID}","target":{{"kind":["cdylib","rlib"]}},"filenames":["/t/release/libpassthrough.rlib","/t/release/passthrough.wasm"]}}"#
        );
        assert_eq!(
            wasm_artifact(&line, ID),
            Some(PathBuf::from("/t/release/passthrough.wasm"))
        );
    }

    #[test]
    fn other_messages_are_not_artifacts() {
        let dependency = r#"{"reason":"compiler-artifact","package_id":"registry+x#serde@1.0.0","filenames":["/t/x.wasm"]}"#;
        let rlib_only = format!(
            r#"{{"reason":"compiler-artifact","package_id":"{ID}","filenames":["/t/libpassthrough.rlib"]}}"#
        );
        let finished = r#"{"reason":"build-finished","success":true}"#;
        for line in [dependency, &rlib_only, finished, "not json"] {
            assert_eq!(wasm_artifact(line, ID), None, "{line}");
        }
    }

    #[test]
    fn package_is_found_by_manifest() {
        let metadata = serde_json::json!({
            "target_directory": "/w/target",
            "packages": [
                {"name": "other", "id": "o", "manifest_path": "/nonexistent/Cargo.toml", "targets": []},
                {"name": "tern-fnbuild", "id": "me",
                 "manifest_path": concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
                 "targets": [{"crate_types": ["lib"]}]},
            ],
        });
        let manifest = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .canonicalize()
            .expect("this crate's manifest exists");
        assert_eq!(
            find_package(&metadata, &manifest),
            Some(Package {
                name: "tern-fnbuild".to_owned(),
                id: "me".to_owned(),
                cdylib: false,
                target_directory: PathBuf::from("/w/target"),
            })
        );
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        let text: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        let kept = tail(text.iter().map(String::as_str));
        assert!(kept.starts_with("line 60\n"), "{kept}");
        assert!(kept.ends_with("line 99"), "{kept}");
        assert_eq!(truncate("é".repeat(600)).chars().count(), 501);
    }
}
