//! Every method through the train loop on the real photos (`make data`), with the tiny CPU config
//! and `method=...`: the loss falls, and N steps + resume + N steps equal 2N steps to the last bit.

use std::path::{Path, PathBuf};

use crate::config::{Config, Method};
use crate::error::Result;
use crate::source::LoaderSource;
use crate::train::{TrainOptions, TrainSummary, train};

/// A config for unit tests on synthetic pixels: quarter-width ResNet-18, 32 px, batch 8 in two
/// BN groups, 64-key queues, 16-d embeddings.
pub(crate) fn tiny_config(method: Method) -> Config {
    Config::from_toml(
        r#"
        [model]
        arch = "resnet18"
        stem = "small"
        width = 4
        proj_hidden = 32
        proj_dim = 16
        [moco]
        queue_size = 64
        bn_splits = 2
        [region]
        c_lower = 1
        c_upper = 2
        [simsiam]
        pred_hidden = 8
        [optim]
        batch_size = 8
        base_lr = 0.05
        ref_batch = 8
        epochs = 2
        [data]
        source = "synthetic"
        image_size = 32
        steps_per_epoch = 4
        "#,
        &[format!("method={}", method.as_str())],
    )
    .unwrap()
}

/// `configs/tiny_cpu.toml` at width 8 with `method`, on the real photos.
pub(crate) fn tiny_photos(method: Method, sets: &[&str]) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/tiny_cpu.toml");
    let mut all: Vec<String> = vec![
        format!("method={}", method.as_str()),
        "model.width=8".into(),
        "run.log_every=1".into(),
    ];
    all.extend(sets.iter().map(|s| s.to_string()));
    Config::load(&path, &all).unwrap()
}

/// A directory under the system temp dir, removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("regioncl-trainer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Trains `config` on the photos into `dir`.
pub(crate) fn run(config: &Config, dir: &Path, resume: bool) -> Result<TrainSummary> {
    let mut source = LoaderSource::new(config)?;
    let opts = TrainOptions { run_dir: dir.to_path_buf(), resume };
    train(config, &mut source, &opts, &mut |_| {})
}

/// Runs 60 steps; returns the mean total loss over `early` and over steps 40-59, printing a few
/// points of the curve.
fn curve(method: Method, early: std::ops::Range<usize>) -> (f64, f64) {
    let dir = TempDir::new(&format!("falls-{}", method.as_str()));
    let config = tiny_photos(method, &["run.max_steps=60", "run.checkpoint_every=0"]);
    let s = run(&config, &dir.0, false).unwrap();
    assert_eq!(s.losses.len(), 60);
    assert!(s.losses.iter().all(|(_, l)| l.is_finite()));
    let mean = |r: std::ops::Range<usize>| {
        let n = r.len() as f64;
        s.losses[r].iter().map(|(_, l)| l.loss).sum::<f64>() / n
    };
    let points: Vec<String> = [0, 10, 20, 30, 40, 50, 59]
        .iter()
        .map(|&i| {
            let l = s.losses[i].1;
            format!(
                "{i}: {:.3} (inst {:.3} dense {:.3} region {:.3})",
                l.loss, l.loss_inst, l.loss_dense, l.loss_region
            )
        })
        .collect();
    eprintln!("{}: {}", method.as_str(), points.join(", "));
    assert!(dir.0.join("backbone.safetensors").is_file());
    let records = crate::metrics::read_metrics(&dir.0.join("metrics.jsonl")).unwrap().steps;
    assert_eq!(records.len(), 60);
    (mean(early), mean(40..60))
}

/// DenseCL and RegionCL-D: as MoCo, the loss first rises while the queues fill with real keys,
/// then falls.
#[test]
fn densecl_loss_falls_on_real_photos() {
    let (full_queue, end) = curve(Method::DenseCl, 8..20);
    assert!(end < full_queue - 0.2, "densecl: {full_queue} -> {end}");
}

#[test]
fn regioncld_loss_falls_on_real_photos() {
    let (full_queue, end) = curve(Method::RegionCld, 8..20);
    assert!(end < full_queue - 0.3, "regioncld: {full_queue} -> {end}");
}

/// SimSiam and RegionCL-S: the negative cosine heads from about 0 towards -1 (per term).
#[test]
fn simsiam_loss_falls_on_real_photos() {
    let (start, end) = curve(Method::SimSiam, 0..10);
    assert!(end < start - 0.2 && end >= -1.0, "simsiam: {start} -> {end}");
}

#[test]
fn regioncls_loss_falls_on_real_photos() {
    let (start, end) = curve(Method::RegionCls, 0..10);
    assert!(end < start - 0.3 && end >= -2.0, "regioncls: {start} -> {end}");
}

/// N steps, resume, N more steps = 2N uninterrupted, to the last bit, for every method.
#[test]
fn resume_is_exact_for_every_method() {
    for method in [Method::DenseCl, Method::RegionCld, Method::SimSiam, Method::RegionCls] {
        let name = method.as_str();
        let (a, b) =
            (TempDir::new(&format!("resume-a-{name}")), TempDir::new(&format!("resume-b-{name}")));
        let cfg = |n: u64| {
            tiny_photos(method, &[&format!("run.max_steps={n}"), "run.checkpoint_every=3"])
        };
        let full = run(&cfg(6), &a.0, false).unwrap();
        let first = run(&cfg(3), &b.0, false).unwrap();
        let second = run(&cfg(6), &b.0, true).unwrap();
        assert_eq!(second.start_step, 3, "{name}");
        let joined: Vec<_> = first.losses.iter().chain(&second.losses).copied().collect();
        assert_eq!(full.losses, joined, "{name}: resumed run differs");
        let state = crate::checkpoint::read_state(&second.checkpoint.unwrap()).unwrap();
        assert_eq!(state.last, Some(full.losses[5].1), "{name}");
    }
}
