// What kind of layer a linear projection is, decided at compile time. A policy is a tag type
// with three static members (the LinearPolicy concept): whether the base weight trains, whether
// a LoRA adapter rides on it, and the adapter rank (kDynamicRank: taken from the run's flags).
// Which modules a LoRA adapter is actually attached to (`--target_modules`) stays a run-time
// choice: a Lora projection that is not targeted behaves as Frozen.
#pragma once
#include <concepts>
#include <string_view>

namespace peft {

inline constexpr int kDynamicRank = 0;

template <class P>
concept LinearPolicy = requires {
  { P::trains_base } -> std::convertible_to<bool>;
  { P::has_adapter } -> std::convertible_to<bool>;
  { P::rank } -> std::convertible_to<int>;
  { P::name } -> std::convertible_to<std::string_view>;
};

// The base weight is read-only: no gradient buffer, no optimizer state.
struct Frozen {
  static constexpr bool trains_base = false;
  static constexpr bool has_adapter = false;
  static constexpr int rank = 0;
  static constexpr std::string_view name = "frozen";
};

// The whole weight (and bias) trains: full fine-tuning of this projection.
struct Full {
  static constexpr bool trains_base = true;
  static constexpr bool has_adapter = false;
  static constexpr int rank = 0;
  static constexpr std::string_view name = "full";
};

// Frozen base + trainable low-rank A (r x in) and B (out x r), scaled by alpha / r (alpha / sqrt(r)
// with use_rslora), as PEFT.
template <int Rank = kDynamicRank>
struct Lora {
  static_assert(Rank >= 0, "Lora<Rank>: the rank must be positive (or kDynamicRank for a run-time rank)");
  static constexpr bool trains_base = false;
  static constexpr bool has_adapter = true;
  static constexpr int rank = Rank;
  static constexpr std::string_view name = "lora";
};

// The seven projections of a decoder layer, the lm_head, and whether the embedding and the
// RMSNorm weights train. Aliases below spell the common layouts.
template <LinearPolicy Q, LinearPolicy K, LinearPolicy V, LinearPolicy O, LinearPolicy Gate,
          LinearPolicy Up, LinearPolicy Down, LinearPolicy LmHead = Frozen, bool TrainEmbedding = false,
          bool TrainNorms = false>
struct Projections {
  using q = Q; using k = K; using v = V; using o = O;
  using gate = Gate; using up = Up; using down = Down;
  using lm_head = LmHead;
  static constexpr bool train_embedding = TrainEmbedding;
  static constexpr bool train_norms = TrainNorms;
};

template <LinearPolicy P>
using AllLinear = Projections<P, P, P, P, P, P, P>;
template <LinearPolicy P>
using AttentionOnly = Projections<P, P, P, P, Frozen, Frozen, Frozen>;
// Every parameter trains: `--train_type full`.
using FullModel = Projections<Full, Full, Full, Full, Full, Full, Full, Full, true, true>;

template <class T>
concept ProjectionLayout = requires {
  typename T::q; typename T::k; typename T::v; typename T::o;
  typename T::gate; typename T::up; typename T::down; typename T::lm_head;
  { T::train_embedding } -> std::convertible_to<bool>;
  { T::train_norms } -> std::convertible_to<bool>;
};

// Qwen2<Lora<8>, ...> reads as "LoRA r=8 on all linear layers"; Qwen2<Full, ...> as full fine-tuning.
template <class T> struct layout_of { using type = T; };
template <LinearPolicy P> struct layout_of<P> { using type = AllLinear<P>; };
template <> struct layout_of<Full> { using type = FullModel; };
template <class T> using layout_of_t = typename layout_of<T>::type;

}  // namespace peft
