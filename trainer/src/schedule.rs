//! The per-epoch cosine schedule (docs/method.md 2.7): `lr_e = lr * 1/2 (1 + cos(pi e / E))`,
//! `e = 0..E-1`, no warm-up, set once per epoch, from the peak `lr` of
//! [`crate::OptimConfig::peak_lr`].

/// The cosine-annealed learning rate of 0-based `epoch` out of `epochs`.
pub fn cosine_lr(lr: f64, epoch: u64, epochs: u64) -> f64 {
    lr * 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / epochs as f64).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/method.md 11.3 #11 (and the official log: 1.491e-1, 7.5e-2, 9.25e-6).
    #[test]
    fn official_values() {
        let close = |a: f64, b: f64, rel: f64| (a - b).abs() <= rel * b.abs();
        assert_eq!(cosine_lr(0.15, 0, 200), 0.15);
        assert!(close(cosine_lr(0.15, 10, 200), 0.149077, 5e-6));
        assert!(close(cosine_lr(0.15, 100, 200), 0.075, 1e-12));
        assert!(close(cosine_lr(0.15, 199, 200), 9.2526e-6, 1e-4));
        assert!(close(cosine_lr(0.03, 199, 200), 1.85e-6, 1e-3));
    }

    /// docs/method.md 11.3 #13: iterations per epoch on ImageNet-1k with drop_last.
    #[test]
    fn iterations_per_epoch() {
        assert_eq!(1_281_167 / 1024, 1251);
        assert_eq!(1_281_167 / 256, 5004);
    }
}
