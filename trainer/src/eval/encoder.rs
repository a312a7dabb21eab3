//! The networks to evaluate: the online encoder of a checkpoint (any method), or a randomly
//! initialised one of the same architecture (the baseline a learned representation must beat).

use std::path::{Path, PathBuf};

use tch::Device;

use crate::checkpoint;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::Encoder;

/// A checkpoint directory (holding `state.json`), or a run directory, whose newest checkpoint is
/// taken.
///
/// # Errors
/// [`Error::Checkpoint`] when `path` is neither.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if path.join("state.json").is_file() {
        return Ok(path.to_path_buf());
    }
    checkpoint::latest(path)?.ok_or_else(|| Error::Checkpoint {
        path: path.to_path_buf(),
        message: "neither a checkpoint (no state.json) nor a run directory with checkpoints".into(),
    })
}

/// The online encoder (backbone, BN running statistics, projector: `encoder_q.*`, or SimSiam's
/// `encoder.*`) of the checkpoint at `path` (see [`resolve_checkpoint`]), on `device`, with the
/// checkpoint's config. The checkpoint is verified first: every file's size and checksum, its
/// config, every tensor's shape against the architecture and every weight finite.
///
/// # Errors
/// A missing checkpoint; [`Error::Damaged`] for a damaged one; [`Error::Checkpoint`] for an
/// invalid config or tensors that do not fit it.
pub fn load_encoder(path: &Path, device: Device) -> Result<(Encoder, Config)> {
    let (mut encoder, config) = checkpoint::read_encoder(&resolve_checkpoint(path)?)?;
    encoder.to_device(device);
    Ok((encoder, config))
}

/// A freshly initialised encoder of `config`'s architecture and initialisation scheme (drawn from
/// the keyed stream of `seed`, `init.rs`), BN running statistics at their defaults (mean 0, var 1).
///
/// # Errors
/// A libtorch failure.
pub fn random_encoder(config: &Config, seed: u64, device: Device) -> Result<Encoder> {
    crate::init::seeded(seed, || Encoder::for_config(config, device, false))
}
