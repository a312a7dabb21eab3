//! Helpers for tests that run the `regioncl` binary on the real data: where the binary, the data
//! and the fixtures are, temporary directories.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The real data fetched by `make data` (env `REGIONCL_DATA`, else `.cache/data`).
pub fn data_dir() -> PathBuf {
    let dir = std::env::var_os("REGIONCL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/data"));
    assert!(dir.join("photos").is_dir(), "{}: no real data; run `make data`", dir.display());
    dir
}

/// The committed fixtures (see tests/fixtures/make_fixtures.py).
pub fn fixtures() -> PathBuf {
    workspace().join("tests/fixtures")
}

/// The `regioncl` binary of this test's profile (`target/<profile>/regioncl`, next to the `deps`
/// directory holding this test), built once per test run so it is never stale. `REGIONCL_BIN`
/// overrides.
pub fn regioncl() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("REGIONCL_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
        let target_dir = profile_dir.parent().expect("target dir");
        let profile = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
        let profile = if profile == "debug" { "dev" } else { profile };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "regioncl-tools", "--bin", "regioncl", "--profile"])
            .arg(profile)
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(workspace())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p regioncl-tools failed");
        let bin = profile_dir.join("regioncl");
        assert!(bin.is_file(), "{} missing after build", bin.display());
        bin
    })
}

/// Runs `regioncl` with `args`.
pub fn run(args: &[&dyn AsRef<OsStr>]) -> Output {
    Command::new(regioncl()).args(args.iter().map(|a| a.as_ref())).output().expect("run regioncl")
}

/// Like [`run`], asserting success; returns stdout.
pub fn run_ok(args: &[&dyn AsRef<OsStr>]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "regioncl failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `regioncl train --config CONFIG --out RUN --set S ...`, asserting success; returns stdout.
pub fn train_ok(config: &Path, run: &Path, sets: &[&str]) -> String {
    let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"train", &"--config", &config, &"--out", &run];
    for s in sets {
        args.push(&"--set");
        args.push(s);
    }
    run_ok(&args)
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("regioncl-e2e-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file of a directory (name, bytes), sorted by name.
pub fn dir_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let path = e.expect("dir entry").path();
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("read file"))
        })
        .collect();
    files.sort();
    files
}
