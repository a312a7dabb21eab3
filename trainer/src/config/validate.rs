//! The checks of a config's values, each error naming the first bad key.

use super::Config;
use crate::error::{Error, Result};

impl Config {
    /// Checks every value, naming the first bad key.
    ///
    /// # Errors
    /// [`Error::Config`].
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, msg: String| Err(Error::config(key, msg));
        let m = &self.model;
        if !(1..=4096).contains(&m.width) {
            return bad("model.width", format!("{} is not in 1..=4096", m.width));
        }
        if m.proj_hidden < 0 || m.proj_dim < 1 {
            return bad("model.proj_dim", "projector sizes must be positive".into());
        }
        let o = &self.optim;
        if o.batch_size < 2 || o.batch_size % 2 != 0 {
            return bad("optim.batch_size", format!("{} must be even and >= 2", o.batch_size));
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
        if o.epochs == 0 {
            return bad("optim.epochs", "must be at least 1".into());
        }
        let q = &self.moco;
        let queued = self.method.uses_queue();
        if queued && (q.queue_size < o.batch_size || q.queue_size % o.batch_size != 0) {
            return bad(
                "moco.queue_size",
                format!("{} must be a multiple of optim.batch_size {}", q.queue_size, o.batch_size),
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
        ] {
            if !(w >= 0.0 && w.is_finite()) {
                return bad(key, format!("{w} must be >= 0"));
            }
        }
        if self.simsiam.pred_hidden < 1 {
            return bad("simsiam.pred_hidden", "must be positive".into());
        }
        let d = &self.data;
        let stride = self.model.stem.stride();
        if d.image_size < stride || d.image_size % stride != 0 {
            return bad(
                "data.image_size",
                format!("{} must be a multiple of the stride {stride}", d.image_size),
            );
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
        if self.run.dist_timeout_s == 0 {
            return bad("run.dist_timeout_s", "must be at least 1".into());
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
}
