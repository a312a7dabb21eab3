//! `regioncl.convert`: the converter of `regioncl convert`, with the GIL released while it runs.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyDict;
use regioncl_loader::{ConvertConfig, DEFAULT_QUALITY, Error, Progress, Source};

use crate::error::IntoPyResult;

/// How often the converter looks up from its work: to notice Ctrl-C and to print progress.
const TICK: Duration = Duration::from_millis(250);

/// Converts an ImageFolder tree (`src`, or a list file `src` of `path<TAB>label` lines relative
/// to `root`) into the dataset directory `out`. Returns the summary as a dict (see
/// `regioncl.ConvertSummary`).
#[pyfunction]
#[pyo3(signature = (src, out, *, root=None, threads=None, max_side=None, quality=None, shard_size=None, progress=true))]
#[allow(clippy::too_many_arguments)] // the keyword arguments of the Python function
pub(crate) fn convert<'py>(
    py: Python<'py>,
    src: PathBuf,
    out: PathBuf,
    root: Option<PathBuf>,
    threads: Option<usize>,
    max_side: Option<u32>,
    quality: Option<u8>,
    shard_size: Option<u64>,
    progress: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let source = match root {
        Some(root) => Source::List { list: src, root },
        None => Source::ImageFolder(src),
    };
    let defaults = ConvertConfig::default();
    let config = ConvertConfig {
        threads: threads.unwrap_or(0),
        max_side,
        quality: quality.unwrap_or(DEFAULT_QUALITY),
        shard_size: shard_size.unwrap_or(defaults.shard_size),
        ..defaults
    };
    let mut interrupt: Option<PyErr> = None;
    let mut last = Instant::now();
    let mut on_progress = |p: &Progress| {
        if last.elapsed() < TICK && p.done < p.total {
            return ControlFlow::Continue(());
        }
        last = Instant::now();
        Python::attach(|py| {
            let shown = if progress { show(py, p) } else { Ok(()) };
            match shown.and_then(|()| py.check_signals()) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    interrupt = Some(e);
                    ControlFlow::Break(())
                }
            }
        })
    };
    let result = py.detach(|| regioncl_loader::convert(&source, &out, &config, &mut on_progress));
    let summary = match (result, interrupt) {
        (Err(Error::Cancelled), Some(e)) => return Err(e),
        (result, _) => result.py_err(py)?,
    };
    if progress {
        py.import("sys")?.getattr("stderr")?.call_method1("write", ("\n",))?;
    }
    let dict = PyDict::new(py);
    dict.set_item("records", summary.num_records)?;
    dict.set_item("classes", summary.num_classes)?;
    dict.set_item("shards", summary.num_shards)?;
    dict.set_item("bytes", summary.num_bytes)?;
    dict.set_item("stored", summary.num_stored)?;
    dict.set_item("converted", summary.num_converted)?;
    dict.set_item("resized", summary.num_resized)?;
    let skipped: Vec<(String, String)> =
        summary.skipped.into_iter().map(|s| (s.path, s.reason)).collect();
    dict.set_item("skipped", skipped)?;
    dict.set_item("ignored", summary.num_ignored)?;
    dict.set_item("empty_classes", summary.empty_classes)?;
    dict.set_item("seconds", summary.elapsed.as_secs_f64())?;
    dict.set_item("already_complete", summary.already_complete)?;
    Ok(dict)
}

/// One progress line on `sys.stderr`, rewritten in place.
fn show(py: Python<'_>, p: &Progress) -> PyResult<()> {
    let line = format!(
        "\rconvert: {}/{} files, {} skipped, {:.1} MiB",
        p.done,
        p.total,
        p.skipped,
        p.bytes as f64 / 1048576.0
    );
    let stderr = py.import("sys")?.getattr("stderr")?;
    stderr.call_method1("write", (line,))?;
    stderr.call_method0("flush")?;
    Ok(())
}
