//! `regioncl`: convert image folders to shards, inspect them, benchmark the loader, train, evaluate,
//! export, compare methods. Each subcommand lives in its own module under `cmd/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Self-supervised pretraining (RegionCL, MoCo v2, DenseCL, SimSiam) on memory-mapped image shards.
#[derive(Debug, Parser)]
#[command(name = "regioncl", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the build's libtorch and CUDA status.
    Env,
    /// Convert an ImageFolder tree or a list file to a dataset of shards.
    Convert(cmd::convert::ConvertArgs),
    /// Show what a dataset holds; verify it; extract a record.
    Inspect(cmd::inspect::InspectArgs),
    /// Benchmarks: `bench loader`, `bench train`.
    Bench(cmd::bench::BenchArgs),
    /// Pretrain (RegionCL-M, MoCo v2) from a TOML config.
    Train(cmd::train::TrainArgs),
    /// Evaluate a checkpoint: `eval knn`, `eval linear`.
    Eval(cmd::eval::EvalArgs),
    /// Export a checkpoint's backbone for torchvision or detectron2.
    Export(cmd::export::ExportArgs),
    /// Draw a run's metrics (loss terms, lr, throughput, k-NN) as PNGs.
    Plot(cmd::plot::PlotArgs),
    /// Compare methods at the same budget over several seeds: k-NN, linear, few-shot linear.
    Compare(cmd::compare::CompareArgs),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Env => cmd::env::run(),
        Command::Convert(args) => cmd::convert::run(args),
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Train(args) => cmd::train::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Export(args) => cmd::export::run(args),
        Command::Plot(args) => cmd::plot::run(args),
        Command::Compare(args) => cmd::compare::run(args),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed pipe (`regioncl inspect ... | head`) is not a failure (cmd::outln!).
            if err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            // Paths and names in the chain come from data: escape control characters.
            cmd::errln!("regioncl: error: {}", cmd::printable(&format!("{err:#}")));
            ExitCode::from(2)
        }
    }
}
