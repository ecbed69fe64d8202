// The device weight loader (io/cuda_weight_loader.cuh) held to the reference conversion,
// byte for byte: (1) a sharded checkpoint written here (BF16, F32 and F16 tensors, tensors larger
// than the staging buffer, odd sizes), loaded with several ring shapes (one thread and one buffer;
// threads sharing a ring smaller than the chunk count), every device byte equal to
// float_to_bf16(read_f32(...)); (2) the Qwen2 CUDA model loaded by from_pretrained's fast path and
// by load_weights(SafetensorsWeights) from the tiny fixture (F32), from a 3-shard mixed-dtype copy
// with perturbed norms, and from a tied-embedding copy: identical device weights, logits and LoRA
// init; (3) bad checkpoints: errors name the file or index and the tensor. Destinations are
// poisoned (0xFF, a NaN in bf16) before every load, so an unwritten element fails the comparison.
#include <array>
#include <cstdio>
#include <map>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "../support/fixture.hpp"
#include "cuda_test.cuh"
#include "peft/qwen_cuda.cuh"
#include "peft/io/cuda_weight_loader.cuh"

using namespace peft;
using peft::cuda_test::Floats;
using peft::cuda_test::TestContext;
namespace fs = std::filesystem;

namespace {

using Model = Qwen2<Lora<>, Bf16Mixed, Cuda>;

fs::path fresh_dir(const std::string& tag) {
  const fs::path p = fs::temp_directory_path() / ("peft_cuda_loader_" + tag);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

void write_index(const fs::path& dir, const std::map<std::string, std::string>& weight_map) {
  nlohmann::json j;
  j["metadata"] = nlohmann::json::object();
  j["weight_map"] = weight_map;
  write_text_atomic(dir / "model.safetensors.index.json", j.dump(1));
}

std::vector<std::uint16_t> download_bits(const peft::cuda::bf16* d, std::size_t n) {
  std::vector<std::uint16_t> h(n);
  PEFT_CUDA_CHECK(cudaDeviceSynchronize());
  if (n) PEFT_CUDA_CHECK(cudaMemcpy(h.data(), d, n * 2, cudaMemcpyDeviceToHost));
  return h;
}

std::size_t numel(const std::vector<std::int64_t>& shape) {
  std::size_t n = 1;
  for (auto d : shape) n *= static_cast<std::size_t>(d);
  return n;
}

void poison(std::span<const peft::cuda::WeightDestination> dst) {
  for (const auto& d : dst) PEFT_CUDA_CHECK(cudaMemset(d.data, 0xFF, numel(d.shape) * 2));
  PEFT_CUDA_CHECK(cudaDeviceSynchronize());
}

// Every destination's device bits against float_to_bf16 of the WeightSource path's floats.
std::size_t mismatches_vs_reference(const SafetensorsModel& m, std::span<const peft::cuda::WeightDestination> dst) {
  std::size_t bad = 0;
  for (const auto& d : dst) {
    const std::vector<float> ref = m.read_f32(d.name, d.shape);
    const auto got = download_bits(d.data, ref.size());
    for (std::size_t i = 0; i < ref.size(); ++i) bad += got[i] != float_to_bf16(ref[i]);
  }
  return bad;
}

// (1) A 3-shard checkpoint written here, loaded under several ring shapes.
void check_sharded(TestContext& t) {
  const fs::path dir = fresh_dir("sharded");
  struct Spec {
    std::string name;
    std::vector<std::int64_t> shape;
    DType dtype;
    int shard;
  };
  const std::vector<Spec> specs = {
      {"big.bf16", {333, 1021}, DType::BF16, 0},  // 680 KB: 11 chunks of 64 KiB
      {"mat.f32", {37, 129}, DType::F32, 0},      // odd sizes, 2 chunks
      {"vec.f16", {1001}, DType::F16, 1},
      {"tiny.bf16", {5}, DType::BF16, 1},
      {"big2.bf16", {257, 513}, DType::BF16, 2},
      {"big.f32", {129, 300}, DType::F32, 2},
  };
  std::vector<SafetensorsWriter> shards(3);
  std::map<std::string, std::string> weight_map;
  for (const auto& s : specs) {
    shards[static_cast<std::size_t>(s.shard)].add_f32(s.name, s.shape, t.normal_f32(numel(s.shape), 0.7f), s.dtype);
    weight_map[s.name] = fmt::format("model-{:05d}-of-00003.safetensors", s.shard + 1);
  }
  for (int i = 0; i < 3; ++i) shards[static_cast<std::size_t>(i)].write(dir / fmt::format("model-{:05d}-of-00003.safetensors", i + 1));
  write_index(dir, weight_map);

  peft::cuda::DeviceArena arena(16u << 20);
  std::vector<peft::cuda::WeightDestination> dst;
  for (const auto& s : specs) dst.push_back({s.name, arena.alloc<peft::cuda::bf16>(numel(s.shape), "dst"), s.shape});
  const SafetensorsModel m = SafetensorsModel::open(dir);
  struct Ring {
    std::size_t staging;
    int buffers, threads;
  };
  for (const Ring r : {Ring{64u << 10, 1, 1}, Ring{64u << 10, 3, 3}, Ring{64u << 10, 4, 2}, Ring{6000, 2, 4},
                       Ring{32u << 20, 8, 4}}) {
    poison(dst);
    const auto stats = peft::cuda::load_weights_bf16(dir, dst, nullptr, {r.staging, r.buffers, r.threads});
    const std::size_t bad = mismatches_vs_reference(m, dst);
    t.expect(bad == 0, fmt::format("sharded: staging {} B x {} buffers, {} threads ({} chunks): {} wrong elements",
                                   r.staging, r.buffers, r.threads, stats.chunks, bad));
  }
  t.expect(peft::cuda::load_weights_bf16(dir, dst, nullptr, {64u << 10, 3, 3}).chunks > specs.size() + 10,
           "sharded: large tensors were split across staging buffers");

  // Bad requests and bad files: the error names the file (or index) and the tensor.
  auto throws = [&](const std::string& what, auto&& fn, std::vector<std::string> needles) {
    std::string msg;
    try {
      fn();
    } catch (const std::exception& e) {
      msg = e.what();
    }
    bool ok = !msg.empty();
    for (const auto& n : needles) ok = ok && msg.find(n) != std::string::npos;
    t.expect(ok, what);
    if (!ok) std::printf("    message: %s\n", msg.empty() ? "(no exception)" : msg.c_str());
  };
  auto with = [&](std::vector<peft::cuda::WeightDestination> d) { return peft::cuda::load_weights_bf16(dir, d, nullptr); };
  throws("error: missing tensor", [&] { with({{"lm_head.weight", dst[0].data, {333, 1021}}}); },
         {"model.safetensors.index.json", "'lm_head.weight'"});
  throws("error: wrong shape", [&] { with({{"big.bf16", dst[0].data, {1021, 333}}}); },
         {"model-00001-of-00003.safetensors", "'big.bf16'", "[333, 1021]", "[1021, 333]"});
  SafetensorsWriter ints;
  const std::int64_t v[3] = {1, 2, 3};
  ints.add("int.weight", DType::I64, {3}, std::as_bytes(std::span<const std::int64_t>(v)));
  ints.write(dir / "ints.safetensors");
  throws("error: unsupported dtype", [&] {
    peft::cuda::load_weights_bf16(dir / "ints.safetensors", std::vector<peft::cuda::WeightDestination>{{"int.weight", dst[0].data, {3}}}, nullptr);
  }, {"ints.safetensors", "'int.weight'", "I64"});
  const fs::path shard3 = dir / "model-00003-of-00003.safetensors";
  fs::resize_file(shard3, fs::file_size(shard3) - 100);
  throws("error: truncated shard", [&] { with({dst[0]}); }, {shard3.string(), "outside the data region"});
  fs::remove(shard3);
  throws("error: missing shard", [&] { with({dst[0]}); }, {"model-00003-of-00003.safetensors", "does not exist"});
  fs::remove_all(dir);
}

// Copies the fixture's tensors into a new checkpoint: optionally sharded (3 shards, dtypes
// cycling BF16 / F32 / F16 per tensor), norms scaled away from HF's ones, lm_head dropped.
void write_variant(const fs::path& from, const fs::path& to, bool sharded, bool drop_lm_head, bool tie) {
  const SafetensorsModel src = SafetensorsModel::open(from);
  nlohmann::json cfg = read_json_file(from / "config.json");
  cfg["tie_word_embeddings"] = tie;
  write_text_atomic(to / "config.json", cfg.dump(1));
  std::vector<SafetensorsWriter> shards(sharded ? 3 : 1);
  std::map<std::string, std::string> weight_map;
  int i = 0;
  for (const auto& name : src.names()) {
    if (drop_lm_head && name == "lm_head.weight") continue;
    const StoredTensor& st = src.tensor(name);
    std::vector<float> v = src.read_f32(name, st.shape);
    if (name.find("norm") != std::string::npos)
      for (std::size_t k = 0; k < v.size(); ++k) v[k] *= 0.5f + 0.01f * static_cast<float>(k % 97);
    const std::size_t s = sharded ? static_cast<std::size_t>(i % 3) : 0;
    const DType dt = sharded ? std::array{DType::BF16, DType::F32, DType::F16}[static_cast<std::size_t>((i / 3) % 3)] : DType::F32;
    shards[s].add_f32(name, st.shape, v, dt);
    weight_map[name] = fmt::format("model-{:05d}-of-00003.safetensors", s + 1);
    ++i;
  }
  if (!sharded) {
    shards[0].write(to / "model.safetensors");
    return;
  }
  for (std::size_t s = 0; s < 3; ++s) shards[s].write(to / fmt::format("model-{:05d}-of-00003.safetensors", s + 1));
  write_index(to, weight_map);
}

// (2) The model: fast path (poisoned first) against load_weights(SafetensorsWeights).
void check_model(TestContext& t, const std::string& label, const fs::path& dir, const LoraConfig& lora) {
  const ModelConfig cfg = ModelConfig::from_file(dir / "config.json");
  Model fast(cfg, lora, {64});
  poison(fast.base_weights());
  const auto stats = fast.load_pretrained(dir, {4096, 3, 2});  // small staging: the embedding is split
  fast.init_adapters(5);
  SafetensorsWeights src(dir);
  auto slow = Model::from_weights(cfg, src, lora, 5, {64});
  const auto a = fast.base_weights(), b = slow->base_weights();
  bool same = a.size() == b.size();
  std::size_t bad = 0;
  for (std::size_t i = 0; same && i < a.size(); ++i) {
    same = a[i].name == b[i].name && a[i].shape == b[i].shape;
    const auto x = download_bits(a[i].data, numel(a[i].shape)), y = download_bits(b[i].data, numel(b[i].shape));
    for (std::size_t k = 0; k < x.size(); ++k) bad += x[k] != y[k];
  }
  t.expect(same && bad == 0, fmt::format("{}: {} tensors ({} chunks), device weights identical to the WeightSource "
                                         "path ({} differing elements)", label, a.size(), stats.chunks, bad));
  t.expect(cfg.tie_word_embeddings == (a.back().name != "lm_head.weight"), label + ": lm_head.weight loaded exactly when untied");

  const auto pa = fast.trainable_parameters().to_host(), pb = slow->trainable_parameters().to_host();
  bool same_lora = pa.values.size() == pb.values.size();
  for (std::size_t i = 0; same_lora && i < pa.values.size(); ++i) same_lora = pa.values[i] == pb.values[i];
  t.expect(same_lora, label + ": LoRA init identical (same Rng draws)");

  Sample s;
  for (int i = 0; i < 24; ++i) s.input_ids.push_back(static_cast<std::int32_t>((i * 37 + 11) % cfg.vocab_size));
  s.labels = s.input_ids;
  const Matrix la = fast.logits(PackedBatch::of(s)), lb = slow->logits(PackedBatch::of(s));
  const Floats fa(la.data(), la.data() + la.size()), fb(lb.data(), lb.data() + lb.size());
  t.close(label + ": logits, fast vs WeightSource load", fa, fb, 0.0);
}

void check_models(TestContext& t) {
  const fs::path tiny = test::fixture("tiny_public") / "model";
  LoraConfig lora = read_adapter_config(test::fixture("tiny_public") / "adapter");
  lora.lora_dropout = 0;
  check_model(t, "tiny_public (F32, one file)", tiny, lora);

  const fs::path sharded = fresh_dir("tiny_sharded");
  write_variant(tiny, sharded, true, false, false);
  check_model(t, "tiny_public 3 shards BF16/F32/F16", sharded, lora);

  const fs::path tied = fresh_dir("tiny_tied");
  write_variant(tiny, tied, true, true, true);
  check_model(t, "tiny_public tied (no lm_head.weight)", tied, lora);

  // The same files with the config saying untied: lm_head.weight is required and named.
  nlohmann::json cfg = read_json_file(tied / "config.json");
  cfg["tie_word_embeddings"] = false;
  write_text_atomic(tied / "config.json", cfg.dump(1));
  std::string msg;
  try {
    Model::from_pretrained(tied, lora, 0, {64});
  } catch (const std::exception& e) {
    msg = e.what();
  }
  t.expect(msg.find("lm_head.weight") != std::string::npos && msg.find("model.safetensors.index.json") != std::string::npos,
           "untied config without lm_head.weight: error names the tensor and the index");
  if (!msg.empty()) std::printf("    message: %s\n", msg.c_str());
  fs::remove_all(sharded);
  fs::remove_all(tied);
}

}  // namespace

int main(int argc, char** argv) {
  return peft::cuda_test::run_test(argc, argv, "cuda_test_weight_loader", [](TestContext& t) {
    check_sharded(t);
    check_models(t);
  });
}
