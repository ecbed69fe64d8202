// Every layout of the seven projections trains on the GPU as on the CPU oracle: for each of
// AttentionOnly<Lora<16>>, AllLinear<Lora<8>> (with all-linear and with two targeted modules),
// a mixed Lora<8>/Frozen bundle, full MLP + LoRA attention, LastLayers<2, Full, Lora<8>>
// (keep, selective and recompute), FullModel (--train_type full: embedding, norms and lm_head
// train too; tied and untied, keep, selective and recompute) and, under Nf4Base (QLoRA: the frozen
// projections in NF4), AllLinear (keep, selective and recompute) and a Lora/Frozen mix, Qwen2<Layout, P, Cuda> and Qwen2<Layout, P, Cpu> start
// from the same RandomWeights, adapter seed and lora_B, then take 3 AdamW steps on one packed
// batch (four short samples; AllLinear also on 600 + 90 tokens, keep and recompute, which a build
// with cuDNN runs through its fused attention). Checked: the same trainable tensors under the same names and shapes; per-step loss
// (2e-3 relative, as test_model's loss check); the first step's gradients of each kind of tensor
// (lora_A, lora_B, full weights, full biases, embedding, norms, lm_head: 3e-2, test_model's gradient tolerance: bf16
// activation gradients vs the CPU's fp32 ones); the grad norm (3e-2); and what training moved,
// trained - initial, per kind (5e-2: the gradient tolerance compounded over 3 steps); the trained
// values downloaded through small staging (many batches, tensors alone) equal one batch's. AdamW's eps
// is 1e-3 here so that the update is a smooth function of the gradient: with 1e-8 the first
// update is lr * sign(g), and components whose gradient is within bf16 noise of zero flip sign,
// which says nothing about either backend. LastLayers' checkpoint: the CUDA model's adapter folder
// holds the CPU's tensor names and shapes (modules_to_save included) and the same
// adapter_config.json, and either backend's checkpoint loads into the other. FullModel's: both write
// model.safetensors (bf16, the same names and shapes) and config.json, and either backend's
// checkpoint (with the fp32 masters of its optimizer state) resumes on the other.
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "../support/fixture.hpp"
#include "cuda_test.cuh"
#include "model_parity.cuh"
#include "peft/qwen_cuda.cuh"

using namespace peft;
using peft::cuda_test::Floats;
using peft::cuda_test::TestContext;

namespace {

constexpr int kSteps = 3;
constexpr double kLr = 2e-3;

// lora_A, lora_B, a fully trained weight or bias, the embedding, a norm, lm_head: each kind is
// compared on its own (a full weight's values would otherwise drown the adapters').
std::string kind(const std::string& name) {
  for (const char* k : {"lora_A", "lora_B", "embed_tokens", "lm_head", "norm"})
    if (name.find(k) != std::string::npos) return k;
  return name.ends_with(".bias") ? "full bias" : "full weight";
}
std::map<std::string, Floats> by_kind(const std::vector<std::string>& names, const std::vector<const Matrix*>& m) {
  std::map<std::string, Floats> out;
  for (std::size_t i = 0; i < names.size(); ++i) out[kind(names[i])].insert(out[kind(names[i])].end(), m[i]->data(),
                                                                              m[i]->data() + m[i]->size());
  return out;
}
std::map<std::string, Floats> by_kind(const ParameterList& list, bool grads) {
  std::vector<std::string> names;
  std::vector<const Matrix*> m;
  for (const auto& p : list) {
    names.push_back(p.name);
    m.push_back(grads ? p.grad : p.value);
  }
  return by_kind(names, m);
}
std::map<std::string, Floats> by_kind(const peft::cuda::HostParameters& h) {
  std::vector<std::string> names;
  std::vector<const Matrix*> m;
  for (std::size_t i = 0; i < h.list.size(); ++i) {
    names.push_back(h.list[i].name);
    m.push_back(&h.values[i]);
  }
  return by_kind(names, m);
}
std::map<std::string, Floats> minus(std::map<std::string, Floats> a, const std::map<std::string, Floats>& b) {
  for (auto& [k, v] : a)
    for (std::size_t i = 0; i < v.size() && i < b.at(k).size(); ++i) v[i] -= b.at(k)[i];
  return a;
}

// DeviceParameters::download through small pinned staging: many batches (each a wait), and the
// tensors larger than the staging copied alone, give the same host tensors, bit for bit, as one batch.
void check_staged_downloads(TestContext& t, const std::string& label, const peft::cuda::DeviceParameters& params) {
  const auto whole = params.to_host();
  std::size_t largest = 0;
  for (const auto& v : whole.values) largest = std::max(largest, static_cast<std::size_t>(v.size()) * 4);
  auto values = [](const peft::cuda::DeviceParameter& p, std::size_t) { return static_cast<const float*>(p.value); };
  for (const std::size_t bytes : {std::size_t{4096}, largest / 2 + 4, largest}) {
    const auto staged = params.download(values, bytes);
    bool same = staged.list.size() == whole.list.size();
    for (std::size_t i = 0; same && i < whole.list.size(); ++i)
      same = staged.list[i].name == whole.list[i].name && staged.values[i].rows() == whole.values[i].rows() &&
             staged.values[i].cols() == whole.values[i].cols() && staged.values[i] == whole.values[i] &&
             staged.list[i].value == &staged.values[i];
    t.expect(same, label + ": values downloaded through " + std::to_string(bytes) + " bytes of staging == in one batch");
  }
}

ModelConfig three_layers(bool tied) {
  ModelConfig c = test::tiny_test_config(64, tied, 1);
  c.num_hidden_layers = 3;  // LastLayers<2, ...> then has a LoRA layer and two Full ones
  return c;
}

// --train_type full's checkpoint: the model itself in bf16 (model.safetensors + config.json); the
// fp32 masters travel in the optimizer state, from which either backend resumes the other's run.
template <class GpuModel>
void check_full_checkpoint(TestContext& t, const std::string& label, const std::filesystem::path& dc,
                           const std::filesystem::path& dg, const ModelConfig& cfg, const LoraConfig& lora,
                           const ParameterList& host, const peft::cuda::DeviceParameters& gparams, const AdamW& cpu_opt,
                           const AdamW& gpu_opt) {
  const auto fc = SafetensorsFile::open(dc / "model.safetensors");
  const auto fg = SafetensorsFile::open(dg / "model.safetensors");
  bool same = fc.names() == fg.names() && fg.names().size() == host.size();
  for (const auto& n : fc.names())
    same = same && fg.contains(n) && fg.tensor(n).shape == fc.tensor(n).shape && fg.tensor(n).dtype == DType::BF16;
  t.expect(same, label + ": model.safetensors names, shapes and bf16 dtype == the CPU's (" +
                     std::to_string(fg.names().size()) + " tensors)");
  t.expect(nlohmann::json::parse(read_text_file(dc / "config.json")) ==
               nlohmann::json::parse(read_text_file(dg / "config.json")),
           label + ": config.json == the CPU's");
  save_optimizer_state(dc / "optimizer.safetensors", cpu_opt, host, true);
  save_optimizer_state(dg / "optimizer.safetensors", gpu_opt, gparams, true);
  RandomWeights w3(7);
  auto fresh = GpuModel::from_weights(cfg, w3, lora, 1, {512});
  load_trained_weights(dc, *fresh);  // the CPU's run resumed on the GPU
  t.close(label + ": CPU checkpoint (masters) resumed on the GPU",
          peft::cuda_test::flat(fresh->trainable_parameters().to_host().list, false), peft::cuda_test::flat(host, false),
          1e-7);
  using CpuModel = Qwen2Model<typename GpuModel::Layout, Bf16Mixed, Cpu>;
  RandomWeights w4(7);
  auto cpu = CpuModel::from_weights(cfg, w4, lora, 1);
  load_trained_weights(dg, *cpu);  // and the GPU's on the CPU
  t.close(label + ": GPU checkpoint (masters) resumed on the CPU", peft::cuda_test::flat(cpu->trainable_parameters(), false),
          peft::cuda_test::flat(gparams.to_host().list, false), 1e-7);
}

template <class Layout, class Device = Cuda, class Precision = Bf16Mixed>
void check_training(TestContext& t, const std::string& label, const ModelConfig& cfg, const LoraConfig& lora,
                    const std::filesystem::path& save_to = {}, const std::vector<int>& lengths = {37, 64, 5, 90}) {
  using CpuModel = Qwen2<Layout, Precision, Cpu>;
  using GpuModel = Qwen2<Layout, Precision, Device>;
  RandomWeights w1(7), w2(7);
  auto cpu = CpuModel::from_weights(cfg, w1, lora, 42);
  int tokens = 0;
  for (int l : lengths) tokens += l;
  auto gpu = GpuModel::from_weights(cfg, w2, lora, 42, {std::max(512, tokens)});
  const ParameterList host = cpu->trainable_parameters();
  cuda_test::randomize_lora_b(t, host);
  const auto gparams = gpu->trainable_parameters();
  gparams.upload(host);  // also requires the same names and shapes, in the same order
  bool same = gparams.size() == host.size() && !host.empty();
  for (std::size_t i = 0; same && i < host.size(); ++i)
    same = gparams.tensors()[i].name == host[i].name && gparams.tensors()[i].hf_rows == host[i].value->rows() &&
           gparams.tensors()[i].hf_cols == host[i].value->cols();
  t.expect(same, label + ": the CPU's trainable tensors, names and shapes (" + std::to_string(host.size()) + ")");
  const auto initial = by_kind(host, false);

  const auto samples = cuda_test::random_samples(t, static_cast<int>(cfg.vocab_size), lengths);
  const PackedBatch batch = cuda_test::packed_samples(samples);
  const float scale = 1.0f / static_cast<float>(batch.label_tokens);
  const AdamW::Options o{0.9, 0.999, 1e-3, 0.01};
  AdamW cpu_opt(o), gpu_opt(o);
  cpu_opt.init(host);
  optimizer_init(gpu_opt, gparams);
  Floats lc, lg;
  for (int step = 0; step < kSteps; ++step) {
    cpu->zero_grad();
    gpu->zero_grad();
    gpu->poison_activations();
    lg.push_back(static_cast<float>(gpu->forward_backward(batch, scale, nullptr).sum));
    lc.push_back(static_cast<float>(cpu->forward_backward(batch, scale, nullptr).sum));
    if (step == 0) {
      const auto grads = by_kind(gparams.download(
          [](const peft::cuda::DeviceParameter& p, std::size_t) { return static_cast<const float*>(p.grad); }));
      for (const auto& [k, want] : by_kind(host, true))
        t.close(label + ": step 1 " + k + " gradients", grads.at(k), want, 3e-2);
    }
    const double nc = clip_grad_norm(host, 1.0), ng = clip_grad_norm(gparams, 1.0);
    t.close(label + ": step " + std::to_string(step + 1) + " grad norm", {static_cast<float>(ng)},
            {static_cast<float>(nc)}, 3e-2);
    cpu_opt.step(host, kLr);
    optimizer_step(gpu_opt, gparams, kLr);
  }
  t.close(label + ": per-step loss sums", lg, lc, 2e-3);
  t.expect(lc.back() < lc.front() && lg.back() < lg.front(), label + ": the loss went down on both");
  const auto moved_cpu = minus(by_kind(host, false), initial), moved_gpu = minus(by_kind(gparams.to_host()), initial);
  for (const auto& [k, want] : moved_cpu) t.close(label + ": trained - initial, " + k, moved_gpu.at(k), want, 5e-2);
  check_staged_downloads(t, label, gparams);

  if (save_to.empty()) return;
  // The checkpoint: same folder layout from both backends, and each loads into the other.
  const auto dc = save_to / "cpu", dg = save_to / "gpu";
  std::filesystem::remove_all(save_to);
  save_trained_weights(dc, *cpu, "base");
  save_trained_weights(dg, *gpu, "base");
  if constexpr (!GpuModel::uses_lora()) {
    check_full_checkpoint<GpuModel>(t, label, dc, dg, cfg, lora, host, gparams, cpu_opt, gpu_opt);
    std::filesystem::remove_all(save_to);
    return;
  }
  const auto fc = SafetensorsFile::open(dc / "adapter_model.safetensors");
  const auto fg = SafetensorsFile::open(dg / "adapter_model.safetensors");
  bool shapes = fc.names() == fg.names();
  for (const auto& n : fc.names()) shapes = shapes && fg.contains(n) && fg.tensor(n).shape == fc.tensor(n).shape;
  t.expect(shapes, label + ": checkpoint tensor names and shapes == the CPU's (" + std::to_string(fc.names().size()) +
                       " tensors)");
  const auto jc = nlohmann::json::parse(read_text_file(dc / "adapter_config.json"));
  const auto jg = nlohmann::json::parse(read_text_file(dg / "adapter_config.json"));
  t.expect(jc == jg, label + ": adapter_config.json == the CPU's");
  t.expect(!jg["modules_to_save"].is_null() && !jg["modules_to_save"].empty(),
           label + ": modules_to_save lists the fully trained modules");
  RandomWeights w3(7);
  auto fresh = GpuModel::from_weights(cfg, w3, lora, 1, {512});
  load_trained_weights(dc, *fresh);  // the CPU's checkpoint into a CUDA model (resume)
  t.close(label + ": CPU checkpoint loaded on the GPU",
          peft::cuda_test::flat(fresh->trainable_parameters().to_host().list, false),
          peft::cuda_test::flat(host, false), 1e-7);
  load_trained_weights(dg, *cpu);  // and the GPU's into the CPU model
  t.close(label + ": GPU checkpoint loaded on the CPU", peft::cuda_test::flat(cpu->trainable_parameters(), false),
          peft::cuda_test::flat(gparams.to_host().list, false), 1e-7);
  std::filesystem::remove_all(save_to);
}

}  // namespace

int main(int argc, char** argv) {
  TestContext t(argc, argv, "cuda_test_layouts");
  try {
    std::printf("  %s\n", peft::cuda::describe_device(0).c_str());
    LoraConfig r8;
    r8.r = 8;
    r8.lora_alpha = 16;
    r8.lora_dropout = 0;
    LoraConfig r16 = r8;
    r16.r = 16;
    LoraConfig r8_qv = r8;
    r8_qv.target_modules = {"q_proj", "v_proj"};
    using Mixed = Projections<Lora<8>, Frozen, Lora<8>, Frozen, Lora<8>, Lora<8>, Lora<8>>;
    using FullMlp = Projections<Lora<8>, Lora<8>, Lora<8>, Lora<8>, Full, Full, Full>;
    check_training<AttentionOnly<Lora<16>>>(t, "AttentionOnly<Lora<16>>", three_layers(false), r16);
    check_training<Lora<8>>(t, "AllLinear<Lora<8>>", three_layers(true), r8);
    check_training<Lora<8>>(t, "AllLinear<Lora<8>> targets q,v", three_layers(false), r8_qv);
    check_training<Mixed>(t, "mixed Lora<8>/Frozen", three_layers(false), r8);
    check_training<FullMlp>(t, "full MLP + LoRA attention", three_layers(true), r8);
    const auto dir = std::filesystem::temp_directory_path() / "peft_cuda_layouts_checkpoint";
    check_training<LastLayers<2, Full, Lora<8>>>(t, "LastLayers<2, Full, Lora<8>>", three_layers(false), r8, dir);
    check_training<LastLayers<2, Full, Lora<8>>, CudaRecompute>(t, "LastLayers<2, Full, Lora<8>> recompute",
                                                                 three_layers(true), r8);
    check_training<LastLayers<2, Full, Lora<8>>, CudaSelective>(t, "LastLayers<2, Full, Lora<8>> selective",
                                                                 three_layers(true), r8);
    // QLoRA: the NF4 base (quantised by the CPU's quantiser, dequantised bit for bit on the GPU).
    check_training<Lora<8>, Cuda, Nf4Base>(t, "Nf4Base AllLinear<Lora<8>>", three_layers(false), r8);
    check_training<Lora<8>, CudaRecompute, Nf4Base>(t, "Nf4Base AllLinear<Lora<8>> recompute", three_layers(true), r8);
    check_training<Lora<8>, CudaSelective, Nf4Base>(t, "Nf4Base AllLinear<Lora<8>> selective", three_layers(true), r8);
    check_training<Mixed, Cuda, Nf4Base>(t, "Nf4Base mixed Lora<8>/Frozen", three_layers(false), r8_qv);
    const auto full_dir = std::filesystem::temp_directory_path() / "peft_cuda_layouts_full";
    check_training<FullModel>(t, "FullModel untied", three_layers(false), r8, full_dir);
    check_training<FullModel>(t, "FullModel tied (one embedding, two gradients)", three_layers(true), r8);
    check_training<FullModel, CudaRecompute>(t, "FullModel tied recompute", three_layers(true), r8);
    check_training<FullModel, CudaSelective>(t, "FullModel untied selective", three_layers(false), r8);
    // Samples long enough for cuDNN's fused attention where the build has it (attention_cudnn.cuh:
    // a longest sample of >= 512 tokens; these two are of different lengths: its ragged path).
#ifdef PEFT_WITH_CUDNN
    const long long cudnn_before = peft::cuda::detail::CudnnAttention::for_current_device().passes_run();
#endif
    check_training<Lora<8>>(t, "AllLinear<Lora<8>> samples of 600 + 90 tokens", three_layers(false), r8, {}, {600, 90});
    check_training<Lora<8>, CudaRecompute>(t, "AllLinear<Lora<8>> 600 + 90 tokens recompute", three_layers(false), r8,
                                           {}, {600, 90});
#ifdef PEFT_WITH_CUDNN
    t.expect(peft::cuda::detail::CudnnAttention::for_current_device().passes_run() > cudnn_before,
             "the long samples' attention ran on cuDNN");
#endif
    // A compile-time rank must match --lora_rank, with the CPU's words.
    bool threw = false;
    try {
      Qwen2<Lora<8>, Bf16Mixed, Cuda> m(three_layers(false), r16, {64});
    } catch (const Error& e) {
      threw = std::string(e.what()).find("compiled for LoRA rank 8 but --lora_rank is 16") != std::string::npos;
    }
    t.expect(threw, "Lora<8> with --lora_rank 16: refused, naming both ranks");
    // LastLayers<N> with N > num_hidden_layers: the CPU model's error text.
    threw = false;
    try {
      Qwen2<LastLayers<4, Full, Lora<8>>, Bf16Mixed, Cuda> m(three_layers(false), r8, {64});
    } catch (const Error& e) {
      threw = std::string(e.what()).find("num_hidden_layers = 3") != std::string::npos;
    }
    t.expect(threw, "LastLayers<4> on 3 layers: refused, naming num_hidden_layers");
  } catch (const std::exception& e) {
    std::printf("FAILED with exception: %s\n", e.what());
    return 2;
  }
  return t.finish();
}
