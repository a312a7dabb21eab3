//! Opens arbitrary bytes as a shard file and as a dataset directory, and reads every record:
//! whatever the bytes, the result is `Ok` or `Err`, never a panic or an out-of-bounds read.
//!
//! The first byte picks a mode, so that inputs reach past the checksums:
//! 0: the bytes as a shard file;
//! 1: the same, with the index and header crc32c recomputed (reaches the entry checks);
//! 2: a valid shard built from the bytes with ShardWriter, then byte edits, then optionally resealed;
//! 3: a dataset directory: a manifest and a shard file, both cut from the bytes.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use regioncl_loader::{Dataset, MANIFEST_FILE, Shard, ShardWriter};

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("regioncl-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create fuzz dir");
        dir
    })
}

/// Reads everything a user of the shard would.
fn read_all(shard: &Shard) {
    assert!(shard.len() as u64 * 32 <= shard.file_len());
    for i in 0..shard.len() {
        let r = shard.record(i).expect("validated on open");
        assert!(r.bytes.len() as u64 <= shard.file_len());
        assert!(r.width > 0 && r.height > 0);
        let _ = shard.verify_record(i);
    }
    assert!(shard.record(shard.len()).is_err());
    let _ = shard.file_crc32c();
}

fn reseal(bytes: &mut [u8]) {
    if bytes.len() < 64 {
        return;
    }
    let index_offset = u64::from_le_bytes(bytes[24..32].try_into().unwrap_or_default());
    if let Some(index) = usize::try_from(index_offset).ok().and_then(|o| bytes.get(o..)) {
        let crc = crc32c::crc32c(index);
        bytes[36..40].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32c::crc32c(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// A valid shard whose records are cut from `data`: each record is a length byte and that many
/// bytes; label, width and height come from the length byte.
fn build(data: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let path = dir().join("built.rcl");
    let mut writer = ShardWriter::create(&path).expect("create");
    let mut records = Vec::new();
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let n = (n as usize).min(tail.len());
        let (bytes, tail) = tail.split_at(n);
        writer.push(bytes, n as u32, n as u32 + 1, 2 * n as u32 + 1).expect("push");
        records.push(bytes.to_vec());
        rest = tail;
        if records.len() >= 64 {
            break;
        }
    }
    writer.finish().expect("finish");
    (std::fs::read(&path).expect("read built"), records)
}

fn open_bytes(bytes: &[u8]) -> Option<Shard> {
    let path = dir().join("s.rcl");
    std::fs::write(&path, bytes).expect("write");
    Shard::open(&path).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else { return };
    match mode % 4 {
        0 => {
            if let Some(shard) = open_bytes(data) {
                read_all(&shard);
            }
        }
        1 => {
            let mut bytes = data.to_vec();
            reseal(&mut bytes);
            if let Some(shard) = open_bytes(&bytes) {
                read_all(&shard);
            }
        }
        2 => {
            // The last 3 * k bytes are k edits (u16 offset, xor) when the input says so.
            let edits = data.first().map_or(0, |b| (b % 8) as usize).min(data.len() / 3);
            let (body, tail) = data.split_at(data.len() - 3 * edits);
            let (mut bytes, records) = build(body.get(1..).unwrap_or_default());
            for e in tail.chunks_exact(3) {
                let at = u16::from_le_bytes([e[0], e[1]]) as usize;
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= e[2];
                }
            }
            if data.first().is_some_and(|b| b & 0x80 != 0) {
                reseal(&mut bytes);
            }
            match open_bytes(&bytes) {
                Some(shard) => {
                    read_all(&shard);
                    if edits == 0 {
                        assert_eq!(shard.len(), records.len());
                        for (i, r) in records.iter().enumerate() {
                            assert_eq!(shard.verify_record(i).expect("round trip").bytes, &r[..]);
                        }
                    }
                }
                None => assert!(edits > 0, "a shard fresh from ShardWriter must open"),
            }
        }
        _ => {
            // A u16 manifest length, the manifest, then the one shard it may list.
            let Some((len, rest)) = data.split_first_chunk::<2>() else { return };
            let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
            let (manifest, shard) = rest.split_at(len);
            std::fs::write(dir().join("shard-00000.rcl"), shard).expect("write shard");
            std::fs::write(dir().join(MANIFEST_FILE), manifest).expect("write manifest");
            if let Ok(ds) = Dataset::open(dir()) {
                for i in 0..ds.len() {
                    let r = ds.record(i).expect("validated on open");
                    assert!((r.label as usize) < ds.num_classes());
                    let _ = ds.verify_record(i);
                }
                for k in 0..ds.shards().len() {
                    let _ = ds.verify_shard(k);
                }
                assert!(ds.record(ds.len()).is_err());
            }
        }
    }
});
