//! Every function crate under `functions/` must have a host test: a `tests/*.rs` file
//! that runs its real component through `Component::build`. A crate without one fails
//! this test, which names it.
//!
//! `cargo test -p tern-function-test --test every_function_has_a_host_test`

use std::path::Path;

/// What [`check`] found under a `functions/` directory.
#[derive(Debug, Default, PartialEq, Eq)]
struct Report {
    /// Every crate (a directory holding a `Cargo.toml`), by directory name, sorted.
    crates: Vec<String>,
    /// The crates with no `tests/*.rs` calling `Component::build`, sorted.
    missing: Vec<String>,
}

/// Looks at each crate directory under `functions_dir`.
fn check(functions_dir: &Path) -> std::io::Result<Report> {
    let mut report = Report::default();
    for entry in std::fs::read_dir(functions_dir)? {
        let dir = entry?.path();
        if !dir.join("Cargo.toml").is_file() {
            continue;
        }
        let name = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !has_host_test(&dir.join("tests"))? {
            report.missing.push(name.clone());
        }
        report.crates.push(name);
    }
    report.crates.sort();
    report.missing.sort();
    Ok(report)
}

/// Whether a `*.rs` file directly in `tests_dir` calls `Component::build` outside a
/// line comment.
fn has_host_test(tests_dir: &Path) -> std::io::Result<bool> {
    if !tests_dir.is_dir() {
        return Ok(false);
    }
    for entry in std::fs::read_dir(tests_dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|extension| extension != "rs") || !path.is_file() {
            continue;
        }
        let source = std::fs::read_to_string(&path)?;
        let calls_build = source.lines().any(|line| {
            let code = line.split("//").next().unwrap_or_default();
            code.contains("Component::build")
        });
        if calls_build {
            return Ok(true);
        }
    }
    Ok(false)
}

#[test]
fn every_function_in_this_repository_has_a_host_test() {
    let functions = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../functions");
    let report = check(&functions).expect("functions/ is readable");
    // The examples the issue asks for are there, so an empty listing cannot pass.
    for example in ["enricher", "profanity", "redact", "router", "validator"] {
        assert!(
            report.crates.iter().any(|name| name == example),
            "functions/{example} is missing; found {:?}",
            report.crates
        );
    }
    assert!(
        report.missing.is_empty(),
        "these function crates have no host test: {}. Add tests/host.rs calling \
         tern_function_test::Component::build(env!(\"CARGO_MANIFEST_DIR\")) and checking \
         the component's answers (see functions/profanity/tests/host.rs).",
        report
            .missing
            .iter()
            .map(|name| format!("functions/{name}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

#[test]
fn a_crate_without_a_host_test_is_named() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let write = |path: &str, text: &str| {
        let path = root.path().join(path);
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))
            .expect("directory created");
        std::fs::write(path, text).expect("file written");
    };
    let manifest = "[package]\nname = \"x\"\n";
    let host_test = "#[test]\nfn t() { let c = Component::build(env!(\"CARGO_MANIFEST_DIR\")); }\n";
    write("tested/Cargo.toml", manifest);
    write("tested/tests/host.rs", host_test);
    write("no_tests/Cargo.toml", manifest);
    write("native_only/Cargo.toml", manifest);
    write("native_only/tests/unit.rs", "#[test]\nfn t() {}\n");
    write("commented/Cargo.toml", manifest);
    write(
        "commented/tests/host.rs",
        "// Component::build(env!(\"CARGO_MANIFEST_DIR\"))\n",
    );
    write("not_rust/Cargo.toml", manifest);
    write("not_rust/tests/host.txt", host_test);
    write("nested/Cargo.toml", manifest);
    write("nested/tests/deeper/host.rs", host_test);
    // Not crates: ignored.
    write("README.md", "examples\n");
    write("notes/host.rs", host_test);

    let report = check(root.path()).expect("the temporary directory is readable");
    assert_eq!(
        report.crates,
        [
            "commented",
            "native_only",
            "nested",
            "no_tests",
            "not_rust",
            "tested"
        ]
    );
    assert_eq!(
        report.missing,
        ["commented", "native_only", "nested", "no_tests", "not_rust"]
    );
}
