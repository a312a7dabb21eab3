//! SimSiam and RegionCL-S (docs/method.md 6; Chen & He, <https://arxiv.org/abs/2011.10566>; paper
//! Section 3.2, "Extension to other SSL methods", <https://arxiv.org/abs/2111.12309>).
//!
//! One iteration:
//! 1. colour-augment both views `x1, x2`; `z1 = g(avgpool(f(x1)))`, `z2 = g(avgpool(f(x2)))` (two
//!    forwards, two BN batches, as the official model), `p1 = h(z1)`, `p2 = h(z2)`;
//! 2. RegionCL-S only: the composite of `x1`, `F = f(composite)`, mask pooling gives canvas `a` and
//!    paste `b`; `z_r = g([a; b])` in one `[2B, D]` batch (the projector's BN then mixes canvas
//!    and paste rows, as RegionCL-M's single projector call does), `p_r = h(z_r)`;
//! 3. fp32 head: `L = 1/2 D(p1, sg(z2)) + 1/2 D(p2, sg(z1)) + w_r L_region`, where the canvas
//!    prediction `p_r[i]` and the paste prediction `p_r[B + pi(i)]` of source image i both regress
//!    onto `sg(z2[i])`, the other view of that image (`D` = negative cosine);
//! 4. backward, SGD (the predictor at a fixed LR with `fix_pred_lr`).
//!
//! No momentum encoder, no queue, no negatives: RegionCL-S only adds positives (the paper: "we
//! only enrich the positive pairs"). BN is the official SyncBN: statistics over the whole global
//! batch, every rank's samples together in a multi-process run ([`crate::sync_batch_norm`]), plain
//! BN over the batch on one device. The region pairing stays inside each rank's batch. RegionCL-S's
//! code was never released (docs/method.md 10 #10); this follows docs/method.md 6.2.

use std::collections::HashMap;

use tch::Tensor;

use super::common::{Terms, autocast, avg_pool, bn_mode, colour_views, optimize, region_pool};
use super::{Pretrainer, Scheduled, StepLosses};
use crate::bn::BnMode;
use crate::config::{Config, Method, RegionTerms, SplitBnImpl};
use crate::error::Result;
use crate::input::StepInput;
use crate::loss::{RegionPredictions, region_positive_loss, simsiam_loss};
use crate::model::{Encoder, Predictor};
use crate::optim::Optimizer;
use crate::runtime::Runtime;

/// The encoder (backbone + 3-layer projector) and the predictor: RegionCL-S, or SimSiam with the
/// region term off.
#[derive(Debug)]
pub struct SimSiam {
    /// Backbone `0.*` and projector `1.mlp.*` (`encoder.*` in a checkpoint).
    pub encoder: Encoder,
    /// Predictor (`predictor.*` in a checkpoint).
    pub predictor: Predictor,
    method: Method,
    rt: Runtime,
    terms: RegionTerms,
    region_weight: f64,
    fixed_pred_lr: Option<f64>,
    bn: BnMode,
}

impl SimSiam {
    /// Builds the encoder, then the predictor, from the keyed stream of `config.seed` (`init.rs`).
    ///
    /// # Errors
    /// A libtorch failure.
    pub fn new(config: &Config, rt: Runtime) -> Result<Self> {
        let (encoder, predictor) = crate::init::seeded(config.seed, || -> Result<_> {
            let encoder = Encoder::for_config(config, rt.device, rt.channels_last)?;
            let predictor =
                Predictor::new(config.model.proj_dim, config.simsiam.pred_hidden, rt.device)?;
            Ok((encoder, predictor))
        })?;
        Ok(Self {
            encoder,
            predictor,
            method: config.method,
            terms: config.region_terms(),
            region_weight: config.simsiam.region_weight,
            fixed_pred_lr: config.simsiam.fix_pred_lr.then(|| config.optim.peak_lr()),
            bn: bn_mode(config, SplitBnImpl::Chunked, &rt)?,
            rt,
        })
    }

    /// The loss terms of one step (graph attached).
    ///
    /// # Shapes
    /// `x1, x2: [B, 3, H, W]` normalised.
    fn losses(&self, input: &StepInput, x1: &Tensor, x2: &Tensor) -> Result<Terms> {
        let (enc, pred, bn) = (&self.encoder, &self.predictor, self.bn);
        let (p1, p2, z1, z2, region) = {
            let _ac = autocast(&self.rt, true)?;
            let z1 = enc.project_with(&avg_pool(&enc.features(x1, bn)), bn); // [B, dim]
            let z2 = enc.project_with(&avg_pool(&enc.features(x2, bn)), bn); // [B, dim]
            let (p1, p2) = (pred.forward(&z1, bn), pred.forward(&z2, bn));
            let region = if self.terms.any() {
                let pool = region_pool(enc, x1, input, (bn, None), &self.rt)?;
                let b = pool.a.size()[0];
                let z_r = enc.project_with(&Tensor::cat(&[&pool.a, &pool.b], 0), bn); // [2B, dim]
                let p_r = pred.forward(&z_r, bn); // [2B, dim]
                Some(RegionPredictions::new(&p_r.narrow(0, 0, b), &p_r.narrow(0, b, b), &pool.pi))
            } else {
                None
            };
            (p1, p2, z1, z2, region)
        };
        let _fp32 = autocast(&self.rt, false)?;
        let inst = simsiam_loss(&p1, &p2, &z1, &z2);
        let region =
            region.map(|r| (region_positive_loss(&r, &z2, self.terms), self.region_weight));
        Ok(Terms::new((inst, 1.0), None, region))
    }
}

impl Pretrainer for SimSiam {
    fn method(&self) -> Method {
        self.method
    }

    fn runtime(&self) -> &Runtime {
        &self.rt
    }

    fn online_encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Two groups: `encoder.*` on the schedule, `predictor.*` at the peak LR when
    /// `simsiam.fix_pred_lr` (official `--fix-pred-lr`), weight decay on both.
    fn optimizer(&self, config: &Config) -> Optimizer {
        let wd = config.optim.weight_decay;
        let mut opt = Optimizer::for_config(config);
        opt.add_group(self.encoder.store(), "encoder.", wd, 1.0, None);
        opt.add_group(self.predictor.store(), "predictor.", wd, 1.0, self.fixed_pred_lr);
        opt
    }

    fn step(&mut self, input: StepInput, opt: &mut Optimizer, at: Scheduled) -> Result<StepLosses> {
        let (x1, x2) = colour_views(&self.rt, &input)?;
        let terms = self.losses(&input, &x1, &x2)?;
        optimize(&terms.total, opt, at.lr)?;
        let out = terms.read();
        drop(input);
        Ok(out)
    }

    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut tensors = self.encoder.store().export("encoder.");
        tensors.extend(self.predictor.store().export("predictor."));
        tensors
    }

    fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.encoder.store().load(tensors, "encoder.")?;
        self.predictor.store().load(tensors, "predictor.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::BatchSource;
    use crate::method::tests::tiny_config;
    use crate::source::SyntheticSource;

    #[test]
    fn first_step_bounds_groups_and_names() {
        let config = tiny_config(Method::RegionCls);
        let mut m = SimSiam::new(&config, Runtime::cpu()).unwrap();
        let mut opt = m.optimizer(&config);
        let groups = opt.groups();
        assert_eq!((groups[0].fixed_lr, groups[1].fixed_lr), (None, Some(config.optim.peak_lr())));
        assert!(groups[1].names.iter().all(|n| n.starts_with("predictor.")));
        let mut src = SyntheticSource::new(&config);
        src.seek(0).unwrap();
        let l = m.step(src.next_batch().unwrap(), &mut opt, Scheduled::at_lr(0.05)).unwrap();
        assert!((-1.0..=1.0).contains(&l.loss_inst) && (-1.0..=1.0).contains(&l.loss_region));
        assert!((l.loss - l.loss_inst - l.loss_region).abs() < 1e-6 && l.loss_dense == 0.0);
        let names: Vec<String> = m.state_tensors().into_iter().map(|(n, _)| n).collect();
        for want in [
            "encoder.0.conv1.weight",
            "encoder.0.layer4.1.bn2.weight",
            "encoder.1.mlp.6.weight",
            "encoder.1.mlp.7.running_var",
            "predictor.0.weight",
            "predictor.3.bias",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing");
        }
        assert!(!names.iter().any(|n| n.contains("queue") || n.starts_with("encoder_k")));
    }

    /// `zero_init_residual` from the config; the base method runs without a swap plan.
    #[test]
    fn simsiam_without_region_branch() {
        let mut config = tiny_config(Method::SimSiam);
        config.model.zero_init_residual = true;
        let mut m = SimSiam::new(&config, Runtime::cpu()).unwrap();
        let w = m.encoder.store().get("0.layer1.0.bn2.weight").unwrap();
        assert_eq!(w.abs().sum(tch::Kind::Float).double_value(&[]), 0.0);
        let mut opt = m.optimizer(&config);
        let mut src = SyntheticSource::new(&config);
        src.seek(0).unwrap();
        let input = src.next_batch().unwrap();
        assert!(input.swap.is_none());
        let l = m.step(input, &mut opt, Scheduled::at_lr(0.05)).unwrap();
        assert_eq!(l.loss_region, 0.0);
        assert_eq!(l.loss, l.loss_inst);
    }
}
