//! The training configuration, plain data at the bottom of the trainer's import graph: a serde
//! struct loaded from a TOML file in `configs/`, with `--set key=value` overrides (dotted keys).
//! Unknown keys, values of the wrong type and values out of range are errors that name the key.
//! The resolved config is saved in every checkpoint.
//!
//! - the schema: [`Config`] here, what is trained in `method.rs`, how it is optimised in
//!   `optim.rs`, where and how it runs in `run.rs`;
//! - the overrides and key checks: `overrides.rs`;
//! - the value checks, with the bounds on every size (`MAX_*`): `validate.rs`, and
//!   [`Config::batch_split`], the one rule that splits the global batch over the processes of a
//!   run and into BN groups.
//!
//! What a run derives from the config and the machine (device, precision, the batch split, the
//! peak learning rate) is resolved once, by [`crate::Setup`].

mod method;
mod optim;
mod overrides;
mod run;
mod validate;

pub use method::{
    Arch, DenseClConfig, InitScheme, Method, MobyConfig, MocoConfig, ModelConfig, RegionConfig,
    RegionTerms, SimSiamConfig, SplitBnImpl, Stem, SwapSampler,
};
pub use optim::{LrScaling, LrUpdate, OptimConfig, OptimizerKind};
pub use run::{
    AugmentConfig, DataConfig, DataSource, DeviceChoice, DistBackend, Precision, RunConfig,
};

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Method.
    pub method: Method,
    /// Seed of every random draw (model init, queue init, key shuffles, data plans).
    pub seed: u64,
    /// Networks.
    pub model: ModelConfig,
    /// Momentum encoder, queue, contrastive head, BN emulation.
    pub moco: MocoConfig,
    /// Region swapping (the RegionCL variants).
    pub region: RegionConfig,
    /// DenseCL and RegionCL-D.
    pub densecl: DenseClConfig,
    /// SimSiam and RegionCL-S.
    pub simsiam: SimSiamConfig,
    /// MoBY and RegionCL+MoBY.
    pub moby: MobyConfig,
    /// Optimiser and schedule.
    pub optim: OptimConfig,
    /// Input data.
    pub data: DataConfig,
    /// View augmentation (used by the trainer's own sources; the loader takes it over).
    pub augment: AugmentConfig,
    /// Device, precision, logging and checkpoints.
    pub run: RunConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            method: Method::RegionClm,
            seed: 0,
            model: ModelConfig::default(),
            moco: MocoConfig::default(),
            region: RegionConfig::default(),
            densecl: DenseClConfig::default(),
            simsiam: SimSiamConfig::default(),
            moby: MobyConfig::default(),
            optim: OptimConfig::default(),
            data: DataConfig::default(),
            augment: AugmentConfig::default(),
            run: RunConfig::default(),
        }
    }
}

/// How one process of a run of `world` processes takes its share of every global batch, and how
/// that share is split into BN groups ([`Config::batch_split`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSplit {
    /// This process's rank, `0..world`.
    pub rank: usize,
    /// The number of processes.
    pub world: usize,
    /// The global batch (`optim.batch_size`): what one step consumes, and what the queues advance
    /// by.
    pub global: i64,
    /// This rank's share: the `rank`-th contiguous `global / world` samples of each global batch.
    pub rank_batch: i64,
    /// BN groups of the rank's share: contiguous chunks of `rank_batch / groups` samples, each
    /// normalised with its own batch statistics (one chunk = one virtual GPU), the RegionCL pairing
    /// reversed inside each.
    pub groups: i64,
    /// One BN group over every rank's samples (SyncBN): SimSiam, MoBY, or `moco.bn_splits = 1`, on
    /// more than one process.
    pub sync: bool,
}

impl BatchSplit {
    /// The whole batch of `config` on one process.
    ///
    /// # Errors
    /// As [`Config::batch_split`].
    pub fn whole(config: &Config) -> Result<Self> {
        config.batch_split(0, 1)
    }
}

impl Config {
    /// Reads a TOML file and applies `key=value` overrides, then validates.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::ConfigFile`] naming the file, whose
    /// source is the [`Error::Config`] naming the key of an unknown key, a value of the wrong type
    /// or out of range (no key for a syntax error).
    pub fn load(path: &Path, sets: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "read", e))?;
        Self::from_toml(&text, sets)
            .map_err(|e| Error::ConfigFile { path: path.to_path_buf(), source: Box::new(e) })
    }

    /// Parses TOML text, applies overrides, validates.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml(text: &str, sets: &[String]) -> Result<Self> {
        let config = overrides::parse(text, sets)?;
        config.validate()?;
        Ok(config)
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serialises")
    }

    /// Which region terms are on (none for the base methods; RegionCL-S has no negatives).
    pub fn region_terms(&self) -> RegionTerms {
        if !self.method.has_region() {
            return RegionTerms::NONE;
        }
        RegionTerms {
            paste: self.region.paste,
            canvas: self.region.canvas,
            negative: self.region.negative && self.method.uses_queue(),
        }
    }

    /// The batch / BN-group rule: rank `rank` of `world` processes takes `optim.batch_size / world`
    /// samples of every global batch, and normalises them in BN groups. `moco.bn_splits` counts BN
    /// groups of the **global** batch for the momentum methods (the per-GPU BN of the official
    /// runs, emulated by split BN on one device), so a config means the same on any number of
    /// processes: a rank holds `bn_splits / world` groups (one = plain per-GPU BN), and
    /// `bn_splits = 1` is SyncBN over every rank's samples. SimSiam and MoBY always use one group
    /// (SyncBN, as their official code).
    /// With the region branch on, every group must hold an even number of samples for the pairing.
    ///
    /// # Errors
    /// [`Error::Config`] naming `optim.batch_size` when the world does not divide it, and
    /// `moco.bn_splits` when the groups do not divide the batch, do not spread over the ranks, or
    /// are odd while the region branch pairs their samples; `RANK` for a rank outside the world.
    pub fn batch_split(&self, rank: usize, world: usize) -> Result<BatchSplit> {
        let (global, w) = (self.optim.batch_size, world.max(1) as i64);
        if rank >= world.max(1) {
            return Err(Error::config("RANK", format!("rank {rank} is not in a world of {w}")));
        }
        if global % w != 0 {
            return Err(Error::config(
                "optim.batch_size",
                format!(
                    "{global} (the global batch) is not divisible by the {w} processes of the run"
                ),
            ));
        }
        let rank_batch = global / w;
        let g = match self.method {
            Method::SimSiam | Method::RegionCls | Method::Moby | Method::RegionClMoby => 1,
            _ => self.moco.bn_splits,
        };
        if g < 1 || global % g != 0 {
            return Err(Error::config(
                "moco.bn_splits",
                format!("{g} must divide optim.batch_size {global}"),
            ));
        }
        let (groups, sync) = match g {
            _ if w == 1 => (g, false),
            1 => (1, true),
            _ if g % w == 0 => (g / w, false),
            _ => {
                return Err(Error::config(
                    "moco.bn_splits",
                    format!(
                        "{g} BN groups cannot be spread over {w} processes: use 1 (SyncBN) or a \
                         multiple of {w}"
                    ),
                ));
            }
        };
        if self.region_terms().any() && (rank_batch % groups != 0 || (rank_batch / groups) % 2 != 0)
        {
            return Err(Error::config(
                "moco.bn_splits",
                format!(
                    "each rank's batch of {rank_batch} must split into {groups} BN groups of an \
                     even size for the pairing"
                ),
            ));
        }
        Ok(BatchSplit { rank, world: world.max(1), global, rank_batch, groups, sync })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every recipe in `configs/` loads, and the ImageNet ones (ResNet-50, Swin-T, ViT-S/16)
    /// spread over 8 GPUs (one BN group, 1 / 8 of the global batch, per rank).
    #[test]
    fn recipes_load_and_spread_over_8_ranks() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let c = Config::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
            if path.to_string_lossy().contains("_imagenet") {
                assert_eq!(c.run.dist_backend, DistBackend::Auto, "{}", path.display());
                let split = c.batch_split(3, 8).unwrap();
                assert_eq!(split.rank_batch, c.optim.batch_size / 8);
                assert_eq!(split.groups, 1, "{}", path.display());
            }
        }
        assert!(n >= 13, "{n} recipes");
    }

    /// The world must divide the global batch and its BN groups; the errors name the key.
    #[test]
    fn batch_split_names_the_key() {
        let c = Config::from_toml("", &[]).unwrap(); // batch 1024 in 8 groups
        let groups = |c: &Config, world| c.batch_split(0, world).map(|s| (s.groups, s.sync));
        assert_eq!((groups(&c, 1).unwrap(), groups(&c, 2).unwrap()), ((8, false), (4, false)));
        assert_eq!(c.batch_split(1, 2).unwrap().rank_batch, 512);
        assert!(c.batch_split(0, 3).unwrap_err().to_string().contains("optim.batch_size"));
        assert!(c.batch_split(0, 16).unwrap_err().to_string().contains("moco.bn_splits"));
        assert!(c.batch_split(2, 2).unwrap_err().to_string().contains("RANK"));
        let sync = Config::from_toml("", &["moco.bn_splits=1".into()]).unwrap();
        assert_eq!(
            groups(&sync, 16).unwrap(),
            (1, true),
            "SyncBN: the pairing in each rank's batch"
        );
        let s = Config::from_toml("", &["method=simsiam".into()]).unwrap();
        assert_eq!(groups(&s, 16).unwrap(), (1, true));
        assert_eq!(groups(&s, 1).unwrap(), (1, false));
    }

    #[test]
    fn defaults_are_the_paper_recipe() {
        let c = Config::from_toml("", &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.optim.batch_size, 1024);
        assert!((c.optim.peak_lr() - 0.15).abs() < 1e-12);
        let back = Config::from_toml(&c.to_toml(), &[]).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn methods_round_trip_and_their_switches() {
        for m in Method::ALL {
            let c = Config::from_toml(&format!("method = \"{}\"", m.as_str()), &[]).unwrap();
            assert_eq!(c.method, m);
            assert_eq!(c.region_terms().any(), m.has_region(), "{m:?}");
        }
        // SimSiam: no queue constraints, one BN group, no intra negatives.
        let c = Config::from_toml(
            "method = \"regioncls\"\n[optim]\nbatch_size = 384\n",
            &["moco.bn_splits=8".into()],
        )
        .unwrap();
        assert_eq!((BatchSplit::whole(&c).unwrap().groups, c.region_terms().negative), (1, false));
        assert_eq!(c.method.encoder_prefix(), "encoder.");
        let c = Config::from_toml("method = \"regioncld\"", &[]).unwrap();
        assert_eq!((BatchSplit::whole(&c).unwrap().groups, c.region_terms().negative), (8, true));
        assert_eq!(c.method.encoder_prefix(), "encoder_q.");
    }

    /// The MoBY methods: SyncBN (one group), the intra negative, transformers only with them,
    /// sizes that tile into Swin's windows, a warm-up shorter than the run.
    #[test]
    fn moby_switches_and_errors() {
        let sets = |s: &[&str]| s.iter().map(|v| v.to_string()).collect::<Vec<_>>();
        let err = |s: &[&str]| Config::from_toml("", &sets(s)).unwrap_err().to_string();
        let c =
            Config::from_toml("", &sets(&["method=regionclmoby", "model.arch=swin_t"])).unwrap();
        let split = BatchSplit::whole(&c).unwrap();
        assert_eq!((split.groups, c.region_terms().negative), (1, true));
        assert!(c.batch_split(0, 8).unwrap().sync);
        assert_eq!(c.method.encoder_prefix(), "encoder_q.");
        assert_eq!(c.model.stride(), 32);
        let c = Config::from_toml("", &sets(&["method=moby", "model.arch=vit_s16"])).unwrap();
        assert_eq!(c.model.stride(), 16);
        assert!(err(&["model.arch=swin_t"]).contains("`model.arch`"));
        let e = err(&["method=moby", "model.arch=swin_t", "data.image_size=96"]);
        assert!(e.contains("`data.image_size`") && e.contains("windows"), "{e}");
        assert!(err(&["optim.warmup_epochs=200"]).contains("`optim.warmup_epochs`"));
        assert!(err(&["optim.betas=[0.9, 1.0]"]).contains("`optim.betas`"));
        assert!(err(&["model.drop_path=1.0"]).contains("`model.drop_path`"));
        assert!(err(&["optim.optimizer=adam"]).contains("`optim.optimizer`"));
        for arch in ["resnet18", "resnet50", "swin_t", "swin_nano", "vit_s16", "vit_nano"] {
            // The nano Swin (window 4, stride 16) does not tile 224 px; 64 px it does.
            let size = if arch == "swin_nano" { 64 } else { 224 };
            let (a, s) = (format!("model.arch={arch}"), format!("data.image_size={size}"));
            let c = Config::from_toml("", &sets(&["method=moby", &a, &s])).unwrap();
            assert_eq!(c.model.arch.as_str(), arch);
        }
    }
}
