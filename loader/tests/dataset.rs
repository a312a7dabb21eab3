//! Datasets: a manifest and its shards, cross-checked on open.

use std::path::Path;

use regioncl_loader::{
    ChecksumError, ConvertSettings, DATASET_FORMAT, DATASET_VERSION, Dataset, Error, MANIFEST_FILE,
    Manifest, ManifestError, ShardWriter,
};

use crate::common::{TempDir, noise};

/// Writes a dataset of `sizes.len()` shards (shard k holds `sizes[k]` records, labels i % 3) to
/// `dir` and returns its manifest.
fn build(dir: &Path, sizes: &[usize]) -> Manifest {
    let mut shards = Vec::new();
    let mut n = 0;
    for (k, &size) in sizes.iter().enumerate() {
        let mut w = ShardWriter::create(dir.join(format!("shard-{k:05}.rcl"))).unwrap();
        for _ in 0..size {
            w.push(&noise(50 + n, n as u64), n as u32 % 3, 10 + n as u32, 20).unwrap();
            n += 1;
        }
        shards.push(w.finish().unwrap());
    }
    let manifest = Manifest {
        format: DATASET_FORMAT.into(),
        format_version: DATASET_VERSION,
        num_records: shards.iter().map(|s| s.num_records).sum(),
        num_bytes: shards.iter().map(|s| s.num_bytes).sum(),
        class_names: vec!["a".into(), "b".into(), "c".into()],
        shards,
        converter: ConvertSettings::default(),
    };
    manifest.write(dir).unwrap();
    manifest
}

fn manifest_error(result: Result<Dataset, Error>) -> ManifestError {
    match result {
        Err(Error::Manifest { kind, .. }) => kind,
        other => panic!("expected a manifest error, got {other:?}"),
    }
}

#[test]
fn global_indices_span_the_shards_in_order() {
    let dir = TempDir::new("ds");
    build(dir.path(), &[3, 0, 4, 1]);
    let ds = Dataset::open(dir.path()).unwrap();
    assert_eq!(ds.len(), 8);
    assert_eq!(ds.num_classes(), 3);
    assert_eq!(ds.class_names(), ["a", "b", "c"]);
    assert_eq!(ds.shards().len(), 4);
    assert_eq!(ds.shard_range(0), 0..3);
    assert_eq!(ds.shard_range(1), 3..3);
    assert_eq!(ds.shard_range(2), 3..7);
    assert_eq!(ds.shard_range(3), 7..8);
    assert_eq!(ds.locate(3).unwrap(), (2, 0));
    assert_eq!(ds.locate(7).unwrap(), (3, 0));
    for i in 0..8 {
        let r = ds.verify_record(i).unwrap();
        assert_eq!(r.bytes, noise(50 + i, i as u64));
        assert_eq!((r.label, r.width), (i as u32 % 3, 10 + i as u32));
    }
    assert!(matches!(ds.record(8), Err(Error::OutOfRange { index: 8, len: 8, .. })));
    for k in 0..4 {
        ds.verify_shard(k).unwrap();
    }
}

#[test]
fn verify_shard_catches_a_payload_flip_that_open_does_not() {
    let dir = TempDir::new("ds-flip");
    build(dir.path(), &[2, 2]);
    let path = dir.path().join("shard-00001.rcl");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[70] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let ds = Dataset::open(dir.path()).unwrap();
    ds.verify_shard(0).unwrap();
    assert!(matches!(
        ds.verify_shard(1),
        Err(Error::Checksum { kind: ChecksumError::File { .. }, .. })
    ));
    assert!(ds.verify_record(2).is_err());
    assert!(ds.verify_record(3).is_ok());
}

#[test]
fn manifest_disagreements_are_errors() {
    let dir = TempDir::new("ds-bad");
    let good = build(dir.path(), &[2, 3]);
    let reopen = |m: &Manifest| {
        m.write(dir.path()).unwrap();
        Dataset::open(dir.path())
    };

    let mut m = good.clone();
    m.shards[1].num_records = 4;
    assert!(matches!(
        manifest_error(reopen(&m)),
        ManifestError::Mismatch { what: "record count", manifest: 4, actual: 3 }
    ));

    let mut m = good.clone();
    m.shards[0].num_bytes += 1;
    assert!(matches!(
        manifest_error(reopen(&m)),
        ManifestError::Mismatch { what: "file size", .. }
    ));

    let mut m = good.clone();
    m.num_records = 6;
    assert!(matches!(
        manifest_error(reopen(&m)),
        ManifestError::Mismatch { what: "total records", .. }
    ));

    let mut m = good.clone();
    m.class_names.pop();
    assert!(matches!(
        manifest_error(reopen(&m)),
        ManifestError::LabelOutOfRange { label: 2, num_classes: 2, .. }
    ));

    for name in ["../shard-00000.rcl", "/etc/passwd", ""] {
        let mut m = good.clone();
        m.shards[0].file = name.into();
        assert!(matches!(manifest_error(reopen(&m)), ManifestError::BadFileName { .. }), "{name}");
    }

    let mut m = good.clone();
    m.shards[1].file = "missing.rcl".into();
    assert!(matches!(reopen(&m), Err(Error::Io { .. })));

    reopen(&good).unwrap();
}

#[test]
fn bad_manifest_files() {
    let dir = TempDir::new("ds-json");
    build(dir.path(), &[1]);
    let path = dir.path().join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).unwrap();

    std::fs::write(&path, &text[..text.len() / 2]).unwrap();
    let err = Dataset::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Manifest { kind: ManifestError::Json { .. }, .. }), "{err:?}");
    assert!(err.to_string().starts_with(&path.display().to_string()));

    std::fs::write(&path, text.replace("\"format_version\": 1", "\"format_version\": 2")).unwrap();
    assert!(matches!(
        manifest_error(Dataset::open(dir.path())),
        ManifestError::UnsupportedVersion { found: 2, .. }
    ));

    std::fs::write(&path, text.replace(DATASET_FORMAT, "webdataset")).unwrap();
    assert!(matches!(
        manifest_error(Dataset::open(dir.path())),
        ManifestError::ForeignFormat { .. }
    ));

    std::fs::write(&path, noise(1000, 1)).unwrap();
    assert!(matches!(manifest_error(Dataset::open(dir.path())), ManifestError::Json { .. }));

    std::fs::remove_file(&path).unwrap();
    assert!(matches!(Dataset::open(dir.path()), Err(Error::Io { .. })));
}

#[test]
fn corrupt_shard_in_a_dataset_names_the_shard() {
    let dir = TempDir::new("ds-trunc");
    build(dir.path(), &[2, 2]);
    let path = dir.path().join("shard-00001.rcl");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let err = Dataset::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Format { .. }));
    assert!(err.to_string().starts_with(&path.display().to_string()), "{err}");
}
