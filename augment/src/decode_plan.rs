//! The cheapest JPEG decode that covers all the views of one sample.
//!
//! Crops are planned from the image size before any byte is decoded, so the decode can be chosen to
//! fit them: the smallest DCT-scaled image (1/2, 1/4, 1/8 per axis, nearly free in libjpeg) in which
//! every crop is still at least as large as its output (the resize stays a downscale, so no detail
//! is lost that the view would have kept), and only the rows and columns around the union of the
//! crops.

use crate::error::{Error, Result};
use crate::geometry::{CropBox, Rect};
use crate::jpeg::{DecodeOptions, Scale};

/// Pixels decoded around the union of the crops. libjpeg treats the edges of a cropped decode as
/// image edges for chroma upsampling, which can shift the outermost column by several levels
/// (seen: 12 on a 4:2:2 file at 1/4 scale); one pixel of margin keeps that outside every crop.
const REGION_MARGIN: u32 = 1;

/// Alignment of the region's left edge in original pixels: the iMCU width of 4:2:0 and 4:2:2 files
/// (and a multiple of 4:4:4's). libjpeg crops columns at iMCU boundaries; a region that starts on
/// one is decoded straight into the output buffer, without a copy per row.
const REGION_ALIGN: u32 = 16;

/// The geometry of one view: its crop in pixels of the original image and its output size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewGeometry {
    /// Crop in the original image.
    pub crop: Rect,
    /// Output width.
    pub width: u32,
    /// Output height.
    pub height: u32,
}

/// Which shortcuts [`DecodePlan::plan`] may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodePlanOptions {
    /// Allow DCT-domain down-scaling (on by default).
    pub dct_scaling: bool,
    /// Decode only the union of the crops (on by default); off decodes the whole (scaled) image.
    pub region: bool,
}

impl Default for DecodePlanOptions {
    fn default() -> Self {
        Self { dct_scaling: true, region: true }
    }
}

/// What to decode for one sample, and where each view's crop lies in the decoded pixels. Reusable:
/// [`DecodePlan::plan`] overwrites it without allocating once it has held as many views.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DecodePlan {
    scale: Scale,
    region: Rect,
    boxes: Vec<CropBox>,
}

impl DecodePlan {
    /// An empty plan, to be filled by [`DecodePlan::plan`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The plan for the views of one `img_w` x `img_h` image.
    ///
    /// # Errors
    /// As [`DecodePlan::plan`].
    pub fn for_views(
        img_w: u32,
        img_h: u32,
        views: &[ViewGeometry],
        options: &DecodePlanOptions,
    ) -> Result<Self> {
        let mut plan = Self::new();
        plan.plan(img_w, img_h, views, options)?;
        Ok(plan)
    }

    /// Recomputes the plan: the largest DCT scale `1/d` such that every crop, divided by `d`, is
    /// at least its output size on both axes; the region = union of the crops mapped to the scaled
    /// image (integer, one pixel of margin, left edge aligned to 16 original pixels, clamped to the
    /// image; full width when cropping columns would save less than a quarter of it); per view,
    /// the crop box relative to that region.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when there is no view, a crop is empty or outside the image, or an
    /// output size is 0.
    pub fn plan(
        &mut self,
        img_w: u32,
        img_h: u32,
        views: &[ViewGeometry],
        options: &DecodePlanOptions,
    ) -> Result<()> {
        if views.is_empty() {
            return Err(Error::InvalidArgument("decode plan: no view".into()));
        }
        for v in views {
            if !v.crop.fits_in(img_w, img_h) || v.width == 0 || v.height == 0 {
                return Err(Error::InvalidArgument(format!(
                    "decode plan: view {v:?} does not fit a {img_w}x{img_h} image"
                )));
            }
        }
        let scale = if options.dct_scaling {
            // Largest d with crop >= d * output on both axes, for every view.
            let fits = |s: &Scale| {
                let d = u64::from(s.denom());
                views.iter().all(|v| {
                    u64::from(v.crop.w) >= d * u64::from(v.width)
                        && u64::from(v.crop.h) >= d * u64::from(v.height)
                })
            };
            Scale::ALL.into_iter().rev().find(fits).unwrap_or(Scale::Full)
        } else {
            Scale::Full
        };
        let d = f64::from(scale.denom());
        let (sw, sh) = scale.apply(img_w, img_h);
        let region = if options.region {
            let union = views[1..].iter().fold(views[0].crop, |u, v| u.union(&v.crop));
            // Pixel i of the scaled image covers original pixels [i * d, (i + 1) * d).
            let denom = scale.denom();
            // Columns start on an iMCU boundary (16 pixels for 4:2:0 and 4:2:2 files, 8 for
            // 4:4:4, divided by the DCT scale), so libjpeg decodes the region in place.
            let align = (REGION_ALIGN / denom).max(1);
            let mut x0 = (union.x / denom).saturating_sub(REGION_MARGIN) / align * align;
            let y0 = (union.y / denom).saturating_sub(REGION_MARGIN);
            let mut x1 = (union.right().div_ceil(denom) + REGION_MARGIN).min(sw);
            let y1 = (union.bottom().div_ceil(denom) + REGION_MARGIN).min(sh);
            if u64::from(x1 - x0) * 4 > u64::from(sw) * 3 {
                // Cropping columns costs a row copy and saves only the IDCT and colour conversion
                // of the columns left out (entropy decoding covers whole rows anyway): not worth
                // it for under a quarter of the width. Rows outside the region are always skipped.
                (x0, x1) = (0, sw);
            }
            Rect::new(x0, y0, x1 - x0, y1 - y0)
        } else {
            Rect::full(sw, sh)
        };
        self.scale = scale;
        self.region = region;
        self.boxes.clear();
        self.boxes.extend(views.iter().map(|v| {
            let b = CropBox {
                x: f64::from(v.crop.x) / d - f64::from(region.x),
                y: f64::from(v.crop.y) / d - f64::from(region.y),
                w: f64::from(v.crop.w) / d,
                h: f64::from(v.crop.h) / d,
            };
            // Division by a power of two is exact, so the box edges are exact; clamp the far
            // edge against the region anyway (it can only touch it).
            CropBox {
                w: b.w.min(f64::from(region.w) - b.x),
                h: b.h.min(f64::from(region.h) - b.y),
                ..b
            }
        }));
        Ok(())
    }

    /// The DCT scale to decode at.
    pub fn scale(&self) -> Scale {
        self.scale
    }

    /// The region to decode, in the coordinates of the scaled image.
    pub fn region(&self) -> Rect {
        self.region
    }

    /// Per view (in the order given), the crop in the coordinates of the decoded region.
    pub fn boxes(&self) -> &[CropBox] {
        &self.boxes
    }

    /// `base` with this plan's scale and region.
    pub fn decode_options(&self, base: &DecodeOptions) -> DecodeOptions {
        DecodeOptions { scale: self.scale, region: Some(self.region), ..*base }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(x: u32, y: u32, w: u32, h: u32, size: u32) -> ViewGeometry {
        ViewGeometry { crop: Rect::new(x, y, w, h), width: size, height: size }
    }

    #[test]
    fn picks_the_largest_scale_that_keeps_a_downscale() {
        let opts = DecodePlanOptions::default();
        // 1000x900 crop to 224: 1000/4 = 250 >= 224 but 900/4 = 225 >= 224, /8 too small.
        let p = DecodePlan::for_views(2000, 2000, &[view(0, 0, 1000, 900, 224)], &opts).unwrap();
        assert_eq!(p.scale(), Scale::Quarter);
        // The smaller view decides.
        let views = [view(0, 0, 1000, 900, 224), view(500, 500, 500, 500, 224)];
        let p = DecodePlan::for_views(2000, 2000, &views, &opts).unwrap();
        assert_eq!(p.scale(), Scale::Half);
        assert_eq!(p.region(), Rect::new(0, 0, 501, 501));
        assert_eq!(p.boxes()[1], CropBox { x: 250.0, y: 250.0, w: 250.0, h: 250.0 });
        // An upscaled view forces a full decode; no scaling when switched off.
        let p = DecodePlan::for_views(300, 300, &[view(10, 20, 100, 100, 224)], &opts).unwrap();
        assert_eq!((p.scale(), p.region()), (Scale::Full, Rect::new(0, 19, 111, 102)));
        assert_eq!(p.boxes()[0], CropBox { x: 10.0, y: 1.0, w: 100.0, h: 100.0 });
        let off = DecodePlanOptions { dct_scaling: false, region: false };
        let p = DecodePlan::for_views(2000, 2000, &[view(0, 0, 1000, 900, 224)], &off).unwrap();
        assert_eq!((p.scale(), p.region()), (Scale::Full, Rect::new(0, 0, 2000, 2000)));
    }

    #[test]
    fn odd_sizes_map_outward() {
        let p = DecodePlan::for_views(
            1001,
            999,
            &[view(3, 5, 998, 994, 100)],
            &DecodePlanOptions::default(),
        )
        .unwrap();
        assert_eq!(p.scale(), Scale::Eighth);
        // floor(3/8) = 0, ceil(1001/8) = 126 = scaled width; floor(5/8) = 0, ceil(999/8) = 125.
        assert_eq!(p.region(), Rect::new(0, 0, 126, 125));
        assert_eq!(p.boxes()[0], CropBox { x: 0.375, y: 0.625, w: 124.75, h: 124.25 });
        assert_eq!(p.decode_options(&DecodeOptions::default()).region, Some(p.region()));
    }

    #[test]
    fn bad_views_are_errors() {
        let o = DecodePlanOptions::default();
        assert!(DecodePlan::for_views(100, 100, &[], &o).is_err());
        assert!(DecodePlan::for_views(100, 100, &[view(50, 0, 51, 10, 8)], &o).is_err());
        assert!(DecodePlan::for_views(100, 100, &[view(0, 0, 10, 10, 0)], &o).is_err());
    }

    fn arb_case() -> impl Strategy<Value = (u32, u32, Vec<ViewGeometry>, bool, bool)> {
        (1u32..6000, 1u32..6000).prop_flat_map(|(w, h)| {
            let v = (0..w, 0..h, 1u32..=w, 1u32..=h, 1u32..400, 1u32..400).prop_map(
                move |(x, y, cw, ch, ow, oh)| ViewGeometry {
                    crop: Rect::new(x.min(w - cw), y.min(h - ch), cw, ch),
                    width: ow,
                    height: oh,
                },
            );
            (Just(w), Just(h), proptest::collection::vec(v, 1..9), any::<bool>(), any::<bool>())
        })
    }

    proptest! {
        #[test]
        fn boxes_stay_inside_the_decoded_region((w, h, views, dct, region) in arb_case()) {
            let opts = DecodePlanOptions { dct_scaling: dct, region };
            let p = DecodePlan::for_views(w, h, &views, &opts).unwrap();
            let (sw, sh) = p.scale().apply(w, h);
            prop_assert!(p.region().fits_in(sw, sh), "{:?} in {}x{}", p.region(), sw, sh);
            let d = f64::from(p.scale().denom());
            for (v, b) in views.iter().zip(p.boxes()) {
                prop_assert!(b.fits_in(p.region().w, p.region().h), "{:?} in {:?}", b, p.region());
                // Still a downscale (or the full decode), and the box is the crop scaled.
                prop_assert!(p.scale() == Scale::Full
                    || (b.w >= f64::from(v.width) && b.h >= f64::from(v.height)));
                prop_assert!((b.w - f64::from(v.crop.w) / d).abs() < 1e-9);
                prop_assert!((b.x + f64::from(p.region().x) - f64::from(v.crop.x) / d).abs() < 1e-9);
            }
        }
    }
}
