//! Using the loader from another SSL project: DINO's multi-crop recipe (2 x 224 global views +
//! 6 x 96 local views, bicubic), colour left to the consumer, no libtorch anywhere.
//!
//! ```text
//! cargo run --release -p regioncl-loader --example multicrop -- DATASET [BATCHES]
//! ```
//!
//! `DATASET` is a directory written by `regioncl convert`, or an ImageFolder tree of JPEGs.

use std::path::Path;
use std::sync::Arc;

use regioncl_loader::{Dataset, ImageFolder, LoaderBuilder, Recipe, RecordSource};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: multicrop DATASET [BATCHES]")?;
    let batches: usize = args.next().map_or(Ok(10), |s| s.parse())?;
    let source: Arc<dyn RecordSource> = if Path::new(&dir).join("manifest.json").is_file() {
        Arc::new(Dataset::open(&dir)?)
    } else {
        Arc::new(ImageFolder::open(&dir)?)
    };

    // Two global and six local views per image; every random choice is planned up front.
    let loader = LoaderBuilder::new(source)
        .recipe(Recipe::dino(2, 6))
        .batch_size(32)
        .seed(42)
        .batches_ahead(4)
        .build()?;

    for batch in loader.take(batches) {
        let batch = batch?;
        let sizes: Vec<String> = (0..batch.num_views())
            .map(|v| {
                let view = batch.view(v);
                format!("{}x{}", view.width, view.height)
            })
            .collect();
        // Each view is a contiguous u8 [B, H, W, 3] buffer; the planned colour parameters
        // (jitter factors and order, grayscale, blur sigma, solarize) are in
        // `batch.plan().views[v][i]`.
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
