//! One conversion from start (or resume point) to manifest.

use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::convert::assemble::{Assembler, shard_number};
use crate::convert::journal::{JOURNAL_FILE, Journal};
use crate::convert::scan::{Inputs, permutation, scan};
use crate::convert::transcode::Recipe;
use crate::convert::{
    ConvertConfig, ConvertSummary, Progress, SKIPPED_FILE, Skipped, Source, pipeline,
};
use crate::error::{Error, Result};
use crate::fsutil::{read_regular, tmp_path, write_atomic};
use crate::lock::{DirLock, LOCK_FILE};
use crate::manifest::{ConvertSettings, DATASET_FORMAT, DATASET_VERSION, MANIFEST_FILE, Manifest};
use crate::shard::reader::Shard;

const ORDER: &str = "fisher-yates shuffle (splitmix64, seed) of the files sorted by relative path";
const ALPHA: &str = "composited onto white";
/// `skipped.tsv` longer than this is not read back.
const MAX_REPORT_BYTES: u64 = 1 << 30;

pub(crate) fn convert(
    source: &Source,
    out: &Path,
    config: &ConvertConfig,
    progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<ConvertSummary> {
    let start = Instant::now();
    check_output_is_not_input(source, out)?;
    let created = fs::symlink_metadata(out).is_err();
    fs::create_dir_all(out).map_err(|e| Error::io(out, "create output directory", e))?;
    let result = (|| {
        let _lock = DirLock::acquire(out, "convert")?;
        convert_locked(source, out, config, progress, start)
    })();
    if result.is_err() && created {
        // A failed run leaves no empty directory behind. One that holds resumable work is not
        // empty, and this fails, as it should.
        let _ = fs::remove_dir(out);
    }
    result
}

fn convert_locked(
    source: &Source,
    out: &Path,
    config: &ConvertConfig,
    progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    start: Instant,
) -> Result<ConvertSummary> {
    let inputs = scan(source, out)?;
    if inputs.items.is_empty() {
        return Err(Error::Config(format!(
            "{}: no image file to convert ({} class(es); {} hidden, non-image or top-level \
             file(s) ignored)",
            source_name(source),
            inputs.class_names.len(),
            inputs.num_ignored
        )));
    }
    let settings = settings(source, config, &inputs);
    let mut summary = ConvertSummary {
        num_classes: inputs.class_names.len(),
        empty_classes: inputs.empty_classes.clone(),
        num_ignored: inputs.num_ignored,
        ..Default::default()
    };
    if already_complete(out, &settings, &mut summary)? {
        summary.elapsed = start.elapsed();
        return Ok(summary);
    }
    let mut journal = match Journal::open(out, &settings.fingerprint)? {
        Some(journal) => journal,
        None => {
            check_fresh(out)?;
            Journal::create(out, &settings.fingerprint)?
        }
    };
    keep_published_shards(out, &mut journal)?;
    remove_leftovers(out, &journal)?;

    let order = permutation(inputs.items.len(), config.seed);
    let recipe = Recipe {
        max_side: config.max_side,
        quality: config.quality,
        max_pixels: config.max_pixels,
    };
    let mut asm = Assembler::new(out, config.shard_size, &mut journal);
    let from = asm.next as usize;
    let resumed = asm.next;
    let total = order.len() as u64;
    let mut report = Progress {
        done: resumed,
        total,
        resumed,
        skipped: asm.skipped.len() as u64,
        bytes: asm.bytes(),
    };
    if progress(&report).is_break() {
        return Err(Error::Cancelled);
    }
    let flow = pipeline::run(
        &inputs.items,
        &order,
        from,
        &recipe,
        config.num_threads(),
        &mut |pos, outcome| {
            let item = &inputs.items[order[pos]];
            match outcome {
                Ok(prepared) => asm.push(pos as u64, item.label, prepared)?,
                Err(reason) => asm.skipped.push(Skipped { path: item.rel.clone(), reason }),
            }
            report.done = pos as u64 + 1;
            report.skipped = asm.skipped.len() as u64;
            report.bytes = asm.bytes();
            Ok(progress(&report))
        },
    )?;
    if flow.is_break() {
        return Err(Error::Cancelled);
    }
    asm.close_shard(total)?;

    let mut skipped = std::mem::take(&mut asm.skipped);
    let shards = std::mem::take(&mut asm.shards);
    let counts = (asm.stored, asm.converted, asm.resized);
    drop(asm);
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    write_report(out, &skipped, &inputs.empty_classes)?;
    if shards.is_empty() {
        // The journal stays: running again redoes the (quick) work and fails the same way.
        return Err(Error::Config(format!(
            "{}: no image could be converted: all {} file(s) were skipped, for the reasons \
             listed in {}",
            source_name(source),
            skipped.len(),
            out.join(SKIPPED_FILE).display()
        )));
    }
    let manifest = Manifest {
        format: DATASET_FORMAT.into(),
        format_version: DATASET_VERSION,
        num_records: shards.iter().map(|s| s.num_records).sum(),
        num_bytes: shards.iter().map(|s| s.num_bytes).sum(),
        class_names: inputs.class_names.clone(),
        shards,
        converter: settings,
    };
    manifest.write(out)?;
    journal.remove()?;

    summary.num_records = manifest.num_records;
    summary.num_shards = manifest.shards.len();
    summary.num_bytes = manifest.num_bytes;
    (summary.num_stored, summary.num_converted, summary.num_resized) = counts;
    summary.skipped = skipped;
    summary.num_processed = total - resumed;
    summary.elapsed = start.elapsed();
    Ok(summary)
}

/// The settings recorded in the manifest, with the job fingerprint: a 64-bit checksum of the
/// settings and of every input file's relative path, label and size.
fn settings(source: &Source, config: &ConvertConfig, inputs: &Inputs) -> ConvertSettings {
    let source = match source {
        Source::ImageFolder(root) => format!("imagefolder:{}", root.display()),
        Source::List { list, root } => format!("list:{}@{}", list.display(), root.display()),
    };
    let mut settings = ConvertSettings {
        tool: concat!("regioncl-loader ", env!("CARGO_PKG_VERSION")).into(),
        source,
        order: ORDER.into(),
        seed: config.seed,
        max_side: config.max_side,
        quality: config.quality,
        shard_size: config.shard_size,
        max_pixels: config.max_pixels,
        alpha: ALPHA.into(),
        fingerprint: String::new(),
    };
    let mut text = serde_json::to_vec(&settings).unwrap_or_default();
    for name in &inputs.class_names {
        text.extend_from_slice(format!("class\t{name}\n").as_bytes());
    }
    for item in &inputs.items {
        text.extend_from_slice(
            format!("{}\t{}\t{:?}\n", item.rel, item.label, item.size).as_bytes(),
        );
    }
    let lo = crc32c::crc32c(&text);
    let hi = crc32c::crc32c_append(0x5eed_1234, &text);
    settings.fingerprint = format!("{hi:08x}{lo:08x}");
    settings
}

/// Whether `out` holds a finished dataset of this job (filling `summary` from it); an error if
/// it holds one of another job.
fn already_complete(
    out: &Path,
    settings: &ConvertSettings,
    summary: &mut ConvertSummary,
) -> Result<bool> {
    let path = out.join(MANIFEST_FILE);
    if !path.exists() {
        return Ok(false);
    }
    let manifest = Manifest::read(&path)?;
    if manifest.converter != *settings {
        return Err(Error::Config(format!(
            "{} already holds a dataset of other input or settings; remove it or convert into \
             another directory",
            out.display()
        )));
    }
    // Killed after the manifest, before the journal was removed: finish that.
    let journal = out.join(JOURNAL_FILE);
    if journal.exists() {
        fs::remove_file(&journal).map_err(|e| Error::io(&journal, "remove journal", e))?;
    }
    let report_path = out.join(SKIPPED_FILE);
    let report = match read_regular(&report_path, "read report", "report size", MAX_REPORT_BYTES) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        // Written before the manifest; a user may have removed it since.
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            String::new()
        }
        Err(e) => return Err(e),
    };
    summary.skipped = report
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, reason)| *reason != EMPTY_CLASS)
        .map(|(path, reason)| Skipped { path: path.into(), reason: reason.into() })
        .collect();
    summary.num_records = manifest.num_records;
    summary.num_shards = manifest.shards.len();
    summary.num_bytes = manifest.num_bytes;
    summary.already_complete = true;
    Ok(true)
}

/// Refuses an output directory that is the input directory or holds it.
fn check_output_is_not_input(source: &Source, out: &Path) -> Result<()> {
    let root = match source {
        Source::ImageFolder(root) | Source::List { root, .. } => root,
    };
    // Paths that do not resolve (yet) cannot be the same directory.
    let (Ok(root), Ok(resolved)) = (fs::canonicalize(root), fs::canonicalize(out)) else {
        return Ok(());
    };
    if root.starts_with(&resolved) {
        return Err(Error::Config(format!(
            "{}: the output directory is or holds the input directory {}; convert into another \
             directory",
            out.display(),
            root.display()
        )));
    }
    Ok(())
}

/// A directory without journal or manifest may hold only the lock and the journal's temporary
/// file (a start killed while creating the journal), which is removed. Anything else is refused,
/// and nothing is removed.
fn check_fresh(out: &Path) -> Result<()> {
    let journal_tmp = tmp_path(&out.join(JOURNAL_FILE));
    for path in list_dir(out)? {
        if path != journal_tmp && path.file_name().is_none_or(|n| n != LOCK_FILE) {
            return Err(Error::Config(format!(
                "{} is not empty and holds no conversion to resume ({} among others); remove \
                 it or convert into another directory",
                out.display(),
                path.display()
            )));
        }
    }
    remove_if_present(&journal_tmp)
}

/// Keeps the journal's shards whose files are intact; from the first one that is not, the
/// journal is cut and the work redone.
fn keep_published_shards(out: &Path, journal: &mut Journal) -> Result<()> {
    let intact = journal
        .done
        .iter()
        .position(|d| {
            let shard = Shard::open(out.join(&d.shard.file));
            !shard.is_ok_and(|s| {
                s.file_len() == d.shard.num_bytes
                    && s.len() as u64 == d.shard.num_records
                    && s.file_crc32c() == d.shard.crc32c
            })
        })
        .unwrap_or(journal.done.len());
    if intact < journal.done.len() {
        journal.truncate(intact)?;
    }
    Ok(())
}

/// Removes this job's temporary files (the journal's prefix followed by the name of a file the
/// conversion writes) and the shard files past the journal (published, not yet logged). Nothing
/// else is touched.
fn remove_leftovers(out: &Path, journal: &Journal) -> Result<()> {
    let ours = |name: &str| {
        shard_number(name).is_some() || [MANIFEST_FILE, SKIPPED_FILE, JOURNAL_FILE].contains(&name)
    };
    for path in list_dir(out)? {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let temporary = name.strip_prefix(journal.tmp_prefix.as_str()).is_some_and(ours);
        let stale_shard = shard_number(name).is_some_and(|k| k >= journal.done.len());
        if temporary || stale_shard {
            remove_if_present(&path)?;
        }
    }
    Ok(())
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, "read output directory", e))?;
    entries
        .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, "read output directory", e)))
        .collect()
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(path, "remove leftover file", e))
        }
        _ => Ok(()),
    }
}

fn source_name(source: &Source) -> String {
    match source {
        Source::ImageFolder(root) => root.display().to_string(),
        Source::List { list, .. } => list.display().to_string(),
    }
}

const EMPTY_CLASS: &str = "empty class directory: no image file";

/// Writes `skipped.tsv`: a header, then `path<TAB>reason` per skipped file and per empty class
/// (as `class/`). Tabs and newlines inside fields are written as `\t` and `\n`.
fn write_report(out: &Path, skipped: &[Skipped], empty_classes: &[String]) -> Result<()> {
    let escape = |s: &str| s.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n");
    let mut text = String::from("path\treason\n");
    for class in empty_classes {
        text.push_str(&format!("{}/\t{EMPTY_CLASS}\n", escape(class)));
    }
    for s in skipped {
        text.push_str(&format!("{}\t{}\n", escape(&s.path), escape(&s.reason)));
    }
    write_atomic(out.join(SKIPPED_FILE), text.as_bytes())
}
