//! Record sources through the one builder: a folder and its shards give an image the same views,
//! and a bad record is bad everywhere (verify, training, evaluation).

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use regioncl_loader::{
    BadRecordKind, BadRecords, Batch, ConvertConfig, ConvertSettings, DATASET_FORMAT,
    DATASET_VERSION, Dataset, Error, ImageFolder, LoaderBuilder, Manifest, PipelineError, Recipe,
    RecordSource, ShardWriter, Source, convert,
};

use crate::common::{TempDir, jpeg};

/// An ImageFolder tree of 3 classes x 6 JPEGs of assorted sizes under `root`.
fn folder(root: &Path) {
    for c in 0..3u32 {
        let dir = root.join(format!("class{c}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..6u32 {
            let bytes = jpeg(70 + 13 * i + 7 * c, 60 + 11 * c + 5 * i, 10 * c + i, 90);
            std::fs::write(dir.join(format!("img{i}.jpg")), bytes).unwrap();
        }
    }
}

/// The only batch of a one-batch epoch over `source`, stored order, MoCo v2 views of 48 px.
fn one_batch(source: Arc<dyn RecordSource>) -> Batch {
    let n = source.num_records() as usize;
    let loader = LoaderBuilder::new(source)
        .recipe(Recipe::mocov2(48))
        .batch_size(n)
        .seed(7)
        .shuffle(false)
        .threads(2)
        .end_epoch(Some(1));
    loader.build().unwrap().next().unwrap().unwrap()
}

/// The promise of one path: the same image and seed give the same views (parameters and pixels)
/// whether it is read from its folder or from the shards `convert` made of it, in another order.
#[test]
fn an_image_gets_the_same_views_from_its_folder_and_from_its_shards() {
    let tmp = TempDir::new("sources-same-views");
    let (src, out) = (tmp.path().join("photos"), tmp.path().join("shards"));
    folder(&src);
    let config = ConvertConfig { threads: 2, ..ConvertConfig::default() };
    convert(&Source::ImageFolder(src.clone()), &out, &config, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    let photos = Arc::new(ImageFolder::open(&src).unwrap());
    let shards = Arc::new(Dataset::open(&out).unwrap());
    assert_eq!(photos.class_names(), shards.class_names());
    let (a, b) = (one_batch(photos.clone()), one_batch(shards.clone()));
    let crc = |s: &dyn RecordSource, i: u64| s.read(i, &mut Vec::new()).unwrap().crc;
    let px = 48 * 48 * 3;
    let mut moved = 0;
    for (i, &fi) in a.plan().indices.iter().enumerate() {
        let key = crc(photos.as_ref(), fi);
        let j = b.plan().indices.iter().position(|&si| crc(shards.as_ref(), si) == key).unwrap();
        moved += usize::from(b.plan().indices[j] != fi);
        assert_eq!(a.labels()[i], b.labels()[j]);
        for v in 0..2 {
            assert_eq!(a.plan().views[v][i], b.plan().views[v][j], "record {fi} view {v}");
            let (x, y) = (a.view(v).bytes, b.view(v).bytes);
            assert_eq!(x[i * px..(i + 1) * px], y[j * px..(j + 1) * px], "record {fi} view {v}");
        }
    }
    assert!(moved > 9, "convert shuffles the records, yet the views follow the images");
}

/// Files an ImageFolder cannot use are listed, not read: a link to `/dev/zero` (it would read
/// forever) and a `.jpg` that is not a JPEG.
#[test]
fn an_image_folder_lists_what_it_cannot_read() {
    let tmp = TempDir::new("sources-skipped");
    folder(tmp.path());
    let class = tmp.path().join("class1");
    std::os::unix::fs::symlink("/dev/zero", class.join("zero.jpg")).unwrap();
    std::fs::write(class.join("notes.jpg"), b"not a jpeg").unwrap();
    let photos = ImageFolder::open(tmp.path()).unwrap();
    assert_eq!(photos.len(), 18);
    let mut skipped: Vec<String> = photos
        .skipped()
        .iter()
        .map(|(p, why)| format!("{}: {why}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    skipped.sort();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped[0].starts_with("notes.jpg")
            && skipped[1].contains("a character device, not a file"),
        "{skipped:?}"
    );
}

/// Issue 12 #11: a JPEG cut short ("premature end of data segment") was trained on as grey pixels
/// while `inspect --verify` called it undecodable. One definition now: verify reports it,
/// evaluation fails on it, training replaces it.
#[test]
fn a_truncated_jpeg_is_bad_in_verify_training_and_evaluation() {
    let tmp = TempDir::new("sources-truncated");
    let mut w = ShardWriter::create(tmp.path().join("shard-00000.rcl")).unwrap();
    for i in 0..8u32 {
        let mut bytes = jpeg(96, 80, i, 90);
        if i == 5 {
            bytes.truncate(bytes.len() / 3);
        }
        w.push(&bytes, i % 2, 96, 80).unwrap();
    }
    let shard = w.finish().unwrap();
    let manifest = Manifest {
        format: DATASET_FORMAT.into(),
        format_version: DATASET_VERSION,
        num_records: shard.num_records,
        num_bytes: shard.num_bytes,
        class_names: vec!["a".into(), "b".into()],
        shards: vec![shard],
        converter: ConvertSettings::default(),
    };
    manifest.write(tmp.path()).unwrap();
    let ds = Arc::new(Dataset::open(tmp.path()).unwrap());

    let report = ds.verify(2, &|_| {});
    assert_eq!(report.records_checked, 8);
    let [Error::BadRecord(bad)] = &report.problems[..] else {
        panic!("{:?}", report.problems);
    };
    assert_eq!(bad.index, 5);
    assert!(matches!(bad.kind, BadRecordKind::Decode(_)), "{bad:?}");

    let eval = LoaderBuilder::new(ds.clone())
        .recipe(Recipe::eval_center(73, 64))
        .batch_size(8)
        .shuffle(false)
        .drop_last(false)
        .end_epoch(Some(1))
        .bad_records(BadRecords::Fail);
    let err = eval.build().unwrap().next().unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::Pipeline(PipelineError::BadRecord { source, .. }) if source.index == 5),
        "{err:?}"
    );
    let train = eval.bad_records(BadRecords::Replace).build().unwrap().next().unwrap().unwrap();
    let subs = train.substitutions();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].failed, 5);
    assert!(subs[0].reason.contains("does not decode"), "{}", subs[0].reason);
}
