//! RegionCL-M and MoCo v2 (METHOD.md 4.2, 4.6; paper Section 3.2, <https://arxiv.org/abs/2111.12309>).
//!
//! One iteration, in the official order:
//! 1. colour-augment both views on the device; build the composite of the query view `im_q` from
//!    the plan's pixel box and pairing `pi`;
//! 2. `q = l2n(g_q(avgpool(f_q(im_q))))`; `F = f_q(composite)` (a second, separate BN batch), mask
//!    pooling gives canvas `a` and paste `b`, `za, zb = l2n(g_q([a; b]))`;
//! 3. no grad: EMA of the key encoder (trainable parameters only), then shuffle the key batch,
//!    `k = l2n(g_k(avgpool(f_k(im_k[idx]))))`, unshuffle;
//! 4. fp32 head: `L = L_inst(q, k, Q) + L_region(c, p, k, Q)` with the detached intra negatives;
//! 5. backward, SGD, then enqueue `k` (after the backward, which needs the pre-enqueue queue: the
//!    same numbers as MoCo's clone-then-enqueue, without the 32 MB clone).
//!
//! Every random choice is keyed: the box, pairing and colour parameters come with the input; the
//! key shuffle is a permutation keyed by `(seed, step)`. Resume is therefore exact.

use tch::{Kind, Tensor};

use crate::bn::BnMode;
use crate::config::Config;
use crate::ema;
use crate::error::{Error, Result};
use crate::gpu_augment::{ColourOptions, colour_batch};
use crate::input::StepInput;
use crate::loss::{RegionQueries, RegionTerms, instance_loss, region_loss};
use crate::model::{Encoder, l2_normalize};
use crate::optim::Sgd;
use crate::queue::Queue;
use crate::rng::KeyedRng;
use crate::runtime::Runtime;
use crate::shim::AutocastGuard;
use crate::swap::{composite, mask_pool};

/// Key of the shuffle-BN permutation stream.
const SHUFFLE_STREAM: u64 = 0x5348_5546;

/// The losses of one step, read back to the host.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLosses {
    /// `loss_inst + loss_region`.
    pub loss: f64,
    /// Eq. 1.
    pub loss_inst: f64,
    /// Eq. 2 (0 for MoCo v2).
    pub loss_region: f64,
}

impl StepLosses {
    /// Whether every value is finite.
    pub fn is_finite(&self) -> bool {
        self.loss.is_finite() && self.loss_inst.is_finite() && self.loss_region.is_finite()
    }
}

/// Query encoder, momentum encoder and queue: RegionCL-M, or MoCo v2 with the region terms off.
#[derive(Debug)]
pub struct MomentumContrast {
    /// Query encoder (f_q, g_q).
    pub encoder_q: Encoder,
    /// Key encoder (f_k, g_k), an EMA copy; never receives gradients.
    pub encoder_k: Encoder,
    /// Negative keys.
    pub queue: Queue,
    rt: Runtime,
    terms: RegionTerms,
    tau: f64,
    momentum: f64,
    bn: BnMode,
    shuffle_keys: bool,
    seed: u64,
}

impl MomentumContrast {
    /// Builds both encoders and the queue. Initialisation draws from libtorch's default generator
    /// after `tch::manual_seed(config.seed)`; the key encoder is then an exact copy.
    ///
    /// # Errors
    /// A libtorch failure.
    pub fn new(config: &Config, rt: Runtime) -> Result<Self> {
        let spec = config.resnet_spec();
        let hidden = if config.model.proj_hidden > 0 {
            config.model.proj_hidden
        } else {
            spec.feature_dim()
        };
        let dim = config.model.proj_dim;
        tch::manual_seed(config.seed as i64);
        let encoder_q = Encoder::new(spec, hidden, dim, rt.device, rt.channels_last)?;
        let mut encoder_k = Encoder::new(spec, hidden, dim, rt.device, rt.channels_last)?;
        encoder_k.store().copy_from(encoder_q.store())?;
        encoder_k.store_mut().freeze();
        let queue = Queue::new(dim, config.moco.queue_size, rt.device);
        Ok(Self {
            encoder_q,
            encoder_k,
            queue,
            rt,
            terms: config.region_terms(),
            tau: config.moco.tau,
            momentum: config.moco.momentum,
            bn: BnMode::train(config.moco.bn_splits, config.moco.bn_impl),
            shuffle_keys: config.moco.shuffle_keys,
            seed: config.seed,
        })
    }

    /// The runtime it was built for.
    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// The optimiser over the query encoder (one group, names `encoder_q.*`).
    pub fn optimizer(&self, config: &Config) -> Sgd {
        let mut sgd = Sgd::new(config.optim.momentum, true);
        sgd.add_group(self.encoder_q.store(), "encoder_q.", config.optim.weight_decay, 1.0, None);
        sgd
    }

    fn autocast(&self, enabled: bool) -> Result<Option<AutocastGuard>> {
        self.rt.autocast.map(|kind| AutocastGuard::new(self.rt.device, kind, enabled)).transpose()
    }

    /// Keys of the (colour-augmented) key view through the key encoder, with shuffle-BN: a keyed
    /// random permutation before the forward, its inverse after.
    ///
    /// # Shapes
    /// `im_k: [B, 3, H, W]` -> `[B, dim]` unit rows (fp32).
    pub fn keys(&self, im_k: &Tensor, step: u64, mode: BnMode) -> Tensor {
        tch::no_grad(|| {
            let b = im_k.size()[0];
            if !self.shuffle_keys {
                return l2_normalize(&self.encoder_k.embed(im_k, mode));
            }
            let perm = KeyedRng::new(&[self.seed, step, SHUFFLE_STREAM]).permutation(b as usize);
            let idx = crate::runtime::upload(&Tensor::from_slice(&perm), im_k.device());
            let inv = idx.argsort(0, false);
            let k = l2_normalize(&self.encoder_k.embed(&im_k.index_select(0, &idx), mode)); // [B, dim]
            k.index_select(0, &inv)
        })
    }

    /// Colour-augments the views of `input` on the device.
    ///
    /// # Errors
    /// Bad shapes or parameters.
    pub fn views(&self, input: &StepInput) -> Result<(Tensor, Tensor)> {
        input.validate()?;
        let opts = ColourOptions {
            flip: !input.flipped,
            channels_last: self.rt.channels_last,
            ..ColourOptions::default()
        };
        let mut out = Vec::with_capacity(2);
        for v in 0..2 {
            // Non-blocking when the host tensor is pinned; the host memory lives in `input` until
            // the step's loss is read back.
            let px = input.views[v].to_device_(self.rt.device, Kind::Uint8, true, false);
            out.push(colour_batch(&px, &input.params[v], &opts)?);
        }
        let im_k = out.pop().expect("two views");
        Ok((out.pop().expect("two views"), im_k))
    }

    /// The loss terms of one step (graph attached to the query encoder), and the keys to enqueue.
    /// Runs the EMA update of the key encoder.
    ///
    /// # Shapes
    /// `im_q, im_k: [B, 3, H, W]` normalised -> `(loss_inst, loss_region, k: [B, dim])`.
    ///
    /// # Errors
    /// A missing or invalid swap box / pairing when the region branch is on.
    pub fn losses(
        &self,
        input: &StepInput,
        im_q: &Tensor,
        im_k: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, _, h, w) = im_q.size4()?;
        if b % self.bn.splits != 0 {
            return Err(Error::Input(format!(
                "batch {b} not divisible into {} BN groups",
                self.bn.splits
            )));
        }
        if self.queue.len() % b != 0 {
            return Err(Error::Input(format!(
                "queue {} is not a multiple of batch {b}",
                self.queue.len()
            )));
        }
        let (q, region) = {
            let _ac = self.autocast(true)?;
            let fq = self.encoder_q.features(im_q, self.bn); // [B, D, G, G]
            let q = l2_normalize(&self.encoder_q.project(&fq.mean_dim(
                [2, 3].as_slice(),
                false,
                Kind::Float,
            )));
            let region = if self.terms.any() {
                let (swap, pairing) = match (&input.swap, &input.pairing) {
                    (Some(s), Some(p)) => (s, p),
                    _ => {
                        return Err(Error::Input(
                            "region branch on, but no swap box / pairing".into(),
                        ));
                    }
                };
                let (_, _, gh, gw) = fq.size4()?;
                swap.validate(h, w, gh, gw)?;
                let pi = pairing.tensor(self.rt.device);
                let comp = composite(im_q, &pi, &swap.pixel); // [B, 3, H, W]
                let f = self.encoder_q.features(&comp, self.bn); // [B, D, G, G]
                let (a, bb) = mask_pool(&f, &swap.cells); // [B, D] each
                let z = l2_normalize(&self.encoder_q.project(&Tensor::cat(&[a, bb], 0))); // [2B, dim]
                let (za, zb) = (z.narrow(0, 0, b), z.narrow(0, b, b));
                Some(RegionQueries::new(&za, &zb, &pi))
            } else {
                None
            };
            tch::no_grad(|| {
                ema::momentum_update(self.encoder_k.store(), self.encoder_q.store(), self.momentum)
            })?;
            (q, region)
        };
        let k = {
            let _ac = self.autocast(true)?;
            self.keys(im_k, input.step, self.bn)
        };
        let _fp32 = self.autocast(false)?;
        let queue = self.queue.keys(); // [dim, K], written only after the backward
        let loss_inst = instance_loss(&q, &k, queue, self.tau);
        let loss_region = match &region {
            Some(r) => region_loss(r, &k, queue, self.tau, self.terms),
            None => Tensor::zeros([], (Kind::Float, self.rt.device)),
        };
        Ok((loss_inst, loss_region, k))
    }

    /// One full training step at learning rate `lr`: views, losses, backward, SGD, enqueue. Reads
    /// the losses back (a device sync), after which the input's host memory is released.
    ///
    /// # Errors
    /// Bad input, or a libtorch failure.
    pub fn step(&mut self, input: StepInput, sgd: &mut Sgd, lr: f64) -> Result<StepLosses> {
        let (im_q, im_k) = self.views(&input)?;
        let (loss_inst, loss_region, k) = self.losses(&input, &im_q, &im_k)?;
        let loss = &loss_inst + &loss_region;
        sgd.zero_grad();
        loss.f_backward()?;
        sgd.step(lr)?;
        self.queue.enqueue(&k)?;
        let out = StepLosses {
            loss: loss.double_value(&[]),
            loss_inst: loss_inst.double_value(&[]),
            loss_region: loss_region.double_value(&[]),
        };
        drop(input);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bn::SplitBnImpl;
    use crate::input::BatchSource;
    use crate::source::SyntheticSource;

    pub(crate) fn tiny_config() -> Config {
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
            &[],
        )
        .unwrap()
    }

    /// METHOD.md 11.3 #10: in eval mode, shuffle -> forward -> unshuffle equals a plain forward.
    #[test]
    fn shuffle_bn_round_trip_in_eval() {
        let config = tiny_config();
        let m = MomentumContrast::new(&config, Runtime::cpu()).unwrap();
        let x = Tensor::randn([8, 3, 32, 32], (Kind::Float, tch::Device::Cpu));
        let shuffled = m.keys(&x, 3, BnMode::eval());
        let plain = tch::no_grad(|| l2_normalize(&m.encoder_k.embed(&x, BnMode::eval())));
        assert!(shuffled.allclose(&plain, 1e-5, 1e-6, false));
        // In train mode with split BN the shuffle changes the groups, hence the keys.
        let t = m.keys(&x, 3, BnMode::train(2, SplitBnImpl::Chunked));
        let p = tch::no_grad(|| {
            l2_normalize(&m.encoder_k.embed(&x, BnMode::train(2, SplitBnImpl::Chunked)))
        });
        assert!(!t.allclose(&p, 1e-4, 1e-5, false));
    }

    /// METHOD.md 11.3 #3: with K = 65536, d = 128 a fresh model's first losses lie in [6, 11.2].
    #[test]
    fn first_loss_with_paper_queue_in_range() {
        let mut config = tiny_config();
        config.moco.queue_size = 65536;
        config.model.proj_dim = 128;
        let mut m = MomentumContrast::new(&config, Runtime::cpu()).unwrap();
        let mut sgd = m.optimizer(&config);
        let mut src = SyntheticSource::new(&config);
        src.seek(0).unwrap();
        let l = m.step(src.next_batch().unwrap(), &mut sgd, 0.05).unwrap();
        for v in [l.loss_inst, l.loss_region] {
            assert!((6.0..11.2).contains(&v), "{l:?}");
        }
    }

    #[test]
    fn first_loss_in_range_and_mocov2_has_no_region_term() {
        let config = tiny_config();
        let mut m = MomentumContrast::new(&config, Runtime::cpu()).unwrap();
        let mut sgd = m.optimizer(&config);
        let mut src = SyntheticSource::new(&config);
        src.seek(0).unwrap();
        let l = m.step(src.next_batch().unwrap(), &mut sgd, 0.05).unwrap();
        // Random unit queue of K = 64, tau = 0.2: ln(1 + 64 e^{0.0977... for d = 16} e^{-s/tau}).
        assert!(l.is_finite() && l.loss_inst > 0.5 && l.loss_inst < (65f64).ln() + 0.5, "{l:?}");
        assert!((l.loss - l.loss_inst - l.loss_region).abs() < 1e-5);
        assert_eq!(m.queue.ptr(), 8);
        let mut mc = tiny_config();
        mc.method = crate::config::Method::MocoV2;
        let mut m = MomentumContrast::new(&mc, Runtime::cpu()).unwrap();
        let mut sgd = m.optimizer(&mc);
        let l = m.step(src.next_batch().unwrap(), &mut sgd, 0.05).unwrap();
        assert_eq!(l.loss_region, 0.0);
        assert_eq!(l.loss, l.loss_inst);
    }
}
