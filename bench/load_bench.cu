// Checkpoint loading benchmark: how fast Qwen2.5-7B's 15.2 GB of bf16 safetensors reach the GPU
// through the device weight loader (io/cuda_weight_loader.cuh), from page cache.
//
// The checkpoint is a 7B-shaped random one, written here if the folder has none: the real
// model's tensor names, shapes and dtype, 4 shards + model.safetensors.index.json as HF ships it,
// config.json from the Qwen25_7B preset (ModelConfig::from_file and transformers read it). The
// folder is kept: it also serves as a 7B model for the trainer (add tokenizer files).
//
// Then: the 7B CUDA model is constructed once, a first load (warms the page cache if the files
// were not just written), timed loads (best and median GB/s = tensor bytes / wall seconds of
// load_pretrained, which opens the shards, plans, stages and copies), a short sweep of host
// threads, a spot check of the loaded bytes against the files, from_pretrained end to end, and
// the raw pinned -> device cudaMemcpy bandwidth (the ceiling for any loader). One JSON line.
//
//   load_bench [--dir /tmp/peft-7b-random] [--reps 5] [--threads 8] [--buffers 16] [--staging-mib 16]
//              [--write-only]   (write the checkpoint if missing, touch no GPU)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "peft/qwen_cuda.cuh"
#include "peft/models/presets.hpp"

using namespace peft;
namespace fs = std::filesystem;

namespace {

using Model = Qwen2<Lora<8>, Bf16Mixed, Cuda>;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct TensorSpec {
  std::string name;
  std::vector<std::int64_t> shape;
  float stddev;  // 0: all ones (norms)
};

// HF's module order, which is also the order the shards hold them in.
std::vector<TensorSpec> qwen2_tensors(const ModelConfig& c) {
  const std::int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const std::int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  const float in_h = 1.0f / std::sqrt(static_cast<float>(H)), in_i = 1.0f / std::sqrt(static_cast<float>(I));
  std::vector<TensorSpec> t = {{"model.embed_tokens.weight", {V, H}, in_h}};
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "input_layernorm.weight", {H}, 0});
    t.push_back({p + "mlp.down_proj.weight", {H, I}, in_i});
    t.push_back({p + "mlp.gate_proj.weight", {I, H}, in_h});
    t.push_back({p + "mlp.up_proj.weight", {I, H}, in_h});
    t.push_back({p + "post_attention_layernorm.weight", {H}, 0});
    t.push_back({p + "self_attn.k_proj.bias", {kv}, 0.02f});
    t.push_back({p + "self_attn.k_proj.weight", {kv, H}, in_h});
    t.push_back({p + "self_attn.o_proj.weight", {H, q}, 1.0f / std::sqrt(static_cast<float>(q))});
    t.push_back({p + "self_attn.q_proj.bias", {q}, 0.02f});
    t.push_back({p + "self_attn.q_proj.weight", {q, H}, in_h});
    t.push_back({p + "self_attn.v_proj.bias", {kv}, 0.02f});
    t.push_back({p + "self_attn.v_proj.weight", {kv, H}, in_h});
  }
  t.push_back({"model.norm.weight", {H}, 0});
  if (!c.tie_word_embeddings) t.push_back({"lm_head.weight", {V, H}, in_h});
  return t;
}

std::size_t numel(const std::vector<std::int64_t>& s) {
  std::size_t n = 1;
  for (auto d : s) n *= static_cast<std::size_t>(d);
  return n;
}

// Uniform values with the given standard deviation, as bf16, from a counter hash: cheap enough
// to fill 7.6B values on all cores, and finite, so the checkpoint also trains.
void fill_bf16(std::vector<std::uint16_t>& out, float stddev, std::uint64_t seed) {
  const unsigned nt = std::max(1u, std::thread::hardware_concurrency());
  const std::size_t n = out.size(), per = (n + nt - 1) / nt;
  const float half_width = stddev * std::sqrt(3.0f);
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < nt; ++t)
    pool.emplace_back([&, t] {
      for (std::size_t i = t * per; i < std::min(n, (t + 1) * per); ++i) {
        if (stddev == 0) {
          out[i] = 0x3f80;  // 1.0
          continue;
        }
        std::uint64_t z = seed * 0x9e3779b97f4a7c15ull + i;  // splitmix64
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        const float u = static_cast<float>(z >> 40) / 8388608.0f - 1.0f;  // [-1, 1)
        out[i] = float_to_bf16(half_width * u);
      }
    });
  for (auto& th : pool) th.join();
}

// Writes the checkpoint: 4 shards cut at quarters of the total bytes, then the index (last, so a
// folder with an index is complete), config.json and generation_config.json.
void write_checkpoint(const fs::path& dir, const ModelConfig& cfg) {
  fs::create_directories(dir);
  const auto specs = qwen2_tensors(cfg);
  std::uint64_t total = 0;
  for (const auto& s : specs) total += numel(s.shape) * 2;
  static constexpr int kShards = 4;
  auto shard_name = [](int s) { return fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, kShards); };
  nlohmann::json weight_map = nlohmann::json::object();
  std::uint64_t before = 0;
  std::size_t next = 0;
  for (int s = 0; s < kShards; ++s) {
    SafetensorsWriter w;
    for (; next < specs.size(); ++next) {
      const int shard = std::min<int>(kShards - 1, static_cast<int>(before * kShards / total));
      if (shard != s) break;
      const auto& t = specs[next];
      std::vector<std::uint16_t> v(numel(t.shape));
      fill_bf16(v, t.stddev, next + 1);
      w.add(t.name, DType::BF16, t.shape, std::as_bytes(std::span<const std::uint16_t>(v)));
      weight_map[t.name] = shard_name(s);
      before += v.size() * 2;
    }
    w.write(dir / shard_name(s));
  }
  nlohmann::json j = cfg.to_json();
  j["bos_token_id"] = 151643;
  j["eos_token_id"] = 151645;
  write_text_atomic(dir / "config.json", j.dump(2));
  write_text_atomic(dir / "generation_config.json",
                    R"({"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643})");
  write_text_atomic(dir / "model.safetensors.index.json",
                    nlohmann::json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(2));
}

// The ceiling: pinned -> device cudaMemcpy of 256 MiB blocks, GB/s.
double pinned_h2d_gbps() {
  const std::size_t bytes = 256u << 20;
  void *h = nullptr, *d = nullptr;
  PEFT_CUDA_CHECK(cudaMallocHost(&h, bytes));
  PEFT_CUDA_CHECK(cudaMalloc(&d, bytes));
  std::memset(h, 1, bytes);
  cudaEvent_t a, b;
  PEFT_CUDA_CHECK(cudaEventCreate(&a));
  PEFT_CUDA_CHECK(cudaEventCreate(&b));
  PEFT_CUDA_CHECK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
  const int reps = 10;
  PEFT_CUDA_CHECK(cudaEventRecord(a));
  for (int i = 0; i < reps; ++i) PEFT_CUDA_CHECK(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice));
  PEFT_CUDA_CHECK(cudaEventRecord(b));
  PEFT_CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0;
  PEFT_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaFree(d);
  cudaFreeHost(h);
  return static_cast<double>(bytes) * reps / (ms / 1000.0) / 1e9;
}

// Whole tensors (the first, a middle one, the last two) compared byte for byte with the files.
bool spot_check(const Model& model, const fs::path& dir) {
  const SafetensorsModel files = SafetensorsModel::open(dir);
  const auto w = model.base_weights();
  std::vector<std::size_t> pick = {0, w.size() / 2, w.size() - 2, w.size() - 1};
  std::vector<std::byte> host;
  for (std::size_t i : pick) {
    const StoredTensor& t = files.tensor(w[i].name);
    host.resize(t.nbytes);
    PEFT_CUDA_CHECK(cudaMemcpy(host.data(), w[i].data, t.nbytes, cudaMemcpyDeviceToHost));
    if (std::memcmp(host.data(), t.data, t.nbytes) != 0) {
      std::fprintf(stderr, "load_bench: %s differs from the file\n", w[i].name.c_str());
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  fs::path dir = "/tmp/peft-7b-random";
  int reps = 5;
  bool write_only = false;
  peft::cuda::WeightLoaderOptions opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    if (a == "--dir" && v) dir = argv[++i];
    else if (a == "--write-only") write_only = true;
    else if (a == "--reps" && v) reps = std::atoi(argv[++i]);
    else if (a == "--threads" && v) opt.threads = std::atoi(argv[++i]);
    else if (a == "--buffers" && v) opt.buffers = std::atoi(argv[++i]);
    else if (a == "--staging-mib" && v) opt.staging_bytes = static_cast<std::size_t>(std::atoi(argv[++i])) << 20;
    else {
      std::fprintf(stderr, "usage: load_bench [--dir DIR] [--reps N] [--threads N] [--buffers N] [--staging-mib N] [--write-only]\n");
      return 2;
    }
  }
  try {
    ModelConfig cfg = preset_config<Qwen25_7B>();
    cfg.max_position_embeddings = 32768;  // Qwen2.5-7B-Instruct's config
    double write_s = 0;
    if (!fs::exists(dir / "model.safetensors.index.json")) {
      const auto t0 = std::chrono::steady_clock::now();
      write_checkpoint(dir, cfg);
      write_s = seconds_since(t0);
    }
    if (write_only) {
      std::printf("{\"workload\": \"load_7b_write\", \"dir\": \"%s\", \"write_s\": %.2f}\n", dir.string().c_str(), write_s);
      return 0;
    }
    cudaDeviceProp prop{};
    PEFT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    cfg = ModelConfig::from_file(dir / "config.json");
    check_preset<Qwen25_7B>(cfg, (dir / "config.json").string());
    const double ceiling = pinned_h2d_gbps();

    LoraConfig lora;
    lora.r = 8;
    lora.lora_alpha = 32;
    double construct_s = 0, first_s = 0, from_pretrained_s = 0;
    std::vector<double> gbps;
    std::vector<std::pair<int, double>> sweep;
    std::uint64_t bytes = 0;
    std::size_t tensors = 0, chunks = 0;
    bool verified = false;
    {
      auto t0 = std::chrono::steady_clock::now();
      Model model(cfg, lora, {256});
      construct_s = seconds_since(t0);
      first_s = model.load_pretrained(dir, opt).seconds;
      std::fprintf(stderr, "load_bench: write %.1f s, construct %.2f s, first load %.3f s, pinned->device %.1f GB/s\n",
                   write_s, construct_s, first_s, ceiling);
      for (int r = 0; r < reps; ++r) {
        const auto s = model.load_pretrained(dir, opt);
        bytes = s.file_bytes;
        tensors = s.tensors;
        chunks = s.chunks;
        gbps.push_back(static_cast<double>(s.file_bytes) / s.seconds / 1e9);
        std::fprintf(stderr, "load_bench: load %d: %.3f s, %.2f GB/s\n", r, s.seconds, gbps.back());
      }
      for (int threads : {2, 4, 12}) {
        peft::cuda::WeightLoaderOptions o = opt;
        o.threads = threads;
        o.buffers = std::max(opt.buffers, 2 * threads);
        double best = 0;
        for (int r = 0; r < 2; ++r) {
          const auto s = model.load_pretrained(dir, o);
          best = std::max(best, static_cast<double>(s.file_bytes) / s.seconds / 1e9);
        }
        sweep.emplace_back(threads, best);
        std::fprintf(stderr, "load_bench: %d threads: best %.2f GB/s\n", threads, best);
      }
      model.load_pretrained(dir, opt);
      verified = spot_check(model, dir);
    }
    {
      const auto t0 = std::chrono::steady_clock::now();
      auto m = Model::from_pretrained(dir, lora, 0, {256});
      PEFT_CUDA_CHECK(cudaDeviceSynchronize());
      from_pretrained_s = seconds_since(t0);
    }
    std::vector<double> sorted = gbps;
    std::sort(sorted.begin(), sorted.end());
    const double best = sorted.empty() ? 0 : sorted.back(), median = sorted.empty() ? 0 : sorted[sorted.size() / 2];
    std::string sweep_json;
    for (const auto& [t, g] : sweep) sweep_json += fmt::format("{}\"{}\": {:.2f}", sweep_json.empty() ? "" : ", ", t, g);
    std::printf(
        "{\"workload\": \"load_7b\", \"device\": \"%s\", \"dir\": \"%s\", \"checkpoint_gb\": %.3f, \"tensors\": %zu, "
        "\"chunks\": %zu, \"write_s\": %.2f, \"construct_s\": %.2f, \"first_load_s\": %.3f, \"reps\": %d, "
        "\"best_gbps\": %.2f, \"median_gbps\": %.2f, \"best_s\": %.3f, \"threads\": %d, \"buffers\": %d, "
        "\"staging_mib\": %zu, \"threads_sweep_best_gbps\": {%s}, \"from_pretrained_s\": %.3f, "
        "\"pinned_h2d_gbps\": %.2f, \"verified\": %s}\n",
        prop.name, dir.string().c_str(), static_cast<double>(bytes) / 1e9, tensors, chunks, write_s, construct_s,
        first_s, reps, best, median, best > 0 ? static_cast<double>(bytes) / best / 1e9 : 0.0, opt.threads,
        opt.buffers, opt.staging_bytes >> 20, sweep_json.c_str(), from_pretrained_s, ceiling,
        verified ? "true" : "false");
    return verified ? 0 : 1;
  } catch (const std::exception& e) {
    std::printf("{\"workload\": \"load_7b\", \"error\": %s}\n", nlohmann::json(e.what()).dump().c_str());
    return 1;
  }
}
