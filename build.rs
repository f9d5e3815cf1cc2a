//! Generates the C header from src/ with cbindgen into OUT_DIR. The committed
//! include/hpclock.h is compared with it by a test (drift fails the run) and
//! refreshed by `make header` (HPCLOCK_UPDATE_HEADER=1), never silently.

use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=HPCLOCK_UPDATE_HEADER");

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let generated = out_dir.join("hpclock.h");
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the C header")
        .write_to_file(&generated);

    if std::env::var_os("HPCLOCK_UPDATE_HEADER").is_some_and(|v| v == "1") {
        std::fs::copy(&generated, crate_dir.join("include/hpclock.h")).expect("write include/hpclock.h");
    }

    // The soname changes only with an incompatible ABI: before 1.0 every
    // minor release may be one (0.2's hpclock_options grew), so it is
    // libhpclock.so.0.MINOR then, libhpclock.so.MAJOR from 1.0 on. The
    // Makefile lays out the same name.
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
    let minor = std::env::var("CARGO_PKG_VERSION_MINOR").unwrap();
    let abi = if major == "0" { format!("0.{minor}") } else { major };
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libhpclock.so.{abi}");
}
