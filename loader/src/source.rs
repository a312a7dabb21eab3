//! Where records come from: the two traits a pipeline reads through, and their implementation for a
//! shard [`Dataset`]. [`ImageFolder`](crate::ImageFolder) implements them over the JPEG files of an
//! ImageFolder tree.

use crate::dataset::Dataset;
use crate::error::Result;
use crate::shard::reader::Record;

/// What planning needs to know of the records, before any byte is decoded.
pub trait RecordSizes: Send + Sync {
    /// Number of records.
    fn num_records(&self) -> u64;

    /// `(width, height)` of record `index` (`index < num_records()`).
    fn size(&self, index: u64) -> (u32, u32);

    /// The identity record `index`'s view parameters are drawn from. Shards and folders give the
    /// crc32c of the record's bytes, so an image gets the same views (for a seed and epoch)
    /// whether it is read from its folder, from the shards `regioncl convert` made of it (which
    /// keeps clean JPEGs byte for byte, in another order) or from Python. Two identical files share
    /// their views, and so, rarely, do two files whose crc32c collide. Default: the index.
    fn view_key(&self, index: u64) -> u64 {
        index
    }

    /// Records per shard, in stored order: the unit the shard-local order keeps together
    /// ([`OrderKind::ShardLocal`](crate::OrderKind::ShardLocal)). Sources without shards are one.
    fn shard_lens(&self) -> Vec<u64> {
        vec![self.num_records()]
    }
}

/// A random-access source of encoded records (JPEG bytes, label, size): what the pipeline's
/// workers read. Implementations are shared by every worker thread.
pub trait RecordSource: RecordSizes + std::fmt::Debug {
    /// Record `index`, with everything about it checked that can be checked without decoding
    /// (a shard record's crc32c). The bytes either borrow the source (a mapped shard) or are read
    /// into `buf`, which the caller reuses between reads.
    ///
    /// # Errors
    /// [`Error::OutOfRange`](crate::Error::OutOfRange), [`Error::Checksum`](crate::Error::Checksum),
    /// [`Error::Io`](crate::Error::Io) and [`Error::Limit`](crate::Error::Limit), naming the file.
    fn read<'a>(&'a self, index: u64, buf: &'a mut Vec<u8>) -> Result<Record<'a>>;

    /// Where record `index` lives, for messages: `"shard.rcl: record 12 at offset 3456"`, or a file
    /// path.
    fn describe(&self, index: u64) -> String;
}

impl RecordSizes for Dataset {
    fn num_records(&self) -> u64 {
        self.len() as u64
    }

    fn size(&self, index: u64) -> (u32, u32) {
        // Opening the dataset validated every index entry; an index past the end is a caller bug
        // that the planner cannot produce (its order covers exactly `num_records`).
        self.record(index as usize).map_or((1, 1), |r| (r.width, r.height))
    }

    fn view_key(&self, index: u64) -> u64 {
        self.record(index as usize).map_or(index, |r| u64::from(r.crc))
    }

    fn shard_lens(&self) -> Vec<u64> {
        (0..self.shards().len()).map(|s| self.shard_range(s).len() as u64).collect()
    }
}

impl RecordSource for Dataset {
    fn read<'a>(&'a self, index: u64, _buf: &'a mut Vec<u8>) -> Result<Record<'a>> {
        // The crc32c check (hardware crc, ~3 us for a 100 KB record) turns a flipped bit on disk
        // into a bad record instead of a silently wrong image.
        self.verify_record(usize::try_from(index).unwrap_or(usize::MAX))
    }

    fn describe(&self, index: u64) -> String {
        match self.locate(usize::try_from(index).unwrap_or(usize::MAX)) {
            Ok((shard, local)) => {
                let s = &self.shards()[shard];
                let offset = s.record_offset(local).unwrap_or(0);
                format!("{}: record {local} at offset {offset}", s.path().display())
            }
            Err(_) => format!("{}: record {index}", self.dir().display()),
        }
    }
}

/// Record sizes held in memory: `sizes[i]` is record `i`'s `(width, height)`. For planning without
/// a dataset (synthetic inputs, tests).
impl RecordSizes for Vec<(u32, u32)> {
    fn num_records(&self) -> u64 {
        self.len() as u64
    }

    fn size(&self, index: u64) -> (u32, u32) {
        self[index as usize]
    }
}
