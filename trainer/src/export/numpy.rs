//! detectron2's weight file: a pickle (protocol 3) of
//! `{"model": {name: numpy.ndarray}, "__author__": author, "matching_heuristics": True}`, the
//! container MoCo's and DenseCL's `convert-pretrain-to-detectron2.py` write with `pickle.dump`.
//!
//! Each array is pickled as numpy itself does (`ndarray.__reduce__`):
//! `numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b"b")` followed by `__setstate__((1,
//! shape, dtype, False, raw_bytes))`, the dtype `numpy.dtype(code, False, True)` with its state
//! `(3, byteorder, None, None, None, -1, -1, 0)`. `numpy.core.multiarray` is the module path that
//! numpy 1.x and 2.x both resolve.

use std::io::{self, Write};
use std::path::Path;

use tch::{Kind, Tensor};

use super::pickle::Pickler;
use super::{host_bytes, unsupported};
use crate::error::{Error, Result};

/// numpy's dtype code and byte-order character for `kind` (`|` where order does not apply).
fn dtype(kind: Kind) -> Option<(&'static str, &'static str)> {
    let native = if cfg!(target_endian = "little") { "<" } else { ">" };
    Some(match kind {
        Kind::Float => ("f4", native),
        Kind::Double => ("f8", native),
        Kind::Half => ("f2", native),
        Kind::Int64 => ("i8", native),
        Kind::Int => ("i4", native),
        Kind::Int16 => ("i2", native),
        Kind::Int8 => ("i1", "|"),
        Kind::Uint8 => ("u1", "|"),
        Kind::Bool => ("b1", "|"),
        _ => return None,
    })
}

/// Pushes `name` and its array onto the `model` dict under construction.
fn array<W: Write>(
    p: &mut Pickler<W>,
    name: &str,
    shape: &[i64],
    (code, order): (&str, &str),
    data: &[u8],
) -> io::Result<()> {
    p.str(name)?;
    p.global("numpy.core.multiarray", "_reconstruct")?;
    p.global("numpy", "ndarray")?.int(0)?.tuple1()?.bytes(b"b")?.tuple3()?.reduce()?;
    p.mark()?.int(1)?.int_tuple(shape)?;
    p.global("numpy", "dtype")?.str(code)?.bool(false)?.bool(true)?.tuple3()?.reduce()?;
    p.mark()?.int(3)?.str(order)?.none()?.none()?.none()?.int(-1)?.int(-1)?.int(0)?;
    p.tuple()?.build()?;
    p.bool(false)?.bytes(data)?.tuple()?.build()?;
    Ok(())
}

/// Writes `tensors` (in this order, under these names) as detectron2's pickle to `out`; `path`
/// names it in errors.
///
/// # Errors
/// A tensor kind numpy has no dtype for (bf16; [`crate::Error::Unsupported`]); write failures
/// ([`crate::Error::Io`]), an array beyond 4 GiB included.
pub(super) fn write<W: Write>(
    out: W,
    path: &Path,
    tensors: &[(String, Tensor)],
    author: &str,
) -> Result<W> {
    let dtypes = tensors
        .iter()
        .map(|(name, t)| {
            dtype(t.kind()).ok_or_else(|| unsupported(name, t.kind(), "a numpy dtype"))
        })
        .collect::<Result<Vec<_>>>()?;
    let io = |e| Error::io(path, "write", e);
    let mut p = Pickler::new(out, 3).map_err(io)?;
    p.empty_dict().and_then(|p| p.mark()?.str("model")?.empty_dict()?.mark()).map_err(io)?;
    for ((name, t), dtype) in tensors.iter().zip(dtypes) {
        array(&mut p, name, &t.size(), dtype, &host_bytes(t)?).map_err(io)?;
    }
    p.set_items().map_err(io)?;
    p.str("__author__").and_then(|p| p.str(author)).map_err(io)?;
    p.str("matching_heuristics").and_then(|p| p.bool(true)?.set_items()).map_err(io)?;
    p.finish().map_err(io)
}
