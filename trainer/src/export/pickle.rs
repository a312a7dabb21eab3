//! A writer of Python pickle opcodes: the small subset that torch's `data.pkl` and a pickle of numpy
//! arrays need, and nothing that `torch.load(..., weights_only=True)` refuses (no memo, no
//! protocol-4 framing).
//!
//! Pickle is a stack machine: each method pushes one object (or, for [`Pickler::mark`], a marker)
//! and the builders ([`Pickler::tuple`], [`Pickler::set_items`], [`Pickler::reduce`], ...) pop what
//! they consume. The reference is CPython's `Lib/pickle.py` (opcode table and `save_*` methods).

use std::io::{self, Write};

const PROTO: u8 = 0x80;
const STOP: u8 = b'.';
const MARK: u8 = b'(';
const EMPTY_DICT: u8 = b'}';
const SETITEMS: u8 = b'u';
const EMPTY_TUPLE: u8 = b')';
const TUPLE: u8 = b't';
const TUPLE1: u8 = 0x85;
const TUPLE3: u8 = 0x87;
const BININT: u8 = b'J';
const BININT1: u8 = b'K';
const BININT2: u8 = b'M';
const LONG1: u8 = 0x8a;
const BINUNICODE: u8 = b'X';
const SHORT_BINBYTES: u8 = b'C';
const BINBYTES: u8 = b'B';
const NONE: u8 = b'N';
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;
const GLOBAL: u8 = b'c';
const REDUCE: u8 = b'R';
const BUILD: u8 = b'b';
const BINPERSID: u8 = b'Q';

/// Writes pickle opcodes to `W`.
#[derive(Debug)]
pub(super) struct Pickler<W: Write> {
    out: W,
}

impl<W: Write> Pickler<W> {
    /// Starts a pickle of `protocol` (2 for torch's `data.pkl`, 3 where raw bytes are needed).
    pub(super) fn new(mut out: W, protocol: u8) -> io::Result<Self> {
        out.write_all(&[PROTO, protocol])?;
        Ok(Self { out })
    }

    fn op(&mut self, op: u8) -> io::Result<&mut Self> {
        self.out.write_all(&[op])?;
        Ok(self)
    }

    /// Ends the pickle; returns the writer.
    pub(super) fn finish(mut self) -> io::Result<W> {
        self.op(STOP)?;
        Ok(self.out)
    }

    /// Pushes a marker for the next [`Pickler::tuple`] or [`Pickler::set_items`].
    pub(super) fn mark(&mut self) -> io::Result<&mut Self> {
        self.op(MARK)
    }

    /// Pushes `{}`.
    pub(super) fn empty_dict(&mut self) -> io::Result<&mut Self> {
        self.op(EMPTY_DICT)
    }

    /// Pops key, value pairs down to the marker into the dict below it.
    pub(super) fn set_items(&mut self) -> io::Result<&mut Self> {
        self.op(SETITEMS)
    }

    /// Pops the objects down to the marker into a tuple.
    pub(super) fn tuple(&mut self) -> io::Result<&mut Self> {
        self.op(TUPLE)
    }

    /// Pops one object into a 1-tuple.
    pub(super) fn tuple1(&mut self) -> io::Result<&mut Self> {
        self.op(TUPLE1)
    }

    /// Pops three objects into a 3-tuple.
    pub(super) fn tuple3(&mut self) -> io::Result<&mut Self> {
        self.op(TUPLE3)
    }

    /// Pushes a tuple of integers (a shape or strides; `()` when empty).
    pub(super) fn int_tuple(&mut self, values: &[i64]) -> io::Result<&mut Self> {
        if values.is_empty() {
            return self.op(EMPTY_TUPLE);
        }
        self.mark()?;
        for &v in values {
            self.int(v)?;
        }
        self.tuple()
    }

    /// Pushes an integer in the shortest encoding.
    pub(super) fn int(&mut self, v: i64) -> io::Result<&mut Self> {
        if let Ok(b) = u8::try_from(v) {
            self.out.write_all(&[BININT1, b])?;
        } else if let Ok(h) = u16::try_from(v) {
            self.out.write_all(&[BININT2])?;
            self.out.write_all(&h.to_le_bytes())?;
        } else if let Ok(i) = i32::try_from(v) {
            self.out.write_all(&[BININT])?;
            self.out.write_all(&i.to_le_bytes())?;
        } else {
            // LONG1: little-endian two's complement, shortest length that keeps the sign.
            let bytes = v.to_le_bytes();
            let mut n = 8;
            while n > 1 {
                let (top, next) = (bytes[n - 1], bytes[n - 2]);
                let redundant = (top == 0 && next & 0x80 == 0) || (top == 0xff && next & 0x80 != 0);
                if !redundant {
                    break;
                }
                n -= 1;
            }
            self.out.write_all(&[LONG1, n as u8])?;
            self.out.write_all(&bytes[..n])?;
        }
        Ok(self)
    }

    /// Pushes a `str`.
    pub(super) fn str(&mut self, s: &str) -> io::Result<&mut Self> {
        let len = u32::try_from(s.len()).map_err(|_| too_long("str"))?;
        self.out.write_all(&[BINUNICODE])?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(s.as_bytes())?;
        Ok(self)
    }

    /// Pushes a `bytes` object (protocol 3).
    pub(super) fn bytes(&mut self, b: &[u8]) -> io::Result<&mut Self> {
        if let Ok(n) = u8::try_from(b.len()) {
            self.out.write_all(&[SHORT_BINBYTES, n])?;
        } else {
            let n = u32::try_from(b.len()).map_err(|_| too_long("bytes"))?;
            self.out.write_all(&[BINBYTES])?;
            self.out.write_all(&n.to_le_bytes())?;
        }
        self.out.write_all(b)?;
        Ok(self)
    }

    /// Pushes `True` or `False`.
    pub(super) fn bool(&mut self, v: bool) -> io::Result<&mut Self> {
        self.op(if v { NEWTRUE } else { NEWFALSE })
    }

    /// Pushes `None`.
    pub(super) fn none(&mut self) -> io::Result<&mut Self> {
        self.op(NONE)
    }

    /// Pushes the object `module.name` (a class or function).
    pub(super) fn global(&mut self, module: &str, name: &str) -> io::Result<&mut Self> {
        self.out.write_all(&[GLOBAL])?;
        write!(self.out, "{module}\n{name}\n")?;
        Ok(self)
    }

    /// Pops an argument tuple and a callable, pushes `callable(*args)`.
    pub(super) fn reduce(&mut self) -> io::Result<&mut Self> {
        self.op(REDUCE)
    }

    /// Pops a state and applies it to the object below (`__setstate__`).
    pub(super) fn build(&mut self) -> io::Result<&mut Self> {
        self.op(BUILD)
    }

    /// Pops a persistent id; pushes what the unpickler's `persistent_load` returns for it.
    pub(super) fn persistent_id(&mut self) -> io::Result<&mut Self> {
        self.op(BINPERSID)
    }
}

fn too_long(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("pickle: {what} longer than 4 GiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(f: impl FnOnce(&mut Pickler<Vec<u8>>) -> io::Result<()>) -> Vec<u8> {
        let mut p = Pickler::new(Vec::new(), 2).unwrap();
        f(&mut p).unwrap();
        p.finish().unwrap()
    }

    /// The encodings CPython's `pickle.dumps(v, protocol=2)` gives.
    #[test]
    fn integers_use_cpythons_shortest_encoding() {
        let cases: [(i64, &[u8]); 8] = [
            (0, b"K\x00"),
            (255, b"K\xff"),
            (256, b"M\x00\x01"),
            (65536, b"J\x00\x00\x01\x00"),
            (-1, b"J\xff\xff\xff\xff"),
            (1 << 31, b"\x8a\x05\x00\x00\x00\x80\x00"),
            (-(1 << 40), b"\x8a\x06\x00\x00\x00\x00\x00\xff"),
            (i64::MAX, b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f"),
        ];
        for (v, want) in cases {
            let got = bytes(|p| p.int(v).map(drop));
            assert_eq!(&got[2..got.len() - 1], want, "{v}");
        }
    }

    /// `pickletools.optimize(pickle.dumps({"a": (1, 2, 3, 4), "b": ()}, protocol=2))`: CPython's
    /// bytes without the memo (`BINPUT`) opcodes.
    #[test]
    fn dict_of_tuples_matches_cpython() {
        let got = bytes(|p| {
            p.empty_dict()?.mark()?;
            p.str("a")?.int_tuple(&[1, 2, 3, 4])?;
            p.str("b")?.int_tuple(&[])?;
            p.set_items().map(drop)
        });
        let want = b"\x80\x02}(X\x01\x00\x00\x00a(K\x01K\x02K\x03K\x04tX\x01\x00\x00\x00b)u.";
        assert_eq!(got, want);
    }
}
