//! torch's own file format, as `torch.save(state_dict, f)` writes it and
//! `torch.load(f, weights_only=True)` reads it: a zip archive ([`super::zip`]) of
//!
//! ```text
//! archive/data.pkl             the pickled dict {name: tensor} (protocol 2)
//! archive/.format_version      "1"
//! archive/.storage_alignment   "64"
//! archive/byteorder            "little" (the host's)
//! archive/data/<i>             the raw bytes of tensor i, contiguous, 64-byte aligned
//! archive/version              "3\n"
//! ```
//!
//! In `data.pkl` each tensor is `torch._utils._rebuild_tensor_v2(storage, 0, shape, stride, False,
//! OrderedDict())`, its storage a persistent id `("storage", torch.<Kind>Storage, "<i>", "cpu",
//! numel)` that the loader resolves to `archive/data/<i>`. Only globals on the weights-only
//! unpickler's allow-list appear.

use std::io::{self, Write};
use std::path::Path;

use tch::{Kind, Tensor};

use super::pickle::Pickler;
use super::zip::ZipWriter;
use super::{host_bytes, unsupported};
use crate::error::{Error, Result};

/// The record directory inside the archive (torch takes whatever the first record names).
const ARCHIVE: &str = "archive";

/// torch's legacy storage class of `kind` (what `_rebuild_tensor_v2` is handed).
fn storage_class(kind: Kind) -> Option<&'static str> {
    Some(match kind {
        Kind::Float => "FloatStorage",
        Kind::Double => "DoubleStorage",
        Kind::Half => "HalfStorage",
        Kind::BFloat16 => "BFloat16Storage",
        Kind::Int64 => "LongStorage",
        Kind::Int => "IntStorage",
        Kind::Int16 => "ShortStorage",
        Kind::Int8 => "CharStorage",
        Kind::Uint8 => "ByteStorage",
        Kind::Bool => "BoolStorage",
        _ => return None,
    })
}

/// Row-major strides of `shape`.
fn contiguous_strides(shape: &[i64]) -> Vec<i64> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1].max(1);
    }
    strides
}

/// The pickle of the state dict: names, storage references and geometry; no tensor data.
fn data_pkl(tensors: &[(String, Tensor)], classes: &[&str]) -> io::Result<Vec<u8>> {
    let mut p = Pickler::new(Vec::new(), 2)?;
    p.empty_dict()?.mark()?;
    for (i, ((name, t), class)) in tensors.iter().zip(classes).enumerate() {
        let shape = t.size();
        p.str(name)?;
        p.global("torch._utils", "_rebuild_tensor_v2")?;
        p.mark()?;
        p.mark()?.str("storage")?.global("torch", class)?.str(&i.to_string())?.str("cpu")?;
        p.int(shape.iter().product())?.tuple()?.persistent_id()?;
        p.int(0)?.int_tuple(&shape)?.int_tuple(&contiguous_strides(&shape))?.bool(false)?;
        p.global("collections", "OrderedDict")?.int_tuple(&[])?.reduce()?;
        p.tuple()?.reduce()?;
    }
    p.set_items()?;
    p.finish()
}

/// Writes `tensors` (in this order, under these names) as a torch `.pth` file to `out`; `path`
/// names it in errors.
///
/// # Errors
/// A tensor kind torch has no storage class for ([`crate::Error::Unsupported`]); write failures
/// ([`crate::Error::Io`]), an archive beyond 4 GiB included.
pub(super) fn write<W: Write>(out: W, path: &Path, tensors: &[(String, Tensor)]) -> Result<W> {
    let classes = tensors
        .iter()
        .map(|(name, t)| {
            storage_class(t.kind()).ok_or_else(|| unsupported(name, t.kind(), "a torch storage"))
        })
        .collect::<Result<Vec<_>>>()?;
    let io = |e| Error::io(path, "write", e);
    let mut zip = ZipWriter::new(out);
    let record = |r: &str| format!("{ARCHIVE}/{r}");
    zip.add(&record("data.pkl"), &data_pkl(tensors, &classes).map_err(io)?).map_err(io)?;
    zip.add(&record(".format_version"), b"1").map_err(io)?;
    zip.add(&record(".storage_alignment"), b"64").map_err(io)?;
    let order: &[u8] = if cfg!(target_endian = "little") { b"little" } else { b"big" };
    zip.add(&record("byteorder"), order).map_err(io)?;
    for (i, (_, t)) in tensors.iter().enumerate() {
        zip.add(&record(&format!("data/{i}")), &host_bytes(t)?).map_err(io)?;
    }
    zip.add(&record("version"), b"3\n").map_err(io)?;
    zip.finish().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_are_row_major() {
        assert_eq!(contiguous_strides(&[64, 3, 7, 7]), [147, 49, 7, 1]);
        assert_eq!(contiguous_strides(&[5]), [1]);
        assert!(contiguous_strides(&[]).is_empty());
    }
}
