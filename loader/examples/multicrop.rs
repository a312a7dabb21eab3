//! Using the loader from another SSL project: a DINO/SwAV-style multi-crop recipe (2 x 224 global
//! views + 6 x 96 local views), colour left to the consumer, no libtorch anywhere.
//!
//! ```text
//! cargo run --release -p regioncl-loader --example multicrop -- DATASET [BATCHES]
//! ```
//!
//! `DATASET` is a directory written by `regioncl convert`.

use std::sync::Arc;

use regioncl_loader::{
    Dataset, HeapAllocator, Order, OrderKind, Pipeline, PipelineConfig, Planner, Recipe, Tail,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: multicrop DATASET [BATCHES]")?;
    let batches: usize = args.next().map_or(Ok(10), |s| s.parse())?;
    let dataset = Arc::new(Dataset::open(&dir)?);

    // This rank's order: a fresh shuffle each epoch, rank 0 of a world of 1.
    let shard_lens =
        (0..dataset.shards().len()).map(|s| dataset.shard_range(s).len() as u64).collect();
    let order = Order::new(OrderKind::Shuffle, 42, shard_lens, 0, 1, Tail::Drop)?;

    // Two global and six local views per image; every random choice is planned up front.
    let recipe = Recipe::multi_crop(2, 224, 6, 96);
    let planner = Planner::new(42, 32, recipe, None, order, dataset.clone())?;
    let config = PipelineConfig { batches_ahead: 4, ..PipelineConfig::default() };
    let pipeline = Pipeline::new(dataset, planner, config, &HeapAllocator)?;

    for batch in pipeline.take(batches) {
        let batch = batch?;
        let sizes: Vec<String> = (0..batch.num_views())
            .map(|v| {
                let view = batch.view(v);
                format!("{}x{}", view.width, view.height)
            })
            .collect();
        // Each view is a contiguous u8 [B, H, W, 3] buffer; the planned colour parameters
        // (jitter factors and order, grayscale, blur sigma) are in `batch.plan().views[v][i]`.
        let first = &batch.plan().views[2][0];
        println!(
            "epoch {} step {}: {} samples, views {}, waited {:.1} ms, local view 0 of sample 0: {:?}",
            batch.epoch(),
            batch.step(),
            batch.len(),
            sizes.join(" "),
            batch.wait().as_secs_f64() * 1e3,
            first.crop,
        );
    }
    Ok(())
}
