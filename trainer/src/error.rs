//! The trainer's errors, split by cause. A variant that keeps a cause (an OS error, a JSON or
//! libtorch error) returns it from `source()` and leaves it out of its own message, so a printed
//! chain (`{:#}` of anyhow, as `regioncl` prints) names it exactly once.

use std::path::PathBuf;

/// A trainer result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration key has a bad value, is unknown, or cannot be parsed.
    #[error("config: {}{message}", if key.is_empty() { String::new() } else { format!("`{key}`: ") })]
    Config {
        /// The dotted key (`optim.base_lr`); empty for a TOML syntax error.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A config file is invalid ([`Error::Config`] in `source` says where and why).
    #[error("{}", path.display())]
    ConfigFile {
        /// The TOML file.
        path: PathBuf,
        /// The error.
        #[source]
        source: Box<Error>,
    },
    /// A file or directory operation failed.
    #[error("{}: {op}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The operation (`create`, `rename`, `read`, ...).
        op: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint is missing or does not fit the model of its config (or of the run's).
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A checkpoint file is damaged: truncated, a size or checksum that differs from the one
    /// recorded when it was saved, a malformed header, a non-finite weight. A resume skips such a
    /// checkpoint for the previous good one.
    #[error("checkpoint {}: damaged: {message}", path.display())]
    Damaged {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The run directory holds another run and neither a resume nor an overwrite was asked for.
    #[error("{}: {message}", path.display())]
    RunDir {
        /// The run directory.
        path: PathBuf,
        /// What it holds, and what to do.
        message: String,
    },
    /// A batch does not fit the model or the method (shapes, pairing, box).
    #[error("step input: {0}")]
    Input(String),
    /// The data source failed (decode, missing data directory).
    #[error("data: {0}")]
    Data(String),
    /// The loader failed (a dataset, a record, the pipeline; another process holding a run
    /// directory's lock: `regioncl_loader::Error::Locked`); the loader's error with its causes.
    #[error(transparent)]
    Loader(#[from] regioncl_loader::Error),
    /// The loss became NaN or infinite: training stops, the last good checkpoint is kept.
    #[error(
        "non-finite loss at step {step} (epoch {epoch}): loss {loss}, loss_inst {loss_inst}, \
         loss_region {loss_region}; stopped, last good checkpoint kept"
    )]
    NonFinite {
        /// Global step (0-based) whose loss was not finite.
        step: u64,
        /// Epoch of that step.
        epoch: u64,
        /// Total loss.
        loss: f64,
        /// Instance term.
        loss_inst: f64,
        /// Region term.
        loss_region: f64,
    },
    /// A libtorch call through tch failed.
    #[error("libtorch")]
    Torch(#[from] tch::TchError),
    /// A call into the trainer's C++ shim failed.
    #[error("libtorch shim: {op}: {message}")]
    Shim {
        /// The shim entry point.
        op: &'static str,
        /// The C++ exception message.
        message: String,
    },
    /// The rendezvous or a collective of a multi-process run failed: a peer died, stalled or never
    /// showed up (after the timeout), or the group was shut down.
    #[error("distributed: rank {rank} of {world}: {op}: {message}")]
    Dist {
        /// This process's rank.
        rank: usize,
        /// The number of processes.
        world: usize,
        /// The operation, with its address and timeout for the rendezvous.
        op: String,
        /// The c10d message.
        message: String,
    },
    /// A feature is not available in this build or on this device.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A line of a JSON-lines file (`metrics.jsonl`) is not a record.
    #[error("{}: line {line}", path.display())]
    JsonLine {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// JSON (state file, metrics) could not be written or read.
    #[error("{}: json", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { key: key.into(), message: message.into() }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), op, source }
    }
}
