//! The checks of a config's values, each error naming the first bad key.
//!
//! Every size a config sets is bounded before anything is allocated: the width of the network
//! (at most [`MAX_WIDTH`], ResNet-50x4), its heads, the queues (at most [`MAX_QUEUE_FLOATS`]
//! floats), the pixels of a batch, the thread counts; a value beyond its limit is an error naming
//! the key, never an abort of the allocator.

use super::{Config, Method};
use crate::error::{Error, Result};

/// Largest `model.width` (ResNet-50x4, the widest ResNet of SimCLR and SwAV: 375 M parameters).
pub const MAX_WIDTH: i64 = 256;
/// Largest projector or predictor width (`model.proj_hidden`, `model.proj_dim`,
/// `simsiam.pred_hidden`).
pub const MAX_HEAD_WIDTH: i64 = 16384;
/// Largest number of floats in a method's queues (`moco.queue_size x model.proj_dim`, twice for
/// DenseCL): 4 GiB.
pub const MAX_QUEUE_FLOATS: i64 = 1 << 30;
/// Largest global batch (`optim.batch_size`).
pub const MAX_BATCH: i64 = 1 << 16;
/// Largest view side (`data.image_size`).
pub const MAX_IMAGE_SIZE: i64 = 2048;
/// Largest number of pixels in one view of a batch (`optim.batch_size x data.image_size^2`).
pub const MAX_BATCH_PIXELS: i64 = 1 << 30;
/// Largest thread count (`run.threads`, `data.loader_threads`).
pub const MAX_THREADS: i64 = 1024;
/// Largest number of epochs (`optim.epochs`).
pub const MAX_EPOCHS: u64 = 1_000_000;
/// Longest multi-process timeout (`run.dist_timeout_s`): 30 days.
pub const MAX_TIMEOUT_S: u64 = 30 * 24 * 3600;

impl Config {
    /// Checks every value, naming the first bad key.
    ///
    /// # Errors
    /// [`Error::Config`].
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, msg: String| Err(Error::config(key, msg));
        let m = &self.model;
        if !(1..=MAX_WIDTH).contains(&m.width) {
            return bad("model.width", format!("{} is not in 1..={MAX_WIDTH}", m.width));
        }
        for (key, v, min) in [
            ("model.proj_hidden", m.proj_hidden, 0),
            ("model.proj_dim", m.proj_dim, 1),
            ("simsiam.pred_hidden", self.simsiam.pred_hidden, 1),
        ] {
            if !(min..=MAX_HEAD_WIDTH).contains(&v) {
                return bad(key, format!("{v} is not in {min}..={MAX_HEAD_WIDTH}"));
            }
        }
        if m.arch.is_transformer() && !self.method.is_moby() {
            return bad(
                "model.arch",
                format!(
                    "the transformers (swin_t, vit_s16, swin_nano, vit_nano) train with `moby` or \
                     `regionclmoby`, not `{}`",
                    self.method.as_str()
                ),
            );
        }
        if !(0.0..1.0).contains(&m.drop_path) {
            return bad("model.drop_path", format!("{} is not in [0, 1)", m.drop_path));
        }
        if self.moby.pred_hidden < 1 {
            return bad("moby.pred_hidden", "must be positive".into());
        }
        let o = &self.optim;
        if !(2..=MAX_BATCH).contains(&o.batch_size) || o.batch_size % 2 != 0 {
            return bad(
                "optim.batch_size",
                format!("{} must be even and in 2..={MAX_BATCH}", o.batch_size),
            );
        }
        if !(o.base_lr > 0.0 && o.base_lr.is_finite()) {
            return bad("optim.base_lr", format!("{} must be positive", o.base_lr));
        }
        if o.ref_batch < 1 {
            return bad("optim.ref_batch", format!("{} must be positive", o.ref_batch));
        }
        if !(0.0..1.0).contains(&o.momentum) {
            return bad("optim.momentum", format!("{} is not in [0, 1)", o.momentum));
        }
        if !(o.weight_decay >= 0.0 && o.weight_decay.is_finite()) {
            return bad("optim.weight_decay", format!("{} must be >= 0", o.weight_decay));
        }
        if o.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return bad("optim.betas", format!("{:?} must lie in [0, 1)", o.betas));
        }
        if !(o.eps > 0.0 && o.eps.is_finite()) {
            return bad("optim.eps", format!("{} must be positive", o.eps));
        }
        for (key, v) in [
            ("optim.clip_grad", o.clip_grad),
            ("optim.warmup_lr", o.warmup_lr),
            ("optim.min_lr", o.min_lr),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(key, format!("{v} must be >= 0"));
            }
        }
        if !(1..=MAX_EPOCHS).contains(&o.epochs) {
            return bad("optim.epochs", format!("{} is not in 1..={MAX_EPOCHS}", o.epochs));
        }
        if o.warmup_epochs >= o.epochs {
            return bad(
                "optim.warmup_epochs",
                format!(
                    "{} leaves no epoch of the {} after the warm-up",
                    o.warmup_epochs, o.epochs
                ),
            );
        }
        let q = &self.moco;
        let queued = self.method.uses_queue();
        if queued && (q.queue_size < o.batch_size || q.queue_size % o.batch_size != 0) {
            return bad(
                "moco.queue_size",
                format!("{} must be a multiple of optim.batch_size {}", q.queue_size, o.batch_size),
            );
        }
        let queues = if matches!(
            self.method,
            Method::DenseCl | Method::RegionCld | Method::Moby | Method::RegionClMoby
        ) {
            2
        } else {
            1
        };
        let floats = q.queue_size.saturating_mul(m.proj_dim).saturating_mul(queues);
        if queued && floats > MAX_QUEUE_FLOATS {
            return bad(
                "moco.queue_size",
                format!(
                    "{} keys of {} floats ({queues} queue(s)) make {floats} floats, over the \
                     limit of {MAX_QUEUE_FLOATS} (4 GiB)",
                    q.queue_size, m.proj_dim
                ),
            );
        }
        if !(q.tau > 0.0 && q.tau.is_finite()) {
            return bad("moco.tau", format!("{} must be positive", q.tau));
        }
        if !(0.0..=1.0).contains(&q.momentum) {
            return bad("moco.momentum", format!("{} is not in [0, 1]", q.momentum));
        }
        // The batch / BN-group rule, for one process.
        self.batch_split(0, 1)?;
        let dc = &self.densecl;
        if !(0.0..=1.0).contains(&dc.lambda) {
            return bad("densecl.lambda", format!("{} is not in [0, 1]", dc.lambda));
        }
        for (key, w) in [
            ("densecl.region_weight", dc.region_weight),
            ("simsiam.region_weight", self.simsiam.region_weight),
            ("moby.region_weight", self.moby.region_weight),
        ] {
            if !(w >= 0.0 && w.is_finite()) {
                return bad(key, format!("{w} must be >= 0"));
            }
        }
        let d = &self.data;
        let stride = self.model.stride();
        if !(stride..=MAX_IMAGE_SIZE).contains(&d.image_size) || d.image_size % stride != 0 {
            return bad(
                "data.image_size",
                format!(
                    "{} must be a multiple of the stride {stride}, at most {MAX_IMAGE_SIZE}",
                    d.image_size
                ),
            );
        }
        let pixels = o.batch_size * d.image_size * d.image_size;
        if pixels > MAX_BATCH_PIXELS {
            return bad(
                "optim.batch_size",
                format!(
                    "{} views of {} px make {pixels} pixels per view of a batch, over the limit \
                     of {MAX_BATCH_PIXELS}",
                    o.batch_size, d.image_size
                ),
            );
        }
        let loader_threads = i64::try_from(d.loader_threads).unwrap_or(i64::MAX);
        for (key, n) in [("data.loader_threads", loader_threads), ("run.threads", self.run.threads)]
        {
            if !(0..=MAX_THREADS).contains(&n) {
                return bad(key, format!("{n} is not in 0..={MAX_THREADS} (0 = automatic)"));
            }
        }
        if let Some((patch, window)) = m.arch.swin_patch_window() {
            // Every stage tiles into whole windows (timm pads instead; the recipes need no
            // padding: 224 px for Swin-T). A stage of at most one window takes one, unshifted.
            for stage in 0..4 {
                let r = (d.image_size / patch) >> stage;
                if r > window && r % window != 0 {
                    return bad(
                        "data.image_size",
                        format!(
                            "{}: {} px gives stage {stage} {r}x{r} tokens, which do not tile \
                             into {window}x{window} windows",
                            m.arch.as_str(),
                            d.image_size
                        ),
                    );
                }
            }
        }
        let grid = d.image_size / stride;
        let r = &self.region;
        if self.region_terms().any() {
            if r.c_lower < 1 || r.c_lower > r.c_upper {
                return bad(
                    "region.c_lower",
                    format!("{} must be in 1..=c_upper ({})", r.c_lower, r.c_upper),
                );
            }
            if r.c_upper > grid - 1 {
                return bad(
                    "region.c_upper",
                    format!("{} leaves no canvas on a {grid}x{grid} grid", r.c_upper),
                );
            }
        }
        let a = &self.augment;
        for (key, p) in [
            ("augment.jitter_p", a.jitter_p),
            ("augment.grayscale_p", a.grayscale_p),
            ("augment.blur_p", a.blur_p),
            ("augment.solarize_p", a.solarize_p),
            ("augment.flip_p", a.flip_p),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(key, format!("{p} is not a probability"));
            }
        }
        if !(a.crop_scale_min > 0.0 && a.crop_scale_min <= 1.0) {
            return bad("augment.crop_scale_min", format!("{} is not in (0, 1]", a.crop_scale_min));
        }
        if !(0.0..=0.5).contains(&a.hue) {
            return bad("augment.hue", format!("{} is not in [0, 0.5]", a.hue));
        }
        if !(a.blur_sigma_min > 0.0 && a.blur_sigma_min <= a.blur_sigma_max) {
            return bad(
                "augment.blur_sigma_min",
                "needs 0 < blur_sigma_min <= blur_sigma_max".into(),
            );
        }
        if 3.0 * a.blur_sigma_max + 1.0 >= d.image_size as f64 {
            return bad(
                "augment.blur_sigma_max",
                format!("{} is too wide for {} px views", a.blur_sigma_max, d.image_size),
            );
        }
        if self.run.log_every == 0 {
            return bad("run.log_every", "must be at least 1".into());
        }
        if self.run.keep_checkpoints == 0 {
            return bad("run.keep_checkpoints", "must be at least 1".into());
        }
        if !(1..=MAX_TIMEOUT_S).contains(&self.run.dist_timeout_s) {
            return bad(
                "run.dist_timeout_s",
                format!("{} is not in 1..={MAX_TIMEOUT_S}", self.run.dist_timeout_s),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn err(sets: &[&str]) -> String {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::from_toml("", &sets).unwrap_err().to_string()
    }

    #[test]
    fn bad_values_name_their_key() {
        assert!(err(&["optim.batch_size=1000"]).contains("`moco.queue_size`"));
        assert!(err(&["region.c_upper=7"]).contains("`region.c_upper`"));
        assert!(err(&["moco.bn_splits=3"]).contains("`moco.bn_splits`"));
        assert!(err(&["densecl.lambda=1.5"]).contains("`densecl.lambda`"));
        assert!(err(&["simsiam.region_weight=-1"]).contains("`simsiam.region_weight`"));
        assert!(err(&["data.image_size=100"]).contains("`data.image_size`"));
        assert!(err(&["augment.flip_p=2"]).contains("`augment.flip_p`"));
        assert!(err(&["method=densecl", "optim.batch_size=384"]).contains("queue"));
    }

    /// Issue 12 #8: sizes that would exhaust memory are refused before anything is allocated,
    /// naming the key: a 2^30-key queue, a width of a million, 100000 threads.
    #[test]
    fn oversized_queue_width_and_threads_are_refused_naming_the_key() {
        let e = err(&["moco.queue_size=1073741824"]);
        assert!(e.contains("`moco.queue_size`") && e.contains("over the limit"), "{e}");
        let e = err(&["method=densecl", "moco.queue_size=4194304", "model.proj_dim=256"]);
        assert!(e.contains("`moco.queue_size`") && e.contains("2 queue(s)"), "{e}");
        assert!(err(&["model.width=1000000"]).contains("`model.width`: 1000000 is not in"));
        assert!(err(&["run.threads=100000"]).contains("`run.threads`"));
        assert!(err(&["data.loader_threads=100000"]).contains("`data.loader_threads`"));
        assert!(
            err(&["optim.batch_size=8192", "moco.queue_size=65536", "data.image_size=512"])
                .contains("`optim.batch_size`")
        );
        assert!(err(&["optim.epochs=100000000"]).contains("`optim.epochs`"));
        assert!(err(&["simsiam.pred_hidden=100000"]).contains("`simsiam.pred_hidden`"));
    }

    /// Issue 12 #16: a bad projector hidden width is reported under its own key.
    #[test]
    fn bad_proj_hidden_names_proj_hidden() {
        assert!(err(&["model.proj_hidden=-1"]).contains("`model.proj_hidden`"));
        assert!(err(&["model.proj_dim=0"]).contains("`model.proj_dim`"));
    }
}
