//! The pieces every method's step shares: device colour augment of both views, the region swap and
//! mask pooling of the query view (docs/method.md 3.6-3.7), the contrastive region queries, the
//! loss bookkeeping and the optimiser step.

use tch::{Kind, Tensor};

use super::StepLosses;
use crate::bn::BnMode;
use crate::config::{Config, SplitBnImpl};
use crate::error::{Error, Result};
use crate::gpu_augment::{ColourOptions, colour_batch};
use crate::input::StepInput;
use crate::loss::RegionQueries;
use crate::model::{DropPath, Encoder, l2_normalize};
use crate::optim::Optimizer;
use crate::runtime::Runtime;
use crate::shim::AutocastGuard;
use crate::swap::{check_swap, composite, mask_pool};

/// The training BN mode of `rt`'s rank: its BN groups of the batch split of `config`
/// ([`Config::batch_split`]), or SyncBN.
///
/// # Errors
/// A batch or BN groups the world does not divide.
pub(crate) fn bn_mode(config: &Config, imp: SplitBnImpl, rt: &Runtime) -> Result<BnMode> {
    let dist = rt.dist();
    let split = config.batch_split(dist.rank(), dist.world())?;
    Ok(BnMode::for_split(&split, imp, &dist))
}

/// Enters (`enabled`) or leaves bf16 autocast for the scope of the guard; `None` in fp32 runs.
pub(crate) fn autocast(rt: &Runtime, enabled: bool) -> Result<Option<AutocastGuard>> {
    rt.autocast.map(|kind| AutocastGuard::new(rt.device, kind, enabled)).transpose()
}

/// Colour-augments the two views of `input` on the device: `(view 0, view 1)`, normalised
/// `[B, 3, H, W]` (channels_last when the runtime says so).
///
/// # Errors
/// Bad shapes or parameters.
pub(crate) fn colour_views(rt: &Runtime, input: &StepInput) -> Result<(Tensor, Tensor)> {
    input.validate()?;
    let opts = ColourOptions {
        flip: !input.flipped,
        channels_last: rt.channels_last,
        ..ColourOptions::default()
    };
    let mut out = Vec::with_capacity(2);
    for v in 0..2 {
        // Non-blocking when the host tensor is pinned; the host memory lives in `input` until the
        // step's loss is read back.
        let px = input.views[v].to_device_(rt.device, Kind::Uint8, true, false);
        out.push(colour_batch(&px, &input.params[v], &opts)?);
    }
    let second = out.pop().expect("two views");
    Ok((out.pop().expect("two views"), second))
}

/// Checks that a rank's batch of `b` splits into `groups` BN groups and, for the queues of
/// `queue_len` columns, that every enqueue of the keys of all `world` ranks fills whole columns.
///
/// # Errors
/// [`Error::Input`] naming the mismatch.
pub(crate) fn check_batch(b: i64, groups: i64, world: i64, queue_len: &[i64]) -> Result<()> {
    if b % groups != 0 {
        return Err(Error::Input(format!("batch {b} not divisible into {groups} BN groups")));
    }
    let global = b * world;
    if let Some(k) = queue_len.iter().find(|&&k| k % global != 0) {
        return Err(Error::Input(format!("queue {k} is not a multiple of batch {global}")));
    }
    Ok(())
}

/// Global average pooling in fp32.
///
/// # Shapes
/// `f: [B, D, Gh, Gw]` -> `[B, D]` float.
pub(crate) fn avg_pool(f: &Tensor) -> Tensor {
    f.mean_dim([2, 3].as_slice(), false, Kind::Float)
}

/// The grid cells of a feature map as rows (a view for channels_last maps).
///
/// # Shapes
/// `f: [B, C, Gh, Gw]` -> `[B, Gh * Gw, C]`, cells in row-major order.
pub(crate) fn cells(f: &Tensor) -> Tensor {
    let (b, c, gh, gw) = f.size4().expect("feature map is 4-d");
    f.permute([0, 2, 3, 1]).reshape([b, gh * gw, c])
}

/// The canvas and paste vectors of the composites of the query view, and the pairing.
#[derive(Debug)]
pub(crate) struct RegionPool {
    /// Canvas vector of composite i (image i's canvas), `[B, D]` float.
    pub a: Tensor,
    /// Paste vector of composite i (the paste from image pi(i)), `[B, D]` float.
    pub b: Tensor,
    /// The pairing `pi`, `[B]` int64 on the device.
    pub pi: Tensor,
}

/// Builds the composite of `im_q` from the step's swap box and pairing (docs/method.md 3.6), runs
/// the backbone on it (its own BN batch; stochastic depth per `drop`) and mask-pools canvas and
/// paste (3.7) from its last feature map (a transformer's final token map).
///
/// # Errors
/// A missing swap box or pairing, or a box that does not fit the view or the grid.
pub(crate) fn region_pool(
    encoder: &Encoder,
    im_q: &Tensor,
    input: &StepInput,
    (mode, drop): (BnMode, Option<&DropPath>),
    rt: &Runtime,
) -> Result<RegionPool> {
    let (Some(swap), Some(pairing)) = (&input.swap, &input.pairing) else {
        return Err(Error::Input("region branch on, but no swap box / pairing".into()));
    };
    let (_, _, h, w) = im_q.size4()?;
    let stride = encoder.spec().stride();
    check_swap(swap, h, w, h / stride, w / stride)?;
    let pi = pairing.tensor(rt.device);
    let comp = composite(im_q, &pi, &swap.pixels); // [B, 3, H, W]
    let (_, f) = encoder.backbone(&comp, mode, drop); // [B, D, G, G]
    let (a, b) = mask_pool(&f, &swap.grid); // [B, D] each
    Ok(RegionPool { a, b, pi })
}

/// The contrastive region queries (RegionCL-M, -D, RegionCL+MoBY): canvas and paste vectors
/// through the method's `head` (the global projector; MoBY's projector and predictor) in one
/// `[2B, D]` batch, normalised, assigned to their source images (docs/method.md 3.8).
pub(crate) fn contrastive_region_queries(
    pool: &RegionPool,
    head: impl FnOnce(&Tensor) -> Tensor,
) -> RegionQueries {
    let b = pool.a.size()[0];
    let z = l2_normalize(&head(&Tensor::cat(&[&pool.a, &pool.b], 0))); // [2B, d]
    RegionQueries::new(&z.narrow(0, 0, b), &z.narrow(0, b, b), &pool.pi)
}

/// The loss terms of a step (fp32 scalars, graph attached) and their weighted sum.
#[derive(Debug)]
pub(crate) struct Terms {
    /// The weighted sum that is optimised.
    pub total: Tensor,
    inst: Tensor,
    region: Option<Tensor>,
    dense: Option<Tensor>,
}

impl Terms {
    /// `total = w_inst inst + w_dense dense + w_region region` from `(term, weight)` pairs.
    pub(crate) fn new(
        inst: (Tensor, f64),
        dense: Option<(Tensor, f64)>,
        region: Option<(Tensor, f64)>,
    ) -> Self {
        let mut total = &inst.0 * inst.1;
        for (t, w) in dense.iter().chain(&region) {
            total += t * *w;
        }
        Self { total, inst: inst.0, region: region.map(|r| r.0), dense: dense.map(|d| d.0) }
    }

    /// Reads the values back (a device sync).
    pub(crate) fn read(&self) -> StepLosses {
        let v = |t: &Option<Tensor>| t.as_ref().map_or(0.0, |t| t.double_value(&[]));
        StepLosses {
            loss: self.total.double_value(&[]),
            loss_inst: self.inst.double_value(&[]),
            loss_region: v(&self.region),
            loss_dense: v(&self.dense),
        }
    }
}

/// Backward of `loss` and an SGD step at the scheduled `lr`.
///
/// # Errors
/// A libtorch failure.
pub(crate) fn optimize(loss: &Tensor, opt: &mut Optimizer, lr: f64) -> Result<()> {
    opt.zero_grad();
    loss.f_backward()?;
    opt.step(lr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::RegionPredictions;
    use crate::swap::Pairing;
    use regioncl_augment::Rect;
    use tch::Device;

    /// Images whose every pixel carries the one-hot tag of the image (B channels), swapped and
    /// mask-pooled with stride 1 (an identity "backbone"): canvas `a` of composite j carries tag j
    /// and paste `b` tag pi(j).
    fn tagged_pool(b: i64, groups: i64) -> (RegionPool, Pairing) {
        let im = Tensor::eye(b, (Kind::Float, Device::Cpu)).view([b, b, 1, 1]).repeat([1, 1, 5, 5]);
        let pairing = Pairing::reversed_within(b, groups).unwrap();
        let pi = pairing.tensor(Device::Cpu);
        let comp = composite(&im, &pi, &Rect::new(1, 2, 3, 2));
        let (a, bb) = mask_pool(&comp, &Rect::new(1, 2, 3, 2));
        (RegionPool { a, b: bb, pi }, pairing)
    }

    fn tag(t: &Tensor, i: i64) -> i64 {
        t.get(i).argmax(0, false).int64_value(&[])
    }

    /// docs/method.md 11.3 #6 through composite + mask pooling + the query assignment shared by
    /// RegionCL-M and RegionCL-D (the head replaced by the identity).
    #[test]
    fn contrastive_region_bookkeeping_from_composites() {
        let (pool, pairing) = tagged_pool(8, 2);
        for j in 0..8 {
            let pj = pairing.indices()[j as usize];
            assert!((pool.a.get(j).get(j).double_value(&[]) - 1.0).abs() < 1e-6, "canvas tag");
            assert!((pool.b.get(j).get(pj).double_value(&[]) - 1.0).abs() < 1e-6, "paste tag");
        }
        let z = l2_normalize(&Tensor::cat(&[&pool.a, &pool.b], 0));
        let r = RegionQueries::new(&z.narrow(0, 0, 8), &z.narrow(0, 8, 8), &pool.pi);
        for i in 0..8 {
            let pi_i = pairing.indices()[i as usize];
            assert_eq!((tag(&r.c, i), tag(&r.p, i)), (i, i), "queries of source {i}");
            assert_eq!((tag(&r.n_c, i), tag(&r.n_p, i)), (pi_i, pi_i), "intra negatives");
        }
    }

    /// The same for RegionCL-S: both predictions of source i carry tag i (their target is
    /// `z2[i]`, the other view of image i).
    #[test]
    fn siamese_region_bookkeeping_from_composites() {
        let (pool, _) = tagged_pool(6, 1);
        let r = RegionPredictions::new(&pool.a, &pool.b, &pool.pi);
        for i in 0..6 {
            assert_eq!((tag(&r.c, i), tag(&r.p, i)), (i, i), "predictions of source {i}");
        }
    }

    #[test]
    fn terms_weigh_and_read() {
        let s = |v: f64| Tensor::from(v);
        let t = Terms::new((s(2.0), 0.5), Some((s(4.0), 0.5)), Some((s(3.0), 0.25)));
        let l = t.read();
        assert_eq!((l.loss, l.loss_inst, l.loss_dense, l.loss_region), (3.75, 2.0, 4.0, 3.0));
        let l = Terms::new((s(2.0), 1.0), None, None).read();
        assert_eq!((l.loss, l.loss_dense, l.loss_region), (2.0, 0.0, 0.0));
        assert!(check_batch(8, 2, 1, &[64, 32]).is_ok());
        assert!(check_batch(8, 3, 1, &[]).is_err());
        assert!(check_batch(8, 2, 1, &[20]).is_err());
        assert!(check_batch(8, 2, 2, &[64]).is_ok());
        assert!(check_batch(8, 2, 2, &[24]).is_err(), "2 ranks enqueue 16 keys a step");
    }
}
