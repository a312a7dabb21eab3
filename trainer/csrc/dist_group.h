// One c10d process group as the dist shim holds it, and the collectives the shim's files share
// (dist_shim.cpp: the C entry points; sync_bn.cpp: SyncBN's autograd function).
#pragma once

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <atomic>
#include <chrono>
#include <memory>

// The store it met its peers through, the backend, and who we are.
struct RclGroup {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  int rank = 0;
  int world = 1;
  at::Device device = at::Device(at::kCPU);
  std::chrono::milliseconds timeout{0};
  // NCCL: collectives are ordered on the current CUDA stream and the host does not wait for them
  // (NCCL's watchdog enforces `timeout`); Gloo: the host waits, at most `timeout`.
  bool stream_ordered = false;
  // Collectives issued so far (all-reduce, broadcast, all-gather), a diagnostic.
  mutable std::atomic<std::uint64_t> collectives{0};
};

namespace rcl {

// In place: `t = sum over ranks of t`. `t` must be contiguous and on the group's device.
void all_reduce_sum(const RclGroup& g, at::Tensor& t);

// `[n, ...]` on every rank -> `[world * n, ...]`, rank r's rows at `[r * n, (r + 1) * n)`.
at::Tensor all_gather(const RclGroup& g, const at::Tensor& x);

// Batch norm with the statistics of every rank's samples: one all-gather in the forward, one
// all-reduce in the backward, no host synchronisation; the output has `x`'s dtype and memory
// format. See sync_bn.cpp.
at::Tensor sync_batch_norm(const std::shared_ptr<const RclGroup>& group, const at::Tensor& x,
                           const at::Tensor& weight, const at::Tensor& bias,
                           at::Tensor& running_mean, at::Tensor& running_var, double momentum,
                           double eps);

}  // namespace rcl
