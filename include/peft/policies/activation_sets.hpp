// How an activation policy (policies/cuda_device.hpp) lays out the CUDA model's per-layer
// activation sets under CudaModelOptions::recompute_num_layers: layers [0, shared) share one set
// (recompute) or one MLP side (selective) and rebuild it before their backward, but the last of
// them, whose values are still there; the other layers keep their own sets, in layer order after
// the shared one. layers/cuda/decoder_layer.cuh plans the sets, models/cuda/qwen2.cuh picks one a
// layer. Plain C++ (no CUDA headers), so the layout is unit-tested without a GPU
// (tests/test_memory_budget.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "peft/core/error.hpp"

namespace peft::cuda {

// --recompute_num_layers' range for a model of `layers` layers (`model`: what the message calls it).
inline void check_recompute_num_layers(int n, std::int64_t layers, const std::string& model) {
  require(n >= -1 && n <= layers,
          "--recompute_num_layers {}: {} has {} layers (0 to {}, or -1 for all of them)", n, model, layers, layers);
}

struct ActivationSets {
  std::size_t layers = 0, shared = 0;  // shared: 0 under keep-all
  bool whole_sets = false;             // recompute shares whole sets, selective only the MLP side

  static constexpr bool keeps_all(bool keeps_layers, bool keeps_mlp) { return keeps_layers && keeps_mlp; }
  static ActivationSets of_policy(std::size_t layers, bool keeps_layers, bool keeps_mlp, int recompute_num_layers) {
    const std::size_t n = recompute_num_layers < 0 ? layers : static_cast<std::size_t>(recompute_num_layers);
    return {layers, keeps_all(keeps_layers, keeps_mlp) ? 0 : n, !keeps_layers};
  }
  std::size_t count() const { return whole_sets ? layers - shared + (shared > 0 ? 1 : 0) : layers; }
  std::size_t of(std::size_t layer) const {
    if (!whole_sets || layer < shared) return whole_sets ? 0 : layer;
    return layer - shared + (shared > 0 ? 1 : 0);
  }
  std::size_t mlp_sharers() const { return whole_sets ? 0 : shared; }
  bool rebuilds(std::size_t layer) const { return layer + 1 < shared; }
};

}  // namespace peft::cuda
