//! `regioncl convert` on real photos, the flower variants and hand-made bad files: records,
//! report, determinism across thread counts, SIGKILL and resume.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use regioncl_augment::{DecodeOptions, RgbImage, decode_jpeg, jpeg_info};
use regioncl_loader::Dataset;

use crate::cli::{TempDir, data_dir, dir_bytes, fixtures, regioncl, run, run_ok};

/// Good files in the tree of [`tree`], and the bad ones (relative paths, sorted).
pub const NUM_GOOD: u64 = 72;
pub const BAD: [&str; 5] = [
    "fixtures/bomb_65000x65000.jpg",
    "fixtures/random.jpg",
    "fixtures/text.jpg",
    "fixtures/truncated.jpg",
    "fixtures/zero.jpg",
];
/// Shard size of the shared conversions: 1 MB gives a dozen shards.
pub const SHARD_SIZE: &str = "1000000";

/// A scratch directory for this test process's shared conversions (under the target dir).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable");
        let dir =
            exe.parent().and_then(Path::parent).expect("target/<profile>").join("e2e-convert");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    })
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
}

fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// The input tree, built once: classes `empty` (no file), `fixtures` (11 small images in odd
/// formats + 5 bad files + a hidden and two non-image files), `flower` (the 21 flower variants),
/// `imagenet` (31 ImageNet-like JPEGs, 6 in a subdirectory, one a symlink), `linked` (a symlink
/// to a directory of 5 JPEGs), `photos` (the 4 smallest real photos).
pub fn tree() -> &'static Path {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let data = data_dir();
        let src = scratch().join("src");
        for f in sorted_files(&data.join("flower")) {
            copy(&f, &src.join("flower").join(f.file_name().expect("name")));
        }
        let mut photos = sorted_files(&data.join("photos"));
        photos.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
        for f in photos.iter().take(4) {
            copy(f, &src.join("photos").join(f.file_name().expect("name")));
        }
        let imagenet = data.join("imagenet-like");
        for f in sorted_files(&imagenet.join("n00000000")).iter().take(24) {
            copy(f, &src.join("imagenet").join(f.file_name().expect("name")));
        }
        for f in sorted_files(&imagenet.join("n00000001")).iter().take(6) {
            copy(f, &src.join("imagenet/sub").join(f.file_name().expect("name")));
        }
        let elsewhere = scratch().join("elsewhere");
        for f in sorted_files(&imagenet.join("n00000002")).iter().take(5) {
            copy(f, &elsewhere.join(f.file_name().expect("name")));
        }
        let kept = sorted_files(&elsewhere)[0].clone();
        std::os::unix::fs::symlink(kept, src.join("imagenet/link.jpg")).expect("symlink file");
        std::os::unix::fs::symlink(&elsewhere, src.join("linked")).expect("symlink dir");
        let fx = src.join("fixtures");
        for name in [
            "cmyk.jpg",
            "gray.png",
            "gray16.png",
            "palette_alpha.png",
            "one_by_one.png",
            "one_by_one.jpg",
            "tiny.webp",
            "tiny.gif",
            "tiny.tif",
            "tiny.bmp",
            "rgb16.ppm",
            "truncated.jpg",
            "bomb_65000x65000.jpg",
        ] {
            copy(&fixtures().join(name), &fx.join(name));
        }
        std::fs::write(fx.join("zero.jpg"), b"").expect("write");
        let random: Vec<u8> =
            (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(fx.join("random.jpg"), random).expect("write");
        std::fs::write(fx.join("text.jpg"), b"this is a text file named .jpg\n").expect("write");
        copy(&fixtures().join("one_by_one.jpg"), &fx.join(".hidden.jpg"));
        std::fs::write(fx.join("README.txt"), b"not an image").expect("write");
        std::fs::write(fx.join("labels.json"), b"{}").expect("write");
        std::fs::create_dir_all(src.join("empty")).expect("mkdir");
        src
    })
}

/// The conversion of [`tree`] with 2 threads, made once.
pub fn reference() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let out = scratch().join("reference");
        let stdout = run_ok(&[
            &"convert",
            &tree(),
            &out,
            &"--threads",
            &"2",
            &"--shard-size",
            &SHARD_SIZE,
            &"--quiet",
        ]);
        assert!(stdout.contains(&format!("records   {NUM_GOOD} in ")), "{stdout}");
        out
    })
}

#[test]
fn converts_real_photos_and_every_variant() {
    let out = reference();
    let ds = Dataset::open(out).expect("open dataset");
    assert_eq!(ds.len() as u64, NUM_GOOD);
    assert_eq!(ds.class_names(), ["empty", "fixtures", "flower", "imagenet", "linked", "photos"]);
    assert!(ds.shards().len() >= 5, "{} shards", ds.shards().len());
    let mut counts = [0u64; 6];
    let strict = DecodeOptions { strict: true, ..Default::default() };
    let mut image = RgbImage::new();
    let mut labels_in_first_shard = std::collections::BTreeSet::new();
    for i in 0..ds.len() {
        let r = ds.verify_record(i).expect("crc");
        counts[r.label as usize] += 1;
        let info = jpeg_info(r.bytes).expect("every record is a JPEG");
        assert_eq!((info.width, info.height), (r.width, r.height));
        decode_jpeg(r.bytes, &strict, &mut image).expect("every record decodes strictly");
        if ds.locate(i).expect("locate").0 == 0 {
            labels_in_first_shard.insert(r.label);
        }
    }
    assert_eq!(counts, [0, 11, 21, 31, 5, 4]);
    assert!(labels_in_first_shard.len() > 1, "shards mix classes");
    // Real JPEGs are stored byte-for-byte.
    let photo = std::fs::read(sorted_files(&tree().join("photos"))[0].as_path()).expect("read");
    assert!((0..ds.len()).any(|i| ds.record(i).expect("record").bytes == photo));
    // The CMYK JPEG became an RGB JPEG; the 1x1 image survived.
    assert!((0..ds.len()).any(|i| ds.record(i).expect("record").width == 1));
}

#[test]
fn report_lists_each_bad_file_with_its_reason() {
    let report = std::fs::read_to_string(reference().join("skipped.tsv")).expect("skipped.tsv");
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[0], "path\treason");
    assert!(lines[1].starts_with("empty/\tempty class directory"), "{report}");
    let rows: Vec<(&str, &str)> =
        lines[2..].iter().map(|l| l.split_once('\t').expect("tab")).collect();
    let paths: Vec<&str> = rows.iter().map(|r| r.0).collect();
    assert_eq!(paths, BAD);
    assert!(rows[0].1.contains("65000x65000 pixels exceeds the limit"), "{}", rows[0].1);
    assert!(rows[1].1.starts_with("not an image"), "{}", rows[1].1);
    assert!(rows[2].1.starts_with("not an image"), "{}", rows[2].1);
    assert!(rows[3].1.starts_with("invalid JPEG"), "{}", rows[3].1);
    assert_eq!(rows[4].1, "empty file");
}

#[test]
fn summary_and_identical_bytes_with_one_thread() {
    let dir = TempDir::new("threads");
    let out = dir.path().join("out");
    let stdout =
        run_ok(&[&"convert", &tree(), &out, &"--threads", &"1", &"--shard-size", &SHARD_SIZE]);
    for needle in [
        "records   72 in ",
        "6 classes",
        "skipped   5",
        "ignored   3",
        "empty class directories: empty",
        "images/s",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in:\n{stdout}");
    }
    assert_eq!(dir_bytes(&out), dir_bytes(reference()), "--threads 1 and 2 differ");
    // Running again finds the work done.
    let stdout =
        run_ok(&[&"convert", &tree(), &out, &"--threads", &"1", &"--shard-size", &SHARD_SIZE]);
    assert!(stdout.contains("already holds this dataset"), "{stdout}");
}

fn journal_lines(out: &Path) -> usize {
    std::fs::read_to_string(out.join("convert.journal")).map_or(0, |t| t.lines().count())
}

/// Spawns a conversion into `out`, waits until `ready` holds (or the process ends) and SIGKILLs
/// it. Returns whether it was still running when killed.
fn kill_when(out: &Path, ready: impl Fn() -> bool) -> bool {
    let mut child = Command::new(regioncl())
        .arg("convert")
        .arg(tree())
        .arg(out)
        .args(["--threads", "1", "--shard-size", SHARD_SIZE, "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn regioncl");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready() && Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let running = child.try_wait().expect("wait").is_none();
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    running
}

#[test]
fn sigkill_at_any_moment_then_resume_gives_the_same_bytes() {
    let dir = TempDir::new("kill");
    let out = dir.path().join("out");
    let started = Instant::now();
    let mut mid_run_kills = 0;
    // Right at the start (listing the tree), then after 1, 3 and 6 published shards, then just
    // after a shard was logged, then after a moment inside a shard.
    mid_run_kills += kill_when(&out, || started.elapsed() > Duration::from_millis(1)) as usize;
    for shards in [1, 3, 6] {
        if kill_when(&out, || journal_lines(&out) > shards) {
            mid_run_kills += 1;
        }
    }
    let before = journal_lines(&out);
    mid_run_kills += kill_when(&out, || journal_lines(&out) > before) as usize;
    let t = Instant::now();
    mid_run_kills += kill_when(&out, || t.elapsed() > Duration::from_millis(300)) as usize;
    assert!(mid_run_kills >= 4, "only {mid_run_kills} kills hit a running conversion");
    let stdout = run_ok(&[
        &"convert",
        &tree(),
        &out,
        &"--threads",
        &"2",
        &"--shard-size",
        &SHARD_SIZE,
        &"--quiet",
    ]);
    assert!(stdout.contains(&format!("records   {NUM_GOOD} in ")), "{stdout}");
    assert_eq!(dir_bytes(&out), dir_bytes(reference()), "resumed output differs");
}

#[test]
fn list_file_with_root() {
    let dir = TempDir::new("list");
    let root = data_dir().join("imagenet-like");
    let mut list = String::new();
    for (label, class) in ["n00000003", "n00000004"].iter().enumerate() {
        for f in sorted_files(&root.join(class)).iter().take(5) {
            list.push_str(&format!(
                "{class}/{}\t{}\n",
                f.file_name().expect("name").to_string_lossy(),
                label * 2
            ));
        }
    }
    let list_path = dir.path().join("train.txt");
    std::fs::write(&list_path, list).expect("write list");
    let out = dir.path().join("out");
    let stdout = run_ok(&[&"convert", &"--list", &list_path, &"--root", &root, &out, &"--quiet"]);
    assert!(stdout.contains("records   10 in 1 shard(s), 3 classes"), "{stdout}");
    let ds = Dataset::open(&out).expect("open");
    assert_eq!(ds.class_names(), ["0", "1", "2"]);

    std::fs::write(&list_path, "a.jpg\t0\nb.jpg\tseven\n").expect("write list");
    let bad = run(&[&"convert", &"--list", &list_path, &"--root", &root, &dir.path().join("bad")]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains(&format!("{}:2: label is not an integer", list_path.display())),
        "{stderr}"
    );
}

#[test]
fn max_side_reencodes_large_images() {
    let dir = TempDir::new("max-side");
    let out = dir.path().join("out");
    let stdout = run_ok(&[
        &"convert",
        &tree(),
        &out,
        &"--max-side",
        &"256",
        &"--quality",
        &"90",
        &"--quiet",
    ]);
    assert!(stdout.contains("resized"), "{stdout}");
    let ds = Dataset::open(&out).expect("open");
    assert_eq!(ds.len() as u64, NUM_GOOD);
    let strict = DecodeOptions { strict: true, ..Default::default() };
    let mut image = RgbImage::new();
    for i in 0..ds.len() {
        let r = ds.record(i).expect("record");
        assert!(r.width.max(r.height) <= 256, "{}x{}", r.width, r.height);
        decode_jpeg(r.bytes, &strict, &mut image).expect("decodes");
    }
    assert!(
        ds.manifest().num_bytes < Dataset::open(reference()).expect("ref").manifest().num_bytes / 4
    );
}
