//! What a run reports: a record per logged step (`RUN_DIR/metrics.jsonl`, one JSON object per
//! line) and the human progress line made from it. The online k-NN monitor adds its own lines to
//! the same file ([`KnnRecord`]: `step`, `epoch` and a `knn` array). [`read_metrics`] reads both
//! kinds back as typed records.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::KnnRecord;

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
    /// Records replaced so far in this process (corrupt or undecodable; the steps'
    /// [`crate::StepInput::substitutions`]).
    #[serde(default)]
    pub replaced: u64,
    /// libtorch's intra-op threads at the end of the window on the CPU (0: on CUDA, or absent in
    /// older files); `regioncl train` adapts them to the machine's load (`run.threads = 0`).
    #[serde(default)]
    pub threads: u64,
}

impl LogRecord {
    /// Every loss term of the record under its field name: the total, then the instance, region
    /// and dense terms.
    pub fn loss_terms(&self) -> [(&'static str, f64); 4] {
        [
            ("loss", self.loss),
            ("loss_inst", self.loss_inst),
            ("loss_region", self.loss_region),
            ("loss_dense", self.loss_dense),
        ]
    }

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
        let threads =
            if self.threads == 0 { String::new() } else { format!(" threads {}", self.threads) };
        format!(
            "epoch {} step {}/{} loss {:.4} (inst {:.4} region {:.4}{dense}) lr {:.6} {:.1} img/s data-wait {:.1}%{threads}{replaced}",
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

/// Everything a run logged in its `metrics.jsonl`, as typed records.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunLog {
    /// The step records, in file order.
    pub steps: Vec<LogRecord>,
    /// The online k-NN monitor's records, in file order.
    pub knn: Vec<KnnRecord>,
    /// The 1-based number of a last line that was cut off mid-write (the normal state of a file
    /// whose run was killed), which was skipped.
    pub torn_last_line: Option<usize>,
}

impl RunLog {
    /// The run's loss curves, `(term, [(step, value)])`, one per term it logged, in
    /// [`LogRecord::loss_terms`] order. A term that is 0 at every step is one the method does not
    /// compute (the base methods' region term, the dense term outside DenseCL and RegionCL-D) and
    /// is left out.
    pub fn loss_curves(&self) -> Vec<(&'static str, Vec<(u64, f64)>)> {
        let Some(first) = self.steps.first() else { return Vec::new() };
        let names = first.loss_terms().map(|(name, _)| name);
        names
            .into_iter()
            .enumerate()
            .map(|(t, name)| {
                let points: Vec<(u64, f64)> =
                    self.steps.iter().map(|r| (r.step, r.loss_terms()[t].1)).collect();
                (name, points)
            })
            .filter(|(_, points)| points.iter().any(|&(_, v)| v != 0.0))
            .collect()
    }
}

/// Reads a metrics file: every step record and k-NN record. A last line that is not complete (no
/// final newline) and does not parse is skipped and reported in [`RunLog::torn_last_line`].
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::JsonLine`] naming the line for any other
/// line that is not a record.
pub fn read_metrics(path: &Path) -> Result<RunLog> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
    let mut log = RunLog::default();
    let lines: Vec<&str> = text.split('\n').collect();
    for (i, line) in lines.iter().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |source| Error::JsonLine { path: path.to_path_buf(), line: i + 1, source };
        let parsed = serde_json::from_str::<serde_json::Value>(line).and_then(|v| {
            if v.get("knn").is_some() {
                serde_json::from_value(v).map(|r| log.knn.push(r))
            } else {
                serde_json::from_value(v).map(|r| log.steps.push(r))
            }
        });
        match parsed {
            // The last element of the split is what follows the final newline: a torn write.
            Err(_) if i + 1 == lines.len() => log.torn_last_line = Some(i + 1),
            other => other.map_err(bad)?,
        }
    }
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: u64) -> String {
        let r = LogRecord {
            step,
            epoch: 0,
            total_steps: 4,
            loss: 19.5,
            loss_inst: 9.75,
            loss_region: 0.0,
            loss_dense: 9.75,
            lr: 0.1,
            img_per_s: 100.0,
            data_wait: 0.01,
            elapsed_s: 1.0,
            replaced: 0,
            threads: 2,
        };
        serde_json::to_string(&r).unwrap()
    }

    fn read(name: &str, text: &str) -> Result<RunLog> {
        let path =
            std::env::temp_dir().join(format!("regioncl-metrics-{name}-{}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let log = read_metrics(&path);
        std::fs::remove_file(&path).unwrap();
        log
    }

    /// Issue 12 #14: a torn last line (a run killed mid-write) made the whole file unreadable. It
    /// is skipped and reported; a bad line anywhere else is an error naming its line.
    #[test]
    fn torn_last_line_is_skipped_and_reported() {
        let knn = r#"{"step":1,"epoch":0,"temperature":0.07,"knn":[],"eval_s":0.5}"#;
        let whole = format!("{}\n{knn}\n{}\n", record(0), record(1));
        let torn = format!("{whole}{}", &record(2)[..20]);
        let log = read("torn", &torn).unwrap();
        assert_eq!((log.steps.len(), log.knn.len(), log.torn_last_line), (2, 1, Some(4)));
        assert_eq!(log.steps[1].step, 1);
        assert_eq!(read("whole", &whole).unwrap().torn_last_line, None);
        let unterminated = format!("{whole}{}", record(2));
        assert_eq!(read("unterminated", &unterminated).unwrap().steps.len(), 3);
        let err = read("middle", &format!("{}\n{{oops\n{}\n", record(0), record(1))).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        assert_eq!(read("empty", "").unwrap(), RunLog::default());
    }

    /// Issue 13: `regioncl plot` dropped DenseCL's dense term. Every term a run computes is a
    /// curve; one that is 0 throughout (here the region term of DenseCL) is not.
    #[test]
    fn loss_curves_are_the_terms_the_run_logged() {
        let log = read("curves", &format!("{}\n{}\n", record(0), record(1))).unwrap();
        let curves = log.loss_curves();
        let names: Vec<&str> = curves.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["loss", "loss_inst", "loss_dense"]);
        assert_eq!(curves[2].1, [(0, 9.75), (1, 9.75)]);
        assert!(RunLog::default().loss_curves().is_empty());
    }
}
