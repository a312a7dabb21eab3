//! `regioncl bench ...`: throughput benchmarks that print figures next to a baseline measured in
//! the same run.

use clap::{Args, Subcommand};

/// Arguments of `regioncl bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchCommand,
}

/// What to benchmark.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The loader: samples/s against the decode floor and a torchvision DataLoader.
    Loader(crate::cmd::bench_loader::BenchLoaderArgs),
    /// Training steps: img/s of a method, model and batch on synthetic input.
    Train(crate::cmd::bench_train::BenchTrainArgs),
}

/// Runs the chosen benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        BenchCommand::Loader(a) => crate::cmd::bench_loader::run(a),
        BenchCommand::Train(a) => crate::cmd::bench_train::run(a),
    }
}
