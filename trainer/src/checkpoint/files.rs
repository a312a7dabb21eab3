//! The files of a checkpoint, verified before they are trusted. `checksums.json`, written last,
//! records the size and crc32c of every other file of the checkpoint; reading one checks its size
//! against the record before reading anything and its crc32c before using a byte. A safetensors
//! file's header is then checked (offsets, sizes, dtypes) and compared with the tensors the model
//! expects before any tensor is allocated, so a damaged or hostile file costs no more memory than
//! the model itself. A float tensor holding NaN or infinity is damage too.
//!
//! ```text
//! checksums.json   {"format": "regioncl-checkpoint-checksums", "version": 1,
//!                   "files": {"model.safetensors": {"bytes": 1234, "crc32c": 305419896}, ...}}
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// The file that records the others' sizes and checksums.
pub(crate) const CHECKSUMS: &str = "checksums.json";
const FORMAT: &str = "regioncl-checkpoint-checksums";
const VERSION: u32 = 1;
/// Largest JSON file of a checkpoint (`state.json`, `checksums.json`) read.
const MAX_JSON_BYTES: u64 = 16 << 20;
/// Largest safetensors header read.
const MAX_HEADER_BYTES: u64 = 16 << 20;
/// Read buffer of the checksum pass.
const CHUNK: usize = 1 << 20;

/// The expected tensors of a file, in the model's order: (name, shape, kind).
pub(crate) type Expected = Vec<(String, Vec<i64>, Kind)>;

/// The expected tensors of `tensors` (shapes and kinds as they are), in their order.
pub(crate) fn expected_of<'a>(tensors: impl IntoIterator<Item = (String, &'a Tensor)>) -> Expected {
    tensors.into_iter().map(|(n, t)| (n, t.size(), t.kind())).collect()
}

/// Size and crc32c of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FileSum {
    bytes: u64,
    crc32c: u32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Checksums {
    format: String,
    version: u32,
    files: BTreeMap<String, FileSum>,
}

fn damaged(path: &Path, message: impl Into<String>) -> Error {
    Error::Damaged { path: path.to_path_buf(), message: message.into() }
}

/// Opens a file of a checkpoint: a missing one is damage, other failures are I/O errors.
fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => damaged(path, "missing"),
        _ => Error::io(path, "open", e),
    })
}

/// The crc32c of the next `len` bytes of `file`, read in chunks.
fn crc_of(file: &mut File, path: &Path, len: u64) -> Result<u32> {
    let mut buf = vec![0u8; CHUNK];
    let (mut crc, mut left) = (0u32, len);
    while left > 0 {
        let n = (left as usize).min(CHUNK);
        file.read_exact(&mut buf[..n]).map_err(|e| Error::io(path, "read", e))?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        left -= n as u64;
    }
    Ok(crc)
}

/// Records the size and crc32c of `names` (files of `dir`, read back from disk) in
/// `dir/checksums.json`, and fsyncs it.
pub(crate) fn write_checksums(dir: &Path, names: &[&str]) -> Result<()> {
    let mut files = BTreeMap::new();
    for name in names {
        let path = dir.join(name);
        let mut file = File::open(&path).map_err(|e| Error::io(&path, "open", e))?;
        let bytes = file.metadata().map_err(|e| Error::io(&path, "stat", e))?.len();
        files.insert(name.to_string(), FileSum { bytes, crc32c: crc_of(&mut file, &path, bytes)? });
    }
    let sums = Checksums { format: FORMAT.into(), version: VERSION, files };
    let path = dir.join(CHECKSUMS);
    let json = serde_json::to_vec_pretty(&sums)
        .map_err(|e| Error::Json { path: path.clone(), source: e })?;
    std::fs::write(&path, json).map_err(|e| Error::io(&path, "write", e))?;
    File::open(&path).and_then(|f| f.sync_all()).map_err(|e| Error::io(&path, "fsync", e))
}

/// A checkpoint directory with its recorded checksums.
#[derive(Debug)]
pub(crate) struct Verified {
    dir: PathBuf,
    sums: BTreeMap<String, FileSum>,
}

impl Verified {
    /// Reads `dir/checksums.json`.
    ///
    /// # Errors
    /// [`Error::Damaged`] when it is missing, too large or malformed.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(CHECKSUMS);
        let mut file = open(&path)?;
        let len = file.metadata().map_err(|e| Error::io(&path, "stat", e))?.len();
        if len > MAX_JSON_BYTES {
            return Err(damaged(
                &path,
                format!("{len} bytes, over the {MAX_JSON_BYTES}-byte limit"),
            ));
        }
        let mut text = Vec::with_capacity(len as usize);
        file.read_to_end(&mut text).map_err(|e| Error::io(&path, "read", e))?;
        let sums: Checksums = serde_json::from_slice(&text)
            .map_err(|e| damaged(&path, format!("not a checksum record: {e}")))?;
        if sums.format != FORMAT || sums.version != VERSION {
            return Err(damaged(
                &path,
                format!(
                    "format {:?} version {}, expected {FORMAT:?} {VERSION}",
                    sums.format, sums.version
                ),
            ));
        }
        Ok(Self { dir: dir.to_path_buf(), sums: sums.files })
    }

    /// Opens the file `name`, checks its size and crc32c against the record, and returns it
    /// rewound with its length.
    fn checked(&self, name: &str) -> Result<(File, PathBuf, u64)> {
        let path = self.dir.join(name);
        let Some(sum) = self.sums.get(name) else {
            return Err(damaged(&path, format!("not recorded in {CHECKSUMS}")));
        };
        let mut file = open(&path)?;
        let len = file.metadata().map_err(|e| Error::io(&path, "stat", e))?.len();
        if len != sum.bytes {
            return Err(damaged(&path, format!("{len} bytes, {} when it was saved", sum.bytes)));
        }
        let crc = crc_of(&mut file, &path, len)?;
        if crc != sum.crc32c {
            return Err(damaged(
                &path,
                format!("crc32c {crc:08x}, {:08x} when it was saved", sum.crc32c),
            ));
        }
        file.rewind().map_err(|e| Error::io(&path, "seek", e))?;
        Ok((file, path, len))
    }

    /// The verified bytes of a JSON file of the checkpoint.
    ///
    /// # Errors
    /// [`Error::Damaged`] for a missing, oversized or changed file.
    pub(crate) fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T> {
        let (mut file, path, len) = self.checked(name)?;
        if len > MAX_JSON_BYTES {
            return Err(damaged(
                &path,
                format!("{len} bytes, over the {MAX_JSON_BYTES}-byte limit"),
            ));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        file.read_to_end(&mut bytes).map_err(|e| Error::io(&path, "read", e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Json { path, source: e })
    }

    /// The tensors `want` of the safetensors file `name`, verified: the file's size and
    /// crc32c, its header, every expected tensor present with its shape and kind and no other
    /// tensor whose name starts with `exact_under` ("" = none but the expected ones), every float
    /// value finite. Other tensors are checksummed but neither allocated nor returned.
    ///
    /// # Errors
    /// [`Error::Damaged`] for a file that is missing, changed since it was saved, malformed or
    /// holds a non-finite value; [`Error::Checkpoint`] when an expected tensor is missing, has
    /// another shape or kind, or an unexpected one is under `exact_under` (the checkpoint is
    /// intact but of another model).
    pub(crate) fn read_tensors(
        &self,
        name: &str,
        want: &Expected,
        exact_under: &str,
    ) -> Result<HashMap<String, Tensor>> {
        let (mut file, path, len) = self.checked(name)?;
        let entries = header(&mut file, &path, len)?;
        let misfit = |message: String| Error::Checkpoint { path: path.clone(), message };
        let stored: HashMap<&str, &Entry> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
        for (key, shape, kind) in want {
            let Some(e) = stored.get(key.as_str()) else {
                return Err(misfit(format!("tensor `{key}` missing")));
            };
            if &e.shape != shape || e.kind != *kind {
                return Err(misfit(format!(
                    "tensor `{key}`: {:?} {:?} in the file, {kind:?} {shape:?} in the model",
                    e.kind, e.shape
                )));
            }
        }
        let wanted: HashSet<&str> = want.iter().map(|(n, _, _)| n.as_str()).collect();
        let mut extra: Vec<&str> = stored
            .keys()
            .copied()
            .filter(|k| k.starts_with(exact_under) && !wanted.contains(k))
            .collect();
        extra.sort_unstable();
        if let Some(k) = extra.first() {
            return Err(misfit(format!(
                "tensor `{k}` is not part of the model ({} extra)",
                extra.len()
            )));
        }
        let mut out = HashMap::with_capacity(want.len());
        for e in entries.iter().filter(|e| wanted.contains(e.name.as_str())) {
            file.seek(SeekFrom::Start(e.start)).map_err(|err| Error::io(&path, "seek", err))?;
            let mut bytes = vec![0u8; e.bytes as usize];
            file.read_exact(&mut bytes).map_err(|err| Error::io(&path, "read", err))?;
            let t = Tensor::f_from_data_size(&bytes, &e.shape, e.kind)?;
            if t.is_floating_point() {
                let bad = t.isfinite().logical_not().sum(Kind::Int64).int64_value(&[]);
                if bad > 0 {
                    return Err(damaged(
                        &path,
                        format!("tensor `{}` holds {bad} non-finite values", e.name),
                    ));
                }
            }
            out.insert(e.name.clone(), t);
        }
        Ok(out)
    }
}

/// One tensor of a safetensors header, checked.
#[derive(Debug)]
struct Entry {
    name: String,
    shape: Vec<i64>,
    kind: Kind,
    /// Offset of its data in the file.
    start: u64,
    bytes: u64,
}

#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

fn kind_of(dtype: &str) -> Option<(Kind, u64)> {
    Some(match dtype {
        "F64" => (Kind::Double, 8),
        "F32" => (Kind::Float, 4),
        "F16" => (Kind::Half, 2),
        "BF16" => (Kind::BFloat16, 2),
        "I64" => (Kind::Int64, 8),
        "I32" => (Kind::Int, 4),
        "I16" => (Kind::Int16, 2),
        "I8" => (Kind::Int8, 1),
        "U8" => (Kind::Uint8, 1),
        "BOOL" => (Kind::Bool, 1),
        _ => return None,
    })
}

/// Reads and checks the header of a safetensors file of `len` bytes (the layout of
/// <https://github.com/huggingface/safetensors>: a little-endian u64 `n`, `n` bytes of JSON,
/// then the tensors' data, back to back): every tensor's size matches its shape and dtype, and the
/// tensors tile the data exactly. Returns them in file order.
fn header(file: &mut File, path: &Path, len: u64) -> Result<Vec<Entry>> {
    let mut n = [0u8; 8];
    file.read_exact(&mut n).map_err(|_| damaged(path, format!("{len} bytes, no header")))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER_BYTES || n > len - 8 {
        return Err(damaged(path, format!("header of {n} bytes in a file of {len}")));
    }
    let mut text = vec![0u8; n as usize];
    file.read_exact(&mut text).map_err(|e| Error::io(path, "read", e))?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&text).map_err(|e| damaged(path, format!("header: {e}")))?;
    let data_start = 8 + n;
    let mut entries = Vec::with_capacity(map.len());
    for (name, value) in map {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: String| damaged(path, format!("tensor `{name}`: {what}"));
        let raw: RawEntry = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        let (kind, size) =
            kind_of(&raw.dtype).ok_or_else(|| bad(format!("dtype {}", raw.dtype)))?;
        let numel = raw.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let bytes = numel.and_then(|n| n.checked_mul(size));
        let [a, b] = raw.data_offsets;
        if bytes.is_none()
            || bytes != b.checked_sub(a)
            || raw.shape.iter().any(|&d| d > i64::MAX as u64)
        {
            return Err(bad(format!(
                "shape {:?} of {} does not fill bytes {a}..{b}",
                raw.shape, raw.dtype
            )));
        }
        let shape = raw.shape.iter().map(|&d| d as i64).collect();
        entries.push(Entry { name, shape, kind, start: data_start + a, bytes: b - a });
    }
    entries.sort_by_key(|e| (e.start, e.bytes));
    let mut at = data_start;
    for e in &entries {
        if e.start != at {
            return Err(damaged(
                path,
                format!("tensor `{}` starts at byte {}, not {at}", e.name, e.start),
            ));
        }
        at += e.bytes;
    }
    if at != len {
        return Err(damaged(path, format!("tensors end at byte {at} of {len}")));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("regioncl-ckfiles-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(dir: &Path, tensors: &[(&str, Tensor)]) -> Expected {
        Tensor::write_safetensors(tensors, dir.join("t.safetensors")).unwrap();
        write_checksums(dir, &["t.safetensors"]).unwrap();
        expected_of(tensors.iter().map(|(n, t)| (n.to_string(), t)))
    }

    fn flip(path: &Path, at: u64) {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[at as usize] ^= 0x01;
        std::fs::write(path, bytes).unwrap();
    }

    /// A 1-bit flip anywhere (header or data) is caught by the checksum; a truncation by the
    /// size; the intact file reads back exactly.
    #[test]
    fn checkpoint_bit_flip_and_truncation_are_damage() {
        let dir = temp("flip");
        let w = Tensor::arange(12, (Kind::Float, tch::Device::Cpu)).view([3, 4]);
        let p = Tensor::from_slice(&[7i64]);
        let want = write(&dir, &[("w", w.copy()), ("ptr", p.copy())]);
        let v = Verified::open(&dir).unwrap();
        let got = v.read_tensors("t.safetensors", &want, "").unwrap();
        assert!(got["w"].equal(&w) && got["ptr"].equal(&p));
        let file = dir.join("t.safetensors");
        let len = std::fs::metadata(&file).unwrap().len();
        for at in [3, 20, len - 5] {
            flip(&file, at);
            let err = v.read_tensors("t.safetensors", &want, "").unwrap_err();
            assert!(matches!(err, Error::Damaged { .. }), "byte {at}: {err}");
            assert!(err.to_string().contains("crc32c"), "{err}");
            flip(&file, at);
        }
        std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len - 1).unwrap();
        let err = v.read_tensors("t.safetensors", &want, "").unwrap_err();
        assert!(
            err.to_string().contains(&format!("{} bytes, {len} when it was saved", len - 1)),
            "{err}"
        );
        std::fs::remove_file(&file).unwrap();
        assert!(
            v.read_tensors("t.safetensors", &want, "").unwrap_err().to_string().contains("missing")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A sparse 3 GiB file in place of a checkpoint file is refused from its size alone, before a
    /// byte is read.
    #[test]
    fn sparse_3gib_checkpoint_file_is_refused_before_reading() {
        let dir = temp("sparse");
        let want = write(&dir, &[("w", Tensor::ones([4], (Kind::Float, tch::Device::Cpu)))]);
        let file = dir.join("t.safetensors");
        std::fs::File::create(&file).unwrap().set_len(3 << 30).unwrap();
        let err =
            Verified::open(&dir).unwrap().read_tensors("t.safetensors", &want, "").unwrap_err();
        assert!(err.to_string().contains("3221225472 bytes"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A header that declares more bytes than the file has, or tensors that do not tile the data,
    /// is damage even when the checksum record was rewritten to match.
    #[test]
    fn checkpoint_header_must_tile_the_file() {
        let dir = temp("header");
        let file = dir.join("t.safetensors");
        let header = br#"{"w":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4000000000]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0u8; 16]);
        std::fs::write(&file, &bytes).unwrap();
        write_checksums(&dir, &["t.safetensors"]).unwrap();
        let want: Expected = vec![("w".to_string(), vec![1_000_000_000], Kind::Float)];
        let err =
            Verified::open(&dir).unwrap().read_tensors("t.safetensors", &want, "").unwrap_err();
        assert!(matches!(err, Error::Damaged { .. }), "{err}");
        assert!(err.to_string().contains("tensors end at byte"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// NaN in a weight is damage, naming the tensor; a tensor of another shape, a missing one or
    /// an extra one under the prefix is a misfit.
    #[test]
    fn non_finite_weight_and_shape_mismatch() {
        let dir = temp("nan");
        let w = Tensor::from_slice(&[1.0f32, f32::NAN, f32::INFINITY]);
        let want = write(&dir, &[("w", w)]);
        let v = Verified::open(&dir).unwrap();
        let err = v.read_tensors("t.safetensors", &want, "").unwrap_err();
        assert!(err.to_string().contains("tensor `w` holds 2 non-finite values"), "{err}");
        let other: Expected = vec![("w".to_string(), vec![4], Kind::Float)];
        let err = v.read_tensors("t.safetensors", &other, "").unwrap_err();
        assert!(matches!(err, Error::Checkpoint { .. }), "{err}");
        assert!(err.to_string().contains("Float [3] in the file, Float [4] in the model"), "{err}");
        let err = v.read_tensors("t.safetensors", &vec![], "").unwrap_err();
        assert!(err.to_string().contains("tensor `w` is not part of the model (1 extra)"), "{err}");
        assert!(v.read_tensors("t.safetensors", &vec![], "encoder.").unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
