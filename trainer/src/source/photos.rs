//! A single-threaded image-folder source (`data.source = "photos"`): what the loader does (plan,
//! decode once, crop + resize + flip each view into a u8 batch buffer) on a folder of JPEGs held in
//! memory, without a conversion step, shards or threads. For tests and quick runs on a few thousand
//! photos; training on a dataset goes through the loader ([`crate::ShardSource`]).

use std::path::{Path, PathBuf};

use regioncl_augment::{
    DecodeOptions, DecodePlan, DecodePlanOptions, KeyedRng as AugRng, RgbImage, ViewGeometry,
    ViewOutput, ViewParams, ViewScratch, decode_jpeg, jpeg_info, render_view,
};
use tch::Tensor;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::input::{BatchSource, StepInput};
use crate::rng::KeyedRng;
use crate::source::{RankShare, plan_swap, view_spec};

/// Key of the per-epoch order stream.
const ORDER_STREAM: u64 = 0x4f52_4452;

/// The data directory: `$REGIONCL_DATA`, else `<workspace>/.cache/data`.
pub fn data_root() -> PathBuf {
    match std::env::var_os("REGIONCL_DATA") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/data"),
    }
}

fn list_jpegs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "read_dir", e))?;
    for entry in rd {
        let path = entry.map_err(|e| Error::io(dir, "read_dir", e))?.path();
        if path.is_dir() {
            list_jpegs(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// JPEGs of a folder tree, decoded and augmented on the calling thread.
#[derive(Debug)]
pub struct PhotoSource {
    config: Config,
    share: RankShare,
    files: Vec<Vec<u8>>,
    steps_per_epoch: u64,
    step: u64,
    order: Option<(u64, Vec<i64>)>,
    decoded: RgbImage,
    scratch: ViewScratch,
}

impl PhotoSource {
    /// Reads every JPEG under `config.data.root` (or `data_root()/imagenet-like`) into memory.
    ///
    /// # Errors
    /// [`Error::Data`] when the folder is missing (run `make data`) or holds fewer images than a
    /// batch; [`Error::Io`] on read errors.
    pub fn new(config: &Config) -> Result<Self> {
        Self::for_rank(config, RankShare::WHOLE)
    }

    /// [`PhotoSource::new`] for one rank of a multi-process run: every step it renders its
    /// `share` of the global batch (the same samples, with the same view parameters, that one
    /// process renders at those positions of the batch).
    ///
    /// # Errors
    /// As [`PhotoSource::new`]; [`Error::Config`] when the world does not divide the batch or
    /// its BN groups.
    pub fn for_rank(config: &Config, share: RankShare) -> Result<Self> {
        share.split(config)?;
        let root = if config.data.root.is_empty() {
            data_root().join("imagenet-like")
        } else {
            PathBuf::from(&config.data.root)
        };
        if !root.is_dir() {
            return Err(Error::Data(format!(
                "{}: no such folder: run `make data`",
                root.display()
            )));
        }
        let mut paths = Vec::new();
        list_jpegs(&root, &mut paths)?;
        paths.sort();
        let b = config.optim.batch_size as usize;
        if paths.len() < b {
            return Err(Error::Data(format!(
                "{}: {} JPEGs, fewer than a batch of {b}: run `make data`",
                root.display(),
                paths.len()
            )));
        }
        let files = paths
            .iter()
            .map(|p| std::fs::read(p).map_err(|e| Error::io(p, "read", e)))
            .collect::<Result<Vec<_>>>()?;
        let steps_per_epoch = match config.data.steps_per_epoch {
            0 => (files.len() / b) as u64,
            n => n,
        };
        Ok(Self {
            config: config.clone(),
            share,
            files,
            steps_per_epoch,
            step: 0,
            order: None,
            decoded: RgbImage::new(),
            scratch: ViewScratch::new(),
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there are no images (never: `new` refuses that).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The records (indices into the sorted file list) this rank renders at global `step`, in
    /// batch order.
    pub fn records(&mut self, step: u64) -> Vec<usize> {
        let epoch = step / self.steps_per_epoch;
        let b = self.config.optim.batch_size as usize;
        let local = b / self.share.world;
        let first = (step % self.steps_per_epoch) as usize * b + self.share.rank * local;
        let n = self.files.len();
        let order = self.order(epoch);
        (0..local).map(|i| order[(first + i) % n] as usize).collect()
    }

    fn order(&mut self, epoch: u64) -> &[i64] {
        if self.order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let perm = KeyedRng::new(&[self.config.seed, epoch, ORDER_STREAM])
                .permutation(self.files.len());
            self.order = Some((epoch, perm));
        }
        &self.order.as_ref().expect("just set").1
    }

    fn render(
        &mut self,
        record: usize,
        key: [u64; 4],
        out: &mut [Vec<u8>],
        slot: usize,
    ) -> Result<[ViewParams; 2]> {
        let spec = view_spec(&self.config);
        let size = spec.width as usize;
        let bytes = &self.files[record];
        let info = jpeg_info(bytes).map_err(|e| Error::Data(format!("record {record}: {e}")))?;
        let params = [0u64, 1].map(|v| {
            spec.sample(
                info.width,
                info.height,
                &mut AugRng::new(&[key[0], key[1], key[2], key[3], v]),
            )
        });
        let geometry: Vec<ViewGeometry> = params
            .iter()
            .map(|p| ViewGeometry { crop: p.crop, width: spec.width, height: spec.height })
            .collect();
        let plan = DecodePlan::for_views(
            info.width,
            info.height,
            &geometry,
            &DecodePlanOptions::default(),
        )
        .map_err(|e| Error::Data(format!("record {record}: {e}")))?;
        decode_jpeg(bytes, &plan.decode_options(&DecodeOptions::default()), &mut self.decoded)
            .map_err(|e| Error::Data(format!("record {record}: {e}")))?;
        let n = size * size * 3;
        for (v, buf) in out.iter_mut().enumerate() {
            let pixels = &mut buf[slot * n..(slot + 1) * n];
            let view = ViewOutput::U8Hwc { pixels, width: spec.width, height: spec.height };
            render_view(&self.decoded, &plan.boxes()[v], &params[v], view, &mut self.scratch)
                .map_err(|e| Error::Data(format!("record {record}: {e}")))?;
        }
        Ok(params)
    }
}

impl BatchSource for PhotoSource {
    fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
    }

    fn seek(&mut self, step: u64) -> Result<()> {
        self.step = step;
        Ok(())
    }

    fn next_batch(&mut self) -> Result<StepInput> {
        let step = self.step;
        self.step += 1;
        let epoch = step / self.steps_per_epoch;
        let records = self.records(step);
        let b = records.len();
        // Keys by position in the global batch: rank r's sample i is sample r b + i of it.
        let offset = self.share.rank * b;
        let s = self.config.data.image_size;
        let mut bufs = vec![vec![0u8; b * (s * s * 3) as usize]; 2];
        let mut params = vec![Vec::with_capacity(b), Vec::with_capacity(b)];
        let seed = self.config.seed;
        for (i, &record) in records.iter().enumerate() {
            let key = [seed, epoch, step, (offset + i) as u64];
            let p = self.render(record, key, &mut bufs, i)?;
            params[0].push(p[0]);
            params[1].push(p[1]);
        }
        let (swap, pairing) = plan_swap(&self.config, step, self.share)?;
        let views =
            bufs.iter().map(|buf| Tensor::from_slice(buf).view([b as i64, s, s, 3])).collect();
        Ok(StepInput { epoch, step, views, params, flipped: true, swap, pairing, hold: None })
    }
}
