//! RegionCL on libtorch.

/// Whether CUDA is usable in this process.
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}

#[cfg(test)]
mod tests {
    #[test]
    fn builds_a_tensor() {
        let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]).reshape([3, 1]);
        let s = (&t * 2.0).sum(tch::Kind::Float).double_value(&[]);
        assert_eq!(s, 12.0);
        assert_eq!(t.size(), vec![3, 1]);
    }
}
