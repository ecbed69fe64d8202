// The run-time half of LoRA: rank, alpha, dropout and which modules carry an adapter
// (`--target_modules`). The compile-time half is the Lora<Rank> projection policy.
// "all-linear" means the seven projections of every decoder layer and never the lm_head,
// as PEFT resolves it for causal LMs.
#pragma once
#include <algorithm>
#include <cmath>
#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "peft/core/error.hpp"

namespace peft {

inline constexpr std::array<std::string_view, 7> kQwen2Projections = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

struct LoraConfig {
  int r = 8;
  double lora_alpha = 32;
  double lora_dropout = 0.05;
  std::vector<std::string> target_modules = {"all-linear"};
  // Rank-stabilised LoRA (PEFT's use_rslora): the update is scaled by alpha / sqrt(r) instead of
  // alpha / r, so its size does not shrink as the rank grows.
  bool use_rslora = false;

  double scaling() const { return use_rslora ? lora_alpha / std::sqrt(static_cast<double>(r)) : lora_alpha / r; }

  // `module` is the projection's short name (q_proj ...) or its full path.
  bool targets(std::string_view module) const {
    const auto dot = module.rfind('.');
    const std::string_view shortname = dot == std::string_view::npos ? module : module.substr(dot + 1);
    return std::any_of(target_modules.begin(), target_modules.end(), [&](const std::string& t) {
      if (t == "all-linear") return std::find(kQwen2Projections.begin(), kQwen2Projections.end(), shortname) !=
                                    kQwen2Projections.end();
      if (t == module) return true;  // full path, as PEFT writes after resolving "all-linear"
      return t == shortname;
    });
  }

  void validate() const {
    require(r > 0, "--lora_rank must be positive (got {})", r);
    require(lora_alpha > 0 && std::isfinite(lora_alpha), "--lora_alpha must be positive and finite (got {})", lora_alpha);
    require(lora_dropout >= 0 && lora_dropout < 1, "--lora_dropout must be in [0, 1) (got {})", lora_dropout);
    require(!target_modules.empty(), "--target_modules is empty");
    for (const auto& t : target_modules) {
      if (t == "all-linear" || t.find('.') != std::string::npos) continue;
      if (std::find(kQwen2Projections.begin(), kQwen2Projections.end(), t) == kQwen2Projections.end())
        fail("--target_modules: unknown module '{}' (valid: all-linear, q_proj, k_proj, v_proj, o_proj, "
             "gate_proj, up_proj, down_proj)", t);
    }
  }
};

// A projection compiled for Lora<R> with a fixed R (both backends' Linear<Lora<R>>) runs only
// with --lora_rank R: the rank sizes its buffers and kernels.
inline void check_compiled_rank(int compiled_rank, const LoraConfig& cfg) {
  require(cfg.r == compiled_rank, "this program was compiled for LoRA rank {} but --lora_rank is {}", compiled_rank,
          cfg.r);
}

}  // namespace peft
