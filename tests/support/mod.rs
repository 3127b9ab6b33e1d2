//! Shared helpers of the root package's integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The built example binary, next to this test's own executable.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let bin = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    // Build it (a no-op when up to date) with the profile this test uses.
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--example", name]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cargo.arg("--release");
        }
        Some(other) => {
            cargo.args(["--profile", other]);
        }
    }
    if let Some(target) = profile_dir.parent() {
        cargo.arg("--target-dir").arg(target);
    }
    let status = cargo.status().expect("run cargo build --example");
    assert!(status.success(), "cargo build --example {} failed", name);
    assert!(bin.exists(), "{} was not built", bin.display());
    bin
}
