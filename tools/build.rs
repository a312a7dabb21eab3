//! Same libtorch link settings as the trainer (see trainer/build.rs): rpath and libtorch_cuda kept.
fn main() {
    let lib = std::env::var("DEP_REGIONCL_TRAINER_LIBTORCH_LIB").expect("trainer build script ran");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
