//! A dataset directory: the manifest and its shards, opened and cross-checked.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{ChecksumError, Error, ManifestError, Result};
use crate::manifest::{MANIFEST_FILE, Manifest, is_plain_file_name};
use crate::shard::reader::{Record, Shard};

/// An open dataset: every shard mapped and validated, records addressed by a global index
/// (shard 0's records first, then shard 1's, ...).
///
/// ```no_run
/// # fn main() -> regioncl_loader::Result<()> {
/// let dataset = regioncl_loader::Dataset::open("shards/imagenet")?;
/// let record = dataset.record(42)?;
/// let class = &dataset.class_names()[record.label as usize];
/// println!("{} bytes, class {class}", record.bytes.len());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Dataset {
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<Shard>,
    /// Global index of each shard's first record, and the total at the end.
    starts: Vec<usize>,
}

impl Dataset {
    /// Opens `dir`: reads the manifest, opens every shard it lists (validating each, see
    /// [`Shard::open`]) and checks the shards against the manifest: record counts, file sizes,
    /// totals, and every label below the number of classes. Whole-file checksums are not read
    /// here (that reads every byte): see [`Dataset::verify_shard`].
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Manifest`] for a bad manifest or a disagreement with a shard,
    /// [`Error::Format`] for a corrupt shard.
    pub fn open(dir: impl AsRef<Path>) -> Result<Dataset> {
        let dir = dir.as_ref().to_path_buf();
        let manifest_path = dir.join(MANIFEST_FILE);
        let manifest = Manifest::read(&manifest_path)?;
        let mut shards = Vec::with_capacity(manifest.shards.len().min(1 << 16));
        let mut starts = Vec::with_capacity(shards.capacity() + 1);
        let mut total = 0usize;
        let mut total_bytes = 0u64;
        let num_classes = manifest.class_names.len() as u64;
        for info in &manifest.shards {
            if !is_plain_file_name(&info.file) {
                let kind = ManifestError::BadFileName { name: info.file.clone() };
                return Err(Error::manifest(&manifest_path, kind));
            }
            let shard = Shard::open(dir.join(&info.file))?;
            let mismatch = |what, manifest: u64, actual: u64| {
                Error::manifest(shard.path(), ManifestError::Mismatch { what, manifest, actual })
            };
            if shard.len() as u64 != info.num_records {
                return Err(mismatch("record count", info.num_records, shard.len() as u64));
            }
            if shard.file_len() != info.num_bytes {
                return Err(mismatch("file size", info.num_bytes, shard.file_len()));
            }
            for i in 0..shard.len() {
                let label = shard.record(i)?.label;
                if u64::from(label) >= num_classes {
                    let kind =
                        ManifestError::LabelOutOfRange { index: i as u64, label, num_classes };
                    return Err(Error::manifest(shard.path(), kind));
                }
            }
            starts.push(total);
            total += shard.len();
            total_bytes += shard.file_len();
            shards.push(shard);
        }
        starts.push(total);
        let mismatch = |what, manifest: u64, actual: u64| {
            Error::manifest(&manifest_path, ManifestError::Mismatch { what, manifest, actual })
        };
        if total as u64 != manifest.num_records {
            return Err(mismatch("total records", manifest.num_records, total as u64));
        }
        if total_bytes != manifest.num_bytes {
            return Err(mismatch("total bytes", manifest.num_bytes, total_bytes));
        }
        Ok(Dataset { dir, manifest, shards, starts })
    }

    /// The dataset directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    /// Whether the dataset holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.manifest.class_names.len()
    }

    /// Class names, indexed by label.
    pub fn class_names(&self) -> &[String] {
        &self.manifest.class_names
    }

    /// The shards, in global order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Global indices of shard `shard`'s records (empty for a shard past the end).
    pub fn shard_range(&self, shard: usize) -> Range<usize> {
        match (self.starts.get(shard), self.starts.get(shard + 1)) {
            (Some(&a), Some(&b)) => a..b,
            _ => self.len()..self.len(),
        }
    }

    /// The shard holding global record `index` and the record's index inside it: a binary search
    /// over the shard starts, no allocation.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for an index past the end.
    pub fn locate(&self, index: usize) -> Result<(usize, usize)> {
        if index >= self.len() {
            return Err(Error::OutOfRange {
                index: index as u64,
                len: self.len() as u64,
                what: "record",
            });
        }
        // The last start <= index; empty shards share their start with the next one, and
        // partition_point skips past them.
        let shard = self.starts.partition_point(|&s| s <= index) - 1;
        Ok((shard, index - self.starts[shard]))
    }

    /// Global record `index`. O(log shards), no allocation.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for an index past the end.
    pub fn record(&self, index: usize) -> Result<Record<'_>> {
        let (shard, local) = self.locate(index)?;
        self.shards[shard].record(local)
    }

    /// Global record `index`, after checking its bytes against their crc32c.
    ///
    /// # Errors
    /// As [`Dataset::record`], and [`Error::Checksum`] naming the shard, record and offset.
    pub fn verify_record(&self, index: usize) -> Result<Record<'_>> {
        let (shard, local) = self.locate(index)?;
        self.shards[shard].verify_record(local)
    }

    /// Checks shard `shard`'s whole file against the crc32c in the manifest (reads every byte).
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for a shard past the end, [`Error::Checksum`] on a mismatch.
    pub fn verify_shard(&self, shard: usize) -> Result<()> {
        let (Some(s), Some(info)) = (self.shards.get(shard), self.manifest.shards.get(shard))
        else {
            return Err(Error::OutOfRange {
                index: shard as u64,
                len: self.shards.len() as u64,
                what: "shard",
            });
        };
        let computed = s.file_crc32c();
        if computed != info.crc32c {
            return Err(Error::Checksum {
                path: s.path().to_path_buf(),
                kind: ChecksumError::File { stored: info.crc32c, computed },
            });
        }
        Ok(())
    }
}
