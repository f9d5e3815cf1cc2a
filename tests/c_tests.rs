//! The C race tests under `cargo test`, for the Rust developer who runs only
//! that: c-tests/test_core.c (the protocol, with real processes, under both
//! kernel lock primitives) and c-tests/test_real_use.c (real use: foreign
//! files, damaged records, done races, forks) are compiled with the `cc`
//! crate's view of the C compiler (it honours CC and CFLAGS) and linked
//! against the cdylib next to this test (target/debug/libhpclock.so). `cargo
//! test` builds the library only as the rlib the tests link, so the first
//! test that needs the cdylib asks cargo for it (`cargo build --lib`). `make test`
//! runs these and the rest (valgrind, the filesystem rig, Fortran, MPI, the
//! install and the release tarball).

use std::path::{Path, PathBuf};
use std::process::Command;

const CRATE_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// target/debug (or wherever cargo put this test's profile): this test's
/// executable is target/debug/deps/c_tests-HASH.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.parent().and_then(Path::parent).expect("target/PROFILE/deps/EXE").to_path_buf()
}

/// libhpclock.so.0.MINOR before 1.0, libhpclock.so.MAJOR after (docs/abi.md).
fn soname() -> String {
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    let minor = env!("CARGO_PKG_VERSION_MINOR");
    if major == "0" { format!("libhpclock.so.0.{minor}") } else { format!("libhpclock.so.{major}") }
}

/// A directory where the cdylib is found under its link name and its soname,
/// as an installed library is: a C program linked with -lhpclock asks the
/// loader for the soname, which cargo does not lay out. Made once per run
/// (the tests run in parallel threads).
fn library_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(make_library_dir).clone()
}

fn make_library_dir() -> PathBuf {
    let profile = profile_dir();
    let cdylib = profile.join("libhpclock.so");
    // Always asked for, not only when missing: a cdylib left by an earlier
    // build may be older than the sources under test.
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["build", "--lib", "--locked", "--manifest-path"]).arg(Path::new(CRATE_DIR).join("Cargo.toml"));
    cargo.arg("--target-dir").arg(profile.parent().expect("target/PROFILE"));
    if profile.file_name().is_some_and(|name| name == "release") {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("cargo runs");
    assert!(status.success(), "cargo build --lib failed: {status}");
    assert!(cdylib.is_file(), "{} was not built by cargo build --lib", cdylib.display());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c-tests").join("lib");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["libhpclock.so".to_string(), soname()] {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&cdylib, &link).unwrap();
    }
    dir
}

fn target_triple() -> String {
    let env = if cfg!(target_env = "musl") { "musl" } else { "gnu" };
    format!("{}-unknown-linux-{env}", std::env::consts::ARCH)
}

/// Compiles c-tests/NAME.c as the Makefile does (C11, every warning an
/// error) against the cdylib; returns the program's path.
fn compile(name: &str) -> PathBuf {
    let lib = library_dir();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c-tests").join(name);
    let triple = target_triple();
    // cc::Build is made for build scripts, which cargo tells the target,
    // host and optimisation level through the environment; here we say them.
    let compiler = cc::Build::new()
        .target(&triple)
        .host(&triple)
        .opt_level(2)
        .debug(true)
        .cargo_metadata(false)
        .get_compiler();
    let mut cmd = compiler.to_command();
    cmd.current_dir(CRATE_DIR)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-Iinclude"])
        .arg(format!("c-tests/{name}.c"))
        .arg("-o")
        .arg(&out)
        .arg(format!("-L{}", lib.display()))
        .arg("-lhpclock")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-pthread");
    let result = cmd.output().unwrap_or_else(|e| panic!("cannot run the C compiler ({cmd:?}): {e}"));
    assert!(result.status.success(), "{cmd:?} failed:\n{}", String::from_utf8_lossy(&result.stderr));
    out
}

/// Runs a C test program; it prints PASS/FAIL per test and exits non-zero
/// if any failed. `primitive` forces the kernel lock (flock or ofd).
fn run(program: &Path, primitive: Option<&str>) {
    let mut cmd = Command::new(program);
    cmd.current_dir(CRATE_DIR);
    if let Some(primitive) = primitive {
        cmd.env("HPCLOCK_TEST_PRIMITIVE", primitive);
    }
    let result = cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "{} (primitive {}) failed: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        program.display(),
        primitive.unwrap_or("default"),
        result.status
    );
    // The summary line, so that `cargo test -- --nocapture` shows what ran.
    if let Some(summary) = stdout.lines().chain(stderr.lines()).filter(|l| l.contains(" passed, ")).next_back() {
        println!("{} ({}): {summary}", program.display(), primitive.unwrap_or("default"));
    }
}

#[test]
fn c_test_core_under_flock_and_ofd_locks() {
    let program = compile("test_core");
    run(&program, Some("flock"));
    run(&program, Some("ofd"));
}

#[test]
fn c_test_real_use() {
    let program = compile("test_real_use");
    run(&program, None);
}
