//! DenseCL and RegionCL-D (docs/method.md 5; Wang et al., <https://arxiv.org/abs/2011.09157>; paper
//! Section 3.2, "Extension to other SSL methods", <https://arxiv.org/abs/2111.12309>).
//!
//! One iteration, in the official DenseCL order:
//! 1. colour-augment both views; `F_q = f_q(im_q)` gives the global query `q = l2n(mlp(avgpool(F_q)))`,
//!    the dense queries `q_grid = l2n(mlp2(F_q))` per cell and, detached, the backbone cells `q_b`;
//! 2. RegionCL-D only: `F = f_q(composite)`, mask pooling, the canvas / paste vectors through the
//!    **global** MLP (`za, zb`), exactly as RegionCL-M;
//! 3. no grad: EMA, then on the shuffled key batch `k`, `k_grid`, `k_b` and the pooled dense key
//!    `k2 = l2n(avgpool(mlp2(F_k)))`, unshuffled;
//! 4. fp32 head: `L = (1 - lambda) L_single(q, k, Q) + lambda L_dense(q_grid, k_grid[j*], Q2)
//!    + w_r L_region(c, p, k, Q)` with the correspondence `j* = argmax_j q_b . k_b` and
//!    `lambda = 0.5`; the region term uses the global key and the global queue;
//! 5. backward, SGD, enqueue `k` into `queue` and `k2` (one pooled dense key per image) into
//!    `queue2`.
//!
//! RegionCL-D's code was never released (docs/method.md 10 #10): the region term is RegionCL-M's,
//! added with weight `densecl.region_weight` (default 0.5, see [`crate::DenseClConfig`]); there is
//! no dense region term.

use std::collections::HashMap;

use tch::Tensor;

use super::common::{
    Terms, autocast, avg_pool, bn_mode, cells, check_batch, colour_views,
    contrastive_region_queries, optimize, region_pool,
};
use super::{MomentumEncoders, Pretrainer, Scheduled, StepLosses};
use crate::bn::BnMode;
use crate::config::{Config, Method, RegionTerms};
use crate::error::{Error, Result};
use crate::input::StepInput;
use crate::loss::{dense_correspondence, dense_loss, instance_loss, region_loss};
use crate::model::{Encoder, l2_normalize, l2_normalize_last};
use crate::optim::Optimizer;
use crate::queue::Queue;
use crate::runtime::Runtime;

/// The keys of one step, in batch order: what the loss and the queues take.
#[derive(Debug)]
struct DenseKeys {
    /// Global keys of this rank's samples `[B, dim]`.
    k: Tensor,
    /// Global keys of every rank's samples `[world * B, dim]` (into `queue`).
    k_all: Tensor,
    /// Pooled dense keys of every rank's samples `[world * B, dim]` (into `queue2`).
    k2_all: Tensor,
    /// Dense keys per cell `[B, S, dim]`.
    k_grid: Tensor,
    /// Backbone features per cell `[B, S, D]`, unit rows.
    k_b: Tensor,
}

/// Query and momentum encoders with the DenseCL neck, and the global and dense queues: RegionCL-D,
/// or DenseCL with the region term off.
#[derive(Debug)]
pub struct DenseContrast {
    /// Query and key encoders (backbone `0.*`, global MLP `1.mlp.*`, dense head `1.mlp2.*`).
    pub encoders: MomentumEncoders,
    /// Global negative keys (`queue`).
    pub queue: Queue,
    /// Dense negative keys: pooled dense keys, one per image (`queue2`).
    pub queue2: Queue,
    method: Method,
    rt: Runtime,
    terms: RegionTerms,
    tau: f64,
    lambda: f64,
    region_weight: f64,
    bn: BnMode,
}

impl DenseContrast {
    /// Builds both encoders, then the two queues, from the keyed stream of `config.seed` (`init.rs`).
    ///
    /// # Errors
    /// A libtorch failure.
    pub fn new(config: &Config, rt: Runtime) -> Result<Self> {
        let (dim, k) = (config.model.proj_dim, config.moco.queue_size);
        let (encoders, queue, queue2) = crate::init::seeded(config.seed, || -> Result<_> {
            let encoders = MomentumEncoders::new(config, &rt)?;
            Ok((encoders, Queue::new(dim, k, rt.device), Queue::new(dim, k, rt.device)))
        })?;
        Ok(Self {
            encoders,
            queue,
            queue2,
            method: config.method,
            terms: config.region_terms(),
            tau: config.moco.tau,
            lambda: config.densecl.lambda,
            region_weight: config.densecl.region_weight,
            bn: bn_mode(config, config.moco.bn_impl, &rt)?,
            rt,
        })
    }

    /// Global, pooled dense, per-cell dense and backbone keys of the key view (shuffle-BN); the
    /// queues' keys of every rank.
    fn keys(&self, im_k: &Tensor, step: u64) -> Result<DenseKeys> {
        let mode = self.bn;
        let mut out = self.encoders.key_forward(im_k, step, |enc, x| {
            let f = enc.features(x, mode); // [B, D, G, G]
            let k = l2_normalize(&enc.project_with(&avg_pool(&f), mode)); // [B, dim]
            let dense = enc.project_dense(&f).expect("DenseCL encoder has a dense head"); // [B, dim, G, G]
            let k2 = l2_normalize(&avg_pool(&dense)); // [B, dim]
            vec![k, k2, l2_normalize_last(&cells(&dense)), l2_normalize_last(&cells(&f))]
        })?;
        let (k_b, k_grid, k2, k) = (out.pop(), out.pop(), out.pop(), out.pop());
        let local = |t: Tensor| self.encoders.local(&t);
        match (k, k2, k_grid, k_b) {
            (Some(k_all), Some(k2_all), Some(k_grid), Some(k_b)) => Ok(DenseKeys {
                k: local(k_all.shallow_clone()),
                k_all,
                k2_all,
                k_grid: local(k_grid),
                k_b: local(k_b),
            }),
            _ => Err(Error::Input("dense key forward: missing outputs".into())),
        }
    }

    /// The loss terms of one step (graph attached to the query encoder) and the keys. Runs the
    /// EMA update of the key encoder.
    fn losses(
        &self,
        input: &StepInput,
        im_q: &Tensor,
        im_k: &Tensor,
    ) -> Result<(Terms, DenseKeys)> {
        let (b, world) = (im_q.size()[0], self.encoders.world());
        check_batch(b, self.bn.splits, world, &[self.queue.len(), self.queue2.len()])?;
        let enc_q = &self.encoders.encoder_q;
        let (q, q_grid, fq, region) = {
            let _ac = autocast(&self.rt, true)?;
            let fq = enc_q.features(im_q, self.bn); // [B, D, G, G]
            let q = l2_normalize(&enc_q.project_with(&avg_pool(&fq), self.bn)); // [B, dim]
            let dense = enc_q.project_dense(&fq).expect("DenseCL encoder has a dense head");
            let q_grid = l2_normalize_last(&cells(&dense)); // [B, S, dim]
            let region = if self.terms.any() {
                let pool = region_pool(enc_q, im_q, input, (self.bn, None), &self.rt)?;
                Some(contrastive_region_queries(&pool, |v| enc_q.project_with(v, self.bn)))
            } else {
                None
            };
            self.encoders.momentum_update()?;
            (q, q_grid, fq.detach(), region)
        };
        let keys = {
            let _ac = autocast(&self.rt, true)?;
            self.keys(im_k, input.step)?
        };
        let _fp32 = autocast(&self.rt, false)?;
        let q_b = l2_normalize_last(&cells(&fq)); // [B, S, D], no gradient
        let j = dense_correspondence(&q_b, &keys.k_b); // [B, S]
        let (queue, queue2) = (self.queue.keys(), self.queue2.keys()); // written after the backward
        let single = instance_loss(&q, &keys.k, queue, self.tau);
        let dense = dense_loss(&q_grid, &keys.k_grid, &j, queue2, self.tau);
        let region = region
            .map(|r| (region_loss(&r, &keys.k, queue, self.tau, self.terms), self.region_weight));
        let terms = Terms::new((single, 1.0 - self.lambda), Some((dense, self.lambda)), region);
        Ok((terms, keys))
    }
}

impl Pretrainer for DenseContrast {
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
        let (terms, keys) = self.losses(&input, &im_q, &im_k)?;
        optimize(&terms.total, opt, at.lr)?;
        self.queue.enqueue(&keys.k_all)?;
        self.queue2.enqueue(&keys.k2_all)?;
        let out = terms.read();
        drop(input);
        Ok(out)
    }

    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut tensors = self.encoders.export();
        tensors.extend(self.queue.export("queue"));
        tensors.extend(self.queue2.export("queue2"));
        tensors
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.encoders.load(tensors)?;
        self.queue.load_named(tensors, "queue")?;
        self.queue2.load_named(tensors, "queue2")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::BatchSource;
    use crate::method::tests::tiny_config;
    use crate::source::SyntheticSource;

    /// Both queues advance by B per step; the dense queue holds the pooled dense keys `k2` (unit
    /// columns), not the per-cell ones; names follow the official checkpoint.
    #[test]
    fn dense_queue_pointer_and_checkpoint_names() {
        let config = tiny_config(Method::RegionCld);
        let mut m = DenseContrast::new(&config, Runtime::cpu()).unwrap();
        let mut opt = m.optimizer(&config);
        let mut src = SyntheticSource::new(&config);
        src.seek(0).unwrap();
        let before = m.queue2.keys().copy();
        let l = m.step(src.next_batch().unwrap(), &mut opt, Scheduled::at_lr(0.05)).unwrap();
        assert_eq!((m.queue.ptr(), m.queue2.ptr()), (8, 8));
        let written = m.queue2.keys().narrow(1, 0, 8);
        assert!(!written.allclose(&before.narrow(1, 0, 8), 1e-6, 1e-6, false));
        assert!(m.queue2.keys().narrow(1, 8, 56).equal(&before.narrow(1, 8, 56)));
        let norms = written.norm_scalaropt_dim(2, [0].as_slice(), false);
        assert!((norms - 1.0).abs().max().double_value(&[]) < 1e-5);
        // Loss bookkeeping: (1 - lambda) single + lambda dense + w_r region, all terms present.
        let expect = 0.5 * l.loss_inst + 0.5 * l.loss_dense + 0.5 * l.loss_region;
        assert!((l.loss - expect).abs() < 1e-5, "{l:?}");
        assert!(l.loss_dense > 0.0 && l.loss_region > 0.0);
        for _ in 0..7 {
            m.step(src.next_batch().unwrap(), &mut opt, Scheduled::at_lr(0.05)).unwrap();
        }
        assert_eq!((m.queue.ptr(), m.queue2.ptr()), (0, 0), "wrapped after K / B = 8 steps");
        let names: Vec<String> = m.state_tensors().into_iter().map(|(n, _)| n).collect();
        for want in [
            "encoder_q.1.mlp2.0.weight",
            "encoder_k.1.mlp2.2.bias",
            "encoder_q.1.mlp.0.weight",
            "queue",
            "queue_ptr",
            "queue2",
            "queue2_ptr",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing");
        }
        assert_eq!(
            m.encoders.encoder_q.store().get("1.mlp2.0.weight").unwrap().size(),
            [32, 32, 1, 1],
            "[hidden = proj_hidden, d = the width-4 ResNet-18's 32 channels]"
        );
    }

    /// The region term uses the global queue, the dense term the dense queue: changing `queue2`
    /// changes only the dense loss.
    #[test]
    fn region_term_uses_the_global_queue() {
        let config = tiny_config(Method::RegionCld);
        let m = DenseContrast::new(&config, Runtime::cpu()).unwrap();
        let mut src = SyntheticSource::new(&config);
        src.seek(0).unwrap();
        let input = src.next_batch().unwrap();
        let run = |m: &DenseContrast| {
            let (im_q, im_k) = colour_views(&m.rt, &input).unwrap();
            // Fresh EMA state each time: the key encoder equals the query encoder at init, and
            // the EMA of equal weights is a no-op.
            m.losses(&input, &im_q, &im_k).unwrap().0.read()
        };
        let a = run(&m);
        let (q2, p2) = (-m.queue2.keys(), Tensor::from_slice(&[0i64]));
        let mut m = m;
        m.queue2.load(&q2, &p2).unwrap();
        let b = run(&m);
        // (The EMA of equal weights may move the key encoder by an ulp between the two runs.)
        assert!((a.loss_inst - b.loss_inst).abs() < 1e-5, "{a:?} {b:?}");
        assert!((a.loss_region - b.loss_region).abs() < 1e-5, "{a:?} {b:?}");
        assert!((a.loss_dense - b.loss_dense).abs() > 1e-3, "{a:?} {b:?}");
    }
}
