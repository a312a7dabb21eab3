//! Links libtorch the way the trainer needs it and passes its location on.
//!
//! - `libtorch_cuda` is linked with `--no-as-needed`: nothing references it by symbol, so the linker
//!   would drop it and CUDA would silently be unavailable at run time.
//! - An rpath to the (canonical) libtorch directory lets binaries run from the checkout without
//!   `LD_LIBRARY_PATH`; the wheel's own `$ORIGIN` rpaths then find the CUDA libraries beside it.
//! - `cargo:libtorch_lib` reaches the build scripts of crates that depend on this one as
//!   `DEP_REGIONCL_TRAINER_LIBTORCH_LIB`, so the `regioncl` binary and the e2e tests link the same way.

use std::path::PathBuf;

fn main() {
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys did not report libtorch_lib");
    let lib = std::fs::canonicalize(&lib).unwrap_or_else(|_| PathBuf::from(&lib));
    println!("cargo:libtorch_lib={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
