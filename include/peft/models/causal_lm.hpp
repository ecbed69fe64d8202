// The CausalLm concept: everything the trainer, the evaluator and the checkpoint writer ask of a
// model, whatever device it runs on. Qwen2<Layout, Precision, Cpu> (models/qwen2.hpp) and
// Qwen2<Layout, Bf16Mixed, Cuda> (models/cuda/qwen2.cuh) both satisfy it; so does a test's
// wrapper around either. Where the parameters live is the model's business: trainable_parameters()
// returns whatever list the backend's hooks take (train/backend_hooks.hpp): a host ParameterList
// on the CPU, a cuda::DeviceParameters on the GPU.
//
//   forward_backward(batch, grad_scale, dropout)  summed token CE of a packed batch; accumulates
//                                                 d(sum CE * grad_scale) into the gradients
//   evaluate(batch)                               the same sum, no gradients
//   trainable_parameters(), zero_grad()           what the optimizer updates, and its reset
//   config(), lora_config(), uses_lora()          what checkpoints and settings records name
//   Precision, Layout                             the storage dtype of saved weights; what trains
#pragma once
#include <concepts>
#include <cstdint>

#include "peft/core/rng.hpp"
#include "peft/data/packed_batch.hpp"
#include "peft/io/model_config.hpp"
#include "peft/io/lora_config.hpp"

namespace peft {

// A loss sum as the trainer reads it (models/qwen2.hpp's LossSum): `correct` < 0 when the model
// does not count argmax hits.
template <class R>
concept LossSumResult = requires(const R& r) {
  { r.sum } -> std::convertible_to<double>;
  { r.tokens } -> std::convertible_to<std::int64_t>;
  { r.correct } -> std::convertible_to<std::int64_t>;
  { r.mean() } -> std::convertible_to<double>;
};

template <class M>
concept CausalLm = requires(M& m, const M& cm, const PackedBatch& batch, float grad_scale, Rng* dropout) {
  typename M::Layout;
  typename M::Precision;
  { M::Precision::storage };
  { M::uses_lora() } -> std::convertible_to<bool>;
  { m.forward_backward(batch, grad_scale, dropout) } -> LossSumResult;
  { m.evaluate(batch) } -> LossSumResult;
  { m.trainable_parameters().empty() } -> std::convertible_to<bool>;
  m.zero_grad();
  { cm.config() } -> std::convertible_to<const ModelConfig&>;
  { cm.lora_config() } -> std::convertible_to<const LoraConfig&>;
};

}  // namespace peft
