//! `tern fn new`: scaffolds a function crate — a manifest, an example function with
//! native unit tests, and a host test running the real component.
//!
//! Inside a Tern checkout (the enclosing workspace has `tern-function` in
//! `[workspace.dependencies]`) the crate inherits the workspace's dependencies and
//! settings and must be added to `members`; anywhere else it is its own workspace with
//! path dependencies on an SDK directory (`<checkout>/sdk`).

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

/// The example function.
const LIB_TEMPLATE: &str = include_str!("../template/lib.rs");
/// The host-side test.
const HOST_TEST_TEMPLATE: &str = include_str!("../template/host.rs");
/// Keys of `[workspace.package]` a member inherits when the workspace sets them.
const INHERITED_PACKAGE_KEYS: [&str; 4] = ["version", "edition", "license", "rust-version"];
/// Names cargo refuses for a package (Rust keywords) and `test`, which shadows the
/// built-in test crate.
const RESERVED_NAMES: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "static", "struct", "super", "test", "trait", "true", "try", "type",
    "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];
/// Longest package name accepted.
const MAX_NAME_LEN: usize = 64;

/// What [`new_function`] scaffolds, and where.
#[derive(Debug, Clone)]
pub struct NewOptions {
    /// The package name: ASCII letters, digits, `-` and `_`, starting with a letter.
    pub name: String,
    /// The directory the crate's directory `<dir>/<name>` is created in (created too
    /// when missing).
    pub dir: PathBuf,
    /// An SDK directory holding `function/` (tern-function) and `function-test/`
    /// (tern-function-test): used for path dependencies outside a Tern checkout.
    pub sdk: PathBuf,
}

/// A scaffolded crate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewFunction {
    /// The crate's directory.
    pub crate_dir: PathBuf,
    /// Set when the crate is in a Tern checkout's workspace, which must list it.
    pub member_of: Option<Membership>,
}

/// A crate to add to a workspace's `members`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The workspace's root `Cargo.toml`.
    pub workspace_manifest: PathBuf,
    /// The crate's path relative to the workspace root, as `members` lists it.
    pub member: String,
}

/// Why [`new_function`] made nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NewError {
    /// The name cannot be a package name.
    #[error("`{name}` cannot name a function crate: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The crate's directory exists; nothing is overwritten.
    #[error("{} exists already; choose another name or directory", .0.display())]
    Exists(PathBuf),
    /// Outside a Tern checkout, the SDK directory is needed and is not there.
    #[error(
        "no Tern SDK at {}: expected function/Cargo.toml and function-test/Cargo.toml \
         there; pass --sdk <the sdk directory of a Tern checkout>",
        .0.display()
    )]
    NoSdk(PathBuf),
    /// An enclosing workspace manifest cannot be read as TOML.
    #[error("cannot read the workspace manifest {}: {message}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Creating a directory or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

/// What encloses the new crate, as far as cargo is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Enclosing {
    /// A Tern checkout's workspace, with the `[workspace.package]` keys it sets.
    Tern {
        /// The root `Cargo.toml`.
        manifest: PathBuf,
        /// Which of [`INHERITED_PACKAGE_KEYS`] it sets.
        package_keys: Vec<&'static str>,
    },
    /// No workspace, or someone else's.
    Other,
}

/// Scaffolds `<dir>/<name>`: `Cargo.toml`, `src/lib.rs` (an example function and its
/// native unit tests) and `tests/host.rs` (a test of the built component through
/// `tern-function-test`). Refuses an existing directory.
pub fn new_function(options: &NewOptions) -> Result<NewFunction, NewError> {
    check_name(&options.name)?;
    std::fs::create_dir_all(&options.dir)
        .map_err(io(format!("cannot create {}", options.dir.display())))?;
    let dir = options
        .dir
        .canonicalize()
        .map_err(io(format!("cannot resolve {}", options.dir.display())))?;
    let crate_dir = dir.join(&options.name);
    if crate_dir.exists() {
        return Err(NewError::Exists(crate_dir));
    }
    let enclosing = enclosing_workspace(&dir)?;
    // Cargo.toml and, outside a checkout, .gitignore and Cargo.lock.
    let (member_of, manifest_files) = match &enclosing {
        Enclosing::Tern {
            manifest,
            package_keys,
        } => {
            let root = manifest.parent().unwrap_or(Path::new("/"));
            let member = relative_member(root, &crate_dir);
            let membership = Membership {
                workspace_manifest: manifest.clone(),
                member,
            };
            let manifest = member_manifest(&options.name, package_keys);
            (Some(membership), vec![("Cargo.toml", manifest)])
        }
        Enclosing::Other => {
            // Canonical: a dependency inherits from its own workspace, which cargo finds
            // above the real path, not above a symbolic link to it.
            let crates = ["function", "function-test"].map(|name| {
                options
                    .sdk
                    .join(name)
                    .canonicalize()
                    .ok()
                    .filter(|dir| dir.join("Cargo.toml").is_file())
            });
            let [Some(function), Some(function_test)] = crates else {
                return Err(NewError::NoSdk(options.sdk.clone()));
            };
            let mut files = vec![
                (
                    "Cargo.toml",
                    standalone_manifest(&options.name, &function, &function_test),
                ),
                (".gitignore", "/target\n".to_owned()),
            ];
            // The versions the SDK was tested with (and no registry look-up for a
            // first build); cargo drops the entries this crate does not need.
            let checkout = function.parent().and_then(Path::parent);
            if let Some(lock) =
                checkout.and_then(|dir| std::fs::read_to_string(dir.join("Cargo.lock")).ok())
            {
                files.push(("Cargo.lock", lock));
            }
            (None, files)
        }
    };

    // create_dir, not create_dir_all: a directory that appeared since the check
    // above is still not overwritten.
    std::fs::create_dir(&crate_dir)
        .map_err(io(format!("cannot create {}", crate_dir.display())))?;
    let sources = [
        (
            "src/lib.rs",
            LIB_TEMPLATE.replace("{{name}}", &options.name),
        ),
        ("tests/host.rs", HOST_TEST_TEMPLATE.to_owned()),
    ];
    for (relative, contents) in manifest_files.into_iter().chain(sources) {
        let path = crate_dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("cannot create {}", parent.display())))?;
        }
        std::fs::write(&path, contents).map_err(io(format!("cannot write {}", path.display())))?;
    }
    Ok(NewFunction {
        crate_dir,
        member_of,
    })
}

/// Refuses what cargo would refuse as a package name, before anything is created.
fn check_name(name: &str) -> Result<(), NewError> {
    let invalid = |reason| {
        Err(NewError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return invalid("it must start with an ASCII letter");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return invalid("only ASCII letters, digits, `-` and `_` are allowed");
    }
    if name.len() > MAX_NAME_LEN {
        return invalid("it is longer than 64 characters");
    }
    if RESERVED_NAMES.contains(&name) {
        return invalid("it is a Rust keyword or `test`");
    }
    Ok(())
}

/// The first workspace root above `dir` (what cargo would take for the new crate):
/// a Tern checkout's, or [`Enclosing::Other`].
fn enclosing_workspace(dir: &Path) -> Result<Enclosing, NewError> {
    for ancestor in dir.ancestors() {
        let manifest = ancestor.join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let table: toml::Table =
            text.parse()
                .map_err(|error: toml::de::Error| NewError::Manifest {
                    path: manifest.clone(),
                    message: error.message().to_owned(),
                })?;
        if let Some(enclosing) = classify(&table, &manifest) {
            return Ok(enclosing);
        }
    }
    Ok(Enclosing::Other)
}

/// What a manifest with a `[workspace]` table is to the new crate; `None` when it has
/// none (cargo keeps looking further up).
fn classify(manifest: &toml::Table, path: &Path) -> Option<Enclosing> {
    let workspace = manifest.get("workspace")?.as_table()?;
    let tern = workspace
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .is_some_and(|dependencies| dependencies.contains_key("tern-function"));
    if !tern {
        return Some(Enclosing::Other);
    }
    let package = workspace.get("package").and_then(toml::Value::as_table);
    Some(Enclosing::Tern {
        manifest: path.to_owned(),
        package_keys: INHERITED_PACKAGE_KEYS
            .into_iter()
            .filter(|key| package.is_some_and(|package| package.contains_key(*key)))
            .collect(),
    })
}

/// `crate_dir` relative to the workspace `root`, with `/` separators.
fn relative_member(root: &Path, crate_dir: &Path) -> String {
    let relative = crate_dir.strip_prefix(root).unwrap_or(crate_dir);
    relative
        .components()
        .filter_map(|component| match component {
            Component::Normal(part) => Some(part.to_string_lossy()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The manifest of a member of a Tern checkout's workspace.
fn member_manifest(name: &str, package_keys: &[&str]) -> String {
    let mut manifest =
        format!("[package]\nname = \"{name}\"\ndescription = \"A Tern message function\"\n");
    for key in package_keys {
        // Writing to a String cannot fail.
        let _ = writeln!(manifest, "{key}.workspace = true");
    }
    manifest.push_str(concat!(
        "publish = false\n\n",
        "[lib]\n",
        "# cdylib: the WebAssembly component `tern fn build` makes; rlib: native unit tests.\n",
        "crate-type = [\"cdylib\", \"rlib\"]\n\n",
        "[dependencies]\n",
        "# features = [\"json\"] adds Message::json and Message::set_json.\n",
        "tern-function = { workspace = true, default-features = false }\n\n",
        "[dev-dependencies]\n",
        "# Builds and runs the component in tests/host.rs.\n",
        "tern-function-test.workspace = true\n\n",
        "[lints]\n",
        "workspace = true\n",
    ));
    manifest
}

/// The manifest of a crate outside a Tern checkout: its own workspace, with path
/// dependencies on the SDK's two crates.
fn standalone_manifest(name: &str, function: &Path, function_test: &Path) -> String {
    let function = toml_string(function);
    let function_test = toml_string(function_test);
    format!(
        "[package]\n\
         name = \"{name}\"\n\
         description = \"A Tern message function\"\n\
         version = \"0.1.0\"\n\
         edition = \"2024\"\n\
         publish = false\n\n\
         [lib]\n\
         # cdylib: the WebAssembly component `tern fn build` makes; rlib: native unit tests.\n\
         crate-type = [\"cdylib\", \"rlib\"]\n\n\
         [dependencies]\n\
         # features = [\"json\"] adds Message::json and Message::set_json.\n\
         tern-function = {{ path = {function}, default-features = false }}\n\n\
         [dev-dependencies]\n\
         # Builds and runs the component in tests/host.rs.\n\
         tern-function-test = {{ path = {function_test} }}\n\n\
         # Its own workspace, also when created inside someone else's.\n\
         [workspace]\n"
    )
}

/// `path` as a quoted, escaped TOML string.
fn toml_string(path: &Path) -> String {
    toml::Value::String(path.to_string_lossy().into_owned()).to_string()
}

/// An [`NewError::Io`] with what was being done.
fn io(context: String) -> impl FnOnce(std::io::Error) -> NewError {
    move |source| NewError::Io { context, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().expect("test manifests are valid TOML")
    }

    #[test]
    fn names() {
        for good in ["chat-filter", "a", "redact_pii", "f2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "2fast",
            "-x",
            "my fn",
            "ünïcode",
            "fn",
            "test",
            &"a".repeat(65),
        ] {
            assert!(
                matches!(check_name(bad), Err(NewError::InvalidName { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_tern_workspace_is_recognised_by_its_tern_function_dependency() {
        let path = Path::new("/w/Cargo.toml");
        let tern = table(
            "[workspace]\nmembers = []\n[workspace.package]\nversion = \"0.1.0\"\nedition = \"2024\"\n\
             [workspace.dependencies]\ntern-function = { path = \"sdk/function\" }\n",
        );
        assert_eq!(
            classify(&tern, path),
            Some(Enclosing::Tern {
                manifest: path.to_owned(),
                package_keys: vec!["version", "edition"],
            })
        );
        let other = table("[workspace]\n[workspace.dependencies]\nserde = \"1\"\n");
        assert_eq!(classify(&other, path), Some(Enclosing::Other));
        let package = table("[package]\nname = \"x\"\n");
        assert_eq!(classify(&package, path), None);
    }

    #[test]
    fn member_path_is_relative_to_the_root() {
        assert_eq!(
            relative_member(Path::new("/w"), Path::new("/w/functions/chat")),
            "functions/chat"
        );
    }

    #[test]
    fn manifests_parse_and_say_what_they_should() {
        let member = table(&member_manifest("chat", &["version", "edition"]));
        assert_eq!(member["package"]["name"].as_str(), Some("chat"));
        assert_eq!(
            member["package"]["version"]["workspace"].as_bool(),
            Some(true)
        );
        assert!(member["package"].get("license").is_none());
        assert_eq!(
            member["dev-dependencies"]["tern-function-test"]["workspace"].as_bool(),
            Some(true)
        );
        let standalone = table(&standalone_manifest(
            "chat",
            Path::new("/sdk \"x\"/function"),
            Path::new("/sdk/function-test"),
        ));
        assert_eq!(
            standalone["dependencies"]["tern-function"]["path"].as_str(),
            Some("/sdk \"x\"/function")
        );
        assert!(standalone["workspace"].as_table().is_some());
        for manifest in [&member, &standalone] {
            let crate_types = manifest["lib"]["crate-type"].as_array().expect("an array");
            assert!(
                crate_types
                    .iter()
                    .any(|kind| kind.as_str() == Some("cdylib"))
            );
        }
    }

    #[test]
    fn inside_a_tern_checkout_the_crate_is_a_member() {
        let root = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(
            root.path().join("Cargo.toml"),
            "[workspace]\nmembers = []\n[workspace.package]\nversion = \"0.1.0\"\n\
             [workspace.dependencies]\ntern-function = { path = \"sdk/function\" }\n",
        )
        .expect("write the workspace manifest");
        let options = NewOptions {
            name: "chat".to_owned(),
            dir: root.path().join("functions"),
            // Not needed inside a checkout: the workspace has the dependencies.
            sdk: root.path().join("no-sdk-here"),
        };
        let made = new_function(&options).expect("scaffolded");
        let root = root.path().canonicalize().expect("the root resolves");
        assert_eq!(made.crate_dir, root.join("functions/chat"));
        assert_eq!(
            made.member_of,
            Some(Membership {
                workspace_manifest: root.join("Cargo.toml"),
                member: "functions/chat".to_owned(),
            })
        );
        for file in ["Cargo.toml", "src/lib.rs", "tests/host.rs"] {
            assert!(made.crate_dir.join(file).is_file(), "{file}");
        }
        assert!(!made.crate_dir.join(".gitignore").exists());
        let lib = std::fs::read_to_string(made.crate_dir.join("src/lib.rs")).expect("lib.rs");
        assert!(
            lib.starts_with("//! chat: a Tern message function."),
            "{lib}"
        );

        // A second time: refused, nothing overwritten.
        std::fs::write(made.crate_dir.join("src/lib.rs"), "mine").expect("edit lib.rs");
        assert!(matches!(new_function(&options), Err(NewError::Exists(_))));
        let lib = std::fs::read_to_string(made.crate_dir.join("src/lib.rs")).expect("lib.rs");
        assert_eq!(lib, "mine");
    }

    #[test]
    fn outside_a_checkout_the_sdk_must_exist() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let options = NewOptions {
            name: "chat".to_owned(),
            dir: dir.path().to_owned(),
            sdk: dir.path().join("missing-sdk"),
        };
        assert!(matches!(new_function(&options), Err(NewError::NoSdk(_))));
        assert!(!dir.path().join("chat").exists());
    }
}
