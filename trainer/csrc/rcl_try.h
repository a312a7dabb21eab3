// The error convention of the shims' C ABI: a function returns 0 on success and 1 when a C++
// exception was thrown, whose message the shim's `*_last_error` then returns (per thread).
#pragma once

#include <exception>
#include <string>

namespace {
thread_local std::string g_last_error;
}  // namespace

// Runs the statements; returns 0, or records the exception's message and returns 1.
#define RCL_TRY(...)                        \
  try {                                     \
    __VA_ARGS__;                            \
    return 0;                               \
  } catch (const std::exception& e) {       \
    g_last_error = e.what();                \
    return 1;                               \
  } catch (...) {                           \
    g_last_error = "unknown C++ exception"; \
    return 1;                               \
  }
