//! The loader's recipe presets and default view, as the JSON (serde) that `regioncl.recipes`
//! reads: the Python presets are the Rust ones, not a copy.

use pyo3::prelude::*;
use regioncl_augment::ViewSpec;
use regioncl_loader::Recipe;

use crate::error::raise;

fn json<T: serde::Serialize>(py: Python<'_>, value: &T) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| raise(py, "Error", e.to_string(), None, None))
}

/// Preset `name` with its integer arguments, as JSON.
#[pyfunction]
pub(crate) fn preset(py: Python<'_>, name: &str, args: Vec<u32>) -> PyResult<String> {
    let recipe = match (name, args.as_slice()) {
        ("mocov2", &[size]) => Recipe::mocov2(size),
        ("simclr", &[size]) => Recipe::simclr(size),
        ("byol", &[size]) => Recipe::byol(size),
        ("dino", &[globals, locals]) => Recipe::dino(globals as usize, locals as usize),
        ("supervised", &[size]) => Recipe::supervised(size),
        ("eval_center", &[resize, crop]) => Recipe::eval_center(resize, crop),
        _ => {
            let msg = format!("no preset {name}({args:?})");
            return Err(raise(py, "ConfigError", msg, None, None));
        }
    };
    json(py, &recipe)
}

/// The default view spec (MoCo v2 at 224 px), as JSON.
#[pyfunction]
pub(crate) fn default_view(py: Python<'_>) -> PyResult<String> {
    json(py, &ViewSpec::default())
}
