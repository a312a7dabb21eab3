//! Region swapping (docs/method.md 3; paper Section 3.1) on tensors: the pairing, the composite of
//! the query view, and mask pooling on the feature map, for the loader's [`SwapBox`].
//!
//! A swap box has two faces: the **pixel box** (`pixels`) copied between images and the **feature
//! box** (`grid`, cells of the backbone's stride-R map) pooled as the paste region. With the
//! loader's [`regioncl_loader::SwapSampler::Aligned`] sampler they coincide (`pixels = R * grid`);
//! with [`regioncl_loader::SwapSampler::Official`] (the released code, with its off-by-one clamp)
//! the pixel box can start 31 px after the feature box. Both are carried, so any plan of the
//! loader's is representable.

use regioncl_augment::Rect;
use regioncl_loader::SwapBox;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// Checks a swap box of the input against the `height x width` views and their `grid_h x grid_w`
/// feature map: any [`crate::BatchSource`] may hand one over, not only the loader, whose boxes
/// fit by construction.
///
/// # Errors
/// A pixel box outside the image, a feature box outside the grid or empty, or a feature box
/// covering the whole grid (an empty canvas).
pub(crate) fn check_swap(
    b: &SwapBox,
    height: i64,
    width: i64,
    grid_h: i64,
    grid_w: i64,
) -> Result<()> {
    let (p, g) = (b.pixels, b.grid);
    let inside = |o: u32, s: u32, n: i64| i64::from(o) + i64::from(s) <= n;
    if !(inside(p.x, p.w, width) && inside(p.y, p.h, height)) {
        return Err(Error::Input(format!("pixel box {p:?} outside the {width}x{height} view")));
    }
    if !(inside(g.x, g.w, grid_w) && inside(g.y, g.h, grid_h)) || g.w == 0 || g.h == 0 {
        return Err(Error::Input(format!("feature box {g:?} outside the {grid_w}x{grid_h} grid")));
    }
    if i64::from(g.w) * i64::from(g.h) >= grid_w * grid_h {
        return Err(Error::Input(format!("feature box {g:?} leaves no canvas")));
    }
    Ok(())
}

/// The pairing `pi`: composite `i` is the canvas of image `i` with the paste from image `pi(i)`.
/// An involution without fixed points.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pairing(Vec<i64>);

impl Pairing {
    /// The batch reversed inside each of `groups` contiguous chunks (the official `B-1-i` per GPU;
    /// with split BN, partners then share a BN group).
    ///
    /// # Errors
    /// If `b` is not divisible by `groups` or a chunk has odd size (a sample would pair with itself).
    pub fn reversed_within(b: i64, groups: i64) -> Result<Self> {
        let bad = || {
            Error::Input(format!("pairing: batch {b} must split into {groups} chunks of even size"))
        };
        let (bu, gu) =
            (usize::try_from(b).map_err(|_| bad())?, usize::try_from(groups).map_err(|_| bad())?);
        let pi = regioncl_loader::pairing(bu, gu).map_err(|_| bad())?;
        Ok(Self(pi.into_iter().map(i64::from).collect()))
    }

    /// Checks and wraps an explicit pairing.
    ///
    /// # Errors
    /// If it is not an involution without fixed points over `0..len`.
    pub fn new(pi: Vec<i64>) -> Result<Self> {
        let n = pi.len() as i64;
        for (i, &j) in pi.iter().enumerate() {
            if j < 0 || j >= n || j == i as i64 || pi[j as usize] != i as i64 {
                return Err(Error::Input(format!(
                    "pairing: {pi:?} is not a fixed-point-free involution"
                )));
            }
        }
        Ok(Self(pi))
    }

    /// `pi(i)` for every `i`.
    pub fn indices(&self) -> &[i64] {
        &self.0
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The indices as an int64 tensor on `device`.
    pub fn tensor(&self, device: Device) -> Tensor {
        crate::shim::upload(&Tensor::from_slice(&self.0), device)
    }
}

/// The composite of the query view (docs/method.md 3.6): image `i` with the pixel box replaced by
/// the same window of image `pi(i)`. Keeps the input's memory format.
///
/// # Shapes
/// `im_q: [B, 3, H, W]`, `pi: [B]` int64, `b` in pixels -> `[B, 3, H, W]`.
pub fn composite(im_q: &Tensor, pi: &Tensor, b: &Rect) -> Tensor {
    let comp = im_q.copy();
    if b.w == 0 || b.h == 0 {
        return comp;
    }
    let (x, y, w, h) = (b.x.into(), b.y.into(), b.w.into(), b.h.into());
    let window = |t: &Tensor| t.narrow(2, y, h).narrow(3, x, w);
    let paste = window(im_q).index_select(0, pi); // [B, 3, h, w]
    window(&comp).copy_(&paste);
    comp
}

/// Mask pooling (docs/method.md 3.7): the mean over the feature box (`b`, paste) and over the rest
/// of the grid (`a`, canvas), in fp32.
///
/// # Shapes
/// `f: [B, D, Gh, Gw]`, `c` in grid cells -> `(a, b)`, each `[B, D]` float.
pub fn mask_pool(f: &Tensor, c: &Rect) -> (Tensor, Tensor) {
    let (_, _, gh, gw) = f.size4().expect("feature map is 4-d");
    let dims = [2i64, 3].as_slice();
    let (x, y, w, h) = (c.x.into(), c.y.into(), c.w.into(), c.h.into());
    let b = f.narrow(2, y, h).narrow(3, x, w).mean_dim(dims, false, Kind::Float); // [B, D]
    let gap = f.mean_dim(dims, false, Kind::Float); // [B, D]
    let (n, hw) = ((gh * gw) as f64, f64::from(c.h * c.w));
    let a = (gap * n - &b * hw) / (n - hw); // [B, D]
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::KeyedRng;
    use crate::runtime::test_devices;
    use regioncl_loader::SwapSampler;

    /// docs/method.md 11.3 #4.
    #[test]
    fn composite_pastes_partner_window_only() {
        for d in test_devices() {
            tch::manual_seed(0);
            let b = 6;
            let x = Tensor::randn([b, 3, 16, 16], (Kind::Float, d));
            let pairing = Pairing::reversed_within(b, 1).unwrap();
            assert!(pairing.indices().iter().enumerate().all(|(i, &j)| j != i as i64));
            let pb = Rect::new(3, 5, 8, 4);
            let comp = composite(&x, &pairing.tensor(d), &pb);
            let inside = Tensor::zeros([16, 16], (Kind::Bool, d));
            let _ = inside.narrow(0, 5, 4).narrow(1, 3, 8).fill_(1);
            for i in 0..b {
                let j = pairing.indices()[i as usize];
                let expect = x.get(i).where_self(&inside.logical_not(), &x.get(j));
                assert!(comp.get(i).equal(&expect), "composite {i}");
            }
            let same = composite(&x, &pairing.tensor(d), &Rect::new(2, 2, 0, 4));
            assert!(same.equal(&x));
            // Channels_last input stays channels_last.
            let x_cl = crate::shim::to_channels_last(&x).unwrap();
            let comp_cl = composite(&x_cl, &pairing.tensor(d), &pb);
            assert!(crate::shim::is_channels_last(&comp_cl));
            assert!(comp_cl.equal(&comp));
        }
    }

    #[test]
    fn pairing_within_groups() {
        let p = Pairing::reversed_within(8, 2).unwrap();
        assert_eq!(p.indices(), [3, 2, 1, 0, 7, 6, 5, 4]);
        assert!(Pairing::reversed_within(6, 2).is_err());
        assert!(Pairing::new(vec![1, 0, 2]).is_err());
        assert!(Pairing::new(vec![1, 0, 3, 2]).is_ok());
    }

    /// docs/method.md 11.3 #5.
    #[test]
    fn mask_pooling_identity() {
        for d in test_devices() {
            tch::manual_seed(1);
            let f = Tensor::randn([3, 5, 7, 7], (Kind::Float, d));
            let c = Rect::new(2, 1, 3, 4);
            let (a, b) = mask_pool(&f, &c);
            let gap = f.mean_dim([2, 3].as_slice(), false, Kind::Float);
            let lhs = &a * (49.0 - 12.0) + &b * 12.0;
            assert!(lhs.allclose(&(gap * 49.0), 1e-4, 1e-5, false));
            let mut sum = Tensor::zeros([3, 5], (Kind::Float, d));
            for y in 1..5 {
                for x in 2..5 {
                    sum += f.narrow(2, y, 1).narrow(3, x, 1).squeeze_dim(3).squeeze_dim(2);
                }
            }
            assert!(b.allclose(&(sum / 12.0), 1e-5, 1e-6, false));
        }
    }

    /// A box for `height x width` views on a stride-`stride` grid, `c_lower..=c_upper` cells per
    /// side, drawn by the loader's `sampler` ([`regioncl_loader::sample_swap_box`]).
    fn sample(
        sampler: SwapSampler,
        rng: &mut KeyedRng,
        height: u32,
        width: u32,
        stride: u32,
        c_lower: u32,
        c_upper: u32,
    ) -> SwapBox {
        let config = regioncl_loader::SwapConfig {
            stride,
            min_cells: c_lower,
            max_cells: c_upper,
            sampler,
            view_width: width,
            view_height: height,
        };
        regioncl_loader::sample_swap_box(&config, rng)
    }

    /// A box outside the view or the grid, an empty one, or one that leaves no canvas is refused.
    #[test]
    fn swap_boxes_that_do_not_fit_are_refused() {
        let b = |grid: Rect, pixels: Rect| SwapBox { grid, pixels };
        let ok = b(Rect::new(1, 1, 2, 2), Rect::new(32, 32, 64, 64));
        check_swap(&ok, 224, 224, 7, 7).unwrap();
        for bad in [
            b(Rect::new(1, 1, 2, 2), Rect::new(200, 32, 64, 64)),
            b(Rect::new(6, 1, 2, 2), Rect::new(32, 32, 64, 64)),
            b(Rect::new(1, 1, 0, 2), Rect::new(32, 32, 64, 64)),
            b(Rect::new(0, 0, 7, 7), Rect::new(0, 0, 224, 224)),
        ] {
            assert!(check_swap(&bad, 224, 224, 7, 7).is_err(), "{bad:?}");
        }
    }

    /// docs/method.md 11.3 #12 through the trainer: the official sampler's clamped origins
    /// (the exhaustive table is the loader's `swap` tests), the aligned sampler's coinciding faces.
    #[test]
    fn samplers_through_the_loader() {
        let mut rng = KeyedRng::new(&[12]);
        let draws = 20_000;
        let mut at_127 = 0;
        let mut threes = 0;
        for _ in 0..draws {
            let o = sample(SwapSampler::Official, &mut rng, 224, 224, 32, 3, 5);
            check_swap(&o, 224, 224, 7, 7).unwrap();
            if o.grid.w == 3 {
                threes += 1;
                at_127 += i32::from(o.pixels.x == 127);
            }
            let b = sample(SwapSampler::Aligned, &mut rng, 224, 224, 32, 3, 5);
            let g = b.grid;
            assert_eq!(b.pixels, Rect::new(32 * g.x, 32 * g.y, 32 * g.w, 32 * g.h), "aligned");
            check_swap(&b, 224, 224, 7, 7).unwrap();
        }
        // k = 3: the clamp puts the box at 127 px (cell 3) for 112 of the 224 draws of v.
        let f = f64::from(at_127) / f64::from(threes);
        assert!((f - 0.5).abs() < 0.03, "{f}");
    }

    #[test]
    fn pairing_reverses_within_groups() {
        assert_eq!(Pairing::reversed_within(8, 2).unwrap().indices(), &[3, 2, 1, 0, 7, 6, 5, 4]);
        assert!(Pairing::reversed_within(6, 2).is_err());
        assert!(Pairing::reversed_within(8, 0).is_err());
    }
}
