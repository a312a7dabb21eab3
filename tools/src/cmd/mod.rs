//! One module per subcommand.

pub mod bench;
pub mod bench_loader;
pub mod bench_train;
pub mod convert;
pub mod env;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod plot;
pub mod train;

/// The checkout this binary was built from (binaries are run from it; see the README).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A file of the checkout, which must exist.
///
/// # Errors
/// When it does not.
pub fn repo_file(rel: &str) -> anyhow::Result<std::path::PathBuf> {
    let p = repo_root().join(rel);
    anyhow::ensure!(p.exists(), "{}: missing (run regioncl from its checkout)", p.display());
    Ok(p)
}

/// The venv's Python (torch, torchvision): `REGIONCL_PYTHON`, else `<checkout>/.venv/bin/python`.
///
/// # Errors
/// When neither exists (run `make venv`).
pub fn venv_python() -> anyhow::Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("REGIONCL_PYTHON") {
        return Ok(p.into());
    }
    let p = repo_root().join(".venv/bin/python");
    anyhow::ensure!(p.exists(), "{}: no venv; run `make venv`", p.display());
    Ok(p)
}
