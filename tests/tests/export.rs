//! `regioncl export` checked with the consumers' own code (the venv's torch and torchvision,
//! `scripts/export_check.py`): a ResNet-50 checkpoint (a real, briefly trained run, so the BN
//! running statistics are not the defaults) exported for torchvision loads with
//! `torch.load(weights_only=True)` (and memory-mapped) into `torchvision.models.resnet50()`
//! missing exactly `fc.weight` and `fc.bias`, holds exactly the checkpoint's tensors, and computes
//! the same pooled features as our model on the same real images; the detectron2 pickle holds
//! numpy arrays under MoCo's renamed keys with the right shapes and values. Both files equal what
//! `torch.save` and `pickle.dump` write for the same tensors (`scripts/export_pickle.py`, the
//! oracle). The binary writes them itself: the export runs with no Python on its `PATH`.

use std::path::Path;
use std::process::Command;

use regioncl_trainer::{BnMode, EvalSet, EvalView, load_encoder};
use tch::{Device, Kind, Tensor};

use crate::cli::{TempDir, run_ok, train_ok, workspace};
use crate::eval::{fashion_mnist, python};

/// A ResNet-50 (torchvision stem and width) RegionCL-M run of two steps at 64 px on the photos.
fn resnet50_run(dir: &Path) -> std::path::PathBuf {
    let run = dir.join("run");
    let sets = [
        "model.arch=resnet50",
        "model.stem=imagenet",
        "model.width=64",
        "model.proj_hidden=0",
        "data.image_size=64",
        "region.c_lower=1",
        "region.c_upper=1",
        "optim.batch_size=8",
        "moco.queue_size=64",
        "moco.bn_splits=2",
        "augment.blur_sigma_max=2.0",
        "run.max_steps=2",
    ];
    let config = workspace().join("configs/tiny_cpu.toml");
    train_ok(&config, &run, &sets);
    run
}

/// The first `n` Fashion-MNIST test images at `size` px, normalised: `[n, 3, size, size]`.
pub(crate) fn real_input(n: usize, size: u32) -> Tensor {
    let (_, _, test) = fashion_mnist();
    let set = EvalSet::open(test).expect("open");
    let mut x = None;
    set.for_each_center(EvalView { resize: size, crop: size }, n, 1, |px, _| {
        if x.is_none() {
            let f = px.permute([0, 3, 1, 2]).to_kind(Kind::Float) / 255.0;
            let mean = Tensor::from_slice(&[0.485f32, 0.456, 0.406]).view([1, 3, 1, 1]);
            let std = Tensor::from_slice(&[0.229f32, 0.224, 0.225]).view([1, 3, 1, 1]);
            x = Some(((f - mean) / std).contiguous());
        }
        Ok(())
    })
    .expect("read images");
    x.expect("a batch")
}

/// Runs `regioncl export RUN --to FORMAT --out OUT` with neither Python nor a venv reachable.
fn export_without_python(run: &Path, format: &str, out: &Path) {
    let status = Command::new(crate::cli::regioncl())
        .args(["export".as_ref(), run.as_os_str(), "--to".as_ref(), format.as_ref()])
        .args(["--out".as_ref(), out.as_os_str()])
        .env("PATH", "/nonexistent")
        .env("REGIONCL_PYTHON", "/nonexistent/python")
        .status()
        .expect("run regioncl");
    assert!(status.success(), "export --to {format}: {status}");
}

/// Runs export_pickle.py (the oracle) on a safetensors export.
fn oracle(format: &str, input: &Path, out: &Path) {
    let status = Command::new(python())
        .arg(workspace().join("scripts/export_pickle.py"))
        .args(["--format", format])
        .arg(input)
        .arg(out)
        .status()
        .expect("run python");
    assert!(status.success(), "export_pickle.py --format {format}: {status}");
}

#[test]
fn torchvision_and_detectron2_exports_round_trip() {
    let dir = TempDir::new("export");
    let run = resnet50_run(dir.path());
    let (pth, pkl) = (dir.path().join("r50.pth"), dir.path().join("r50_d2.pkl"));
    export_without_python(&run, "torchvision", &pth);
    export_without_python(&run, "detectron2", &pkl);
    let (st, st_d2) = (dir.path().join("r50.safetensors"), dir.path().join("r50_d2.safetensors"));
    export_without_python(&run, "torchvision", &st);
    export_without_python(&run, "detectron2", &st_d2);
    let (oracle_pth, oracle_pkl) = (dir.path().join("oracle.pth"), dir.path().join("oracle.pkl"));
    oracle("torchvision", &st, &oracle_pth);
    oracle("detectron2", &st_d2, &oracle_pkl);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let checkpoint = regioncl_trainer::latest_checkpoint(&run).unwrap().expect("a checkpoint");

    // Our pooled features on real images, in eval mode.
    let (encoder, _) = load_encoder(&run, Device::Cpu).expect("load");
    let x = real_input(16, 64);
    let ours = tch::no_grad(|| {
        encoder.features(&x, BnMode::eval()).mean_dim([2, 3].as_slice(), false, Kind::Float)
    });
    assert_eq!(ours.size(), [16, 2048]);
    let (xf, ff) = (dir.path().join("x.npy"), dir.path().join("f.npy"));
    x.write_npy(&xf).expect("write x");
    ours.write_npy(&ff).expect("write features");

    let out = Command::new(python())
        .arg(workspace().join("scripts/export_check.py"))
        .args(["--arch", "resnet50", "--torchvision"])
        .arg(&pth)
        .arg("--input")
        .arg(&xf)
        .arg("--features")
        .arg(&ff)
        .arg("--detectron2")
        .arg(&pkl)
        .arg("--checkpoint")
        .arg(checkpoint.join("model.safetensors"))
        .arg("--oracle-torchvision")
        .arg(&oracle_pth)
        .arg("--oracle-detectron2")
        .arg(&oracle_pkl)
        .output()
        .expect("run python");
    assert!(out.status.success(), "export_check.py: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    // torchvision: a plain state dict, exactly fc missing, BN statistics included, same features.
    assert_eq!(v["type"], "dict");
    assert_eq!(v["missing"], serde_json::json!(["fc.bias", "fc.weight"]), "{stdout}");
    assert_eq!(v["unexpected"], serde_json::json!([]), "{stdout}");
    assert_eq!(v["has_running_stats"], true);
    assert_eq!(v["num_tensors"].as_u64(), Some(320 - 2), "resnet50 state dict minus fc");
    assert_eq!(v["torchvision_order"], true, "keys in torchvision's state_dict order");
    // The checkpoint's tensors, bit for bit; what torch.save writes for them.
    for k in ["ckpt_missing", "ckpt_extra", "ckpt_mismatched", "oracle_mismatched"] {
        assert_eq!(v[k], serde_json::json!([]), "{k}: {stdout}");
    }
    assert_eq!(v["oracle_keys_equal"], true, "{stdout}");
    assert_eq!(v["features_shape"], serde_json::json!([16, 2048]));
    let (diff, scale) =
        (v["max_abs_diff"].as_f64().unwrap(), v["max_abs_feature"].as_f64().unwrap());
    assert!(
        scale > 0.0 && diff <= 1e-4 * scale.max(1.0),
        "max |diff| {diff} for features up to {scale}"
    );
    // detectron2: MoCo's container and renaming, numpy arrays equal to the torchvision tensors.
    assert_eq!(
        v["d2_container"],
        serde_json::json!(["__author__", "matching_heuristics", "model"])
    );
    assert_eq!(v["d2_matching_heuristics"], true);
    assert_eq!(v["d2_all_numpy"], true);
    assert_eq!(v["d2_num_keys"].as_u64(), Some(318));
    assert_eq!(v["d2_oracle_container"], true, "{stdout}");
    for k in ["d2_missing", "d2_extra", "d2_mismatched", "d2_oracle_mismatched"] {
        assert_eq!(v[k], serde_json::json!([]), "{k}: {stdout}");
    }
    let shape = |k: &str| v["d2_sample"][k].clone();
    assert_eq!(shape("stem.conv1.weight"), serde_json::json!([64, 3, 7, 7]));
    assert_eq!(shape("stem.conv1.norm.running_mean"), serde_json::json!([64]));
    assert_eq!(shape("res2.0.shortcut.weight"), serde_json::json!([256, 64, 1, 1]));
    assert_eq!(shape("res5.2.conv3.norm.bias"), serde_json::json!([2048]));
}

/// Issue 12 #15: `export --out DIR` printed a Python traceback and left a 2.8 MB temporary file
/// behind. It is a clear error naming DIR, before anything is written; so is a detectron2 file not
/// named `*.pkl` (detectron2 reads its pickle only from such a name).
#[test]
fn export_to_a_directory_is_an_error_and_leaves_nothing() {
    let dir = TempDir::new("export-dir");
    let run = dir.path().join("run");
    let config = workspace().join("configs/tiny_cpu.toml");
    run_ok(&[&"train", &"--config", &config, &"--out", &run, &"--set", &"run.max_steps=1"]);
    let out_dir = dir.path().join("exports");
    std::fs::create_dir(&out_dir).unwrap();
    let listing = || {
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .chain(std::fs::read_dir(&out_dir).unwrap())
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        names
    };
    let before = listing();
    let wrong_name = dir.path().join("d2.pth");
    for (to, out, want) in [
        ("torchvision", &out_dir, "is a directory"),
        ("detectron2", &out_dir, "is a directory"),
        ("detectron2", &wrong_name, "*.pkl"),
    ] {
        let res = crate::cli::run(&[&"export", &run, &"--to", &to, &"--out", out]);
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(2), "{to} {}: {stderr}", out.display());
        assert!(stderr.contains(want) && stderr.contains(&*out.to_string_lossy()), "{stderr}");
        assert!(!stderr.contains("Traceback"), "{stderr}");
        assert_eq!(listing(), before, "nothing written for {to} {}", out.display());
    }
}

#[test]
fn export_errors_name_the_checkpoint() {
    let dir = TempDir::new("export-err");
    let out = crate::cli::run(&[
        &"export",
        &dir.path(),
        &"--to",
        &"torchvision",
        &"--out",
        &dir.path().join("x.pth"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("neither a checkpoint"), "{stderr}");
}
