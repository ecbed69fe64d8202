// `swift sft`'s command line, parsed with Boost.Program_Options into the library's option structs
// (LoraConfig, TrainingArguments, DatasetOptions). Flag names and defaults follow ms-swift, so a
// recipe's command line runs unchanged; ms-swift flags this program does not act on are accepted
// and reported, and anything else is an error (naming the nearest real flags). Defaults that
// depend on the model (--torch_dtype, --max_length) or on the world size
// (--gradient_accumulation_steps) are settled here, once --model is resolved (io/hub_cache.hpp),
// so the program and args.json see the values that run.
#pragma once
#include <boost/program_options.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fmt/ranges.h>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../command_line.hpp"
#include "../infer/model_source.hpp"
#include "../swift_flags.hpp"
#include "peft/core/error.hpp"
#include "peft/data/dataset_loader.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/dist/launch_env.hpp"
#include "peft/io/hub_cache.hpp"
#include "peft/io/json_file.hpp"
#include "peft/io/model_config.hpp"
#include "peft/io/lora_config.hpp"
#include "peft/models/cuda/memory_budget.hpp"
#include "peft/policies/activation_sets.hpp"
#include "peft/train/training_arguments.hpp"
#include "embedded_default.hpp"
#include "flag_suggestions.hpp"
#include "quant_args.hpp"

namespace peft::examples {

struct SftArgs {
  std::string model;  // empty: the embedded default model; else an absolute folder (a hub id resolved)
  std::string train_type = "lora";
  std::string adapters;
  std::string torch_dtype = "bfloat16";
  std::string device = "auto";
  int cuda_device = 0;  // not a flag: the GPU of this rank (LOCAL_RANK), set by the CUDA program
  bool add_version = true;
  // The CUDA programs' activation policy: --gradient_checkpointing auto (ours, the default: the fastest
  // plan that fits) | true (ms-swift's default) | false | selective; the policy that runs once chosen
  cuda::Activations gradient_checkpointing = cuda::Activations::kAuto;
  // With true or selective: how many layers, from the first, rebuild; the rest keep everything
  // (Megatron-SWIFT's --recompute_num_layers, block method). -1: all of them.
  int recompute_num_layers = -1;
  bool overwrite = false;  // write into a non-empty --output_dir with --add_version false
  LoraConfig lora;
  QuantArgs quant;  // --quant_method bnb --quant_bits 4: QLoRA (sft/quant_args.hpp)
  TrainingArguments train;
  data::DatasetOptions data;
  // Evaluation hooks (train/hooks/): held-out identity questions, a general set for retention.
  std::string eval_identity_dataset, eval_general_dataset;
  std::int64_t eval_generation_max_new_tokens = 48;
  // Early stopping (HF's EarlyStoppingCallback; ms-swift has no flag for it, names are ours).
  std::string early_stop_metric;
  std::int64_t early_stop_patience = 0;
  double early_stop_min_delta = 0.0;
  std::int64_t debug_sigkill_at_step = -1;  // test-only: the process kills itself (SIGKILL) there
  std::vector<std::string> ignored;  // ms-swift flags accepted but not acted on
  std::vector<std::string> given;    // flags the user set explicitly
  nlohmann::json as_json;            // every flag as given, for args.json
  bool help = false;
};

namespace detail {

inline bool parse_bool(const std::string& flag, const std::string& v) {
  if (v == "true" || v == "True" || v == "1") return true;
  if (v == "false" || v == "False" || v == "0") return false;
  fail("--{}: '{}' is not a boolean (valid: true, false)", flag, v);
}

inline void one_of(const std::string& flag, const std::string& v, std::initializer_list<const char*> valid) {
  std::string list;
  for (const char* x : valid) {
    if (v == x) return;
    list += list.empty() ? x : std::string(", ") + x;
  }
  fail("--{}: '{}' is not supported (valid: {})", flag, v, list);
}

// ms-swift flags that change nothing here (speed knobs of its stack, integrations, the vision
// parts of multimodal models), accepted so a recipe's command line runs as written. --padding_free:
// no batch here computes on padding. --model_type / --template: checked to name Qwen2 / Qwen2.5.
inline const std::vector<std::string>& accepted_unused_flags() {
  static const std::vector<std::string> flags = {
      "dataloader_num_workers", "dataset_num_proc", "deepspeed", "ddp_backend", "ddp_timeout", "attn_impl",
      "use_liger_kernel", "lazy_tokenize", "streaming", "use_hf", "check_model", "torch_compile",
      "load_from_cache_file", "model_type", "template", "ddp_find_unused_parameters", "dataloader_pin_memory",
      "dataloader_persistent_workers", "dataloader_prefetch_factor", "save_safetensors", "use_flash_ckpt",
      "hub_token", "run_name", "logging_first_step", "padding_free", "freeze_vit", "freeze_aligner", "freeze_llm",
      "vit_gradient_checkpointing", "gradient_checkpointing_kwargs", "task_type", "lora_bias", "push_to_hub",
      "tuner_backend"};
  return flags;
}

// ms-swift flags that would change the result and are not implemented here: refused with what to do.
inline constexpr UnsupportedFlag kUnsupportedSftFlags[] = {
    {"use_dora", "DoRA is not implemented: drop the flag to train plain LoRA", {"false", "False", "0"}},
    {"init_weights", "adapters start as PEFT's default (Kaiming-uniform A, zero B): drop the flag", {"true", "True", "1"}},
    {"lora_dtype", "adapters train in fp32 masters with bf16 compute copies: drop the flag", {"float32", "fp32"}},
    {"modules_to_save", "full-rank extra modules are not trained with LoRA here: drop the flag", {""}},
    {"target_regex", "name the projections with --target_modules (all-linear, q_proj, ...)"},
    {"resume_only_model", "resume exactly with --resume_from_checkpoint, or start from the weights alone with "
                          "--adapters CHECKPOINT", {"false", "False", "0"}},
    {"ignore_data_skip", "--resume_from_checkpoint always continues where the data stopped; to start from the weights "
                         "alone, pass --adapters CHECKPOINT", {"false", "False", "0"}},
    {"packing", "rows are not concatenated into fixed-length sequences; --accumulation_pack_tokens joins a step's "
                "micro-batches into fewer calls without changing the update", {"false", "False", "0"}},
    {"loss_scale", "every response token counts once (ms-swift's default); drop the flag", {"default"}},
    {"max_pixels", "the models here are text-only: drop the flag"},
    {"response_prefix", "the chat template is Qwen2.5's as is: drop the flag"},
    {"dataloader_drop_last", "a last short batch is trained, as HF's default: drop the flag", {"false", "False", "0"}},
    {"use_chat_template", "rows are always rendered with the Qwen2.5 chat template", {"true", "True", "1", ""}},
    {"config", "pass the flags on the command line"},
    {"acc_strategy", "token_acc is counted over tokens (ms-swift's default 'token'): drop the flag", {"token"}},
};

// Accepted flags whose value still matters: a family other than Qwen2, a LoRA bias, an upload or a
// task other than causal LM would be silently not done.
inline void check_swift_passthrough(const boost::program_options::variables_map& vm) {
  require_qwen2_family(vm);
  auto values = [&](const char* f) { return vm.count(f) ? vm[f].as<std::vector<std::string>>() : std::vector<std::string>{}; };
  for (const auto& v : values("lora_bias"))
    require(v == "none", "--lora_bias {}: only 'none' is implemented (LoRA leaves the biases frozen)", v);
  for (const auto& v : values("task_type"))
    require(v == "causal_lm", "--task_type {}: only causal_lm is implemented", v);
  refuse_push_to_hub(vm, "the checkpoint folder");
}

// The numeric metrics an evaluation of identity_finetune can produce, and what each needs.
struct EvalMetric {
  const char* name;
  const char* needs;
};
inline constexpr EvalMetric kEvalMetrics[] = {
    {"eval_loss", "a validation split (--split_dataset_ratio)"},
    {"eval_identity_accuracy", "--eval_identity_dataset"},
    {"eval_repetition", "--eval_identity_dataset"},
    {"eval_general_loss", "--eval_general_dataset"},
    {"eval_general_loss_base", "--eval_general_dataset"},
    {"eval_general_retention", "--eval_general_dataset"},
};

// A misspelt metric used to fail only at the first evaluation, after the training it was to judge.
inline void check_eval_metric_name(const char* flag, const std::string& metric) {
  const std::string name = TrainingArguments::eval_metric_name(metric);
  std::string valid;
  for (const auto& m : kEvalMetrics) {
    if (name == m.name) return;
    valid += fmt::format("{}{} (needs {})", valid.empty() ? "" : ", ", std::string_view(m.name).substr(5), m.needs);
  }
  fail("--{} {}: no evaluation produces '{}' (valid: {})", flag, metric, name, valid);
}

// LoRA flags that cannot take effect: with --train_type full they are ignored (a warning); with
// --adapters the adapter's own adapter_config.json decides, so a different value is an error.
inline void check_lora_flags(const SftArgs& a) {
  auto given = [&](const char* f) { return std::find(a.given.begin(), a.given.end(), f) != a.given.end(); };
  if (a.train_type == "full") {
    require(a.adapters.empty(), "--adapters {} with --train_type full: a LoRA adapter cannot start a full "
            "fine-tune (merge it into the model first with merge_lora)", a.adapters);
    for (const char* f : {"lora_rank", "lora_alpha", "lora_dropout", "target_modules", "use_rslora"})
      if (given(f)) fmt::print(stderr, "[args] warning: --{} is ignored with --train_type full\n", f);
    return;
  }
  if (a.adapters.empty()) return;
  const LoraConfig from_file = read_adapter_config(a.adapters);
  const std::string file = (std::filesystem::path(a.adapters) / "adapter_config.json").string();
  require(!given("lora_rank") || a.lora.r == from_file.r,
          "--lora_rank {} conflicts with --adapters: {} has r = {} (the adapter decides; drop --lora_rank)",
          a.lora.r, file, from_file.r);
  require(!given("lora_alpha") || a.lora.lora_alpha == from_file.lora_alpha,
          "--lora_alpha {} conflicts with --adapters: {} has lora_alpha = {} (the adapter decides; drop --lora_alpha)",
          a.lora.lora_alpha, file, from_file.lora_alpha);
  require(!given("use_rslora") || a.lora.use_rslora == from_file.use_rslora,
          "--use_rslora {} conflicts with --adapters: {} has use_rslora = {} (the adapter decides; drop --use_rslora)",
          a.lora.use_rslora, file, from_file.use_rslora);
  require(!given("target_modules") || targeted_module_names(a.lora) == targeted_module_names(from_file),
          "--target_modules {} conflicts with --adapters: {} targets {} (the adapter decides; drop --target_modules)",
          fmt::join(a.lora.target_modules, " "), file, fmt::join(targeted_module_names(from_file), " "));
}

}  // namespace detail

// ms-swift's TrainArguments rule: a total batch of at least 16 samples per optimizer step.
inline std::int64_t default_gradient_accumulation(std::int64_t per_device_batch, int world_size) {
  const double per_step = static_cast<double>(std::max<std::int64_t>(1, per_device_batch)) * std::max(1, world_size);
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(16.0 / per_step)));
}

// ms-swift's --system: a value naming an existing .txt file is that file's text.
inline std::string system_prompt_value(const std::string& v) {
  std::error_code ec;
  if (v.size() > 4 && v.ends_with(".txt") && std::filesystem::is_regular_file(v, ec)) return read_text_file(v);
  return v;
}

// `extra`: a program's own flags (lr_epoch_sweep's grid), parsed alongside these; `program`
// titles --help and the messages.
inline SftArgs parse_sft_args(int argc, const char* const* argv, std::ostream& help_out = std::cout,
                              const boost::program_options::options_description* extra = nullptr,
                              const char* program = "identity_finetune") {
  namespace po = boost::program_options;
  // One stream for everything the run prints, flushed at each line: `prog 2>&1 | tee log` keeps
  // the order (errors go to stderr, unbuffered, after the lines before them).
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  SftArgs a;
  std::vector<std::string> datasets, val_datasets, targets = {"all-linear"}, model_name, model_author;
  std::string overwrite = "false", ignore_mismatch = "false", use_rslora = "false";
  std::string add_version = "true", dataset_shuffle = "true", loader_shuffle = "true", checkpointing = "auto";
  TrainingArguments& t = a.train;
  t.weight_decay = 0.1;
  t.lr_scheduler_type = "cosine";
  t.save_total_limit = -1;
  std::int64_t eval_steps = 0;
  std::string output_dir = "output", resume, greater_is_better, load_best = "false", save_only_model = "false",
              async_save = "true";
  std::string tuner_type, logging_dir;
  std::int64_t early_stop_interval = 0;

  po::options_description d(fmt::format("{} (flags as ms-swift's `swift sft`)", program));
  d.add_options()
      ("help,h", "show this help")
      ("model", po::value(&a.model), "model folder (config.json + *.safetensors) or hub id found in the ModelScope/HF caches; default: the embedded tiny model")
      ("dataset", po::value(&datasets)->multitoken(), "dataset files (.json .jsonl .csv), folders or ids (id:subset), each optionally #N")
      ("val_dataset", po::value(&val_datasets)->multitoken(), "validation datasets, as --dataset")
      ("train_type", po::value(&a.train_type)->default_value("lora"), "lora | full")
      ("tuner_type", po::value(&tuner_type), "ms-swift 4's name for --train_type")
      ("adapters", po::value(&a.adapters), "start from this PEFT adapter folder")
      ("lora_rank", po::value(&a.lora.r)->default_value(8), "LoRA rank r")
      ("lora_alpha", po::value(&a.lora.lora_alpha)->default_value(32), "LoRA alpha (scaling = alpha / r, or alpha / sqrt(r) with --use_rslora)")
      ("use_rslora", bool_flag(&use_rslora, "false"), "rank-stabilised LoRA: scaling = alpha / sqrt(r) (true|false)")
      ("lora_dropout", po::value(&a.lora.lora_dropout)->default_value(0.05), "dropout on the LoRA branch input")
      ("target_modules", po::value(&targets)->multitoken(), "all-linear, or projection names (q_proj ...)")
      ("learning_rate", po::value(&t.learning_rate), "peak learning rate; default 1e-4 (lora), 1e-5 (full), as ms-swift")
      ("num_train_epochs", po::value(&t.num_train_epochs)->default_value(3), "epochs")
      ("max_steps", po::value(&t.max_steps)->default_value(-1), "optimizer steps; > 0 overrides epochs")
      ("per_device_train_batch_size", po::value(&t.per_device_train_batch_size)->default_value(1), "samples per micro-batch")
      ("per_device_eval_batch_size", po::value(&t.per_device_eval_batch_size)->default_value(1), "samples per eval batch")
      ("gradient_accumulation_steps", po::value(&t.gradient_accumulation_steps),
       "micro-batches per step; default: ceil(16 / (batch x world size)), a total batch of 16 (ms-swift)")
      ("accumulation_pack_tokens", po::value(&t.accumulation_pack_tokens)->default_value(-1),
       "pack a step's micro-batches into calls of at most this many tokens (-1: the GPU packs up to batch x --max_length tokens, the CPU does not; 0: off)")
      ("max_grad_norm", po::value(&t.max_grad_norm)->default_value(1.0), "gradient clipping; 0 disables")
      ("optim", po::value(&t.optim)->default_value("adamw_torch"), "optimizer: adamw_torch | sgd (torch.optim.SGD)")
      ("sgd_momentum", po::value(&t.sgd_momentum)->default_value(0.0), "--optim sgd's momentum (torch's default 0)")
      ("weight_decay", po::value(&t.weight_decay)->default_value(0.1), "weight decay (AdamW: decoupled; SGD: L2, coupled)")
      ("adam_beta1", po::value(&t.adam_beta1)->default_value(0.9), "AdamW beta1")
      ("adam_beta2", po::value(&t.adam_beta2)->default_value(0.95), "AdamW beta2")
      ("adam_epsilon", po::value(&t.adam_epsilon)->default_value(1e-8), "AdamW epsilon")
      ("lr_scheduler_type", po::value(&t.lr_scheduler_type)->default_value("cosine"), "constant | linear | cosine")
      ("warmup_ratio", po::value(&t.warmup_ratio)->default_value(0.0), "warmup as a fraction of all steps")
      ("warmup_steps", po::value(&t.warmup_steps)->default_value(0), "warmup steps (overrides the ratio)")
      ("seed", po::value(&t.seed)->default_value(42), "seed for LoRA init and dropout")
      ("data_seed", po::value(&a.data.seed)->default_value(42),
       "seed for dataset sampling, split, shuffle and each epoch's batch order; apart from --seed, as ms-swift")
      ("dataset_shuffle", bool_flag(&dataset_shuffle, "true"), "shuffle the dataset once (true|false)")
      ("train_dataloader_shuffle", bool_flag(&loader_shuffle, "true"), "reshuffle each epoch (true|false)")
      ("split_dataset_ratio", po::value(&a.data.split_dataset_ratio)->default_value(0.0), "validation fraction")
      ("max_length", po::value(&a.data.max_length), "longest sample in tokens; default: the model's max_position_embeddings")
      ("truncation_strategy", po::value(&a.data.truncation_strategy)->default_value("delete"), "delete | left | right")
      ("system", po::value(&a.data.system), "system prompt, or a .txt file holding it (default: Qwen2.5's)")
      ("model_name", po::value(&model_name)->multitoken(), "self-cognition name: one value, or Chinese and English")
      ("model_author", po::value(&model_author)->multitoken(), "self-cognition author: one value, or Chinese and English")
      ("logging_steps", po::value(&t.logging_steps)->default_value(5), "log every N steps")
      ("report_to", po::value(&t.report_to)->multitoken(),
       "tensorboard (the default, as ms-swift) | all: TensorBoard event files in --logging_dir; none: no events")
      ("logging_dir", po::value(&logging_dir), "where the TensorBoard event files go (default: <run>/runs)")
      ("eval_strategy", po::value(&t.eval_strategy), "steps | epoch | no (default: --save_strategy's, as ms-swift)")
      ("eval_steps", po::value(&eval_steps)->default_value(0), "evaluate every N steps (0: at save steps)")
      ("save_strategy", po::value(&t.save_strategy)->default_value("steps"),
       "steps | epoch (and at the last step either way) | best (at each evaluation that improves "
       "--metric_for_best_model, eval_loss by default) | no (no checkpoint at all: the trained weights are not saved)")
      ("save_steps", po::value(&t.save_steps)->default_value(500), "checkpoint every N steps")
      ("save_only_model", bool_flag(&save_only_model, "false"),
       "checkpoints without the optimizer state (smaller; a resume from one is refused)")
      ("async_save", bool_flag(&async_save, "true"),
       "write each checkpoint's files beside the next steps (its tensors copied at the save first); a hard kill "
       "while it is written leaves the checkpoint before it; false: in line (true|false)")
      ("save_total_limit", po::value(&t.save_total_limit)->default_value(-1), "keep at most N checkpoints")
      ("output_dir", po::value(&output_dir)->default_value("output"), "where runs are written")
      ("add_version", bool_flag(&add_version, "true"), "write into output_dir/vN-<time>/ (true|false)")
      ("overwrite", bool_flag(&overwrite, "false"),
       "with --add_version false: write into a non-empty --output_dir (true|false)")
      ("ignore_args_mismatch", bool_flag(&ignore_mismatch, "false"),
       "resume although the run's settings (dataset, lr, schedule, rank, seeds, ...) differ from the checkpoint's")
      ("torch_dtype", po::value(&a.torch_dtype), "float32 | bfloat16; default: config.json's (the embedded model: bfloat16)")
      ("device", po::value(&a.device)->default_value("auto"), "cpu | cuda | auto")
      ("gradient_checkpointing", bool_flag(&checkpointing, "auto"),
       "GPU: the fastest of the plans below that fits the free memory (auto; ms-swift's default is true), "
       "recompute each layer's activations in the backward (true), keep them all (false), or keep the "
       "attention side and rebuild the norms and gate/up (selective, ~1/3 of keep's activation memory at half "
       "of recompute's extra work); a plan that does not fit the free memory falls back to the next leaner one. "
       "The numbers are the same under each. The CPU keeps them all")
      ("recompute_num_layers", po::value(&a.recompute_num_layers)->default_value(-1),
       "GPU, with --gradient_checkpointing true or selective: only the first N layers recompute (Megatron-SWIFT's "
       "block method); the layers above them keep all their activations, faster for more memory (-1: every layer)")
      ("resume_from_checkpoint", po::value(&resume), "continue exactly from this checkpoint-N folder")
      ("metric_for_best_model", po::value(&t.metric_for_best_model),
       "eval metric that picks the best checkpoint (loss, identity_accuracy, ...; 'eval_' is implied)")
      ("greater_is_better", bool_flag(&greater_is_better), "true|false (default: false for *loss, else true)")
      ("load_best_model_at_end", bool_flag(&load_best, "false"), "end with the best checkpoint's weights")
      ("early_stop_metric", po::value(&a.early_stop_metric), "metric early stopping watches (default: metric_for_best_model or eval_loss)")
      ("early_stop_patience", po::value(&a.early_stop_patience)->default_value(0), "stop after N evaluations without improvement (0: off)")
      ("early_stop_interval", po::value(&early_stop_interval), "ms-swift's name for --early_stop_patience")
      ("early_stop_min_delta", po::value(&a.early_stop_min_delta)->default_value(0.0), "smallest change that counts as improvement")
      ("max_consecutive_nonfinite_steps", po::value(&t.max_consecutive_nonfinite_steps)->default_value(5),
       "stop when this many steps in a row have a NaN/Inf loss or gradient norm")
      ("eval_identity_dataset", po::value(&a.eval_identity_dataset), "held-out identity questions for identity accuracy")
      ("eval_general_dataset", po::value(&a.eval_general_dataset), "held-out general set for retention (loss vs the base model)")
      ("eval_generation_max_new_tokens", po::value(&a.eval_generation_max_new_tokens)->default_value(48),
       "longest answer generated for identity accuracy and repetition")
      ("debug_sigkill_at_step", po::value(&a.debug_sigkill_at_step)->default_value(-1), "(tests) die by SIGKILL after step N");
  add_quant_options(d, a.quant);
  if (extra) d.add(*extra);
  add_accepted_unused(d, detail::accepted_unused_flags());
  add_unsupported(d, detail::kUnsupportedSftFlags);

  po::variables_map vm;
  if (!parse_command_line(argc, argv, d, vm, help_out)) {
    a.help = true;
    return a;
  }
  a.ignored = given_flags(vm, detail::accepted_unused_flags());
  for (auto& f : refuse_unsupported(vm, detail::kUnsupportedSftFlags)) a.ignored.push_back(std::move(f));
  detail::check_swift_passthrough(vm);
  for (const auto& [name, value] : vm) {
    if (!value.defaulted()) a.given.push_back(name);
    const auto& v = value.value();
    if (const auto* s = boost::any_cast<std::string>(&v)) a.as_json[name] = *s;
    else if (const auto* s = boost::any_cast<std::vector<std::string>>(&v)) a.as_json[name] = *s;
    else if (const auto* d = boost::any_cast<double>(&v)) a.as_json[name] = *d;
    else if (const auto* i = boost::any_cast<int>(&v)) a.as_json[name] = *i;
    else if (const auto* l = boost::any_cast<std::int64_t>(&v)) a.as_json[name] = *l;
    else if (const auto* u = boost::any_cast<std::uint64_t>(&v)) a.as_json[name] = *u;
    else if (const auto* p = boost::any_cast<std::filesystem::path>(&v)) a.as_json[name] = p->string();
  }

  if (vm.count("tuner_type")) take_alias(vm, "tuner_type", tuner_type, "train_type", a.train_type);
  if (vm.count("early_stop_interval")) {
    take_alias(vm, "early_stop_interval", early_stop_interval, "early_stop_patience", a.early_stop_patience);
    a.as_json["early_stop_patience"] = early_stop_interval;  // args.json records the setting that ran
  }
  if (!vm.count("eval_strategy"))  // ms-swift: eval follows save ("best" saves at step evaluations)
    t.eval_strategy = t.save_strategy == "best" ? "steps" : t.save_strategy;
  if (!vm.count("report_to")) t.report_to = {"tensorboard"};
  t.logging_dir = logging_dir;
  t.save_only_model = detail::parse_bool("save_only_model", save_only_model);
  t.async_save = detail::parse_bool("async_save", async_save);
  require(a.train_type != "qlora",
          "--train_type qlora: ms-swift has no such train type; QLoRA is --train_type lora --quant_method bnb --quant_bits 4");
  detail::one_of("train_type", a.train_type, {"lora", "full"});
  if (!resume.empty()) require(std::filesystem::exists(resume), "--resume_from_checkpoint {}: the folder does not exist", resume);
  if (!resume.empty())
    require(std::filesystem::is_regular_file(std::filesystem::path(resume) / "trainer_state.json"),
            "--resume_from_checkpoint {}: no trainer_state.json there (not a checkpoint folder)", resume);
  // ms-swift's load_args_from_ckpt: with --adapters or --resume_from_checkpoint and no --model, the
  // base is the one the run recorded (args.json, else adapter_config.json's base_model_name_or_path).
  if (a.model.empty() && (!a.adapters.empty() || !resume.empty())) {
    const ModelSource src = resolve_model_source("", !a.adapters.empty() ? a.adapters : resume);
    a.model = src.model;
    fmt::print("[args] base model {} (recorded in {})\n", a.model.empty() ? "the embedded default" : a.model,
               src.found_in);
  }
  // Defaults from the model: its config.json's dtype and context (ms-swift's model_info).
  ModelConfig model_cfg = embedded_default_config();
  if (!a.model.empty()) {
    a.model = io::resolve_model_dir(a.model).string();
    model_cfg = ModelConfig::from_file(std::filesystem::path(a.model) / "config.json");
  }
  if (!vm.count("torch_dtype")) {
    a.torch_dtype = a.model.empty() ? "bfloat16" : model_cfg.torch_dtype;
    if (a.torch_dtype == "float16") {
      fmt::print("[args] config.json says float16, which peft does not train in; using bfloat16\n");
      a.torch_dtype = "bfloat16";
    }
    // QLoRA: an explicit --bnb_4bit_compute_dtype settles the dtype the unquantised weights use.
    for (const char* d : {"bfloat16", "float32"})
      if (a.quant.compute_dtype == d) a.torch_dtype = d;
  }
  if (!vm.count("max_length")) a.data.max_length = model_cfg.max_position_embeddings;
  if (!vm.count("learning_rate")) t.learning_rate = a.train_type == "full" ? 1e-5 : 1e-4;
  if (!val_datasets.empty() && a.data.split_dataset_ratio > 0) {  // ms-swift's rule
    fmt::print("[args] --val_dataset given: --split_dataset_ratio {} set to 0\n", a.data.split_dataset_ratio);
    a.data.split_dataset_ratio = 0;
  }
  if (!vm.count("gradient_accumulation_steps"))
    t.gradient_accumulation_steps =
        default_gradient_accumulation(t.per_device_train_batch_size, dist::read_launch_env().world_size);
  if (a.torch_dtype == "fp32") a.torch_dtype = "float32";
  if (a.torch_dtype == "bf16") a.torch_dtype = "bfloat16";
  detail::one_of("torch_dtype", a.torch_dtype, {"float32", "bfloat16"});
  detail::one_of("device", a.device, {"cpu", "cuda", "auto"});
  validate_quant_args(a.quant, a.train_type, a.torch_dtype, a.as_json);
  t.data_seed = a.data.seed;  // the loader's order too: ms-swift hands its data_seed to HF's Trainer
  detail::one_of("lr_scheduler_type", t.lr_scheduler_type, {"constant", "linear", "cosine"});
  detail::one_of("truncation_strategy", a.data.truncation_strategy, {"delete", "left", "right"});
  a.add_version = detail::parse_bool("add_version", add_version);
  a.lora.use_rslora = detail::parse_bool("use_rslora", use_rslora);
  a.gradient_checkpointing = cuda::parse_gradient_checkpointing(checkpointing);
  if (!vm["recompute_num_layers"].defaulted()) {
    cuda::check_recompute_num_layers(a.recompute_num_layers, model_cfg.num_hidden_layers,
                                     a.model.empty() ? std::string("the embedded default model")
                                                     : a.model + "/config.json");
    require(a.recompute_num_layers < 0 || a.gradient_checkpointing != cuda::Activations::kKeep,
            "--recompute_num_layers {} with --gradient_checkpointing false: every layer already keeps its "
            "activations; use --gradient_checkpointing true or selective", a.recompute_num_layers);
    // Megatron-SWIFT's flag goes with full recompute: N given without a policy asks for that one
    if (a.recompute_num_layers >= 0 && a.gradient_checkpointing == cuda::Activations::kAuto) {
      require(vm["gradient_checkpointing"].defaulted(),
              "--recompute_num_layers {} with --gradient_checkpointing auto: the layers it rebuilds depend on the "
              "policy; use --gradient_checkpointing true or selective", a.recompute_num_layers);
      a.gradient_checkpointing = cuda::Activations::kRecompute;
    }
  }
  a.overwrite = detail::parse_bool("overwrite", overwrite);
  t.ignore_args_mismatch = detail::parse_bool("ignore_args_mismatch", ignore_mismatch);
  a.data.dataset_shuffle = detail::parse_bool("dataset_shuffle", dataset_shuffle);
  t.train_dataloader_shuffle = detail::parse_bool("train_dataloader_shuffle", loader_shuffle);
  require(eval_steps >= 0, "--eval_steps must be >= 0");
  t.eval_steps = eval_steps;
  t.output_dir = output_dir;
  t.resume_from_checkpoint = resume;
  if (!greater_is_better.empty()) t.greater_is_better = detail::parse_bool("greater_is_better", greater_is_better);
  t.load_best_model_at_end = detail::parse_bool("load_best_model_at_end", load_best);
  require(a.early_stop_patience >= 0, "--early_stop_patience must be >= 0");
  require(a.early_stop_patience == 0 || t.eval_strategy != "no",
          "--early_stop_patience {} with --eval_strategy no: early stopping watches evaluations, and none would run "
          "(--eval_strategy follows --save_strategy when unset)", a.early_stop_patience);
  // A full fine-tune's checkpoint restores its bf16 weights from the fp32 masters kept with the
  // optimizer state, which --save_only_model leaves out: loading the best one would fail after the run.
  require(!(a.train_type == "full" && t.save_only_model && t.load_best_model_at_end),
          "--load_best_model_at_end true with --train_type full and --save_only_model true: the best checkpoint's "
          "weights are restored from the optimizer file's fp32 masters, which --save_only_model leaves out; drop one");
  require(a.early_stop_min_delta >= 0, "--early_stop_min_delta must be >= 0");
  require(a.eval_generation_max_new_tokens > 0, "--eval_generation_max_new_tokens must be positive");
  a.lora.target_modules = targets;
  if (a.train_type == "lora") a.lora.validate();
  t.validate();
  detail::check_lora_flags(a);
  for (const auto& [flag, metric] : {std::pair{"metric_for_best_model", t.metric_for_best_model},
                                     {"early_stop_metric", a.early_stop_metric}})
    if (!metric.empty()) detail::check_eval_metric_name(flag, metric);
  require(a.data.split_dataset_ratio >= 0 && a.data.split_dataset_ratio < 1,
          "--split_dataset_ratio must be in [0, 1) (got {})", a.data.split_dataset_ratio);
  require(a.data.max_length > 0, "--max_length must be positive");
  require_utf8_flag("system", a.data.system);
  for (const auto& v : model_name) require_utf8_flag("model_name", v);
  for (const auto& v : model_author) require_utf8_flag("model_author", v);
  a.data.specs = datasets;
  a.data.val_specs = val_datasets;
  a.data.system = system_prompt_value(a.data.system);
  a.data.model_name = model_name;
  a.data.model_author = model_author;
  return a;
}

}  // namespace peft::examples
