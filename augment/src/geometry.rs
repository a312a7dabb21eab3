//! Pixel rectangles and RGB image buffers.

/// An axis-aligned rectangle in pixel coordinates: columns `[x, x + w)`, rows `[y, y + h)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Rect {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width in pixels.
    pub w: u32,
    /// Height in pixels.
    pub h: u32,
}

impl Rect {
    /// A rectangle from its origin and size.
    pub const fn new(x: u32, y: u32, w: u32, h: u32) -> Self {
        Self { x, y, w, h }
    }

    /// The whole of a `width` x `height` image.
    pub const fn full(width: u32, height: u32) -> Self {
        Self { x: 0, y: 0, w: width, h: height }
    }

    /// One past the right column.
    pub const fn right(&self) -> u32 {
        self.x + self.w
    }

    /// One past the bottom row.
    pub const fn bottom(&self) -> u32 {
        self.y + self.h
    }

    /// Whether the rectangle lies inside a `width` x `height` image and is not empty.
    pub fn fits_in(&self, width: u32, height: u32) -> bool {
        self.w > 0
            && self.h > 0
            && u64::from(self.x) + u64::from(self.w) <= u64::from(width)
            && u64::from(self.y) + u64::from(self.h) <= u64::from(height)
    }

    /// The smallest rectangle that contains both.
    pub fn union(&self, other: &Rect) -> Rect {
        let x = self.x.min(other.x);
        let y = self.y.min(other.y);
        Rect {
            x,
            y,
            w: self.right().max(other.right()) - x,
            h: self.bottom().max(other.bottom()) - y,
        }
    }
}

impl From<Rect> for CropBox {
    fn from(r: Rect) -> Self {
        Self { x: f64::from(r.x), y: f64::from(r.y), w: f64::from(r.w), h: f64::from(r.h) }
    }
}

/// A crop box with sub-pixel edges, in the coordinates of some source image: columns `[x, x + w)`,
/// rows `[y, y + h)`, pixel `i` covering `[i, i + 1)`. A crop of the original image mapped onto a
/// DCT-scaled decode has fractional edges (`x / 2`, `x / 4`, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CropBox {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width (> 0).
    pub w: f64,
    /// Height (> 0).
    pub h: f64,
}

impl CropBox {
    /// Whether the box is non-empty, finite and inside a `width` x `height` image.
    pub fn fits_in(&self, width: u32, height: u32) -> bool {
        let finite = [self.x, self.y, self.w, self.h].iter().all(|v| v.is_finite());
        finite
            && self.w > 0.0
            && self.h > 0.0
            && self.x >= 0.0
            && self.y >= 0.0
            && self.x + self.w <= f64::from(width)
            && self.y + self.h <= f64::from(height)
    }

    /// The smallest integer rectangle that contains the box.
    pub fn hull(&self) -> Rect {
        let x0 = self.x.floor().max(0.0);
        let y0 = self.y.floor().max(0.0);
        let x1 = (self.x + self.w).ceil().max(x0 + 1.0);
        let y1 = (self.y + self.h).ceil().max(y0 + 1.0);
        Rect::new(x0 as u32, y0 as u32, (x1 - x0) as u32, (y1 - y0) as u32)
    }
}

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (`[H, W, 3]`). The buffer is reused
/// across decodes: resizing it never shrinks its allocation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RgbImage {
    data: Vec<u8>,
    width: u32,
    height: u32,
}

impl RgbImage {
    /// An empty image.
    pub fn new() -> Self {
        Self::default()
    }

    /// An image that owns `data` (`width * height * 3` bytes).
    ///
    /// # Panics
    /// If the length does not match.
    pub fn from_vec(width: u32, height: u32, data: Vec<u8>) -> Self {
        assert_eq!(data.len(), width as usize * height as usize * 3, "RgbImage::from_vec length");
        Self { data, width, height }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The pixels, `[H, W, 3]`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The pixels, mutable.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Gives the buffer back.
    pub fn into_vec(self) -> Vec<u8> {
        self.data
    }

    /// Sets the size, keeping (and growing when needed) the allocation. Pixel values are unspecified
    /// afterwards.
    pub fn reshape(&mut self, width: u32, height: u32) {
        self.width = width;
        self.height = height;
        self.data.resize(width as usize * height as usize * 3, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hull_covers_fractional_boxes() {
        let b = CropBox { x: 1.25, y: 0.0, w: 2.5, h: 3.0 };
        assert_eq!(b.hull(), Rect::new(1, 0, 3, 3));
        assert_eq!(CropBox::from(Rect::new(4, 5, 6, 7)).hull(), Rect::new(4, 5, 6, 7));
        assert!(b.fits_in(4, 3) && !b.fits_in(3, 3));
        assert!(!CropBox { x: f64::NAN, ..b }.fits_in(4, 3));
    }

    #[test]
    fn union_and_fits() {
        let u = Rect::new(1, 2, 3, 4).union(&Rect::new(0, 5, 2, 2));
        assert_eq!(u, Rect::new(0, 2, 4, 5));
        assert!(u.fits_in(4, 7) && !u.fits_in(3, 7) && !Rect::new(0, 0, 0, 1).fits_in(5, 5));
    }
}
