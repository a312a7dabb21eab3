//! Builds the libjpeg-turbo shim (csrc/jpeg_shim.c) against the system's libjpeg-turbo, found
//! through pkg-config (`libjpeg.pc`; set `PKG_CONFIG_PATH` for a library outside the system's
//! paths). Without pkg-config the shim builds against the compiler's default paths and links
//! `-ljpeg` (Debian: `apt-get install libjpeg62-turbo-dev` provides both).
fn main() {
    println!("cargo:rerun-if-changed=csrc/jpeg_shim.c");
    let found = pkg_config::Config::new().cargo_metadata(false).probe("libjpeg");
    let mut build = cc::Build::new();
    build.file("csrc/jpeg_shim.c").opt_level(3).warnings(true);
    match &found {
        Ok(lib) => {
            for dir in &lib.include_paths {
                build.include(dir);
            }
        }
        Err(e) => println!(
            "cargo:warning=libjpeg-turbo not found through pkg-config ({e}); trying the \
             default paths (Debian: apt-get install libjpeg62-turbo-dev pkg-config)"
        ),
    }
    // The static shim first, then the library it calls (the linker resolves left to right).
    build.compile("rcl_jpeg");
    match found {
        Ok(lib) => {
            for dir in &lib.link_paths {
                println!("cargo:rustc-link-search=native={}", dir.display());
            }
            for name in &lib.libs {
                println!("cargo:rustc-link-lib={name}");
            }
        }
        Err(_) => println!("cargo:rustc-link-lib=jpeg"),
    }
}
