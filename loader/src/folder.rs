//! Training straight from an ImageFolder tree of JPEGs, without a conversion: [`ImageFolder`] is a
//! [`RecordSource`] over the files.
//!
//! Why a record source over the files rather than a conversion into a cache: nothing is written
//! (the folder may be read-only, shared, or being added to; a cache would have to be invalidated),
//! the same JPEG bytes reach the same decoder as they would from a shard, and the first batch
//! comes after one header read per file instead of a full conversion. The costs, against shards:
//! an `open` + `read` per sample instead of a slice of a map, no per-record checksum, and opening
//! reads every file once. Past a few hundred thousand files, `regioncl convert` pays for itself.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use regioncl_augment::jpeg_info;

use crate::error::{Error, Result};
use crate::fsutil::open_regular;
use crate::shard::reader::Record;
use crate::source::{RecordSizes, RecordSource};

/// Files larger than this are not read (an ImageNet JPEG is ~110 KB; a 64 MiB one is not a photo).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Extensions read as JPEGs (case-insensitive). Other formats need `regioncl convert`.
const JPEG_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "jpe", "jfif"];

/// The JPEGs of an ImageFolder tree (`root/<class>/**/<file>.jpg`): classes are the first-level
/// directories in sorted name order (labels index them), files are found recursively below each,
/// symbolic links followed, hidden entries ignored, records in sorted path order.
///
/// Opening reads every file once, for the size in its JPEG header. A file that is not a regular
/// file (a FIFO, a device), is larger than [`MAX_FILE_BYTES`] or has no readable JPEG header is
/// not a record: it is listed in [`ImageFolder::skipped`] with the reason.
///
/// ```no_run
/// # fn main() -> regioncl_loader::Result<()> {
/// let photos = regioncl_loader::ImageFolder::open("photos/train")?;
/// println!("{} JPEGs in {} classes", photos.len(), photos.class_names().len());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ImageFolder {
    root: PathBuf,
    files: Vec<PathBuf>,
    labels: Vec<u32>,
    sizes: Vec<(u32, u32)>,
    /// crc32c of each file as opened: its view key.
    crcs: Vec<u32>,
    class_names: Vec<String>,
    skipped: Vec<(PathBuf, String)>,
}

impl ImageFolder {
    /// Lists and opens the tree at `root`.
    ///
    /// # Errors
    /// [`Error::Io`] when a directory cannot be read; [`Error::Config`] for a class directory
    /// name that is not UTF-8 or a tree without any JPEG.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let mut folder = Self {
            root: root.clone(),
            files: Vec::new(),
            labels: Vec::new(),
            sizes: Vec::new(),
            crcs: Vec::new(),
            class_names: Vec::new(),
            skipped: Vec::new(),
        };
        let mut candidates = Vec::new();
        for dir in sorted_entries(&root)? {
            if !fs::metadata(&dir).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let name = dir.file_name().unwrap_or_default().to_str().map(str::to_owned);
            let name = name.ok_or_else(|| {
                Error::Config(format!("{}: class directory name is not UTF-8", dir.display()))
            })?;
            let label = u32::try_from(folder.class_names.len())
                .map_err(|_| Error::Config(format!("{}: too many classes", root.display())))?;
            let mut files = Vec::new();
            collect_jpegs(&dir, &mut Vec::new(), &mut files)?;
            candidates.extend(files.into_iter().map(|f| (f, label)));
            folder.class_names.push(name);
        }
        candidates.sort();
        let mut buf = Vec::new();
        for (path, label) in candidates {
            match read_file(&path, &mut buf).and_then(|()| {
                jpeg_info(&buf).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
            }) {
                Ok(info) => {
                    folder.files.push(path);
                    folder.labels.push(label);
                    folder.sizes.push((info.width, info.height));
                    folder.crcs.push(crc32c::crc32c(&buf));
                }
                Err(e) => folder.skipped.push((path, crate::record::chain(&e))),
            }
        }
        if folder.files.is_empty() {
            return Err(Error::Config(format!(
                "{}: no JPEG under a class directory ({} files skipped)",
                root.display(),
                folder.skipped.len()
            )));
        }
        Ok(folder)
    }

    /// The tree's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of records (JPEG files read).
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there is no record (never: [`ImageFolder::open`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Class names, indexed by label.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Record `index`'s file.
    pub fn path(&self, index: usize) -> Option<&Path> {
        self.files.get(index).map(PathBuf::as_path)
    }

    /// Files that are not records, with the reason.
    pub fn skipped(&self) -> &[(PathBuf, String)] {
        &self.skipped
    }
}

/// The entries of `dir`, hidden ones left out, sorted.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, "read directory", e))? {
        let entry = entry.map_err(|e| Error::io(dir, "read directory", e))?;
        if !entry.file_name().as_encoded_bytes().starts_with(b".") {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Pushes the JPEG-named entries below `dir` onto `out`; `visited` holds the real paths of the
/// directories on the way down, so a symbolic link loop ends.
fn collect_jpegs(dir: &Path, visited: &mut Vec<PathBuf>, out: &mut Vec<PathBuf>) -> Result<()> {
    let real = fs::canonicalize(dir).map_err(|e| Error::io(dir, "resolve directory", e))?;
    if visited.contains(&real) {
        return Ok(());
    }
    visited.push(real);
    for path in sorted_entries(dir)? {
        if fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            collect_jpegs(&path, visited, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| JPEG_EXTENSIONS.iter().any(|j| j.eq_ignore_ascii_case(e)))
        {
            out.push(path);
        }
    }
    visited.pop();
    Ok(())
}

/// Reads a regular file of at most [`MAX_FILE_BYTES`] into `buf` (the kind and size are checked
/// before a byte is read, so a FIFO or `/dev/zero` is refused without a read).
fn read_file(path: &Path, buf: &mut Vec<u8>) -> Result<()> {
    let (file, len) = open_regular(path, "read")?;
    let limit =
        |value| Error::Limit { path: path.into(), what: "file size", value, max: MAX_FILE_BYTES };
    if len > MAX_FILE_BYTES {
        return Err(limit(len));
    }
    buf.clear();
    file.take(MAX_FILE_BYTES + 1).read_to_end(buf).map_err(|e| Error::io(path, "read", e))?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(limit(buf.len() as u64));
    }
    Ok(())
}

impl RecordSizes for ImageFolder {
    fn num_records(&self) -> u64 {
        self.files.len() as u64
    }

    fn size(&self, index: u64) -> (u32, u32) {
        self.sizes[index as usize]
    }

    fn view_key(&self, index: u64) -> u64 {
        u64::from(self.crcs[index as usize])
    }
}

impl RecordSource for ImageFolder {
    fn read<'a>(&'a self, index: u64, buf: &'a mut Vec<u8>) -> Result<Record<'a>> {
        let i = usize::try_from(index).unwrap_or(usize::MAX);
        let (Some(path), Some(&label), Some(&(width, height))) =
            (self.files.get(i), self.labels.get(i), self.sizes.get(i))
        else {
            return Err(Error::OutOfRange { what: "record", index, len: self.num_records() });
        };
        read_file(path, buf)?;
        Ok(Record { bytes: buf, label, width, height, crc: crc32c::crc32c(buf) })
    }

    fn describe(&self, index: u64) -> String {
        self.path(index as usize).map_or_else(
            || format!("{}: record {index}", self.root.display()),
            |p| p.display().to_string(),
        )
    }
}
