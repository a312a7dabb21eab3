//! Checkpoints: one directory per saved step, written atomically (a temporary directory, every
//! file fsynced, renamed into place, parent fsynced), so a run killed at any point (SIGKILL
//! included) resumes from its last complete checkpoint. `checksums.json`, written last, records
//! every other file's size and crc32c; loading checks them, and the tensors against the model,
//! before anything is used (`files.rs`), so a damaged checkpoint is an [`Error::Damaged`] that a
//! resume skips for the previous good one.
//!
//! ```text
//! RUN_DIR/checkpoints/step-00001000/
//!     model.safetensors      the method's tensors (below)
//!     optimizer.safetensors  SGD momentum buffers, by parameter name (encoder_q.*, ...)
//!     state.json             next step, epoch, seed, config, versions, last losses
//!     checksums.json         size and crc32c of the three files above
//! ```
//!
//! | method | `model.safetensors` |
//! |---|---|
//! | MoCo v2, RegionCL-M | `encoder_q.0.<torchvision names>`, `encoder_q.1.mlp.{0,2}.*`, `encoder_k.*` (same), `queue` `[dim, K]`, `queue_ptr` `[1]` (int64) |
//! | DenseCL, RegionCL-D | the same plus the dense head `encoder_{q,k}.1.mlp2.{0,2}.*` and `queue2`, `queue2_ptr` |
//! | SimSiam, RegionCL-S | `encoder.0.<torchvision names>`, `encoder.1.mlp.{0,1,3,4,6,7}.*`, `predictor.{0,1,3}.*` |
//!
//! Names follow the OpenSelfSup / DenseCL checkpoints (docs/method.md 9.4; SimSiam's
//! `module.encoder.*` without `module.`), so a converter only changes the container;
//! [`crate::Method::encoder_prefix`] names the online encoder's prefix. [`export_backbone`] writes
//! the online backbone of any method under bare torchvision names.

mod files;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use self::files::{Expected, Verified, expected_of, write_checksums};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::method::{Pretrainer, StepLosses};
use crate::model::Encoder;
use crate::optim::Optimizer;

const DIR: &str = "checkpoints";
const PREFIX: &str = "step-";
const MODEL: &str = "model.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.json";

/// Versions recorded with a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// This crate.
    pub regioncl: String,
    /// tch.
    pub tch: String,
    /// The libtorch the trainer was built against.
    pub libtorch: String,
}

impl Versions {
    /// The versions of this build.
    pub fn current() -> Self {
        Self {
            regioncl: env!("CARGO_PKG_VERSION").to_string(),
            tch: "0.24.0".to_string(),
            libtorch: env!("REGIONCL_LIBTORCH_VERSION").to_string(),
        }
    }
}

/// The JSON part of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The next global step to run (steps `0..step` are done).
    pub step: u64,
    /// The epoch of that next step.
    pub epoch: u64,
    /// The run's seed (every random draw is keyed by it and the step: no other RNG state).
    pub seed: u64,
    /// Losses of the last completed step (older checkpoints: `[loss, loss_inst, loss_region]`).
    pub last: Option<StepLosses>,
    /// The resolved config.
    pub config: Config,
    /// Build versions.
    pub versions: Versions,
}

impl TrainState {
    /// The state after `step` steps, with the last step's losses.
    pub fn new(config: &Config, step: u64, steps_per_epoch: u64, last: Option<StepLosses>) -> Self {
        Self {
            step,
            epoch: step / steps_per_epoch.max(1),
            seed: config.seed,
            last,
            config: config.clone(),
            versions: Versions::current(),
        }
    }
}

fn fsync(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| Error::io(path, "fsync", e))
}

fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    Tensor::write_safetensors(tensors, path)?;
    fsync(path)
}

/// Saves a checkpoint of `state.step` and keeps only the newest `keep`.
///
/// # Errors
/// I/O failures (the previous checkpoints stay intact).
pub fn save(
    run_dir: &Path,
    model: &dyn Pretrainer,
    opt: &Optimizer,
    state: &TrainState,
    keep: u64,
) -> Result<PathBuf> {
    let dir = run_dir.join(DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "create", e))?;
    let name = name_of(state.step);
    let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, "remove", e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, "create", e))?;

    write_tensors(&tmp.join(MODEL), &model.state_tensors())?;
    write_tensors(&tmp.join(OPTIMIZER), &opt.export())?;
    let json_path = tmp.join(STATE);
    let json = serde_json::to_vec_pretty(state)
        .map_err(|e| Error::Json { path: json_path.clone(), source: e })?;
    std::fs::write(&json_path, json).map_err(|e| Error::io(&json_path, "write", e))?;
    fsync(&json_path)?;
    write_checksums(&tmp, &[MODEL, OPTIMIZER, STATE])?;
    fsync(&tmp)?;

    let final_dir = dir.join(&name);
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| Error::io(&final_dir, "remove", e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, "rename", e))?;
    fsync(&dir)?;
    prune(&dir, keep)?;
    Ok(final_dir)
}

fn name_of(step: u64) -> String {
    format!("{PREFIX}{step:08}")
}

/// Where [`save`] puts the checkpoint of `step`.
pub(crate) fn dir_of(run_dir: &Path, step: u64) -> PathBuf {
    run_dir.join(DIR).join(name_of(step))
}

/// Complete checkpoints under `run_dir`, oldest first.
///
/// # Errors
/// The directory cannot be listed.
pub fn list(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let dir = run_dir.join(DIR);
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, "read_dir", e))? {
        let path = entry.map_err(|e| Error::io(&dir, "read_dir", e))?.path();
        let step = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(step) = step
            && path.join(STATE).is_file()
        {
            out.push((step, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The newest complete checkpoint, if any.
///
/// # Errors
/// The checkpoints directory cannot be listed.
pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list(run_dir)?.pop().map(|(_, p)| p))
}

fn prune(dir: &Path, keep: u64) -> Result<()> {
    let run_dir = dir.parent().expect("checkpoints dir has a parent");
    let all = list(run_dir)?;
    let excess = all.len().saturating_sub(keep as usize);
    for (_, path) in &all[..excess] {
        std::fs::remove_dir_all(path).map_err(|e| Error::io(path, "remove", e))?;
    }
    // Leftovers of interrupted saves.
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, "read_dir", e))?.flatten() {
        let p = entry.path();
        if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(".tmp-"))
            && !p.to_string_lossy().ends_with(&format!("-{}", std::process::id()))
        {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
    Ok(())
}

/// Reads the state of a checkpoint directory, verified against its `checksums.json`.
///
/// # Errors
/// [`Error::Damaged`] for a missing, changed or unreadable file; [`Error::Json`] for a state of
/// another format.
pub fn read_state(dir: &Path) -> Result<TrainState> {
    Verified::open(dir)?.read_json(STATE)
}

/// A checkpoint read and verified, not yet applied to a model.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// Its state.
    pub(crate) state: TrainState,
    model: HashMap<String, Tensor>,
    optimizer: HashMap<String, Tensor>,
}

impl Loaded {
    /// Reads the checkpoint `dir` for `model` and `opt`: every file's size and checksum, every
    /// tensor's presence, shape, kind and finiteness, before anything is applied.
    ///
    /// # Errors
    /// [`Error::Damaged`] for a damaged checkpoint; [`Error::Checkpoint`] when it holds another
    /// model.
    pub(crate) fn read(dir: &Path, model: &dyn Pretrainer, opt: &Optimizer) -> Result<Self> {
        let files = Verified::open(dir)?;
        let state = files.read_json(STATE)?;
        let own = model.state_tensors();
        let want = expected_of(own.iter().map(|(n, t)| (n.clone(), t)));
        let model_tensors = files.read_tensors(MODEL, &want, "")?;
        let optimizer = files.read_tensors(OPTIMIZER, &expected_of(opt.named_state()), "")?;
        Ok(Self { state, model: model_tensors, optimizer })
    }

    /// Copies the tensors into `model` and `opt`; returns the state.
    ///
    /// # Errors
    /// A libtorch failure.
    pub(crate) fn apply(self, model: &mut dyn Pretrainer, opt: &Optimizer) -> Result<TrainState> {
        model.load_state(&self.model)?;
        opt.load(&self.optimizer)?;
        Ok(self.state)
    }
}

/// The online encoder of the checkpoint `dir` (backbone `0.*`, head `1.*`, under the method's
/// [`crate::Method::encoder_prefix`]), built on the CPU from the checkpoint's config, which is
/// validated first (so a config naming an absurd width is refused before any allocation).
///
/// # Errors
/// As [`read_state`]; [`Error::Checkpoint`] when its config is invalid or its tensors do not fit
/// it; [`Error::Damaged`] for a changed file or a non-finite weight.
pub(crate) fn read_encoder(dir: &Path) -> Result<(Encoder, Config)> {
    let files = Verified::open(dir)?;
    let config = files.read_json::<TrainState>(STATE)?.config;
    config.validate().map_err(|e| Error::Checkpoint {
        path: dir.join(STATE),
        message: format!("its config: {e}"),
    })?;
    let encoder = Encoder::for_config(&config, tch::Device::Cpu, false)?;
    let prefix = config.method.encoder_prefix();
    let want: Expected = expected_of(
        encoder.store().entries().iter().map(|e| (format!("{prefix}{}", e.name), &e.tensor)),
    );
    let tensors = files.read_tensors(MODEL, &want, prefix)?;
    encoder.store().load(&tensors, prefix)?;
    Ok((encoder, config))
}

/// Writes the online backbone (the query encoder's, or SimSiam's encoder's) under bare torchvision
/// names (`conv1.weight`, `layer1.0.bn1.running_mean`, ...):
/// `torchvision.models.resnet50().load_state_dict(sd, strict=False)` then misses only `fc.weight`
/// and `fc.bias`.
///
/// # Errors
/// I/O failures.
pub fn export_backbone(model: &dyn Pretrainer, path: &Path) -> Result<()> {
    write_tensors(path, &model.online_encoder().backbone_tensors())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde_json's default float parser may land one ulp off (7.6374406814575195 read back as
    /// 7.63744068145752): a checkpoint's last losses must read back bit for bit, as resume
    /// compares them with the uninterrupted run's.
    #[test]
    fn state_json_keeps_every_bit_of_the_losses() {
        let l = StepLosses {
            loss: 7.637_440_681_457_519_5,
            loss_inst: 5.092_118_263_244_629,
            loss_region: 0.1 + 0.2,
            loss_dense: 1e-300,
        };
        let state = TrainState::new(&Config::default(), 6, 3, Some(l));
        let json = serde_json::to_vec(&state).unwrap();
        let back: TrainState = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.last, Some(l));
    }
}
