//! The MoCo key queue (docs/method.md 2.4): `[dim, K]`, one unit-norm key per column, plus a
//! pointer.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// A FIFO dictionary of negative keys.
#[derive(Debug)]
pub struct Queue {
    keys: Tensor,
    ptr: i64,
}

impl Queue {
    /// `K` columns of i.i.d. N(0, 1) entries, each column L2-normalised; `ptr = 0`. Draws as the
    /// networks' initialisation does (`init.rs`: the keyed stream of the method's seed).
    pub fn new(dim: i64, k: i64, device: Device) -> Self {
        let q = crate::init::normal(&[dim, k], 1.0);
        let q = &q / q.norm_scalaropt_dim(2, [0].as_slice(), true).clamp_min(1e-12);
        Self { keys: q.to_device(device), ptr: 0 }
    }

    /// The keys, `[dim, K]`.
    pub fn keys(&self) -> &Tensor {
        &self.keys
    }

    /// Number of keys `K`.
    pub fn len(&self) -> i64 {
        self.keys.size()[1]
    }

    /// Always false (a queue has K > 0 columns); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the next keys go.
    pub fn ptr(&self) -> i64 {
        self.ptr
    }

    /// Writes the keys `k` into columns `[ptr, ptr + N)` and advances `ptr` modulo `K`.
    ///
    /// # Shapes
    /// `k: [N, dim]` with `K % N == 0`.
    ///
    /// # Errors
    /// If `K` is not a multiple of `N` or `dim` differs.
    pub fn enqueue(&mut self, k: &Tensor) -> Result<()> {
        let (n, dim) = k.size2()?;
        let kk = self.len();
        if kk % n != 0 || dim != self.keys.size()[0] {
            return Err(Error::Input(format!(
                "enqueue: {n} keys of dim {dim} into a queue [{}, {kk}] (K must be a multiple of N)",
                self.keys.size()[0]
            )));
        }
        tch::no_grad(|| {
            self.keys
                .narrow(1, self.ptr, n)
                .copy_(&k.detach().to_kind(Kind::Float).transpose(0, 1));
        });
        self.ptr = (self.ptr + n) % kk;
        Ok(())
    }

    /// The state for a checkpoint: `{name}` `[dim, K]` and `{name}_ptr` `[1]` (int64); the official
    /// names are `queue` and, for DenseCL's dense queue, `queue2`.
    pub fn export(&self, name: &str) -> Vec<(String, Tensor)> {
        vec![
            (name.to_string(), self.keys.to_device(Device::Cpu).contiguous()),
            (format!("{name}_ptr"), Tensor::from_slice(&[self.ptr])),
        ]
    }

    /// Restores `{name}` and `{name}_ptr` from checkpoint tensors.
    ///
    /// # Errors
    /// A missing tensor or a shape mismatch.
    pub fn load_named(&mut self, tensors: &HashMap<String, Tensor>, name: &str) -> Result<()> {
        match (tensors.get(name), tensors.get(&format!("{name}_ptr"))) {
            (Some(q), Some(p)) => self.load(q, p),
            _ => Err(Error::Input(format!("`{name}` or `{name}_ptr` missing"))),
        }
    }

    /// Restores from checkpoint tensors.
    ///
    /// # Errors
    /// A missing tensor or a shape mismatch.
    pub fn load(&mut self, keys: &Tensor, ptr: &Tensor) -> Result<()> {
        if keys.size() != self.keys.size() {
            return Err(Error::Input(format!(
                "queue: stored {:?}, configured {:?}",
                keys.size(),
                self.keys.size()
            )));
        }
        tch::no_grad(|| self.keys.copy_(keys));
        self.ptr = ptr.int64_value(&[0]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::test_devices;

    /// docs/method.md 11.3 #9: columns [ptr, ptr+N) hold k^T, ptr advances and wraps.
    #[test]
    fn enqueue_writes_columns_and_wraps() {
        for d in test_devices() {
            tch::manual_seed(0);
            let mut q = Queue::new(4, 6, d);
            let norms = q.keys().norm_scalaropt_dim(2, [0].as_slice(), false);
            assert!(norms.allclose(&Tensor::ones([6], (Kind::Float, d)), 1e-5, 1e-6, false));
            for step in 0..4 {
                let k = Tensor::randn([2, 4], (Kind::Float, d));
                let before = q.ptr();
                q.enqueue(&k).unwrap();
                assert_eq!(q.keys().narrow(1, before, 2), k.transpose(0, 1));
                assert_eq!(q.ptr(), (before + 2) % 6, "step {step}");
            }
            assert!(q.enqueue(&Tensor::zeros([4, 4], (Kind::Float, d))).is_err());
        }
    }
}
