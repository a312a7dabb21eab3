//! [`Dataset::verify`]: every byte of a dataset checked, with the definition of a bad record the
//! pipeline uses.

use std::sync::atomic::{AtomicUsize, Ordering};

use regioncl_augment::RgbImage;

use crate::dataset::Dataset;
use crate::error::Error;
use crate::record::check;

/// Records a verify thread takes at a time.
const BLOCK: usize = 256;

/// What [`Dataset::verify`] found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Records checked.
    pub records_checked: u64,
    /// Shard files whose crc32c differs from the manifest's ([`Error::Checksum`]), then bad
    /// records ([`Error::BadRecord`]) in record order.
    pub problems: Vec<Error>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Dataset {
    /// Checks every byte: each shard file against the manifest's crc32c, and each record as the
    /// pipeline uses it, but whole: its crc32c, its JPEG header against its index entry, and a
    /// strict decode of every pixel (see [`BadRecord`](crate::BadRecord)). A record this passes is
    /// never bad in training or evaluation. Runs on `threads` threads (0: every core) and calls
    /// `progress` with the number of records just checked.
    pub fn verify(&self, threads: usize, progress: &(dyn Fn(u64) + Sync)) -> VerifyReport {
        let mut problems: Vec<Error> =
            (0..self.shards().len()).filter_map(|k| self.verify_shard(k).err()).collect();
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let next = AtomicUsize::new(0);
        let mut bad: Vec<(u64, Error)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let (mut found, mut buf, mut image) =
                            (Vec::new(), Vec::new(), RgbImage::new());
                        loop {
                            let start = next.fetch_add(BLOCK, Ordering::Relaxed);
                            if start >= self.len() {
                                break found;
                            }
                            let end = (start + BLOCK).min(self.len());
                            for i in start as u64..end as u64 {
                                if let Err(e) = check(self, i, &mut buf, &mut image) {
                                    found.push((i, Error::from(e)));
                                }
                            }
                            progress((end - start) as u64);
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect()
        });
        bad.sort_by_key(|(i, _)| *i);
        problems.extend(bad.into_iter().map(|(_, e)| e));
        VerifyReport { records_checked: self.len() as u64, problems }
    }
}
