// checkpoint_write_bench: how long the trainer's write thread takes for a 7B rank-8 all-linear LoRA
// checkpoint (train/checkpoint.hpp's CheckpointContents::write inside write_directory_atomic, as
// Trainer::save_checkpoint runs it): adapter_model.safetensors (80 MB), optimizer.safetensors
// (exp_avg and exp_avg_sq, 161 MB) and the run's text files, every file durable before the folder
// is published. Beside it the disk's floor: the same bytes as one file, written and fsynced. The
// recipe waits for its last checkpoint before it takes its time (bench/RESULTS.md, issue 14).
//
//   checkpoint_write_bench [--dir DIR] [--reps 5] [--rank 8]
//
// DIR (default: a new folder under the current one, removed at the end) should be on the disk the
// runs write to. One JSON line a repetition, then the medians.
#include <peft/qwen.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

using namespace peft;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The disk's floor: `bytes` of `data` (repeated) in one file, written and fsynced.
double write_one_file(const std::filesystem::path& path, const std::vector<float>& data, std::size_t bytes) {
  const auto t0 = std::chrono::steady_clock::now();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  require(fd >= 0, "{}: cannot create", path.string());
  const auto* p = reinterpret_cast<const std::byte*>(data.data());
  for (std::size_t done = 0; done < bytes;) {
    const std::size_t n = std::min(bytes - done, data.size() * sizeof(float));
    detail::write_all(fd, p, n, path);
    done += n;
  }
  require(::fsync(fd) == 0, "{}: fsync failed", path.string());
  ::close(fd);
  return seconds_since(t0);
}

}  // namespace

int main(int argc, char** argv) {
  std::filesystem::path dir;
  int reps = 5, rank = 8;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--dir") dir = argv[i + 1];
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--rank") rank = std::atoi(argv[i + 1]);
    else {
      fmt::print(stderr, "usage: checkpoint_write_bench [--dir DIR] [--reps N] [--rank R]\n");
      return 2;
    }
  }
  const bool own_dir = dir.empty();
  if (own_dir) dir = std::filesystem::absolute(fmt::format("checkpoint_write_bench-{}", ::getpid()));
  std::filesystem::create_directories(dir);

  // Qwen2.5-7B's projections: (in, out) of q, k, v, o, gate, up, down, 28 layers.
  const int H = 3584, I = 18944, KV = 512, layers = 28;
  const std::vector<std::pair<std::string, std::pair<int, int>>> projections = {
      {"self_attn.q_proj", {H, H}},  {"self_attn.k_proj", {H, KV}}, {"self_attn.v_proj", {H, KV}},
      {"self_attn.o_proj", {H, H}},  {"mlp.gate_proj", {H, I}},     {"mlp.up_proj", {H, I}},
      {"mlp.down_proj", {I, H}}};
  HostParameters values;
  std::vector<std::string> names;
  for (int l = 0; l < layers; ++l)
    for (const auto& [module, shape] : projections) {
      const auto [in, out] = shape;
      const std::string base = fmt::format("model.layers.{}.{}", l, module);
      values.values.push_back(Matrix::Constant(rank, in, 0.01f));
      names.push_back(base + ".lora_A.weight");
      values.values.push_back(Matrix::Constant(out, rank, 0.02f));
      names.push_back(base + ".lora_B.weight");
    }
  for (std::size_t i = 0; i < names.size(); ++i) values.list.push_back({names[i], &values.values[i], nullptr, false});
  std::size_t floats = 0;
  for (const auto& m : values.values) floats += static_cast<std::size_t>(m.size());
  OptimizerSnapshot moments{.names = {"exp_avg", "exp_avg_sq"}, .buffers = {values.values, values.values}, .step = 50};
  std::map<std::string, std::string> texts;  // the trainer's: args, trainer_state, peft_state, ...
  for (const char* f : {"args.json", "additional_config.json", "trainer_state.json", "peft_state.json",
                        "generation_config.json"})
    texts[f] = std::string(4096, ' ') + "{}\n";
  LoraConfig lora;
  lora.r = rank;

  const std::size_t bytes = 3 * floats * sizeof(float);
  const std::vector<float> filler(1u << 22, 0.5f);  // 16 MB, written over and over
  std::vector<double> whole, floor;
  for (int r = 0; r < reps; ++r) {
    CheckpointContents c{.tensors = {.values = values, .moments = moments, .arrive = nullptr},
                         .masters = false,
                         .texts = texts,
                         .write_weights = [&](const std::filesystem::path& d, const ParameterList& p) {
                           save_adapter(d, p, lora, "/models/Qwen2.5-7B-Instruct", layers);
                         }};
    const auto target = dir / fmt::format("checkpoint-{}", r);
    const auto t0 = std::chrono::steady_clock::now();
    write_directory_atomic(target, [&](const std::filesystem::path& staging) { c.write(staging); });
    whole.push_back(seconds_since(t0));
    floor.push_back(write_one_file(dir / fmt::format("one-file-{}", r), filler, bytes));
    fmt::print("{{\"rep\": {}, \"checkpoint_s\": {:.3f}, \"one_file_s\": {:.3f}, \"mb\": {:.1f}}}\n", r, whole.back(),
               floor.back(), static_cast<double>(bytes) / 1e6);
    std::filesystem::remove_all(target);
    std::filesystem::remove(dir / fmt::format("one-file-{}", r));
  }
  fmt::print("{{\"median_checkpoint_s\": {:.3f}, \"median_one_file_s\": {:.3f}, \"tensors\": {}, \"rank\": {}}}\n",
             median(whole), median(floor), names.size(), rank);
  if (own_dir) std::filesystem::remove_all(dir);
  return 0;
}
