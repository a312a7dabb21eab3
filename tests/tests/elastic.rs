//! The elastic order end to end (issue 14): a run's global batches do not depend on the number of
//! processes, from shards as from photos, so a 2-process run trains like one process.

use std::ffi::OsStr;

use crate::cli::{TempDir, run_ok};
use crate::dist_train::{losses, train_args, train_world};

/// From shards, 2 ranks (each its half of every global batch, one BN group each, cross-rank
/// shuffle-BN and gathered keys) give the one-process losses for 8 steps, within float noise (the
/// all-reduce sums gradients in another order). Before the elastic order, each rank read its own
/// block of the epoch and the losses differed from the first step (3.496 vs 3.504).
#[test]
fn two_ranks_from_shards_train_like_one_process() {
    let dir = TempDir::new("elastic-shards");
    let root = format!("data.root={}", crate::train::shards().display());
    let sets = ["data.source=shards", &root, "run.max_steps=8", "run.checkpoint_every=0"];
    let (two, one) = (dir.path().join("two"), dir.path().join("one"));
    train_world(&two, &dir.path().join("rank1"), &sets, false);
    let args = train_args(&one, &sets, false);
    run_ok(&args.iter().map(|a| a as &dyn AsRef<OsStr>).collect::<Vec<_>>());
    let (a, b) = (losses(&one), losses(&two));
    assert_eq!(a.len(), 8);
    assert_eq!(b.iter().map(|l| l.0).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
    for (x, y) in a.iter().zip(&b) {
        for (p, q) in [(x.1, y.1), (x.2, y.2), (x.3, y.3)] {
            assert!((p - q).abs() < 1e-3 * p.abs().max(1.0), "step {}: {x:?} vs {y:?}", x.0);
        }
    }
}
