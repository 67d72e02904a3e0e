//! Captures the compiler version for the environment record
//! (`recorder::environment::Environment::rustc_version`).
//!
//! Cargo re-runs build scripts when the compiler changes, so the value stays current.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    // Left unset when rustc cannot be asked; the field is then recorded as null.
    if let Some(version) = version {
        println!("cargo:rustc-env=TRAINPROV_RUSTC_VERSION={version}");
    }
}
