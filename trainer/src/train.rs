//! The training loop: batches from a [`BatchSource`], the method's step, the LR schedule,
//! logging, checkpoints, resume, and the stop on a non-finite loss.
//!
//! The run directory is locked while the run trains and is only reused by a resume or an
//! explicit overwrite ([`RunStart`], `run_dir.rs`). A resume takes the newest intact checkpoint:
//! damaged newer ones are skipped and reported ([`TrainEvent::Resumed`]).
//!
//! In a multi-process run ([`Trainer::setup`]) every rank runs this loop on its share of each
//! global batch: rank 0 alone writes the run directory (config, metrics.jsonl, checkpoints, the
//! backbone) and calls the log callback; the other ranks meet it at a barrier after every
//! checkpoint. The model, its queues and the optimiser state are broadcast from rank 0 at the
//! start (after a resume too: rank 0 reads the checkpoint), the gradients are averaged by
//! [`crate::Optimizer`], and the logged losses are the means over the ranks (every rank stops
//! alike on a non-finite one).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::checkpoint::{self, Loaded, TrainState};
use crate::config::Config;
use crate::dist::Dist;
use crate::error::{Error, Result};
use crate::eval::{KnnMonitor, KnnRecord};
use crate::input::BatchSource;
use crate::method::{Pretrainer, Scheduled, StepLosses, build_pretrainer};
use crate::metrics::{LogRecord, MetricsFile};
use crate::optim::Optimizer;
use crate::run_dir::{RunDir, RunStart};
use crate::runtime::Runtime;
use crate::schedule::LrSchedule;
use crate::setup::Setup;
use crate::threads::ThreadGovernor;

/// A checkpoint a resume passed over because it is damaged.
#[derive(Debug)]
pub struct SkippedCheckpoint {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// What is wrong with it ([`Error::Damaged`]).
    pub error: Error,
}

/// What a training reports as it goes (rank 0 only).
#[derive(Debug)]
#[non_exhaustive]
pub enum TrainEvent<'a> {
    /// The run continues from checkpoint `from` at `step`; `skipped` are newer checkpoints that
    /// were damaged.
    Resumed {
        /// The checkpoint directory.
        from: &'a Path,
        /// The step it starts at.
        step: u64,
        /// Damaged newer checkpoints, newest first.
        skipped: &'a [SkippedCheckpoint],
    },
    /// A logged step (also a line of metrics.jsonl).
    Step(&'a LogRecord),
    /// A bad record of the batch of `step` was replaced (reported on every rank: each reads its
    /// own records; rank 0's are counted in [`LogRecord::replaced`]).
    Replaced {
        /// The global step of the batch.
        step: u64,
        /// Its epoch.
        epoch: u64,
        /// The record that failed, why, and the record used instead.
        substitution: &'a regioncl_loader::Substitution,
    },
}

/// What a [`Trainer::run`] did.
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
    /// Damaged checkpoints the resume skipped, newest first.
    pub skipped_checkpoints: Vec<SkippedCheckpoint>,
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

/// The online k-NN monitor with the callback that receives its records.
type Monitor<'a> = (&'a KnnMonitor, Box<dyn FnMut(&KnnRecord) + 'a>);

/// A training run, set up step by step and started by [`Trainer::run`]:
///
/// ```no_run
/// # use regioncl_trainer::{Config, RunStart, SyntheticSource, TrainEvent, Trainer};
/// # fn main() -> regioncl_trainer::Result<()> {
/// # let config = Config::load("configs/tiny_cpu.toml".as_ref(), &[])?;
/// let summary = Trainer::new(&config, "runs/tiny")
///     .start(RunStart::Resume)
///     .on_event(|event| {
///         if let TrainEvent::Step(r) = event {
///             eprintln!("{}", r.progress_line());
///         }
///     })
///     .run(&mut SyntheticSource::new(&config))?;
/// # Ok(()) }
/// ```
///
/// The run directory is locked while it trains; a new run refuses a directory holding another
/// ([`RunStart`]).
#[must_use = "a Trainer does nothing until `run`"]
pub struct Trainer<'a> {
    config: &'a Config,
    setup: Option<&'a Setup>,
    run_dir: PathBuf,
    start: RunStart,
    adapt_threads: bool,
    monitor: Option<Monitor<'a>>,
    on_event: Box<dyn FnMut(&TrainEvent) + 'a>,
}

impl std::fmt::Debug for Trainer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("method", &self.config.method)
            .field("run_dir", &self.run_dir)
            .field("start", &self.start)
            .field("distributed", &self.setup.is_some_and(|s| s.dist.is_distributed()))
            .field("adapt_threads", &self.adapt_threads)
            .field("monitor", &self.monitor.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> Trainer<'a> {
    /// A new run of `config` in `run_dir` (checkpoints, metrics.jsonl, config.toml,
    /// backbone.safetensors), in this process alone, reporting nothing.
    pub fn new(config: &'a Config, run_dir: impl Into<PathBuf>) -> Self {
        Self {
            config,
            setup: None,
            run_dir: run_dir.into(),
            start: RunStart::New,
            adapt_threads: false,
            monitor: None,
            on_event: Box::new(|_| {}),
        }
    }

    /// A new run, a resume, or an overwrite of the run in the run directory (default: new).
    pub fn start(mut self, start: RunStart) -> Self {
        self.start = start;
        self
    }

    /// Runs as one rank of the multi-process run `setup` ([`Setup::join`] under `torchrun` or
    /// `srun`) on the source's share of every global batch ([`crate::Config::batch_split`];
    /// `optim.batch_size` is the global batch). Default: [`Setup::single`].
    ///
    /// Only rank 0 writes into the run directory, runs the monitor and reports events; its
    /// [`TrainSummary`] holds the losses averaged over the ranks, as every rank's does. Every rank
    /// passes the same monitor: rank 0 runs it while the others wait for it without a collective
    /// timeout ([`Dist::on_main`]; the k-NN of a large bank may outlast `run.dist_timeout_s`).
    pub fn setup(mut self, setup: &'a Setup) -> Self {
        self.setup = Some(setup);
        self
    }

    /// With `run.threads = 0` on the CPU, sets libtorch's intra-op threads every few seconds to
    /// the cores other processes leave free (a spinning OpenMP pool sharing its cores collapses to
    /// a quarter of its speed). The count is process-global: the `regioncl` binary turns this on;
    /// a library user running other work in the process, and tests, leave it off (the default).
    pub fn adapt_threads(mut self, on: bool) -> Self {
        self.adapt_threads = on;
        self
    }

    /// The online k-NN monitor (`eval/knn.rs`): at the epochs it is due and after the last step,
    /// a [`KnnRecord`] line in `metrics.jsonl`, also passed to `on_record`.
    pub fn monitor(
        mut self,
        monitor: &'a KnnMonitor,
        on_record: impl FnMut(&KnnRecord) + 'a,
    ) -> Self {
        self.monitor = Some((monitor, Box::new(on_record)));
        self
    }

    /// Called for every logged step and after a resume (on rank 0), and for every replaced bad
    /// record (on the rank that read it).
    pub fn on_event(mut self, on_event: impl FnMut(&TrainEvent) + 'a) -> Self {
        self.on_event = Box::new(on_event);
        self
    }

    /// Trains on `source` (this rank's share of each batch).
    ///
    /// # Errors
    /// [`Error::Loader`] (the loader's `Locked`) when another process trains into the run
    /// directory; [`Error::RunDir`] when a new run finds it holding another; [`Error::NonFinite`]
    /// when a loss is NaN or infinite (no checkpoint is written after the last good one);
    /// [`Error::Dist`] when a peer dies or stalls past the timeout, or when rank 0 failed to
    /// resume (its own error is in its log); config, I/O, data and libtorch errors, and the
    /// monitor's data errors.
    pub fn run(mut self, source: &mut dyn BatchSource) -> Result<TrainSummary> {
        let single;
        let setup = match self.setup {
            Some(setup) => setup,
            None => {
                single = Setup::single(self.config)?;
                &single
            }
        };
        self.train(setup, source)
    }

    fn train(&mut self, setup: &Setup, source: &mut dyn BatchSource) -> Result<TrainSummary> {
        let config = self.config;
        let (rt, dist) = (setup.runtime, &setup.dist);
        let main = dist.is_main();
        let run_dir = self.run_dir.as_path();

        let mut model = build_pretrainer(config, rt)?;
        let mut opt = model.optimizer(config);
        opt.set_dist(dist.clone());
        // Rank 0 holds the run directory's lock until the run ends.
        let (begun, _run_dir) = begin(config, dist, run_dir, self.start, model.as_mut(), &opt)?;
        let start = begun.step;
        if let (true, Some(from)) = (main, &begun.from) {
            (self.on_event)(&TrainEvent::Resumed { from, step: start, skipped: &begun.skipped });
        }

        let spe = source.steps_per_epoch().max(1);
        let total = config.optim.epochs.checked_mul(spe).ok_or_else(|| {
            Error::config("optim.epochs", format!("{} epochs of {spe} steps", config.optim.epochs))
        })?;
        let schedule = LrSchedule::of(config, spe);
        let end = match config.run.max_steps {
            0 => total,
            n => n.min(total),
        };
        source.seek(start)?;
        let mut metrics = if main { Some(MetricsFile::open(run_dir, start)?) } else { None };
        let batch = config.optim.batch_size as f64;
        let t_run = Instant::now();
        let (mut t_window, mut wait_window, mut steps_window) = (Instant::now(), 0.0f64, 0u64);
        let mut losses = Vec::new();
        let mut checkpoint = None;
        let mut saved_at = None;
        // Bad records the source replaced so far in this process (StepInput::substitutions).
        let mut replaced = 0u64;
        let on_cpu = !rt.device.is_cuda();
        let mut governor = (self.adapt_threads && on_cpu && config.run.threads == 0)
            .then(ThreadGovernor::start)
            .flatten();

        for step in start..end {
            let t_wait = Instant::now();
            let input = source.next_batch()?;
            wait_window += t_wait.elapsed().as_secs_f64();
            replaced += input.substitutions.len() as u64;
            for substitution in &input.substitutions {
                let epoch = input.epoch;
                (self.on_event)(&TrainEvent::Replaced { step, epoch, substitution });
            }
            if input.step != step {
                return Err(Error::Data(format!(
                    "source gave step {} where {step} was due",
                    input.step
                )));
            }
            let epoch = step / spe;
            let lr = schedule.at(step, epoch);
            let at = Scheduled { lr, progress: step as f64 / total as f64 };
            let l = mean_over_ranks(dist, model.step(input, &mut opt, at)?)?;
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
            if let Some(governor) = governor.as_mut() {
                governor.tick();
            }

            let done = step + 1;
            if let Some(metrics) = metrics.as_mut()
                && (done % config.run.log_every == 0 || done == end)
            {
                let dt = t_window.elapsed().as_secs_f64().max(1e-9);
                let record = LogRecord {
                    step,
                    epoch,
                    total_steps: end,
                    loss: l.loss,
                    loss_inst: l.loss_inst,
                    loss_region: l.loss_region,
                    loss_dense: l.loss_dense,
                    lr,
                    img_per_s: steps_window as f64 * batch / dt,
                    data_wait: (wait_window / dt).min(1.0),
                    elapsed_s: t_run.elapsed().as_secs_f64(),
                    replaced,
                    threads: if on_cpu {
                        u64::try_from(tch::get_num_threads()).unwrap_or(0)
                    } else {
                        0
                    },
                };
                metrics.write(&record)?;
                (self.on_event)(&TrainEvent::Step(&record));
                (t_window, wait_window, steps_window) = (Instant::now(), 0.0, 0);
            }
            // Online k-NN monitor (eval/knn.rs) on rank 0, the other ranks waiting for it without a
            // collective timeout; its time is kept out of the img/s window.
            if let Some((m, on_knn)) = self.monitor.as_mut()
                && ((done % spe == 0 && m.due(done / spe, config.optim.epochs)) || done == end)
            {
                let t = Instant::now();
                dist.on_main("k-NN monitor", || {
                    let r = m.run(model.online_encoder(), step, epoch)?;
                    if let Some(metrics) = metrics.as_mut() {
                        metrics.write_line(&r)?;
                    }
                    on_knn(&r);
                    Ok(())
                })?;
                t_window += t.elapsed();
            }
            let every = config.run.checkpoint_every;
            if (every > 0 && done % every == 0) || done == end {
                checkpoint = Some(if main {
                    let state = TrainState::new(config, done, spe, Some(l));
                    let keep = config.run.keep_checkpoints;
                    checkpoint::save(run_dir, model.as_ref(), &opt, &state, keep)?
                } else {
                    checkpoint::dir_of(run_dir, done)
                });
                // No rank runs ahead of a checkpoint being written (a restart finds it complete).
                dist.barrier()?;
                saved_at = Some(done);
            }
        }
        if main && end > start && saved_at == Some(end) {
            checkpoint::export_backbone(model.as_ref(), &run_dir.join("backbone.safetensors"))?;
        }
        Ok(TrainSummary {
            start_step: start,
            end_step: end.max(start),
            losses,
            checkpoint,
            resumed_from: begun.from,
            skipped_checkpoints: begun.skipped,
            runtime: rt,
        })
    }
}

/// Where a run starts: step 0, or a checkpoint of its run directory.
#[derive(Debug, Default)]
struct Begun {
    step: u64,
    from: Option<PathBuf>,
    skipped: Vec<SkippedCheckpoint>,
}

/// Rank 0 takes the run directory ([`RunDir::open`]), writes the config and, for a resume, loads
/// the newest intact checkpoint; then every rank's model, queues and optimiser state become rank
/// 0's. Returns where the run starts, and on rank 0 the locked run directory.
fn begin(
    config: &Config,
    dist: &Dist,
    run_dir: &Path,
    start: RunStart,
    model: &mut dyn Pretrainer,
    opt: &Optimizer,
) -> Result<(Begun, Option<RunDir>)> {
    let mut outcome = Ok((Begun::default(), None));
    if dist.is_main() {
        outcome = (|| {
            let dir = RunDir::open(run_dir, start)?;
            write_config(run_dir, config)?;
            let begun = match start {
                RunStart::Resume => resume(config, run_dir, model, opt)?,
                _ => Begun::default(),
            };
            Ok((begun, Some(dir)))
        })();
    }
    if !dist.is_distributed() {
        return outcome;
    }
    // Rank 0's outcome, then its state: [ok, step].
    let (ok, step) = match &outcome {
        Ok((b, _)) => (1, b.step as i64),
        Err(_) => (0, 0),
    };
    let head = tch::Tensor::from_slice(&[ok, step]);
    dist.broadcast_(&[&head], 0)?;
    let (mut begun, dir) = outcome?;
    if head.int64_value(&[0]) == 0 {
        return Err(Error::Dist {
            rank: dist.rank(),
            world: dist.world(),
            op: "start".into(),
            message: "rank 0 could not start or resume the run (its log has the reason)".into(),
        });
    }
    begun.step = head.int64_value(&[1]) as u64;
    let state = model.state_tensors();
    dist.broadcast_(&state.iter().map(|(_, t)| t).collect::<Vec<_>>(), 0)?;
    model.load_state(&state.into_iter().collect())?;
    dist.broadcast_(&opt.state_tensors(), 0)?;
    if begun.from.is_none() && begun.step > 0 {
        begun.from = Some(checkpoint::dir_of(run_dir, begun.step));
    }
    Ok((begun, dir))
}

/// Loads the newest intact checkpoint of `run_dir` into `model` and `opt`, skipping damaged
/// newer ones; step 0 when there is none. A checkpoint of another config is an error, not skipped.
fn resume(
    config: &Config,
    run_dir: &Path,
    model: &mut dyn Pretrainer,
    opt: &Optimizer,
) -> Result<Begun> {
    let mut skipped = Vec::new();
    for (_, dir) in checkpoint::list(run_dir)?.into_iter().rev() {
        let read = checkpoint::read_state(&dir).and_then(|state| {
            check_resumable(&state.config, config)?;
            Loaded::read(&dir, model, opt)
        });
        match read {
            Ok(loaded) => {
                let step = loaded.apply(model, opt)?.step;
                return Ok(Begun { step, from: Some(dir), skipped });
            }
            Err(error @ Error::Damaged { .. }) => skipped.push(SkippedCheckpoint { dir, error }),
            Err(e) => return Err(e),
        }
    }
    if skipped.is_empty() {
        return Ok(Begun::default());
    }
    let reasons: Vec<String> = skipped.iter().map(|s| s.error.to_string()).collect();
    Err(Error::Checkpoint {
        path: run_dir.join("checkpoints"),
        message: format!("no intact checkpoint to resume from: {}", reasons.join("; ")),
    })
}

/// The step's losses averaged over the ranks (each rank's are the means over its share).
fn mean_over_ranks(dist: &Dist, l: StepLosses) -> Result<StepLosses> {
    if !dist.is_distributed() {
        return Ok(l);
    }
    let v = dist.mean_f64(&[l.loss, l.loss_inst, l.loss_region, l.loss_dense])?;
    Ok(StepLosses { loss: v[0], loss_inst: v[1], loss_region: v[2], loss_dense: v[3] })
}

fn write_config(run_dir: &Path, config: &Config) -> Result<()> {
    let path = run_dir.join("config.toml");
    std::fs::write(&path, config.to_toml()).map_err(|e| Error::io(&path, "write", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Method;
    use crate::input::StepInput;
    use crate::method::tests::{TempDir, run, tiny_photos};
    use crate::source::LoaderSource;
    use std::path::PathBuf;

    /// `configs/tiny_cpu.toml` at width 8 on the real photos (`make data`).
    fn tiny(sets: &[&str]) -> Config {
        tiny_photos(Method::RegionClm, sets)
    }

    /// The loss rises while the queue fills with real keys (towards ln(K+1) per term), then falls
    /// as the encoder learns to tell images apart.
    #[test]
    fn loss_falls_on_real_photos() {
        let dir = TempDir::new("falls");
        let config = tiny(&["run.max_steps=60", "run.checkpoint_every=0"]);
        let s = run(&config, &dir.0, false).unwrap();
        let mean = |r: std::ops::Range<usize>| {
            let n = r.len() as f64;
            s.losses[r].iter().map(|(_, l)| l.loss).sum::<f64>() / n
        };
        let (full_queue, end) = (mean(8..20), mean(40..60));
        eprintln!("mean loss: steps 8-19 {full_queue:.4}, steps 40-59 {end:.4}");
        assert!(end < full_queue - 0.3, "loss did not fall: {full_queue} -> {end}");
        let first = s.losses[0].1;
        // docs/method.md 11.3 #3 for K = 256, d = 64: between ln(1 + K e^{sigma^2/2} e^{-1/tau})
        // (positive cosine 1) and ln(K + 1) (collapsed queue), sigma = (1/sqrt(64)) / 0.2.
        let lo = (1.0 + 256.0 * (0.625f64 * 0.625 / 2.0).exp() * (-5f64).exp()).ln();
        assert!(first.loss_inst > lo - 0.1 && first.loss_inst < (257f64).ln() + 0.2, "{first:?}");
        let records = crate::metrics::read_metrics(&dir.0.join("metrics.jsonl")).unwrap().steps;
        assert_eq!(records.len(), 60);
        assert!(records.iter().all(|r| r.img_per_s > 0.0 && (0.0..=1.0).contains(&r.data_wait)));
        assert!(dir.0.join("backbone.safetensors").is_file());
    }

    /// N steps, resume, N more steps = 2N uninterrupted, to the last bit.
    #[test]
    fn resume_is_exact() {
        let (a, b) = (TempDir::new("resume-a"), TempDir::new("resume-b"));
        let full = run(&tiny(&["run.max_steps=6", "run.checkpoint_every=3"]), &a.0, false).unwrap();
        let first =
            run(&tiny(&["run.max_steps=3", "run.checkpoint_every=3"]), &b.0, false).unwrap();
        let second =
            run(&tiny(&["run.max_steps=6", "run.checkpoint_every=3"]), &b.0, true).unwrap();
        assert_eq!(second.start_step, 3);
        assert!(second.resumed_from.is_some());
        let joined: Vec<_> = first.losses.iter().chain(&second.losses).copied().collect();
        assert_eq!(joined.len(), 6);
        for ((sa, la), (sb, lb)) in full.losses.iter().zip(&joined) {
            assert_eq!(sa, sb);
            assert_eq!(la, lb, "step {sa}: {la:?} vs {lb:?}");
        }
        let steps: Vec<u64> = crate::metrics::read_metrics(&b.0.join("metrics.jsonl"))
            .unwrap()
            .steps
            .iter()
            .map(|r| r.step)
            .collect();
        assert_eq!(steps, (0..6).collect::<Vec<_>>());
        // A resume with a changed computation is refused, naming the key.
        let err = run(&tiny(&["run.max_steps=7", "optim.base_lr=0.1"]), &b.0, true).unwrap_err();
        assert!(err.to_string().contains("optim.base_lr"), "{err}");
    }

    /// Issue 12 #18: floats that serde_json without `float_roundtrip` reads back one ulp off
    /// (base_lr 0.050000053430000004 here) come back exactly from state.json: the resume's config
    /// check accepts the run and its learning rates are the uninterrupted run's, bit for bit (the
    /// losses: `checkpoint::tests::state_json_keeps_every_bit_of_the_losses`).
    #[test]
    fn resume_sees_the_saved_floats_bit_for_bit() {
        let lr = "optim.base_lr=0.050000053430000004";
        let (a, b) = (TempDir::new("float-a"), TempDir::new("float-b"));
        run(&tiny(&[lr, "run.max_steps=4", "run.checkpoint_every=2"]), &a.0, false).unwrap();
        run(&tiny(&[lr, "run.max_steps=2", "run.checkpoint_every=2"]), &b.0, false).unwrap();
        let saved = checkpoint::read_state(&checkpoint::latest(&b.0).unwrap().unwrap()).unwrap();
        assert_eq!(saved.config.optim.base_lr.to_bits(), 0.050000053430000004f64.to_bits());
        let second = run(&tiny(&[lr, "run.max_steps=4", "run.checkpoint_every=2"]), &b.0, true);
        assert_eq!(second.unwrap().start_step, 2);
        let lrs = |d: &Path| -> Vec<u64> {
            let records = crate::metrics::read_metrics(&d.join("metrics.jsonl")).unwrap();
            records.steps.iter().map(|r| r.lr.to_bits()).collect()
        };
        assert_eq!(lrs(&a.0), lrs(&b.0));
    }

    /// Issue 12 #10: a damaged newest checkpoint (one flipped bit) makes a resume fall back to the
    /// previous one, say so, and continue exactly; with every checkpoint damaged it is an error.
    #[test]
    fn damaged_newest_checkpoint_falls_back_to_the_previous() {
        let (a, b) = (TempDir::new("damaged-a"), TempDir::new("damaged-b"));
        let cfg = |n: &str| tiny(&[&format!("run.max_steps={n}"), "run.checkpoint_every=3"]);
        let full = run(&cfg("6"), &a.0, false).unwrap();
        run(&cfg("6"), &b.0, false).unwrap();
        let flip = |file: PathBuf| {
            let mut bytes = std::fs::read(&file).unwrap();
            let at = bytes.len() - 100;
            bytes[at] ^= 0x04;
            std::fs::write(&file, bytes).unwrap();
        };
        let newest = checkpoint::dir_of(&b.0, 6);
        flip(newest.join("model.safetensors"));
        let config = cfg("6");
        let mut source = LoaderSource::new(&config).unwrap();
        let mut said = Vec::new();
        let s = Trainer::new(&config, &b.0)
            .start(RunStart::Resume)
            .on_event(|e| {
                if let TrainEvent::Resumed { from, step, skipped } = e {
                    said.push((from.to_path_buf(), *step, skipped.len()));
                }
            })
            .run(&mut source)
            .unwrap();
        assert_eq!(said, [(checkpoint::dir_of(&b.0, 3), 3, 1)]);
        assert_eq!(s.skipped_checkpoints.len(), 1);
        assert_eq!(s.skipped_checkpoints[0].dir, newest);
        assert!(matches!(s.skipped_checkpoints[0].error, Error::Damaged { .. }));
        assert_eq!(s.losses, full.losses[3..], "the resumed steps differ");
        // Both damaged: no silent restart from step 0.
        flip(checkpoint::dir_of(&b.0, 3).join("optimizer.safetensors"));
        flip(newest.join("state.json"));
        let err = run(&config, &b.0, true).unwrap_err();
        assert!(err.to_string().contains("no intact checkpoint to resume from"), "{err}");
    }

    /// A source that poisons one step's colour parameters with NaN.
    struct Poisoned {
        inner: LoaderSource,
        at: u64,
    }

    impl BatchSource for Poisoned {
        fn steps_per_epoch(&self) -> u64 {
            self.inner.steps_per_epoch()
        }
        fn seek(&mut self, step: u64) -> Result<()> {
            self.inner.seek(step)
        }
        fn next_batch(&mut self) -> Result<StepInput> {
            let mut b = self.inner.next_batch()?;
            if b.step == self.at {
                let j = regioncl_augment::ColorJitter {
                    brightness: f32::NAN,
                    ..regioncl_augment::ColorJitter::IDENTITY
                };
                b.params[0][0].jitter = Some(j);
            }
            Ok(b)
        }
    }

    #[test]
    fn non_finite_loss_stops_and_keeps_last_good_checkpoint() {
        let dir = TempDir::new("nan");
        let config = tiny(&["run.max_steps=8", "run.checkpoint_every=2"]);
        let mut source = Poisoned { inner: LoaderSource::new(&config).unwrap(), at: 5 };
        let err = Trainer::new(&config, &dir.0).run(&mut source).unwrap_err();
        assert!(matches!(err, Error::NonFinite { step: 5, .. }), "{err}");
        assert!(err.to_string().contains("non-finite loss at step 5"), "{err}");
        let latest = checkpoint::latest(&dir.0).unwrap().unwrap();
        assert!(latest.ends_with("step-00000004"), "{}", latest.display());
        assert_eq!(checkpoint::read_state(&latest).unwrap().step, 4);
    }
}
