// What a run leaves to say how it was made, as ms-swift leaves it: args.json with the EFFECTIVE
// arguments (every default settled, the embedded default's hyperparameters applied, the base
// model as an absolute path) in the run folder and in every checkpoint, and, in each LoRA
// checkpoint, additional_config.json (ms-swift's LoRA extras). A checkpoint copied elsewhere
// thus still names its base model, dtype and system prompt (infer/model_source.hpp reads them).
#pragma once
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "peft/data/dataset_loader.hpp"
#include "peft/io/json_file.hpp"
#include "peft/io/lora_config.hpp"
#include "sft_args.hpp"

namespace peft::examples {

// `base`: the absolute model folder, or the embedded default's recorded name.
inline nlohmann::json effective_args_json(const SftArgs& a, const LoraConfig& lora, const std::string& base,
                                          const std::filesystem::path& run_dir) {
  nlohmann::json j = a.as_json;  // every flag parsed (the program's own ones too)
  const nlohmann::json train = a.train.to_json();
  for (const auto& [k, v] : train.items()) j[k] = v;
  j["model"] = base;
  j["train_type"] = a.train_type;
  if (a.adapters.empty()) j.erase("adapters");
  else j["adapters"] = std::filesystem::absolute(a.adapters).lexically_normal().string();
  j["torch_dtype"] = a.torch_dtype;
  j["device"] = a.device;
  j["add_version"] = a.add_version;
  j["lora_rank"] = lora.r;
  j["lora_alpha"] = lora.lora_alpha;
  j["lora_dropout"] = lora.lora_dropout;
  j["target_modules"] = lora.target_modules;
  j["use_rslora"] = lora.use_rslora;
  // The activation policy that ran: the CUDA programs may fall back from false to a leaner one that
  // fits the free memory, keeping some layers whole (cuda_activations.cuh).
  j["gradient_checkpointing"] = cuda::gradient_checkpointing_flag(a.gradient_checkpointing);
  j["recompute_num_layers"] = a.recompute_num_layers;
  j["dataset"] = a.data.specs;
  j["val_dataset"] = a.data.val_specs;
  j["data_seed"] = a.data.seed;
  j["dataset_shuffle"] = a.data.dataset_shuffle;
  j["split_dataset_ratio"] = a.data.split_dataset_ratio;
  j["max_length"] = a.data.max_length;
  j["truncation_strategy"] = a.data.truncation_strategy;
  if (a.data.system.empty()) j.erase("system");  // the template's default (chat uses it too)
  else j["system"] = a.data.system;               // the text, also when given as a .txt file
  j["model_name"] = a.data.model_name;
  j["model_author"] = a.data.model_author;
  j["eval_identity_dataset"] = a.eval_identity_dataset;
  j["eval_general_dataset"] = a.eval_general_dataset;
  // ms-swift records the versioned folder it wrote to as output_dir.
  j["output_dir"] = std::filesystem::absolute(run_dir).lexically_normal().string();
  return j;
}

// The dataset options a run recorded in its args.json (ours or ms-swift's: the same keys), for
// re-deriving its validation rows (chat --load_data_args). Absent keys take ms-swift's defaults.
inline data::DatasetOptions recorded_dataset_options(const nlohmann::json& j, const std::string& source) {
  data::DatasetOptions o;
  auto strings = [&](const char* key) {
    std::vector<std::string> out;
    const auto* v = find_field(j, key);
    if (!v || v->is_null()) return out;
    if (v->is_string()) return std::vector<std::string>{v->get<std::string>()};
    require(v->is_array(), "{}: {} must be a string or a list of strings", source, key);
    for (const auto& e : *v) out.push_back(json_value_as<std::string>(e, source, key));
    return out;
  };
  o.specs = strings("dataset");
  o.val_specs = strings("val_dataset");
  o.model_name = strings("model_name");
  o.model_author = strings("model_author");
  // ms-swift's data_seed is its own flag (default 42), never --seed.
  if (const auto* seed = find_field(j, "data_seed"); seed && !seed->is_null())
    o.seed = json_value_as<std::uint64_t>(*seed, source, "data_seed");
  if (const auto* v = find_field(j, "dataset_shuffle")) o.dataset_shuffle = json_value_as<bool>(*v, source, "dataset_shuffle");
  if (const auto* v = find_field(j, "split_dataset_ratio"))
    o.split_dataset_ratio = json_value_as<double>(*v, source, "split_dataset_ratio");
  return o;
}

// Files every checkpoint folder carries beside the weights (Trainer::set_checkpoint_files).
inline std::map<std::string, std::string> checkpoint_record_files(const nlohmann::json& args, bool lora) {
  std::map<std::string, std::string> files = {{"args.json", args.dump(2) + "\n"}};
  if (lora)  // ms-swift's tuner extras, at their defaults (peft trains none of them)
    files["additional_config.json"] =
        nlohmann::json{{"lora_dtype", nullptr}, {"lorap_lr_ratio", nullptr}, {"lorap_emb_lr", 1e-6}}.dump(2) + "\n";
  return files;
}

// A full fine-tune's checkpoint is a model folder of its own (chat --model, export, HF
// from_pretrained): it carries the base's tokenizer and generation files, as ms-swift's do.
inline void add_tokenizer_files(std::map<std::string, std::string>& files, const std::filesystem::path& from) {
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                           "special_tokens_map.json", "added_tokens.json", "generation_config.json"})
    if (std::filesystem::is_regular_file(from / name)) files[name] = read_text_file(from / name);
}

}  // namespace peft::examples
