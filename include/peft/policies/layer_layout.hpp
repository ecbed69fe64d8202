// Layouts that differ between decoder layers. A Projections<...> bundle gives every layer the
// same seven policies; a layer-wise layout splits the stack in two contiguous runs so that
// "full fine-tune of the last 2 layers, LoRA r=8 elsewhere" is one model type:
//   Qwen2<LastLayers<2, Full, Lora<8>>, Fp32, Cpu>
// The layers keep HF order: layers [0, L - N) use Rest, layers [L - N, L) use Tail, where L is
// config.json's num_hidden_layers (checked at run time: N <= L).
//
// Whole-model settings (lm_head, train_embedding, train_norms) are read from ONE place: Rest.
// Tail only chooses its layers' seven projections; a Tail that sets any whole-model setting
// differently is rejected at compile time, so nothing is decided twice. (train_norms therefore
// covers every norm: the per-layer norms and model.norm train together or not at all.)
// When both runs carry LoRA they must adapt the same projections with the same rank: a PEFT
// adapter has one target_modules list and one r (layers_to_transform then selects the layers).
#pragma once
#include <concepts>

#include "peft/policies/linear_policy.hpp"

namespace peft {

// A linear policy inside LastLayers means "these seven projections" (AllLinear<P>), never the
// whole-model FullModel that Qwen2<Full> stands for.
template <class T> struct layer_layout_of { using type = T; };
template <LinearPolicy P> struct layer_layout_of<P> { using type = AllLinear<P>; };
template <class T> using layer_layout_of_t = typename layer_layout_of<T>::type;

namespace detail {
template <LinearPolicy X, LinearPolicy Y>
inline constexpr bool same_adapter = X::has_adapter == Y::has_adapter && (!X::has_adapter || X::rank == Y::rank);
template <ProjectionLayout A, ProjectionLayout B>
inline constexpr bool same_adapters =
    same_adapter<typename A::q, typename B::q> && same_adapter<typename A::k, typename B::k> &&
    same_adapter<typename A::v, typename B::v> && same_adapter<typename A::o, typename B::o> &&
    same_adapter<typename A::gate, typename B::gate> && same_adapter<typename A::up, typename B::up> &&
    same_adapter<typename A::down, typename B::down>;
template <ProjectionLayout L>
constexpr bool any_adapter() {
  return L::q::has_adapter || L::k::has_adapter || L::v::has_adapter || L::o::has_adapter || L::gate::has_adapter ||
         L::up::has_adapter || L::down::has_adapter;
}
}  // namespace detail

// The last N decoder layers use TailLayout, the others RestLayout (each a linear policy or a
// Projections<...> bundle).
template <int N, class TailLayout, class RestLayout>
struct LastLayers {
  using tail = layer_layout_of_t<TailLayout>;
  using rest = layer_layout_of_t<RestLayout>;
  static_assert(ProjectionLayout<tail> && ProjectionLayout<rest>,
                "LastLayers<N, Tail, Rest>: Tail and Rest must each be a linear policy (Lora<r>, Full, Frozen) or a "
                "Projections<...> bundle");
  static_assert(N >= 1, "LastLayers<N, Tail, Rest>: N is the number of last layers that use Tail and must be >= 1 "
                        "(for N = 0 use Rest itself)");
  static_assert(std::same_as<typename tail::lm_head, typename rest::lm_head> &&
                    tail::train_embedding == rest::train_embedding && tail::train_norms == rest::train_norms,
                "LastLayers<N, Tail, Rest>: lm_head, train_embedding and train_norms are whole-model settings taken "
                "from Rest; Tail must leave them as Rest has them (Tail chooses only its layers' seven projections)");
  static_assert(!(detail::any_adapter<tail>() && detail::any_adapter<rest>()) || detail::same_adapters<tail, rest>,
                "LastLayers<N, Tail, Rest>: when both Tail and Rest carry LoRA they must adapt the same projections "
                "with the same rank (a PEFT adapter has one target_modules list and one r)");

  static constexpr int tail_layers = N;
  // Whole-model settings, from Rest.
  using lm_head = typename rest::lm_head;
  static constexpr bool train_embedding = rest::train_embedding;
  static constexpr bool train_norms = rest::train_norms;
};

// A layout whose decoder layers come in two runs (rest, then the last tail_layers).
template <class T>
concept LayerwiseLayout = requires {
  typename T::tail;
  typename T::rest;
  { T::tail_layers } -> std::convertible_to<int>;
} && ProjectionLayout<typename T::tail> && ProjectionLayout<typename T::rest>;

// What Qwen2<Layout, ...> accepts once a bare linear policy is spelled out.
template <class T>
concept ModelLayout = ProjectionLayout<T> || LayerwiseLayout<T>;

// The model's view of any ModelLayout: the layout of the first layers, of the last
// `tail_layers` ones, and the whole-model settings. A uniform layout is its own rest and tail.
template <class T> struct layer_split {
  using rest = T;
  using tail = T;
  using whole = T;
  static constexpr int tail_layers = 0;
};
template <LayerwiseLayout T> struct layer_split<T> {
  using rest = typename T::rest;
  using tail = typename T::tail;
  using whole = typename T::rest;
  static constexpr int tail_layers = T::tail_layers;
};

}  // namespace peft
