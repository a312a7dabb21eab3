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

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ManifestError, Result};
use crate::fsutil::{read_regular, write_atomic};

/// File name of the manifest inside a dataset directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Value of the manifest's `format` field.
pub const DATASET_FORMAT: &str = "regioncl-dataset";
/// The dataset format version this build reads and writes (the shard files carry their own).
pub const DATASET_VERSION: u32 = 1;
/// A manifest larger than this is refused before it is read.
const MAX_MANIFEST_BYTES: u64 = 256 << 20;
/// The most classes a dataset may have (a label is below this): the converter refuses input
/// with more, and a manifest listing more is refused.
pub const MAX_CLASSES: usize = 1 << 22;

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
    /// [`Error::Io`] (also for a path that is not a regular file), [`Error::Limit`] for a file
    /// over 256 MiB or more than [`MAX_CLASSES`] classes, [`Error::Manifest`] for bad JSON (naming
    /// the field, line and column) or an unsupported version.
    pub fn read(path: impl AsRef<Path>) -> Result<Manifest> {
        let path = path.as_ref();
        let text = read_regular(path, "read manifest", "manifest size", MAX_MANIFEST_BYTES)?;
        let manifest = Self::from_json(&text).map_err(|kind| Error::manifest(path, kind))?;
        if manifest.class_names.len() > MAX_CLASSES {
            return Err(Error::Limit {
                path: path.into(),
                what: "class count",
                value: manifest.class_names.len() as u64,
                max: MAX_CLASSES as u64,
            });
        }
        Ok(manifest)
    }

    /// Parses a manifest from JSON bytes.
    pub(crate) fn from_json(text: &[u8]) -> Result<Manifest, ManifestError> {
        #[derive(Deserialize)]
        struct Version {
            format: String,
            format_version: u32,
        }
        // Read the version first: a newer manifest may not parse as this version's struct.
        let v: Version = parse(text)?;
        if v.format != DATASET_FORMAT {
            return Err(ManifestError::ForeignFormat { found: v.format });
        }
        if v.format_version != DATASET_VERSION {
            return Err(ManifestError::UnsupportedVersion {
                found: v.format_version,
                supported: DATASET_VERSION,
            });
        }
        parse(text)
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
        write_atomic(dir.as_ref().join(MANIFEST_FILE), self.to_json().as_bytes())
    }
}

/// Parses JSON, naming the field (as a path of keys and indices) where it went wrong.
fn parse<T: DeserializeOwned>(text: &[u8]) -> Result<T, ManifestError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        ManifestError::Json { field, error: e.into_inner() }
    })?;
    // Only whitespace may follow the document.
    de.end().map_err(|error| ManifestError::Json { field: String::new(), error })?;
    Ok(value)
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
        assert!(matches!(Manifest::from_json(b"\x00\xff{"), Err(ManifestError::Json { .. })));
    }

    /// Issue 12 #16: a bad manifest printed only "invalid manifest".
    #[test]
    fn bad_manifest_names_the_line_and_field() {
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        v["shards"][0]["num_records"] = "two".into();
        let json = serde_json::to_string_pretty(&v).unwrap();
        let message = Manifest::from_json(json.as_bytes()).unwrap_err().to_string();
        let line = 1 + json.lines().position(|l| l.contains("\"two\"")).unwrap();
        let field = "invalid manifest: in `shards[0].num_records`: invalid type: string \"two\"";
        assert!(message.starts_with(field), "{message}");
        assert!(message.contains(&format!(" at line {line} column ")), "{message}");

        let json = sample().to_json().replace("\"crc32c\": 7", "\"crc\": 7");
        let message = Manifest::from_json(json.as_bytes()).unwrap_err().to_string();
        let field = "invalid manifest: in `shards[0]`: missing field `crc32c` at line ";
        assert!(message.starts_with(field), "{message}");

        let message = Manifest::from_json(b"{\"format\": 1}").unwrap_err().to_string();
        let field = "invalid manifest: in `format`: invalid type: integer `1`, expected a string";
        assert!(message.starts_with(field), "{message}");
    }

    #[test]
    fn plain_file_names() {
        assert!(is_plain_file_name("shard-00000.rcl"));
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b"] {
            assert!(!is_plain_file_name(bad), "{bad}");
        }
    }
}
