// Declarations only (see ../../README.md): ProcessGroupGloo.hpp names these through smart pointers.
#pragma once

namespace gloo {
namespace transport {
class Device;
class UnboundBuffer;
}  // namespace transport
}  // namespace gloo
