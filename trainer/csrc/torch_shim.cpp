// What tch 0.24 lacks, in a few C entry points over libtorch (ATen) itself:
//   - bf16 autocast on the CPU and on CUDA (tch's autocast is fp16 only, CUDA only, and deprecated
//     in libtorch),
//   - channels_last memory format,
//   - pinned host tensors for the loader's buffers,
//   - multi-tensor (foreach / fused) SGD and EMA updates,
//   - the CUDA caching allocator's peak memory statistics.
//
// Tensors cross the boundary as tch's `C_tensor*`, which torch-sys defines as `torch::Tensor*`
// (= `at::Tensor*`). New tensors are returned as `new at::Tensor(...)`; tch's `Drop` deletes them
// with `at_free`, i.e. `delete`, from the same C++ runtime.
//
// Every entry point returns 0 on success and 1 on a C++ exception, whose message is then available
// from `rcl_last_error` on the same thread.

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <c10/core/CachingDeviceAllocator.h>

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "rcl_try.h"

namespace {

// The device types autocast is asked about (c10::DeviceType codes, as the Rust side passes them).
at::DeviceType autocast_device(int device_type) {
  const auto dt = static_cast<at::DeviceType>(device_type);
  TORCH_CHECK(dt == at::kCPU || dt == at::kCUDA, "autocast on device type ", device_type,
              ": only CPU (0) and CUDA (1)");
  return dt;
}

std::vector<at::Tensor> tensor_list(at::Tensor* const* ts, size_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (size_t i = 0; i < n; ++i) v.push_back(*ts[i]);
  return v;
}

}  // namespace


extern "C" {

const char* rcl_last_error() { return g_last_error.c_str(); }

// Enters an autocast region on `device_type` (a c10::DeviceType code: 0 = CPU, 1 = CUDA), like
// `torch.autocast(device, dtype, enabled)`: records the previous state, sets enabled/dtype,
// increments the nesting counter. `dtype` is a c10::ScalarType code (15 = BFloat16, 5 = Half).
int rcl_autocast_enter(int device_type, int enabled, int dtype, int* prev_enabled,
                       int* prev_dtype) {
  RCL_TRY({
    const auto dt = autocast_device(device_type);
    *prev_enabled = at::autocast::is_autocast_enabled(dt) ? 1 : 0;
    *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(dt));
    at::autocast::set_autocast_enabled(dt, enabled != 0);
    at::autocast::set_autocast_dtype(dt, static_cast<at::ScalarType>(dtype));
    at::autocast::increment_nesting();
  })
}

// Leaves an autocast region: decrements the nesting counter (clearing the cast cache when the
// outermost region ends, as `torch.autocast.__exit__` does) and restores the previous state.
int rcl_autocast_exit(int device_type, int prev_enabled, int prev_dtype) {
  RCL_TRY({
    const auto dt = autocast_device(device_type);
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(dt, prev_enabled != 0);
    at::autocast::set_autocast_dtype(dt, static_cast<at::ScalarType>(prev_dtype));
  })
}

int rcl_autocast_is_enabled(int device_type, int* out) {
  RCL_TRY(*out = at::autocast::is_autocast_enabled(autocast_device(device_type)) ? 1 : 0)
}

// `t.contiguous(memory_format)`: 1 = channels_last, 0 = contiguous (NCHW).
int rcl_contiguous(const at::Tensor* t, int channels_last, at::Tensor** out) {
  RCL_TRY({
    const auto fmt = channels_last != 0 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    *out = new at::Tensor(t->contiguous(fmt));
  })
}

int rcl_is_channels_last(const at::Tensor* t, int* out) {
  RCL_TRY(*out = t->is_contiguous(at::MemoryFormat::ChannelsLast) ? 1 : 0)
}

// An uninitialised CPU tensor in page-locked (pinned) memory, from libtorch's caching host
// allocator, so host-to-device copies from it can be asynchronous. Fails without CUDA.
int rcl_empty_pinned(const int64_t* sizes, int ndim, int dtype, at::Tensor** out) {
  RCL_TRY({
    auto opts = at::TensorOptions().dtype(static_cast<at::ScalarType>(dtype)).pinned_memory(true);
    *out = new at::Tensor(at::empty(at::IntArrayRef(sizes, static_cast<size_t>(ndim)), opts));
  })
}

int rcl_is_pinned(const at::Tensor* t, int* out) { RCL_TRY(*out = t->is_pinned() ? 1 : 0) }

// SGD with momentum and weight decay over all tensors at once (PyTorch semantics, dampening 0,
// no Nesterov): v = momentum * v + (g + wd * w); w -= lr * v. Momentum buffers must start at
// zero. `fused` selects at::_fused_sgd_ (one multi-tensor kernel, CUDA); otherwise _foreach_ ops.
int rcl_sgd_step(at::Tensor* const* params, at::Tensor* const* grads, at::Tensor* const* bufs,
                 size_t n, double lr, double momentum, double weight_decay, int fused) {
  RCL_TRY({
    auto p = tensor_list(params, n);
    auto g = tensor_list(grads, n);
    auto v = tensor_list(bufs, n);
    if (fused != 0) {
      at::_fused_sgd_(p, g, v, weight_decay, momentum, lr, /*dampening=*/0.0, /*nesterov=*/false,
                      /*maximize=*/false, /*is_first_step=*/false);
    } else {
      auto d = at::_foreach_add(g, p, weight_decay);  // g + wd * w
      at::_foreach_mul_(v, momentum);
      at::_foreach_add_(v, d);
      at::_foreach_add_(p, v, -lr);
    }
  })
}

// Momentum-encoder update over all tensors at once: k = k * m + q * (1 - m).
int rcl_ema_update(at::Tensor* const* k, at::Tensor* const* q, size_t n, double m) {
  RCL_TRY({
    auto kk = tensor_list(k, n);
    auto qq = tensor_list(q, n);
    at::_foreach_mul_(kk, m);
    at::_foreach_add_(kk, qq, 1.0 - m);
  })
}

// The CUDA caching allocator's peaks on device `index` since the last reset: bytes allocated to
// tensors and bytes reserved from the driver (what nvidia-smi counts, less the CUDA context).
// Fails without CUDA.
int rcl_cuda_peak_memory(int index, uint64_t* allocated, uint64_t* reserved) {
  RCL_TRY({
    const auto stats =
        c10::getDeviceAllocator(at::kCUDA)->getDeviceStats(static_cast<c10::DeviceIndex>(index));
    const auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    *allocated = static_cast<uint64_t>(stats.allocated_bytes[all].peak);
    *reserved = static_cast<uint64_t>(stats.reserved_bytes[all].peak);
  })
}

// Resets the peaks of `rcl_cuda_peak_memory` to the current values.
int rcl_cuda_reset_peak_memory(int index) {
  RCL_TRY(c10::getDeviceAllocator(at::kCUDA)->resetPeakStats(static_cast<c10::DeviceIndex>(index)))
}

}  // extern "C"
