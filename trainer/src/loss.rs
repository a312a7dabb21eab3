//! The InfoNCE losses of RegionCL-M (paper Eq. 1 and 2; docs/method.md 2.2, 3.8, 4.2), and in
//! submodules DenseCL's dense InfoNCE ([`dense_loss`]) and SimSiam's negative cosine
//! ([`simsiam_loss`], [`region_positive_loss`]).
//!
//! All vectors are L2-normalised, so dot products are cosines; logits are divided by `tau`; each
//! row's positive is column 0 and the loss is `mean(logsumexp(row) - row[0])`. Computed in fp32.

mod cosine;
mod dense;

pub use cosine::{RegionPredictions, region_positive_loss, simsiam_loss};
pub use dense::{dense_correspondence, dense_loss};

use tch::{Kind, Tensor};

use crate::config::RegionTerms;

/// Cross-entropy with target 0, averaged over rows.
///
/// # Shapes
/// `logits: [N, M]` -> scalar.
pub fn info_nce(logits: &Tensor) -> Tensor {
    let logits = logits.to_kind(Kind::Float);
    (logits.logsumexp([1].as_slice(), false) - logits.select(1, 0)).mean(Kind::Float)
}

pub(crate) fn rowdot(a: &Tensor, b: &Tensor) -> Tensor {
    (a * b).sum_dim_intlist([1].as_slice(), true, Kind::Float) // [N, 1]
}

/// Instance loss (Eq. 1): `[q.k, q.Q] / tau`.
///
/// # Shapes
/// `q, k: [B, d]` (unit rows), `queue: [d, K]` -> scalar.
pub fn instance_loss(q: &Tensor, k: &Tensor, queue: &Tensor, tau: f64) -> Tensor {
    let logits = Tensor::cat(&[rowdot(q, k), q.matmul(queue)], 1) / tau; // [B, 1+K]
    info_nce(&logits)
}

/// The region queries and their intra-image negatives for each **source** image `i`
/// (docs/method.md 3.8): canvas `c_i = za[i]` with negative `n_c[i] = zb[i]` (the paste sitting in
/// composite i), paste `p_i = zb[pi(i)]` with negative `n_p[i] = za[pi(i)]` (the canvas of the
/// composite holding it). Negatives are detached.
#[derive(Debug)]
pub struct RegionQueries {
    /// Canvas queries `[B, d]`.
    pub c: Tensor,
    /// Canvas negatives `[B, d]`, detached.
    pub n_c: Tensor,
    /// Paste queries `[B, d]`.
    pub p: Tensor,
    /// Paste negatives `[B, d]`, detached.
    pub n_p: Tensor,
}

impl RegionQueries {
    /// From the normalised canvas (`za`) and paste (`zb`) embeddings of the composites.
    ///
    /// # Shapes
    /// `za, zb: [B, d]`, `pi: [B]` int64.
    pub fn new(za: &Tensor, zb: &Tensor, pi: &Tensor) -> Self {
        Self {
            c: za.shallow_clone(),
            n_c: zb.detach(),
            p: zb.index_select(0, pi),
            n_p: za.index_select(0, pi).detach(),
        }
    }
}

/// Region loss (Eq. 2): canvas rows `[c.k, c.sg(n_c), c.Q]` and paste rows `[p.k, p.sg(n_p), p.Q]`,
/// averaged over all rows (2B with both terms: `1/2 (mean l_c + mean l_p)`). Returns a zero scalar
/// when neither term is on.
///
/// # Shapes
/// `k: [B, d]`, `queue: [d, K]` -> scalar.
pub fn region_loss(
    r: &RegionQueries,
    k: &Tensor,
    queue: &Tensor,
    tau: f64,
    terms: RegionTerms,
) -> Tensor {
    let mut parts: Vec<(&Tensor, &Tensor)> = Vec::new();
    if terms.canvas {
        parts.push((&r.c, &r.n_c));
    }
    if terms.paste {
        parts.push((&r.p, &r.n_p));
    }
    if parts.is_empty() {
        return Tensor::zeros([], (Kind::Float, k.device()));
    }
    let queries = Tensor::cat(&parts.iter().map(|(x, _)| *x).collect::<Vec<_>>(), 0); // [R, d]
    let keys = Tensor::cat(&vec![k; parts.len()], 0); // [R, d]
    let mut cols = vec![rowdot(&queries, &keys)];
    if terms.negative {
        let negs = Tensor::cat(&parts.iter().map(|(_, n)| *n).collect::<Vec<_>>(), 0); // [R, d]
        cols.push(rowdot(&queries, &negs));
    }
    cols.push(queries.matmul(queue)); // [R, K]
    info_nce(&(Tensor::cat(&cols, 1) / tau))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::l2_normalize;
    use crate::runtime::test_devices;
    use tch::Device;

    fn unit(dev: Device, n: i64, d: i64) -> Tensor {
        l2_normalize(&Tensor::randn([n, d], (Kind::Float, dev)))
    }

    /// docs/method.md 11.3 #1: equal logits give ln(K+1) and ln(K+2).
    #[test]
    fn uniform_logits() {
        for dev in test_devices() {
            let (b, d, kk) = (4, 128, 65536);
            let e = Tensor::zeros([b, d], (Kind::Float, dev));
            let _ = e.narrow(1, 0, 1).fill_(1.0);
            let queue = Tensor::zeros([d, kk], (Kind::Float, dev));
            let _ = queue.narrow(0, 0, 1).fill_(1.0);
            let l = instance_loss(&e, &e, &queue, 0.2).double_value(&[]);
            assert!((l - 11.09037).abs() < 1e-4, "{l}");
            let pi = crate::swap::Pairing::reversed_within(b, 1).unwrap().tensor(dev);
            let r = RegionQueries::new(&e, &e, &pi);
            let lr = region_loss(&r, &e, &queue, 0.2, RegionTerms::default()).double_value(&[]);
            assert!((lr - 11.09039).abs() < 1e-4, "{lr}");
            assert!((l - (65537f64).ln()).abs() < 2e-5 && (lr - (65538f64).ln()).abs() < 2e-5);
        }
    }

    /// docs/method.md 11.3 #3: a random unit queue and positive cosine s give
    /// `ln(1 + K e^{0.0977} e^{-s/tau})`.
    #[test]
    fn random_queue_first_loss() {
        for dev in test_devices() {
            tch::manual_seed(2);
            let (b, d, kk) = (64, 128, 65536);
            let q = unit(dev, b, d);
            let queue = unit(dev, kk, d).transpose(0, 1);
            let expect = |s: f64| (1.0 + kk as f64 * 0.0977f64.exp() * (-s / 0.2).exp()).ln();
            let l = instance_loss(&q, &q, &queue, 0.2).double_value(&[]);
            assert!((l - expect(1.0)).abs() < 0.05, "{l} vs {}", expect(1.0));
            // A key at cosine 0.5: rotate q towards an orthogonal unit vector.
            let o = unit(dev, b, d);
            let o = l2_normalize(&(&o - &q * rowdot(&o, &q)));
            let k = &q * 0.5 + o * 0.75f64.sqrt();
            let l = instance_loss(&q, &k, &queue, 0.2).double_value(&[]);
            assert!((l - expect(0.5)).abs() < 0.05, "{l} vs {}", expect(0.5));
        }
    }

    /// docs/method.md 11.3 #6: tags of canvas / paste queries, negatives and positives.
    #[test]
    fn index_bookkeeping() {
        for dev in test_devices() {
            let b = 6;
            let pairing = crate::swap::Pairing::reversed_within(b, 1).unwrap();
            let pi = pairing.tensor(dev);
            // Composite j holds canvas of image j (za tag j) and paste from image pi(j) (zb tag pi(j)).
            let eye = Tensor::eye(b, (Kind::Float, dev));
            let za = eye.shallow_clone();
            let zb = eye.index_select(0, &pi);
            let r = RegionQueries::new(&za, &zb, &pi);
            let tag = |t: &Tensor, i: i64| t.get(i).argmax(0, false).int64_value(&[]);
            for i in 0..b {
                let pi_i = pairing.indices()[i as usize];
                assert_eq!(tag(&r.c, i), i, "c_i");
                assert_eq!(tag(&r.p, i), i, "p_i");
                assert_eq!(tag(&r.n_c, i), pi_i, "n_c[i]");
                assert_eq!(tag(&r.n_p, i), pi_i, "n_p[i]");
            }
            // Positives: row i of the region logits pairs with k_i (k tagged like the images): with
            // every term on, the rowdot with k is 1 exactly when tags match.
            let k = eye.shallow_clone();
            assert!(rowdot(&r.c, &k).equal(&Tensor::ones([b, 1], (Kind::Float, dev))));
            assert!(rowdot(&r.p, &k).equal(&Tensor::ones([b, 1], (Kind::Float, dev))));
        }
    }

    /// docs/method.md 11.3 #7: the intra-image negative contributes only through the query.
    #[test]
    fn stop_gradient_on_intra_negative() {
        for dev in test_devices() {
            tch::manual_seed(4);
            let (b, d) = (4, 8);
            let za0 = unit(dev, b, d);
            let zb0 = unit(dev, b, d);
            let k = unit(dev, b, d);
            let queue = unit(dev, 16, d).transpose(0, 1);
            let pi = crate::swap::Pairing::reversed_within(b, 1).unwrap().tensor(dev);
            let grads = |detached_consts: bool| {
                let za = za0.copy().set_requires_grad(true);
                let zb = zb0.copy().set_requires_grad(true);
                let r = if detached_consts {
                    // The negatives as constants from outside the graph.
                    RegionQueries {
                        c: za.shallow_clone(),
                        n_c: zb0.copy(),
                        p: zb.index_select(0, &pi),
                        n_p: za0.index_select(0, &pi),
                    }
                } else {
                    RegionQueries::new(&za, &zb, &pi)
                };
                region_loss(&r, &k, &queue, 0.2, RegionTerms::default()).backward();
                (za.grad(), zb.grad())
            };
            let (ga, gb) = grads(false);
            let (ga2, gb2) = grads(true);
            assert!(ga.allclose(&ga2, 1e-6, 1e-7, false) && gb.allclose(&gb2, 1e-6, 1e-7, false));
            // Without the stop-gradient the gradient would differ.
            let za = za0.copy().set_requires_grad(true);
            let zb = zb0.copy().set_requires_grad(true);
            let r = RegionQueries {
                c: za.shallow_clone(),
                n_c: zb.shallow_clone(),
                p: zb.index_select(0, &pi),
                n_p: za.index_select(0, &pi),
            };
            region_loss(&r, &k, &queue, 0.2, RegionTerms::default()).backward();
            assert!(!za.grad().allclose(&ga, 1e-6, 1e-7, false));
        }
    }

    #[test]
    fn term_switches_change_row_count() {
        for dev in test_devices() {
            tch::manual_seed(5);
            let (b, d) = (4, 8);
            let (za, zb, k) = (unit(dev, b, d), unit(dev, b, d), unit(dev, b, d));
            let queue = unit(dev, 16, d).transpose(0, 1);
            let pi = crate::swap::Pairing::reversed_within(b, 1).unwrap().tensor(dev);
            let r = RegionQueries::new(&za, &zb, &pi);
            let t = |paste, canvas, negative| {
                region_loss(&r, &k, &queue, 0.2, RegionTerms { paste, canvas, negative })
                    .double_value(&[])
            };
            let (lc, lp, both) = (t(false, true, true), t(true, false, true), t(true, true, true));
            assert!((both - 0.5 * (lc + lp)).abs() < 1e-5);
            assert!(t(true, true, false) < both, "dropping a negative lowers the loss");
            assert_eq!(t(false, false, true), 0.0);
        }
    }
}
