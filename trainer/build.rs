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
//! - `csrc/dist_shim.cpp` (c10d: TCPStore, Gloo, NCCL) and `csrc/sync_bn.cpp` (SyncBN's autograd
//!   function) likewise, with `csrc/gloo_decls` for the Gloo headers the wheel lacks. Its NCCL half is compiled only when libtorch_cuda is there and the CUDA
//!   runtime and NCCL headers are found ([`cuda_includes`]); without them a NCCL group is a clear
//!   run-time error and Gloo works as before.

use std::path::{Path, PathBuf};

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

    let cuda = lib.join("libtorch_cuda.so").exists();
    build_dist_shim(&include, &abi, if cuda { cuda_includes(&lib) } else { None });

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc/torch_shim.cpp");
    println!("cargo:rerun-if-changed=csrc/dist_shim.cpp");
    println!("cargo:rerun-if-changed=csrc/sync_bn.cpp");
    println!("cargo:rerun-if-changed=csrc/dist_group.h");
    println!("cargo:rerun-if-changed=csrc/rcl_try.h");
    println!("cargo:rerun-if-changed=csrc/gloo_decls");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    for var in ["CUDA_HOME", "CUDA_PATH", "NCCL_HOME"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
}

/// Compiles `csrc/dist_shim.cpp` and `csrc/sync_bn.cpp`; with `nccl` include directories, the NCCL
/// half too.
fn build_dist_shim(include: &Path, abi: &str, nccl: Option<Vec<PathBuf>>) {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/dist_shim.cpp")
        .file("csrc/sync_bn.cpp")
        .include("csrc/gloo_decls")
        .include(include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag_if_supported("-Wno-unused-parameter")
        // c10/cuda/CUDAEvent.h aligns with it: pin the x86-64 value libtorch was built with.
        .flag_if_supported("--param=destructive-interference-size=64")
        .flag_if_supported("-Wno-interference-size")
        .opt_level(2)
        .warnings(false);
    if let Some(dirs) = nccl {
        build.define("USE_C10D_NCCL", None).define("RCL_WITH_NCCL", None);
        for d in dirs {
            build.include(d);
        }
    }
    build.compile("rcl_dist_shim");
}

/// The CUDA runtime and NCCL include directories for `ProcessGroupNCCL.hpp`: `$CUDA_HOME` /
/// `$CUDA_PATH`, the venv's NVIDIA wheels beside torch (`nvidia/cu13/include` with the
/// `nvidia-cuda-crt` and `nvidia-cuda-cccl` headers, `nvidia/nccl/include`), `/usr/local/cuda`;
/// `$NCCL_HOME`, the venv's `nvidia/nccl`, `/usr/include`. None unless both are complete.
fn cuda_includes(lib: &Path) -> Option<Vec<PathBuf>> {
    let env_dir = |var: &str| std::env::var_os(var).map(|v| PathBuf::from(v).join("include"));
    // torch/lib -> site-packages
    let site = lib.parent().and_then(Path::parent).map(|p| p.join("nvidia"));
    let mut cuda = vec![env_dir("CUDA_HOME"), env_dir("CUDA_PATH")];
    cuda.extend(["cu13/include", "cuda_runtime/include"].map(|d| site.as_ref().map(|s| s.join(d))));
    cuda.push(Some(PathBuf::from("/usr/local/cuda/include")));
    let cuda = cuda.into_iter().flatten().find(|d| {
        ["cuda_runtime_api.h", "crt/host_config.h", "nv/target"].iter().all(|f| d.join(f).exists())
    })?;
    let mut nccl = vec![env_dir("NCCL_HOME"), site.map(|s| s.join("nccl/include"))];
    nccl.push(Some(PathBuf::from("/usr/include")));
    let nccl = nccl.into_iter().flatten().find(|d| d.join("nccl.h").exists())?;
    Some(vec![cuda, nccl])
}
