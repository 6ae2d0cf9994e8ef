//! corelog development tasks. `cargo xtask help` lists them.

fn main() {
    eprintln!("no tasks yet");
}
