//! The dataset manifest: `manifest.json` in the dataset directory, written last (atomically) by
//! the converter, so a directory with a manifest is a complete dataset.
//!
//! ```json
//! {
//!   "format": "regioncl-dataset",
//!   "format_version": 1,
//!   "num_records": 1990,
//!   "num_bytes": 80123456,
//!   "class_names": ["n01440764", "..."],
//!   "shards": [{ "file": "shard-00000.rcl", "num_records": 1990, "num_bytes": 80123456,
//!                "crc32c": 305419896 }],
//!   "converter": { "tool": "regioncl-loader 0.1.0", "seed": 0, "quality": 95, "...": "..." }
//! }
//! ```

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ManifestError, Result};
use crate::fsutil::write_atomic;

/// File name of the manifest inside a dataset directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Value of the manifest's `format` field.
pub const DATASET_FORMAT: &str = "regioncl-dataset";
/// The dataset format version this build reads and writes (the shard files carry their own).
pub const DATASET_VERSION: u32 = 1;
/// A manifest larger than this is refused before it is read.
const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// What a dataset directory holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`DATASET_FORMAT`].
    pub format: String,
    /// [`DATASET_VERSION`] for datasets this build writes.
    pub format_version: u32,
    /// Total number of records, the sum over the shards.
    pub num_records: u64,
    /// Total size of the shard files in bytes.
    pub num_bytes: u64,
    /// Class names; a record's label indexes this list.
    pub class_names: Vec<String>,
    /// The shard files, in global record order.
    pub shards: Vec<ShardInfo>,
    /// How the dataset was made.
    pub converter: ConvertSettings,
}

/// One shard file as the manifest records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// File name inside the dataset directory.
    pub file: String,
    /// Number of records.
    pub num_records: u64,
    /// File size in bytes.
    pub num_bytes: u64,
    /// crc32c of the whole file.
    pub crc32c: u32,
}

/// The converter settings recorded in the manifest. Deterministic: no time, no thread count, so
/// that the same input and settings give a byte-identical manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvertSettings {
    /// The software that wrote the dataset (`"regioncl-loader 0.1.0"`).
    pub tool: String,
    /// The source as given (`imagefolder:DIR` or `list:FILE@ROOT`).
    pub source: String,
    /// How records are ordered in the dataset.
    pub order: String,
    /// Seed of the record permutation.
    pub seed: u64,
    /// Longer-side bound of the resize-and-re-encode mode, if used.
    pub max_side: Option<u32>,
    /// JPEG quality of every re-encoded record.
    pub quality: u8,
    /// Target shard size in bytes.
    pub shard_size: u64,
    /// Images whose header claims more pixels are skipped.
    pub max_pixels: u64,
    /// How alpha channels are flattened.
    pub alpha: String,
    /// Fingerprint of the input list and the settings (hex), used to resume a conversion.
    pub fingerprint: String,
}

impl Manifest {
    /// Reads and parses a manifest file. Checks the format name and version; whether it agrees
    /// with the shard files is checked by [`Dataset::open`](crate::Dataset::open).
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Limit`] for a file over 256 MiB, [`Error::Manifest`] for bad JSON
    /// or an unsupported version.
    pub fn read(path: impl AsRef<Path>) -> Result<Manifest> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, "open manifest", e))?;
        let len = file.metadata().map_err(|e| Error::io(path, "stat manifest", e))?.len();
        if len > MAX_MANIFEST_BYTES {
            return Err(Error::Limit {
                path: path.into(),
                what: "manifest size",
                value: len,
                max: MAX_MANIFEST_BYTES,
            });
        }
        let mut text = Vec::with_capacity(len as usize);
        file.take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|e| Error::io(path, "read manifest", e))?;
        Self::from_json(&text).map_err(|kind| Error::manifest(path, kind))
    }

    /// Parses a manifest from JSON bytes.
    pub(crate) fn from_json(text: &[u8]) -> Result<Manifest, ManifestError> {
        #[derive(Deserialize)]
        struct Version {
            format: String,
            format_version: u32,
        }
        // Read the version first: a newer manifest may not parse as this version's struct.
        let v: Version = serde_json::from_slice(text).map_err(ManifestError::Json)?;
        if v.format != DATASET_FORMAT {
            return Err(ManifestError::ForeignFormat { found: v.format });
        }
        if v.format_version != DATASET_VERSION {
            return Err(ManifestError::UnsupportedVersion {
                found: v.format_version,
                supported: DATASET_VERSION,
            });
        }
        serde_json::from_slice(text).map_err(ManifestError::Json)
    }

    /// The manifest as pretty JSON, with a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Writes the manifest to `dir`/[`MANIFEST_FILE`] atomically (temp file, fsync, rename).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<()> {
        write_atomic(&dir.as_ref().join(MANIFEST_FILE), self.to_json().as_bytes())
    }
}

/// Whether `name` is a plain file name: no separator, not `.` or `..`, not empty.
pub(crate) fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && Path::new(name).file_name().is_some_and(|n| n == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: DATASET_FORMAT.into(),
            format_version: DATASET_VERSION,
            num_records: 2,
            num_bytes: 100,
            class_names: vec!["a".into(), "b".into()],
            shards: vec![ShardInfo {
                file: "shard-00000.rcl".into(),
                num_records: 2,
                num_bytes: 100,
                crc32c: 7,
            }],
            converter: ConvertSettings { seed: 3, quality: 95, ..Default::default() },
        }
    }

    #[test]
    fn json_round_trips() {
        let m = sample();
        assert_eq!(Manifest::from_json(m.to_json().as_bytes()).ok(), Some(m));
    }

    #[test]
    fn newer_version_is_refused_by_number() {
        let json = sample().to_json().replace("\"format_version\": 1", "\"format_version\": 9");
        assert!(matches!(
            Manifest::from_json(json.as_bytes()),
            Err(ManifestError::UnsupportedVersion { found: 9, .. })
        ));
    }

    #[test]
    fn garbage_is_a_json_error() {
        assert!(matches!(Manifest::from_json(b"\x00\xff{"), Err(ManifestError::Json(_))));
    }

    #[test]
    fn plain_file_names() {
        assert!(is_plain_file_name("shard-00000.rcl"));
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b"] {
            assert!(!is_plain_file_name(bad), "{bad}");
        }
    }
}
