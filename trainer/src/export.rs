//! Exporting a checkpoint's query backbone for downstream use (docs/method.md 9.4).
//!
//! - **torchvision**: bare torchvision names (`conv1.weight`, `layer1.0.bn1.running_mean`, ...,
//!   `num_batches_tracked` included), so that
//!   `torchvision.models.resnet50().load_state_dict(sd, strict=False)` misses exactly `fc.weight`
//!   and `fc.bias`.
//! - **detectron2**: the MoCo / DenseCL conversion: keys without `layer` get `stem.`, `layerN`
//!   becomes `res{N+1}`, `bnK` becomes `convK.norm`, `downsample.0` / `.1` become `shortcut` /
//!   `shortcut.norm`; detectron2 loads it with `matching_heuristics`.
//!
//! Rust writes the renamed tensors as safetensors ([`export_tensors`]); the container PyTorch and
//! detectron2 read (a `torch.save` pickle, a pickle of numpy arrays) is written from that file by
//! `scripts/export_pickle.py` with the project's venv, because libtorch's C++ serialisation (what
//! tch's `save_multi` calls) writes a TorchScript archive that `torch.load` does not return as a
//! state dict.

use std::path::Path;

use tch::Tensor;

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::eval::resolve_checkpoint;

/// Target of an export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportFormat {
    /// torchvision ResNet state dict names.
    Torchvision,
    /// detectron2 ResNet names (docs/method.md 9.4).
    Detectron2,
}

/// The detectron2 name of a torchvision ResNet backbone key (MoCo's `convert-pretrain-to-detectron2.py`).
pub fn detectron2_name(torchvision: &str) -> String {
    let mut k = torchvision.to_string();
    if !k.contains("layer") {
        k = format!("stem.{k}");
    }
    for t in 1..=4 {
        k = k.replace(&format!("layer{t}"), &format!("res{}", t + 1));
    }
    for t in 1..=3 {
        k = k.replace(&format!("bn{t}"), &format!("conv{t}.norm"));
    }
    k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
}

/// The query backbone of the checkpoint at `path` (a checkpoint or run directory) under
/// torchvision names, with the checkpoint's config.
///
/// # Errors
/// A missing or malformed checkpoint, or one without backbone tensors.
pub fn backbone_tensors(path: &Path) -> Result<(Vec<(String, Tensor)>, crate::Config)> {
    let dir = resolve_checkpoint(path)?;
    let config = checkpoint::read_state(&dir)?.config;
    let file = dir.join("model.safetensors");
    let tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(&file)
        .map_err(|e| Error::Checkpoint { path: file.clone(), message: e.to_string() })?
        .into_iter()
        .filter_map(|(n, t)| n.strip_prefix("encoder_q.0.").map(|s| (s.to_string(), t)))
        .collect();
    if tensors.is_empty() {
        return Err(Error::Checkpoint {
            path: file,
            message: "no `encoder_q.0.*` (query backbone) tensors".into(),
        });
    }
    Ok((tensors, config))
}

/// Writes the backbone of the checkpoint at `path` as safetensors at `out`, renamed for `format`;
/// returns the number of tensors.
///
/// # Errors
/// As [`backbone_tensors`], and I/O failures.
pub fn export_tensors(path: &Path, format: ExportFormat, out: &Path) -> Result<usize> {
    let (tensors, _) = backbone_tensors(path)?;
    let renamed: Vec<(String, Tensor)> = match format {
        ExportFormat::Torchvision => tensors,
        ExportFormat::Detectron2 => {
            tensors.into_iter().map(|(n, t)| (detectron2_name(&n), t)).collect()
        }
    };
    Tensor::write_safetensors(&renamed, out)
        .map_err(|e| Error::Checkpoint { path: out.to_path_buf(), message: e.to_string() })?;
    Ok(renamed.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detectron2_names_follow_moco() {
        for (tv, d2) in [
            ("conv1.weight", "stem.conv1.weight"),
            ("bn1.running_var", "stem.conv1.norm.running_var"),
            ("layer1.0.conv1.weight", "res2.0.conv1.weight"),
            ("layer1.0.bn3.bias", "res2.0.conv3.norm.bias"),
            ("layer2.0.downsample.0.weight", "res3.0.shortcut.weight"),
            ("layer4.0.downsample.1.running_mean", "res5.0.shortcut.norm.running_mean"),
            ("layer3.5.bn2.num_batches_tracked", "res4.5.conv2.norm.num_batches_tracked"),
        ] {
            assert_eq!(detectron2_name(tv), d2);
        }
    }
}
