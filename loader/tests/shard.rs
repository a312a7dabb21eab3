//! Shard files: round trips and every kind of corruption.

use std::path::Path;

use proptest::prelude::*;
use regioncl_loader::shard::format::{ENTRY_LEN, HEADER_LEN, VERSION};
use regioncl_loader::{ChecksumError, Error, FormatError, Shard, ShardWriter};

use crate::common::{TempDir, noise};

/// (bytes, label, width, height) of each record.
type Rec = (Vec<u8>, u32, u32, u32);

fn records(n: usize) -> Vec<Rec> {
    (0..n)
        .map(|i| (noise(10 + i * 7, i as u64), i as u32 % 3, 100 + i as u32, 50 + i as u32))
        .collect()
}

fn write(path: &Path, recs: &[Rec]) -> regioncl_loader::ShardInfo {
    let mut w = ShardWriter::create(path).expect("create");
    for (bytes, label, width, height) in recs {
        w.push(bytes, *label, *width, *height).expect("push");
    }
    w.finish().expect("finish")
}

/// A written shard's bytes.
fn shard_bytes(recs: &[Rec]) -> Vec<u8> {
    let dir = TempDir::new("shard-bytes");
    let path = dir.path().join("s.rcl");
    write(&path, recs);
    std::fs::read(&path).expect("read")
}

/// Opens `bytes` as a shard file.
fn open_bytes(bytes: &[u8]) -> (TempDir, Result<Shard, Error>) {
    let dir = TempDir::new("open-bytes");
    let path = dir.path().join("s.rcl");
    std::fs::write(&path, bytes).expect("write");
    let shard = Shard::open(&path);
    (dir, shard)
}

fn format_error(result: Result<Shard, Error>) -> FormatError {
    match result {
        Err(Error::Format { kind, .. }) => kind,
        other => panic!("expected a format error, got {other:?}"),
    }
}

/// Recomputes the index and header checksums after an edit, so the deeper checks are reached.
fn reseal(bytes: &mut [u8]) {
    let index_offset = u64::from_le_bytes(bytes[24..32].try_into().unwrap()) as usize;
    let crc = crc32c::crc32c(&bytes[index_offset..]);
    bytes[36..40].copy_from_slice(&crc.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn round_trip_and_file_checksum() {
    let dir = TempDir::new("round-trip");
    let path = dir.path().join("s.rcl");
    let recs = records(20);
    let info = write(&path, &recs);
    let shard = Shard::open(&path).expect("open");
    assert_eq!(shard.len(), 20);
    assert_eq!(info.num_records, 20);
    assert_eq!(info.num_bytes, std::fs::metadata(&path).unwrap().len());
    assert_eq!(info.crc32c, crc32c::crc32c(&std::fs::read(&path).unwrap()));
    assert_eq!(shard.file_crc32c(), info.crc32c);
    for (i, (bytes, label, width, height)) in recs.iter().enumerate() {
        let r = shard.verify_record(i).expect("record");
        assert_eq!((r.bytes, r.label, r.width, r.height), (&bytes[..], *label, *width, *height));
        assert_eq!(r.crc, crc32c::crc32c(bytes));
    }
    assert!(matches!(shard.record(20), Err(Error::OutOfRange { index: 20, len: 20, .. })));
}

#[test]
fn empty_shard_opens() {
    let bytes = shard_bytes(&[]);
    assert_eq!(bytes.len() as u64, HEADER_LEN);
    let (_dir, shard) = open_bytes(&bytes);
    assert!(shard.expect("open").is_empty());
}

#[test]
fn unfinished_writer_leaves_nothing() {
    let dir = TempDir::new("unfinished");
    let path = dir.path().join("s.rcl");
    let mut w = ShardWriter::create(&path).expect("create");
    w.push(b"abc", 0, 1, 1).expect("push");
    drop(w);
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn writer_refuses_zero_sizes() {
    let dir = TempDir::new("zero");
    let mut w = ShardWriter::create(dir.path().join("s.rcl")).expect("create");
    assert!(matches!(w.push(b"abc", 0, 0, 1), Err(Error::Config(_))));
}

#[test]
fn truncated_at_every_offset_is_an_error() {
    let bytes = shard_bytes(&records(5));
    let dir = TempDir::new("truncated");
    let path = dir.path().join("s.rcl");
    for len in 0..bytes.len() {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let kind = format_error(Shard::open(&path));
        match len as u64 {
            0..HEADER_LEN => {
                assert!(matches!(kind, FormatError::TruncatedHeader { .. }), "{len}: {kind:?}")
            }
            _ => assert!(
                matches!(kind, FormatError::SizeMismatch { actual, .. } if actual == len as u64),
                "{len}: {kind:?}"
            ),
        }
    }
    // Bytes appended are caught too.
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(format_error(open_bytes(&longer).1), FormatError::SizeMismatch { .. }));
}

#[test]
fn truncation_message_names_file_and_sizes() {
    let bytes = shard_bytes(&records(3));
    let (dir, result) = open_bytes(&bytes[..bytes.len() - 5]);
    let message = result.expect_err("truncated").to_string();
    let path = dir.path().join("s.rcl");
    assert!(message.starts_with(&format!("{}: ", path.display())), "{message}");
    assert!(message.contains(&format!("file is {} bytes", bytes.len() - 5)), "{message}");
}

#[test]
fn every_header_bit_flip_is_caught() {
    let bytes = shard_bytes(&records(4));
    for bit in 0..HEADER_LEN as usize * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let kind = format_error(open_bytes(&b).1);
        let expected = match bit / 8 {
            0..8 => matches!(kind, FormatError::BadMagic { .. }),
            8..12 => matches!(kind, FormatError::UnsupportedVersion { .. }),
            _ => matches!(kind, FormatError::HeaderChecksum { offset: 60, .. }),
        };
        assert!(expected, "bit {bit}: {kind:?}");
    }
}

#[test]
fn every_index_bit_flip_is_caught() {
    let recs = records(4);
    let bytes = shard_bytes(&recs);
    let index = bytes.len() - recs.len() * ENTRY_LEN as usize;
    for bit in index * 8..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        let kind = format_error(open_bytes(&b).1);
        assert!(
            matches!(kind, FormatError::IndexChecksum { offset, .. } if offset == index as u64),
            "bit {bit}: {kind:?}"
        );
    }
}

#[test]
fn payload_bit_flip_is_caught_by_verify_naming_record_and_offset() {
    let recs = records(4);
    let bytes = shard_bytes(&recs);
    // Byte 3 of record 2.
    let offset = HEADER_LEN as usize + recs[0].0.len() + recs[1].0.len();
    let mut b = bytes.clone();
    b[offset + 3] ^= 0x10;
    let (_dir, shard) = open_bytes(&b);
    let shard = shard.expect("a payload flip does not stop open");
    assert!(shard.verify_record(1).is_ok());
    match shard.verify_record(2) {
        Err(Error::Checksum { kind: ChecksumError::Record { index, offset: o, .. }, .. }) => {
            assert_eq!((index, o), (2, offset as u64));
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    let message = shard.verify_record(2).unwrap_err().to_string();
    assert!(
        message.contains(&format!(
            "record 2: crc32c of the {} bytes at offset {offset}",
            recs[2].0.len()
        )),
        "{message}"
    );
}

#[test]
fn foreign_files_are_not_shards() {
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0";
    for bytes in [&png[..], b"hello world, this is text", &noise(4096, 3)[..], b"\xff\xd8\xff\xe0"]
    {
        assert!(matches!(format_error(open_bytes(bytes).1), FormatError::BadMagic { .. }));
    }
    let (dir, result) =
        open_bytes(b"GIF89a........................................................");
    let message = result.unwrap_err().to_string();
    assert!(message.starts_with(&dir.path().join("s.rcl").display().to_string()));
    assert!(message.contains("not a regioncl shard"), "{message}");
}

#[test]
fn missing_file_is_io() {
    let dir = TempDir::new("missing");
    assert!(matches!(Shard::open(dir.path().join("nope.rcl")), Err(Error::Io { .. })));
}

/// Issue 12 #9: a manifest naming a FIFO hung every reader of the dataset in `open`.
#[cfg(unix)]
#[test]
fn a_fifo_or_a_device_is_refused_without_blocking() {
    let dir = TempDir::new("fifo");
    let fifo = dir.path().join("s.rcl");
    mkfifo(&fifo);
    for (path, kind) in [(fifo.as_path(), "a FIFO"), (Path::new("/dev/zero"), "a character device")]
    {
        let err = Shard::open(path).unwrap_err();
        let Error::Io { source, .. } = &err else { panic!("{err:?}") };
        assert_eq!(source.to_string(), format!("{kind}, not a file"));
        assert_eq!(err.to_string(), format!("{}: open shard", path.display()));
    }
}

/// Makes a FIFO at `path` with mkfifo(1).
#[cfg(unix)]
pub fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

#[test]
fn other_version_is_refused_by_number() {
    let mut b = shard_bytes(&records(2));
    b[8..12].copy_from_slice(&2u32.to_le_bytes());
    reseal(&mut b);
    let kind = format_error(open_bytes(&b).1);
    assert_eq!(kind, FormatError::UnsupportedVersion { found: 2, supported: VERSION });
    assert!(kind.to_string().contains("version 2"), "{kind}");
}

/// Edits field `at..at + 4` (or 8) of index entry `i` and reseals.
fn edit_entry(bytes: &[u8], n: usize, i: usize, at: usize, value: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let entry = b.len() - (n - i) * ENTRY_LEN as usize;
    b[entry + at..entry + at + value.len()].copy_from_slice(value);
    reseal(&mut b);
    b
}

#[test]
fn resealed_bad_entries_are_caught_with_record_and_offset() {
    let recs = records(3);
    let bytes = shard_bytes(&recs);
    let n = recs.len();
    let data_end = (bytes.len() - n * ENTRY_LEN as usize) as u64;

    // Record 2's length reaches into the index.
    let b = edit_entry(&bytes, n, 2, 8, &1000u32.to_le_bytes());
    let (dir, result) = open_bytes(&b);
    let err = result.unwrap_err();
    let Error::Format { kind: FormatError::RecordOutOfBounds { index, len, end, .. }, .. } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!((*index, *len, *end), (2, 1000, data_end));
    let message = err.to_string();
    let expected =
        format!("{}: record 2: length 1000 at offset", dir.path().join("s.rcl").display());
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.ends_with(&format!("exceeds shard end {data_end}")), "{message}");

    // An offset near u64::MAX must not overflow.
    let b = edit_entry(&bytes, n, 2, 0, &(u64::MAX - 3).to_le_bytes());
    assert!(matches!(
        format_error(open_bytes(&b).1),
        FormatError::RecordOutOfBounds { index: 2, .. }
    ));

    // Record 1 starting inside record 0.
    let b = edit_entry(&bytes, n, 1, 0, &(HEADER_LEN + 2).to_le_bytes());
    assert!(matches!(format_error(open_bytes(&b).1), FormatError::RecordOverlap { index: 1, .. }));

    // Record 0 starting inside the header.
    let b = edit_entry(&bytes, n, 0, 0, &8u64.to_le_bytes());
    assert!(matches!(
        format_error(open_bytes(&b).1),
        FormatError::RecordOverlap { index: 0, min: 64, .. }
    ));

    // Zero width, zero height, reserved bits.
    for (at, field) in [(16, "width"), (20, "height")] {
        let b = edit_entry(&bytes, n, 1, at, &0u32.to_le_bytes());
        let kind = format_error(open_bytes(&b).1);
        assert!(
            matches!(kind, FormatError::RecordField { index: 1, field: f, .. } if f == field),
            "{kind:?}"
        );
    }
    let b = edit_entry(&bytes, n, 0, 28, &1u32.to_le_bytes());
    assert!(matches!(
        format_error(open_bytes(&b).1),
        FormatError::RecordField { field: "reserved", .. }
    ));
}

#[test]
fn resealed_bad_header_fields_are_caught() {
    let bytes = shard_bytes(&records(3));
    let cases: [(usize, Vec<u8>); 5] = [
        (12, 65u32.to_le_bytes().to_vec()),          // header_len
        (32, 16u32.to_le_bytes().to_vec()),          // entry_len
        (44, vec![1]),                               // reserved
        (24, 10u64.to_le_bytes().to_vec()),          // index offset inside the header
        (16, (u64::MAX / 2).to_le_bytes().to_vec()), // num_records overflowing
    ];
    for (at, value) in cases {
        let mut b = bytes.clone();
        b[at..at + value.len()].copy_from_slice(&value);
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        let kind = format_error(open_bytes(&b).1);
        assert!(
            matches!(kind, FormatError::HeaderField { .. } | FormatError::SizeMismatch { .. }),
            "field at {at}: {kind:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn prop_round_trip(recs in prop::collection::vec(
        (prop::collection::vec(any::<u8>(), 0..300), any::<u32>(), 1..70000u32, 1..70000u32),
        0..20,
    )) {
        let dir = TempDir::new("prop");
        let path = dir.path().join("s.rcl");
        let info = write(&path, &recs);
        let shard = Shard::open(&path).expect("open");
        prop_assert_eq!(shard.len(), recs.len());
        prop_assert_eq!(shard.file_crc32c(), info.crc32c);
        for (i, (bytes, label, width, height)) in recs.iter().enumerate() {
            let r = shard.verify_record(i).expect("record");
            prop_assert_eq!(r.bytes, &bytes[..]);
            prop_assert_eq!((r.label, r.width, r.height), (*label, *width, *height));
        }
    }

    #[test]
    fn prop_any_single_byte_change_is_caught(at in any::<prop::sample::Index>(), xor in 1..=255u8) {
        let recs = records(5);
        let mut bytes = shard_bytes(&recs);
        let at = at.index(bytes.len());
        bytes[at] ^= xor;
        let (_dir, result) = open_bytes(&bytes);
        // Either open fails, or the record holding the byte fails its checksum.
        if let Ok(shard) = result {
            let failed = (0..shard.len()).filter(|&i| shard.verify_record(i).is_err()).count();
            prop_assert_eq!(failed, 1);
        }
    }
}
