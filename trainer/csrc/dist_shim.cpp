// Multi-process collectives over libtorch's own c10d, in a few C entry points:
//   - rendezvous through a TCPStore (hosted by rank 0, or a client of torchrun's agent store),
//   - a ProcessGroupGloo (CPU tensors) or a ProcessGroupNCCL (CUDA tensors; compiled only when the
//     CUDA and NCCL headers were found, RCL_WITH_NCCL),
//   - all-reduce, broadcast, all-gather and barrier: on NCCL ordered on the current CUDA stream
//     without blocking the host (NCCL's watchdog enforces the group's timeout, as in PyTorch), on
//     Gloo waited for by the host with the group's timeout,
//   - an all-gather that autograd can differentiate (its backward all-reduces the gradient and
//     keeps this rank's slice), and SyncBN (sync_bn.cpp),
//   - a wait for rank 0 through the store, without a collective timeout (rank 0 alone runs
//     something long, e.g. the k-NN monitor).
//
// A group is an opaque `RclGroup*` owned by the Rust side (`rcl_dist_free`). Tensors cross as
// tch's `C_tensor*` = `at::Tensor*`; new tensors are returned as `new at::Tensor(...)`, deleted by
// tch's Drop. Every entry point returns 0 on success and 1 on a C++ exception, whose message is
// then available from `rcl_dist_last_error` on the same thread.
//
// Gloo: the wheel ships ProcessGroupGloo.hpp but not the Gloo headers; csrc/gloo_decls holds the
// few declarations that header needs (see its README). Gloo objects are only ever held through
// pointers here, and are created by libtorch itself.

#define USE_C10D_GLOO 1

#include <ATen/ATen.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#ifdef RCL_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "dist_group.h"
#include "rcl_try.h"

namespace {

using Millis = std::chrono::milliseconds;

// Waits for `work`: NCCL makes the current stream wait for it (a `wait()` without a timeout; with
// one, PyTorch's NCCL backend would poll on the host until the collective is done), Gloo blocks
// the host for at most the group's timeout. Rethrows the collective's own failure (a peer that
// closed its connection, a Gloo timeout) with the operation named.
void wait(const RclGroup& g, const c10::intrusive_ptr<c10d::Work>& work, const char* op) {
  try {
    if (g.stream_ordered) {
      work->wait();
    } else {
      work->wait(g.timeout);
    }
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string(op) + ": " + e.what());
  }
}

void check_tensor(const RclGroup& g, const at::Tensor& t, const char* op) {
  TORCH_CHECK(t.defined(), op, ": undefined tensor");
  TORCH_CHECK(t.is_contiguous(), op, ": the tensor must be contiguous");
  TORCH_CHECK(t.device() == g.device, op, ": tensor on ", t.device(), ", the group works on ",
              g.device);
}

}  // namespace

namespace rcl {

void all_reduce_sum(const RclGroup& g, at::Tensor& t) {
  check_tensor(g, t, "all_reduce");
  std::vector<at::Tensor> ts{t};
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::ReduceOp::SUM;
  opts.timeout = g.timeout;
  g.collectives++;
  wait(g, g.backend->allreduce(ts, opts), "all_reduce");
}

at::Tensor all_gather(const RclGroup& g, const at::Tensor& x) {
  at::Tensor in = x.contiguous();
  check_tensor(g, in, "all_gather");
  TORCH_CHECK(in.dim() >= 1, "all_gather: needs a tensor of at least one dimension");
  auto sizes = in.sizes().vec();
  sizes[0] *= g.world;
  at::Tensor out = at::empty(sizes, in.options());
  c10d::AllgatherOptions opts;
  opts.timeout = g.timeout;
  g.collectives++;
  wait(g, g.backend->_allgather_base(out, in, opts), "all_gather");
  return out;
}

}  // namespace rcl

namespace {

using rcl::all_gather;
using rcl::all_reduce_sum;

// The store key of a flag rank 0 publishes (`rcl_dist_publish`).
std::string flag_key(const char* tag) { return std::string("flag/") + tag; }

// Backward of the differentiable all-gather `y = cat_r(x_r)`. Every rank's loss may depend on every
// slice of y, so dL/dx_r = sum over ranks of (dL_rank/dy)[slice r]: all-reduce, keep our slice.
struct AllGatherBackward : public torch::autograd::Node {
  std::shared_ptr<const RclGroup> group;
  int64_t rows = 0;

  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    const at::Tensor& grad = grads[0];
    if (!grad.defined()) return {at::Tensor()};
    at::Tensor g = grad.contiguous().clone();
    all_reduce_sum(*group, g);
    return {g.narrow(0, static_cast<int64_t>(group->rank) * rows, rows)};
  }

  std::string name() const override { return "RegionclAllGatherBackward"; }
};

}  // namespace

// The Rust side holds a `shared_ptr` so that autograd nodes can keep the group alive past the
// handle (a graph built before `rcl_dist_free` may still run its backward).
struct RclGroupHandle {
  std::shared_ptr<RclGroup> group;
};


extern "C" {

const char* rcl_dist_last_error() { return g_last_error.c_str(); }

// Whether this build can make NCCL groups.
int rcl_dist_nccl_built() {
#ifdef RCL_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

// Makes CUDA device `index` the current one of this process (before anything allocates on it), so
// that libtorch's default CUDA context, pinned host memory and NCCL streams use the rank's GPU.
int rcl_cuda_set_device(int index) {
  RCL_TRY({
    const auto* impl = c10::impl::getDeviceGuardImpl(at::kCUDA);
    impl->setDevice(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index)));
  })
}

// Meets the other `world - 1` processes at `host:port` and builds the group.
//   host_store: 1 = this process hosts the TCPStore server (rank 0 without torchrun's agent
//               store), 0 = it connects as a client.
//   backend:    0 = Gloo (CPU tensors), 1 = NCCL (tensors on CUDA device `device`).
//   prefix:     namespace of this job's keys in the store (the agent store is shared).
// A peer that does not show up within `timeout_ms` is an error on every rank that waits for it:
// the store host times out waiting for its clients, a client times out connecting, and the backend
// times out exchanging addresses. Ends with a one-element all-reduce, so a group that is returned
// has carried one collective.
int rcl_dist_init(const char* host, int port, int host_store, int rank, int world, int backend,
                  int device, int64_t timeout_ms, const char* prefix, RclGroupHandle** out) {
  RCL_TRY({
    TORCH_CHECK(world >= 1 && rank >= 0 && rank < world, "rank ", rank, " is not in a world of ",
                world);
    TORCH_CHECK(port > 0 && port < 65536, "port ", port, " is not in 1..65535");
    auto g = std::make_shared<RclGroup>();
    g->rank = rank;
    g->world = world;
    g->timeout = Millis(timeout_ms);

    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(port);
    so.isServer = host_store != 0;
    so.numWorkers = static_cast<std::size_t>(world);
    so.waitWorkers = true;  // the host waits for every client (with the timeout), clients check in
    so.timeout = g->timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), so);
    g->store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);

    if (backend == 0) {
      auto opts = c10d::ProcessGroupGloo::Options::create_default(g->timeout);
      opts->timeout = g->timeout;
      g->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(g->store, rank, world, opts);
    } else if (backend == 1) {
#ifdef RCL_WITH_NCCL
      // ProcessGroupNCCL's layout follows the NCCL headers (ncclConfig_t in its Options): refuse a
      // major.minor other than the one libtorch was built with.
      const std::uint64_t built = torch::cuda::nccl::version();
      TORCH_CHECK(built >> 16 == ((std::uint64_t{NCCL_MAJOR} << 16) | NCCL_MINOR),
                  "NCCL: libtorch was built with NCCL ", built >> 32, ".", (built >> 16) & 0xffff,
                  ", this shim with the headers of ", NCCL_MAJOR, ".", NCCL_MINOR,
                  ": rebuild with matching headers (NCCL_HOME)");
      g->device = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device));
      const auto* impl = c10::impl::getDeviceGuardImpl(at::kCUDA);
      impl->setDevice(g->device);
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = g->timeout;
      g->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(g->store, rank, world, opts);
      g->stream_ordered = true;
#else
      TORCH_CHECK(false, "NCCL: this build found no CUDA/NCCL headers (see trainer/build.rs)");
#endif
    } else {
      TORCH_CHECK(false, "unknown backend code ", backend);
    }

    at::Tensor one = at::ones({1}, at::TensorOptions().dtype(at::kFloat).device(g->device));
    all_reduce_sum(*g, one);
    const double n = one.item<double>();  // waits on the host too
    g->collectives = 0;
    TORCH_CHECK(n == static_cast<double>(world), "handshake: ", n, " ranks answered, expected ",
                world);
    *out = new RclGroupHandle{std::move(g)};
  })
}

// In place: `t = sum over ranks of t`. `t` must be contiguous and on the group's device.
int rcl_dist_all_reduce_sum(RclGroupHandle* h, at::Tensor* t) {
  RCL_TRY(all_reduce_sum(*h->group, *t))
}

// In place: every rank's `t` becomes rank `root`'s.
int rcl_dist_broadcast(RclGroupHandle* h, at::Tensor* t, int root) {
  RCL_TRY({
    const RclGroup& g = *h->group;
    check_tensor(g, *t, "broadcast");
    TORCH_CHECK(root >= 0 && root < g.world, "broadcast: root ", root, " not in the world");
    std::vector<at::Tensor> ts{*t};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = g.timeout;
    g.collectives++;
    wait(g, g.backend->broadcast(ts, opts), "broadcast");
  })
}

// `[n, ...]` on every rank -> `[world * n, ...]`, rank r's rows at `[r * n, (r + 1) * n)`.
int rcl_dist_all_gather(RclGroupHandle* h, const at::Tensor* x, at::Tensor** out) {
  RCL_TRY({
    at::Tensor y;
    {
      at::NoGradGuard no_grad;
      y = all_gather(*h->group, x->detach());
    }
    *out = new at::Tensor(std::move(y));
  })
}

// As `rcl_dist_all_gather`, recorded for autograd when `x` requires grad (see AllGatherBackward).
// Every rank must run the backward, since it is a collective.
int rcl_dist_all_gather_autograd(RclGroupHandle* h, const at::Tensor* x, at::Tensor** out) {
  RCL_TRY({
    at::Tensor y;
    {
      at::NoGradGuard no_grad;
      y = all_gather(*h->group, x->detach());
    }
    if (x->requires_grad() && at::GradMode::is_enabled()) {
      auto node = std::shared_ptr<AllGatherBackward>(new AllGatherBackward(),
                                                     torch::autograd::deleteNode);
      node->group = h->group;
      node->rows = x->size(0);
      node->set_next_edges(torch::autograd::collect_next_edges(*x));
      torch::autograd::set_history(y, node);
    }
    *out = new at::Tensor(std::move(y));
  })
}

// Returns when every rank has called it (a one-element all-reduce: the same code path on Gloo and
// NCCL, and a dead peer surfaces as the same error).
int rcl_dist_barrier(RclGroupHandle* h) {
  RCL_TRY({
    const RclGroup& g = *h->group;
    at::Tensor one = at::ones({1}, at::TensorOptions().dtype(at::kFloat).device(g.device));
    all_reduce_sum(g, one);
    if (g.device.is_cuda()) one.item<float>();  // wait on the host too
  })
}

// SyncBN on the group (sync_bn.cpp): `weight` and `bias` may be null (no affine parameters);
// `running_mean` / `running_var` are updated in place.
int rcl_dist_sync_batch_norm(RclGroupHandle* h, const at::Tensor* x, const at::Tensor* weight,
                             const at::Tensor* bias, at::Tensor* running_mean,
                             at::Tensor* running_var, double momentum, double eps,
                             at::Tensor** out) {
  RCL_TRY({
    TORCH_CHECK(x->device() == h->group->device, "sync_batch_norm: input on ", x->device(),
                ", the group works on ", h->group->device);
    const at::Tensor w = weight != nullptr ? *weight : at::Tensor();
    const at::Tensor b = bias != nullptr ? *bias : at::Tensor();
    *out = new at::Tensor(rcl::sync_batch_norm(h->group, *x, w, b, *running_mean, *running_var,
                                               momentum, eps));
  })
}

// Collectives this process has issued on the group since it was built.
int rcl_dist_collectives(RclGroupHandle* h, std::uint64_t* out) {
  RCL_TRY(*out = h->group->collectives.load())
}

// Sets flag `tag` in the store (rank 0, when it has done what the others wait for): 1 = done,
// 0 = failed. Each tag is set once.
int rcl_dist_publish(RclGroupHandle* h, const char* tag, int ok) {
  RCL_TRY({
    const std::vector<uint8_t> value{static_cast<uint8_t>(ok != 0 ? 1 : 0)};
    h->group->store->set(flag_key(tag), value);
  })
}

// Waits, without a timeout, until flag `tag` is set, and returns it in `ok`. It asks the store
// every `poll_ms`: a store that goes away (rank 0, its host, died; torchrun's agent ends the run
// when a rank dies) is an error, so this never waits for a dead peer.
int rcl_dist_await(RclGroupHandle* h, const char* tag, int poll_ms, int* ok) {
  RCL_TRY({
    const auto& store = h->group->store;
    const std::string key = flag_key(tag);
    while (!store->check({key})) std::this_thread::sleep_for(Millis(poll_ms));
    const auto value = store->get(key);
    *ok = !value.empty() && value[0] == 1 ? 1 : 0;
  })
}

// Orderly end: flushes and releases the backend's communicators (NCCL's `shutdown`).
int rcl_dist_shutdown(RclGroupHandle* h) { RCL_TRY(h->group->backend->shutdown()) }

// Non-blocking teardown after an error (NCCL's `abort`: pending collectives are cancelled).
int rcl_dist_abort(RclGroupHandle* h) { RCL_TRY(h->group->backend->abort()) }

// Releases the handle; the group itself goes when the last autograd node that uses it does.
void rcl_dist_free(RclGroupHandle* h) { delete h; }

}  // extern "C"
