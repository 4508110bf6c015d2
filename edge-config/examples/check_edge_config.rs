//! Checks an edge config file and prints what it compiles to (secrets hidden), or every
//! problem in it.
//!
//! `cargo run -p tern-config --example check_edge_config -- edge-config/examples/edge.toml`

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: check_edge_config FILE");
        return ExitCode::FAILURE;
    };
    match tern_config::load_edge_config(&path) {
        Ok(config) => {
            println!("{config:#?}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{} is invalid:\n{error}", path.display());
            ExitCode::FAILURE
        }
    }
}
