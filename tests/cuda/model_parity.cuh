// What the whole-model GPU tests (test_model.cu, test_layouts.cu, test_qlora.cu) share: random
// packed samples with a masked prompt, parameter values or gradients flattened for
// TestContext::close, the non-zero LoRA B both backends start from (B = 0 would make every dA
// zero), and training on an HF fixture against its golden run.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "../support/fixture.hpp"
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

// Bf16 training against HF's fp32 golden run: the model and initial adapter of fixture `name`,
// the golden run (golden.json, adapter_trained/) of fixture `golden_name` (the same one, or
// qlora_tiny: HF on tiny_public's NF4 round trip). Per-step loss within 2e-2 relative; the adapter
// within 0.05 of its largest entry (Adam's normalised steps amplify bf16 noise in small
// gradients; what matters is that training lands in the same place).
template <class Model>
void check_hf_fixture(TestContext& t, const std::string& label, const std::string& name,
                      const std::string& golden_name) {
  const auto dir = test::fixture(name);
  LoraConfig lora = read_adapter_config(dir / "adapter");
  lora.lora_dropout = 0;
  auto model = Model::from_pretrained(dir / "model", lora, 0, {256});
  load_adapter_weights(dir / "adapter", *model);
  const auto samples = test::fixture_samples(name);
  const auto golden = test::fixture_golden(golden_name);

  Floats got_fwd, want_fwd;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    model->poison_activations();
    got_fwd.push_back(static_cast<float>(model->evaluate(PackedBatch::of(samples[i])).mean()));
    want_fwd.push_back(golden["forward_loss_before_training"][i].get<float>());
  }
  t.close(label + ": forward losses before training", got_fwd, want_fwd, 2e-2);

  const TrainingArguments args = test::golden_args(golden);
  Trainer<Model> trainer(*model, args, AdamW({args.adam_beta1, args.adam_beta2, args.adam_epsilon, args.weight_decay}), NamedSchedule(args.lr_scheduler_type));
  trainer.set_quiet(true);
  const TrainResult r = trainer.train(samples);
  const auto& losses = golden["train_loss_per_step"];
  t.expect(r.step_losses.size() == losses.size(), label + ": step count");
  double worst = 0;
  for (std::size_t s = 0; s < losses.size() && s < r.step_losses.size(); ++s)
    worst = std::max(worst, std::abs(r.step_losses[s] - losses[s].get<double>()) / std::abs(losses[s].get<double>()));
  std::printf("  %-46s max rel %.3e (first %.5f vs %.5f, last %.5f vs %.5f)\n", (label + ": step losses").c_str(), worst,
              r.step_losses.front(), losses[0].get<double>(), r.step_losses.back(), losses[losses.size() - 1].get<double>());
  t.expect(worst <= 2e-2, label + ": every step loss within 2e-2 of HF");
  Floats gn, wn;
  for (std::size_t s = 0; s < losses.size() && s < r.step_grad_norms.size(); ++s) {
    gn.push_back(static_cast<float>(r.step_grad_norms[s]));
    wn.push_back(golden["grad_norm_per_step"][s].get<float>());
  }
  t.close(label + ": grad norms", gn, wn, 5e-2);

  const auto out = std::filesystem::temp_directory_path() / ("peft_cuda_parity_" + golden_name);
  std::filesystem::remove_all(out);
  save_trained_weights(out, *model, "");
  const auto got = SafetensorsFile::open(out / "adapter_model.safetensors");
  const auto want =
      SafetensorsFile::open(test::fixture(golden_name) / "adapter_trained" / "adapter_model.safetensors");
  t.expect(got.names() == want.names(), label + ": adapter tensor names");
  double diff = 0, scale = 0;
  for (const auto& n : want.names()) {
    const auto a = got.read_f32(n, want.tensor(n).shape), b = want.read_f32(n, want.tensor(n).shape);
    for (std::size_t i = 0; i < a.size(); ++i) {
      diff = std::max(diff, static_cast<double>(std::abs(a[i] - b[i])));
      scale = std::max(scale, static_cast<double>(std::abs(b[i])));
    }
  }
  std::printf("  %-46s max abs diff %.3e of max %.3e\n", (label + ": trained adapter").c_str(), diff, scale);
  t.expect(diff <= 0.05 * scale, label + ": trained adapter within 0.05 of PEFT's");
  std::filesystem::remove_all(out);
}

}  // namespace peft::cuda_test
