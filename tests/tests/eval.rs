//! `regioncl eval knn|linear` on real Fashion-MNIST (a small balanced part of it, converted to
//! shards once per build): the k-NN against an independent numpy implementation on the original
//! PNGs, batch-size invariance of the features (pipeline batches vs the tail rendered outside the
//! pipeline), and both evaluations of a checkpoint next to a randomly initialised network.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use regioncl_trainer::{Config, EvalSet, EvalView, FeatureSource, encode, random_encoder};
use tch::Tensor;

use crate::cli::{TempDir, data_dir, run_ok, train_ok, workspace};

/// Images per class and split of the test subset.
pub const PER_CLASS: usize = 60;

pub fn python() -> PathBuf {
    std::env::var_os("REGIONCL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/bin/python"))
}

/// Fashion-MNIST as an ImageFolder (PER_CLASS images per class and split) and its `train` and
/// `test` shards, made once per build under the target's temporary directory.
pub fn fashion_mnist() -> &'static (PathBuf, PathBuf, PathBuf) {
    static DIRS: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    DIRS.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-fashion-mnist");
        let folder = root.join("imagefolder");
        let (train, test) = (root.join("train"), root.join("test"));
        if !(train.join("manifest.json").is_file() && test.join("manifest.json").is_file()) {
            let _ = std::fs::remove_dir_all(&root);
            let status = Command::new(python())
                .arg(workspace().join("scripts/fashion_mnist_to_imagefolder.py"))
                .arg(data_dir().join("fashion-mnist"))
                .arg(&folder)
                .args(["--per-class", &PER_CLASS.to_string()])
                .status()
                .expect("run python");
            assert!(status.success(), "fashion_mnist_to_imagefolder.py failed");
            for (split, out) in [("train", &train), ("test", &test)] {
                run_ok(&[&"convert", &folder.join(split), out, &"--threads", &"2", &"--quiet"]);
            }
        }
        (folder, train, test)
    })
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("JSON file");
    serde_json::from_str(&text).expect("valid JSON")
}

/// (k, top1, top5) of an `eval knn --json` file.
fn knn_of(v: &serde_json::Value) -> Vec<(u64, f64, f64)> {
    v["knn"]
        .as_array()
        .expect("knn array")
        .iter()
        .map(|a| {
            (a["k"].as_u64().unwrap(), a["top1"].as_f64().unwrap(), a["top5"].as_f64().unwrap())
        })
        .collect()
}

/// The weighted k-NN of the MoCo demo in numpy, on the raw PNGs (gray replicated to RGB,
/// ImageNet-normalised, flattened): prints `{k: top1}`.
const NUMPY_KNN: &str = r#"
import json, os, sys
import numpy as np
from PIL import Image
root, ks, t = sys.argv[1], [int(k) for k in sys.argv[2].split(",")], float(sys.argv[3])
mean = np.array([0.485, 0.456, 0.406], np.float32)
std = np.array([0.229, 0.224, 0.225], np.float32)
def load(split):
    xs, ys = [], []
    for label, c in enumerate(sorted(os.listdir(os.path.join(root, split)))):
        d = os.path.join(root, split, c)
        for f in sorted(os.listdir(d)):
            g = np.asarray(Image.open(os.path.join(d, f)).convert("RGB"), np.float32) / 255.0
            xs.append(((g - mean) / std).transpose(2, 0, 1).ravel())
            ys.append(label)
    x = np.stack(xs)
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.array(ys)
(xb, yb), (xq, yq) = load("train"), load("test")
sim = xq @ xb.T
out = {}
for k in ks:
    idx = np.argsort(-sim, axis=1)[:, :k]
    w = np.exp(np.take_along_axis(sim, idx, 1) / t)
    scores = np.zeros((len(xq), 10))
    for j in range(k):
        np.add.at(scores, (np.arange(len(xq)), yb[idx[:, j]]), w[:, j])
    out[k] = float((scores.argmax(1) == yq).mean())
print(json.dumps(out))
"#;

/// Raw-pixel k-NN through the loader (shards: the PNGs re-encoded as JPEG q95 by convert) agrees
/// with the numpy reference on the original PNGs within JPEG noise, and covers every record.
#[test]
fn knn_pixels_agree_with_a_numpy_reference() {
    let (folder, train, test) = fashion_mnist();
    let dir = TempDir::new("knn-pixels");
    let out = dir.path().join("pixels.json");
    // Batch 64: 600 = 9 x 64 + 24, so the tail path is taken too.
    run_ok(&[
        &"eval",
        &"knn",
        &"--pixels",
        &"--crop",
        &"28",
        &"--resize",
        &"28",
        &"--train",
        train,
        &"--test",
        test,
        &"--k",
        &"1,20",
        &"--batch",
        &"64",
        &"--threads",
        &"2",
        &"--json",
        &out,
    ]);
    let v = json(&out);
    let n = 10 * PER_CLASS as u64;
    assert_eq!((v["num_train"].as_u64(), v["num_test"].as_u64()), (Some(n), Some(n)));
    assert_eq!(v["dim"].as_u64(), Some(3 * 28 * 28));
    let ours = knn_of(&v);
    let reference = Command::new(python())
        .args(["-c", NUMPY_KNN])
        .arg(folder)
        .args(["1,20", "0.07"])
        .output()
        .expect("run python");
    assert!(reference.status.success(), "{}", String::from_utf8_lossy(&reference.stderr));
    let r: serde_json::Value = serde_json::from_slice(&reference.stdout).expect("JSON");
    for (k, top1, top5) in ours {
        let want = r[k.to_string()].as_f64().expect("reference accuracy");
        eprintln!("k={k}: loader+knn top-1 {top1:.4}, numpy on PNGs {want:.4}");
        assert!((top1 - want).abs() <= 0.02, "k={k}: {top1} vs numpy {want}");
        assert!(top1 > 0.6 && top5 >= top1, "k={k}: top-1 {top1} top-5 {top5}");
    }
}

fn tiny_config() -> Config {
    Config::load(&workspace().join("configs/tiny_cpu.toml"), &["model.width=8".into()])
        .expect("tiny config")
}

/// The features of a record do not depend on the batch it is in, nor on whether the loader's
/// pipeline or the tail path rendered it.
#[test]
fn features_are_batch_invariant() {
    let (_, _, test) = fashion_mnist();
    let set = EvalSet::open(test).expect("open");
    let enc = random_encoder(&tiny_config(), 3, tch::Device::Cpu).expect("encoder");
    let view = EvalView::for_crop(32);
    let a = encode(&enc, FeatureSource::Backbone, &set, view, 64, 2).expect("batch 64");
    let b = encode(&enc, FeatureSource::Backbone, &set, view, 600, 2).expect("one batch");
    let c = encode(&enc, FeatureSource::Projector, &set, view, 77, 1).expect("projector");
    assert_eq!(a.values.size(), [600, 64]);
    assert_eq!(c.values.size(), [600, 64], "tiny projector dim");
    assert!(a.labels.equal(&b.labels));
    let diff = (&a.values - &b.values).abs().max().double_value(&[]);
    let scale = a.values.abs().max().double_value(&[]);
    assert!(diff <= 1e-4 * scale.max(1.0), "max diff {diff} (scale {scale})");
}

/// Trains the tiny config for a few steps on the photos; returns the run directory.
pub fn tiny_run(dir: &Path) -> PathBuf {
    let run = dir.join("run");
    run_ok(&[
        &"train",
        &"--config",
        &workspace().join("configs/tiny_cpu.toml"),
        &"--out",
        &run,
        &"--set",
        &"model.width=8",
        &"--set",
        &"run.max_steps=4",
    ]);
    run
}

/// `regioncl eval COMMAND --checkpoint RUN --train ... --test ...` on the Fashion-MNIST shards with 2
/// loader threads and `extra`; its stdout.
fn eval_checkpoint(command: &str, run: &Path, extra: &[&dyn AsRef<OsStr>]) -> String {
    let (_, train, test) = fashion_mnist();
    let mut args: Vec<&dyn AsRef<OsStr>> = vec![
        &"eval",
        &command,
        &"--checkpoint",
        &run,
        &"--train",
        train,
        &"--test",
        test,
        &"--threads",
        &"2",
    ];
    args.extend_from_slice(extra);
    run_ok(&args)
}

/// `eval knn` and `eval linear` of a checkpoint and of a random network of its architecture: sane
/// accuracies, the linear probe's schedule and report.
#[test]
fn knn_and_linear_on_a_checkpoint() {
    let dir = TempDir::new("eval-ckpt");
    let run = tiny_run(dir.path());
    for (tag, extra) in [("learned", None), ("random", Some("--random-init"))] {
        let out = dir.path().join(format!("{tag}.json"));
        let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"--json", &out];
        args.extend(extra.as_ref().map(|e| e as &dyn AsRef<OsStr>));
        let stdout = eval_checkpoint("knn", &run, &args);
        assert!(stdout.contains("k=20") && stdout.contains("k=200"), "{stdout}");
        let v = json(&out);
        assert_eq!(v["dim"].as_u64(), Some(64), "width 8 ResNet-18: 8 * 8 channels");
        for (k, top1, top5) in knn_of(&v) {
            assert!(top1 > 0.3 && top1 <= top5 && top5 <= 1.0, "{tag} k={k}: {top1} {top5}");
        }
    }
    let out = dir.path().join("linear.json");
    let stdout = eval_checkpoint(
        "linear",
        &run,
        &[&"--epochs", &"5", &"--no-aug", &"--batch", &"64", &"--json", &out],
    );
    assert!(stdout.contains("best top-1"), "{stdout}");
    let v = json(&out);
    let epochs = v["report"]["epochs"].as_array().expect("epochs");
    assert_eq!(epochs.len(), 5);
    // Milestones at round(0.6 * 5) = 3 and 4: lr 30, 30, 30, 3, 0.3.
    let lrs: Vec<f64> = epochs.iter().map(|e| e["lr"].as_f64().unwrap()).collect();
    assert!((lrs[2] - 30.0).abs() < 1e-9 && (lrs[3] - 3.0).abs() < 1e-9, "{lrs:?}");
    let best = v["report"]["best"]["top1"].as_f64().unwrap();
    // Chance is 0.1; a 4-step network probed for 45 steps on 600 images is far from converged.
    assert!(best > 0.25, "linear probe best top-1 {best}");
    // With augmentation (RandomResizedCrop + flip through the loader): one epoch runs.
    eval_checkpoint("linear", &run, &[&"--epochs", &"1", &"--batch", &"64"]);
}

/// Trains `config` with `sets` for two steps into `dir/name`, then evaluates the checkpoint (k-NN,
/// k-NN of a random network of its architecture, a one-epoch linear probe) and exports its
/// backbone `--to format`; the exported tensors.
fn train_evaluate_export(
    dir: &Path,
    name: &str,
    config: &str,
    sets: &[&str],
    format: &str,
) -> Vec<(String, Tensor)> {
    let run = dir.join(name);
    let sets: Vec<&str> = sets.iter().copied().chain(["run.max_steps=2"]).collect();
    train_ok(&workspace().join("configs").join(config), &run, &sets);
    for extra in [None, Some("--random-init")] {
        let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"--k", &"20", &"--batch=200"];
        args.extend(extra.as_ref().map(|e| e as &dyn AsRef<OsStr>));
        let stdout = eval_checkpoint("knn", &run, &args);
        assert!(stdout.contains("k=20"), "{name} {extra:?}: {stdout}");
    }
    let args: [&dyn AsRef<OsStr>; 4] = [&"--epochs", &"1", &"--no-aug", &"--batch=200"];
    assert!(eval_checkpoint("linear", &run, &args).contains("best top-1"), "{name}: linear");
    let out = dir.join(format!("{name}.safetensors"));
    run_ok(&[&"export", &run, &"--to", &format, &"--out", &out]);
    Tensor::read_safetensors(&out).expect("exported file")
}

/// Issue 12 #1: a checkpoint of every method, SimSiam's and RegionCL-S's (`encoder.*`) included,
/// is evaluated (k-NN, k-NN of a random network of its architecture, linear probe) and exported.
#[test]
fn every_method_checkpoint_evaluates_and_exports() {
    let dir = TempDir::new("eval-methods");
    for method in ["regionclm", "mocov2", "densecl", "regioncld", "simsiam", "regioncls"] {
        let set = format!("method={method}");
        let sets = ["model.width=8", set.as_str()];
        let tensors =
            train_evaluate_export(dir.path(), method, "tiny_cpu.toml", &sets, "torchvision");
        let conv1 = tensors.iter().find(|(n, _)| n == "conv1.weight").expect("conv1.weight");
        assert_eq!(conv1.1.size(), [8, 3, 3, 3], "{method}: small stem at width 8");
        assert!(tensors.iter().all(|(n, _)| !n.starts_with("fc.")), "{method}");
    }
}

/// The same for the transformers of the MoBY methods (Swin with MoBY, ViT with RegionCL+MoBY):
/// their k-NN reads the pooled token map or the class token, and they export `--to timm`.
#[test]
fn moby_checkpoints_evaluate_and_export_to_timm() {
    let dir = TempDir::new("eval-moby");
    for (method, arch, key) in [
        ("moby", "swin_nano", "patch_embed.proj.weight"),
        ("regionclmoby", "vit_nano", "cls_token"),
    ] {
        let (m, a) = (format!("method={method}"), format!("model.arch={arch}"));
        let tensors =
            train_evaluate_export(dir.path(), method, "moby_tiny_cpu.toml", &[&m, &a], "timm");
        assert!(tensors.iter().any(|(n, _)| n == key), "{method} {arch}: no {key}");
        assert!(tensors.iter().all(|(n, _)| !n.starts_with("head")), "{method}");
    }
}

/// Issue 12 #7: `regioncl eval knn --json FILE | head -0`: with stdout's reader gone the command
/// writes the JSON file, then exits 0 quietly (no panic); with stderr's reader gone it finishes and
/// prints its results.
#[test]
fn eval_into_a_closed_pipe_exits_0_after_writing_the_json_file() {
    let (_, train, test) = fashion_mnist();
    let dir = TempDir::new("eval-pipe");
    let json_file = dir.path().join("knn.json");
    let eval = || {
        let mut cmd = Command::new(crate::cli::regioncl());
        cmd.args(["eval", "knn", "--pixels", "--crop", "28", "--resize", "28", "--k", "20"]);
        cmd.arg("--train").arg(train).arg("--test").arg(test).arg("--json").arg(&json_file);
        cmd
    };
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = eval().stdout(writer).output().expect("run regioncl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("error"), "{stderr}");
    assert_eq!(knn_of(&json(&json_file)).len(), 1, "the JSON file is written first");
    std::fs::remove_file(&json_file).expect("remove");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = eval().stderr(writer).output().expect("run regioncl");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("k=20"));
    assert!(json_file.is_file());
}
