//! `tern dev`'s functions directory: deploys every built function crate in it to the
//! dev edge, and deploys again when a component or its binding changes.
//!
//! A crate `DIR/<crate>/` takes part when its `Cargo.toml` has a
//! `[package.metadata.tern]` table: the binding, with the keys of the admin API's
//! binding (`bind` required; `stage`, `policy`, `timeout`, `memory`, `order`). The
//! function is named after the package. Its component is the newer of
//! `<target dir>/wasm/tern-fn/<package>.wasm` (where `tern fn build` writes it; the
//! target dir is `$CARGO_TARGET_DIR`, else `target/` of the crate's workspace) and
//! `DIR/<package>.wasm`. Nothing is built here: a crate without a component gets a
//! hint to run `tern fn build`.
//!
//! ```text
//!  wait for GET /readyz ─▶ list what is in force ─▶ every 500 ms:
//!     scan DIR ─▶ Cargo.toml changed? parse ─▶ component (path, mtime, size) changed?
//!        ─▶ same bytes and binding as in force? "up to date" : POST deploy ─▶ one line
//! ```
//!
//! Polling mtimes keeps this free of a file-watching crate; a component is deployed
//! once per change seen (a refused one is tried again when it changes again). What the
//! directory no longer holds stays deployed: remove it with `tern fn remove`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tern_config::{BindingSpec, FunctionName, RawBindingSpec};

use crate::deploy_cmd::{AdminClient, FunctionInfo, deployed_line, describe_patterns};

/// How often the directory is looked at.
const POLL: Duration = Duration::from_millis(500);
/// How often readiness is asked for before the first deploy.
const READY_POLL: Duration = Duration::from_millis(100);
/// After this long unready, say that functions wait.
const READY_NOTE_AFTER: Duration = Duration::from_secs(10);
/// Crates looked at in the directory; more are ignored with a note.
const MAX_CRATES: usize = 256;
/// Largest `Cargo.toml` read.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// What changes a file's stamp: its modification time and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: SystemTime,
    len: u64,
}

/// A crate's manifest, as far as deploying goes.
#[derive(Debug, Clone)]
struct Manifest {
    name: FunctionName,
    binding: RawBindingSpec,
    spec: BindingSpec,
    /// Where `tern fn build` writes its component.
    built: PathBuf,
}

/// What is known of one crate directory.
#[derive(Debug)]
struct CrateState {
    manifest_stamp: Option<Stamp>,
    /// The manifest read at `manifest_stamp` (none before the first read).
    manifest: Option<Result<Manifest, String>>,
    /// The component and manifest stamps last deployed (or refused).
    handled: Option<(PathBuf, Stamp, Option<Stamp>)>,
    /// The last note printed, so a note is printed once.
    noted: Option<String>,
}

/// Deploys and redeploys the functions of one directory.
#[derive(Debug)]
pub(crate) struct FunctionsDir {
    dir: PathBuf,
    client: AdminClient,
    max_memory_bytes: usize,
    crates: BTreeMap<PathBuf, CrateState>,
    in_force: HashMap<String, FunctionInfo>,
    /// The last note about the directory itself, printed once.
    dir_note: Option<String>,
}

impl FunctionsDir {
    /// Watches `dir`, deploying through `client`; bindings are checked against the
    /// edge's memory ceiling `max_memory_bytes`.
    pub(crate) fn new(dir: PathBuf, client: AdminClient, max_memory_bytes: usize) -> Self {
        Self {
            dir,
            client,
            max_memory_bytes,
            crates: BTreeMap::new(),
            in_force: HashMap::new(),
            dir_note: None,
        }
    }

    /// Waits for the edge to be ready, then deploys and watches until dropped (the
    /// task running it is aborted at shutdown).
    pub(crate) async fn run(mut self) {
        let waiting = Instant::now();
        let mut noted = false;
        while !self.client.is_ready().await {
            if !noted && waiting.elapsed() >= READY_NOTE_AFTER {
                say("functions: the edge is not ready yet (GET /readyz); deploys wait for it");
                noted = true;
            }
            tokio::time::sleep(READY_POLL).await;
        }
        self.refresh_in_force().await;
        loop {
            self.tick().await;
            tokio::time::sleep(POLL).await;
        }
    }

    /// What the edge runs now, to leave alone what is already in force.
    async fn refresh_in_force(&mut self) {
        match self.client.list().await {
            Ok(listing) => {
                self.in_force = listing
                    .functions
                    .into_iter()
                    .map(|f| (f.name.clone(), f))
                    .collect();
            }
            Err(error) => say(&format!(
                "functions: cannot list the edge's functions: {error:#}"
            )),
        }
    }

    /// One look at the directory.
    async fn tick(&mut self) {
        let dirs = match crate_dirs(&self.dir).await {
            Ok(dirs) => dirs,
            Err(error) => {
                let note = format!("functions: cannot read {}: {error}", self.dir.display());
                return self.note_dir(Some(note));
            }
        };
        let note = (dirs.len() > MAX_CRATES).then(|| {
            format!(
                "functions: {} holds {} crates; only the first {MAX_CRATES} are deployed",
                self.dir.display(),
                dirs.len()
            )
        });
        self.note_dir(note);
        for crate_dir in dirs.into_iter().take(MAX_CRATES) {
            self.visit(crate_dir).await;
        }
    }

    /// Prints a note about the directory when it differs from the last one.
    fn note_dir(&mut self, note: Option<String>) {
        if note != self.dir_note {
            if let Some(note) = &note {
                say(note);
            }
            self.dir_note = note;
        }
    }

    async fn visit(&mut self, crate_dir: PathBuf) {
        let manifest_path = crate_dir.join("Cargo.toml");
        let manifest_stamp = stamp(&manifest_path).await;
        let state = self
            .crates
            .entry(crate_dir.clone())
            .or_insert_with(|| CrateState {
                manifest_stamp: None,
                manifest: None,
                handled: None,
                noted: None,
            });
        if state.manifest.is_none() || state.manifest_stamp != manifest_stamp {
            state.manifest_stamp = manifest_stamp;
            state.manifest = Some(read_manifest(&crate_dir, self.max_memory_bytes).await);
        }
        let manifest = match &state.manifest {
            Some(Ok(manifest)) => manifest.clone(),
            None => return,
            Some(Err(reason)) => {
                let reason = reason.clone();
                note_once(state, reason);
                return;
            }
        };
        let loose = self.dir.join(format!("{}.wasm", manifest.name));
        let Some((component, component_stamp)) = newest(&[&manifest.built, &loose]).await else {
            note_once(
                state,
                format!(
                    "function {}: no component yet; build it with `tern fn build {}`",
                    manifest.name,
                    crate_dir.display()
                ),
            );
            return;
        };
        let seen = (component.clone(), component_stamp, manifest_stamp);
        if state.handled.as_ref() == Some(&seen) {
            return;
        }
        state.handled = Some(seen);
        state.noted = None;
        self.deploy(&manifest, &component).await;
    }

    /// Deploys `component` unless the same bytes run with the same binding already.
    async fn deploy(&mut self, manifest: &Manifest, component: &Path) {
        let name = &manifest.name;
        let wasm = match crate::deploy_cmd::read_component(component).await {
            Ok(wasm) => wasm,
            Err(error) => return say(&format!("function {name}: {error:#}")),
        };
        let sha256 = hex(&Sha256::digest(&wasm));
        if let Some(info) = self.in_force.get(name.as_str())
            && info.is(&sha256, &manifest.spec)
        {
            return say(&format!(
                "function {name} v{} is up to date (bind {}, {})",
                info.version,
                describe_patterns(&manifest.spec),
                manifest.spec.stage
            ));
        }
        let started = Instant::now();
        match self.client.deploy(name, &manifest.binding, &wasm).await {
            Ok(applied) => {
                say(&deployed_line(
                    name,
                    applied.version,
                    &manifest.spec,
                    started.elapsed(),
                ));
                self.refresh_in_force().await;
            }
            Err(error) => say(&format!(
                "function {name}: deploying {} failed: {error:#}",
                component.display()
            )),
        }
    }
}

fn note_once(state: &mut CrateState, note: String) {
    if state.noted.as_ref() != Some(&note) {
        say(&note);
        state.noted = Some(note);
    }
}

/// One line on stdout, next to `tern dev`'s start-up lines.
fn say(line: &str) {
    crate::announce(&format!("{line}\n"));
}

/// The directories of `dir` holding a `Cargo.toml`, sorted.
async fn crate_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut entries = tokio::fs::read_dir(dir).await?;
    let mut dirs = Vec::new();
    while let Some(entry) = entries.next_entry().await? {
        let path = entry.path();
        if tokio::fs::metadata(path.join("Cargo.toml"))
            .await
            .is_ok_and(|m| m.is_file())
        {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

async fn stamp(path: &Path) -> Option<Stamp> {
    let metadata = tokio::fs::metadata(path).await.ok()?;
    Some(Stamp {
        modified: metadata.modified().ok()?,
        len: metadata.len(),
    })
}

/// The most recently modified of the files that exist.
async fn newest(paths: &[&Path]) -> Option<(PathBuf, Stamp)> {
    let mut best: Option<(PathBuf, Stamp)> = None;
    for path in paths {
        if let Some(stamp) = stamp(path).await
            && best
                .as_ref()
                .is_none_or(|(_, b)| stamp.modified > b.modified)
        {
            best = Some((path.to_path_buf(), stamp));
        }
    }
    best
}

/// `Cargo.toml` as far as it matters here.
#[derive(Deserialize)]
struct CargoToml {
    package: Option<Package>,
    workspace: Option<toml::Value>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    metadata: Option<PackageMetadata>,
}

#[derive(Deserialize)]
struct PackageMetadata {
    tern: Option<toml::Value>,
}

async fn read_toml(path: &Path) -> Result<CargoToml, String> {
    let size = tokio::fs::metadata(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if size > MAX_MANIFEST_BYTES {
        return Err(format!("{}: larger than 1 MiB", path.display()));
    }
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads `crate_dir/Cargo.toml`: the function's name, binding and component path.
async fn read_manifest(crate_dir: &Path, max_memory_bytes: usize) -> Result<Manifest, String> {
    let path = crate_dir.join("Cargo.toml");
    let manifest = read_toml(&path).await?;
    let Some(package) = manifest.package else {
        return Err(format!("{}: no [package]; skipped", path.display()));
    };
    let Some(table) = package.metadata.and_then(|m| m.tern) else {
        return Err(format!(
            "{}: no [package.metadata.tern] (bind = [\"chat:*\"], …); skipped",
            crate_dir.display()
        ));
    };
    let binding: RawBindingSpec = table
        .try_into()
        .map_err(|e| format!("{}: [package.metadata.tern]: {e}", path.display()))?;
    let spec = binding
        .compile("package.metadata.tern", max_memory_bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let name = FunctionName::parse(&package.name)
        .map_err(|e| format!("{}: package name: {e}", path.display()))?;
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root(crate_dir).await.join("target"),
    };
    let built = target_dir
        .join("wasm")
        .join("tern-fn")
        .join(format!("{}.wasm", package.name));
    Ok(Manifest {
        name,
        binding,
        spec,
        built,
    })
}

/// The nearest directory at or above `crate_dir` whose `Cargo.toml` has a
/// `[workspace]`; `crate_dir` itself when none has.
async fn workspace_root(crate_dir: &Path) -> PathBuf {
    let absolute = tokio::fs::canonicalize(crate_dir)
        .await
        .unwrap_or_else(|_| crate_dir.to_path_buf());
    for dir in absolute.ancestors() {
        let candidate = dir.join("Cargo.toml");
        if let Ok(CargoToml {
            workspace: Some(_), ..
        }) = read_toml(&candidate).await
        {
            return dir.to_path_buf();
        }
    }
    crate_dir.to_path_buf()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CEILING: usize = 64 << 20;

    fn write(dir: &Path, text: &str) {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join("Cargo.toml"), text).expect("write");
    }

    #[tokio::test]
    async fn manifests_give_name_binding_and_the_built_component() {
        let root = tempfile::tempdir().expect("tempdir");
        write(root.path(), "[workspace]\nmembers = [\"functions/*\"]\n");
        let crate_dir = root.path().join("functions").join("profanity");
        write(
            &crate_dir,
            "[package]\nname = \"profanity\"\nversion.workspace = true\n\n\
             [package.metadata.tern]\nbind = [\"chat:*\"]\nstage = \"egress\"\n\
             policy = \"fail-open\"\ntimeout = \"5ms\"\nmemory = \"8MiB\"\norder = -1\n",
        );
        let manifest = read_manifest(&crate_dir, CEILING).await.expect("valid");
        assert_eq!(manifest.name.as_str(), "profanity");
        assert_eq!(manifest.spec.stage, tern_config::Stage::Egress);
        assert_eq!(manifest.spec.policy, tern_config::FailurePolicy::FailOpen);
        assert_eq!(manifest.spec.timeout, Duration::from_millis(5));
        assert_eq!(manifest.spec.memory_bytes, 8 << 20);
        assert_eq!(manifest.spec.order, -1);
        if std::env::var_os("CARGO_TARGET_DIR").is_none() {
            let root = std::fs::canonicalize(root.path()).expect("canonical");
            assert_eq!(
                manifest.built,
                root.join("target/wasm/tern-fn/profanity.wasm")
            );
        }
    }

    #[tokio::test]
    async fn manifests_without_a_usable_binding_say_why() {
        let root = tempfile::tempdir().expect("tempdir");
        let cases = [
            (
                "plain",
                "[package]\nname = \"plain\"\n",
                "no [package.metadata.tern]",
            ),
            (
                "typo",
                "[package]\nname = \"typo\"\n[package.metadata.tern]\nbind = [\"a\"]\nstages = \"egress\"\n",
                "unknown field `stages`",
            ),
            (
                "nobind",
                "[package]\nname = \"nobind\"\n[package.metadata.tern]\nstage = \"egress\"\n",
                "bind",
            ),
            (
                "badtime",
                "[package]\nname = \"badtime\"\n[package.metadata.tern]\nbind = [\"a\"]\ntimeout = \"5 parsecs\"\n",
                "package.metadata.tern.timeout",
            ),
            (
                "Upper",
                "[package]\nname = \"Upper\"\n[package.metadata.tern]\nbind = [\"a\"]\n",
                "package name",
            ),
            ("virtual", "[workspace]\n", "no [package]"),
            ("broken", "[package\n", "Cargo.toml"),
        ];
        for (dir, text, expected) in cases {
            let crate_dir = root.path().join(dir);
            write(&crate_dir, text);
            let error = read_manifest(&crate_dir, CEILING).await.expect_err(dir);
            assert!(error.contains(expected), "{dir}: {error}");
        }
    }

    #[tokio::test]
    async fn only_directories_with_a_manifest_are_crates() {
        let root = tempfile::tempdir().expect("tempdir");
        write(&root.path().join("b"), "");
        write(&root.path().join("a"), "");
        std::fs::create_dir(root.path().join("empty")).expect("mkdir");
        std::fs::write(root.path().join("loose.wasm"), b"\0asm").expect("write");
        let dirs = crate_dirs(root.path()).await.expect("readable");
        assert_eq!(dirs, vec![root.path().join("a"), root.path().join("b")]);
    }

    #[tokio::test]
    async fn the_newest_existing_file_wins() {
        let root = tempfile::tempdir().expect("tempdir");
        let (old, new, missing) = (
            root.path().join("old"),
            root.path().join("new"),
            root.path().join("missing"),
        );
        std::fs::write(&old, b"1").expect("write");
        std::fs::write(&new, b"22").expect("write");
        let earlier = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .and_then(|f| f.set_modified(earlier))
            .expect("set mtime");
        let (path, stamp) = newest(&[&old, &missing, &new]).await.expect("some exist");
        assert_eq!((path, stamp.len), (new, 2));
        assert!(newest(&[&missing]).await.is_none());
    }
}
