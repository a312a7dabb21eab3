//! Colour augmentation of a batch on whatever device its pixels are on (docs/method.md section 8),
//! from the per-sample parameters of the loader's plan ([`ViewParams`]): ColorJitter in each
//! sample's own order, grayscale, Gaussian blur, solarize, the horizontal flip when the source did
//! not apply it, then ImageNet normalisation. Semantics are torchvision 0.26's tensor ops on float
//! `[0, 1]` images, i.e. those of `regioncl_augment`'s CPU ops, against which the tests check.
//!
//! Vectorised over the batch: the parameters live on the host, so for every op (and every position
//! of the jitter order) the samples it applies to are known without a device sync. Each op runs
//! once on `index_select`ed samples with a per-sample factor tensor and is written back with
//! `index_copy_`, so a sample pays only for the ops it has.
//!
//! The ops run in fp32 whatever the caller's autocast region (an enclosing bf16 region is switched
//! off for them). The blur is a direct separable filter: per-sample 1-D kernels zero-padded to the
//! widest one in the batch, reflect padding by that half-width (the extra taps are zero and reflect
//! padding agrees on the taps that are not), then one fused multiply-add per tap along each axis
//! in fp32 elementwise ops. No convolution is involved, so the result does not depend on cuDNN's
//! algorithm choice or on TF32 (which a CUDA conv in fp32 may use, about 1e-3 off), and
//! `cudnn.benchmark` has nothing to re-tune when the number of blurred samples or the widest sigma
//! changes from batch to batch.

mod hsv;

use regioncl_augment::{
    ColorJitter, IMAGENET_MEAN, IMAGENET_STD, JITTER_BRIGHTNESS, JITTER_CONTRAST, JITTER_HUE,
    JITTER_SATURATION, SOLARIZE_THRESHOLD, ViewParams, gaussian_kernel,
};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// torchvision's grayscale weights (R, G, B).
const GRAY: [f64; 3] = [0.2989, 0.587, 0.114];

/// What [`colour_batch`] does besides the colour ops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColourOptions {
    /// Apply `params.flip` here (false when the source already flipped the pixels).
    pub flip: bool,
    /// Per-channel mean and std of the final normalisation.
    pub mean: [f32; 3],
    /// See `mean`.
    pub std: [f32; 3],
    /// Return the batch channels_last.
    pub channels_last: bool,
}

impl Default for ColourOptions {
    fn default() -> Self {
        Self { flip: false, mean: IMAGENET_MEAN, std: IMAGENET_STD, channels_last: false }
    }
}

fn index(samples: &[i64], device: Device) -> Tensor {
    crate::shim::upload(&Tensor::from_slice(samples), device)
}

fn factors(values: &[f32], device: Device) -> Tensor {
    crate::shim::upload(&Tensor::from_slice(values), device).view([-1, 1, 1, 1]) // [n, 1, 1, 1]
}

/// Applies `op` to the samples `idx` of `x` (in place on `x`).
fn apply_to(x: &Tensor, idx: &[i64], op: impl FnOnce(&Tensor) -> Tensor) {
    if idx.is_empty() {
        return;
    }
    let ix = index(idx, x.device());
    let y = op(&x.index_select(0, &ix));
    let _ = x.shallow_clone().index_copy_(0, &ix, &y);
}

/// Grayscale `[n, 1, H, W]` of `[n, 3, H, W]`.
fn gray(x: &Tensor) -> Tensor {
    (x.select(1, 0) * GRAY[0] + x.select(1, 1) * GRAY[1] + x.select(1, 2) * GRAY[2]).unsqueeze(1)
}

/// torchvision `_blend`: `clamp(f * a + (1 - f) * b, 0, 1)` with per-sample `f: [n, 1, 1, 1]`.
fn blend(a: &Tensor, b: &Tensor, f: &Tensor) -> Tensor {
    (f * a + (f * -1.0 + 1.0) * b).clamp(0.0, 1.0)
}

fn jitter_op(op: u8, x: &Tensor, f: &Tensor) -> Tensor {
    match op {
        JITTER_BRIGHTNESS => (x * f).clamp(0.0, 1.0),
        JITTER_CONTRAST => {
            let m = gray(x).mean_dim([1, 2, 3].as_slice(), true, Kind::Float); // [n, 1, 1, 1]
            blend(x, &m, f)
        }
        JITTER_SATURATION => blend(x, &gray(x), f),
        _ => {
            let hsv = hsv::rgb_to_hsv(x);
            let h = (hsv.select(1, 0) + f.view([-1, 1, 1])).remainder(1.0);
            let hsv = Tensor::stack(&[h, hsv.select(1, 1), hsv.select(1, 2)], 1);
            hsv::hsv_to_rgb(&hsv)
        }
    }
}

/// The factor of `op` in `j`, or `None` when the op is the identity and skipped.
fn jitter_factor(j: &ColorJitter, op: u8) -> Option<f32> {
    let (value, identity) = match op {
        JITTER_BRIGHTNESS => (j.brightness, 1.0),
        JITTER_CONTRAST => (j.contrast, 1.0),
        JITTER_SATURATION => (j.saturation, 1.0),
        JITTER_HUE => (j.hue, 0.0),
        _ => return None,
    };
    (value != identity).then_some(value)
}

/// Gaussian blur of the samples in `idx` with their sigmas.
fn blur(x: &Tensor, idx: &[i64], sigmas: &[f32]) -> Result<()> {
    if idx.is_empty() {
        return Ok(());
    }
    let mut kernels = Vec::with_capacity(sigmas.len());
    for &s in sigmas {
        if !(s > 0.0 && s.is_finite()) {
            return Err(Error::Input(format!("blur sigma {s}")));
        }
        let mut k = Vec::new();
        gaussian_kernel(s, &mut k);
        kernels.push(k);
    }
    let taps = kernels.iter().map(Vec::len).max().unwrap_or(1);
    let pad = (taps / 2) as i64;
    let (_, _, h, w) = x.size4()?;
    if pad >= h || pad >= w {
        return Err(Error::Input(format!("blur half-width {pad} too large for a {w}x{h} view")));
    }
    // Tap t of every sample, centred and zero outside its own kernel: [taps, n, 1, 1, 1].
    let mut table = vec![0f32; taps * kernels.len()];
    for (s, k) in kernels.iter().enumerate() {
        let off = (taps - k.len()) / 2;
        for (t, &v) in k.iter().enumerate() {
            table[(off + t) * kernels.len() + s] = v;
        }
    }
    let n = idx.len() as i64;
    let table = crate::shim::upload(&Tensor::from_slice(&table), x.device());
    let table = table.view([taps as i64, n, 1, 1, 1]);
    // sum_t k[t] * src[.., t .. t + len] along `dim`, accumulated in tap order.
    let filter = |src: &Tensor, dim: i64, len: i64| {
        let acc = src.narrow(dim, 0, len) * table.get(0);
        for t in 1..taps as i64 {
            let _ = acc.shallow_clone().addcmul_(&src.narrow(dim, t, len), &table.get(t));
        }
        acc
    };
    apply_to(x, idx, |sub| {
        let padded = sub.reflection_pad2d([pad, pad, pad, pad]); // [n, 3, H+2p, W+2p]
        let rows = filter(&padded, 3, w); // [n, 3, H+2p, W]
        filter(&rows, 2, h) // [n, 3, H, W]
    });
    Ok(())
}

/// Colour-augments and normalises a batch of one view.
///
/// # Shapes
/// `pixels: u8 [B, H, W, 3]` (NHWC, any device), `params.len() == B` -> float `[B, 3, H, W]` on the
/// same device (channels_last when asked).
///
/// # Errors
/// A parameter count that does not match the batch, a hue shift outside `[-0.5, 0.5]`, a bad blur
/// sigma, or a libtorch failure.
pub fn colour_batch(
    pixels: &Tensor,
    params: &[ViewParams],
    opts: &ColourOptions,
) -> Result<Tensor> {
    let (b, _, _, c) = pixels.size4()?;
    if b != params.len() as i64 || c != 3 || pixels.kind() != Kind::Uint8 {
        return Err(Error::Input(format!(
            "colour_batch: pixels {:?} {:?} with {} parameter sets",
            pixels.size(),
            pixels.kind(),
            params.len()
        )));
    }
    let device = pixels.device();
    // fp32 whatever the caller's autocast region (the parity with the CPU ops is in fp32).
    let _fp32 = crate::shim::autocast_enabled(device)
        .then(|| crate::shim::AutocastGuard::new(device, Kind::BFloat16, false))
        .transpose()?;
    tch::no_grad(|| {
        // u8 NHWC -> float NCHW in [0, 1] (one copy; planes contiguous for the per-sample ops).
        let x = pixels.permute([0, 3, 1, 2]).to_kind(Kind::Float).contiguous() / 255.0; // [B, 3, H, W]
        let select = |f: &dyn Fn(&ViewParams) -> bool| -> Vec<i64> {
            (0..b).filter(|&i| f(&params[i as usize])).collect()
        };
        if opts.flip {
            apply_to(&x, &select(&|p| p.flip), |s| s.flip([3]));
        }
        for pos in 0..4 {
            for op in [JITTER_BRIGHTNESS, JITTER_CONTRAST, JITTER_SATURATION, JITTER_HUE] {
                let (mut idx, mut fs) = (Vec::new(), Vec::new());
                for (i, p) in params.iter().enumerate() {
                    let Some(j) = &p.jitter else { continue };
                    if j.order[pos] != op {
                        continue;
                    }
                    if let Some(f) = jitter_factor(j, op) {
                        if op == JITTER_HUE && !(-0.5..=0.5).contains(&f) {
                            return Err(Error::Input(format!("hue shift {f} outside [-0.5, 0.5]")));
                        }
                        idx.push(i as i64);
                        fs.push(f);
                    }
                }
                if !idx.is_empty() {
                    let f = factors(&fs, device);
                    apply_to(&x, &idx, |s| jitter_op(op, s, &f));
                }
            }
        }
        apply_to(&x, &select(&|p| p.grayscale), |s| {
            gray(s).expand([-1, 3, -1, -1], false).contiguous()
        });
        let blurred = select(&|p| p.blur_sigma.is_some());
        let sigmas: Vec<f32> =
            blurred.iter().filter_map(|&i| params[i as usize].blur_sigma).collect();
        blur(&x, &blurred, &sigmas)?;
        apply_to(&x, &select(&|p| p.solarize), |s| {
            let inv = s * -1.0 + 1.0;
            inv.where_self(&s.ge(f64::from(SOLARIZE_THRESHOLD)), s)
        });
        let mean = crate::shim::upload(&Tensor::from_slice(&opts.mean), device).view([1, 3, 1, 1]);
        let std = crate::shim::upload(&Tensor::from_slice(&opts.std), device).view([1, 3, 1, 1]);
        let y = (x - mean) / std;
        if opts.channels_last { crate::shim::to_channels_last(&y) } else { Ok(y) }
    })
}

#[cfg(test)]
mod tests;
