//! `tern fn new` as a user runs it: the crate appears with the lines that say what next;
//! a bad name or an existing directory exits 1 with the reason.
//!
//! `cargo test -p tern --test fn_new`

use std::path::Path;
use std::process::{Command, Output};

fn tern(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("tern runs")
}

#[test]
fn fn_new_scaffolds_a_standalone_crate_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let made = tern(dir.path(), &["fn", "new", "chat-caps"]);
    let stdout = String::from_utf8_lossy(&made.stdout);
    assert!(made.status.success(), "{made:?}");
    assert_eq!(
        stdout,
        "created chat-caps (a Tern function crate)\nbuild it with: tern fn build chat-caps\n"
    );
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        ".gitignore",
        "src/lib.rs",
        "tests/host.rs",
    ] {
        assert!(dir.path().join("chat-caps").join(file).is_file(), "{file}");
    }

    let again = tern(dir.path(), &["fn", "new", "chat-caps"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("exists already"),
        "{again:?}"
    );
}

#[test]
fn fn_new_refuses_a_name_cargo_would_refuse() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let refused = tern(dir.path(), &["fn", "new", "my function"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("cannot name a function crate"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).expect("readable").count(), 0);
}
