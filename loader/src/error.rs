//! Errors of the loader crate, split by cause: the file system ([`Error::Io`]), a corrupt or
//! foreign shard ([`Error::Format`]), a record whose bytes no longer match their checksum
//! ([`Error::Checksum`]), a bad manifest ([`Error::Manifest`]), a bound on untrusted input
//! ([`Error::Limit`]), a bad setting ([`Error::Config`]), a record that cannot be used
//! ([`Error::BadRecord`]) and a pipeline that cannot go on ([`Error::Pipeline`]). Every variant
//! that concerns a file names it; shard errors also name the record index and the byte offset.

use std::path::PathBuf;

use crate::pipeline::AllocError;
use crate::record::BadRecord;

/// What went wrong in the loader.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation failed.
    #[error("{}: {action}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done (`"open"`, `"map"`, `"rename"`, ...).
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A shard file is truncated, corrupt, foreign or of an unsupported version.
    #[error("{}: {kind}", path.display())]
    Format {
        /// The shard file.
        path: PathBuf,
        /// What is wrong with it.
        kind: FormatError,
    },
    /// Bytes on disk do not match their stored crc32c.
    #[error("{}: {kind}", path.display())]
    Checksum {
        /// The shard file.
        path: PathBuf,
        /// Which bytes.
        kind: ChecksumError,
    },
    /// The manifest is not valid JSON of the expected shape, or disagrees with the shard files.
    #[error("{}: {kind}", path.display())]
    Manifest {
        /// The manifest (or, for disagreements, the shard file).
        path: PathBuf,
        /// What is wrong.
        kind: ManifestError,
    },
    /// Untrusted input exceeds a bound checked before anything is allocated.
    #[error("{}: {what} of {value} exceeds the limit of {max}", path.display())]
    Limit {
        /// The offending file.
        path: PathBuf,
        /// The quantity (`"manifest size"`, `"record length"`, ...).
        what: &'static str,
        /// Its value.
        value: u64,
        /// The limit in force.
        max: u64,
    },
    /// An index past the end (of a shard's or dataset's records, of the shard list).
    #[error("{what} {index} out of range (there are {len})")]
    OutOfRange {
        /// `"record"` or `"shard"`.
        what: &'static str,
        /// The index asked for.
        index: u64,
        /// How many there are.
        len: u64,
    },
    /// A setting or an input description is invalid (bad list-file line, quality out of range,
    /// output directory holding another conversion, ...).
    #[error("{0}")]
    Config(String),
    /// The conversion was cancelled by its progress callback; the output directory is left in a
    /// state that a later run resumes from.
    #[error("conversion cancelled")]
    Cancelled,
    /// Another program holds the directory's [`DirLock`](crate::DirLock).
    #[error(
        "{}: the directory is in use by {holder}; wait for it to finish, or use another directory",
        path.display()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as its lock file says (`regioncl convert, pid 4242 on node7`).
        holder: String,
    },
    /// A record that cannot be used (see [`BadRecord`]).
    #[error(transparent)]
    BadRecord(#[from] BadRecord),
    /// The pipeline cannot deliver the next batch.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// Why a [`Pipeline`](crate::Pipeline) cannot deliver a batch (or start).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A bad record, under [`BadRecords::Fail`](crate::BadRecords::Fail) (evaluation).
    #[error("epoch {epoch} step {step}")]
    BadRecord {
        /// Epoch of the batch.
        epoch: u64,
        /// Step of the batch.
        step: u64,
        /// The record.
        #[source]
        source: BadRecord,
    },
    /// A bad record whose substitutes were bad too, under
    /// [`BadRecords::Replace`](crate::BadRecords::Replace).
    #[error("epoch {epoch} step {step}: {tried} substitutes were bad too")]
    NoSubstitute {
        /// Epoch of the batch.
        epoch: u64,
        /// Step of the batch.
        step: u64,
        /// Substitutes tried.
        tried: u64,
        /// The first bad record.
        #[source]
        source: BadRecord,
    },
    /// Every sample of a batch was a bad record (replaced or skipped): the dataset, not a record,
    /// is broken.
    #[error(
        "epoch {epoch} step {step}: all {len} records of the batch are bad; the first: {first}"
    )]
    AllBad {
        /// Epoch of the batch.
        epoch: u64,
        /// Step of the batch.
        step: u64,
        /// Samples in the batch.
        len: usize,
        /// Why the first sample is bad.
        first: String,
    },
    /// The consumer holds every buffer of the ring, so the next batch has nowhere to go (it
    /// would wait forever). Drop a batch first, or build with more `batches_ahead`.
    #[error(
        "all {batches_ahead} batch buffers are held by the consumer: drop a batch before asking \
         for the next one, or raise batches_ahead"
    )]
    AllBuffersHeld {
        /// The ring's size.
        batches_ahead: usize,
    },
    /// The allocator could not give a view buffer.
    #[error("allocating a {bytes}-byte view buffer")]
    Alloc {
        /// The size asked for.
        bytes: usize,
        /// The allocator's error.
        #[source]
        source: AllocError,
    },
    /// The allocator broke its contract (size or alignment).
    #[error("the allocator returned {got} bytes at alignment {align} for {bytes} bytes (need 4)")]
    BadBuffer {
        /// The size asked for.
        bytes: usize,
        /// The size returned.
        got: usize,
        /// The largest power of two dividing the address (at most 64).
        align: usize,
    },
    /// A thread could not be started.
    #[error("spawning the {what} thread")]
    Spawn {
        /// `"worker"` or `"planner"`.
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The worker threads are gone (one panicked).
    #[error("the loader's worker threads stopped")]
    WorkersStopped,
}

/// What is wrong with a shard file. Offsets are byte offsets into the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The file does not start with the shard magic: it is not a shard.
    #[error("not a regioncl shard: magic {found:02x?} at offset 0")]
    BadMagic {
        /// The first bytes of the file.
        found: Vec<u8>,
    },
    /// A version this build cannot read (or a corrupt version field).
    #[error(
        "unsupported shard format version {found} at offset 8 (this build reads version {supported})"
    )]
    UnsupportedVersion {
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The file ends inside the header.
    #[error("truncated: {len} bytes, shorter than the {need}-byte header")]
    TruncatedHeader {
        /// File length.
        len: u64,
        /// Header length.
        need: u64,
    },
    /// The header's crc32c does not match its bytes.
    #[error(
        "header checksum mismatch at offset {offset}: stored {stored:08x}, computed {computed:08x}"
    )]
    HeaderChecksum {
        /// Where the checksum is stored.
        offset: u64,
        /// The stored value.
        stored: u32,
        /// The value computed from the header bytes.
        computed: u32,
    },
    /// A header field holds an impossible value.
    #[error("header field {field} at offset {offset} is {value}, expected {expected}")]
    HeaderField {
        /// The field's name.
        field: &'static str,
        /// Its byte offset.
        offset: u64,
        /// Its value.
        value: u64,
        /// What it should be.
        expected: String,
    },
    /// The file length disagrees with the header (truncated, or bytes appended).
    #[error(
        "file is {actual} bytes but its header describes {expected} bytes (truncated or extended)"
    )]
    SizeMismatch {
        /// The length the header implies.
        expected: u64,
        /// The actual length.
        actual: u64,
    },
    /// The index's crc32c (stored in the header) does not match the index bytes.
    #[error(
        "index checksum mismatch for the index at offset {offset}: stored {stored:08x}, computed {computed:08x}"
    )]
    IndexChecksum {
        /// Where the index starts.
        offset: u64,
        /// The value stored in the header.
        stored: u32,
        /// The value computed from the index bytes.
        computed: u32,
    },
    /// A record's bytes reach beyond the data region.
    #[error("record {index}: length {len} at offset {offset} exceeds shard end {end}")]
    RecordOutOfBounds {
        /// Record index in the shard.
        index: u64,
        /// The record's offset.
        offset: u64,
        /// The record's length.
        len: u64,
        /// End of the data region (start of the index).
        end: u64,
    },
    /// A record starts before the end of the previous record (or of the header).
    #[error("record {index}: offset {offset} lies before {min}, the end of the previous record")]
    RecordOverlap {
        /// Record index in the shard.
        index: u64,
        /// The record's offset.
        offset: u64,
        /// The smallest valid offset.
        min: u64,
    },
    /// A record's index entry has an impossible field.
    #[error(
        "record {index}: index entry at offset {entry_offset}: {field} is {value}, expected {expected}"
    )]
    RecordField {
        /// Record index in the shard.
        index: u64,
        /// Byte offset of the index entry.
        entry_offset: u64,
        /// The field's name.
        field: &'static str,
        /// Its value.
        value: u64,
        /// What it should be.
        expected: String,
    },
}

/// Which stored checksum failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChecksumError {
    /// A record's bytes do not match the crc32c in its index entry.
    #[error(
        "record {index}: crc32c of the {len} bytes at offset {offset} is {computed:08x}, index says {stored:08x}"
    )]
    Record {
        /// Record index in the shard.
        index: u64,
        /// The record's offset.
        offset: u64,
        /// The record's length.
        len: u64,
        /// The index entry's crc32c.
        stored: u32,
        /// The crc32c of the bytes.
        computed: u32,
    },
    /// A whole shard file does not match the crc32c in the manifest.
    #[error("file crc32c is {computed:08x}, the manifest says {stored:08x}")]
    File {
        /// The manifest's crc32c.
        stored: u32,
        /// The crc32c of the file.
        computed: u32,
    },
}

/// What is wrong with a manifest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not JSON, or not a manifest: the field (`shards[0].num_records`; empty at the top level)
    /// and the parser's message, which names the line and column.
    #[error("invalid manifest: {}{error}", if field.is_empty() { String::new() } else { format!("in `{field}`: ") })]
    Json {
        /// Where in the document, as a path of keys and indices.
        field: String,
        /// The parser's error (its message is part of this one's, so it is not a `source`).
        error: serde_json::Error,
    },
    /// The `format` field names another format.
    #[error("not a regioncl dataset manifest (format {found:?})")]
    ForeignFormat {
        /// The `format` field.
        found: String,
    },
    /// A format version this build cannot read.
    #[error("unsupported dataset format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version in the manifest.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// A shard file name that is not a plain file name (contains a separator, is `..`, ...).
    #[error("shard file name {name:?} is not a plain file name")]
    BadFileName {
        /// The name.
        name: String,
    },
    /// A count or size in the manifest disagrees with a shard file or with the totals.
    #[error("{what}: the manifest says {manifest}, found {actual}")]
    Mismatch {
        /// What was compared (`"record count"`, `"file size"`, `"total records"`, ...).
        what: &'static str,
        /// The manifest's value.
        manifest: u64,
        /// The value found.
        actual: u64,
    },
    /// A record's label is not a class of the manifest.
    #[error("record {index}: label {label} is not below the {num_classes} classes of the manifest")]
    LabelOutOfRange {
        /// Record index in the shard.
        index: u64,
        /// The label.
        label: u32,
        /// Number of classes.
        num_classes: u64,
    },
}

/// Result alias of the loader crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        Error::Io { path: path.into(), action, source }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, kind: FormatError) -> Self {
        Error::Format { path: path.into(), kind }
    }

    pub(crate) fn manifest(path: impl Into<PathBuf>, kind: ManifestError) -> Self {
        Error::Manifest { path: path.into(), kind }
    }
}
