//! Links libtorch the way the trainer needs it, builds the C++ shim, and passes libtorch's location on.
//!
//! - `libtorch_cuda` is linked with `--no-as-needed`: nothing references it by symbol, so the linker
//!   would drop it and CUDA would silently be unavailable at run time.
//! - An rpath to the (canonical) libtorch directory lets binaries run from the checkout without
//!   `LD_LIBRARY_PATH`; the wheel's own `$ORIGIN` rpaths then find the CUDA libraries beside it.
//! - `cargo:libtorch_lib` reaches the build scripts of crates that depend on this one as
//!   `DEP_REGIONCL_TRAINER_LIBTORCH_LIB`, so the `regioncl` binary and the e2e tests link the same way.
//! - `csrc/torch_shim.cpp` (bf16 autocast, channels_last, pinned memory, foreach SGD/EMA) is compiled
//!   against the same libtorch's headers, C++17, with the wheel's C++11 ABI.

use std::path::PathBuf;

fn main() {
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys did not report libtorch_lib");
    let lib = std::fs::canonicalize(&lib).unwrap_or_else(|_| PathBuf::from(&lib));
    println!("cargo:libtorch_lib={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }

    // The wheel's torch/version.py: `__version__ = '2.11.0+cu130'`, recorded in checkpoints.
    let torch_dir = lib.parent().expect("libtorch lib dir has a parent");
    let version = std::fs::read_to_string(torch_dir.join("version.py"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("__version__")).map(|v| {
                v.trim_matches(|c: char| c == ' ' || c == '=' || c == '\'' || c == '"').to_string()
            })
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=REGIONCL_LIBTORCH_VERSION={version}");

    let include = lib.parent().expect("libtorch lib dir has a parent").join("include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_string());
    cc::Build::new()
        .cpp(true)
        .file("csrc/torch_shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag_if_supported("-Wno-unused-parameter")
        .opt_level(2)
        .warnings(false)
        .compile("rcl_torch_shim");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc/torch_shim.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
}
