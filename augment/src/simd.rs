//! Runtime dispatch of the float kernels to an AVX2 build.
//!
//! The kernels are plain Rust loops written so that LLVM vectorizes them (no per-element branches
//! that it cannot turn into selects). Without `-C target-cpu` the default x86-64 target only has
//! SSE2; [`simd_kernel!`] compiles each kernel a second time with AVX2 and FMA enabled and picks
//! that build when the CPU has them. Rust never fuses a multiply and an add on its own (no
//! fast-math), so both builds give bit-identical results; the tests check it.

/// Defines `pub(crate) fn $name(args)` that runs `$body` compiled for AVX2 + FMA when the CPU
/// supports them, and `pub(crate) fn $portable(args)` with the same body for the baseline target.
macro_rules! simd_kernel {
    (
        $(#[$meta:meta])*
        fn $name:ident / $portable:ident ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        #[inline(always)]
        pub(crate) fn $portable($($arg: $ty),*) $(-> $ret)? $body

        $(#[$meta])*
        pub(crate) fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $portable($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: `avx2` only needs the avx2 and fma target features, which the CPU
                    // was just detected to support.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $portable($($arg),*)
        }
    };
}

pub(crate) use simd_kernel;
