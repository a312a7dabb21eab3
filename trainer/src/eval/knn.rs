//! Weighted k-NN classification of L2-normalised features (docs/method.md 9.1; InstDisc, the MoCo
//! CIFAR demo's `knn_predict`): every test feature `x` is compared with the whole train bank by
//! cosine similarity, its k most similar train samples vote for their labels with weight
//! `exp(sim / T)`, and the class with the largest total is the prediction (top-5: the five largest totals).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::data::{EvalSet, EvalView};
use super::features::{FeatureSource, Features, encode, pixel_features};
use crate::error::{Error, Result};
use crate::model::Encoder;

/// k-NN settings.
#[derive(Clone, Debug, PartialEq)]
pub struct KnnConfig {
    /// Neighbour counts, each evaluated (InstDisc / DINO practice: 20 and 200).
    pub ks: Vec<usize>,
    /// Temperature `T` of the vote weights `exp(sim / T)`.
    pub temperature: f64,
    /// Test rows per similarity block (`chunk x N_train` floats at a time).
    pub chunk: i64,
}

impl Default for KnnConfig {
    fn default() -> Self {
        Self { ks: vec![20, 200], temperature: 0.07, chunk: 256 }
    }
}

/// Accuracy at one `k`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnnAccuracy {
    /// Neighbours.
    pub k: usize,
    /// Top-1 accuracy in `[0, 1]`.
    pub top1: f64,
    /// Top-5 accuracy in `[0, 1]` (1.0 with five classes or fewer).
    pub top5: f64,
}

/// Weighted k-NN accuracy of `test` against the bank `train` (both normalised here).
///
/// # Shapes
/// `train.values: [N, D]`, `test.values: [M, D]`; labels in `0..num_classes`.
///
/// # Errors
/// [`Error::Input`] for empty sets, different feature dimensions, an empty `ks` or a label out of
/// range; libtorch failures.
pub fn knn_accuracy(
    train: &Features,
    test: &Features,
    num_classes: usize,
    config: &KnnConfig,
) -> Result<Vec<KnnAccuracy>> {
    if train.is_empty() || test.is_empty() || train.dim() != test.dim() {
        return Err(Error::Input(format!(
            "knn: bank {:?} and queries {:?}",
            train.values.size(),
            test.values.size()
        )));
    }
    if config.ks.is_empty()
        || config.ks.contains(&0)
        || config.temperature.is_nan()
        || config.temperature <= 0.0
    {
        return Err(Error::Input(format!("knn: ks {:?}, T {}", config.ks, config.temperature)));
    }
    let c = num_classes as i64;
    for l in [&train.labels, &test.labels] {
        let (lo, hi) = (l.min().int64_value(&[]), l.max().int64_value(&[]));
        if lo < 0 || hi >= c {
            return Err(Error::Input(format!("knn: labels {lo}..={hi} for {c} classes")));
        }
    }
    tch::no_grad(|| {
        let bank = train.normalized(); // [N, D]
        let queries = test.normalized(); // [M, D]
        let n = bank.len();
        let kmax = config.ks.iter().copied().max().unwrap_or(1).min(n as usize) as i64;
        let bank_t = bank.values.tr().contiguous(); // [D, N]
        let mut correct = vec![(0i64, 0i64); config.ks.len()];
        let m = queries.len();
        let top = 5.min(c);
        let mut start = 0;
        while start < m {
            let len = config.chunk.max(1).min(m - start);
            let q = queries.values.narrow(0, start, len); // [C, D]
            let y = queries.labels.narrow(0, start, len); // [C]
            let sim = q.mm(&bank_t); // [C, N]
            let (sim_top, idx) = sim.topk(kmax, 1, true, true); // [C, kmax]
            let nl = bank.labels.index_select(0, &idx.flatten(0, -1)).view([len, kmax]); // [C, kmax]
            for (j, &k) in config.ks.iter().enumerate() {
                let k = (k as i64).min(n);
                let w = (sim_top.narrow(1, 0, k) / config.temperature).exp(); // [C, k]
                let scores = Tensor::zeros([len, c], (Kind::Float, Device::Cpu)).scatter_add(
                    1,
                    &nl.narrow(1, 0, k),
                    &w,
                ); // [C, classes]
                let (_, pred) = scores.topk(top, 1, true, true); // [C, top]
                let hits = pred.eq_tensor(&y.unsqueeze(1)); // [C, top]
                correct[j].0 += hits.select(1, 0).sum(Kind::Int64).int64_value(&[]);
                correct[j].1 += hits.any_dim(1, false).sum(Kind::Int64).int64_value(&[]);
            }
            start += len;
        }
        Ok(config
            .ks
            .iter()
            .zip(correct)
            .map(|(&k, (c1, c5))| KnnAccuracy {
                k,
                top1: c1 as f64 / m as f64,
                top5: c5 as f64 / m as f64,
            })
            .collect())
    })
}

/// One k-NN measurement during training, a line of `metrics.jsonl` (told apart from the step
/// records by its `knn` field).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KnnRecord {
    /// The last completed global step.
    pub step: u64,
    /// The epoch just completed (0-based).
    pub epoch: u64,
    /// Temperature.
    pub temperature: f64,
    /// Accuracy per k.
    pub knn: Vec<KnnAccuracy>,
    /// Seconds the measurement took.
    pub eval_s: f64,
}

/// The online k-NN monitor: every `every` epochs, the query encoder's pooled features of a labeled
/// train set (the bank) and test set, the [`knn_accuracy`] of the test set.
#[derive(Clone, Debug)]
pub struct KnnMonitor {
    /// The bank.
    pub train: EvalSet,
    /// The queries.
    pub test: EvalSet,
    /// Evaluation view.
    pub view: EvalView,
    /// k and T.
    pub config: KnnConfig,
    /// Feature source.
    pub source: FeatureSource,
    /// Run every this many epochs (and after the last one).
    pub every: u64,
    /// Images per forward.
    pub batch: usize,
    /// Loader workers (0 = every core).
    pub threads: usize,
}

impl KnnMonitor {
    /// A monitor over the datasets at `train` and `test`, with the defaults: pooled backbone
    /// features, k = 20 and 200, T = 0.07, batches of 256.
    ///
    /// # Errors
    /// The datasets cannot be opened or label different classes.
    pub fn new(
        train: &std::path::Path,
        test: &std::path::Path,
        view: EvalView,
        every: u64,
    ) -> Result<Self> {
        let (train, test) = (EvalSet::open(train)?, EvalSet::open(test)?);
        train.check_same_classes(&test)?;
        Ok(Self {
            train,
            test,
            view,
            config: KnnConfig::default(),
            source: FeatureSource::Backbone,
            every: every.max(1),
            batch: 256,
            threads: 0,
        })
    }

    /// Whether to measure after `epochs_done` of `total` epochs.
    pub fn due(&self, epochs_done: u64, total: u64) -> bool {
        epochs_done > 0 && (epochs_done.is_multiple_of(self.every) || epochs_done == total)
    }

    /// Measures `encoder` (in evaluation mode: its BN running statistics are read, not updated).
    ///
    /// # Errors
    /// Data and libtorch errors.
    pub fn run(&self, encoder: &Encoder, step: u64, epoch: u64) -> Result<KnnRecord> {
        let t0 = Instant::now();
        let bank = encode(encoder, self.source, &self.train, self.view, self.batch, self.threads)?;
        let queries =
            encode(encoder, self.source, &self.test, self.view, self.batch, self.threads)?;
        let knn = knn_accuracy(&bank, &queries, self.train.num_classes(), &self.config)?;
        Ok(KnnRecord {
            step,
            epoch,
            temperature: self.config.temperature,
            knn,
            eval_s: t0.elapsed().as_secs_f64(),
        })
    }

    /// The raw-pixel baseline on the same split, k and T.
    ///
    /// # Errors
    /// As [`KnnMonitor::run`].
    pub fn pixels(&self) -> Result<Vec<KnnAccuracy>> {
        let bank = pixel_features(&self.train, self.view, self.batch, self.threads)?;
        let queries = pixel_features(&self.test, self.view, self.batch, self.threads)?;
        knn_accuracy(&bank, &queries, self.train.num_classes(), &self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(rows: &[[f32; 2]], labels: &[i64]) -> Features {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Features {
            values: Tensor::from_slice(&flat).view([rows.len() as i64, 2]),
            labels: Tensor::from_slice(labels),
        }
    }

    /// A hand-computed vote: with k = 3 the two class-1 neighbours at 60 and 80 degrees outvote
    /// the class-0 neighbour at 0 degrees at T = 1 (e^0.5 + e^0.17 > e^1) but not at T = 0.1.
    #[test]
    fn weighted_vote_by_hand() {
        let deg = |d: f32| [d.to_radians().cos(), d.to_radians().sin()];
        let train = features(&[deg(0.0), deg(60.0), deg(80.0), deg(180.0)], &[0, 1, 1, 2]);
        let test = features(&[deg(0.0)], &[1]);
        let at = |t: f64, k: usize| {
            let cfg = KnnConfig { ks: vec![k], temperature: t, chunk: 1 };
            knn_accuracy(&train, &test, 3, &cfg).unwrap()[0]
        };
        assert_eq!(at(1.0, 3).top1, 1.0);
        assert_eq!(at(0.1, 3).top1, 0.0);
        assert_eq!(at(1.0, 1).top1, 0.0, "k = 1: the nearest is class 0");
        assert_eq!(at(1.0, 1).top5, 1.0, "three classes: top-5 always hits");
        // k beyond the bank is clamped to the bank.
        assert_eq!(at(1.0, 500).k, 500);
    }

    /// Two well separated clusters are classified perfectly, whatever the chunking; labels out of
    /// range are refused.
    #[test]
    fn clusters_and_errors() {
        tch::manual_seed(0);
        let centre = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        let make = |n: i64| {
            let labels = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(2);
            let values = centre.index_select(0, &labels)
                + Tensor::randn([n, 2], (Kind::Float, Device::Cpu)) * 0.05;
            Features { values, labels }
        };
        let (train, test) = (make(100), make(37));
        for chunk in [1, 5, 1000] {
            let cfg = KnnConfig { ks: vec![1, 20, 200], temperature: 0.07, chunk };
            for a in knn_accuracy(&train, &test, 2, &cfg).unwrap() {
                assert_eq!((a.top1, a.top5), (1.0, 1.0), "{a:?}");
            }
        }
        assert!(knn_accuracy(&train, &test, 1, &KnnConfig::default()).is_err());
        let cfg = KnnConfig { ks: vec![], ..KnnConfig::default() };
        assert!(knn_accuracy(&train, &test, 2, &cfg).is_err());
    }
}
