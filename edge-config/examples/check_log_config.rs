//! Checks a log node config file and prints what it compiles to, or every problem in it.
//!
//! `cargo run -p tern-config --example check_log_config -- edge-config/examples/log.toml`

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: check_log_config FILE");
        return ExitCode::FAILURE;
    };
    match tern_config::load_log_config(&path) {
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
