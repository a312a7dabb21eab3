//! RegionCL-M and MoCo v2 (docs/method.md 4.2, 4.6; paper Section 3.2,
//! <https://arxiv.org/abs/2111.12309>).
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

use std::collections::HashMap;

use tch::Tensor;

use super::common::{
    Terms, autocast, avg_pool, bn_mode, check_batch, colour_views, contrastive_region_queries,
    optimize, region_pool,
};
use super::{MomentumEncoders, Pretrainer, Scheduled, StepLosses};
use crate::bn::BnMode;
use crate::config::{Config, Method, RegionTerms};
use crate::error::Result;
use crate::input::StepInput;
use crate::loss::{instance_loss, region_loss};
use crate::model::{Encoder, l2_normalize};
use crate::optim::Optimizer;
use crate::queue::Queue;
use crate::runtime::Runtime;

/// Query encoder, momentum encoder and queue: RegionCL-M, or MoCo v2 with the region terms off.
#[derive(Debug)]
pub struct MomentumContrast {
    /// Query and key encoders.
    pub encoders: MomentumEncoders,
    /// Negative keys.
    pub queue: Queue,
    method: Method,
    rt: Runtime,
    terms: RegionTerms,
    tau: f64,
    bn: BnMode,
}

impl MomentumContrast {
    /// Builds both encoders and the queue. Initialisation draws from the keyed stream of
    /// `config.seed` (`init.rs`); the key encoder is then an exact copy.
    ///
    /// # Errors
    /// A libtorch failure.
    pub fn new(config: &Config, rt: Runtime) -> Result<Self> {
        let (encoders, queue) = crate::init::seeded(config.seed, || -> Result<_> {
            let encoders = MomentumEncoders::new(config, &rt)?;
            let queue = Queue::new(config.model.proj_dim, config.moco.queue_size, rt.device);
            Ok((encoders, queue))
        })?;
        Ok(Self {
            encoders,
            queue,
            method: config.method,
            terms: config.region_terms(),
            tau: config.moco.tau,
            bn: bn_mode(config, config.moco.bn_impl, &rt)?,
            rt,
        })
    }

    /// Keys of the (colour-augmented) key view through the key encoder, with shuffle-BN: a keyed
    /// random permutation before the forward, its inverse after
    /// (the momentum encoders' key forward). The keys of every rank, in rank order.
    ///
    /// # Shapes
    /// `im_k: [B, 3, H, W]` -> `[world * B, dim]` unit rows (fp32).
    ///
    /// # Errors
    /// A failed collective.
    pub fn keys(&self, im_k: &Tensor, step: u64, mode: BnMode) -> Result<Tensor> {
        let mut out = self
            .encoders
            .key_forward(im_k, step, |enc, x| vec![l2_normalize(&enc.embed(x, mode))])?;
        Ok(out.pop().expect("one output"))
    }

    /// The loss terms of one step (graph attached to the query encoder), and the keys to enqueue
    /// (every rank's). Runs the EMA update of the key encoder.
    ///
    /// # Shapes
    /// `im_q, im_k: [B, 3, H, W]` normalised -> keys `[world * B, dim]`.
    fn losses(&self, input: &StepInput, im_q: &Tensor, im_k: &Tensor) -> Result<(Terms, Tensor)> {
        let world = self.encoders.world();
        check_batch(im_q.size()[0], self.bn.splits, world, &[self.queue.len()])?;
        let enc_q = &self.encoders.encoder_q;
        let (q, region) = {
            let _ac = autocast(&self.rt, true)?;
            let fq = enc_q.features(im_q, self.bn); // [B, D, G, G]
            let q = l2_normalize(&enc_q.project_with(&avg_pool(&fq), self.bn)); // [B, dim]
            let region = if self.terms.any() {
                let pool = region_pool(enc_q, im_q, input, (self.bn, None), &self.rt)?;
                Some(contrastive_region_queries(&pool, |v| enc_q.project_with(v, self.bn)))
            } else {
                None
            };
            self.encoders.momentum_update()?;
            (q, region)
        };
        let k_all = {
            let _ac = autocast(&self.rt, true)?;
            self.keys(im_k, input.step, self.bn)?
        };
        let k = self.encoders.local(&k_all); // [B, dim]
        let _fp32 = autocast(&self.rt, false)?;
        let queue = self.queue.keys(); // [dim, K], written only after the backward
        let inst = instance_loss(&q, &k, queue, self.tau);
        let region = region.map(|r| (region_loss(&r, &k, queue, self.tau, self.terms), 1.0));
        Ok((Terms::new((inst, 1.0), None, region), k_all))
    }
}

impl Pretrainer for MomentumContrast {
    fn method(&self) -> Method {
        self.method
    }

    fn runtime(&self) -> &Runtime {
        &self.rt
    }

    fn online_encoder(&self) -> &Encoder {
        &self.encoders.encoder_q
    }

    fn optimizer(&self, config: &Config) -> Optimizer {
        self.encoders.optimizer(config)
    }

    fn step(&mut self, input: StepInput, opt: &mut Optimizer, at: Scheduled) -> Result<StepLosses> {
        let (im_q, im_k) = colour_views(&self.rt, &input)?;
        let (terms, k) = self.losses(&input, &im_q, &im_k)?;
        optimize(&terms.total, opt, at.lr)?;
        // After the backward, which needs the pre-enqueue queue: the same numbers as MoCo's
        // clone-then-enqueue, without the 32 MB clone.
        self.queue.enqueue(&k)?;
        let out = terms.read();
        drop(input);
        Ok(out)
    }

    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut tensors = self.encoders.export();
        tensors.extend(self.queue.export("queue"));
        tensors
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.encoders.load(tensors)?;
        self.queue.load_named(tensors, "queue")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SplitBnImpl;
    use crate::input::BatchSource;
    use crate::method::tests::tiny_config;
    use crate::source::SyntheticSource;
    use tch::Kind;

    /// docs/method.md 11.3 #10: in eval mode, shuffle -> forward -> unshuffle equals a plain
    /// forward.
    #[test]
    fn shuffle_bn_round_trip_in_eval() {
        let config = tiny_config(Method::RegionClm);
        let m = MomentumContrast::new(&config, Runtime::cpu()).unwrap();
        let x = Tensor::randn([8, 3, 32, 32], (Kind::Float, tch::Device::Cpu));
        let shuffled = m.keys(&x, 3, BnMode::eval()).unwrap();
        let plain = tch::no_grad(|| l2_normalize(&m.encoders.encoder_k.embed(&x, BnMode::eval())));
        assert!(shuffled.allclose(&plain, 1e-5, 1e-6, false));
        // In train mode with split BN the shuffle changes the groups, hence the keys.
        let t = m.keys(&x, 3, BnMode::train(2, SplitBnImpl::Chunked)).unwrap();
        let p = tch::no_grad(|| {
            l2_normalize(&m.encoders.encoder_k.embed(&x, BnMode::train(2, SplitBnImpl::Chunked)))
        });
        assert!(!t.allclose(&p, 1e-4, 1e-5, false));
    }

    /// docs/method.md 11.3 #3: with K = 65536, d = 128 a fresh model's first losses lie in
    /// [6, 11.2].
    #[test]
    fn first_loss_with_paper_queue_in_range() {
        let mut config = tiny_config(Method::RegionClm);
        config.moco.queue_size = 65536;
        config.model.proj_dim = 128;
        let mut m = MomentumContrast::new(&config, Runtime::cpu()).unwrap();
        let mut opt = m.optimizer(&config);
        let mut src = SyntheticSource::new(&config);
        src.seek(0).unwrap();
        let l = m.step(src.next_batch().unwrap(), &mut opt, Scheduled::at_lr(0.05)).unwrap();
        for v in [l.loss_inst, l.loss_region] {
            assert!((6.0..11.2).contains(&v), "{l:?}");
        }
    }

    #[test]
    fn first_loss_in_range_and_mocov2_has_no_region_term() {
        let config = tiny_config(Method::RegionClm);
        let mut m = MomentumContrast::new(&config, Runtime::cpu()).unwrap();
        let mut opt = m.optimizer(&config);
        let mut src = SyntheticSource::new(&config);
        src.seek(0).unwrap();
        let l = m.step(src.next_batch().unwrap(), &mut opt, Scheduled::at_lr(0.05)).unwrap();
        // Random unit queue of K = 64, tau = 0.2: ln(1 + 64 e^{0.0977... for d = 16} e^{-s/tau}).
        assert!(l.is_finite() && l.loss_inst > 0.5 && l.loss_inst < (65f64).ln() + 0.5, "{l:?}");
        assert!((l.loss - l.loss_inst - l.loss_region).abs() < 1e-5 && l.loss_dense == 0.0);
        assert_eq!(m.queue.ptr(), 8);
        let mc = tiny_config(Method::MocoV2);
        let mut m = MomentumContrast::new(&mc, Runtime::cpu()).unwrap();
        let mut opt = m.optimizer(&mc);
        let l = m.step(src.next_batch().unwrap(), &mut opt, Scheduled::at_lr(0.05)).unwrap();
        assert_eq!(l.loss_region, 0.0);
        assert_eq!(l.loss, l.loss_inst);
    }
}
