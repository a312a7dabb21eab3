//! Exporting a checkpoint's online backbone for downstream use (docs/method.md 9.4), written by
//! this crate alone — no Python at run time:
//!
//! - [`ExportFormat::Torchvision`]: torchvision names (`conv1.weight`, `layer1.0.bn1.running_mean`,
//!   ..., `num_batches_tracked` included) in torch's own `.pth` layout (the zip + pickle of
//!   `torch.save`; `pth.rs`), which `torch.load(f, weights_only=True)` reads and
//!   `torchvision.models.resnet50().load_state_dict(sd, strict=False)` takes, missing exactly
//!   `fc.weight` and `fc.bias`.
//! - [`ExportFormat::Detectron2`]: the MoCo / DenseCL conversion ([`ExportFormat::rename`]) as
//!   detectron2's `.pkl`, a pickle of numpy arrays (`numpy.rs`) that detectron2 loads with
//!   `matching_heuristics`.
//! - [`ExportFormat::Timm`]: a transformer backbone of the MoBY methods under timm's names, in the
//!   same `.pth` layout: `timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)`
//!   (or `"vit_small_patch16_224"`) takes it with `strict=False`, missing only the classifier head
//!   (`docs/moby.md`).
//!
//! A file named `*.safetensors` gets the renamed tensors as safetensors instead.
//!
//! Before anything is written, the checkpoint is verified (its checksums, every weight finite)
//! and every tensor of its online encoder is checked against the architecture its config
//! describes: the same names, shapes and kinds, none missing, none extra.
//! The file is written under a temporary name beside `out`, synced and renamed into place, so a
//! failed export leaves neither a partial file nor a temporary one.

mod numpy;
mod pickle;
mod pth;
mod zip;

use std::fs::File;
use std::io::{BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::eval::resolve_checkpoint;

/// Target of an export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportFormat {
    /// torchvision ResNet state dict names, as a torch `.pth`.
    Torchvision,
    /// detectron2 ResNet names (docs/method.md 9.4), as detectron2's `.pkl`.
    Detectron2,
    /// timm names of a Swin or ViT backbone (the MoBY methods), as a torch `.pth`.
    Timm,
}

impl ExportFormat {
    /// The name, in this format, of a torchvision backbone key. detectron2: MoCo's
    /// `convert-pretrain-to-detectron2.py` (keys without `layer` get `stem.`, `layerN` becomes
    /// `res{N+1}`, `bnK` becomes `convK.norm`, `downsample.0` / `.1` become `shortcut` /
    /// `shortcut.norm`).
    pub fn rename(self, torchvision: &str) -> String {
        match self {
            ExportFormat::Torchvision | ExportFormat::Timm => torchvision.to_string(),
            ExportFormat::Detectron2 => {
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
        }
    }

    /// The name users know the format by (`torchvision`, `detectron2`, `timm`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Torchvision => "torchvision",
            ExportFormat::Detectron2 => "detectron2",
            ExportFormat::Timm => "timm",
        }
    }
}

/// What [`export`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exported {
    /// The checkpoint directory read.
    pub checkpoint: PathBuf,
    /// The number of tensors written.
    pub tensors: usize,
}

/// A tensor's bytes in host order, contiguous.
fn host_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let numel = t.numel();
    let mut buf = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.f_copy_data_u8(&mut buf, numel)?;
    Ok(buf)
}

fn unsupported(name: &str, kind: Kind, what: &str) -> Error {
    Error::Unsupported(format!("export: tensor `{name}` of kind {kind:?} has no {what}"))
}

/// Writes through `write` into a temporary file beside `out`, syncs it and renames it to `out`;
/// on failure the temporary file is removed.
fn write_atomic(out: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = out.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = write(&tmp).and_then(|()| {
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| Error::io(&tmp, "fsync", e))?;
        std::fs::rename(&tmp, out).map_err(|e| Error::io(out, "rename", e))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes through a buffered file at `path`.
fn buffered(
    path: &Path,
    write: impl FnOnce(BufWriter<File>) -> Result<BufWriter<File>>,
) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::io(path, "create", e))?;
    let mut w = write(BufWriter::new(file))?;
    w.flush().map_err(|e| Error::io(path, "write", e))
}

/// Exports the online backbone of the checkpoint at `path` (a checkpoint or run directory, see
/// [`crate::resolve_checkpoint`]) in `format` to the file `out`: a `.pth` (torchvision, timm), a
/// `.pkl` (detectron2), or safetensors when `out` ends in `.safetensors`.
///
/// # Errors
/// - [`Error::Io`] naming `out` when it is a directory, or when a detectron2 export is not named
///   `*.pkl` (detectron2 reads a pickle only from such a name);
/// - [`Error::Checkpoint`] for a missing checkpoint, an encoder that does not match its config's
///   architecture (a tensor missing, extra, or of another shape or kind), or a backbone of the
///   other family (a ResNet `--to timm`, a transformer to torchvision or detectron2);
/// - [`Error::Damaged`] for a checkpoint changed since it was saved, or a non-finite weight;
/// - [`Error::Io`] when the file cannot be written (nothing is left behind);
/// - [`Error::Unsupported`] for a tensor kind the container cannot hold (bf16 in numpy).
pub fn export(path: &Path, format: ExportFormat, out: &Path) -> Result<Exported> {
    let safetensors = out.extension().is_some_and(|e| e == "safetensors");
    let refuse = |kind, why: &str| Err(Error::io(out, "export to", std::io::Error::new(kind, why)));
    if out.is_dir() {
        return refuse(ErrorKind::IsADirectory, "is a directory; give a file name");
    }
    let pkl = out.extension().is_some_and(|e| e == "pkl");
    if format == ExportFormat::Detectron2 && !(pkl || safetensors) {
        return refuse(
            ErrorKind::InvalidInput,
            "detectron2 reads its pickle only from a *.pkl file",
        );
    }
    let dir = resolve_checkpoint(path)?;
    let arch = checkpoint::read_state(&dir)?.config.model.arch;
    if arch.is_transformer() != (format == ExportFormat::Timm) {
        let to = if arch.is_transformer() { "timm" } else { "torchvision or detectron2" };
        return Err(Error::Checkpoint {
            path: dir,
            message: format!(
                "a {} backbone does not export to {}: use --to {to}",
                arch.as_str(),
                format.as_str()
            ),
        });
    }
    // Verified: checksums, names, shapes and kinds against the architecture of its config,
    // finite weights.
    let (encoder, _) = checkpoint::read_encoder(&dir)?;
    let tensors: Vec<(String, Tensor)> =
        encoder.backbone_tensors().into_iter().map(|(name, t)| (format.rename(&name), t)).collect();
    write_atomic(out, |tmp| {
        if safetensors {
            return Tensor::write_safetensors(&tensors, tmp).map_err(Error::from);
        }
        buffered(tmp, |w| match format {
            ExportFormat::Torchvision | ExportFormat::Timm => pth::write(w, tmp, &tensors),
            ExportFormat::Detectron2 => numpy::write(w, tmp, &tensors, "regioncl"),
        })
    })?;
    Ok(Exported { checkpoint: dir, tensors: tensors.len() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{TrainState, save};
    use crate::config::{Config, Method};
    use crate::method::build_pretrainer;
    use crate::method::tests::{TempDir, tiny_config};
    use crate::runtime::Runtime;

    /// A checkpoint in `dir` of a model built from `model_config` whose state records `config`.
    fn checkpoint(dir: &Path, model_config: &Config, config: &Config) -> PathBuf {
        let model = build_pretrainer(model_config, Runtime::cpu()).unwrap();
        let sgd = model.optimizer(model_config);
        save(dir, model.as_ref(), &sgd, &TrainState::new(config, 1, 4, None), 1).unwrap()
    }

    /// Issue 12 #10: export wrote wrong-shape tensors without complaint. Every backbone tensor is
    /// checked against the architecture of the checkpoint's config, and the error names it.
    #[test]
    fn export_checks_shapes_against_the_architecture() {
        let tmp = TempDir::new("export-shapes");
        let out = tmp.0.join("b.pth");
        let config = tiny_config(Method::RegionClm);
        let mut wider = config.clone();
        wider.model.width = 8;
        let ckpt = checkpoint(&tmp.0.join("run"), &config, &wider);
        let err = export(&ckpt, ExportFormat::Torchvision, &out).unwrap_err().to_string();
        assert!(
            err.contains("`encoder_q.0.conv1.weight`") && err.contains("[8, 3, 3, 3]"),
            "{err}"
        );
        let mut deeper = config.clone();
        deeper.model.arch = crate::config::Arch::ResNet50;
        let ckpt = checkpoint(&tmp.0.join("run50"), &config, &deeper);
        let err = export(&ckpt, ExportFormat::Torchvision, &out).unwrap_err().to_string();
        assert!(err.contains("`encoder_q.0.layer1.0.conv1.weight`: Float [4, 4, 3, 3]"), "{err}");
        assert!(!out.exists());
        // The method's own prefix: SimSiam's online encoder is `encoder.*`.
        let simsiam = tiny_config(Method::SimSiam);
        let ckpt = checkpoint(&tmp.0.join("simsiam"), &simsiam, &simsiam);
        let done = export(&ckpt, ExportFormat::Detectron2, &tmp.0.join("s.pkl")).unwrap();
        assert_eq!(done.tensors, 122 - 2, "torchvision's resnet18 state dict minus fc");
    }

    /// A write that fails half way leaves neither the file nor its temporary.
    #[test]
    fn failed_writes_leave_nothing_behind() {
        let tmp = TempDir::new("export-atomic");
        std::fs::create_dir_all(&tmp.0).unwrap();
        let out = tmp.0.join("b.pth");
        let err = write_atomic(&out, |t| {
            std::fs::write(t, b"half").unwrap();
            Err(Error::Unsupported("stop".into()))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read_dir(&tmp.0).unwrap().count(), 0);
        write_atomic(&out, |t| std::fs::write(t, b"all").map_err(|e| Error::io(t, "write", e)))
            .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"all");
        assert_eq!(std::fs::read_dir(&tmp.0).unwrap().count(), 1);
    }

    /// A transformer of the MoBY methods exports `--to timm` under its timm names; the families do
    /// not cross (a ResNet has no timm names here, a Swin no torchvision or detectron2 ones).
    #[test]
    fn timm_export_is_for_the_transformers() {
        let tmp = TempDir::new("export-timm");
        let swin = crate::method::moby_tests::tiny_moby(Method::Moby, "swin_nano");
        let ckpt = checkpoint(&tmp.0.join("swin"), &swin, &swin);
        let out = tmp.0.join("swin.safetensors");
        let done = export(&ckpt, ExportFormat::Timm, &out).unwrap();
        let names: Vec<String> =
            Tensor::read_safetensors(&out).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(done.tensors, names.len());
        assert!(names.iter().any(|n| n == "layers.1.downsample.reduction.weight"), "{names:?}");
        assert!(names.iter().all(|n| !n.starts_with("encoder_") && !n.starts_with("1.")));
        let err = export(&ckpt, ExportFormat::Torchvision, &tmp.0.join("s.pth")).unwrap_err();
        assert!(err.to_string().contains("use --to timm"), "{err}");
        let resnet = tiny_config(Method::RegionClm);
        let ckpt = checkpoint(&tmp.0.join("r18"), &resnet, &resnet);
        let err = export(&ckpt, ExportFormat::Timm, &tmp.0.join("r.pth")).unwrap_err();
        assert!(err.to_string().contains("use --to torchvision or detectron2"), "{err}");
        assert!(!tmp.0.join("r.pth").exists() && !tmp.0.join("s.pth").exists());
    }

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
            assert_eq!(ExportFormat::Detectron2.rename(tv), d2);
            assert_eq!(ExportFormat::Torchvision.rename(tv), tv);
        }
    }
}
