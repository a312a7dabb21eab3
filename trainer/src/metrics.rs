//! What a run reports: a record per logged step (`RUN_DIR/metrics.jsonl`, one JSON object per
//! line) and the human progress line made from it. The online k-NN monitor adds its own lines to
//! the same file ([`crate::KnnRecord`]: `step`, `epoch` and a `knn` array), which
//! [`read_metrics`] skips.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One logged step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// 0-based global step just completed.
    pub step: u64,
    /// 0-based epoch.
    pub epoch: u64,
    /// Steps in the run (its last step is `total_steps - 1`).
    pub total_steps: u64,
    /// Total loss of this step.
    pub loss: f64,
    /// Instance term.
    pub loss_inst: f64,
    /// Region term.
    pub loss_region: f64,
    /// DenseCL's dense term (0 for the other methods; absent in older files).
    #[serde(default)]
    pub loss_dense: f64,
    /// Learning rate of this step.
    pub lr: f64,
    /// Images per second over the steps since the last record.
    pub img_per_s: f64,
    /// Fraction of that time spent waiting for data.
    pub data_wait: f64,
    /// Seconds since the run (or resume) started.
    pub elapsed_s: f64,
    /// Records replaced so far in this process (corrupt or undecodable;
    /// [`crate::BatchSource::replaced`]).
    #[serde(default)]
    pub replaced: u64,
}

impl LogRecord {
    /// `epoch 3 step 1200/250200 loss 19.5312 (inst 9.7712 region 9.7600) lr 0.149800 1534.2 img/s
    /// data-wait 2.1%`.
    pub fn progress_line(&self) -> String {
        // DenseCL's term only where it exists.
        let dense = if self.loss_dense == 0.0 {
            String::new()
        } else {
            format!(" dense {:.4}", self.loss_dense)
        };
        let replaced =
            if self.replaced == 0 { String::new() } else { format!(" replaced {}", self.replaced) };
        format!(
            "epoch {} step {}/{} loss {:.4} (inst {:.4} region {:.4}{dense}) lr {:.6} {:.1} img/s data-wait {:.1}%{replaced}",
            self.epoch,
            self.step + 1,
            self.total_steps,
            self.loss,
            self.loss_inst,
            self.loss_region,
            self.lr,
            self.img_per_s,
            100.0 * self.data_wait
        )
    }
}

/// The step of any line (step or k-NN record).
#[derive(Deserialize)]
struct StepOf {
    step: u64,
}

/// Appends records to `metrics.jsonl`.
#[derive(Debug)]
pub struct MetricsFile {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsFile {
    /// Opens `run_dir/metrics.jsonl` for appending, first dropping records of steps `>= from_step`
    /// (written after the checkpoint a run resumes from).
    ///
    /// # Errors
    /// I/O failures.
    pub fn open(run_dir: &Path, from_step: u64) -> Result<Self> {
        let path = run_dir.join("metrics.jsonl");
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, "read", e))?;
            let kept: String = text
                .lines()
                .filter(|l| serde_json::from_str::<StepOf>(l).is_ok_and(|r| r.step < from_step))
                .map(|l| format!("{l}\n"))
                .collect();
            let tmp = path.with_extension("jsonl.tmp");
            std::fs::write(&tmp, kept).map_err(|e| Error::io(&tmp, "write", e))?;
            std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, "rename", e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, "open", e))?;
        Ok(Self { path, file })
    }

    /// Appends one record (one line, flushed).
    ///
    /// # Errors
    /// I/O failures.
    pub fn write(&mut self, r: &LogRecord) -> Result<()> {
        self.write_line(r)
    }

    /// Appends any record with a `step` field (the k-NN monitor's).
    ///
    /// # Errors
    /// I/O failures.
    pub(crate) fn write_line(&mut self, r: &impl Serialize) -> Result<()> {
        let line = serde_json::to_string(r)
            .map_err(|e| Error::Json { path: self.path.clone(), source: e })?;
        writeln!(self.file, "{line}").map_err(|e| Error::io(&self.path, "write", e))
    }
}

/// Reads every step record of a metrics file (k-NN monitor lines are skipped).
///
/// # Errors
/// I/O failures or a malformed line.
pub fn read_metrics(path: &Path) -> Result<Vec<LogRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
    let json = |e| Error::Json { path: path.to_path_buf(), source: e };
    let mut records = Vec::new();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).map_err(json)?;
        if v.get("knn").is_none() {
            records.push(serde_json::from_value(v).map_err(json)?);
        }
    }
    Ok(records)
}
