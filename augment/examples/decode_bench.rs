//! Decoder comparison: images/s on one core for each way of getting pixels out of a JPEG, and for
//! the loader's per-sample work built on them.
//!
//! ```text
//! cargo run --release -p regioncl-augment --example decode_bench -- DIR [--limit N] [--runs R]
//!     [--no-torchvision] [--only TEXT]
//! ```
//!
//! DIR is searched recursively for `.jpg` files (e.g. `.cache/data/imagenet-like`); `--limit` files
//! spread over them (default 600) are read into memory, then each variant decodes all of them, `--runs`
//! times (default 5), after one warm-up pass; the median run is reported, with its ratio to the
//! plain libjpeg-turbo full decode. Unless `--no-torchvision`, the same files go through the MoCo v2
//! torchvision + PIL pipeline (benches/torchvision_mocov2.py, one thread) for the last ratio.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::ImageDecoder;
use regioncl_augment::{
    DecodeOptions, DecodePlan, DecodePlanOptions, JpegInfo, KeyedRng, Normalize, RgbImage, Scale,
    ViewGeometry, ViewOutput, ViewParams, ViewScratch, ViewSpec, decode_jpeg, jpeg_info,
    render_view,
};

fn jpegs(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            jpegs(&p, out);
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg")) {
            out.push(p);
        }
    }
}

/// A variant: a name and the work for file `i`.
type Variant<'a> = (String, Box<dyn FnMut(usize, &[u8]) + 'a>);

/// Median images/s of each variant over `runs` passes over `files`, after a warm-up pass. The
/// variants take turns within each run, so a change in machine load hits all of them alike.
fn measure(files: &[Vec<u8>], runs: usize, variants: &mut [Variant<'_>]) -> Vec<f64> {
    let mut rates = vec![Vec::new(); variants.len()];
    for run in 0..=runs {
        for (v, (_, work)) in variants.iter_mut().enumerate() {
            let t = Instant::now();
            for (i, f) in files.iter().enumerate() {
                work(i, f);
            }
            if run > 0 {
                rates[v].push(files.len() as f64 / t.elapsed().as_secs_f64());
            }
        }
    }
    rates
        .into_iter()
        .map(|mut r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        })
        .collect()
}

/// The two views of sample `i` (the same in every run).
fn views(spec: &ViewSpec, i: usize, w: u32, h: u32) -> [ViewParams; 2] {
    [0, 1].map(|v| spec.sample(w, h, &mut KeyedRng::new(&[0, 0, 0, i as u64, v])))
}

/// Decode once, render two views: the loader's per-sample work.
struct Sample {
    plan: DecodePlan,
    img: RgbImage,
    scratch: ViewScratch,
    u8_out: Vec<u8>,
    f32_out: Vec<f32>,
}

impl Sample {
    fn new() -> Self {
        Self {
            plan: DecodePlan::new(),
            img: RgbImage::new(),
            scratch: ViewScratch::new(),
            u8_out: vec![0; 224 * 224 * 3],
            f32_out: vec![0.0; 3 * 224 * 224],
        }
    }

    /// Sample `i`: `info` is its header, known ahead as in the loader (the shard index holds
    /// width and height).
    fn run(
        &mut self,
        i: usize,
        bytes: &[u8],
        info: &JpegInfo,
        spec: &ViewSpec,
        opts: &DecodePlanOptions,
        f32_out: bool,
    ) {
        let views = views(spec, i, info.width, info.height);
        let geometry = views.map(|p| ViewGeometry { crop: p.crop, width: 224, height: 224 });
        self.plan.plan(info.width, info.height, &geometry, opts).unwrap();
        decode_jpeg(bytes, &self.plan.decode_options(&DecodeOptions::default()), &mut self.img)
            .unwrap();
        for (p, b) in views.iter().zip(self.plan.boxes()) {
            let out = if f32_out {
                ViewOutput::F32Chw {
                    pixels: &mut self.f32_out,
                    width: 224,
                    height: 224,
                    normalize: Normalize::IMAGENET,
                }
            } else {
                ViewOutput::U8Hwc { pixels: &mut self.u8_out, width: 224, height: 224 }
            };
            render_view(&self.img, b, p, out, &mut self.scratch).unwrap();
        }
    }
}

fn torchvision_rate(paths: &[PathBuf], runs: usize) -> Option<f64> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var_os("REGIONCL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../.venv/bin/python"));
    let list = std::env::temp_dir().join(format!("decode_bench_{}.txt", std::process::id()));
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    std::fs::write(&list, names.join("\n")).ok()?;
    let out = std::process::Command::new(&python)
        .arg(root.join("benches/torchvision_mocov2.py"))
        .arg(&list)
        .arg(runs.to_string())
        .output();
    let _ = std::fs::remove_file(&list);
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().parse().ok(),
        Ok(o) => {
            eprintln!("torchvision baseline failed: {}", String::from_utf8_lossy(&o.stderr));
            None
        }
        Err(e) => {
            eprintln!("torchvision baseline: {}: {e}", python.display());
            None
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args[i + 1].parse().expect("a number"))
            .unwrap_or(default)
    };
    let dir = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .expect("usage: decode_bench DIR [--limit N] [--runs R]");
    let (limit, runs) = (flag("--limit", 600), flag("--runs", 5));
    let mut all = Vec::new();
    jpegs(Path::new(dir), &mut all);
    assert!(!all.is_empty(), "{dir}: no .jpg files");
    let n = limit.min(all.len());
    let paths: Vec<PathBuf> = (0..n).map(|i| all[i * all.len() / n].clone()).collect();
    let files: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let infos: Vec<_> = files.iter().map(|f| jpeg_info(f).unwrap()).collect();
    let mean = |f: &dyn Fn(usize) -> f64| (0..n).map(f).sum::<f64>() / n as f64;
    println!(
        "{n} files from {dir}: mean {:.0}x{:.0} px, {:.1} KB; median of {runs} runs, one thread",
        mean(&|i| f64::from(infos[i].width)),
        mean(&|i| f64::from(infos[i].height)),
        mean(&|i| files[i].len() as f64) / 1e3,
    );

    let mut variants: Vec<Variant<'_>> = Vec::new();
    let (mut img, mut buf) = (RgbImage::new(), Vec::new());
    variants.push((
        "image 0.25 (zune-jpeg), full decode".into(),
        Box::new(move |_, f| {
            let d = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(f)).unwrap();
            buf.resize(d.total_bytes() as usize, 0);
            d.read_image(&mut buf).unwrap();
        }),
    ));
    for scale in Scale::ALL {
        let opts = DecodeOptions { scale, ..Default::default() };
        let name = match scale {
            Scale::Full => "libjpeg-turbo, full decode".to_string(),
            s => format!("libjpeg-turbo, DCT scale 1/{}", s.denom()),
        };
        let mut img = RgbImage::new();
        variants.push((name, Box::new(move |_, f| decode_jpeg(f, &opts, &mut img).unwrap())));
    }
    let spec = ViewSpec::geometry_only(224);
    let infos = &infos;
    variants.push((
        "libjpeg-turbo, region of one RandomResizedCrop (scale 0.2-1)".into(),
        Box::new(move |i, f| {
            let crop = views(&spec, i, infos[i].width, infos[i].height)[0].crop;
            decode_jpeg(f, &DecodeOptions { region: Some(crop), ..Default::default() }, &mut img)
                .unwrap();
        }),
    ));
    let plans = [
        (
            "decode once + 2x224 crop/resize/flip, u8 (full decode)",
            DecodePlanOptions { dct_scaling: false, region: false },
        ),
        (
            "decode once + 2x224 crop/resize/flip, u8 (region)",
            DecodePlanOptions { dct_scaling: false, region: true },
        ),
        (
            "decode once + 2x224 crop/resize/flip, u8 (DCT scale + region)",
            DecodePlanOptions::default(),
        ),
    ];
    for (name, opts) in plans {
        let mut sample = Sample::new();
        variants.push((
            name.into(),
            Box::new(move |i, f| sample.run(i, f, &infos[i], &spec, &opts, false)),
        ));
    }
    let moco = ViewSpec::mocov2(224);
    let mut sample = Sample::new();
    variants.push((
        "decode once + 2x224 full MoCo v2 augmentation on the CPU, f32".into(),
        Box::new(move |i, f| {
            sample.run(i, f, &infos[i], &moco, &DecodePlanOptions::default(), true)
        }),
    ));
    // `--only TEXT` keeps the variants whose name contains TEXT (for profiling one of them).
    if let Some(i) = args.iter().position(|a| a == "--only") {
        variants.retain(|(name, _)| name.contains(args[i + 1].as_str()));
    }
    let rates = measure(&files, runs, &mut variants);
    let rows: Vec<(String, f64)> = variants.into_iter().map(|(name, _)| name).zip(rates).collect();
    let full_aug = rows.last().unwrap().1;

    let base =
        rows.iter().find(|(n, _)| n == "libjpeg-turbo, full decode").map_or(f64::NAN, |r| r.1);
    println!("\n| path (one core) | images/s | vs libjpeg-turbo full |\n|---|---:|---:|");
    for (name, rate) in &rows {
        println!("| {name} | {rate:.0} | {:.2} |", rate / base);
    }
    let torchvision = if args.iter().any(|a| a == "--no-torchvision") {
        None
    } else {
        torchvision_rate(&paths, runs)
    };
    if let Some(tv) = torchvision {
        println!(
            "| torchvision 0.26 + PIL, MoCo v2 two views (same files, 1 thread) | {tv:.0} | {:.2} |",
            tv / base
        );
        println!("\nfull MoCo v2 CPU augmentation: {:.2}x torchvision + PIL", full_aug / tv);
    }
}
