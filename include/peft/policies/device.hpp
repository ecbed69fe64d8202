// Where the model runs. A device policy names the backend whose kernels the layers call; the
// CPU backend (Eigen) is the reference every other backend is held to. The Cuda policy lives in
// peft/kernels/cuda/ and is only visible to nvcc translation units.
#pragma once
#include <concepts>
#include <string_view>

namespace peft {

template <class D>
concept DevicePolicy = requires {
  { D::name } -> std::convertible_to<std::string_view>;
};

struct Cpu {
  static constexpr std::string_view name = "cpu";
};

}  // namespace peft
