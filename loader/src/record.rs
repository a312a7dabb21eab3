//! The one definition of a bad record, shared by [`Dataset::verify`](crate::Dataset::verify),
//! training and evaluation, and the one decode policy behind it.
//!
//! A record is bad when its bytes cannot be read or fail their crc32c, when its JPEG header gives
//! another size than its index entry, or when libjpeg-turbo reports anything while decoding it,
//! warnings included (strict: a truncated or corrupt segment is never decoded into grey pixels).
//! The pipeline decodes only the scale and region its views need, so a record damaged outside
//! them may serve one epoch and be bad in the next; `Dataset::verify` decodes every record whole,
//! so it reports every record that can ever be bad. What happens to a bad record is the
//! pipeline's [`BadRecords`](crate::BadRecords) policy: replaced (training), an error
//! (evaluation) or skipped.

use regioncl_augment::{DecodeOptions, RgbImage, jpeg_info};

use crate::error::Error;
use crate::shard::reader::Record;
use crate::source::RecordSource;

/// A record that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{location} (record {index})")]
pub struct BadRecord {
    /// Its global index.
    pub index: u64,
    /// Where it lives ([`RecordSource::describe`]).
    pub location: String,
    /// What is wrong.
    #[source]
    pub kind: BadRecordKind,
}

/// What is wrong with a [`BadRecord`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BadRecordKind {
    /// Its bytes cannot be read, or fail their checksum.
    #[error(transparent)]
    Read(Box<Error>),
    /// Its JPEG header and its index entry disagree on the size.
    #[error("the JPEG header says {header:?}, the index says {index:?} (width, height)")]
    SizeMismatch {
        /// `(width, height)` from the header.
        header: (u32, u32),
        /// `(width, height)` from the index.
        index: (u32, u32),
    },
    /// libjpeg-turbo fails, or warns, on it.
    #[error("does not decode")]
    Decode(#[source] regioncl_augment::Error),
    /// One of its views cannot be rendered from the decoded pixels.
    #[error("view {view} does not render")]
    Render {
        /// The view.
        view: usize,
        /// Why.
        #[source]
        source: regioncl_augment::Error,
    },
}

impl BadRecord {
    pub(crate) fn new(source: &dyn RecordSource, index: u64, kind: BadRecordKind) -> Self {
        Self { index, location: source.describe(index), kind }
    }
}

/// Decodes `record` under the one decode policy (strict; the header's size must be the index's)
/// at the scale and region of `options`, into `image`.
pub(crate) fn decode(
    record: &Record<'_>,
    options: &DecodeOptions,
    image: &mut RgbImage,
) -> Result<(), BadRecordKind> {
    let info = jpeg_info(record.bytes).map_err(BadRecordKind::Decode)?;
    if (info.width, info.height) != (record.width, record.height) {
        return Err(BadRecordKind::SizeMismatch {
            header: (info.width, info.height),
            index: (record.width, record.height),
        });
    }
    let options = DecodeOptions { strict: true, ..*options };
    regioncl_augment::decode_jpeg(record.bytes, &options, image).map_err(BadRecordKind::Decode)
}

/// Reads record `index` and decodes it whole: whether it is bad, whatever views are planned.
pub(crate) fn check(
    source: &dyn RecordSource,
    index: u64,
    buf: &mut Vec<u8>,
    image: &mut RgbImage,
) -> Result<(), BadRecord> {
    let record = source
        .read(index, buf)
        .map_err(|e| BadRecord::new(source, index, BadRecordKind::Read(Box::new(e))))?;
    decode(&record, &DecodeOptions::default(), image)
        .map_err(|kind| BadRecord::new(source, index, kind))
}

/// `e` and its sources, joined by `": "` (the form a report line takes).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}
