//! Weight initialisation (docs/method.md 2.1). Two schemes, recorded per method in the config:
//!
//! - [`InitScheme::OpenSelfSup`] (official RegionCL-M): convs Kaiming-normal, mode fan_in, ReLU
//!   gain (std = sqrt(2 / fan_in)); Linear layers Kaiming-normal fan_in with zero bias; BN weight
//!   1, bias 0.
//! - [`InitScheme::Torchvision`] (official MoCo v2): convs Kaiming-normal, mode fan_out, ReLU gain;
//!   Linear layers keep PyTorch's default (Kaiming-uniform a = sqrt(5): weight and bias uniform in
//!   +-1/sqrt(fan_in)); BN weight 1, bias 0.
//!
//! `zero_init_residual` (`model.zero_init_residual`) is off for both, on for SimSiam. Whatever the
//! scheme, two heads keep PyTorch's default init as their official code does: DenseCL's dense 1x1
//! convs (its neck initialiser only touches Linear and BN) and every Linear of SimSiam's projector
//! and predictor ([`default_uniform`]).
//!
//! Draws inside a [`seeded`] scope (every method builds its networks and queues in one) come from a
//! keyed stream of this thread, a pure function of the seed and the draw's position: a model is the
//! same whatever other threads draw from libtorch's process-wide default generator meanwhile (tests
//! run in parallel). Outside a scope they come from that default generator.

use std::cell::Cell;

use tch::Tensor;

use crate::config::InitScheme;
use crate::rng::KeyedRng;

/// Key of the initialisation streams.
const INIT_STREAM: u64 = 0x494e_4954;

thread_local! {
    /// This thread's [`seeded`] scope: the seed and the number of tensors drawn so far.
    static STREAM: Cell<Option<(u64, u64)>> = const { Cell::new(None) };
}

/// Restores the enclosing scope (or none) when a [`seeded`] scope ends, also by a panic.
struct Scope(Option<(u64, u64)>);

impl Drop for Scope {
    fn drop(&mut self) {
        STREAM.set(self.0);
    }
}

/// Runs `f` with every initial draw on this thread (weights, biases, queues) taken from the keyed
/// stream of `seed`: tensor `n` drawn in the scope is a function of `(seed, n)` alone.
pub(crate) fn seeded<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    let _restore = Scope(STREAM.replace(Some((seed, 0))));
    f()
}

/// `shape` filled by `sample` from this thread's [`seeded`] stream, or by `fallback` on an
/// uninitialised tensor (libtorch's default generator) outside a scope.
fn draw(
    shape: &[i64],
    sample: impl Fn(&mut KeyedRng) -> f64,
    fallback: impl FnOnce(Tensor) -> Tensor,
) -> Tensor {
    let Some((seed, n)) = STREAM.get() else { return fallback(crate::params::empty(shape)) };
    STREAM.set(Some((seed, n + 1)));
    let mut rng = KeyedRng::new(&[seed, INIT_STREAM, n]);
    let numel: i64 = shape.iter().product();
    let values: Vec<f32> = (0..numel).map(|_| sample(&mut rng) as f32).collect();
    Tensor::from_slice(&values).view(shape)
}

/// i.i.d. `N(0, std^2)` entries (Box-Muller on the stream's uniforms).
pub(crate) fn normal(shape: &[i64], std: f64) -> Tensor {
    let sample = |r: &mut KeyedRng| {
        let (u1, u2) = (1.0 - r.next_f64(), r.next_f64()); // u1 in (0, 1]
        std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    };
    draw(shape, sample, |mut t| t.normal_(0.0, std))
}

/// i.i.d. entries uniform in `[lo, hi)`.
pub(crate) fn uniform(shape: &[i64], lo: f64, hi: f64) -> Tensor {
    draw(shape, |r| r.uniform(lo, hi), |mut t| t.uniform_(lo, hi))
}

fn fan_in(shape: &[i64]) -> f64 {
    (shape[1..].iter().product::<i64>()) as f64
}

fn fan_out(shape: &[i64]) -> f64 {
    (shape[0] * shape[2..].iter().product::<i64>()) as f64
}

/// A conv weight `[out, in, kh, kw]`.
pub(crate) fn conv_weight(scheme: InitScheme, shape: &[i64]) -> Tensor {
    let fan = match scheme {
        InitScheme::OpenSelfSup => fan_in(shape),
        InitScheme::Torchvision => fan_out(shape),
    };
    normal(shape, (2.0 / fan).sqrt())
}

/// A Linear weight `[out, in]` and bias `[out]`.
pub(crate) fn linear(scheme: InitScheme, out_dim: i64, in_dim: i64) -> (Tensor, Tensor) {
    let shape = [out_dim, in_dim];
    match scheme {
        InitScheme::OpenSelfSup => {
            let w = normal(&shape, (2.0 / in_dim as f64).sqrt());
            (w, crate::params::empty(&[out_dim]).zero_())
        }
        InitScheme::Torchvision => {
            let bound = 1.0 / (in_dim as f64).sqrt();
            (uniform(&shape, -bound, bound), uniform(&[out_dim], -bound, bound))
        }
    }
}

/// PyTorch's default init of a Linear or conv weight or bias (`kaiming_uniform_(a=sqrt(5))` for the
/// weight, the same bound for the bias): uniform in `+-1/sqrt(fan_in)`.
pub(crate) fn default_uniform(shape: &[i64], fan_in: i64) -> Tensor {
    let bound = 1.0 / (fan_in as f64).sqrt();
    uniform(shape, -bound, bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a scope the draws are a function of the seed alone: the same tensors again, whatever
    /// libtorch's default generator does in between; other seeds give other tensors.
    #[test]
    fn seeded_draws_ignore_the_default_generator() {
        let draw = |seed| seeded(seed, || (normal(&[64, 9], 0.5), uniform(&[7], -1.0, 1.0)));
        let (a, b) = draw(3);
        tch::manual_seed(99);
        let _ = tch::Tensor::randn([5], (tch::Kind::Float, tch::Device::Cpu));
        let (a2, b2) = draw(3);
        assert!(a.equal(&a2) && b.equal(&b2));
        assert!(!a.equal(&draw(4).0));
        let std = a.std(true).double_value(&[]);
        assert!((std - 0.5).abs() < 0.06, "{std}");
        let (lo, hi) = (b.min().double_value(&[]), b.max().double_value(&[]));
        assert!(lo >= -1.0 && hi < 1.0 && lo < hi, "{lo} {hi}");
    }

    #[test]
    fn conv_std_follows_the_fan() {
        tch::manual_seed(0);
        let shape = [256, 64, 3, 3];
        let w = conv_weight(InitScheme::OpenSelfSup, &shape);
        let std = w.std(true).double_value(&[]);
        assert!((std - (2.0f64 / 576.0).sqrt()).abs() < 2e-3, "{std}");
        let w = conv_weight(InitScheme::Torchvision, &shape);
        let std = w.std(true).double_value(&[]);
        assert!((std - (2.0f64 / 2304.0).sqrt()).abs() < 1e-3, "{std}");
        let (_, b) = linear(InitScheme::OpenSelfSup, 8, 16);
        assert_eq!(b.abs().sum(tch::Kind::Float).double_value(&[]), 0.0);
    }
}
