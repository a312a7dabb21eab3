//! The trainer's errors, split by cause.

use std::path::PathBuf;

/// A trainer result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration key has a bad value, is unknown, or cannot be parsed.
    #[error("config: `{key}`: {message}")]
    Config {
        /// The dotted key (`optim.base_lr`), or the file for a parse error.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A file or directory operation failed.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The operation (`create`, `rename`, `read`, ...).
        op: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint is missing, incomplete or does not fit the model.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A batch does not fit the model or the method (shapes, pairing, box).
    #[error("step input: {0}")]
    Input(String),
    /// The data source failed (decode, missing data directory).
    #[error("data: {0}")]
    Data(String),
    /// The loader failed (a dataset, a record, the pipeline); the loader's error with its causes.
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
    #[error("libtorch: {0}")]
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
    #[error("{path}: line {line}: {source}")]
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
    #[error("{path}: json: {source}")]
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
