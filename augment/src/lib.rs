//! Image operations for self-supervised pretraining: JPEG decode (libjpeg-turbo, with DCT scaling
//! and region decode), crops and resizes, flips, colour operations. No threads, no torch.

mod error;
mod geometry;
mod jpeg;
mod rng;

pub use crate::error::{Error, Result};
pub use crate::geometry::{Rect, RgbImage};
pub use crate::jpeg::{
    DEFAULT_MAX_PIXELS, DecodeOptions, JpegColor, JpegInfo, Scale, decode_jpeg, encode_jpeg,
    jpeg_info,
};
pub use crate::rng::KeyedRng;
