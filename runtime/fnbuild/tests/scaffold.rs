//! `new_function` outside a Tern checkout, then `build`: the scaffold must become a
//! valid component.
//!
//! `cargo test -p tern-fnbuild --test scaffold`

use std::path::Path;

use tern_fnbuild::{BuildOptions, NewOptions, build, component_exports, new_function};
use wasmparser::Validator;

/// The repository's root, two levels above this crate.
fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("runtime/fnbuild sits two levels below the repository root")
}

#[test]
fn a_standalone_scaffold_builds_to_a_valid_component() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let made = new_function(&NewOptions {
        name: "scaffolded".to_owned(),
        dir: dir.path().to_owned(),
        sdk: repository().join("sdk"),
    })
    .expect("scaffolded");
    assert_eq!(
        made.member_of, None,
        "a temporary directory is no Tern checkout"
    );
    assert!(made.crate_dir.join("Cargo.lock").is_file());
    assert!(made.crate_dir.join(".gitignore").is_file());

    // The repository's wasm target directory, so the SDK's dependencies are compiled
    // once for every test that builds a function.
    let built = build(
        &made.crate_dir,
        &BuildOptions {
            target_dir: Some(repository().join("target/wasm")),
            quiet: true,
        },
    )
    .expect("the scaffold builds");
    assert_eq!(built.package, "scaffolded");
    let bytes = std::fs::read(&built.component).expect("the component was written");
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
}
