//! Builds the libjpeg-turbo shim (csrc/jpeg_shim.c) against the system's libjpeg-turbo
//! (Debian: libjpeg62-turbo-dev, which provides jpeglib.h and a SIMD build of the library).
fn main() {
    println!("cargo:rerun-if-changed=csrc/jpeg_shim.c");
    if !std::path::Path::new("/usr/include/jpeglib.h").exists() {
        println!(
            "cargo:warning=jpeglib.h not found: install libjpeg-turbo's headers \
             (Debian: apt-get install libjpeg62-turbo-dev)"
        );
    }
    cc::Build::new().file("csrc/jpeg_shim.c").opt_level(3).warnings(true).compile("rcl_jpeg");
    println!("cargo:rustc-link-lib=jpeg");
}
