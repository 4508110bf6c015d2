//! Builds real function crates through `tern_fnbuild::build`.
//!
//! `cargo test -p tern-fnbuild --test build`

use std::path::Path;

use tern_fnbuild::{BuildError, BuildOptions, build, component_exports};
use wasmparser::{Parser, Validator};

/// The repository's root, two levels above this crate.
fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("runtime/fnbuild sits two levels below the repository root")
}

#[test]
fn passthrough_builds_to_a_valid_component() {
    let crate_dir = repository().join("functions/passthrough");
    let built = build(
        &crate_dir,
        &BuildOptions {
            target_dir: None,
            quiet: true,
        },
    )
    .expect("functions/passthrough builds");
    assert_eq!(built.package, "passthrough");
    assert_eq!(
        built.component,
        repository().join("target/wasm/tern-fn/passthrough.wasm")
    );
    let bytes = std::fs::read(&built.component).expect("the component was written");
    assert_eq!(bytes.len() as u64, built.component_bytes);
    assert!(Parser::is_component(&bytes));
    Validator::new()
        .validate_all(&bytes)
        .expect("the component validates");
    let exports = component_exports(&bytes).expect("the component decodes");
    assert!(
        exports
            .iter()
            .any(|name| name == "tern:function/handler@0.1.0"),
        "{exports:?}"
    );
    // Printed for the size figures (run with --nocapture).
    println!(
        "passthrough: core module {} bytes, component {} bytes, {}",
        built.core_bytes, built.component_bytes, built.toolchain
    );
}

#[test]
fn a_directory_without_a_manifest_is_not_a_crate() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    match build(dir.path(), &BuildOptions::default()) {
        Err(BuildError::NotACrate(path)) => assert_eq!(path, dir.path()),
        other => panic!("expected NotACrate, got {other:?}"),
    }
}

#[test]
fn a_crate_without_cdylib_is_refused_before_building() {
    // This crate is a plain library: no cdylib.
    match build(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &BuildOptions::default(),
    ) {
        Err(error @ BuildError::NoArtifact { .. }) => {
            let message = error.to_string();
            assert!(message.contains("package tern-fnbuild"), "{message}");
            assert!(
                message.contains(r#"crate-type = ["cdylib", "rlib"]"#),
                "{message}"
            );
        }
        other => panic!("expected NoArtifact, got {other:?}"),
    }
}
