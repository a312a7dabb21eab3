//! SimSiam's negative cosine with stop-gradient (docs/method.md 6; Chen & He, *Exploring Simple
//! Siamese Representation Learning*, <https://arxiv.org/abs/2011.10566>, Eq. 1-2), and the region
//! positives of RegionCL-S (docs/method.md 6.2): the canvas and paste predictions of each source
//! image regress onto the stop-gradient projection of the other view of that image.

use tch::{Kind, Tensor};

use super::{RegionTerms, rowdot};
use crate::model::l2_normalize;

/// `D(p, z) = -mean_i cos(p_i, sg(z_i))`; the target `z` gets no gradient. In `[-1, 1]`.
///
/// # Shapes
/// `p, z: [N, d]` -> scalar.
pub fn negative_cosine(p: &Tensor, z: &Tensor) -> Tensor {
    let cos = rowdot(&l2_normalize(p), &l2_normalize(&z.detach())); // [N, 1]
    -cos.mean(Kind::Float)
}

/// The symmetric SimSiam loss `1/2 D(p1, z2) + 1/2 D(p2, z1)`: -1 when each prediction points
/// along the other view's projection.
///
/// # Shapes
/// `p1, p2, z1, z2: [B, d]` -> scalar.
pub fn simsiam_loss(p1: &Tensor, p2: &Tensor, z1: &Tensor, z2: &Tensor) -> Tensor {
    (negative_cosine(p1, z2) + negative_cosine(p2, z1)) * 0.5
}

/// The region predictions of each **source** image `i` (the SimSiam analogue of
/// [`super::RegionQueries`], docs/method.md 3.8): canvas `c_i = pa[i]` (composite i holds the
/// canvas of image i) and paste `p_i = pb[pi(i)]` (composite pi(i) holds the paste of image i). No
/// negatives: SimSiam has none.
#[derive(Debug)]
pub struct RegionPredictions {
    /// Canvas predictions `[B, d]`.
    pub c: Tensor,
    /// Paste predictions `[B, d]`.
    pub p: Tensor,
}

impl RegionPredictions {
    /// From the predictions of the canvas (`pa`) and paste (`pb`) vectors of the composites.
    ///
    /// # Shapes
    /// `pa, pb: [B, d]`, `pi: [B]` int64.
    pub fn new(pa: &Tensor, pb: &Tensor, pi: &Tensor) -> Self {
        Self { c: pa.shallow_clone(), p: pb.index_select(0, pi) }
    }
}

/// RegionCL-S's region term: `-mean cos(row, sg(z[i]))` over the canvas rows and the paste rows of
/// every source image `i` (2B rows with both terms, so `1/2 (D_c + D_p)`); `z` is the projection of
/// the other view. A zero scalar when neither term is on.
///
/// # Shapes
/// `z: [B, d]` -> scalar.
pub fn region_positive_loss(r: &RegionPredictions, z: &Tensor, terms: RegionTerms) -> Tensor {
    let mut rows = Vec::new();
    if terms.canvas {
        rows.push(&r.c);
    }
    if terms.paste {
        rows.push(&r.p);
    }
    if rows.is_empty() {
        return Tensor::zeros([], (Kind::Float, z.device()));
    }
    let targets = Tensor::cat(&vec![z; rows.len()], 0); // [R, d]
    negative_cosine(&Tensor::cat(&rows, 0), &targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn randn(n: i64, d: i64) -> Tensor {
        Tensor::randn([n, d], (Kind::Float, Device::Cpu))
    }

    /// -1 at identical inputs, +1 at opposite ones, within [-1, 1] otherwise, scale-invariant.
    #[test]
    fn bounds() {
        tch::manual_seed(0);
        let (z1, z2) = (randn(8, 16), randn(8, 16));
        let at = |p1: &Tensor, p2: &Tensor| simsiam_loss(p1, p2, &z1, &z2).double_value(&[]);
        assert!((at(&z2, &z1) + 1.0).abs() < 1e-6);
        assert!((at(&(&z2 * 5.0), &(&z1 * 0.1)) + 1.0).abs() < 1e-6);
        assert!((at(&(-&z2), &(-&z1)) - 1.0).abs() < 1e-6);
        for _ in 0..5 {
            let l = at(&randn(8, 16), &randn(8, 16));
            assert!((-1.0..=1.0).contains(&l), "{l}");
        }
    }

    /// The targets get no gradient; the predictions' gradient is that of constant targets.
    #[test]
    fn stop_gradient_on_targets() {
        tch::manual_seed(1);
        let (p0, z0) = (randn(6, 8), randn(6, 8));
        let p = p0.copy().set_requires_grad(true);
        let z = z0.copy().set_requires_grad(true);
        // z feeds the prediction too, as z1 feeds p1 = h(z1): only that path carries gradient.
        let loss = simsiam_loss(&(&p + &z * 0.5), &p, &z, &z);
        loss.backward();
        let (gp, gz) = (p.grad(), z.grad());
        let pc = p0.copy().set_requires_grad(true);
        let zc = z0.copy().set_requires_grad(true);
        let loss_c = simsiam_loss(&(&pc + &zc * 0.5), &pc, &z0, &z0);
        loss_c.backward();
        assert!(gp.allclose(&pc.grad(), 1e-6, 1e-7, false));
        assert!(gz.allclose(&zc.grad(), 1e-6, 1e-7, false), "z's gradient is only via p");
        // With the target alone (no prediction path), z gets no gradient at all.
        let z = z0.copy().set_requires_grad(true);
        negative_cosine(&p0.copy().set_requires_grad(true), &z).backward();
        assert!(!z.grad().defined() || z.grad().abs().sum(Kind::Float).double_value(&[]) == 0.0);
    }

    /// docs/method.md 11.3 #6 for RegionCL-S: composite j holds the canvas of j (`pa` tag j) and
    /// the paste of pi(j) (`pb` tag pi(j)); both predictions of source i carry tag i, and their
    /// target is row i of z (the other view of image i).
    #[test]
    fn index_bookkeeping() {
        let b = 6;
        let pairing = crate::swap::Pairing::reversed_within(b, 1).unwrap();
        let pi = pairing.tensor(Device::Cpu);
        let eye = Tensor::eye(b, (Kind::Float, Device::Cpu));
        let r = RegionPredictions::new(&eye, &eye.index_select(0, &pi), &pi);
        let tag = |t: &Tensor, i: i64| t.get(i).argmax(0, false).int64_value(&[]);
        for i in 0..b {
            assert_eq!((tag(&r.c, i), tag(&r.p, i)), (i, i));
        }
        let l = region_positive_loss(&r, &eye, RegionTerms::default()).double_value(&[]);
        assert!((l + 1.0).abs() < 1e-6, "every row meets its own image: {l}");
        let off = RegionTerms { paste: false, canvas: false, negative: false };
        assert_eq!(region_positive_loss(&r, &eye, off).double_value(&[]), 0.0);
    }
}
