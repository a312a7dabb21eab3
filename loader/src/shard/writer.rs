//! Writing a shard: records are streamed into a temporary file next to the destination; `finish`
//! appends the index, writes the header, fsyncs and renames, so a shard path only ever holds a
//! complete shard, and a mapped shard is never modified.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil::{sync_parent, tmp_path};
use crate::manifest::ShardInfo;
use crate::shard::format::{ENTRY_LEN, Entry, HEADER_LEN, Header};

/// Streams records into a new shard file.
///
/// ```no_run
/// # fn main() -> regioncl_loader::Result<()> {
/// use regioncl_loader::{Shard, ShardWriter};
/// let jpeg: &[u8] = &[/* a JPEG */];
/// let mut writer = ShardWriter::create("out/shard-00000.rcl")?;
/// writer.push(jpeg, 3, 640, 480)?;
/// let info = writer.finish()?;
/// let shard = Shard::open("out/shard-00000.rcl")?;
/// assert_eq!(shard.len() as u64, info.num_records);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    entries: Vec<Entry>,
    pos: u64,
    /// crc32c of everything after the header written so far.
    body_crc: u32,
}

impl ShardWriter {
    /// Starts a shard that [`finish`](Self::finish) publishes at `path` (its bytes go to
    /// `.regioncl-tmp-` + its name, in the same directory, until then).
    ///
    /// # Errors
    /// [`Error::Io`] if the temporary file cannot be created.
    pub fn create(path: impl AsRef<Path>) -> Result<ShardWriter> {
        let path = path.as_ref().to_path_buf();
        let tmp = tmp_path(&path);
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, "create shard", e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; HEADER_LEN as usize])
            .map_err(|e| Error::io(&tmp, "write shard", e))?;
        Ok(ShardWriter {
            path,
            tmp,
            out: Some(out),
            entries: Vec::new(),
            pos: HEADER_LEN,
            body_crc: 0,
        })
    }

    /// Appends a record.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero width or height; [`Error::Limit`] for a record longer than
    /// `u32::MAX` bytes; [`Error::Io`] if writing fails.
    pub fn push(&mut self, bytes: &[u8], label: u32, width: u32, height: u32) -> Result<()> {
        if width == 0 || height == 0 {
            return Err(Error::Config(format!("record of {width}x{height} pixels")));
        }
        let len = u32::try_from(bytes.len()).map_err(|_| Error::Limit {
            path: self.path.clone(),
            what: "record length",
            value: bytes.len() as u64,
            max: u32::MAX.into(),
        })?;
        let out =
            self.out.as_mut().ok_or_else(|| Error::Config("shard already finished".into()))?;
        out.write_all(bytes).map_err(|e| Error::io(&self.tmp, "write shard", e))?;
        self.entries.push(Entry {
            offset: self.pos,
            len,
            label,
            width,
            height,
            crc: crc32c::crc32c(bytes),
            reserved: 0,
        });
        self.body_crc = crc32c::crc32c_append(self.body_crc, bytes);
        self.pos += u64::from(len);
        Ok(())
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no record has been pushed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Size the file would have if finished now.
    pub fn file_len(&self) -> u64 {
        self.pos + self.entries.len() as u64 * ENTRY_LEN
    }

    /// Writes the index and the header, fsyncs, and renames the temporary file to the shard path.
    ///
    /// # Errors
    /// [`Error::Io`] if any step fails (the temporary file is then removed).
    pub fn finish(mut self) -> Result<ShardInfo> {
        let mut out =
            self.out.take().ok_or_else(|| Error::Config("shard already finished".into()))?;
        let result = self.finish_inner(&mut out);
        drop(out);
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        result
    }

    fn finish_inner(&mut self, out: &mut BufWriter<File>) -> Result<ShardInfo> {
        let io = |e| Error::io(&self.tmp, "write shard", e);
        let mut index = Vec::with_capacity(self.entries.len() * ENTRY_LEN as usize);
        for entry in &self.entries {
            index.extend_from_slice(&entry.encode());
        }
        out.write_all(&index).map_err(io)?;
        let header = Header {
            num_records: self.entries.len() as u64,
            index_offset: self.pos,
            index_crc: crc32c::crc32c(&index),
        }
        .encode();
        out.seek(SeekFrom::Start(0)).map_err(io)?;
        out.write_all(&header).map_err(io)?;
        out.flush().map_err(io)?;
        out.get_ref().sync_all().map_err(|e| Error::io(&self.tmp, "fsync shard", e))?;
        std::fs::rename(&self.tmp, &self.path)
            .map_err(|e| Error::io(&self.path, "rename shard", e))?;
        sync_parent(&self.path)?;
        let body_crc = crc32c::crc32c_append(self.body_crc, &index);
        let body_len = self.pos - HEADER_LEN + index.len() as u64;
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned());
        Ok(ShardInfo {
            file: name.unwrap_or_default(),
            num_records: self.entries.len() as u64,
            num_bytes: HEADER_LEN + body_len,
            crc32c: crc32c::crc32c_combine(crc32c::crc32c(&header), body_crc, body_len as usize),
        })
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        // An unfinished shard never becomes visible: drop its temporary file.
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
