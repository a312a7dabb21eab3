//! The loader behind `regioncl.Loader`: a [`LoaderBuilder`] configured from Python, and the running
//! [`Pipeline`] whose batches cross into torch as DLPack capsules.
//!
//! A batch crosses as a tuple (see [`Pipeline::next`]): the views are capsules over the loader's
//! own buffers, sharing one owner (the loader's batch), so the buffers go back to the ring when the
//! last of the view tensors dies; labels, indices and the planned parameters are small capsules
//! that own their vectors.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use regioncl_augment::{Normalize, ViewParams};
use regioncl_loader::{
    BadRecords, Batch, LoaderBuilder, Pipeline as Running, Recipe, SwapPlanConfig, ViewLayout,
};

use crate::alloc::Allocator;
use crate::dataset::Dataset;
use crate::dlpack::{export, export_vec};
use crate::error::{IntoPyResult, raise};

/// Integer parameters per view and sample: crop x, y, w, h; flip, grayscale, solarize; the jitter
/// order (4).
pub(crate) const INT_PARAMS: usize = 11;
/// Float parameters per view and sample: brightness, contrast, saturation, hue; blur sigma.
pub(crate) const FLOAT_PARAMS: usize = 5;

fn config_error(py: Python<'_>, what: &str, e: &serde_json::Error) -> PyErr {
    raise(py, "ConfigError", format!("{what}: {e}"), None, None)
}

/// A configured loader: everything but the start position and the buffers.
#[pyclass(module = "regioncl._native", name = "Builder", frozen)]
pub(crate) struct Builder {
    inner: LoaderBuilder,
}

#[pymethods]
impl Builder {
    #[new]
    #[pyo3(signature = (dataset, recipe, batch_size, *, seed, shuffle, drop_last, rank, world, threads, prefetch, strict, region_swap, mean, std))]
    #[allow(clippy::too_many_arguments)] // the settings of regioncl.Loader
    fn new(
        py: Python<'_>,
        dataset: &Dataset,
        recipe: &str,
        batch_size: usize,
        seed: u64,
        shuffle: bool,
        drop_last: bool,
        rank: usize,
        world: usize,
        threads: usize,
        prefetch: usize,
        strict: bool,
        region_swap: Option<&str>,
        mean: [f32; 3],
        std: [f32; 3],
    ) -> PyResult<Self> {
        let recipe: Recipe =
            serde_json::from_str(recipe).map_err(|e| config_error(py, "recipe", &e))?;
        let swap: Option<SwapPlanConfig> = region_swap
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| config_error(py, "region_swap", &e))?;
        let inner = LoaderBuilder::new(dataset.inner.clone())
            .recipe(recipe)
            .batch_size(batch_size)
            .seed(seed)
            .shuffle(shuffle)
            .drop_last(drop_last)
            .world(rank, world)
            .threads(threads)
            .batches_ahead(prefetch)
            .region_swap(swap)
            .bad_records(if strict { BadRecords::Fail } else { BadRecords::Replace })
            .normalize(Normalize { mean, std });
        // Every setting is checked here, before any thread starts.
        inner.planner().py_err(py)?;
        Ok(Self { inner })
    }

    /// Steps per epoch, the same on every rank.
    fn steps_per_epoch(&self, py: Python<'_>) -> PyResult<u64> {
        self.inner.steps_per_epoch().py_err(py)
    }

    /// Starts the pipeline at `(epoch, step)`; with `pinned`, buffers come from that callable
    /// (`n -> uint8 tensor`, torch's pinned memory).
    #[pyo3(signature = (epoch, step, pinned=None))]
    fn start(
        &self,
        py: Python<'_>,
        epoch: u64,
        step: u64,
        pinned: Option<Py<PyAny>>,
    ) -> PyResult<Pipeline> {
        let allocator = Arc::new(Allocator::new(pinned));
        let builder = self.inner.clone().start(epoch, step).allocator(allocator.clone());
        let running = builder.build().py_err(py)?;
        Ok(Pipeline { running: Some(running), pid: std::process::id(), allocator })
    }
}

/// A running pipeline. Its threads belong to the process that started it: after `fork()`, the
/// child gets an error instead of a pipeline whose workers do not exist.
#[pyclass(module = "regioncl._native", name = "Pipeline")]
pub(crate) struct Pipeline {
    running: Option<Running>,
    pid: u32,
    allocator: Arc<Allocator>,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            // A forked child: the threads to stop and join do not exist here; the memory is the
            // parent's copy, freed when the child exits.
            std::mem::forget(self.running.take());
        }
    }
}

impl Pipeline {
    fn running(&mut self, py: Python<'_>) -> PyResult<&mut Running> {
        let here = std::process::id();
        if self.pid != here {
            let msg = format!(
                "this loader was started in process {} and used in process {here}, a fork of it: \
                 its worker threads do not exist here. Create the Loader in the process that \
                 iterates it (after forking), or use the spawn start method",
                self.pid
            );
            return Err(raise(py, "ForkError", msg, None, None));
        }
        self.running
            .as_mut()
            .ok_or_else(|| raise(py, "Error", "the loader was closed".into(), None, None))
    }
}

#[pymethods]
impl Pipeline {
    /// The next batch, or None after the last: `(epoch, step, views, labels, indices, int
    /// params, float params, swap, pairing, substitutions)`. The GIL is released while waiting.
    fn next<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let running = self.running(py)?;
        match py.detach(|| running.next()) {
            None => Ok(None),
            Some(batch) => hand_over(py, batch.py_err(py)?).map(Some),
        }
    }

    /// `(address, length)` of every buffer of the ring.
    fn buffers(&self) -> Vec<(usize, usize)> {
        self.allocator.buffers()
    }

    /// Stops the threads (the buffers of batches still alive stay valid).
    fn close(&mut self, py: Python<'_>) {
        if self.pid == std::process::id() {
            let running = self.running.take();
            py.detach(move || drop(running));
        }
    }

    /// Throughput and where the time goes, so far.
    fn stats<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.running(py)?.stats();
        let d = PyDict::new(py);
        d.set_item("elapsed", s.elapsed.as_secs_f64())?;
        d.set_item("threads", s.threads)?;
        d.set_item("samples", s.samples)?;
        d.set_item("batches", s.batches)?;
        d.set_item("read", s.read.as_secs_f64())?;
        d.set_item("decode", s.decode.as_secs_f64())?;
        d.set_item("render", s.render.as_secs_f64())?;
        d.set_item("substitutions", s.substitutions)?;
        d.set_item("skipped", s.skipped)?;
        d.set_item("wait", s.consumer_wait.as_secs_f64())?;
        Ok(d)
    }
}

/// `p`'s integer and float parameters, appended.
fn push_params(p: &ViewParams, ints: &mut Vec<i32>, floats: &mut Vec<f32>) {
    let c = p.crop;
    let j = p.jitter.unwrap_or(regioncl_augment::ColorJitter::IDENTITY);
    let order = j.order.map(i32::from);
    ints.extend([c.x as i32, c.y as i32, c.w as i32, c.h as i32]);
    ints.extend([i32::from(p.flip), i32::from(p.grayscale), i32::from(p.solarize)]);
    ints.extend(order);
    floats.extend([j.brightness, j.contrast, j.saturation, j.hue, p.blur_sigma.unwrap_or(0.0)]);
}

fn hand_over(py: Python<'_>, batch: Batch) -> PyResult<Bound<'_, PyTuple>> {
    let plan = batch.plan();
    let (b, num_views) = (batch.len(), batch.num_views());
    let mut ints = Vec::with_capacity(num_views * b * INT_PARAMS);
    let mut floats = Vec::with_capacity(num_views * b * FLOAT_PARAMS);
    for view in &plan.views {
        for p in view {
            push_params(p, &mut ints, &mut floats);
        }
    }
    let ints = export_vec(py, ints, &[num_views, b, INT_PARAMS])?;
    let floats = export_vec(py, floats, &[num_views, b, FLOAT_PARAMS])?;
    let indices: Vec<i64> = plan.indices.iter().map(|&i| i as i64).collect();
    let indices = export_vec(py, indices, &[b])?;
    let labels: Vec<i64> = batch.labels().iter().map(|&l| i64::from(l)).collect();
    let labels = export_vec(py, labels, &[b])?;
    let rect = |r: regioncl_augment::Rect| (r.x, r.y, r.w, r.h);
    let swap = plan.swap.map(|s| (rect(s.grid), rect(s.pixels)));
    let pairing: Vec<i64> = plan.pairing.iter().map(|&p| i64::from(p)).collect();
    let pairing = export_vec(py, pairing, &[plan.pairing.len()])?;
    let substitutions: Vec<(usize, u64, u64, String)> = batch
        .substitutions()
        .iter()
        .map(|s| (s.sample, s.failed, s.replacement, s.reason.clone()))
        .collect();
    let (epoch, step) = (batch.epoch(), batch.step());
    let views: Vec<(usize, ViewLayout, u32, u32)> = (0..num_views)
        .map(|v| {
            let d = batch.view(v);
            (d.bytes.as_ptr() as usize, d.layout, d.width, d.height)
        })
        .collect();
    // One owner for all the views: the buffers go back to the ring with the last tensor.
    let owner = Arc::new(Mutex::new(batch));
    let mut capsules = Vec::with_capacity(num_views);
    for (addr, layout, w, h) in views {
        let (w, h) = (w as usize, h as usize);
        let keep: Box<dyn Send> = Box::new(owner.clone());
        // SAFETY: `addr` is view v's buffer inside the batch `owner` holds: `b` samples of the
        // layout's size, heap memory that does not move with the batch and that no worker writes
        // until the batch is dropped, which happens only after every capsule's owner is gone.
        let capsule = unsafe {
            match layout {
                ViewLayout::F32Nchw => export(py, addr as *const f32, &[b, 3, h, w], keep)?,
                ViewLayout::U8Nhwc => export(py, addr as *const u8, &[b, h, w, 3], keep)?,
                other => {
                    let msg = format!("view layout {other:?} is not supported by this package");
                    return Err(raise(py, "Error", msg, None, None));
                }
            }
        };
        capsules.push(capsule);
    }
    drop(owner);
    (epoch, step, capsules, labels, indices, ints, floats, swap, pairing, substitutions)
        .into_pyobject(py)
}
