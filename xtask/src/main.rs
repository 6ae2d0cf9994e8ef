//! corelog development tasks, run as `cargo xtask <task>`.
//!
//! - `demo`: builds with the release profile and runs the shard demo in a
//!   temporary directory under the current one.

use std::process::{exit, Command};

fn main() {
    let task = std::env::args().nth(1);
    let status = match task.as_deref() {
        Some("demo") => Command::new(env!("CARGO"))
            .args(["run", "--release", "-p", "corelog", "--example", "demo"])
            .status(),
        _ => {
            eprintln!("usage: cargo xtask demo");
            exit(2);
        }
    };
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => exit(s.code().unwrap_or(1)),
        Err(e) => {
            eprintln!("could not run cargo: {e}");
            exit(1);
        }
    }
}
