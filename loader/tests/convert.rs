//! The converter on a small synthetic tree: records, skips, determinism, cancel and resume.

use std::io::Cursor;
use std::ops::ControlFlow;
use std::path::Path;

use regioncl_augment::{DecodeOptions, RgbImage, decode_jpeg, jpeg_info};
use regioncl_loader::{
    ConvertConfig, ConvertSummary, Dataset, Error, Progress, SKIPPED_FILE, Source, convert,
};

use crate::common::{TempDir, dir_bytes, jpeg, noise};

fn png(image: image::DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A JPEG whose SOF claims 65000x65000 pixels.
pub fn bomb() -> Vec<u8> {
    let mut b = jpeg(16, 16, 0, 90);
    let sof = b.windows(2).position(|w| w == [0xff, 0xc0]).expect("baseline SOF0");
    b[sof + 5..sof + 7].copy_from_slice(&65000u16.to_be_bytes());
    b[sof + 7..sof + 9].copy_from_slice(&65000u16.to_be_bytes());
    b
}

/// cat: 3 JPEGs (one nested, one without extension), a hidden file, a text file;
/// dog: a JPEG to shrink, an RGBA PNG, a gray PNG, a BMP and 5 bad files; empty: nothing.
pub(crate) fn tree(root: &Path) {
    let w = |rel: &str, bytes: &[u8]| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    w("cat/a.jpg", &jpeg(64, 48, 1, 90));
    w("cat/b.JPEG", &jpeg(40, 60, 2, 80));
    w("cat/sub/deeper/c.jpg", &jpeg(33, 17, 3, 95));
    w("cat/noext", &jpeg(20, 20, 4, 90));
    w("cat/.hidden.jpg", &jpeg(20, 20, 5, 90));
    w("cat/notes.txt", b"not an image");
    w("dog/big.jpg", &jpeg(400, 300, 6, 90));
    let mut rgba = image::RgbaImage::new(30, 20);
    for (x, _, p) in rgba.enumerate_pixels_mut() {
        *p = image::Rgba([200, 10, 10, if x < 15 { 0 } else { 255 }]);
    }
    w("dog/alpha.png", &png(rgba.into()));
    w("dog/gray.png", &png(image::GrayImage::from_pixel(9, 7, image::Luma([77])).into()));
    let mut bmp = Cursor::new(Vec::new());
    image::DynamicImage::from(image::RgbImage::from_pixel(5, 4, image::Rgb([1, 2, 3])))
        .write_to(&mut bmp, image::ImageFormat::Bmp)
        .unwrap();
    w("dog/e.bmp", bmp.get_ref());
    w("dog/zero.jpg", b"");
    let good = jpeg(64, 64, 7, 90);
    w("dog/truncated.jpg", &good[..good.len() / 2]);
    w("dog/random.jpg", &noise(3000, 9));
    w("dog/text.jpg", b"<html>this is not a jpeg</html>\n");
    w("dog/bomb.jpg", &bomb());
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    w(".git/x.jpg", &jpeg(8, 8, 8, 90));
    w("top-level.jpg", &jpeg(8, 8, 9, 90));
}

pub(crate) fn config(threads: usize) -> ConvertConfig {
    ConvertConfig { threads, shard_size: 4096, seed: 5, ..ConvertConfig::default() }
}

pub(crate) fn run(src: &Path, out: &Path, config: &ConvertConfig) -> Result<ConvertSummary, Error> {
    convert(&Source::ImageFolder(src.into()), out, config, &mut |_| ControlFlow::Continue(()))
}

#[test]
fn converts_the_good_files_and_reports_the_bad() {
    let dir = TempDir::new("convert");
    let src = dir.path().join("src");
    tree(&src);
    let out = dir.path().join("out");
    let summary = run(&src, &out, &config(2)).unwrap();
    assert_eq!(summary.num_records, 8);
    assert_eq!((summary.num_stored, summary.num_converted, summary.num_resized), (5, 3, 0));
    assert_eq!(summary.num_classes, 3);
    assert_eq!(summary.empty_classes, ["empty"]);
    assert!(summary.num_shards > 1, "4 KiB shards: {}", summary.num_shards);
    // .hidden.jpg, notes.txt, .git, top-level.jpg
    assert_eq!(summary.num_ignored, 4);
    let reasons: Vec<_> =
        summary.skipped.iter().map(|s| (s.path.as_str(), s.reason.as_str())).collect();
    let names: Vec<_> = reasons.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        names,
        ["dog/bomb.jpg", "dog/random.jpg", "dog/text.jpg", "dog/truncated.jpg", "dog/zero.jpg"]
    );
    assert!(reasons[0].1.contains("65000x65000 pixels exceeds the limit"), "{}", reasons[0].1);
    assert_eq!(reasons[4].1, "empty file");
    assert!(reasons[2].1.starts_with("not an image"), "{}", reasons[2].1);

    let report = std::fs::read_to_string(out.join(SKIPPED_FILE)).unwrap();
    let lines: Vec<_> = report.lines().collect();
    assert_eq!(lines[0], "path\treason");
    assert!(lines[1].starts_with("empty/\tempty class directory"));
    assert_eq!(lines.len(), 2 + 5);
    assert!(lines[2].starts_with("dog/bomb.jpg\t"));

    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.len(), 8);
    assert_eq!(ds.class_names(), ["cat", "dog", "empty"]);
    let mut labels = [0; 3];
    let mut img = RgbImage::new();
    let strict = DecodeOptions { strict: true, ..Default::default() };
    for i in 0..ds.len() {
        let r = ds.verify_record(i).unwrap();
        labels[r.label as usize] += 1;
        let info = jpeg_info(r.bytes).unwrap();
        assert_eq!((info.width, info.height), (r.width, r.height));
        decode_jpeg(r.bytes, &strict, &mut img).unwrap();
        if (r.width, r.height) == (30, 20) {
            // The transparent left half was composited onto white.
            let px = &img.as_bytes()[(10 * 30 + 3) * 3..][..3];
            assert!(px.iter().all(|&c| c > 240), "{px:?}");
            let px = &img.as_bytes()[(10 * 30 + 25) * 3..][..3];
            assert!(px[0] > 150 && px[1] < 60, "{px:?}");
        }
    }
    assert_eq!(labels, [4, 4, 0]);
    // Stored JPEGs are byte-for-byte the source files.
    let a = std::fs::read(src.join("cat/a.jpg")).unwrap();
    assert!((0..ds.len()).any(|i| ds.record(i).unwrap().bytes == a));
}

#[test]
fn max_side_resizes_only_larger_images() {
    let dir = TempDir::new("convert-max-side");
    let src = dir.path().join("src");
    tree(&src);
    let out = dir.path().join("out");
    let config = ConvertConfig { max_side: Some(50), quality: 90, ..config(2) };
    let summary = run(&src, &out, &config).unwrap();
    // a.jpg (64x48), big.jpg (400x300), b.JPEG (40x60) exceed 50.
    assert_eq!((summary.num_stored, summary.num_converted, summary.num_resized), (2, 3, 3));
    let ds = Dataset::open(&out).unwrap();
    let mut sizes: Vec<_> =
        (0..ds.len()).map(|i| ds.record(i).unwrap()).map(|r| (r.width, r.height)).collect();
    sizes.sort();
    assert!(
        sizes.contains(&(50, 38)) && sizes.contains(&(50, 38)) && sizes.contains(&(33, 50)),
        "{sizes:?}"
    );
    assert!(sizes.iter().all(|&(w, h)| w.max(h) <= 50));
}

#[test]
fn output_is_identical_for_any_thread_count() {
    let dir = TempDir::new("convert-threads");
    let src = dir.path().join("src");
    tree(&src);
    let outs: Vec<_> = [1, 2, 5]
        .iter()
        .map(|&t| {
            let out = dir.path().join(format!("out{t}"));
            run(&src, &out, &config(t)).unwrap();
            dir_bytes(&out)
        })
        .collect();
    assert!(outs[0].len() > 3);
    assert_eq!(outs[0], outs[1]);
    assert_eq!(outs[0], outs[2]);
    // Another seed gives another order.
    let out = dir.path().join("seed");
    run(&src, &out, &ConvertConfig { seed: 6, ..config(2) }).unwrap();
    assert_ne!(dir_bytes(&out), outs[0]);
}

/// Converts, cancelling once `stop_at` files are done.
pub(crate) fn cancel_at(
    src: &Path,
    out: &Path,
    stop_at: u64,
    threads: usize,
) -> Result<ConvertSummary, Error> {
    convert(&Source::ImageFolder(src.into()), out, &config(threads), &mut |p: &Progress| {
        if p.done >= stop_at { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    })
}

#[test]
fn cancelled_runs_resume_to_identical_bytes() {
    let dir = TempDir::new("convert-resume");
    let src = dir.path().join("src");
    tree(&src);
    let reference = dir.path().join("reference");
    run(&src, &reference, &config(1)).unwrap();
    let expected = dir_bytes(&reference);
    let total = 13;
    for stop_at in 0..=total {
        let out = dir.path().join(format!("out{stop_at}"));
        assert!(matches!(cancel_at(&src, &out, stop_at, 2), Err(Error::Cancelled)), "{stop_at}");
        // Cancel again a little later, from the resumed state.
        let _ = cancel_at(&src, &out, stop_at + 3, 3);
        let summary = run(&src, &out, &config(2)).unwrap();
        assert_eq!(dir_bytes(&out), expected, "cancelled at {stop_at}");
        assert_eq!(summary.num_records, 8);
        std::fs::remove_dir_all(&out).unwrap();
    }
}

#[test]
fn crash_leftovers_are_discarded_on_resume() {
    let dir = TempDir::new("convert-crash");
    let src = dir.path().join("src");
    tree(&src);
    let reference = dir.path().join("reference");
    run(&src, &reference, &config(1)).unwrap();
    let expected = dir_bytes(&reference);

    let out = dir.path().join("out");
    let _ = cancel_at(&src, &out, 11, 2);
    let journal = out.join("convert.journal");
    let text = std::fs::read_to_string(&journal).unwrap();
    assert!(text.lines().count() >= 2, "some shards are logged: {text}");
    // A torn journal line, a partial shard, a published shard that was never logged, a stale temp.
    let mut torn = text.clone();
    torn.push_str("{\"shard\":{\"file\":\"shard-000");
    std::fs::write(&journal, torn).unwrap();
    std::fs::write(out.join(".regioncl-tmp-shard-00007.rcl"), noise(100, 1)).unwrap();
    std::fs::write(out.join("shard-00009.rcl"), noise(100, 2)).unwrap();
    std::fs::write(out.join(".regioncl-tmp-manifest.json"), b"{").unwrap();
    run(&src, &out, &config(2)).unwrap();
    assert_eq!(dir_bytes(&out), expected);

    // Killed after renaming shards but before logging them: only the head line survived.
    let out = dir.path().join("out2");
    let _ = cancel_at(&src, &out, 10, 2);
    let journal = out.join("convert.journal");
    let text = std::fs::read_to_string(&journal).unwrap();
    std::fs::write(&journal, format!("{}\n", text.lines().next().unwrap())).unwrap();
    run(&src, &out, &config(2)).unwrap();
    assert_eq!(dir_bytes(&out), expected);

    // A logged shard damaged afterwards is redone.
    let out = dir.path().join("out3");
    let _ = cancel_at(&src, &out, 10, 2);
    let first = out.join("shard-00000.rcl");
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&first, bytes).unwrap();
    run(&src, &out, &config(2)).unwrap();
    assert_eq!(dir_bytes(&out), expected);
}

#[test]
fn finished_output_is_left_alone_and_other_jobs_are_refused() {
    let dir = TempDir::new("convert-refuse");
    let src = dir.path().join("src");
    tree(&src);
    let out = dir.path().join("out");
    run(&src, &out, &config(2)).unwrap();
    let before = dir_bytes(&out);
    let again = run(&src, &out, &config(1)).unwrap();
    assert!(again.already_complete);
    assert_eq!(again.num_records, 8);
    assert_eq!(again.skipped.len(), 5);
    assert_eq!(dir_bytes(&out), before);

    let other = ConvertConfig { quality: 80, ..config(2) };
    assert!(matches!(run(&src, &out, &other), Err(Error::Config(_))));

    let unfinished = dir.path().join("unfinished");
    let _ = cancel_at(&src, &unfinished, 5, 2);
    let err = run(&src, &unfinished, &other).unwrap_err();
    assert!(err.to_string().contains("unfinished conversion of other input"), "{err}");

    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("precious.txt"), b"keep me").unwrap();
    assert!(matches!(run(&src, &foreign, &config(2)), Err(Error::Config(_))));
    assert_eq!(std::fs::read(foreign.join("precious.txt")).unwrap(), b"keep me");

    assert!(matches!(
        run(&src, &dir.path().join("x"), &ConvertConfig { quality: 0, ..config(1) }),
        Err(Error::Config(_))
    ));
}

#[test]
fn list_file_input() {
    let dir = TempDir::new("convert-list");
    let root = dir.path().join("root");
    tree(&root);
    let list = dir.path().join("train.txt");
    std::fs::write(
        &list,
        "cat/a.jpg\t0\ndog/alpha.png\t2\n\ndog/zero.jpg\t1\nmissing.jpg\t1\nwith space/x.jpg\t1\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("with space")).unwrap();
    std::fs::write(root.join("with space/x.jpg"), jpeg(10, 10, 1, 90)).unwrap();
    let out = dir.path().join("out");
    let source = Source::List { list: list.clone(), root: root.clone() };
    let summary = convert(&source, &out, &config(2), &mut |_| ControlFlow::Continue(())).unwrap();
    assert_eq!(summary.num_records, 3);
    assert_eq!(summary.num_classes, 3);
    let skipped: Vec<_> = summary.skipped.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(skipped, ["dog/zero.jpg", "missing.jpg"]);
    assert!(summary.skipped[1].reason.starts_with("cannot read"));
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.class_names(), ["0", "1", "2"]);
    let mut labels: Vec<_> = (0..3).map(|i| ds.record(i).unwrap().label).collect();
    labels.sort();
    assert_eq!(labels, [0, 1, 2]);

    for (text, line) in [
        ("a.jpg 0\n", 1),
        ("a.jpg\t0\nb.jpg\tx\n", 2),
        ("a.jpg\t0\n/abs.jpg\t1\n", 2),
        ("a\t-1\n", 1),
    ] {
        std::fs::write(&list, text).unwrap();
        let err = convert(&source, &dir.path().join("bad"), &config(1), &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with(&format!("{}:{line}: ", list.display())), "{message}");
    }
}

#[cfg(unix)]
#[test]
fn symlinks_are_followed_and_loops_end() {
    let dir = TempDir::new("convert-links");
    let src = dir.path().join("src");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("x.jpg"), jpeg(10, 10, 1, 90)).unwrap();
    std::fs::write(elsewhere.join("y.jpg"), jpeg(11, 10, 1, 90)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, src.join("b")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("x.jpg"), src.join("a/link.jpg")).unwrap();
    std::os::unix::fs::symlink(src.join("a"), src.join("a/loop")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("nowhere.jpg"), src.join("a/broken.jpg")).unwrap();
    let out = dir.path().join("out");
    let summary = run(&src, &out, &config(1)).unwrap();
    assert_eq!(summary.num_records, 3);
    assert_eq!(summary.skipped.len(), 1);
    assert_eq!(summary.skipped[0].path, "a/broken.jpg");
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.class_names(), ["a", "b"]);
}

#[test]
fn output_inside_the_tree_is_not_an_input() {
    let dir = TempDir::new("convert-inside");
    let src = dir.path().join("src");
    tree(&src);
    let reference = dir.path().join("reference");
    run(&src, &reference, &config(1)).unwrap();
    let out = src.join("zz-shards");
    let _ = cancel_at(&src, &out, 11, 2);
    let summary = run(&src, &out, &config(2)).unwrap();
    assert_eq!(summary.num_classes, 3);
    assert_eq!(dir_bytes(&out), dir_bytes(&reference));
}
