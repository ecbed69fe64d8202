// What the whole-model GPU tests (test_model.cu, test_layouts.cu) share: random packed samples
// with a masked prompt, parameter values or gradients flattened for TestContext::close, and the
// non-zero LoRA B both backends start from (B = 0 would make every dA zero).
#pragma once
#include <string>
#include <vector>

#include "cuda_test.cuh"
#include "peft/qwen_cuda.cuh"

namespace peft::cuda_test {

inline std::vector<Sample> random_samples(TestContext& t, int vocab, const std::vector<int>& lengths) {
  std::vector<Sample> out;
  for (int len : lengths) {
    Sample s;
    for (int i = 0; i < len; ++i) {
      s.input_ids.push_back(t.uniform_int(0, vocab - 1));
      s.labels.push_back(i < len / 4 ? kIgnoreIndex : s.input_ids.back());  // a masked prompt
    }
    out.push_back(std::move(s));
  }
  return out;
}

inline PackedBatch packed_samples(const std::vector<Sample>& samples) {
  std::vector<const Sample*> ptrs;
  for (const auto& s : samples) ptrs.push_back(&s);
  return PackedBatch::of(ptrs);
}

inline Floats flat(const ParameterList& list, bool grads) {
  Floats v;
  for (const auto& p : list) {
    const Matrix& m = grads ? *p.grad : *p.value;
    v.insert(v.end(), m.data(), m.data() + m.size());
  }
  return v;
}

template <class CudaModel>
Floats cuda_grads(CudaModel& m) {
  const auto params = m.trainable_parameters();
  const auto h =
      params.download([](const cuda::DeviceParameter& p, std::size_t) { return static_cast<const float*>(p.grad); });
  Floats v;
  for (const auto& x : h.values) v.insert(v.end(), x.data(), x.data() + x.size());
  return v;
}

// Every lora_B tensor of `list` set to N(0, 0.05^2) draws.
inline void randomize_lora_b(TestContext& t, const ParameterList& list) {
  for (const auto& p : list)
    if (p.name.find("lora_B") != std::string::npos)
      for (Eigen::Index i = 0; i < p.value->size(); ++i) p.value->data()[i] = 0.05f * t.normal_f32(1)[0];
}

}  // namespace peft::cuda_test
