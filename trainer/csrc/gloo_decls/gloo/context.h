// Declarations only (see ../README.md). ProcessGroupGloo.hpp holds gloo::Context through
// std::shared_ptr, and its inline `setTimeout` calls `Context::setTimeout`, so that one member is
// declared. The shim never calls it (nor constructs a Context); libtorch_cpu.so has the definition.
#pragma once

#include <chrono>

namespace gloo {

class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};

}  // namespace gloo
