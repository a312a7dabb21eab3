//! Pixel rectangles and RGB image buffers.

/// An axis-aligned rectangle in pixel coordinates: columns `[x, x + w)`, rows `[y, y + h)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
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
