//! `regioncl env`: what this build links and sees.

/// Prints libtorch/CUDA availability.
pub fn run() -> anyhow::Result<()> {
    outln!("cuda available: {}", regioncl_trainer::cuda_available())?;
    outln!("cuda devices: {}", tch::Cuda::device_count())?;
    Ok(())
}
