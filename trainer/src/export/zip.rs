//! A writer of uncompressed ("stored") zip archives laid out as torch's `PyTorchStreamWriter`
//! writes them: every record's data starts on a 64-byte boundary, reached by padding the local
//! header's extra field (id `FB`, filled with `Z`), so `torch.load(..., mmap=True)` can map the
//! tensors in place.
//!
//! ```text
//! per record:  local header (30 bytes) | name | extra "FB" + padding | data (64-byte aligned)
//! then:        central directory (46 bytes + name per record) | end record (22 bytes)
//! ```
//!
//! Sizes and offsets are 32-bit (no zip64): an archive is limited to 4 GiB and 65535 records,
//! checked before anything past the limit is written. Times are the DOS epoch (1980-01-01 00:00),
//! so the same tensors give the same bytes. Format: PKWARE's APPNOTE.TXT, sections 4.3.7 (local
//! header), 4.3.12 (central directory) and 4.3.16 (end record).

use std::io::{self, Write};

/// Data alignment of each record (torch's `kFieldAlignment`).
const ALIGN: u64 = 64;
/// Version needed to extract: 2.0 (stored records, no zip64).
const VERSION: u16 = 20;
/// General purpose flag bit 11: names are UTF-8.
const UTF8: u16 = 1 << 11;
/// DOS date of 1980-01-01 (day 1, month 1, year 0); time 00:00:00 is 0.
const DOS_DATE: u16 = (1 << 5) | 1;
const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_RECORD: u32 = 0x0605_4b50;

/// One record as the central directory lists it.
#[derive(Debug)]
struct Record {
    name: String,
    crc: u32,
    size: u32,
    offset: u32,
}

/// Writes a stored zip archive to `W`, record by record.
#[derive(Debug)]
pub(super) struct ZipWriter<W: Write> {
    out: W,
    pos: u64,
    records: Vec<Record>,
}

fn limit(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!("zip: {what} exceeds the 32-bit zip format (4 GiB, 65535 records; no zip64)"),
    )
}

impl<W: Write> ZipWriter<W> {
    /// An empty archive written to `out`.
    pub(super) fn new(out: W) -> Self {
        Self { out, pos: 0, records: Vec::new() }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn put_u16(&mut self, v: u16) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }

    fn put_u32(&mut self, v: u32) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }

    /// Appends the record `name` holding `data`.
    ///
    /// # Errors
    /// Write failures; a record or archive beyond the 32-bit limits.
    pub(super) fn add(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let name_len = u16::try_from(name.len()).map_err(|_| limit("a record name"))?;
        if self.records.len() >= usize::from(u16::MAX) {
            return Err(limit("the number of records"));
        }
        // Header, name and the extra field's own 4-byte header, then padding to the alignment.
        let unpadded = self.pos + 30 + u64::from(name_len) + 4;
        let pad = (ALIGN - unpadded % ALIGN) % ALIGN;
        let end = unpadded + pad + data.len() as u64;
        let (offset, size) = (u32::try_from(self.pos), u32::try_from(data.len()));
        let (Ok(offset), Ok(size), true) = (offset, size, end <= u64::from(u32::MAX)) else {
            return Err(limit("the archive size"));
        };
        let crc = crc32fast::hash(data);
        self.put_u32(LOCAL_HEADER)?;
        self.put_u16(VERSION)?;
        self.put_u16(UTF8)?;
        self.put_u16(0)?; // method: stored
        self.put_u16(0)?; // time
        self.put_u16(DOS_DATE)?;
        self.put_u32(crc)?;
        self.put_u32(size)?; // compressed
        self.put_u32(size)?; // uncompressed
        self.put_u16(name_len)?;
        self.put_u16(4 + pad as u16)?; // extra field length
        self.put(name.as_bytes())?;
        self.put(b"FB")?;
        self.put_u16(pad as u16)?;
        self.put(&[b'Z'; ALIGN as usize][..pad as usize])?;
        debug_assert_eq!(self.pos % ALIGN, 0);
        self.put(data)?;
        self.records.push(Record { name: name.to_string(), crc, size, offset });
        Ok(())
    }

    /// Writes the central directory and the end record; returns the writer.
    ///
    /// # Errors
    /// Write failures; a directory beyond the 32-bit limits.
    pub(super) fn finish(mut self) -> io::Result<W> {
        let start = self.pos;
        let records = std::mem::take(&mut self.records);
        for r in &records {
            self.put_u32(CENTRAL_HEADER)?;
            self.put_u16(VERSION)?; // made by
            self.put_u16(VERSION)?; // needed
            self.put_u16(UTF8)?;
            self.put_u16(0)?; // stored
            self.put_u16(0)?;
            self.put_u16(DOS_DATE)?;
            self.put_u32(r.crc)?;
            self.put_u32(r.size)?;
            self.put_u32(r.size)?;
            self.put_u16(r.name.len() as u16)?;
            self.put_u16(0)?; // extra
            self.put_u16(0)?; // comment
            self.put_u16(0)?; // disk
            self.put_u16(0)?; // internal attributes
            self.put_u32(0)?; // external attributes
            self.put_u32(r.offset)?;
            self.put(r.name.as_bytes())?;
        }
        let (Ok(start32), Ok(size)) = (u32::try_from(start), u32::try_from(self.pos - start))
        else {
            return Err(limit("the archive size"));
        };
        let n = records.len() as u16;
        self.put_u32(END_RECORD)?;
        self.put_u16(0)?; // this disk
        self.put_u16(0)?; // disk of the directory
        self.put_u16(n)?;
        self.put_u16(n)?;
        self.put_u32(size)?;
        self.put_u32(start32)?;
        self.put_u16(0)?; // comment
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// Each record's data sits on a 64-byte boundary with its CRC-32, and the end record points at
    /// the central directory.
    #[test]
    fn records_are_aligned_and_indexed() {
        let mut zip = ZipWriter::new(Vec::new());
        zip.add("archive/data.pkl", b"abc").unwrap();
        zip.add("archive/data/0", &[7u8; 100]).unwrap();
        let bytes = zip.finish().unwrap();
        let end = bytes.len() - 22;
        assert_eq!(u32_at(&bytes, end), END_RECORD);
        let (cd_size, cd_start) = (u32_at(&bytes, end + 12), u32_at(&bytes, end + 16));
        assert_eq!(cd_start as usize + cd_size as usize, end);
        let mut at = cd_start as usize;
        for (name, data) in [("archive/data.pkl", &b"abc"[..]), ("archive/data/0", &[7u8; 100])] {
            assert_eq!(u32_at(&bytes, at), CENTRAL_HEADER);
            assert_eq!(u32_at(&bytes, at + 16), crc32fast::hash(data));
            let offset = u32_at(&bytes, at + 42) as usize;
            assert_eq!(&bytes[at + 46..at + 46 + name.len()], name.as_bytes());
            let name_len = u16::from_le_bytes([bytes[offset + 26], bytes[offset + 27]]) as usize;
            let extra = u16::from_le_bytes([bytes[offset + 28], bytes[offset + 29]]) as usize;
            let start = offset + 30 + name_len + extra;
            assert_eq!(start % 64, 0, "{name}");
            assert_eq!(&bytes[start..start + data.len()], data);
            at += 46 + name.len();
        }
    }
}
