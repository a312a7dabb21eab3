//! `regioncl export CHECKPOINT --to torchvision|detectron2 --out FILE`: the query backbone of a
//! checkpoint for downstream use (docs/method.md 9.4).
//!
//! - `torchvision`: a `torch.save` state dict under torchvision names (BN running statistics
//!   included) that `torchvision.models.resnet50().load_state_dict(torch.load(FILE),
//!   strict=False)` takes, missing only `fc.weight` and `fc.bias` (`resnet18` for an R18 run).
//! - `detectron2`: the MoCo conversion's renamed keys as numpy arrays, pickled as
//!   `{"model": ..., "__author__": ..., "matching_heuristics": True}`.
//!
//! The renaming is done here; the pickle container is written by `scripts/export_pickle.py` with
//! the venv's Python (libtorch's C++ serialisation writes TorchScript archives, which `torch.load`
//! does not return as a state dict). A FILE ending in `.safetensors` gets the renamed tensors as
//! safetensors instead, without Python.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use regioncl_trainer::{ExportFormat, export_tensors};

/// Target format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    /// torchvision ResNet state dict (`.pth`).
    Torchvision,
    /// detectron2 ResNet weights (`.pkl`).
    Detectron2,
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
    /// Output file (`.pth` / `.pkl`; `.safetensors` writes safetensors without Python).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Runs the export.
pub fn run(args: ExportArgs) -> Result<()> {
    let (format, name) = match args.to {
        Target::Torchvision => (ExportFormat::Torchvision, "torchvision"),
        Target::Detectron2 => (ExportFormat::Detectron2, "detectron2"),
    };
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let direct = args.out.extension().is_some_and(|e| e == "safetensors");
    let tensors_file = if direct {
        args.out.clone()
    } else {
        let mut p = args.out.clone().into_os_string();
        p.push(format!(".tmp-{}.safetensors", std::process::id()));
        PathBuf::from(p)
    };
    let n = export_tensors(&args.checkpoint, format, &tensors_file)
        .with_context(|| format!("exporting {}", args.checkpoint.display()))?;
    if !direct {
        let result = (|| -> Result<()> {
            let script = super::repo_file("scripts/export_pickle.py")?;
            let python = super::venv_python()?;
            let status = Command::new(&python)
                .arg(&script)
                .args(["--format", name])
                .arg(&tensors_file)
                .arg(&args.out)
                .status()
                .with_context(|| format!("running {}", python.display()))?;
            anyhow::ensure!(status.success(), "{} failed ({status})", script.display());
            Ok(())
        })();
        let _ = std::fs::remove_file(&tensors_file);
        result?;
    }
    eprintln!("exported {n} backbone tensors ({name} names) to {}", args.out.display());
    Ok(())
}
