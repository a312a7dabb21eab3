//! `regioncl export --to timm` checked with timm itself (the venv's timm, `scripts/timm_check.py`):
//! a Swin-T and a ViT-S/16 MoBY run of one step on the photos, at full size, export to `.pth` files
//! that `timm.create_model(..., pretrained=False)` loads missing exactly its classifier head, and
//! timm computes the same features as our encoder on the same real images (the pooled final stage
//! for Swin, the class token for ViT).

use std::path::{Path, PathBuf};
use std::process::Command;

use regioncl_trainer::{BnMode, load_encoder};

use crate::cli::{TempDir, run_ok, train_ok, workspace};
use crate::eval::python;
use crate::export::real_input;

/// One MoBY step of `configs/moby_{arch}_imagenet.toml` on the photos, on the CPU, with a batch
/// of 2 and small heads (the backbone is the recipe's).
fn moby_run(dir: &Path, arch: &str) -> PathBuf {
    let run = dir.join(arch);
    let config = workspace().join(format!("configs/moby_{arch}_imagenet.toml"));
    let sets = [
        "data.source=photos",
        "optim.batch_size=2",
        "moco.queue_size=8",
        "model.proj_hidden=32",
        "model.proj_dim=16",
        "moby.pred_hidden=32",
        "run.device=cpu",
        "run.precision=fp32",
        "run.channels_last=false",
        "run.threads=1",
        "run.max_steps=1",
    ];
    train_ok(&config, &run, &sets);
    run
}

#[test]
fn swin_t_and_vit_s16_export_to_timm_and_match_its_features() {
    let dir = TempDir::new("timm");
    let x = real_input(4, 224);
    let xf = dir.path().join("x.npy");
    x.write_npy(&xf).expect("write x");
    for (arch, model, head, tensors, dim) in [
        ("swin_t", "swin_tiny_patch4_window7_224", ["head.fc.bias", "head.fc.weight"], 171, 768),
        ("vit_s16", "vit_small_patch16_224", ["head.bias", "head.weight"], 150, 384),
    ] {
        let run = moby_run(dir.path(), arch);
        let pth = dir.path().join(format!("{arch}.pth"));
        run_ok(&[&"export", &run, &"--to", &"timm", &"--out", &pth]);
        let (encoder, _) = load_encoder(&run, tch::Device::Cpu).expect("load");
        let ours = tch::no_grad(|| encoder.pooled(&x, BnMode::eval()));
        let ff = dir.path().join(format!("{arch}-f.npy"));
        ours.write_npy(&ff).expect("write features");
        let out = Command::new(python())
            .arg(workspace().join("scripts/timm_check.py"))
            .args(["--model", model, "--weights"])
            .arg(&pth)
            .arg("--input")
            .arg(&xf)
            .arg("--features")
            .arg(&ff)
            .output()
            .expect("run python");
        assert!(out.status.success(), "timm_check.py: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("{arch}: {stdout}");
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
        assert_eq!(v["type"], "dict", "{arch}");
        assert_eq!(v["missing"], serde_json::json!(head), "{arch}: {stdout}");
        assert_eq!(v["unexpected"], serde_json::json!([]), "{arch}: {stdout}");
        assert_eq!(v["num_tensors"].as_u64(), Some(tensors), "{arch}");
        assert_eq!(v["features_shape"], serde_json::json!([4, dim]), "{arch}");
        let (diff, scale) =
            (v["max_abs_diff"].as_f64().unwrap(), v["max_abs_feature"].as_f64().unwrap());
        assert!(scale > 0.0 && diff <= 1e-4 * scale.max(1.0), "{arch}: |diff| {diff} of {scale}");
    }
}
