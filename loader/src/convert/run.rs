//! One conversion from start (or resume point) to manifest.

use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::convert::journal::{JOURNAL_FILE, Journal, ShardDone};
use crate::convert::scan::{Inputs, permutation, scan};
use crate::convert::transcode::{Action, Prepared, Recipe};
use crate::convert::{
    ConvertConfig, ConvertSummary, Progress, SKIPPED_FILE, Skipped, Source, pipeline,
};
use crate::error::{Error, Result};
use crate::fsutil::{sync_parent, write_atomic};
use crate::manifest::{ConvertSettings, DATASET_FORMAT, DATASET_VERSION, MANIFEST_FILE, Manifest};
use crate::shard::format::ENTRY_LEN;
use crate::shard::reader::Shard;
use crate::shard::writer::ShardWriter;

const ORDER: &str = "fisher-yates shuffle (splitmix64, seed) of the files sorted by relative path";
const ALPHA: &str = "composited onto white";

pub(crate) fn convert(
    source: &Source,
    out: &Path,
    config: &ConvertConfig,
    progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<ConvertSummary> {
    let start = Instant::now();
    let inputs = scan(source, out)?;
    let settings = settings(source, config, &inputs);
    fs::create_dir_all(out).map_err(|e| Error::io(out, "create output directory", e))?;
    let mut summary = ConvertSummary {
        num_classes: inputs.class_names.len(),
        empty_classes: inputs.empty_classes.clone(),
        num_ignored: inputs.num_ignored,
        ..Default::default()
    };
    if let Some(done) = already_complete(out, &settings, &mut summary)? {
        summary.elapsed = start.elapsed();
        return Ok(done);
    }
    let mut journal = match Journal::open(out, &settings.fingerprint)? {
        Some(journal) => journal,
        None => {
            check_fresh(out)?;
            Journal::create(out, &settings.fingerprint)?
        }
    };
    keep_published_shards(out, &mut journal)?;
    remove_leftovers(out, journal.done.len())?;

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

/// If `out` holds a finished dataset: the summary of it when it is this job's, an error if not.
fn already_complete(
    out: &Path,
    settings: &ConvertSettings,
    summary: &mut ConvertSummary,
) -> Result<Option<ConvertSummary>> {
    let path = out.join(MANIFEST_FILE);
    if !path.exists() {
        return Ok(None);
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
    let report = fs::read_to_string(out.join(SKIPPED_FILE)).unwrap_or_default();
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
    Ok(Some(summary.clone()))
}

/// A directory without journal or manifest may only hold temporary files of an interrupted start.
fn check_fresh(out: &Path) -> Result<()> {
    for entry in fs::read_dir(out).map_err(|e| Error::io(out, "read output directory", e))? {
        let path = entry.map_err(|e| Error::io(out, "read output directory", e))?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            fs::remove_file(&path).map_err(|e| Error::io(&path, "remove temporary file", e))?;
        } else {
            return Err(Error::Config(format!(
                "{} is not empty and holds no conversion to resume; remove it or convert into \
                 another directory",
                out.display()
            )));
        }
    }
    Ok(())
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

/// Removes temporary files and shard files past the journal (published, not yet logged).
fn remove_leftovers(out: &Path, num_done: usize) -> Result<()> {
    for entry in fs::read_dir(out).map_err(|e| Error::io(out, "read output directory", e))? {
        let path = entry.map_err(|e| Error::io(out, "read output directory", e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let stale_shard = shard_number(name).is_some_and(|k| k >= num_done);
        if name.ends_with(".tmp") || stale_shard {
            fs::remove_file(&path).map_err(|e| Error::io(&path, "remove stale file", e))?;
        }
    }
    Ok(())
}

fn shard_name(k: usize) -> String {
    format!("shard-{k:05}.rcl")
}

fn shard_number(name: &str) -> Option<usize> {
    name.strip_prefix("shard-")?.strip_suffix(".rcl")?.parse().ok()
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
    write_atomic(&out.join(SKIPPED_FILE), text.as_bytes())
}

/// Fills shards in record order and logs each finished one in the journal.
struct Assembler<'j> {
    out: PathBuf,
    shard_size: u64,
    journal: &'j mut Journal,
    writer: Option<ShardWriter>,
    shards: Vec<crate::manifest::ShardInfo>,
    /// First position not yet covered by a published shard.
    next: u64,
    skipped: Vec<Skipped>,
    /// How many entries of `skipped` are logged already.
    skipped_logged: usize,
    /// Bytes of the published shards.
    published: u64,
    stored: u64,
    converted: u64,
    resized: u64,
    /// Counts of the open shard.
    open: (u64, u64, u64),
}

impl<'j> Assembler<'j> {
    fn new(out: &Path, shard_size: u64, journal: &'j mut Journal) -> Self {
        let mut asm = Assembler {
            out: out.to_path_buf(),
            shard_size,
            writer: None,
            shards: Vec::new(),
            next: 0,
            skipped: Vec::new(),
            skipped_logged: 0,
            published: 0,
            stored: 0,
            converted: 0,
            resized: 0,
            open: (0, 0, 0),
            journal,
        };
        for done in &asm.journal.done {
            asm.shards.push(done.shard.clone());
            asm.next = done.next;
            asm.published += done.shard.num_bytes;
            asm.stored += done.stored;
            asm.converted += done.converted;
            asm.resized += done.resized;
            asm.skipped.extend(
                done.skipped.iter().map(|(p, r)| Skipped { path: p.clone(), reason: r.clone() }),
            );
        }
        asm.skipped_logged = asm.skipped.len();
        asm
    }

    /// Bytes written so far: published shards and the open one.
    fn bytes(&self) -> u64 {
        self.published + self.writer.as_ref().map_or(0, |w| w.file_len())
    }

    fn push(&mut self, pos: u64, label: u32, p: Prepared) -> Result<()> {
        let len = p.bytes.len() as u64;
        let full = self
            .writer
            .as_ref()
            .is_some_and(|w| !w.is_empty() && w.file_len() + len + ENTRY_LEN > self.shard_size);
        if full {
            self.close_shard(pos)?;
        }
        if self.writer.is_none() {
            self.writer = Some(ShardWriter::create(self.out.join(shard_name(self.shards.len())))?);
        }
        if let Some(w) = &mut self.writer {
            w.push(&p.bytes, label, p.width, p.height)?;
        }
        match p.action {
            Action::Stored => self.open.0 += 1,
            Action::Converted => self.open.1 += 1,
            Action::Resized => self.open.2 += 1,
        }
        Ok(())
    }

    /// Publishes the open shard (if any) and logs it; `next` is the first position after it.
    fn close_shard(&mut self, next: u64) -> Result<()> {
        let Some(writer) = self.writer.take() else { return Ok(()) };
        let info = writer.finish()?;
        let (stored, converted, resized) = std::mem::take(&mut self.open);
        self.stored += stored;
        self.converted += converted;
        self.resized += resized;
        let skipped = self.skipped[self.skipped_logged..]
            .iter()
            .map(|s| (s.path.clone(), s.reason.clone()))
            .collect();
        self.skipped_logged = self.skipped.len();
        self.journal.append(ShardDone {
            shard: info.clone(),
            next,
            stored,
            converted,
            resized,
            skipped,
        })?;
        self.published += info.num_bytes;
        self.shards.push(info);
        self.next = next;
        let _ = sync_parent(&self.out);
        Ok(())
    }
}
