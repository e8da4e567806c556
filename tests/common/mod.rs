//! Helpers shared by the `pgan` binary's end-to-end tests (tests/cli.rs and
//! crates/pgan/tests/nodes.rs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `pgan` binary this test run built.
pub fn pgan() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgan"))
}

/// A finished process's stdout then stderr, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The first run folder `pgan train` made under `runs` (the only one in most tests).
pub fn first_run(runs: &Path) -> PathBuf {
    std::fs::read_dir(runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}
