//! MoBY's invariants on the tiny transformer: the loss at uniform logits, the momentum schedule,
//! the stop-gradient through the target, one queue per view, and the region term.

use tch::{Device, Kind, Tensor};

use super::*;
use crate::input::BatchSource;
use crate::method::common::colour_views;
use crate::method::tests::{TempDir, run};
use crate::source::SyntheticSource;

/// A MoBY config on synthetic pixels: the nano Swin at 64 px (a 4x4 token map), batch 8, 32-key
/// queues, 16-d embeddings, AdamW.
pub(crate) fn tiny_moby(method: Method, arch: &str) -> Config {
    let sets: Vec<String> = [
        format!("method={}", method.as_str()),
        format!("model.arch={arch}"),
        "model.proj_hidden=32".into(),
        "model.proj_dim=16".into(),
        "model.drop_path=0.1".into(),
        "moby.pred_hidden=32".into(),
        "moco.queue_size=32".into(),
        "moco.momentum=0.99".into(),
        "moco.shuffle_keys=false".into(),
        "moco.bn_splits=1".into(),
        "region.c_lower=1".into(),
        "region.c_upper=2".into(),
        "optim.optimizer=adamw".into(),
        "optim.decay_all=false".into(),
        "optim.batch_size=8".into(),
        "optim.base_lr=0.001".into(),
        "optim.ref_batch=8".into(),
        "optim.weight_decay=0.05".into(),
        "optim.epochs=2".into(),
        "augment.asymmetric=true".into(),
        "data.source=synthetic".into(),
        "data.image_size=64".into(),
        "data.steps_per_epoch=4".into(),
    ]
    .into();
    Config::from_toml("", &sets).unwrap()
}

fn unit(n: i64, d: i64) -> Tensor {
    l2_normalize(&Tensor::randn([n, d], (Kind::Float, Device::Cpu)))
}

/// Equal logits give ln(K + 1) per direction, 2 ln(K + 1) in all; each view's prediction is
/// scored against the other view's key and queue.
#[test]
fn loss_at_uniform_logits_and_the_view_pairing() {
    let (b, d, kk) = (4, 16, 4096);
    let e = Tensor::zeros([b, d], (Kind::Float, Device::Cpu));
    let _ = e.narrow(1, 0, 1).fill_(1.0);
    let queue = Tensor::zeros([d, kk], (Kind::Float, Device::Cpu));
    let _ = queue.narrow(0, 0, 1).fill_(1.0);
    let l = moby_loss([&e, &e], [&e, &e], [&queue, &queue], 0.2).double_value(&[]);
    assert!((l - 2.0 * (4097f64).ln()).abs() < 1e-4, "{l}");
    // p1 matches k2 and Q2 is orthogonal to it: that direction is near 0; p2 against k1 (which
    // it does not match) and a Q1 of copies of p2 stays near ln(K + 1) + 1 / tau.
    tch::manual_seed(0);
    let (p1, p2) = (unit(b, d), unit(b, d));
    let k2 = p1.copy();
    let k1 = -p2.copy();
    let q2 = Tensor::zeros([d, kk], (Kind::Float, Device::Cpu)); // q . Q2 = 0
    let q1 = p2.get(0).unsqueeze(1).repeat([1, kk]);
    let l = moby_loss([&p1, &p2], [&k1, &k2], [&q1, &q2], 0.2).double_value(&[]);
    let first = (1.0 + kk as f64 * (-5f64).exp()).ln(); // positive cosine 1, negatives 0
    let second = instance_loss(&p2, &k1, &q1, 0.2).double_value(&[]);
    assert!((l - first - second).abs() < 1e-4, "{l} vs {first} + {second}");
    assert!(second > (kk as f64).ln() + 5.0 && first < 3.5, "{first} {second}");
}

/// The official ramp: m0 at the start, halfway to 1 at half the run, 1 at the end, rising.
#[test]
fn momentum_schedule_values() {
    assert_eq!(moby_momentum(0.99, 0.0), 0.99);
    assert!((moby_momentum(0.99, 0.5) - 0.995).abs() < 1e-12);
    assert!((moby_momentum(0.99, 1.0) - 1.0).abs() < 1e-12);
    // k = 1 of K = 4: 1 - 0.01 (cos(pi / 4) + 1) / 2.
    let want = 1.0 - 0.01 * ((std::f64::consts::PI / 4.0).cos() + 1.0) / 2.0;
    assert!((moby_momentum(0.99, 0.25) - want).abs() < 1e-15);
    let m: Vec<f64> = (0..=10).map(|i| moby_momentum(0.99, f64::from(i) / 10.0)).collect();
    assert!(m.windows(2).all(|w| w[0] < w[1]), "{m:?}");
}

/// One step: the target moves only by the EMA at the scheduled momentum (no gradient reaches
/// it), and each queue receives its own view's target keys.
#[test]
fn stop_gradient_ema_and_one_queue_per_view() {
    let config = tiny_moby(Method::Moby, "swin_nano");
    let mut m = Moby::new(&config, Runtime::cpu()).unwrap();
    let mut opt = m.optimizer(&config);
    let mut src = SyntheticSource::new(&config);
    src.seek(0).unwrap();
    // Make the target differ from the online encoder so that the EMA is visible.
    tch::no_grad(|| {
        for e in m.encoders.encoder_k.store().params() {
            let mut t = e.tensor.shallow_clone();
            t += 0.01;
        }
    });
    let snapshot = |s: &crate::params::ParamStore| -> Vec<Tensor> {
        s.params().map(|e| e.tensor.detach().copy()).collect()
    };
    let (q_before, k_before) =
        (snapshot(m.encoders.encoder_q.store()), snapshot(m.encoders.encoder_k.store()));
    let progress = 0.25;
    let l = m.step(src.next_batch().unwrap(), &mut opt, Scheduled { lr: 1e-3, progress }).unwrap();
    assert!(l.is_finite() && l.loss_region == 0.0 && l.loss == l.loss_inst, "{l:?}");
    let mm = moby_momentum(0.99, progress);
    for ((e, q0), k0) in m.encoders.encoder_k.store().params().zip(&q_before).zip(&k_before) {
        assert!(!e.tensor.requires_grad() && !e.tensor.grad().defined(), "{}", e.name);
        let want = k0 * mm + q0 * (1.0 - mm);
        assert!(e.tensor.allclose(&want, 1e-6, 1e-7, false), "{}: not the EMA", e.name);
    }
    let moved =
        m.encoders.encoder_q.store().params().zip(&q_before).any(|(e, q0)| !e.tensor.equal(q0));
    assert!(moved, "the optimiser updated the online encoder");
    // The queues hold the target keys of their own view (the target is unchanged since).
    src.seek(0).unwrap();
    let input = src.next_batch().unwrap();
    let (x1, x2) = colour_views(&m.rt, &input).unwrap();
    let bn = m.bn;
    let key = |x: &Tensor| tch::no_grad(|| l2_normalize(&m.encoders.encoder_k.embed(x, bn)));
    for (queue, x) in m.queues.iter().zip([&x1, &x2]) {
        assert_eq!(queue.ptr(), 8);
        let stored = queue.keys().narrow(1, 0, 8).transpose(0, 1);
        assert!(stored.allclose(&key(x), 1e-5, 1e-6, false), "a queue without its view's keys");
    }
    assert!(!m.queues[0].keys().narrow(1, 0, 8).allclose(
        &m.queues[1].keys().narrow(1, 0, 8),
        1e-3,
        1e-3,
        false
    ));
}

/// RegionCL+MoBY on both backbones: the region term is finite, weighted into the loss, and the
/// checkpoint names are the ones `docs/moby.md` lists.
#[test]
fn region_term_and_checkpoint_names() {
    for arch in ["swin_nano", "vit_nano"] {
        let config = tiny_moby(Method::RegionClMoby, arch);
        let mut m = Moby::new(&config, Runtime::cpu()).unwrap();
        let mut opt = m.optimizer(&config);
        let mut src = SyntheticSource::new(&config);
        src.seek(0).unwrap();
        let l = m.step(src.next_batch().unwrap(), &mut opt, Scheduled::at_lr(1e-3)).unwrap();
        // Unit vectors at tau = 0.2 bound every logit by 5: a term is at most ln(K + 1) + 10.
        assert!(l.loss_inst > 1.0 && l.loss_inst < 2.0 * ((33f64).ln() + 10.0), "{arch}: {l:?}");
        assert!(l.loss_region > 1.0 && l.loss_region < (34f64).ln() + 10.0, "{arch}: {l:?}");
        assert!((l.loss - l.loss_inst - l.loss_region).abs() < 1e-5, "{arch}: {l:?}");
        let names: Vec<String> = m.state_tensors().into_iter().map(|(n, _)| n).collect();
        for want in [
            "encoder_q.0.patch_embed.proj.weight",
            "encoder_q.0.norm.weight",
            "encoder_q.1.linear_hidden.1.weight",
            "encoder_q.1.linear_hidden.2.running_var",
            "encoder_q.1.linear_out.bias",
            "encoder_k.1.linear_out.bias",
            "predictor.linear_out.weight",
            "queue1",
            "queue1_ptr",
            "queue2",
            "queue2_ptr",
        ] {
            assert!(names.iter().any(|n| n == want), "{arch}: {want} missing");
        }
        // Decay on weights only: every no-decay parameter is 1-d, a bias or a position table.
        let groups = opt.groups();
        assert_eq!((groups[0].weight_decay, groups[1].weight_decay), (0.05, 0.0));
    }
}

/// `configs/moby_tiny_cpu.toml` with `method` on the real photos.
fn tiny_photos(method: Method, sets: &[&str]) -> Config {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/moby_tiny_cpu.toml");
    let mut all = vec![format!("method={}", method.as_str()), "run.log_every=1".to_string()];
    all.extend(sets.iter().map(|s| s.to_string()));
    Config::load(&path, &all).unwrap()
}

/// MoBY and RegionCL+MoBY on the nano Swin: the loss rises while the queues fill with real keys,
/// then falls as the encoder learns to tell the photos apart.
#[test]
fn loss_falls_on_real_photos() {
    for method in [Method::Moby, Method::RegionClMoby] {
        let dir = TempDir::new(&format!("falls-{}", method.as_str()));
        let config = tiny_photos(method, &["run.max_steps=60", "run.checkpoint_every=0"]);
        let s = run(&config, &dir.0, false).unwrap();
        assert!(s.losses.iter().all(|(_, l)| l.is_finite()));
        let mean = |r: std::ops::Range<usize>| {
            r.clone().map(|i| s.losses[i].1.loss).sum::<f64>() / r.len() as f64
        };
        let (full_queue, end) = (mean(8..20), mean(40..60));
        eprintln!("{}: steps 8-19 {full_queue:.3}, steps 40-59 {end:.3}", method.as_str());
        // About 0.25 on the photos (a queue of 256 keys: ln 257 = 5.55 per direction).
        assert!(end < full_queue - 0.1, "{}: {full_queue} -> {end}", method.as_str());
        assert!(dir.0.join("backbone.safetensors").is_file());
    }
}

/// N steps, resume, N more steps = 2N uninterrupted, to the last bit (RegionCL+MoBY, so every
/// part runs): AdamW's state, the momentum schedule, both queues and the keyed stochastic depth.
#[test]
fn resume_is_exact() {
    let (a, b) = (TempDir::new("resume-a-regionclmoby"), TempDir::new("resume-b-regionclmoby"));
    let cfg = |n: u64| {
        let max = format!("run.max_steps={n}");
        tiny_photos(Method::RegionClMoby, &[&max, "run.checkpoint_every=3"])
    };
    let full = run(&cfg(6), &a.0, false).unwrap();
    let first = run(&cfg(3), &b.0, false).unwrap();
    let second = run(&cfg(6), &b.0, true).unwrap();
    assert_eq!(second.start_step, 3);
    let joined: Vec<_> = first.losses.iter().chain(&second.losses).copied().collect();
    assert_eq!(full.losses, joined, "the resumed run differs");
}
