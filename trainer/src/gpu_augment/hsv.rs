//! RGB <-> HSV in tensor ops, exactly as torchvision 0.26's `_rgb2hsv` / `_hsv2rgb`, batched.

use tch::{Kind, Tensor};

/// # Shapes
/// `img: [N, 3, H, W]` float in `[0, 1]` -> `[N, 3, H, W]` (h, s, v).
pub(crate) fn rgb_to_hsv(img: &Tensor) -> Tensor {
    let (r, g, b) = (img.select(1, 0), img.select(1, 1), img.select(1, 2)); // [N, H, W] each
    let maxc = img.amax([1].as_slice(), false);
    let minc = img.amin([1].as_slice(), false);
    let eqc = maxc.eq_tensor(&minc);
    let cr = &maxc - &minc;
    let ones = maxc.ones_like();
    let s = &cr / ones.where_self(&eqc, &maxc);
    let cr_divisor = ones.where_self(&eqc, &cr);
    let rc = (&maxc - &r) / &cr_divisor;
    let gc = (&maxc - &g) / &cr_divisor;
    let bc = (&maxc - &b) / &cr_divisor;
    let is_r = maxc.eq_tensor(&r);
    let is_g = maxc.eq_tensor(&g);
    let hr = is_r.to_kind(Kind::Float) * (&bc - &gc);
    let hg = is_g.logical_and(&is_r.logical_not()).to_kind(Kind::Float) * ((&rc + 2.0) - &bc);
    let hb = is_g.logical_not().logical_and(&is_r.logical_not()).to_kind(Kind::Float)
        * ((&gc + 4.0) - &rc);
    let h = hr + hg + hb;
    let h = (h / 6.0 + 1.0).fmod(1.0);
    Tensor::stack(&[h, s, maxc], 1)
}

/// # Shapes
/// `hsv: [N, 3, H, W]` -> `[N, 3, H, W]` RGB.
pub(crate) fn hsv_to_rgb(hsv: &Tensor) -> Tensor {
    let (h, s, v) = (hsv.select(1, 0), hsv.select(1, 1), hsv.select(1, 2));
    let i = (&h * 6.0).floor();
    let f = &h * 6.0 - &i;
    let i = i.to_kind(Kind::Int).remainder(6);
    let one_minus = |t: Tensor| (t * -1.0) + 1.0;
    let p = (&v * one_minus(s.shallow_clone())).clamp(0.0, 1.0);
    let q = (&v * one_minus(&s * &f)).clamp(0.0, 1.0);
    let t = (&v * one_minus(&s * one_minus(f.shallow_clone()))).clamp(0.0, 1.0);
    // Sector i picks (r, g, b) from these six triples (torchvision's a1/a2/a3 columns).
    let table =
        [[&v, &t, &p], [&q, &v, &p], [&p, &v, &t], [&p, &q, &v], [&t, &p, &v], [&v, &p, &q]];
    let channel = |c: usize| {
        let mut out = table[0][c].zeros_like();
        for (sector, row) in table.iter().enumerate() {
            let m = i.eq(sector as i64).to_kind(Kind::Float);
            out += m * row[c];
        }
        out
    };
    Tensor::stack(&[channel(0), channel(1), channel(2)], 1)
}
