//! `regioncl.Dataset`: a converted dataset directory, opened and validated.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use regioncl_loader::Dataset as Shards;

use crate::dlpack::export_vec;
use crate::error::IntoPyResult;

/// A dataset directory written by `regioncl convert` (or :func:`regioncl.convert`): the manifest
/// and its shards, memory-mapped. Opening checks every shard's header and index; reading a record
/// is then a bounds-checked slice of the map.
#[pyclass(module = "regioncl._native", name = "Dataset", frozen)]
pub(crate) struct Dataset {
    pub(crate) inner: Arc<Shards>,
}

#[pymethods]
impl Dataset {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py.detach(|| Shards::open(&path)).py_err(py)?;
        Ok(Self { inner: Arc::new(inner) })
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// `(encoded bytes, label)` of record `index` (negative indices count from the end).
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        index: isize,
    ) -> PyResult<(Bound<'py, PyBytes>, u32)> {
        let n = self.inner.len() as isize;
        let i = if index < 0 { index + n } else { index };
        if !(0..n).contains(&i) {
            return Err(PyIndexError::new_err(format!(
                "record {index} out of range ({n} records)"
            )));
        }
        let record = self.inner.record(i as usize).py_err(py)?;
        Ok((PyBytes::new(py, record.bytes), record.label))
    }

    /// The dataset directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.dir().to_path_buf()
    }

    /// Class names, indexed by label.
    #[getter]
    fn classes(&self) -> Vec<String> {
        self.inner.class_names().to_vec()
    }

    /// Every record's label, as an int64 DLPack capsule `[N]`.
    fn labels_capsule<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let labels = self.records(py, |r| [i64::from(r.label)])?;
        export_vec(py, labels, &[self.inner.len()])
    }

    /// Every record's (width, height), as an int32 DLPack capsule `[N, 2]`.
    fn sizes_capsule<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let sizes = self.records(py, |r| [r.width as i32, r.height as i32])?;
        export_vec(py, sizes, &[self.inner.len(), 2])
    }

    /// Checks every shard file against the crc32c in the manifest (reads every byte).
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        let ds = &self.inner;
        py.detach(|| (0..ds.shards().len()).try_for_each(|s| ds.verify_shard(s))).py_err(py)
    }
}

impl Dataset {
    /// `field` of every record, flattened.
    fn records<T, const N: usize>(
        &self,
        py: Python<'_>,
        field: impl Fn(&regioncl_loader::Record<'_>) -> [T; N],
    ) -> PyResult<Vec<T>> {
        let mut out = Vec::with_capacity(self.inner.len() * N);
        for i in 0..self.inner.len() {
            out.extend(field(&self.inner.record(i).py_err(py)?));
        }
        Ok(out)
    }
}
