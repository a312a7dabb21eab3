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
//! and predictor ([`default_uniform`]). All draws come from libtorch's default generator, which the
//! trainer seeds (`tch::manual_seed(seed)`) before building the model.

use tch::Tensor;

use crate::config::InitScheme;

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
    let std = (2.0 / fan).sqrt();
    crate::params::empty(shape).normal_(0.0, std)
}

/// A Linear weight `[out, in]` and bias `[out]`.
pub(crate) fn linear(scheme: InitScheme, out_dim: i64, in_dim: i64) -> (Tensor, Tensor) {
    let shape = [out_dim, in_dim];
    match scheme {
        InitScheme::OpenSelfSup => {
            let std = (2.0 / in_dim as f64).sqrt();
            let w = crate::params::empty(&shape).normal_(0.0, std);
            (w, crate::params::empty(&[out_dim]).zero_())
        }
        InitScheme::Torchvision => {
            let bound = 1.0 / (in_dim as f64).sqrt();
            let w = crate::params::empty(&shape).uniform_(-bound, bound);
            let b = crate::params::empty(&[out_dim]).uniform_(-bound, bound);
            (w, b)
        }
    }
}

/// PyTorch's default init of a Linear or conv weight or bias (`kaiming_uniform_(a=sqrt(5))` for the
/// weight, the same bound for the bias): uniform in `+-1/sqrt(fan_in)`.
pub(crate) fn default_uniform(shape: &[i64], fan_in: i64) -> Tensor {
    let bound = 1.0 / (fan_in as f64).sqrt();
    crate::params::empty(shape).uniform_(-bound, bound)
}

#[cfg(test)]
mod tests {
    use super::*;

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
