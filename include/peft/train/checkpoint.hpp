// Checkpoints: output_dir/checkpoint-<step>/ holds what the model trained (a PEFT adapter for
// any layout with LoRA, its fully trained modules inside it as modules_to_save; HF weights for
// layouts without LoRA), the optimizer moments, trainer_state.json and peft_state.json. Each is
// published atomically (written to a staging folder, fsynced, renamed), so a crash mid-save
// leaves the previous checkpoint whole. Rotation keeps the newest `save_total_limit` of the
// current run's checkpoints and never touches another run's (nor one whose run it cannot tell).
// Exact resume reads back the same files: every tensor of a LoRA layout from the adapter (fp32),
// other trained tensors from their weights file when it holds fp32, else from fp32 masters that
// the optimizer file carries ("master.<name>", optim/state_file.hpp) because a bf16 copy would
// lose the low bits.
#pragma once
#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <system_error>
#include <vector>

#include "peft/core/parallel_map.hpp"
#include "peft/io/atomic_file.hpp"
#include "peft/io/json_file.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/io/safetensors.hpp"
#include "peft/io/trained_tensors.hpp"
#include "peft/optim/state_file.hpp"
#include "peft/train/trainer_state.hpp"
#include "peft/train/training_arguments.hpp"

namespace peft {

template <class Model>
std::filesystem::path trained_weights_file(const std::filesystem::path& dir) {
  return trained_tensors_file(dir, trains_whole_model<Model>());
}

// The trained tensors as files: a PEFT adapter for a layout with LoRA, the trained tensors in the
// run's dtype otherwise (io/trained_tensors.hpp's trained_weights_writer, which a CUDA model's
// host copies go through too: models/cuda/checkpoint_hooks.cuh).
template <class Model>
void save_trained_weights(const std::filesystem::path& dir, Model& model, const std::string& base_model) {
  trained_weights_writer(model, base_model)(dir, model.trainable_parameters());
}

// What a checkpoint folder holds, taken at one step (host copies of the trained values and the
// optimizer's buffers, the state files' text) so that it can be written after the model has
// moved on: the trainer's save writes it into the staging folder, on its write thread with
// --async_save (train/background_write.hpp).
struct CheckpointContents {
  CheckpointTensors tensors;                 // the moments: none with --save_only_model
  bool masters = false;                      // fp32 masters of non-LoRA tensors beside the moments
  std::map<std::string, std::string> texts;  // file name -> text
  std::function<void(const std::filesystem::path&, const ParameterList&)> write_weights;

  // The two large files (at 7B rank 8: the adapter's 80 MB, the moments' 161 MB) are written and
  // fsynced at once, the moments on a thread of their own: 27% less wall time than one after the
  // other on the development machine's disk (bench/checkpoint_write_bench.cpp), and the trainer
  // waits for the last checkpoint.
  void write(const std::filesystem::path& dir) {
    tensors.receive();  // a device's copies, waited for here, on the write thread
    const auto weights = [&] { write_weights(dir, tensors.values.list); };
    if (tensors.moments)
      run_beside([&] { tensors.moments->write(dir / "optimizer.safetensors", tensors.values.list, masters); },
                 weights);
    else
      weights();
    for (const auto& [name, text] : texts) write_text_atomic(dir / name, text);
  }
};

// Restores what save_trained_weights (and the optimizer state's masters) wrote, bit for bit.
template <class Model>
void load_trained_weights(const std::filesystem::path& dir, Model& model) {
  const ParameterList params = model.trainable_parameters();
  if constexpr (Model::uses_lora())
    load_adapter_weights(dir, params);  // fp32, the modules_to_save included
  else
    load_trained_tensors(dir, params, trains_whole_model<Model>(), Model::Precision::storage);
}

// checkpoint-<N> folders under `output_dir`, oldest first.
inline std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& output_dir) {
  std::vector<std::pair<long long, std::filesystem::path>> found;
  static const std::regex pattern("checkpoint-([0-9]+)");
  if (!std::filesystem::exists(output_dir)) return {};
  for (const auto& e : std::filesystem::directory_iterator(output_dir)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (e.is_directory() && std::regex_match(name, m, pattern)) found.emplace_back(std::stoll(m[1]), e.path());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::filesystem::path> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

// N of a checkpoint-N folder (list_checkpoints' names).
inline std::int64_t checkpoint_step(const std::filesystem::path& checkpoint) {
  return std::stoll(checkpoint.filename().string().substr(std::string("checkpoint-").size()));
}

// Whether two paths name the same folder (relative, with "..", or through links alike).
inline bool same_folder(const std::filesystem::path& a, const std::filesystem::path& b) {
  std::error_code ec1, ec2;
  const auto ca = std::filesystem::weakly_canonical(std::filesystem::absolute(a), ec1);
  const auto cb = std::filesystem::weakly_canonical(std::filesystem::absolute(b), ec2);
  return !ec1 && !ec2 && ca == cb;
}

// Whether `checkpoint` (a path as typed, "" for none) is a folder directly inside `run_dir`.
inline bool checkpoint_in_folder(const std::filesystem::path& checkpoint, const std::filesystem::path& run_dir) {
  if (checkpoint.empty() || run_dir.empty()) return false;
  return same_folder(std::filesystem::absolute(detail::without_trailing_separator(checkpoint)).parent_path(), run_dir);
}

// The run id a checkpoint records (peft_state.json, or trainer_state.json before the split;
// "" if none or unreadable).
inline std::string checkpoint_run_id(const std::filesystem::path& checkpoint) {
  const auto file = peft_state_file(checkpoint);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) return "";
  try {
    const nlohmann::json j = read_json_file(file);
    if (j.is_object() && j.contains("run_id") && j["run_id"].is_string()) return j["run_id"].get<std::string>();
  } catch (const Error&) {
  }
  return "";
}

// checkpoint-N folders in `output_dir` with first < N <= last that run `run_id` did not write (another
// run's, an older peft's without a run id, or a folder of the user's): names a run saving steps
// first+1 .. last could take, and must not replace.
inline std::vector<std::filesystem::path> foreign_checkpoints(const std::filesystem::path& output_dir,
                                                              const std::string& run_id, std::int64_t first,
                                                              std::int64_t last) {
  std::vector<std::filesystem::path> found;
  for (const auto& c : list_checkpoints(output_dir)) {
    const std::int64_t n = checkpoint_step(c);
    if (n > first && n <= last && (run_id.empty() || checkpoint_run_id(c) != run_id)) found.push_back(c);
  }
  return found;
}

// A checkpoint-N this run did not write is never replaced (--overwrite true lets a run into a
// folder, not over another run's checkpoints): refused before the first step when this run (steps
// from+1 .. last, `per_epoch` an epoch) plans to save under its name (TrainingArguments::saves_at).
// A save at another step (a signal, early stopping) that meets one fails then, naming it.
inline void refuse_foreign_checkpoints(const std::filesystem::path& run_dir, const std::string& run_id,
                                       const TrainingArguments& args, std::int64_t per_epoch, std::int64_t from,
                                       std::int64_t last) {
  std::string names;
  for (const auto& c : foreign_checkpoints(run_dir, run_id, from, last)) {
    const std::int64_t n = checkpoint_step(c);
    if (args.saves_at(n, per_epoch, n == last)) names += (names.empty() ? "" : ", ") + c.filename().string();
  }
  if (!names.empty())
    fail("{} holds {}, not written by this run; this run would save a checkpoint of that name (--save_strategy {}, "
         "and at step {}) and replace it: pick another --output_dir, leave --add_version true for a new vN- folder, "
         "or move them", run_dir.string(), names, args.save_strategy, last);
}

// Deletes the oldest checkpoints of run `run_id` beyond `limit` (<= 0: keep all, as HF's Trainer),
// never one listed in `keep`, never one another run (or an older peft, which recorded no run id) wrote.
inline void rotate_checkpoints(const std::filesystem::path& output_dir, std::int64_t limit, const std::string& run_id,
                               const std::vector<std::filesystem::path>& keep = {}) {
  if (limit <= 0 || run_id.empty()) return;
  std::vector<std::filesystem::path> mine;
  for (const auto& c : list_checkpoints(output_dir))
    if (checkpoint_run_id(c) == run_id) mine.push_back(c);
  std::int64_t excess = static_cast<std::int64_t>(mine.size()) - limit;
  for (const auto& c : mine) {
    if (excess <= 0) break;
    if (std::find(keep.begin(), keep.end(), c) != keep.end()) continue;
    std::filesystem::remove_all(c);
    --excess;
  }
}

}  // namespace peft
