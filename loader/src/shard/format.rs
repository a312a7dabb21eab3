//! The shard file format, version 1. All integers are little-endian.
//!
//! ```text
//! offset                     size  content
//! ------------------------------------------------------------------------------------------
//! 0                          64    header
//!   0    magic          [u8; 8]    b"RCLSHARD"
//!   8    version        u32        1; a reader refuses any other value
//!   12   header_len     u32        64
//!   16   num_records    u64        N
//!   24   index_offset   u64        where the index starts; records lie in [64, index_offset)
//!   32   entry_len      u32        32
//!   36   index_crc32c   u32        crc32c of the N * 32 index bytes
//!   40   reserved       [u8; 20]   zero
//!   60   header_crc32c  u32        crc32c of header bytes 0..60
//! 64                         ...   record bytes, in index order (the JPEG as stored); records
//!                                  never overlap and each starts at or after the previous end
//! index_offset               N*32  index: one entry per record
//!   0    offset         u64        absolute byte offset of the record
//!   8    length         u32        its length in bytes
//!   12   label          u32        class label
//!   16   width          u32        image width in pixels (> 0)
//!   20   height         u32        image height in pixels (> 0)
//!   24   crc32c         u32        crc32c of the record's bytes
//!   28   reserved       u32        zero
//! index_offset + N*32        -     end of file: the file is exactly this long
//! ```
//!
//! The index comes last so that a writer can stream records and write the index once their
//! offsets are known; the header, written last, is what makes a file a shard. A reader checks, in
//! this order: length >= 12, magic, version, length >= 64, header crc, header fields, file length,
//! index crc, then every entry (bounds, order, sizes, reserved bits). After that, every record
//! access is a bounds-checked slice of the mapped file.

use crate::error::FormatError;

/// The first 8 bytes of every shard.
pub const MAGIC: [u8; 8] = *b"RCLSHARD";
/// The shard format version this build reads and writes.
pub const VERSION: u32 = 1;
/// Length of the header in bytes.
pub const HEADER_LEN: u64 = 64;
/// Length of an index entry in bytes.
pub const ENTRY_LEN: u64 = 32;
/// Offset of the header checksum.
pub(crate) const HEADER_CRC_OFFSET: u64 = 60;

/// The decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub num_records: u64,
    pub index_offset: u64,
    pub index_crc: u32,
}

impl Header {
    /// Encodes the header, checksum included.
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut b = [0u8; HEADER_LEN as usize];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.num_records.to_le_bytes());
        b[24..32].copy_from_slice(&self.index_offset.to_le_bytes());
        b[32..36].copy_from_slice(&(ENTRY_LEN as u32).to_le_bytes());
        b[36..40].copy_from_slice(&self.index_crc.to_le_bytes());
        let crc = crc32c::crc32c(&b[..HEADER_CRC_OFFSET as usize]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header against the file length (`bytes` is the whole file). Checks
    /// everything but the index checksum.
    pub fn decode(bytes: &[u8]) -> Result<Header, FormatError> {
        let len = bytes.len() as u64;
        if bytes.len() < 12 {
            let n = bytes.len().min(MAGIC.len());
            if bytes[..n] != MAGIC[..n] {
                return Err(FormatError::BadMagic { found: bytes[..n].to_vec() });
            }
            return Err(FormatError::TruncatedHeader { len, need: HEADER_LEN });
        }
        if bytes[..8] != MAGIC {
            return Err(FormatError::BadMagic { found: bytes[..8].to_vec() });
        }
        let version = u32_at(bytes, 8);
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion { found: version, supported: VERSION });
        }
        if len < HEADER_LEN {
            return Err(FormatError::TruncatedHeader { len, need: HEADER_LEN });
        }
        let stored = u32_at(bytes, 60);
        let computed = crc32c::crc32c(&bytes[..HEADER_CRC_OFFSET as usize]);
        if stored != computed {
            return Err(FormatError::HeaderChecksum {
                offset: HEADER_CRC_OFFSET,
                stored,
                computed,
            });
        }
        let header_len = u32_at(bytes, 12);
        if u64::from(header_len) != HEADER_LEN {
            return Err(field("header_len", 12, header_len.into(), HEADER_LEN.to_string()));
        }
        let entry_len = u32_at(bytes, 32);
        if u64::from(entry_len) != ENTRY_LEN {
            return Err(field("entry_len", 32, entry_len.into(), ENTRY_LEN.to_string()));
        }
        if let Some(i) = bytes[40..60].iter().position(|&b| b != 0) {
            let offset = 40 + i as u64;
            return Err(field("reserved", offset, bytes[40 + i].into(), "0".into()));
        }
        let num_records = u64_at(bytes, 16);
        let index_offset = u64_at(bytes, 24);
        if index_offset < HEADER_LEN {
            return Err(field("index_offset", 24, index_offset, format!(">= {HEADER_LEN}")));
        }
        let expected = num_records
            .checked_mul(ENTRY_LEN)
            .and_then(|n| n.checked_add(index_offset))
            .ok_or_else(|| field("num_records", 16, num_records, "an index that fits".into()))?;
        if expected != len {
            return Err(FormatError::SizeMismatch { expected, actual: len });
        }
        Ok(Header { num_records, index_offset, index_crc: u32_at(bytes, 36) })
    }
}

/// One decoded index entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub offset: u64,
    pub len: u32,
    pub label: u32,
    pub width: u32,
    pub height: u32,
    pub crc: u32,
    pub reserved: u32,
}

impl Entry {
    /// Encodes the entry.
    pub fn encode(&self) -> [u8; ENTRY_LEN as usize] {
        let mut b = [0u8; ENTRY_LEN as usize];
        b[0..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..16].copy_from_slice(&self.label.to_le_bytes());
        b[16..20].copy_from_slice(&self.width.to_le_bytes());
        b[20..24].copy_from_slice(&self.height.to_le_bytes());
        b[24..28].copy_from_slice(&self.crc.to_le_bytes());
        b[28..32].copy_from_slice(&self.reserved.to_le_bytes());
        b
    }

    /// Decodes an entry from exactly [`ENTRY_LEN`] bytes.
    pub fn decode(b: &[u8; ENTRY_LEN as usize]) -> Entry {
        Entry {
            offset: u64_at(b, 0),
            len: u32_at(b, 8),
            label: u32_at(b, 12),
            width: u32_at(b, 16),
            height: u32_at(b, 20),
            crc: u32_at(b, 24),
            reserved: u32_at(b, 28),
        }
    }

    /// Checks the entry of record `index` (its bytes at `entry_offset`) given the end of the
    /// previous record and the end of the data region.
    pub fn check(
        &self,
        index: u64,
        entry_offset: u64,
        prev_end: u64,
        data_end: u64,
    ) -> Result<(), FormatError> {
        if self.offset < prev_end {
            return Err(FormatError::RecordOverlap { index, offset: self.offset, min: prev_end });
        }
        let len = u64::from(self.len);
        if self.offset.checked_add(len).is_none_or(|end| end > data_end) {
            return Err(FormatError::RecordOutOfBounds {
                index,
                offset: self.offset,
                len,
                end: data_end,
            });
        }
        let bad = |name: &'static str, value: u32, expected: &str| FormatError::RecordField {
            index,
            entry_offset,
            field: name,
            value: value.into(),
            expected: expected.into(),
        };
        if self.width == 0 {
            return Err(bad("width", self.width, "> 0"));
        }
        if self.height == 0 {
            return Err(bad("height", self.height, "> 0"));
        }
        if self.reserved != 0 {
            return Err(bad("reserved", self.reserved, "0"));
        }
        Ok(())
    }
}

fn field(name: &'static str, offset: u64, value: u64, expected: String) -> FormatError {
    FormatError::HeaderField { field: name, offset, value, expected }
}

/// Reads a little-endian u32 at `at`; the caller guarantees `at + 4 <= b.len()`.
fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Reads a little-endian u64 at `at`; the caller guarantees `at + 8 <= b.len()`.
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header { num_records: 3, index_offset: 100, index_crc: 0xdead_beef };
        let mut file = vec![0u8; 100 + 3 * 32];
        file[..64].copy_from_slice(&h.encode());
        assert_eq!(Header::decode(&file), Ok(h));
    }

    #[test]
    fn entry_round_trips() {
        let e = Entry {
            offset: 1 << 40,
            len: 7,
            label: 9,
            width: 640,
            height: 480,
            crc: 0x1234_5678,
            reserved: 0,
        };
        assert_eq!(Entry::decode(&e.encode()), e);
    }

    #[test]
    fn short_foreign_and_short_shard_prefixes_differ() {
        assert!(matches!(Header::decode(b""), Err(FormatError::TruncatedHeader { len: 0, .. })));
        assert!(matches!(Header::decode(b"PNG"), Err(FormatError::BadMagic { .. })));
        assert!(matches!(Header::decode(b"RCLS"), Err(FormatError::TruncatedHeader { .. })));
        assert!(matches!(
            Header::decode(b"RCLSHARD\x01"),
            Err(FormatError::TruncatedHeader { .. })
        ));
    }

    #[test]
    fn index_offset_overflow_is_an_error() {
        let h = Header { num_records: u64::MAX / 16, index_offset: 64, index_crc: 0 };
        let mut file = vec![0u8; 64];
        file.copy_from_slice(&h.encode());
        assert!(matches!(Header::decode(&file), Err(FormatError::HeaderField { .. })));
    }
}
