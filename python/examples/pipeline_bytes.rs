//! The Rust side of the package's "same bytes" test (python/tests/test_loader.py): builds a
//! pipeline with the loader's own builder from the JSON recipe the Python package sends, and
//! writes every view of the first `steps` batches to stdout, batch after batch, view after view,
//! as the pipeline laid them out.
//!
//! `pipeline_bytes DATASET RECIPE_JSON BATCH SEED THREADS STEPS`

use std::io::Write;
use std::sync::Arc;

use regioncl_loader::{Dataset, LoaderBuilder, Recipe};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dataset, recipe, batch, seed, threads, steps] = args.as_slice() else {
        return Err("usage: pipeline_bytes DATASET RECIPE_JSON BATCH SEED THREADS STEPS".into());
    };
    let recipe: Recipe = serde_json::from_str(recipe)?;
    let pipeline = LoaderBuilder::new(Arc::new(Dataset::open(dataset)?))
        .recipe(recipe)
        .batch_size(batch.parse()?)
        .seed(seed.parse()?)
        .threads(threads.parse()?)
        .build()?;
    let mut out = std::io::stdout().lock();
    for batch in pipeline.take(steps.parse()?) {
        let batch = batch?;
        for v in 0..batch.num_views() {
            out.write_all(batch.view(v).bytes)?;
        }
    }
    out.flush()?;
    Ok(())
}
