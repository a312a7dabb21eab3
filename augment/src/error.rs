//! Errors of the augment crate.

/// What went wrong in an image operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a decodable image (corrupt, truncated, not a JPEG, ...).
    #[error("decode: {message}")]
    Decode {
        /// The decoder's own message.
        message: String,
    },
    /// The image header claims more pixels than the configured limit (a decoder bomb).
    #[error("image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")]
    Limit {
        /// Width claimed by the header.
        width: u32,
        /// Height claimed by the header.
        height: u32,
        /// The limit in force.
        max_pixels: u64,
    },
    /// Encoding failed.
    #[error("encode: {message}")]
    Encode {
        /// The encoder's own message.
        message: String,
    },
    /// A caller-supplied argument is out of range (a region outside the image, a bad size, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Result alias of the augment crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
