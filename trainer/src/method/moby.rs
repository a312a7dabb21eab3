//! MoBY (Xie et al. 2021, <https://arxiv.org/abs/2105.04553>, the official
//! `SwinTransformer/Transformer-SSL`) and RegionCL+MoBY (paper Section 4.4,
//! <https://arxiv.org/abs/2111.12309>); what the paper leaves to its supplementary is chosen in
//! `docs/moby.md`.
//!
//! One iteration:
//! 1. colour-augment both views `x1, x2` (BYOL's asymmetric pair); the online encoder (backbone
//!    with stochastic depth, projector `g`) and the predictor `h` give
//!    `p1 = l2n(h(g(f(x1))))`, `p2 = l2n(h(g(f(x2))))`, each view its own BN batch;
//! 2. RegionCL+MoBY: the composite of `x1`, mask pooling of its final token map gives canvas `a`
//!    and paste `b`, `[a; b]` through `g` and `h` in one batch, normalised: the region queries
//!    `c`, `p` with their intra-image negatives, as RegionCL-M's;
//! 3. no grad: the target encoder (backbone without stochastic depth, projector) follows the
//!    online one by EMA with `m = 1 - (1 - m0) (cos(pi k / K) + 1) / 2` (k the step, K the run's
//!    steps), then gives `k1 = l2n(g'(f'(x1)))`, `k2 = l2n(g'(f'(x2)))`;
//! 4. fp32 head: `L = L(p1, k2, Q2) + L(p2, k1, Q1)` (InfoNCE at `tau`; `Q1`, `Q2` the queues of
//!    the two views' keys), plus `w_r L_region(c, p, k2, Q2)` for RegionCL+MoBY;
//! 5. backward, AdamW, then enqueue `k1` into `Q1` and `k2` into `Q2`.
//!
//! BN (projector and predictor) is SyncBN over the global batch, as the official code. Stochastic
//! depth is keyed by `(seed, step, pass)` and each sample's place in the global batch.

use std::collections::HashMap;

use tch::Tensor;

use super::common::{
    Terms, autocast, bn_mode, check_batch, colour_views, contrastive_region_queries, optimize,
    region_pool,
};
use super::{MomentumEncoders, Pretrainer, Scheduled, StepLosses};
use crate::bn::BnMode;
use crate::config::{Config, Method, RegionTerms, SplitBnImpl};
use crate::error::Result;
use crate::input::StepInput;
use crate::loss::{RegionQueries, instance_loss, region_loss};
use crate::model::{Encoder, MobyPredictor, l2_normalize};
use crate::optim::Optimizer;
use crate::queue::Queue;
use crate::runtime::Runtime;

/// Key of the stochastic-depth stream.
const DROP_STREAM: u64 = 0x4452_4f50;

/// MoBY's target momentum after `progress` (the fraction of the run done) from `m0`: a cosine
/// from `m0` at the start to 1 at the end (the official `_momentum_update_key_encoder`).
pub fn moby_momentum(m0: f64, progress: f64) -> f64 {
    1.0 - (1.0 - m0) * ((std::f64::consts::PI * progress).cos() + 1.0) / 2.0
}

/// MoBY's symmetric contrastive loss: `L(p1, k2, Q2) + L(p2, k1, Q1)`, each InfoNCE over
/// `[p.k, p.Q] / tau` ([`instance_loss`]); `Q1` holds keys of view 1, `Q2` of view 2.
///
/// # Shapes
/// `p, k: [B, d]` unit rows per view, `queues: [d, K]` per view -> scalar.
pub fn moby_loss(p: [&Tensor; 2], k: [&Tensor; 2], queues: [&Tensor; 2], tau: f64) -> Tensor {
    instance_loss(p[0], k[1], queues[1], tau) + instance_loss(p[1], k[0], queues[0], tau)
}

/// The online and target encoders, the predictor and the two queues: RegionCL+MoBY, or MoBY with
/// the region terms off.
#[derive(Debug)]
pub struct Moby {
    /// Online (`encoder_q.*`: backbone `0.*`, projector `1.*`) and target (`encoder_k.*`).
    pub encoders: MomentumEncoders,
    /// The predictor (`predictor.*`).
    pub predictor: MobyPredictor,
    /// The keys of view 1 (`queue1`) and of view 2 (`queue2`).
    pub queues: [Queue; 2],
    method: Method,
    rt: Runtime,
    terms: RegionTerms,
    tau: f64,
    region_weight: f64,
    seed: u64,
    bn: BnMode,
}

/// The online outputs of one step.
struct Online {
    /// Predictions of both views, unit rows `[B, dim]`.
    p: [Tensor; 2],
    /// The region queries (RegionCL+MoBY).
    region: Option<RegionQueries>,
}

impl Moby {
    /// Builds the encoders, the predictor and the queues. Initialisation draws from the keyed
    /// stream of `config.seed` (`init.rs`); the target is then an exact copy of the online encoder.
    ///
    /// # Errors
    /// A libtorch failure.
    pub fn new(config: &Config, rt: Runtime) -> Result<Self> {
        let dim = config.model.proj_dim;
        let (encoders, predictor, queues) = crate::init::seeded(config.seed, || -> Result<_> {
            let encoders = MomentumEncoders::new(config, &rt)?;
            let predictor = MobyPredictor::new(dim, config.moby.pred_hidden, rt.device)?;
            let k = config.moco.queue_size;
            let queues = [Queue::new(dim, k, rt.device), Queue::new(dim, k, rt.device)];
            Ok((encoders, predictor, queues))
        })?;
        Ok(Self {
            encoders,
            predictor,
            queues,
            method: config.method,
            terms: config.region_terms(),
            tau: config.moco.tau,
            region_weight: config.moby.region_weight,
            seed: config.seed,
            bn: bn_mode(config, SplitBnImpl::Chunked, &rt)?,
            rt,
        })
    }

    /// The online predictions of both views and the region queries (graph attached).
    ///
    /// # Shapes
    /// `x: [B, 3, H, W]` normalised, per view.
    fn online(&self, input: &StepInput, x: [&Tensor; 2]) -> Result<Online> {
        let (enc, bn) = (&self.encoders.encoder_q, self.bn);
        let b = x[0].size()[0];
        let first = self.encoders.rank() as u64 * b as u64;
        let drop = |pass: u64| enc.drop_path(&[self.seed, input.step, DROP_STREAM, pass], first, b);
        let head = |h: &Tensor| self.predictor.forward(&enc.project_with(h, bn), bn);
        let predict = |v: usize| {
            let (h, _) = enc.backbone(x[v], bn, drop(v as u64).as_ref()); // [B, D]
            l2_normalize(&head(&h)) // [B, dim]
        };
        let p = [predict(0), predict(1)];
        let region = if self.terms.any() {
            let pool = region_pool(enc, x[0], input, (bn, drop(2).as_ref()), &self.rt)?;
            Some(contrastive_region_queries(&pool, head))
        } else {
            None
        };
        Ok(Online { p, region })
    }

    /// The target keys of both views, of every rank: `[world * B, dim]` unit rows each.
    fn keys(&self, x: [&Tensor; 2], step: u64) -> Result<[Tensor; 2]> {
        let bn = self.bn;
        let mut k = Vec::with_capacity(2);
        for v in x {
            let mut out = self
                .encoders
                .key_forward(v, step, |enc, x| vec![l2_normalize(&enc.embed(x, bn))])?;
            k.push(out.pop().expect("one output"));
        }
        let k2 = k.pop().expect("two views");
        Ok([k.pop().expect("two views"), k2])
    }

    /// The loss terms of one step and the keys to enqueue. Runs the EMA update of the target.
    fn losses(
        &self,
        input: &StepInput,
        x: [&Tensor; 2],
        progress: f64,
    ) -> Result<(Terms, [Tensor; 2])> {
        let world = self.encoders.world();
        let queue_len = [self.queues[0].len(), self.queues[1].len()];
        check_batch(x[0].size()[0], 1, world, &queue_len)?;
        let online = {
            let _ac = autocast(&self.rt, true)?;
            self.online(input, x)?
        };
        self.encoders.momentum_update_with(moby_momentum(self.encoders.momentum(), progress))?;
        let k_all = {
            let _ac = autocast(&self.rt, true)?;
            self.keys(x, input.step)?
        };
        let k = [self.encoders.local(&k_all[0]), self.encoders.local(&k_all[1])]; // [B, dim]
        let _fp32 = autocast(&self.rt, false)?;
        let queues = [self.queues[0].keys(), self.queues[1].keys()]; // written after the backward
        let inst = moby_loss([&online.p[0], &online.p[1]], [&k[0], &k[1]], queues, self.tau);
        let region = online
            .region
            .map(|r| (region_loss(&r, &k[1], queues[1], self.tau, self.terms), self.region_weight));
        Ok((Terms::new((inst, 1.0), None, region), k_all))
    }
}

impl Pretrainer for Moby {
    fn method(&self) -> Method {
        self.method
    }

    fn runtime(&self) -> &Runtime {
        &self.rt
    }

    fn online_encoder(&self) -> &Encoder {
        &self.encoders.encoder_q
    }

    /// `encoder_q.*` and `predictor.*`, without decay on norms, biases and position tables unless
    /// `optim.decay_all`.
    fn optimizer(&self, config: &Config) -> Optimizer {
        let (o, mut opt) = (&config.optim, Optimizer::for_config(config));
        opt.add_store(self.encoders.encoder_q.store(), "encoder_q.", o.weight_decay, o.decay_all);
        opt.add_store(self.predictor.store(), "predictor.", o.weight_decay, o.decay_all);
        opt
    }

    fn step(&mut self, input: StepInput, opt: &mut Optimizer, at: Scheduled) -> Result<StepLosses> {
        let (x1, x2) = colour_views(&self.rt, &input)?;
        let (terms, [k1, k2]) = self.losses(&input, [&x1, &x2], at.progress)?;
        optimize(&terms.total, opt, at.lr)?;
        self.queues[0].enqueue(&k1)?;
        self.queues[1].enqueue(&k2)?;
        let out = terms.read();
        drop(input);
        Ok(out)
    }

    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut tensors = self.encoders.export();
        tensors.extend(self.predictor.store().export("predictor."));
        tensors.extend(self.queues[0].export("queue1"));
        tensors.extend(self.queues[1].export("queue2"));
        tensors
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.encoders.load(tensors)?;
        self.predictor.store().load(tensors, "predictor.")?;
        self.queues[0].load_named(tensors, "queue1")?;
        self.queues[1].load_named(tensors, "queue2")
    }
}

#[cfg(test)]
pub(crate) mod tests;
