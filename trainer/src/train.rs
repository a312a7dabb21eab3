//! The training loop: batches from a [`BatchSource`], the method's step, the per-epoch cosine LR,
//! logging, checkpoints, resume, and the stop on a non-finite loss.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::checkpoint::{self, TrainState};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::input::BatchSource;
use crate::method::{MomentumContrast, StepLosses};
use crate::metrics::{LogRecord, MetricsFile};
use crate::runtime::Runtime;
use crate::schedule::cosine_lr;

/// How to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainOptions {
    /// Run directory (checkpoints, metrics.jsonl, config.toml, backbone.safetensors).
    pub run_dir: PathBuf,
    /// Continue from the newest checkpoint in `run_dir` (from step 0 when there is none).
    pub resume: bool,
}

/// What a call to [`train`] did.
#[derive(Debug)]
pub struct TrainSummary {
    /// The step it started at (0, or the resumed checkpoint's).
    pub start_step: u64,
    /// One past the last step it ran.
    pub end_step: u64,
    /// Losses of every step it ran, by global step.
    pub losses: Vec<(u64, StepLosses)>,
    /// The final checkpoint.
    pub checkpoint: Option<PathBuf>,
    /// The checkpoint it resumed from.
    pub resumed_from: Option<PathBuf>,
    /// Where it ran.
    pub runtime: Runtime,
}

/// Keys whose change a resume accepts (they do not alter the computation).
const RESUMABLE_SECTIONS: [&str; 1] = ["run"];

fn check_resumable(saved: &Config, now: &Config) -> Result<()> {
    let (a, b) = (
        toml::Table::try_from(saved).expect("config serialises"),
        toml::Table::try_from(now).expect("config serialises"),
    );
    for (section, va) in &a {
        if RESUMABLE_SECTIONS.contains(&section.as_str()) {
            continue;
        }
        let vb = b.get(section);
        if let (toml::Value::Table(ta), Some(toml::Value::Table(tb))) = (va, vb) {
            for (k, x) in ta {
                if tb.get(k) != Some(x) {
                    return Err(Error::config(
                        format!("{section}.{k}"),
                        format!("differs from the checkpoint ({x} there); a resume must keep it"),
                    ));
                }
            }
        } else if Some(va) != vb {
            return Err(Error::config(
                section,
                format!("differs from the checkpoint ({va} there)"),
            ));
        }
    }
    Ok(())
}

/// Trains `config` on `source` into `opts.run_dir`, calling `on_log` for every logged step.
///
/// # Errors
/// [`Error::NonFinite`] when a loss is NaN or infinite (no checkpoint is written after the last
/// good one); config, I/O, data and libtorch errors.
pub fn train(
    config: &Config,
    source: &mut dyn BatchSource,
    opts: &TrainOptions,
    on_log: &mut dyn FnMut(&LogRecord),
) -> Result<TrainSummary> {
    config.validate()?;
    let rt = Runtime::resolve(&config.run)?;
    let run_dir = opts.run_dir.as_path();
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, "create", e))?;
    write_config(run_dir, config)?;

    let mut model = MomentumContrast::new(config, rt)?;
    let mut sgd = model.optimizer(config);
    let mut start = 0;
    let mut resumed_from = None;
    if opts.resume
        && let Some(dir) = checkpoint::latest(run_dir)?
    {
        check_resumable(&checkpoint::read_state(&dir)?.config, config)?;
        start = checkpoint::load(&dir, &mut model, &sgd)?.step;
        resumed_from = Some(dir);
    }

    let spe = source.steps_per_epoch().max(1);
    let total = config.optim.epochs * spe;
    let end = match config.run.max_steps {
        0 => total,
        n => n.min(total),
    };
    source.seek(start)?;
    let mut metrics = MetricsFile::open(run_dir, start)?;
    let peak = config.peak_lr();
    let batch = config.optim.batch_size as f64;
    let t_run = Instant::now();
    let (mut t_window, mut wait_window, mut steps_window) = (Instant::now(), 0.0f64, 0u64);
    let mut losses = Vec::new();
    let mut checkpoint = None;
    let mut saved_at = None;

    for step in start..end {
        let t_wait = Instant::now();
        let input = source.next_batch()?;
        wait_window += t_wait.elapsed().as_secs_f64();
        if input.step != step {
            return Err(Error::Data(format!(
                "source gave step {} where {step} was due",
                input.step
            )));
        }
        let epoch = step / spe;
        let lr = cosine_lr(peak, epoch, config.optim.epochs);
        let l = model.step(input, &mut sgd, lr)?;
        if !l.is_finite() {
            return Err(Error::NonFinite {
                step,
                epoch,
                loss: l.loss,
                loss_inst: l.loss_inst,
                loss_region: l.loss_region,
            });
        }
        losses.push((step, l));
        steps_window += 1;

        let done = step + 1;
        if done % config.run.log_every == 0 || done == end {
            let dt = t_window.elapsed().as_secs_f64().max(1e-9);
            let record = LogRecord {
                step,
                epoch,
                total_steps: end,
                loss: l.loss,
                loss_inst: l.loss_inst,
                loss_region: l.loss_region,
                lr,
                img_per_s: steps_window as f64 * batch / dt,
                data_wait: (wait_window / dt).min(1.0),
                elapsed_s: t_run.elapsed().as_secs_f64(),
            };
            metrics.write(&record)?;
            on_log(&record);
            (t_window, wait_window, steps_window) = (Instant::now(), 0.0, 0);
        }
        let every = config.run.checkpoint_every;
        if (every > 0 && done % every == 0) || done == end {
            let state = TrainState::new(config, done, spe, Some(l));
            checkpoint =
                Some(checkpoint::save(run_dir, &model, &sgd, &state, config.run.keep_checkpoints)?);
            saved_at = Some(done);
        }
    }
    if end > start && saved_at == Some(end) {
        checkpoint::export_backbone(&model, &run_dir.join("backbone.safetensors"))?;
    }
    Ok(TrainSummary {
        start_step: start,
        end_step: end.max(start),
        losses,
        checkpoint,
        resumed_from,
        runtime: rt,
    })
}

fn write_config(run_dir: &Path, config: &Config) -> Result<()> {
    let path = run_dir.join("config.toml");
    std::fs::write(&path, config.to_toml()).map_err(|e| Error::io(&path, "write", e))
}
