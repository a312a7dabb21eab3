//! DenseCL's dense InfoNCE (docs/method.md 5.1; Wang et al., *Dense Contrastive Learning*,
//! <https://arxiv.org/abs/2011.09157>).
//!
//! Each grid cell `i` of image `n` is a query: its positive is the key cell `j*(n, i)` whose
//! **backbone** feature is most similar (cosine argmax, no gradient), its negatives the dense queue
//! of pooled dense keys. Rows are ordered `(n, i)`, as the official `q_grid.permute(0, 2, 1)`.

use tch::{Kind, Tensor};

use super::info_nce;

/// The correspondence `j*(n, i) = argmax_j q_b[n, i] . k_b[n, j]` between query and key cells,
/// computed without gradient.
///
/// # Shapes
/// `q_b, k_b: [B, S, D]` unit rows (S grid cells of D-d backbone features) -> `[B, S]` int64.
pub fn dense_correspondence(q_b: &Tensor, k_b: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let sim = q_b.to_kind(Kind::Float).bmm(&k_b.to_kind(Kind::Float).transpose(1, 2)); // [B, S, S]
        sim.argmax(2, false)
    })
}

/// The dense loss: rows `[q_grid[n, i] . k_grid[n, j*(n, i)], q_grid[n, i] . Q2] / tau` over all
/// `B * S` cells, averaged.
///
/// # Shapes
/// `q_grid, k_grid: [B, S, d]` unit rows, `j: [B, S]` int64, `queue: [d, K]` -> scalar.
pub fn dense_loss(
    q_grid: &Tensor,
    k_grid: &Tensor,
    j: &Tensor,
    queue: &Tensor,
    tau: f64,
) -> Tensor {
    let (b, s, d) = q_grid.size3().expect("q_grid is [B, S, d]");
    let k_pos = k_grid.gather(1, &j.unsqueeze(2).expand([b, s, d], false), false); // [B, S, d]
    let l_pos = (q_grid * k_pos).sum_dim_intlist([2].as_slice(), false, Kind::Float); // [B, S]
    let rows = q_grid.reshape([b * s, d]); // [B*S, d]
    let logits = Tensor::cat(&[l_pos.reshape([b * s, 1]), rows.matmul(queue)], 1) / tau; // [B*S, 1+K]
    info_nce(&logits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::l2_normalize_last;
    use tch::Device;

    fn unit(shape: &[i64]) -> Tensor {
        l2_normalize_last(&Tensor::randn(shape, (Kind::Float, Device::Cpu)))
    }

    /// docs/method.md 11.3 #14: identical query and key features, distinct per cell:
    /// `j*(n, i) = i`. A permutation of the key cells is undone.
    #[test]
    fn correspondence_identity_and_permutation() {
        tch::manual_seed(0);
        let (b, s, d) = (3, 49, 64);
        let f = unit(&[b, s, d]);
        let j = dense_correspondence(&f, &f);
        let ident = Tensor::arange(s, (Kind::Int64, Device::Cpu)).expand([b, s], false);
        assert!(j.equal(&ident));
        let perm = Tensor::randperm(s, (Kind::Int64, Device::Cpu));
        let k = f.index_select(1, &perm); // key cell m holds query cell perm[m]
        let j = dense_correspondence(&f, &k);
        let inv = perm.argsort(0, false); // query cell i sits at key cell inv[i]
        assert!(j.equal(&inv.expand([b, s], false)));
        // Scale does not matter (cosine on unit rows; argmax of a positive multiple).
        assert!(dense_correspondence(&(&f * 3.0), &k).equal(&j));
    }

    /// Equal logits give ln(K+1) per cell; the gathered positive matches a row-by-row computation.
    #[test]
    fn uniform_logits_and_explicit_rows() {
        let (b, s, d, kk) = (2, 4, 8, 16);
        let e = Tensor::zeros([b, s, d], (Kind::Float, Device::Cpu));
        let _ = e.narrow(2, 0, 1).fill_(1.0);
        let queue = Tensor::zeros([d, kk], (Kind::Float, Device::Cpu));
        let _ = queue.narrow(0, 0, 1).fill_(1.0);
        let j = Tensor::zeros([b, s], (Kind::Int64, Device::Cpu));
        let l = dense_loss(&e, &e, &j, &queue, 0.2).double_value(&[]);
        assert!((l - 17f64.ln()).abs() < 1e-5, "{l}");

        tch::manual_seed(1);
        let (q, k, queue) = (unit(&[b, s, d]), unit(&[b, s, d]), unit(&[kk, d]).transpose(0, 1));
        let j = Tensor::randint(s, [b, s], (Kind::Int64, Device::Cpu));
        let l = dense_loss(&q, &k, &j, &queue, 0.2).double_value(&[]);
        let mut sum = 0.0;
        for n in 0..b {
            for i in 0..s {
                let qi = q.get(n).get(i);
                let pos = (&qi * k.get(n).get(j.int64_value(&[n, i]))).sum(Kind::Float);
                let row = Tensor::cat(&[pos.reshape([1]), qi.matmul(&queue)], 0) / 0.2;
                sum += (row.logsumexp([0].as_slice(), false) - row.get(0)).double_value(&[]);
            }
        }
        assert!((l - sum / (b * s) as f64).abs() < 1e-5, "{l} vs {}", sum / (b * s) as f64);
    }
}
