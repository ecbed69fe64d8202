// Will the run fit the GPU? The CUDA model's arena plan (qwen2_cuda.cuh's planned_memory: the same
// plan() that lays the arena out, run as a count) split into what it holds, and the choice among
// keeping every layer's activations, keeping the attention side only (selective) and recomputing
// each layer, made before anything is allocated.
// Plain C++ (no CUDA headers) so the arithmetic and the decision are unit-tested on machines without
// a GPU (tests/test_memory_budget.cpp); the programs feed it cudaMemGetInfo's free bytes.
//
// Why decide up front: a 24 GB card (RTX 3090 / 4090) holds the 7B's 15.2 GB of bf16 weights plus
// either the recompute plan (~1.3 GB of activations at 2048 tokens) or the keep-all plan (~7 GB),
// next to the CUDA context and whatever else runs there. Finding out by a failed cudaMalloc
// half-way through set-up wastes the checkpoint load and says nothing about what would fit.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <iterator>
#include <string>

#include "peft/core/error.hpp"

namespace peft::cuda {

struct PlannedMemory {
  std::size_t weights = 0;      // frozen weights (bf16; projections in NF4 under Nf4Base), LoRA masters and copies
  std::size_t activations = 0;  // what the forward keeps for the backward, residual stream included
  std::size_t optimizer = 0;    // LoRA gradients and AdamW moments
  std::size_t workspace = 0;    // per-step scratch (NF4: + one dequantised projection), logits chunk, batch
                                // tables, cuBLASLt, optimizer lists
  std::size_t host_embedding = 0;  // a frozen untied embedding in pinned host memory: not device memory
  std::size_t total() const { return weights + activations + optimizer + workspace; }  // device bytes
};

// Device memory a run needs beyond its arena (cuBLASLt's handle, captured graphs, stream and
// event pools): kept free when deciding whether a plan fits.
inline constexpr std::size_t kUnplannedReserve = std::size_t{512} << 20;

inline std::string gb(std::size_t bytes) {
  char s[32];
  std::snprintf(s, sizeof s, "%.2f GB", static_cast<double>(bytes) / 1e9);
  return s;
}

// "16.71 GB (weights 15.27 GB, activations 0.65 GB, optimizer state 0.16 GB, workspace 0.63 GB)", and
// "; embedding: host (pinned) 1.09 GB" after it when the embedding lives in host memory.
inline std::string describe(const PlannedMemory& p) {
  return gb(p.total()) + " (weights " + gb(p.weights) + ", activations " + gb(p.activations) + ", optimizer state " +
         gb(p.optimizer) + ", workspace " + gb(p.workspace) + ")" +
         (p.host_embedding ? "; embedding: host (pinned) " + gb(p.host_embedding) : std::string());
}

inline bool fits(const PlannedMemory& p, std::size_t free_bytes) { return p.total() + kUnplannedReserve <= free_bytes; }

// What the forward keeps (policies/cuda_device.hpp: Cuda, CudaSelective, CudaRecompute). kAuto is
// only ever asked for, never run: the fastest of the three whose plan fits.
enum class Activations { kKeep, kSelective, kRecompute, kAuto };

// --gradient_checkpointing's values: ms-swift's true | false, and ours: `selective` (keep the
// attention side, rebuild the norms and gate/up before each layer's backward) and `auto` (the
// programs' default: the fastest plan that fits the free memory). The policies give the same
// numbers (cuda_test_model), so only memory and speed depend on the choice; ms-swift defaults to
// true because HF's keep-all needs about twice our plan.
inline Activations parse_gradient_checkpointing(const std::string& v) {
  if (v == "true" || v == "True" || v == "1") return Activations::kRecompute;
  if (v == "false" || v == "False" || v == "0") return Activations::kKeep;
  if (v == "selective") return Activations::kSelective;
  if (v == "auto") return Activations::kAuto;
  throw Error("--gradient_checkpointing: '" + v + "' is not supported (valid: auto, true, false, selective)");
}
// The flag's value that asks for `a` (args.json records the policy that ran).
inline const char* gradient_checkpointing_flag(Activations a) {
  switch (a) {
    case Activations::kKeep: return "false";
    case Activations::kSelective: return "selective";
    case Activations::kRecompute: return "true";
    case Activations::kAuto: break;
  }
  return "auto";
}

// What --recompute_num_layers n does to a model of `layers` layers under recompute or selective, for
// the run's log (n < 0: every layer shares, the flag's default). The last sharing layer's values
// are still there at its backward, so n sharing layers rebuild n - 1 times (policies/activation_sets.hpp).
inline std::string describe_recompute_layers(int n, int layers) {
  if (n < 0 || n > layers) n = layers;
  if (n <= 1) return "no layer rebuilds: all " + std::to_string(layers) + " keep their activations";
  const std::string rebuilt = n == 2 ? "layer 0 rebuilds" : "layers 0-" + std::to_string(n - 2) + " rebuild";
  const std::string shared = rebuilt + " in the backward, layer " + std::to_string(n - 1) +
                             (n == layers ? " (the last) " : " ") + "shares their set without rebuilding";
  if (n == layers) return shared;
  const std::string kept = n == layers - 1 ? "layer " + std::to_string(n) + " keeps all its activations"
                                           : "layers " + std::to_string(n) + "-" + std::to_string(layers - 1) +
                                                 " keep all their activations";
  return shared + ", " + kept;
}

// The smallest --recompute_num_layers whose plan fits `free_bytes`, under recompute or selective.
// Each layer that keeps everything instead of sharing adds the same bytes (a layer's set, or its
// MLP side), so two plans give every other: `all` (every layer shares) and `one_kept` (the last
// layer keeps). rebuilt = -1 when not even `all` fits; 0 when every layer may keep (one sharing
// layer costs what none do: its set is its own).
struct RebuiltLayersFit {
  int rebuilt = -1;
  std::size_t planned = 0;  // the plan's total at that value
};
inline RebuiltLayersFit fewest_rebuilt_layers(const PlannedMemory& all, const PlannedMemory& one_kept, int layers,
                                              std::size_t free_bytes) {
  if (!fits(all, free_bytes)) return {};
  if (one_kept.total() <= all.total()) return {layers, all.total()};  // no step to take: leave it as asked
  const std::size_t per_layer = one_kept.total() - all.total();
  const std::size_t room = free_bytes - kUnplannedReserve - all.total();
  const std::size_t most = layers > 1 ? static_cast<std::size_t>(layers - 1) : 0;  // kept layers that save
  const std::size_t kept = std::min(most, room / per_layer);
  const int rebuilt = static_cast<int>(most - kept) + (kept == most ? 0 : 1);
  return {rebuilt, all.total() + kept * per_layer};
}

// After the policy is chosen (`chosen`), what kept layers can do when keep-all does not fit: asked for
// false, the run takes the most that fit under the leaner policy it fell back to (apply); asked for
// true or selective, which save memory on purpose, the note only names them. `given`: the flag's
// value (-1: not given; the note then just describes it). Empty note: nothing to say. `one_kept()`
// counts the plan with the last layer kept (fewest_rebuilt_layers), only when the answer needs it.
struct KeptLayersAdvice {
  int recompute_num_layers = -1;  // what the run uses
  std::string note;
};
template <class OneKeptPlan>
KeptLayersAdvice advise_kept_layers(Activations asked, Activations chosen, int given, const PlannedMemory& keep,
                                    const PlannedMemory& all, const OneKeptPlan& one_kept, int layers,
                                    std::size_t free_bytes) {
  KeptLayersAdvice a{given, ""};
  if (chosen == Activations::kKeep) return a;
  if (given >= 0) {
    a.note = "[memory] --recompute_num_layers " + std::to_string(given) + ": " + describe_recompute_layers(given, layers);
    return a;
  }
  if (fits(keep, free_bytes) || layers <= 1) return a;
  const RebuiltLayersFit f = fewest_rebuilt_layers(all, one_kept(), layers, free_bytes);
  if (f.rebuilt < 0 || f.rebuilt >= layers) return a;
  const std::string what = "--gradient_checkpointing " +
                           std::string(chosen == Activations::kSelective ? "selective" : "true") +
                           " --recompute_num_layers " + std::to_string(f.rebuilt) + " (planned peak " + gb(f.planned) +
                           ": " + describe_recompute_layers(f.rebuilt, layers) + ")";
  if (asked == Activations::kKeep || asked == Activations::kAuto) {
    a.recompute_num_layers = f.rebuilt;
    a.note = "[memory] the layers that fit keep everything, as --gradient_checkpointing " +
             std::string(gradient_checkpointing_flag(asked)) + " asked: " + what;
  } else {
    a.note = "[memory] faster within the free memory: " + what;
  }
  return a;
}

struct ActivationChoice {
  Activations policy = Activations::kRecompute;
  std::string note;  // printed before training: the plan chosen and, if switched, why
};

// The asked policy when its plan fits the free memory, else the next leaner one that fits (keep ->
// selective -> recompute), saying why; `true` (ms-swift's default) asks for recompute, `auto` for the
// first that fits from keep on. The note names the faster plans that would fit too (auto: the
// leaner ones, for a run that must leave memory to others). Throws, with the numbers, when not even
// recompute fits (`layers_kept`: the plans keep some layers whole, --recompute_num_layers, which the
// advice names).
inline ActivationChoice choose_activations(Activations asked, const PlannedMemory& keep, const PlannedMemory& selective,
                                           const PlannedMemory& recompute, std::size_t free_bytes,
                                           bool layers_kept = false) {
  const std::string free_s = gb(free_bytes) + " free on the GPU (" + gb(kUnplannedReserve) + " of it kept for cuBLAS and graphs)";
  struct Option {
    Activations policy;
    const PlannedMemory& plan;
    const char* what;
    const char* flag() const { return gradient_checkpointing_flag(policy); }
  };
  const Option options[] = {
      {Activations::kKeep, keep, "keep every layer's activations"},
      {Activations::kSelective, selective,
       "keep the attention side, rebuild the norms and gate/up before each layer's backward"},
      {Activations::kRecompute, recompute, "recompute each layer in the backward"}};
  const bool automatic = asked == Activations::kAuto;
  std::size_t i = automatic ? 0 : static_cast<std::size_t>(asked);
  const Option& first = options[i];
  while (i + 1 < std::size(options) && !fits(options[i].plan, free_bytes)) ++i;
  const Option& o = options[i];
  // "false 23.10 GB, selective 18.50 GB" (or "false (23.10 GB), ..." with `parens`): the plans in
  // [from, to), those that fit only when `fitting`.
  const auto named = [&](const Option* from, const Option* to, bool parens, bool fitting = false) {
    std::string s;
    for (const Option* p = from; p != to; ++p)
      if (!fitting || fits(p->plan, free_bytes))
        s += (s.empty() ? "" : ", ") + std::string(p->flag()) + (parens ? " (" : " ") + gb(p->plan.total()) +
             (parens ? ")" : "");
    return s;
  };
  if (!fits(o.plan, free_bytes)) {
    const std::string asked_s = automatic ? std::string("auto: keep-all") : std::string(first.flag());
    const std::string what = &o == &first ? std::string("--gradient_checkpointing true (recompute)")
                                          : "--gradient_checkpointing " + asked_s + " plans " +
                                                gb(first.plan.total()) + ", and even recompute";
    throw Error("the run does not fit the GPU: " + what + " plans " + describe(o.plan) + " but there is " + free_s +
                "; " + std::string(layers_kept ? "raise --recompute_num_layers (or leave it out), " : "") +
                "lower --max_length or --per_device_train_batch_size / --per_device_eval_batch_size, "
                "or use a GPU with more memory");
  }
  ActivationChoice c;
  c.policy = o.policy;
  if (automatic) {
    const std::string passed = named(options, &o, false);                 // the faster plans that did not fit
    const std::string leaner = named(&o + 1, std::end(options), true);    // what a user may ask for instead
    c.note = "[memory] --gradient_checkpointing auto (the fastest plan that fits): " + std::string(o.flag()) + ", " +
             o.what + "; planned peak " + describe(o.plan) + ", " + free_s +
             (passed.empty() ? "" : "; too large: " + passed) +
             (leaner.empty() ? "" : "; to use less memory: --gradient_checkpointing " + leaner);
  } else if (&o == &first) {
    c.note = "[memory] --gradient_checkpointing " + std::string(o.flag()) + ": " + o.what + "; planned peak " +
             describe(o.plan) + ", " + gb(free_bytes) + " free";
    const std::string faster = named(options, &o, true, true);  // keep more, so run faster, and would fit too
    if (!faster.empty()) c.note += "; faster plans that fit: --gradient_checkpointing " + faster;
  } else {
    const std::string skipped = named(&first + 1, &o, false);  // tried between the asked one and the chosen one
    c.note = "[memory] --gradient_checkpointing " + std::string(first.flag()) + " plans " + describe(first.plan) +
             (skipped.empty() ? "" : ", " + skipped) + " but there is " + free_s +
             ": switching to --gradient_checkpointing " + o.flag() + " (" + o.what + "), planned peak " +
             describe(o.plan);
  }
  return c;
}

}  // namespace peft::cuda
