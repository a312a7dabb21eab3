use super::*;
use crate::swap::SwapConfig;

fn sizes(n: usize) -> Arc<dyn RecordSizes> {
    Arc::new(
        (0..n)
            .map(|i| (200 + (i as u32 * 37) % 300, 150 + (i as u32 * 53) % 250))
            .collect::<Vec<_>>(),
    )
}

/// Records in shards of `shard` each, for the shard-local order.
#[derive(Debug)]
struct Sharded {
    n: usize,
    shard: usize,
}

impl RecordSizes for Sharded {
    fn num_records(&self) -> u64 {
        self.n as u64
    }
    fn size(&self, index: u64) -> (u32, u32) {
        (100 + (index % 7) as u32 * 20, 120)
    }
    fn shard_lens(&self) -> Vec<u64> {
        let (n, s) = (self.n as u64, self.shard as u64);
        (0..n.div_ceil(s)).map(|k| s.min(n - k * s)).collect()
    }
}

fn settings(batch: usize, rank: usize, world: usize) -> PlanSettings {
    PlanSettings {
        seed: 11,
        batch,
        rank,
        world,
        recipe: Recipe::mocov2(224),
        swap: Some(SwapPlanConfig { swap: SwapConfig::paper(224), bn_groups: 2 }),
        order: OrderKind::Shuffle,
        drop_last: true,
        max_steps_per_epoch: None,
    }
}

fn planner(n: usize, batch: usize, rank: usize, world: usize) -> Planner {
    Planner::new(settings(batch, rank, world), sizes(n)).unwrap()
}

#[test]
fn plans_are_reproducible_and_resume_exactly() {
    let mut a = planner(100, 8, 0, 1);
    let steps = a.steps_per_epoch();
    let mut all = Vec::new();
    for e in 0..2 {
        for s in 0..steps {
            all.push(a.plan(e, s));
        }
    }
    // A fresh planner asked for (1, 3) directly gives the same plan as the sequential run.
    let mut b = planner(100, 8, 0, 1);
    assert_eq!(b.plan(1, 3), all[12 + 3]);
    assert_eq!(a.steps_per_epoch(), 12);
    for p in &all {
        assert_eq!(p.views.len(), 2);
        assert!(p.views.iter().all(|v| v.len() == 8));
        let b = p.swap.unwrap();
        assert!((3..=5).contains(&b.grid.w));
        assert_eq!(p.pairing, vec![3, 2, 1, 0, 7, 6, 5, 4]);
    }
}

#[test]
fn view_params_depend_on_record_not_on_batching() {
    let mut a = planner(96, 8, 0, 1);
    let mut b = planner(96, 16, 0, 1);
    let pa = a.plan(0, 1);
    let pb = b.plan(0, 0);
    // Both batches contain records 8..16 of the epoch order: same parameters for each record.
    assert_eq!(pa.indices[..], pb.indices[8..]);
    assert_eq!(pa.views[0][..], pb.views[0][8..]);
    assert_eq!(pa.views[1][..], pb.views[1][8..]);
}

#[test]
fn crops_lie_inside_their_images() {
    let s = sizes(64);
    let mut p = planner(64, 8, 0, 1);
    for step in 0..p.steps_per_epoch() {
        let plan = p.plan(3, step);
        for (i, &idx) in plan.indices.iter().enumerate() {
            let (w, h) = s.size(idx);
            for v in 0..2 {
                assert!(plan.views[v][i].crop.fits_in(w, h));
            }
        }
    }
}

/// The elastic promise: the ranks' plans of a step, side by side, are the one-process plan of
/// that step (records, every view parameter, the swap box, and the pairing inside BN groups), for
/// the full shuffle and the shard-local order, over two epochs.
#[test]
fn global_batches_do_not_depend_on_the_world_size() {
    let local = OrderKind::ShardLocal { window: 2, partitions: 4 };
    for order in [OrderKind::Shuffle, local] {
        let make = |rank, world| {
            let s = PlanSettings {
                order,
                swap: Some(SwapPlanConfig { swap: SwapConfig::paper(224), bn_groups: 4 }),
                ..settings(16, rank, world)
            };
            Planner::new(s, Arc::new(Sharded { n: 203, shard: 10 })).unwrap()
        };
        let mut one = make(0, 1);
        for world in [2, 4] {
            let mut ranks: Vec<Planner> = (0..world).map(|r| make(r, world)).collect();
            assert!(ranks.iter().all(|r| r.steps_per_epoch() == one.steps_per_epoch()));
            for (epoch, step) in [(0, 0), (0, 5), (1, 11)] {
                let whole = one.plan(epoch, step);
                let parts: Vec<BatchPlan> = ranks.iter_mut().map(|r| r.plan(epoch, step)).collect();
                let cat = |f: &dyn Fn(&BatchPlan) -> Vec<u64>| -> Vec<u64> {
                    parts.iter().flat_map(f).collect()
                };
                assert_eq!(cat(&|p| p.indices.clone()), whole.indices, "{order:?} world {world}");
                for v in 0..2 {
                    let views: Vec<_> = parts.iter().flat_map(|p| p.views[v].clone()).collect();
                    assert_eq!(views, whole.views[v]);
                }
                let b = 16 / world;
                let pairs = cat(&|p| p.pairing.iter().map(|&j| u64::from(j)).collect());
                let global: Vec<u64> =
                    pairs.iter().enumerate().map(|(i, &j)| (i / b * b) as u64 + j).collect();
                assert_eq!(global, whole.pairing.iter().map(|&j| u64::from(j)).collect::<Vec<_>>());
                assert!(parts.iter().all(|p| p.swap == whole.swap));
            }
        }
    }
}

/// With as many ranks as parts, a rank reads its own part's shards: over an epoch of 20 shards in
/// 4 parts, each rank touches its 5 shards and at most the 2 it shares at its part's edges.
#[test]
fn shard_local_ranks_read_mostly_their_own_shards() {
    let order = OrderKind::ShardLocal { window: 1, partitions: 4 };
    let source = Arc::new(Sharded { n: 200, shard: 10 });
    let mut seen = Vec::new();
    for rank in 0..4 {
        let s = PlanSettings { order, swap: None, ..settings(8, rank, 4) };
        let mut p = Planner::new(s, source.clone()).unwrap();
        let mut shards: Vec<u64> = (0..p.steps_per_epoch())
            .flat_map(|step| p.plan(2, step).indices)
            .map(|i| i / 10)
            .collect();
        shards.sort_unstable();
        shards.dedup();
        assert!(shards.len() <= 7, "rank {rank} read {} shards: {shards:?}", shards.len());
        seen.extend(shards);
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 20, "together the ranks read every shard");
}

/// Without drop_last, the last batch is partial; over several ranks it is padded to a multiple of
/// the world with the epoch's first records, so every record is seen and each rank's share is
/// equal.
#[test]
fn a_kept_partial_batch_is_padded_across_ranks() {
    let plan = |rank, world| {
        let s = PlanSettings { drop_last: false, swap: None, ..settings(8, rank, world) };
        let mut p = Planner::new(s, sizes(21)).unwrap();
        assert_eq!(p.steps_per_epoch(), 3);
        (0..3).map(|step| p.plan(0, step).indices).collect::<Vec<_>>()
    };
    let one = plan(0, 1);
    assert_eq!(one[2].len(), 5);
    let mut all: Vec<u64> = one.concat();
    all.sort_unstable();
    assert_eq!(all, (0..21).collect::<Vec<_>>());
    let (r0, r1) = (plan(0, 2), plan(1, 2));
    assert_eq!((r0[2].len(), r1[2].len()), (3, 3));
    assert_eq!([r0[2].clone(), r1[2].clone()].concat()[..5], one[2][..]);
    assert_eq!(r1[2][2], one[0][0], "padded with the epoch's first record");
}

#[test]
fn bad_settings_are_rejected_naming_the_setting() {
    let err = |s: PlanSettings, n: usize| Planner::new(s, sizes(n)).unwrap_err().to_string();
    assert!(err(settings(6, 0, 1), 10).contains("batch_size"), "odd BN group");
    assert!(err(settings(16, 0, 1), 10).contains("batch_size"), "batch over the records");
    assert!(err(settings(8, 2, 2), 64).contains("world"));
    assert!(err(settings(6, 0, 4), 64).contains("batch_size"));
    assert!(err(settings(8, 0, 4), 64).contains("bn_groups"), "2 groups over 4 ranks");
    let small = PlanSettings { recipe: Recipe::mocov2(96), ..settings(4, 0, 1) };
    assert!(err(small, 10).contains("region_swap"));
    let kept = PlanSettings { drop_last: false, ..settings(4, 0, 1) };
    assert!(err(kept, 10).contains("drop_last"));
    let long = PlanSettings { max_steps_per_epoch: Some(3), ..settings(4, 0, 1) };
    assert!(err(long, 10).contains("max_steps_per_epoch"));
    assert!(err(settings(4, 0, 1), 0).contains("no records"));
    let dino = PlanSettings { recipe: Recipe::dino(2, 6), swap: None, ..settings(4, 0, 1) };
    assert!(Planner::new(dino, sizes(10)).is_ok());
}

#[test]
fn max_steps_per_epoch_cuts_every_epoch() {
    let s = PlanSettings { max_steps_per_epoch: Some(2), ..settings(8, 0, 1) };
    let mut p = Planner::new(s, sizes(100)).unwrap();
    assert_eq!(p.steps_per_epoch(), 2);
    assert_eq!(p.plan(1, 1), planner(100, 8, 0, 1).plan(1, 1));
}
