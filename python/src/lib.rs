//! The native half of the `regioncl` Python package (`regioncl._native`): the loader crate's
//! datasets, converter and pipeline, with batches handed to torch without a copy (DLPack). The
//! Python half (`python/regioncl/`) holds the public API, the torch parts and the stubs; torch is
//! imported there at run time and never linked here.
//!
//! Threads: the pipeline's workers are Rust threads that never touch Python. The GIL is released
//! while a call waits (for a batch, for a conversion, while opening or verifying a dataset).

mod alloc;
mod convert;
mod dataset;
mod dlpack;
mod error;
mod loader;
mod recipe;

use pyo3::prelude::*;

#[pymodule]
#[pyo3(name = "_native")]
fn regioncl_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<dataset::Dataset>()?;
    m.add_class::<loader::Builder>()?;
    m.add_class::<loader::Pipeline>()?;
    m.add_function(wrap_pyfunction!(convert::convert, m)?)?;
    m.add_function(wrap_pyfunction!(recipe::preset, m)?)?;
    m.add_function(wrap_pyfunction!(recipe::default_view, m)?)?;
    Ok(())
}
