//! The order in which an epoch visits the records: one global sequence per epoch, a pure function of
//! `(seed, epoch)` and the shard layout, the same whatever the number of ranks.
//!
//! - [`OrderKind::Shuffle`]: a full permutation of the global index, new each epoch (ImageNet fits
//!   the page cache of a training node; this is what MoCo's `DistributedSampler` does).
//! - [`OrderKind::ShardLocal`]: for data larger than RAM (FFCV's quasi-random order, WebDataset's
//!   shard shuffle). Shards are permuted and their records laid end to end, the list is cut into
//!   `partitions` equal contiguous parts (MosaicML Streaming's canonical nodes), and inside each
//!   part the records of every `window` consecutive shards are shuffled together. Global batch `k`
//!   takes `batch / partitions` records from each part, in part order. Convert writes records in a
//!   seeded random order, so every shard already mixes classes.
//! - [`OrderKind::Sequential`]: stored order (evaluation, feature banks).
//!
//! The planner cuts the sequence into global batches and gives rank `r` of `W` the `r`-th
//! contiguous `batch / W` of each (see [`Planner`](crate::Planner)). Under the shard-local order
//! with `W` dividing `partitions`, that slice is exactly the contribution of parts
//! `[r P / W, (r + 1) P / W)`: each rank reads its own shards (those at the boundary of two parts
//! are shared by two ranks) and still trains on the batches one process would.

use regioncl_augment::KeyedRng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Stream tag of the order in the keyed generator (distinct from views, boxes, substitutes).
const STREAM_ORDER: u64 = 0x006f_7264_6572; // "order"

/// The kind of epoch order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum OrderKind {
    /// A full permutation of all records per epoch.
    #[default]
    Shuffle,
    /// Shard-local quasi-random order.
    ///
    /// What locality costs: a process reads `partitions * window` shards at a time (one window
    /// per part), the global batch must be a multiple of `partitions`, each epoch drops the
    /// `num_records % partitions` records the parts cannot share evenly (a different tail every
    /// epoch), and a world size that does not divide `partitions` still gets the same batches but
    /// ranks then read from the parts of their neighbours too.
    ShardLocal {
        /// Consecutive shards (of a part) whose records are shuffled together.
        window: usize,
        /// Equal parts of the shard list, read side by side: a multiple of every world size the
        /// run may use (8 covers 1, 2, 4 and 8 ranks).
        partitions: usize,
    },
    /// Records in stored order.
    Sequential,
}

/// The per-epoch global record sequence.
#[derive(Clone, Debug)]
pub(crate) struct Order {
    kind: OrderKind,
    seed: u64,
    shard_lens: Vec<u64>,
    /// Records each part gives a global batch (shard-local order; 0 otherwise).
    per_part: usize,
}

impl Order {
    /// An order over shards holding `shard_lens[i]` records each (in stored order), for global
    /// batches of `batch`.
    ///
    /// # Errors
    /// [`Error::Config`] for a window or partition count of 0, a batch that is not a multiple of
    /// the partitions, or fewer records than partitions.
    pub fn new(kind: OrderKind, seed: u64, shard_lens: Vec<u64>, batch: usize) -> Result<Self> {
        let bad = |field: &str, why: String| Err(Error::Config(format!("{field}: {why}")));
        let mut per_part = 0;
        if let OrderKind::ShardLocal { window, partitions } = kind {
            if window == 0 {
                return bad("order.window", "must be at least 1 shard".into());
            }
            if partitions == 0 || !batch.is_multiple_of(partitions) {
                return bad(
                    "order.partitions",
                    format!("{partitions} must be at least 1 and divide the batch of {batch}"),
                );
            }
            if shard_lens.iter().sum::<u64>() < partitions as u64 {
                return bad("order.partitions", format!("{partitions} exceed the records"));
            }
            per_part = batch / partitions;
        }
        Ok(Self { kind, seed, shard_lens, per_part })
    }

    /// Records in the dataset.
    pub fn num_records(&self) -> u64 {
        self.shard_lens.iter().sum()
    }

    /// Length of every epoch's sequence: every record, but under the shard-local order the
    /// `num_records % partitions` that the parts cannot share evenly.
    pub fn len(&self) -> u64 {
        match self.kind {
            OrderKind::ShardLocal { partitions, .. } => {
                let p = partitions as u64;
                self.num_records() / p * p
            }
            _ => self.num_records(),
        }
    }

    /// The global record indices of `epoch`, in order.
    pub fn epoch(&self, epoch: u64) -> Vec<u64> {
        let n = self.num_records();
        let mut rng = KeyedRng::new(&[self.seed, epoch, STREAM_ORDER]);
        match self.kind {
            OrderKind::Sequential => (0..n).collect(),
            OrderKind::Shuffle => {
                let mut v: Vec<u64> = (0..n).collect();
                rng.shuffle(&mut v);
                v
            }
            OrderKind::ShardLocal { window, partitions } => {
                let mut shards: Vec<usize> = (0..self.shard_lens.len()).collect();
                rng.shuffle(&mut shards);
                // The records of the permuted shards end to end, each tagged with its shard.
                let mut starts = vec![0u64; self.shard_lens.len()];
                for s in 1..starts.len() {
                    starts[s] = starts[s - 1] + self.shard_lens[s - 1];
                }
                let tagged: Vec<(usize, u64)> = shards
                    .iter()
                    .flat_map(|&s| (starts[s]..starts[s] + self.shard_lens[s]).map(move |i| (s, i)))
                    .collect();
                let part_len = (n / partitions as u64) as usize;
                let parts: Vec<Vec<u64>> = tagged
                    .chunks(part_len)
                    .take(partitions)
                    .map(|part| window_shuffle(part, window, &mut rng))
                    .collect();
                interleave(&parts, self.per_part)
            }
        }
    }
}

/// The records of `part` (tagged with their shard, shards contiguous), shuffled inside each group
/// of `window` consecutive shards.
fn window_shuffle(part: &[(usize, u64)], window: usize, rng: &mut KeyedRng) -> Vec<u64> {
    let mut out: Vec<u64> = part.iter().map(|&(_, i)| i).collect();
    let (mut begin, mut shards_seen) = (0, 0);
    for j in 0..part.len() {
        let last = j + 1 == part.len() || part[j + 1].0 != part[j].0;
        if last {
            shards_seen += 1;
            if shards_seen == window || j + 1 == part.len() {
                rng.shuffle(&mut out[begin..=j]);
                begin = j + 1;
                shards_seen = 0;
            }
        }
    }
    out
}

/// Batch-major interleaving: `per` records of part 0, `per` of part 1, ..., then the next `per`
/// of part 0, and so on (the last round takes what the parts have left).
fn interleave(parts: &[Vec<u64>], per: usize) -> Vec<u64> {
    let len = parts.first().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(len * parts.len());
    for start in (0..len).step_by(per.max(1)) {
        for part in parts {
            out.extend_from_slice(&part[start..(start + per).min(len)]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_perm(v: &[u64], n: u64) -> bool {
        let mut s = v.to_vec();
        s.sort_unstable();
        s == (0..n).collect::<Vec<_>>()
    }

    #[test]
    fn each_epoch_is_a_permutation_and_epochs_differ() {
        let local = OrderKind::ShardLocal { window: 2, partitions: 1 };
        for kind in [OrderKind::Shuffle, local] {
            let o = Order::new(kind, 3, vec![10, 7, 13, 5], 8).unwrap();
            let e0 = o.epoch(0);
            let e1 = o.epoch(1);
            assert!(is_perm(&e0, 35) && is_perm(&e1, 35), "{kind:?}");
            assert_ne!(e0, e1);
            assert_eq!(e0, o.epoch(0), "same seed and epoch, same order");
        }
        let seq = Order::new(OrderKind::Sequential, 3, vec![4, 4], 2).unwrap();
        assert_eq!(seq.epoch(7), (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn shard_local_reads_one_window_at_a_time() {
        let kind = OrderKind::ShardLocal { window: 2, partitions: 1 };
        let o = Order::new(kind, 9, vec![4u64; 8], 8).unwrap();
        let e = o.epoch(5);
        for block in e.chunks(8) {
            let mut shards: Vec<u64> = block.iter().map(|i| i / 4).collect();
            shards.sort_unstable();
            shards.dedup();
            assert_eq!(shards.len(), 2, "a window of 8 records spans exactly 2 shards: {block:?}");
        }
    }

    /// With 4 parts and batches of 8, every batch takes 2 records of each part, in part order, and
    /// each part reads its own quarter of the (permuted) shards, one window at a time.
    #[test]
    fn partitions_feed_their_own_slice_of_every_batch() {
        let kind = OrderKind::ShardLocal { window: 1, partitions: 4 };
        let o = Order::new(kind, 2, vec![6u64; 8], 8).unwrap();
        assert_eq!(o.len(), 48);
        let e = o.epoch(3);
        assert!(is_perm(&e, 48));
        let shard = |i: u64| i / 6;
        for p in 0..4 {
            // Part p's records: positions 2p, 2p+1 of every batch of 8.
            let mine: Vec<u64> = e.chunks(8).flat_map(|b| b[2 * p..2 * p + 2].to_vec()).collect();
            let mut shards: Vec<u64> = mine.iter().map(|&i| shard(i)).collect();
            shards.dedup();
            assert_eq!(shards.len(), 2, "part {p} reads 2 whole shards in turn: {mine:?}");
        }
        // A remainder the parts cannot share is dropped; odd batches are refused.
        assert_eq!(Order::new(kind, 2, vec![6, 6, 7], 8).unwrap().len(), 16);
        assert!(Order::new(kind, 2, vec![6u64; 8], 6).is_err());
        let zero = OrderKind::ShardLocal { window: 0, partitions: 1 };
        assert!(Order::new(zero, 0, vec![9], 1).is_err());
    }
}
