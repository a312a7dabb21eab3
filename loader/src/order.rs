//! Which records a rank reads in an epoch, and in what order.
//!
//! Two orders, both a pure function of `(seed, epoch)` and the shard layout:
//! - [`OrderKind::Shuffle`]: a full permutation of the global index, new each epoch (ImageNet fits
//!   the page cache of a training node; this is what MoCo's `DistributedSampler` does).
//! - [`OrderKind::ShardLocal`]: for data larger than RAM. Shards are permuted, grouped into windows
//!   of `window` shards, and the records of each window are shuffled together, so at any time only
//!   `window` shards are being read (FFCV's quasi-random order, WebDataset's shard shuffle). Convert
//!   writes records in a seeded random order, so every shard already mixes classes.
//!
//! Ranks: the epoch's sequence is cut to a multiple of `world` ([`Tail::Drop`], the default, drops
//! at most `world - 1` records; [`Tail::Pad`] repeats the first ones), and rank `r` takes the `r`-th
//! contiguous block (contiguous, so under the shard-local order each rank reads its own shards).
//! The blocks are disjoint, of equal length, and together cover every record once per epoch.

use regioncl_augment::KeyedRng;

use crate::error::{Error, Result};

/// Stream tag of the order in the keyed generator (distinct from views, boxes, substitutes).
const STREAM_ORDER: u64 = 0x006f_7264_6572; // "order"

/// The kind of epoch order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OrderKind {
    /// A full permutation of all records per epoch.
    Shuffle,
    /// Shard-local quasi-random order: shards permuted, records shuffled inside windows of
    /// `window` consecutive (permuted) shards.
    ShardLocal {
        /// Shards read at once.
        window: usize,
    },
    /// Records in stored order (evaluation, feature banks).
    Sequential,
}

/// What to do with the records that do not divide evenly among ranks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Tail {
    /// Drop the last `len % world` records of the epoch's sequence (they differ every epoch).
    #[default]
    Drop,
    /// Repeat the first records of the sequence until it divides evenly.
    Pad,
}

/// The per-epoch sample order of one rank.
#[derive(Clone, Debug)]
pub struct Order {
    kind: OrderKind,
    seed: u64,
    shard_lens: Vec<u64>,
    rank: usize,
    world: usize,
    tail: Tail,
}

impl Order {
    /// An order over shards holding `shard_lens[i]` records each (in stored order).
    ///
    /// # Errors
    /// [`Error::Config`] if `rank >= world`, `world == 0`, a window is 0, or there are fewer
    /// records than ranks.
    pub fn new(
        kind: OrderKind,
        seed: u64,
        shard_lens: Vec<u64>,
        rank: usize,
        world: usize,
        tail: Tail,
    ) -> Result<Self> {
        let bad = |field: &str, why: String| Err(Error::Config(format!("{field}: {why}")));
        if world == 0 || rank >= world {
            return bad("rank", format!("rank {rank} is not in a world of {world}"));
        }
        if let OrderKind::ShardLocal { window: 0 } = kind {
            return bad("order.window", "must be at least 1 shard".into());
        }
        let total: u64 = shard_lens.iter().sum();
        if total < world as u64 {
            return bad("world", format!("{total} records cannot be shared by {world} ranks"));
        }
        Ok(Self { kind, seed, shard_lens, rank, world, tail })
    }

    /// Records in the dataset.
    pub fn num_records(&self) -> u64 {
        self.shard_lens.iter().sum()
    }

    /// Records this rank sees per epoch.
    pub fn len_per_rank(&self) -> u64 {
        let n = self.num_records();
        let w = self.world as u64;
        match self.tail {
            Tail::Drop => n / w,
            Tail::Pad => n.div_ceil(w),
        }
    }

    /// The global record indices this rank reads in `epoch`, in order.
    pub fn epoch(&self, epoch: u64) -> Vec<u64> {
        let mut all = self.global_sequence(epoch);
        let per = self.len_per_rank() as usize;
        let needed = per * self.world;
        if all.len() < needed {
            let pad: Vec<u64> = all.iter().copied().cycle().take(needed - all.len()).collect();
            all.extend(pad);
        }
        all.truncate(needed);
        all[self.rank * per..(self.rank + 1) * per].to_vec()
    }

    fn global_sequence(&self, epoch: u64) -> Vec<u64> {
        let n = self.num_records();
        let mut rng = KeyedRng::new(&[self.seed, epoch, STREAM_ORDER]);
        match self.kind {
            OrderKind::Sequential => (0..n).collect(),
            OrderKind::Shuffle => {
                let mut v: Vec<u64> = (0..n).collect();
                rng.shuffle(&mut v);
                v
            }
            OrderKind::ShardLocal { window } => {
                let mut starts = Vec::with_capacity(self.shard_lens.len());
                let mut acc = 0u64;
                for &len in &self.shard_lens {
                    starts.push(acc);
                    acc += len;
                }
                let mut shards: Vec<usize> = (0..self.shard_lens.len()).collect();
                rng.shuffle(&mut shards);
                let mut out = Vec::with_capacity(n as usize);
                for group in shards.chunks(window) {
                    let begin = out.len();
                    for &s in group {
                        out.extend(starts[s]..starts[s] + self.shard_lens[s]);
                    }
                    rng.shuffle(&mut out[begin..]);
                }
                out
            }
        }
    }
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
        for kind in [OrderKind::Shuffle, OrderKind::ShardLocal { window: 2 }] {
            let o = Order::new(kind, 3, vec![10, 7, 13, 5], 0, 1, Tail::Drop).unwrap();
            let e0 = o.epoch(0);
            let e1 = o.epoch(1);
            assert!(is_perm(&e0, 35) && is_perm(&e1, 35), "{kind:?}");
            assert_ne!(e0, e1);
            assert_eq!(e0, o.epoch(0), "same seed and epoch, same order");
        }
    }

    #[test]
    fn shard_local_reads_one_window_at_a_time() {
        let lens = vec![4u64; 8];
        let o = Order::new(OrderKind::ShardLocal { window: 2 }, 9, lens, 0, 1, Tail::Drop).unwrap();
        let e = o.epoch(5);
        for block in e.chunks(8) {
            let mut shards: Vec<u64> = block.iter().map(|i| i / 4).collect();
            shards.sort_unstable();
            shards.dedup();
            assert_eq!(shards.len(), 2, "a window of 8 records spans exactly 2 shards: {block:?}");
        }
    }

    #[test]
    fn ranks_are_disjoint_equal_and_cover_the_epoch() {
        for (n, world) in [(100u64, 4usize), (103, 4), (9, 3), (17, 8)] {
            let parts: Vec<Vec<u64>> = (0..world)
                .map(|r| {
                    Order::new(OrderKind::Shuffle, 1, vec![n], r, world, Tail::Drop)
                        .unwrap()
                        .epoch(2)
                })
                .collect();
            let len = parts[0].len();
            assert!(parts.iter().all(|p| p.len() == len));
            let mut all: Vec<u64> = parts.concat();
            all.sort_unstable();
            let before = all.len();
            all.dedup();
            assert_eq!(all.len(), before, "disjoint");
            assert_eq!(all.len() as u64, n - n % world as u64);
        }
    }

    #[test]
    fn pad_covers_every_record() {
        let world = 4;
        let mut all: Vec<u64> = (0..world)
            .flat_map(|r| {
                Order::new(OrderKind::Shuffle, 1, vec![10], r, world, Tail::Pad).unwrap().epoch(0)
            })
            .collect();
        assert_eq!(all.len(), 12);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 10);
    }

    #[test]
    fn bad_rank_world_are_errors() {
        assert!(Order::new(OrderKind::Shuffle, 0, vec![10], 2, 2, Tail::Drop).is_err());
        assert!(Order::new(OrderKind::Shuffle, 0, vec![1], 0, 2, Tail::Drop).is_err());
        assert!(
            Order::new(OrderKind::ShardLocal { window: 0 }, 0, vec![9], 0, 1, Tail::Drop).is_err()
        );
    }
}
