// SyncBN as one autograd function: batch normalisation whose training statistics are those of every
// rank's samples together (torch.nn.SyncBatchNorm's semantics), with
//   - one collective in the forward (an all-gather of each rank's per-channel mean, biased variance
//     and count) and one in the backward (an all-reduce of the two per-channel gradient sums),
//   - no host synchronisation: counts, the global statistics, the running statistics' update and
//     the unbiased correction stay on the device,
//   - the input's dtype and memory format kept: a bf16 channels_last activation gives a bf16
//     channels_last output, and only that input (as plain BN) and a few [C] fp32 vectors are saved
//     for the backward. Statistics and gradient sums are accumulated in fp32 in temporaries that
//     are freed at once.
//
// Forward, with rank r's mean m_r, biased variance v_r and count n_r, N = sum n_r:
//   mean = sum_r n_r m_r / N,  var = sum_r n_r (v_r + (m_r - mean)^2) / N  (law of total variance)
//   y = (x - mean) * invstd * w + b,  invstd = 1 / sqrt(var + eps)
// Backward, with S1 = sum over every rank's samples of dy, S2 = the same of dy * (x - mean):
//   dx = w * invstd * (dy - S1 / N - (x - mean) * invstd^2 * S2 / N)
//   dw = (this rank's) sum dy * (x - mean) * invstd,  db = (this rank's) sum dy
// so a rank's input gradient includes what its samples contribute to the other ranks' losses, and
// with the parameter gradients summed (or averaged) over ranks afterwards every gradient is that of
// plain BN on the concatenated batch.

#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>

#include <memory>
#include <vector>

#include "dist_group.h"

namespace {

// Every dimension but the channels (dim 1).
std::vector<int64_t> reduced_dims(const at::Tensor& x) {
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  return dims;
}

// A [C] vector shaped to broadcast against `x`: [1, C, 1, ...].
at::Tensor per_channel(const at::Tensor& v, const at::Tensor& x) {
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[1] = v.size(0);
  return v.view(shape);
}

// The ops below run as written: no autocast (the statistics are fp32 on purpose) and no autograd
// recording (this function is its own backward).
struct Plain {
  at::NoGradGuard no_grad;
  c10::impl::ExcludeDispatchKeyGuard no_autocast{c10::autocast_dispatch_keyset};
};

struct SyncBatchNormBackward : public torch::autograd::Node {
  std::shared_ptr<const RclGroup> group;
  torch::autograd::SavedVariable x;
  torch::autograd::SavedVariable weight;
  at::Tensor mean;    // [C] fp32, global
  at::Tensor invstd;  // [C] fp32, global
  at::Tensor total;   // [] fp32, N

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    const at::Tensor& dy = grads[0];
    if (!dy.defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
    Plain plain;
    const at::Tensor input = x.unpack();
    const at::Tensor w = weight.unpack();
    const auto dims = reduced_dims(input);
    const at::Tensor dyf = dy.to(at::kFloat);
    const at::Tensor xmu = input.to(at::kFloat) - per_channel(mean, input);
    at::Tensor sums = at::stack({dyf.sum(dims), (dyf * xmu).sum(dims)});  // [2, C], this rank's
    at::Tensor grad_w, grad_b;
    if (should_compute_output(1)) grad_w = sums[1] * invstd;
    if (should_compute_output(2)) grad_b = sums[0].clone();
    at::Tensor grad_x;
    if (should_compute_output(0)) {
      rcl::all_reduce_sum(*group, sums);  // every rank's sums
      const at::Tensor scale = w.defined() ? invstd * w.to(at::kFloat) : invstd;  // [C]
      const at::Tensor mean_dy = sums[0] / total;                                // [C]
      const at::Tensor mean_dy_xmu = sums[1] / total * invstd.square();          // [C]
      grad_x = ((dyf - per_channel(mean_dy, input) - xmu * per_channel(mean_dy_xmu, input)) *
                per_channel(scale, input))
                   .to(input.scalar_type());
    }
    return {grad_x, grad_w, grad_b};
  }

  std::string name() const override { return "RegionclSyncBatchNormBackward"; }

  void release_variables() override {
    x.reset_data();
    weight.reset_data();
  }
};

}  // namespace

namespace rcl {

at::Tensor sync_batch_norm(const std::shared_ptr<const RclGroup>& group, const at::Tensor& x,
                           const at::Tensor& weight, const at::Tensor& bias,
                           at::Tensor& running_mean, at::Tensor& running_var, double momentum,
                           double eps) {
  TORCH_CHECK(x.dim() >= 2, "sync_batch_norm: input of ", x.dim(), " dims, want [N, C, ...]");
  const int64_t c = x.size(1);
  TORCH_CHECK(c > 0 && x.numel() > 0, "sync_batch_norm: empty input ", x.sizes());
  at::Tensor y, mean, invstd, total;
  {
    Plain plain;
    const auto dims = reduced_dims(x);
    const auto [var_r, mean_r] = at::var_mean(x.to(at::kFloat), dims, /*correction=*/0);
    const at::Tensor count = at::full({1}, static_cast<double>(x.numel() / c), mean_r.options());
    const at::Tensor all = all_gather(*group, at::cat({mean_r, var_r, count}).unsqueeze(0));
    const at::Tensor means = all.narrow(1, 0, c);      // [W, C]
    const at::Tensor vars = all.narrow(1, c, c);       // [W, C]
    const at::Tensor counts = all.narrow(1, 2 * c, 1);  // [W, 1]
    total = counts.sum();
    const at::Tensor share = counts / total;
    mean = (share * means).sum(0);
    const at::Tensor var = (share * (vars + (means - mean).square())).sum(0);
    // PyTorch's running statistics: the unbiased variance of the whole batch.
    running_mean.mul_(1.0 - momentum).add_(mean * momentum);
    running_var.mul_(1.0 - momentum).add_(var * (total / (total - 1.0).clamp_min(1.0)) * momentum);
    invstd = (var + eps).rsqrt();
    // The normalisation itself: libtorch's batch norm on the global statistics (its inference
    // kernel, any dtype with fp32 statistics, memory format kept).
    y = std::get<0>(at::native_batch_norm(x, weight, bias, mean, var, /*training=*/false,
                                          /*momentum=*/0.0, eps));
  }
  const bool needs_grad = (x.requires_grad() || (weight.defined() && weight.requires_grad()) ||
                           (bias.defined() && bias.requires_grad()));
  if (needs_grad && at::GradMode::is_enabled()) {
    auto node = std::shared_ptr<SyncBatchNormBackward>(new SyncBatchNormBackward(),
                                                       torch::autograd::deleteNode);
    node->group = group;
    node->x = torch::autograd::SavedVariable(x, false);
    node->weight = torch::autograd::SavedVariable(weight, false);
    node->mean = mean;
    node->invstd = invstd;
    node->total = total;
    node->set_next_edges(torch::autograd::collect_next_edges(x, weight, bias));
    torch::autograd::set_history(y, node);
  }
  return y;
}

}  // namespace rcl
