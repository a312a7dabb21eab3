//! The loader's errors as Python exceptions. The classes live in `regioncl/errors.py` (so they
//! can inherit from both the package's `Error` and `ValueError`); here each loader error picks its
//! class and carries the file and the record index along. File-system errors become the built-in
//! `OSError` subclass of their errno, with `filename` set.

use std::path::Path;

use pyo3::exceptions::{PyIndexError, PyOSError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use regioncl_loader::{
    BadRecord, BadRecordKind, ChecksumError, Error, FormatError, ManifestError, PipelineError,
};

/// The exception classes of `regioncl.errors`, by name.
fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    let module = MODULE.get_or_try_init(py, || py.import("regioncl.errors").map(Bound::unbind))?;
    module.bind(py).getattr(name)?.cast_into::<PyType>().map_err(PyErr::from)
}

/// `e` with its chain of causes, as the CLI prints it (`{:#}`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// An instance of `regioncl.errors.<name>(message, path, record)`.
pub(crate) fn raise(
    py: Python<'_>,
    name: &str,
    message: String,
    path: Option<&Path>,
    record: Option<u64>,
) -> PyErr {
    let path = path.map(|p| p.display().to_string());
    match class(py, name).and_then(|c| c.call1((message, path, record))) {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

fn format_record(kind: &FormatError) -> Option<u64> {
    match kind {
        FormatError::RecordOutOfBounds { index, .. }
        | FormatError::RecordOverlap { index, .. }
        | FormatError::RecordField { index, .. } => Some(*index),
        _ => None,
    }
}

/// The Python exception for a loader error.
pub(crate) fn to_py(py: Python<'_>, e: &Error) -> PyErr {
    let message = chain(e);
    match e {
        Error::Io { path, source, .. } => match source.raw_os_error() {
            // OSError(errno, strerror, filename) becomes FileNotFoundError, PermissionError, ...
            Some(errno) => {
                let strerror =
                    chain(e).trim_start_matches(&format!("{}: ", path.display())).to_owned();
                PyOSError::new_err((errno, strerror, path.display().to_string()))
            }
            None => PyOSError::new_err(message),
        },
        Error::Format { path, kind } => {
            raise(py, "FormatError", message, Some(path), format_record(kind))
        }
        Error::Checksum { path, kind } => {
            let record = match kind {
                ChecksumError::Record { index, .. } => Some(*index),
                _ => None,
            };
            raise(py, "ChecksumError", message, Some(path), record)
        }
        Error::Manifest { path, kind } => {
            let record = match kind {
                ManifestError::LabelOutOfRange { index, .. } => Some(*index),
                _ => None,
            };
            raise(py, "ManifestError", message, Some(path), record)
        }
        Error::Limit { path, .. } => raise(py, "LimitError", message, Some(path), None),
        Error::OutOfRange { .. } => PyIndexError::new_err(message),
        Error::Config(_) => raise(py, "ConfigError", message, None, None),
        Error::BadRecord(bad) => bad_record(py, message, bad),
        Error::Pipeline(
            PipelineError::BadRecord { source, .. } | PipelineError::NoSubstitute { source, .. },
        ) => bad_record(py, message, source),
        Error::Pipeline(PipelineError::AllBad { .. }) => {
            raise(py, "DataError", message, None, None)
        }
        _ => raise(py, "Error", message, None, None),
    }
}

/// A bad record: the class of what made it bad (a checksum, a corrupt shard, a file-system error),
/// else `DataError`; with the whole story in the message and the record's index.
fn bad_record(py: Python<'_>, message: String, bad: &BadRecord) -> PyErr {
    let record = Some(bad.index);
    match &bad.kind {
        BadRecordKind::Read(inner) => match inner.as_ref() {
            Error::Checksum { path, .. } => raise(py, "ChecksumError", message, Some(path), record),
            Error::Format { path, .. } => raise(py, "FormatError", message, Some(path), record),
            other => {
                let e = to_py(py, other);
                let _ = e.value(py).setattr("record", bad.index);
                e
            }
        },
        _ => raise(py, "DataError", message, None, record),
    }
}

/// `Result<T, loader::Error>` to `PyResult<T>`.
pub(crate) trait IntoPyResult<T> {
    /// Converts the error with [`to_py`].
    fn py_err(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, Error> {
    fn py_err(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, &e))
    }
}
