//! `regioncl env`: what this build links and sees.

/// Prints libtorch/CUDA availability.
pub fn run() -> anyhow::Result<()> {
    println!("cuda available: {}", regioncl_trainer::cuda_available());
    println!("cuda devices: {}", tch::Cuda::device_count());
    Ok(())
}
