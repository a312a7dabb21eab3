//! The evaluation crop against torchvision: `Recipe::eval_center(256, 224)` is the ImageNet
//! evaluation transform, `Resize(256)` + `CenterCrop(224)` on PIL images, within one level.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use regioncl_loader::{ImageFolder, LoaderBuilder, Recipe};

use crate::common::TempDir;

fn data_dir() -> PathBuf {
    let dir = std::env::var_os("REGIONCL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/data"));
    assert!(dir.join("photos").is_dir(), "{}: test photos missing: run `make data`", dir.display());
    dir
}

/// The files of `dir` with extension jpg, sorted.
fn jpegs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}: run `make data`", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    v.sort();
    v
}

/// torchvision's output for each file (augment/tests/torchvision_ref.py, kind "center").
fn torchvision_center(files: &[PathBuf], resize: u32, crop: u32, dir: &Path) -> Vec<Vec<u8>> {
    let cases: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(id, f)| {
            format!(
                "{{\"id\": {id}, \"kind\": \"center\", \"path\": {:?}, \"resize\": {resize}, \
                 \"crop\": {crop}}}",
                f.to_str().unwrap()
            )
        })
        .collect();
    std::fs::write(dir.join("cases.json"), format!("[{}]", cases.join(",\n"))).unwrap();
    let python = std::env::var_os("REGIONCL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../augment/tests/torchvision_ref.py");
    let out = Command::new(&python).arg(&script).arg(dir).output().unwrap_or_else(|e| {
        panic!("{}: {e}: run `make venv` (or set REGIONCL_PYTHON)", python.display())
    });
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (0..files.len()).map(|i| std::fs::read(dir.join(format!("out_{i}.bin"))).unwrap()).collect()
}

/// The regression: the centre crop was cut to whole source pixels, resized inside that hard
/// border and, on large photos, taken from a DCT-scaled decode: up to 151 levels from
/// torchvision. ImageNet-sized files (upscaled and downscaled, landscape and portrait), large
/// photos (24 MP, a downscale of 15) and a 4:2:2 and a grayscale file.
#[test]
fn eval_center_is_torchvisions_resize_and_center_crop_within_one_level() {
    let data = data_dir();
    let tmp = TempDir::new("center");
    let class = tmp.path().join("tree").join("a");
    std::fs::create_dir_all(&class).unwrap();
    let mut files: Vec<PathBuf> = Vec::new();
    let imagenet = data.join("imagenet-like");
    let mut classes: Vec<PathBuf> =
        std::fs::read_dir(&imagenet).unwrap().map(|e| e.unwrap().path()).collect();
    classes.sort();
    for (c, dir) in classes.iter().take(4).enumerate() {
        files.extend(jpegs(dir).into_iter().skip(c * 7).step_by(23).take(3));
    }
    let photos = jpegs(&data.join("photos"));
    files.extend(photos.iter().step_by(photos.len() / 3).take(3).cloned());
    let flower = data.join("flower");
    files.push(flower.join("flower.png.im_q85_422.jpg"));
    files.push(flower.join("flower.png.im_q85_gray.jpg"));
    files.push(flower.join("flower_small.q85_420_non_interleaved.jpg"));
    for (i, f) in files.iter().enumerate() {
        // Names in the order of `files`: the folder lists its records sorted by path.
        std::os::unix::fs::symlink(f, class.join(format!("{i:02}.jpg"))).unwrap();
    }
    let (resize, crop) = (256, 224);
    let want = torchvision_center(&files, resize, crop, tmp.path());
    let source = Arc::new(ImageFolder::open(tmp.path().join("tree")).unwrap());
    let mut pipeline = LoaderBuilder::new(source)
        .recipe(Recipe::eval_center(resize, crop))
        .batch_size(files.len())
        .shuffle(false)
        .drop_last(false)
        .threads(2)
        .end_epoch(Some(1))
        .build()
        .unwrap();
    let batch = pipeline.next().unwrap().unwrap();
    let px = (crop * crop * 3) as usize;
    let pixels = batch.view(0).bytes;
    for (i, f) in files.iter().enumerate() {
        let ours = &pixels[i * px..(i + 1) * px];
        let worst = ours.iter().zip(&want[i]).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        assert!(worst <= 1, "{}: {worst} levels from torchvision", f.display());
    }
}
