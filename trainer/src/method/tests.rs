//! Every method through the train loop on the real photos (`make data`), with the tiny CPU config
//! and `method=...`: the loss falls (RegionCL-M in bf16 with channels_last too), and N steps +
//! resume + N steps equal 2N steps to the last bit. Every method's step on every test runtime (fp32
//! and bf16 channels_last, on the CPU and on CUDA when present); a bf16 channels_last run's
//! evaluation and export.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use super::{Scheduled, StepLosses, build_pretrainer};
use crate::bn::BnMode;
use crate::config::{Config, Method};
use crate::error::Result;
use crate::input::BatchSource;
use crate::run_dir::RunStart;
use crate::runtime::{Runtime, test_runtimes};
use crate::shim::{AutocastGuard, is_channels_last};
use crate::source::{LoaderSource, SyntheticSource};
use crate::train::{TrainSummary, Trainer};

/// The overrides that put a train-loop test in bf16 with channels_last, on the CPU.
pub(crate) const BF16_CPU: [&str; 2] = ["run.precision=bf16", "run.channels_last=true"];

/// How far a step's losses may be from the fp32 CPU step's on the same weights and batch.
///
/// bf16 keeps 8 significant bits (a relative rounding of 2^-9 per value): the encoders' features
/// and embeddings come out about 1% off, and the InfoNCE logits (cosines over tau = 0.2) carry
/// that into the losses. CUDA in fp32 runs its convolutions in TF32 (10 bits, libtorch's default)
/// and reduces in other orders.
fn loss_tolerance(rt: &Runtime) -> f64 {
    match (rt.autocast, rt.device) {
        (Some(_), _) => 0.1,
        (None, Device::Cuda(_)) => 0.02,
        (None, _) => 0.0,
    }
}

fn assert_losses_close(a: &StepLosses, b: &StepLosses, tol: f64, what: &str) {
    let pairs = [
        (a.loss, b.loss),
        (a.loss_inst, b.loss_inst),
        (a.loss_region, b.loss_region),
        (a.loss_dense, b.loss_dense),
    ];
    for (x, y) in pairs {
        assert!((x - y).abs() <= tol, "{what}: {a:?} vs {b:?} (tolerance {tol})");
    }
}

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

/// Trains `config` on the photos into `dir`: a new run, or a resume of the run there.
pub(crate) fn run(config: &Config, dir: &Path, resume: bool) -> Result<TrainSummary> {
    let mut source = LoaderSource::new(config)?;
    let start = if resume { RunStart::Resume } else { RunStart::New };
    Trainer::new(config, dir).start(start).run(&mut source)
}

/// Runs 60 steps (with the overrides `extra`); returns the mean total loss over `early` and over
/// steps 40-59, printing a few points of the curve.
fn curve(method: Method, extra: &[&str], early: std::ops::Range<usize>) -> (f64, f64) {
    let dir = TempDir::new(&format!("falls-{}-{}", method.as_str(), extra.len()));
    let mut sets = vec!["run.max_steps=60", "run.checkpoint_every=0"];
    sets.extend(extra);
    let config = tiny_photos(method, &sets);
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
    let (full_queue, end) = curve(Method::DenseCl, &[], 8..20);
    assert!(end < full_queue - 0.2, "densecl: {full_queue} -> {end}");
}

#[test]
fn regioncld_loss_falls_on_real_photos() {
    let (full_queue, end) = curve(Method::RegionCld, &[], 8..20);
    assert!(end < full_queue - 0.3, "regioncld: {full_queue} -> {end}");
}

/// SimSiam and RegionCL-S: the negative cosine heads from about 0 towards -1 (per term).
#[test]
fn simsiam_loss_falls_on_real_photos() {
    let (start, end) = curve(Method::SimSiam, &[], 0..10);
    assert!(end < start - 0.2 && end >= -1.0, "simsiam: {start} -> {end}");
}

#[test]
fn regioncls_loss_falls_on_real_photos() {
    let (start, end) = curve(Method::RegionCls, &[], 0..10);
    assert!(end < start - 0.3 && end >= -2.0, "regioncls: {start} -> {end}");
}

/// RegionCL-M in bf16 with channels_last on the CPU learns as in fp32 (`train::tests::
/// loss_falls_on_real_photos`): the loss rises while the queue fills, then falls.
#[test]
fn regionclm_bf16_loss_falls_on_real_photos() {
    let (full_queue, end) = curve(Method::RegionClm, &BF16_CPU, 8..20);
    assert!(end < full_queue - 0.3, "regionclm bf16: {full_queue} -> {end}");
}

/// N steps, resume, N more steps = 2N uninterrupted, to the last bit, for every method (in bf16
/// with channels_last: `tests/tests/train.rs`, one process per run).
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

/// Every method's first two steps on every test runtime, on the same synthetic batches from the
/// same initial weights and queues: finite losses within [`loss_tolerance`] of the fp32 CPU step; in bf16 the
/// backbone's activations are bf16 and its conv weights channels_last, and the checkpoint tensors
/// stay fp32 and contiguous.
#[test]
fn every_method_steps_on_every_runtime() {
    for method in Method::ALL {
        let config = tiny_config(method);
        // One initial state for every runtime (the default generator is shared with other tests).
        let init: HashMap<String, Tensor> = build_pretrainer(&config, Runtime::cpu())
            .unwrap()
            .state_tensors()
            .into_iter()
            .collect();
        let mut reference: Option<(StepLosses, StepLosses)> = None;
        for rt in test_runtimes() {
            let what = format!("{} on {}", method.as_str(), rt.describe());
            let mut m = build_pretrainer(&config, rt).unwrap();
            m.load_state(&init).unwrap();
            let mut sgd = m.optimizer(&config);
            let mut src = SyntheticSource::new(&config);
            src.seek(0).unwrap();
            let first =
                m.step(src.next_batch().unwrap(), &mut sgd, Scheduled::at_lr(0.05)).unwrap();
            let second =
                m.step(src.next_batch().unwrap(), &mut sgd, Scheduled::at_lr(0.05)).unwrap();
            assert!(first.is_finite() && second.is_finite(), "{what}: {first:?} {second:?}");
            let enc = m.online_encoder();
            let conv = enc.store().get("0.conv1.weight").unwrap();
            assert_eq!(is_channels_last(conv), rt.channels_last, "{what}: conv weight layout");
            assert_eq!(conv.kind(), Kind::Float, "{what}: weights stay fp32");
            let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, rt.device));
            let f = {
                let _ac = rt.autocast.map(|k| AutocastGuard::new(rt.device, k, true).unwrap());
                tch::no_grad(|| enc.features(&x, BnMode::eval()))
            };
            assert_eq!(f.kind(), rt.autocast.unwrap_or(Kind::Float), "{what}: activations");
            for (name, t) in m.state_tensors() {
                assert!(t.device() == Device::Cpu && t.is_contiguous(), "{what}: {name}");
                assert!(!t.is_floating_point() || t.kind() == Kind::Float, "{what}: {name}");
            }
            match &reference {
                None => reference = Some((first, second)),
                Some((r1, r2)) => {
                    let tol = loss_tolerance(&rt);
                    assert_losses_close(&first, r1, tol, &format!("{what}, step 0"));
                    assert_losses_close(&second, r2, 2.0 * tol, &format!("{what}, step 1"));
                }
            }
            eprintln!("{what}: {first:?}, {second:?}");
        }
    }
}

/// A run in bf16 with channels_last on the CPU checkpoints and exports plain fp32 tensors: the
/// backbone written from the live (channels_last) model is the checkpoint's, contiguous; the
/// encoder loaded for evaluation gives the same features with NCHW and with channels_last weights,
/// and in a bf16 region features within bf16's rounding of the fp32 ones.
#[test]
fn bf16_channels_last_run_evaluates_and_exports() {
    let dir = TempDir::new("bf16-eval-export");
    let mut sets = vec!["run.max_steps=2", "run.checkpoint_every=2"];
    sets.extend(BF16_CPU);
    run(&tiny_photos(Method::RegionClm, &sets), &dir.0, false).unwrap();

    let read = |file: &Path| -> HashMap<String, Tensor> {
        Tensor::read_safetensors(file).unwrap().into_iter().collect()
    };
    let exported = dir.0.join("exported.safetensors");
    crate::export::export(&dir.0, crate::export::ExportFormat::Torchvision, &exported).unwrap();
    let (live, saved) = (read(&dir.0.join("backbone.safetensors")), read(&exported));
    assert_eq!(live.len(), saved.len());
    for (name, t) in &saved {
        let l = &live[name];
        assert!(l.is_contiguous() && l.kind() == t.kind() && l.equal(t), "{name}");
    }

    let (nchw, config) = crate::eval::load_encoder(&dir.0, Device::Cpu).unwrap();
    let cl = crate::model::Encoder::for_config(&config, Device::Cpu, true).unwrap();
    for e in cl.store().entries() {
        let src = nchw.store().get(&e.name).unwrap();
        tch::no_grad(|| e.tensor.shallow_clone().copy_(src));
    }
    assert!(is_channels_last(cl.store().get("0.conv1.weight").unwrap()));
    tch::manual_seed(9);
    let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    let pooled = |enc: &crate::model::Encoder, bf16: bool| {
        let _ac = bf16.then(|| AutocastGuard::new(Device::Cpu, Kind::BFloat16, true).unwrap());
        tch::no_grad(|| {
            enc.features(&x, BnMode::eval()).mean_dim([2, 3].as_slice(), false, Kind::Float)
        })
    };
    let (f, f_cl, f_bf16) = (pooled(&nchw, false), pooled(&cl, false), pooled(&cl, true));
    assert!(f_cl.allclose(&f, 1e-4, 1e-5, false), "layouts: {}", (&f_cl - &f).abs().max());
    // bf16 activations through the backbone: a percent or so, relative.
    let rel = ((&f_bf16 - &f).norm() / f.norm()).double_value(&[]);
    assert!(rel < 0.03, "bf16 features {rel} off");
}
