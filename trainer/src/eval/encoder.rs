//! The networks to evaluate: the query encoder of a checkpoint, or a randomly initialised one of
//! the same architecture (the baseline a learned representation must beat).

use std::path::{Path, PathBuf};

use tch::{Device, Tensor};

use crate::checkpoint;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{Encoder, ResNetSpec};

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

fn build(config: &Config, device: Device) -> Result<Encoder> {
    let spec = ResNetSpec::of(&config.model);
    let hidden =
        if config.model.proj_hidden > 0 { config.model.proj_hidden } else { spec.feature_dim() };
    Encoder::new(spec, hidden, config.model.proj_dim, device, false)
}

/// The query encoder (`encoder_q.*`: backbone, BN running statistics, projector) of the checkpoint
/// at `path` (see [`resolve_checkpoint`]), on `device`, with the checkpoint's config.
///
/// # Errors
/// A missing or malformed checkpoint, or tensors that do not fit its config.
pub fn load_encoder(path: &Path, device: Device) -> Result<(Encoder, Config)> {
    let dir = resolve_checkpoint(path)?;
    let config = checkpoint::read_state(&dir)?.config;
    let encoder = build(&config, Device::Cpu)?;
    let file = dir.join("model.safetensors");
    let tensors: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&file)
        .map_err(|e| Error::Checkpoint { path: file.clone(), message: e.to_string() })?
        .into_iter()
        .collect();
    encoder
        .store()
        .load(&tensors, "encoder_q.")
        .map_err(|e| Error::Checkpoint { path: file, message: e.to_string() })?;
    if device != Device::Cpu {
        encoder.store().to_device(device);
    }
    Ok((encoder, config))
}

/// A freshly initialised encoder of `config`'s architecture and initialisation scheme (drawn from
/// the keyed stream of `seed`, `init.rs`), BN running statistics at their defaults (mean 0, var 1).
///
/// # Errors
/// A libtorch failure.
pub fn random_encoder(config: &Config, seed: u64, device: Device) -> Result<Encoder> {
    crate::init::seeded(seed, || build(config, device))
}
