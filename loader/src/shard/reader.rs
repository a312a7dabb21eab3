//! Reading a shard through a read-only memory map.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{ChecksumError, Error, FormatError, Result};
use crate::fsutil::open_regular;
use crate::shard::format::{ENTRY_LEN, Entry, HEADER_LEN, Header};

/// One record of a shard, borrowed from the mapped file: the image bytes and the fields of its
/// index entry. Getting one allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The encoded image (a JPEG).
    pub bytes: &'a [u8],
    /// Class label.
    pub label: u32,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// crc32c of `bytes`, as stored in the index (not recomputed; see [`Shard::verify_record`]).
    pub crc: u32,
}

impl fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("len", &self.bytes.len())
            .field("label", &self.label)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("crc", &format_args!("{:08x}", self.crc))
            .finish()
    }
}

/// An open shard file: memory-mapped, with its header, index and every record's bounds checked.
pub struct Shard {
    path: PathBuf,
    map: Mmap,
    num_records: usize,
    index_offset: u64,
}

impl fmt::Debug for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shard")
            .field("path", &self.path)
            .field("num_records", &self.num_records)
            .field("file_len", &self.map.len())
            .finish()
    }
}

impl Shard {
    /// Opens and maps a shard, checking the header, the index checksum and every index entry
    /// (offsets and lengths inside the data region, in order, non-overlapping; non-zero sizes).
    /// Record bytes are not read: their checksums are checked by [`Shard::verify_record`].
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened or mapped, or is not a regular file (a FIFO
    /// is refused without blocking); [`Error::Format`] naming the first problem found if it is
    /// truncated, corrupt, foreign or of another version.
    pub fn open(path: impl AsRef<Path>) -> Result<Shard> {
        let path = path.as_ref();
        let (mut file, len) = open_regular(path, "open shard")?;
        if len < HEADER_LEN {
            // Too short to map usefully (and an empty file cannot be mapped): read what is there
            // so the error can tell a foreign file from a truncated shard.
            let mut bytes = Vec::with_capacity(HEADER_LEN as usize);
            file.by_ref()
                .take(HEADER_LEN)
                .read_to_end(&mut bytes)
                .map_err(|e| Error::io(path, "read shard", e))?;
            return match Header::decode(&bytes) {
                Err(kind) => Err(Error::format(path, kind)),
                Ok(_) => Err(Error::format(
                    path,
                    FormatError::TruncatedHeader { len: bytes.len() as u64, need: HEADER_LEN },
                )),
            };
        }
        // SAFETY: the map is read-only and private to this process. Shards are published by
        // rename and never modified in place (ShardWriter writes a temporary file), so the bytes
        // do not change while mapped. Another process truncating the file anyway would make reads
        // fault (SIGBUS), the caveat every mmap reader carries; it cannot make them read memory
        // outside the map.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, "map shard", e))?;
        Self::from_map(path.to_path_buf(), map)
    }

    fn from_map(path: PathBuf, map: Mmap) -> Result<Shard> {
        let bytes: &[u8] = &map;
        let header = Header::decode(bytes).map_err(|kind| Error::format(&path, kind))?;
        let num_records = usize::try_from(header.num_records).map_err(|_| Error::Limit {
            path: path.clone(),
            what: "record count",
            value: header.num_records,
            max: usize::MAX as u64,
        })?;
        // Header::decode checked index_offset + num_records * ENTRY_LEN == bytes.len().
        let index = &bytes[header.index_offset as usize..];
        let computed = crc32c::crc32c(index);
        if computed != header.index_crc {
            return Err(Error::format(
                &path,
                FormatError::IndexChecksum {
                    offset: header.index_offset,
                    stored: header.index_crc,
                    computed,
                },
            ));
        }
        let mut prev_end = HEADER_LEN;
        for (i, chunk) in index.chunks_exact(ENTRY_LEN as usize).enumerate() {
            let entry_offset = header.index_offset + i as u64 * ENTRY_LEN;
            let entry = Entry::decode(chunk.try_into().map_err(|_| {
                Error::format(
                    &path,
                    FormatError::SizeMismatch { expected: entry_offset + ENTRY_LEN, actual: 0 },
                )
            })?);
            entry
                .check(i as u64, entry_offset, prev_end, header.index_offset)
                .map_err(|kind| Error::format(&path, kind))?;
            prev_end = entry.offset + u64::from(entry.len);
        }
        Ok(Shard { path, map, num_records, index_offset: header.index_offset })
    }

    /// The file this shard was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.num_records
    }

    /// Whether the shard holds no record.
    pub fn is_empty(&self) -> bool {
        self.num_records == 0
    }

    /// Length of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Record `index`: O(1), no allocation, no byte of the record touched.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for an index past the end. (Bounds were checked on open; should the
    /// file change under the map anyway, an out-of-bounds entry is an [`Error::Format`].)
    pub fn record(&self, index: usize) -> Result<Record<'_>> {
        let (entry, _) = self.entry(index)?;
        let start = entry.offset as usize;
        let bytes = start
            .checked_add(entry.len as usize)
            .filter(|&end| end as u64 <= self.index_offset)
            .and_then(|end| self.map.get(start..end))
            .ok_or_else(|| {
                Error::format(
                    &self.path,
                    FormatError::RecordOutOfBounds {
                        index: index as u64,
                        offset: entry.offset,
                        len: entry.len.into(),
                        end: self.index_offset,
                    },
                )
            })?;
        Ok(Record {
            bytes,
            label: entry.label,
            width: entry.width,
            height: entry.height,
            crc: entry.crc,
        })
    }

    /// Byte offset of record `index` in the file.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for an index past the end.
    pub fn record_offset(&self, index: usize) -> Result<u64> {
        Ok(self.entry(index)?.0.offset)
    }

    /// Record `index`, after checking its bytes against the crc32c of its index entry.
    ///
    /// # Errors
    /// As [`Shard::record`], and [`Error::Checksum`] if the bytes do not match.
    pub fn verify_record(&self, index: usize) -> Result<Record<'_>> {
        let record = self.record(index)?;
        let computed = crc32c::crc32c(record.bytes);
        if computed != record.crc {
            return Err(Error::Checksum {
                path: self.path.clone(),
                kind: ChecksumError::Record {
                    index: index as u64,
                    offset: self.record_offset(index)?,
                    len: record.bytes.len() as u64,
                    stored: record.crc,
                    computed,
                },
            });
        }
        Ok(record)
    }

    /// crc32c of the whole file (reads every byte), as recorded in the manifest.
    pub fn file_crc32c(&self) -> u32 {
        crc32c::crc32c(&self.map)
    }

    fn entry(&self, index: usize) -> Result<(Entry, u64)> {
        if index >= self.num_records {
            return Err(Error::OutOfRange {
                index: index as u64,
                len: self.num_records as u64,
                what: "record",
            });
        }
        let at = self.index_offset + index as u64 * ENTRY_LEN;
        let bytes: Option<&[u8; ENTRY_LEN as usize]> =
            self.map.get(at as usize..(at + ENTRY_LEN) as usize).and_then(|s| s.try_into().ok());
        match bytes {
            Some(b) => Ok((Entry::decode(b), at)),
            None => Err(Error::format(
                &self.path,
                FormatError::SizeMismatch { expected: at + ENTRY_LEN, actual: self.file_len() },
            )),
        }
    }
}
