//! Listing the input: an ImageFolder tree or a list file, sorted, with class names.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::convert::Source;
use crate::error::{Error, Result};
use crate::fsutil::{open_regular, read_regular};
use crate::manifest::MAX_CLASSES;

/// Extensions taken as images without looking inside (compared case-insensitively).
const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "jpe", "jfif", "png", "webp", "bmp", "dib", "gif", "tif", "tiff", "ppm", "pgm",
    "pbm", "pnm", "pam",
];

/// A list file longer than this is refused unread (ImageNet-21k's list is about 700 MB).
const MAX_LIST_BYTES: u64 = 4 << 30;

/// One input file.
#[derive(Clone, Debug)]
pub(crate) struct Item {
    /// Where to read it.
    pub path: PathBuf,
    /// Its path relative to the source root, as reported.
    pub rel: String,
    /// Its class.
    pub label: u32,
    /// Its size when listed (part of the job fingerprint), if it could be read.
    pub size: Option<u64>,
}

/// The listed input.
#[derive(Debug, Default)]
pub(crate) struct Inputs {
    /// Files in sorted order of their relative path (then label).
    pub items: Vec<Item>,
    /// Class names; labels index them.
    pub class_names: Vec<String>,
    /// Classes without any image file.
    pub empty_classes: Vec<String>,
    /// Hidden files, non-image files and files outside class directories.
    pub num_ignored: u64,
}

/// Lists the input files of `source`. A class directory that is `out` (converting into a
/// directory inside the tree) is not an input.
pub(crate) fn scan(source: &Source, out: &Path) -> Result<Inputs> {
    let mut inputs = match source {
        Source::ImageFolder(root) => scan_folder(root, fs::canonicalize(out).ok().as_deref())?,
        Source::List { list, root } => scan_list(list, root)?,
    };
    inputs.items.sort_by(|a, b| (a.rel.as_bytes(), a.label).cmp(&(b.rel.as_bytes(), b.label)));
    Ok(inputs)
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

fn scan_folder(root: &Path, out: Option<&Path>) -> Result<Inputs> {
    let mut inputs = Inputs::default();
    let mut classes = Vec::new();
    for entry in read_dir_sorted(root)? {
        let name = entry.file_name().unwrap_or_default().to_os_string();
        if is_hidden(&name) {
            inputs.num_ignored += 1;
            continue;
        }
        if out.is_some() && fs::canonicalize(&entry).ok().as_deref() == out {
            continue;
        }
        // fs::metadata follows symlinks: a linked class directory counts.
        if fs::metadata(&entry).is_ok_and(|m| m.is_dir()) {
            let name = name.into_string().map_err(|n| {
                Error::Config(format!(
                    "{}: class directory name {n:?} is not UTF-8",
                    root.display()
                ))
            })?;
            classes.push((name, entry));
        } else {
            inputs.num_ignored += 1;
        }
    }
    classes.sort();
    if classes.len() > MAX_CLASSES {
        return Err(Error::Limit {
            path: root.into(),
            what: "class directory count",
            value: classes.len() as u64,
            max: MAX_CLASSES as u64,
        });
    }
    for (label, (name, dir)) in classes.into_iter().enumerate() {
        let before = inputs.items.len();
        walk_class(root, &dir, label as u32, &mut inputs)?;
        if inputs.items.len() == before {
            inputs.empty_classes.push(name.clone());
        }
        inputs.class_names.push(name);
    }
    Ok(inputs)
}

/// Collects the image files below one class directory, following symlinks (each real directory is
/// visited once, so a link loop ends).
fn walk_class(root: &Path, class_dir: &Path, label: u32, inputs: &mut Inputs) -> Result<()> {
    let mut seen = HashSet::new();
    let mut stack = vec![class_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let real = fs::canonicalize(&dir).map_err(|e| Error::io(&dir, "resolve directory", e))?;
        if !seen.insert(real) {
            continue;
        }
        for path in read_dir_sorted(&dir)? {
            let Some(name) = path.file_name() else { continue };
            if is_hidden(name) {
                inputs.num_ignored += 1;
                continue;
            }
            let meta = fs::metadata(&path);
            if meta.as_ref().is_ok_and(|m| m.is_dir()) {
                stack.push(path);
                continue;
            }
            let by_extension = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)));
            // A file without an image extension is still an image if its magic says so; an
            // unreadable one with an image extension (a broken link) is listed, and reported.
            let is_file = meta.as_ref().is_ok_and(|m| m.is_file());
            if by_extension || (is_file && has_image_magic(&path)) {
                let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
                let size = meta.ok().map(|m| m.len());
                inputs.items.push(Item { path, rel, label, size });
            } else {
                inputs.num_ignored += 1;
            }
        }
    }
    Ok(())
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, "read directory", e))?;
    let mut paths = Vec::new();
    for entry in entries {
        paths.push(entry.map_err(|e| Error::io(dir, "read directory", e))?.path());
    }
    paths.sort();
    Ok(paths)
}

/// Whether the first bytes are those of an image format the converter reads (false for a file
/// that cannot be read: it is not listed as an image, so it is counted as ignored).
fn has_image_magic(path: &Path) -> bool {
    let mut head = [0u8; 16];
    let n = open_regular(path, "read")
        .ok()
        .and_then(|(f, _)| f.take(16).read(&mut head).ok())
        .unwrap_or(0);
    let head = &head[..n];
    head.starts_with(&[0xff, 0xd8, 0xff]) || image::guess_format(head).is_ok()
}

fn scan_list(list: &Path, root: &Path) -> Result<Inputs> {
    let text = read_regular(list, "read list file", "list file size", MAX_LIST_BYTES)?;
    let text = String::from_utf8(text)
        .map_err(|e| Error::Config(format!("{}: list file is not UTF-8: {e}", list.display())))?;
    let mut inputs = Inputs::default();
    let mut max_label = None;
    for (n, line) in text.lines().enumerate() {
        let bad =
            |what: &str| Error::Config(format!("{}:{}: {what}: {line:?}", list.display(), n + 1));
        if line.trim().is_empty() {
            continue;
        }
        let Some((rel, label)) = line.rsplit_once('\t') else {
            return Err(bad("expected a relative path, a tab and an integer label"));
        };
        let label: u32 =
            label.trim().parse().map_err(|_| bad("label is not an integer in 0..2^32"))?;
        if label as usize >= MAX_CLASSES {
            let max = MAX_CLASSES - 1;
            return Err(bad(&format!("label {label} exceeds the limit of {max} (class count)")));
        }
        if rel.is_empty() || Path::new(rel).is_absolute() {
            return Err(bad("path must be relative to --root"));
        }
        let path = root.join(rel);
        let size = fs::metadata(&path).ok().map(|m| m.len());
        inputs.items.push(Item { path, rel: rel.to_string(), label, size });
        max_label = max_label.max(Some(label));
    }
    let num_classes = max_label.map_or(0, |m| m as usize + 1);
    let mut counts = vec![0u64; num_classes];
    for item in &inputs.items {
        counts[item.label as usize] += 1;
    }
    inputs.class_names = (0..num_classes).map(|c| c.to_string()).collect();
    inputs.empty_classes =
        (0..num_classes).filter(|&c| counts[c] == 0).map(|c| c.to_string()).collect();
    Ok(inputs)
}

/// The record order: a Fisher-Yates shuffle of `0..n` driven by SplitMix64 seeded with `seed`.
pub(crate) fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        // Multiply-shift maps a 64-bit draw onto 0..=i without a division.
        let j = ((u128::from(next()) * (i as u128 + 1)) >> 64) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_seeded_permutation() {
        let a = permutation(1000, 7);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(a, permutation(1000, 7));
        assert_ne!(a, permutation(1000, 8));
        assert!(permutation(0, 1).is_empty());
    }
}
