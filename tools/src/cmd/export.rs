//! `regioncl export CHECKPOINT --to torchvision|detectron2|timm --out FILE`: the online backbone of
//! a checkpoint for downstream use (docs/method.md 9.4), written by the binary alone.
//!
//! - `torchvision`: a torch `.pth` state dict under torchvision names (BN running statistics
//!   included) that `torchvision.models.resnet50().load_state_dict(torch.load(FILE,
//!   weights_only=True), strict=False)` takes, missing only `fc.weight` and `fc.bias` (`resnet18`
//!   for an R18 run).
//! - `detectron2`: the MoCo conversion's renamed keys as numpy arrays, pickled as
//!   `{"model": ..., "__author__": "regioncl", "matching_heuristics": True}` in a `.pkl`.
//! - `timm`: a Swin-T or ViT-S/16 of the MoBY methods as a torch `.pth` under timm's names, which
//!   `timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)` (or
//!   `"vit_small_patch16_224"`) takes with `strict=False`, missing only the head (docs/moby.md).
//!
//! A FILE ending in `.safetensors` gets the renamed tensors as safetensors instead.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use regioncl_trainer::{ExportFormat, export};

/// Target format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    /// torchvision ResNet state dict (`.pth`).
    Torchvision,
    /// detectron2 ResNet weights (`.pkl`).
    Detectron2,
    /// timm Swin / ViT state dict (`.pth`).
    Timm,
}

/// Arguments of `regioncl export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Checkpoint directory, or a run directory (its newest checkpoint).
    #[arg(value_name = "CHECKPOINT")]
    checkpoint: PathBuf,
    /// Target format.
    #[arg(long, value_enum)]
    to: Target,
    /// Output file (`.pth` / `.pkl`, or `.safetensors`); its directory is created.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Runs the export.
pub fn run(args: ExportArgs) -> Result<()> {
    let format = match args.to {
        Target::Torchvision => ExportFormat::Torchvision,
        Target::Detectron2 => ExportFormat::Detectron2,
        Target::Timm => ExportFormat::Timm,
    };
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let done = export(&args.checkpoint, format, &args.out)
        .with_context(|| format!("exporting {}", args.checkpoint.display()))?;
    eprintln!(
        "exported {} backbone tensors of {} ({} names) to {}",
        done.tensors,
        done.checkpoint.display(),
        format.as_str(),
        args.out.display()
    );
    Ok(())
}
