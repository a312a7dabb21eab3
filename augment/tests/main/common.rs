//! Test data, the torchvision reference runner and error statistics.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use regioncl_augment::{
    BlurScratch, DecodeOptions, Interpolation, Normalize, Rect, RgbImage, Scale, adjust_brightness,
    adjust_contrast, adjust_hue, adjust_saturation, decode_jpeg, gaussian_blur, rgb_to_grayscale,
    solarize,
};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("augment/ has a parent").to_path_buf()
}

/// The data directory; panics with the fix when it is missing.
pub fn data_dir() -> PathBuf {
    let dir = std::env::var_os("REGIONCL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/data"));
    assert!(
        dir.join("photos").is_dir() && dir.join("imagenet-like").is_dir(),
        "{}: test photos missing: run `make data` (or point REGIONCL_DATA at the data)",
        dir.display()
    );
    dir
}

/// The Python with torchvision 0.26; panics with the fix when it is missing.
pub fn python() -> PathBuf {
    let py = std::env::var_os("REGIONCL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/bin/python"));
    assert!(
        py.exists(),
        "{}: python with torchvision missing: run `make venv` (or set REGIONCL_PYTHON)",
        py.display()
    );
    py
}

fn sorted_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}: run `make data`", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// `n` large photos spread over the photo directory.
pub fn photos(n: usize) -> Vec<PathBuf> {
    let all = sorted_files(&data_dir().join("photos"), "jpg");
    assert!(all.len() >= n, "only {} photos: run `make data`", all.len());
    (0..n).map(|i| all[i * all.len() / n].clone()).collect()
}

/// `n` ImageNet-like files, spread over the classes.
pub fn imagenet_like(n: usize) -> Vec<PathBuf> {
    let root = data_dir().join("imagenet-like");
    let mut classes: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    (0..n)
        .map(|i| {
            let files = sorted_files(&classes[i % classes.len()], "jpg");
            files[(i * 37) % files.len()].clone()
        })
        .collect()
}

/// The flower JPEG variants (4:2:0, 4:2:2, 4:4:4, progressive, gray, RGB, ...).
pub fn flower_variants() -> Vec<PathBuf> {
    sorted_files(&data_dir().join("flower"), "jpg")
}

pub fn decode_file(path: &Path, scale: Scale) -> RgbImage {
    let bytes = std::fs::read(path).unwrap();
    let mut img = RgbImage::new();
    decode_jpeg(&bytes, &DecodeOptions { scale, ..Default::default() }, &mut img)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    img
}

/// A colour op, applied both here and by torchvision.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Brightness(f32),
    Contrast(f32),
    Saturation(f32),
    Hue(f32),
    Grayscale,
    Blur(f32),
    Solarize(f32),
    Normalize,
}

impl Op {
    fn json(&self) -> String {
        // f64::from keeps the exact f32 value; Debug prints the shortest exact decimal.
        let arg = |name: &str, v: f32| format!("[\"{name}\", {:?}]", f64::from(v));
        match *self {
            Op::Brightness(f) => arg("brightness", f),
            Op::Contrast(f) => arg("contrast", f),
            Op::Saturation(f) => arg("saturation", f),
            Op::Hue(s) => arg("hue", s),
            Op::Grayscale => "[\"grayscale\"]".into(),
            Op::Blur(s) => arg("blur", s),
            Op::Solarize(t) => arg("solarize", t),
            Op::Normalize => "[\"normalize\"]".into(),
        }
    }

    pub fn apply(&self, chw: &mut [f32], w: u32, h: u32, blur: &mut BlurScratch) {
        match *self {
            Op::Brightness(f) => adjust_brightness(chw, f),
            Op::Contrast(f) => adjust_contrast(chw, f),
            Op::Saturation(f) => adjust_saturation(chw, f),
            Op::Hue(s) => adjust_hue(chw, s),
            Op::Grayscale => rgb_to_grayscale(chw),
            Op::Blur(s) => gaussian_blur(chw, w, h, s, blur),
            Op::Solarize(t) => solarize(chw, t),
            Op::Normalize => Normalize::IMAGENET.apply(chw),
        }
    }
}

/// A batch of cases for `tests/torchvision_ref.py`, run with one Python start.
pub struct Reference {
    dir: PathBuf,
    cases: Vec<String>,
    files: usize,
}

impl Reference {
    pub fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("regioncl-augment-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir, cases: Vec::new(), files: 0 }
    }

    /// Writes an image for later cases; returns its file name.
    pub fn add_image(&mut self, pixels: &[u8]) -> String {
        let name = format!("img_{}.rgb", self.files);
        self.files += 1;
        std::fs::write(self.dir.join(&name), pixels).unwrap();
        name
    }

    fn push(&mut self, body: String) -> usize {
        let id = self.cases.len();
        self.cases.push(format!("{{\"id\": {id}, {body}}}"));
        id
    }

    /// torchvision `resized_crop` (+ `hflip`) of a u8 image, as a uint8 tensor (bilinear) or
    /// (`pil`) a PIL image with that filter; output u8 `[oh, ow, 3]`.
    #[allow(clippy::too_many_arguments)]
    pub fn resize(
        &mut self,
        src: &str,
        w: u32,
        h: u32,
        crop: Rect,
        out: (u32, u32),
        flip: bool,
        pil: Option<Interpolation>,
    ) -> usize {
        let (pil, filter) = match pil {
            None => (false, "bilinear"),
            Some(Interpolation::Bicubic) => (true, "bicubic"),
            Some(_) => (true, "bilinear"),
        };
        self.push(format!(
            "\"kind\": \"resize\", \"src\": \"{src}\", \"w\": {w}, \"h\": {h}, \
             \"crop\": [{}, {}, {}, {}], \"out\": [{}, {}], \"flip\": {flip}, \"pil\": {pil}, \
             \"filter\": \"{filter}\"",
            crop.y, crop.x, crop.h, crop.w, out.1, out.0
        ))
    }

    /// `ops` on `u8 / 255` of a u8 image; output f32 `[3, h, w]`.
    pub fn color(&mut self, src: &str, w: u32, h: u32, ops: &[Op]) -> usize {
        let mut list = String::new();
        for (i, op) in ops.iter().enumerate() {
            write!(list, "{}{}", if i > 0 { ", " } else { "" }, op.json()).unwrap();
        }
        self.push(format!(
            "\"kind\": \"color\", \"src\": \"{src}\", \"w\": {w}, \"h\": {h}, \"ops\": [{list}]"
        ))
    }

    /// PIL's decode of a file; output `(w: u32, h: u32)` then u8 `[h, w, 3]`.
    pub fn decode_pil(&mut self, path: &Path) -> usize {
        self.push(format!("\"kind\": \"decode_pil\", \"path\": {:?}", path.to_str().unwrap()))
    }

    /// Runs the script; returns each case's output bytes.
    pub fn run(self) -> Vec<Vec<u8>> {
        let json = format!("[\n{}\n]\n", self.cases.join(",\n"));
        std::fs::write(self.dir.join("cases.json"), json).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torchvision_ref.py");
        let out = Command::new(python()).arg(&script).arg(&self.dir).output().unwrap();
        assert!(
            out.status.success(),
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let results = (0..self.cases.len())
            .map(|i| std::fs::read(self.dir.join(format!("out_{i}.bin"))).unwrap())
            .collect();
        let _ = std::fs::remove_dir_all(&self.dir);
        results
    }
}

pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// Max and mean absolute difference, and the fraction of values that differ at all.
#[derive(Clone, Copy, Debug, Default)]
pub struct Diff {
    pub max: f64,
    pub mean: f64,
    pub differ: f64,
}

pub fn diff<T: Copy + Into<f64>>(a: &[T], b: &[T]) -> Diff {
    assert_eq!(a.len(), b.len(), "outputs of different sizes");
    let (mut max, mut sum, mut n) = (0.0f64, 0.0f64, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        let d = (x.into() - y.into()).abs();
        max = max.max(d);
        sum += d;
        n += usize::from(d != 0.0);
    }
    let len = a.len().max(1) as f64;
    Diff { max, mean: sum / len, differ: n as f64 / len }
}

impl Diff {
    /// The worst of two.
    pub fn worst(self, o: Diff) -> Diff {
        Diff {
            max: self.max.max(o.max),
            mean: self.mean.max(o.mean),
            differ: self.differ.max(o.differ),
        }
    }
}
