// What `swift sft` does, in order: load the model (or the embedded default), the tokenizer and the
// datasets; answer a few identity questions; train; answer them again; leave args.json,
// logging.jsonl and checkpoints in the run folder. Written once for every model type the
// program instantiates.
#pragma once
#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fmt/format.h>
#include <memory>
#include <optional>
#include <regex>
#include <csignal>
#include <cstdlib>
#include <unistd.h>

#include "embedded_default.hpp"
#include "peft/data/dataset_file.hpp"
#include "peft/data/dataset_loader.hpp"
#include "peft/dist/communicator.hpp"
#include "peft/generate/greedy.hpp"
#include "peft/io/atomic_file.hpp"
#include "peft/models/memory_plan.hpp"
#include "peft/qwen.hpp"
#include "peft/text/tokenizer.hpp"
#include "sft_args.hpp"

namespace peft::examples {

// output_dir/vN-YYYYMMDD-HHMMSS, N one past the highest existing version (ms-swift's naming).
inline std::filesystem::path versioned_run_dir(const std::filesystem::path& output_dir) {
  int next = 0;
  static const std::regex pattern("v([0-9]+)-.*");
  if (std::filesystem::exists(output_dir))
    for (const auto& e : std::filesystem::directory_iterator(output_dir)) {
      std::smatch m;
      const std::string name = e.path().filename().string();
      if (std::regex_match(name, m, pattern)) next = std::max(next, std::stoi(m[1]) + 1);
    }
  const std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  return output_dir / fmt::format("v{}-{}", next, stamp);
}

// The user turns of the shipped held-out identity questions.
inline std::vector<std::string> identity_questions(std::int64_t vocab, std::size_t n) {
  std::vector<std::string> out;
  for (const auto& row : data::read_dataset_file(default_identity_questions(), vocab))
    for (const auto& m : row.messages)
      if (m.role == data::Role::User && out.size() < n) out.push_back(m.content);
  return out;
}

template <class Model>
void answer_questions(Model& model, const text::Tokenizer& tok, const std::vector<std::string>& questions,
                      const std::string& system, const char* title) {
  fmt::print("\n{}\n", title);
  const auto im_end = tok.token_to_id("<|im_end|>"), eot = tok.token_to_id("<|endoftext|>");
  GreedyConfig g{48, {}};
  if (im_end) g.stop_ids.push_back(*im_end);
  if (eot) g.stop_ids.push_back(*eot);
  for (const auto& q : questions) {
    const std::vector<data::ChatMessage> chat = {{data::Role::User, q}};
    const auto prompt = system.empty() ? data::encode_prompt(tok, chat) : data::encode_prompt(tok, chat, system);
    text::StreamDecoder stream(tok);
    fmt::print("  Q: {}\n  A: ", q);
    generate_greedy(model, prompt, g, [&](std::int32_t id) {
      if (id == im_end || id == eot) return;
      fmt::print("{}", stream.push(id));
      std::fflush(stdout);
    });
    fmt::print("{}\n", stream.flush());
  }
}

// The embedded model's weights are random, so the recipe's lr 1e-4 x GA 16 would barely move it in
// a demo's time; unless the user set them, these make the identity visible in about a minute.
inline void apply_embedded_defaults(SftArgs& a) {
  auto unset = [&](const char* flag) { return std::find(a.given.begin(), a.given.end(), flag) == a.given.end(); };
  if (unset("learning_rate")) a.train.learning_rate = 3e-3;
  if (unset("num_train_epochs")) a.train.num_train_epochs = 10;
  if (unset("warmup_ratio")) a.train.warmup_ratio = 0.05;
  if (unset("logging_steps")) a.train.logging_steps = 44;
  if (unset("save_steps")) a.train.save_steps = 440;
  if (unset("save_total_limit")) a.train.save_total_limit = 2;
  fmt::print("[model] embedded-default hyperparameters (flags you set win): lr {} epochs {} warmup_ratio {}\n",
             a.train.learning_rate, a.train.num_train_epochs, a.train.warmup_ratio);
}

// Test-only (--debug_sigkill_at_step): the process dies by SIGKILL after step N, as from kill -9:
// no destructor runs, no buffer is flushed; the resume test restarts from what is on disk.
// Data-parallel fault tests narrow it to one rank (PEFT_DEBUG_FAULT_RANK=r) and can make that rank
// hang instead of dying (PEFT_DEBUG_FAULT=hang): the others must stop with an error naming it.
struct SigkillAt {
  std::int64_t step = -1;
  bool hang = false;
  void on_step_end(const TrainResult& r) const {
    if (r.global_step != step) return;
    if (hang)
      for (;;) ::pause();
    ::raise(SIGKILL);
  }
};

inline SigkillAt debug_fault(std::int64_t step, int rank) {
  const char* only = std::getenv("PEFT_DEBUG_FAULT_RANK");
  if (only && *only && std::atoi(only) != rank) return {};
  const char* mode = std::getenv("PEFT_DEBUG_FAULT");
  return {step, mode && std::string(mode) == "hang"};
}

// What a run loads once: the model, the tokenizer, the training data and the evaluation sets.
// lr_epoch_sweep builds it once and trains copies of the model.
template <class Model>
struct SftSetup {
  std::unique_ptr<Model> model;
  std::optional<text::Tokenizer> tok;
  data::LoadedData data;
  std::vector<Sample> general;              // --eval_general_dataset, for retention
  std::vector<IdentityQuestion> identity;   // --eval_identity_dataset, for identity accuracy
  std::string base_name;
  bool embedded = false;
};

// A backend with run-time construction options (the CUDA model: `Model::Options` =
// CudaModelOptions) sizes its buffers for the largest packed micro-batch the run feeds it.
template <class Model>
auto model_options(const SftArgs& a) {
  typename Model::Options o;
  const auto batch = std::max<std::int64_t>({a.train.per_device_train_batch_size, a.train.per_device_eval_batch_size, 1});
  o.max_tokens = static_cast<int>(a.data.max_length * batch);
  if constexpr (requires { o.device; }) o.device = a.cuda_device;
  return o;
}

template <class Model>
SftSetup<Model> prepare_sft(SftArgs& a) {
  SftSetup<Model> s;
  s.embedded = a.model.empty();
  if (!a.ignored.empty())
    fmt::print("[args] accepted but not used by this program: --{}\n", fmt::join(a.ignored, ", --"));

  // Model.
  LoraConfig lora = a.lora;
  if (!a.adapters.empty()) {
    const double dropout = lora.lora_dropout;
    lora = read_adapter_config(a.adapters);
    lora.lora_dropout = dropout;
  }
  s.base_name = a.model;
  if (s.embedded) {
    apply_embedded_defaults(a);
    fmt::print("[model] no --model given: the embedded default, a tiny Qwen2.5 architecture (hidden 64, 2 layers)\n"
               "        with the real Qwen2.5 tokenizer and RANDOM weights (seed {}). It shows the mechanics only;\n"
               "        for the real thing pass --model /path/to/Qwen2.5-7B-Instruct.\n", kEmbeddedWeightSeed);
    RandomWeights weights(kEmbeddedWeightSeed);
    if constexpr (requires { typename Model::Options; })
      s.model = Model::from_weights(embedded_default_config(), weights, lora, a.train.seed, model_options<Model>(a));
    else
      s.model = Model::from_weights(embedded_default_config(), weights, lora, a.train.seed);
    s.base_name = std::string(kEmbeddedModelName);
  } else if constexpr (requires { typename Model::Options; }) {
    s.model = Model::from_pretrained(a.model, lora, a.train.seed, model_options<Model>(a));
  } else {
    s.model = Model::from_pretrained(a.model, lora, a.train.seed);
  }
  std::int64_t trainable = 0;
  if constexpr (requires { s.model->trainable_parameters().numel(); }) {  // device-resident parameters
    if (!a.adapters.empty()) load_adapter_weights(a.adapters, *s.model);
    trainable = s.model->trainable_parameters().numel();
  } else {
    if (!a.adapters.empty()) load_adapter_weights(a.adapters, s.model->trainable_parameters());
    for (const auto& p : s.model->trainable_parameters()) trainable += p.value->size();
  }
  const auto& cfg = s.model->config();
  fmt::print("[model] {} layers, hidden {}, vocab {}; train_type {}, {} on {}; trainable parameters: {}\n",
             cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size, a.train_type, Model::Precision::name,
             Model::Device::name, trainable);
  if constexpr (QuantisedBase<typename Model::Precision>) {
    const auto nf4 = plan_lora_memory(cfg, lora.r, true), bf16 = plan_lora_memory(cfg, lora.r, false);
    fmt::print("[model] QLoRA: the q,k,v,o,gate,up,down weights are held in NF4 (blocks of 64, double-quantised), "
               "quantised on load: {:.2f} MiB instead of {:.2f} MiB in bf16; computed in {}\n",
               static_cast<double>(nf4.projection_bytes) / (1 << 20), static_cast<double>(bf16.projection_bytes) / (1 << 20),
               Model::Precision::name);
  }

  // Tokenizer: the model folder's, or the embedded Qwen2.5 one.
  const auto tok_path = s.embedded ? default_tokenizer() : std::filesystem::path(a.model) / "tokenizer.json";
  if (std::filesystem::exists(tok_path)) s.tok = text::Tokenizer::from_file(tok_path);
  else if (s.embedded) fail("{} is missing: run tools/fetch_tokenizer.sh (part of the set-up) first", tok_path.string());

  // Data.
  if (a.data.specs.empty()) {
    require(s.embedded, "--dataset is required with --model");
    a.data.specs = {default_identity_dataset().string()};
    if (a.data.model_name.empty()) a.data.model_name = {"小派", "Xiao Pai"};
    if (a.data.model_author.empty()) a.data.model_author = {"peft 社区", "the peft community"};
    if (a.eval_identity_dataset.empty()) a.eval_identity_dataset = default_identity_questions().string();
    if (a.eval_general_dataset.empty() && std::filesystem::exists(default_general_eval()))
      a.eval_general_dataset = default_general_eval().string();
  }
  const text::Tokenizer* tok = s.tok ? &*s.tok : nullptr;
  s.data = data::load_datasets(a.data, tok, cfg.vocab_size);
  fmt::print("[data] {}\n", s.data.stats.summary());

  // Evaluation sets.
  if (!a.eval_identity_dataset.empty()) {
    require(tok, "--eval_identity_dataset needs a tokenizer (tokenizer.json in the model folder)");
    s.identity = read_identity_questions(a.eval_identity_dataset, *tok, cfg.vocab_size, a.data.model_name,
                                         a.data.model_author, a.data.system);
    fmt::print("[eval] identity accuracy and repetition on {} questions from {}\n", s.identity.size(),
               a.eval_identity_dataset);
  }
  if (!a.eval_general_dataset.empty()) {
    data::DatasetOptions g = a.data;
    g.specs = {a.eval_general_dataset};
    g.dataset_shuffle = false;
    g.split_dataset_ratio = 0;
    s.general = data::load_datasets(g, tok, cfg.vocab_size).train;
    fmt::print("[eval] general retention on {} samples from {}\n", s.general.size(), a.eval_general_dataset);
  }
  return s;
}

// One training run of `model` into `run_dir`, with the evaluation hooks the setup enables.
template <class Model>
TrainResult train_sft(Model& model, const SftSetup<Model>& s, const SftArgs& a, const std::filesystem::path& run_dir,
                      bool quiet = false, dist::Communicator* comm = nullptr) {
  // The embedding has rows past the tokenizer's vocabulary (padding); an untrained model can pick
  // them, and they stand for no text, so they are dropped before decoding.
  auto decode_known = [&](const std::vector<std::int32_t>& ids) {
    std::vector<std::int32_t> known;
    for (const auto id : ids) {
      try {
        s.tok->token_bytes(id);
        known.push_back(id);
      } catch (const Error&) {
      }
    }
    return s.tok->decode(known);
  };
  IdentityProbe<Model> probe{&model, s.identity, GreedyConfig{a.eval_generation_max_new_tokens, {}}, decode_known};
  if (s.tok)
    for (const char* stop : {"<|im_end|>", "<|endoftext|>"})
      if (auto id = s.tok->token_to_id(stop)) probe.generation.stop_ids.push_back(*id);
  const TrainingArguments& t = a.train;
  const std::string stop_metric = !a.early_stop_metric.empty() ? TrainingArguments::eval_metric_name(a.early_stop_metric)
                                  : !t.metric_for_best_model.empty() ? t.best_metric_name() : "eval_loss";
  // The direction of the early-stopping metric: --greater_is_better when it is the best-model
  // metric, else HF's default for its name.
  TrainingArguments stop_dir = t;
  stop_dir.metric_for_best_model = stop_metric;
  if (stop_metric != t.best_metric_name()) stop_dir.greater_is_better.reset();
  const bool stop_greater = stop_dir.best_is_greater();
  Trainer<Model, AdamW, NamedSchedule, IdentityAccuracy<Model>, Repetition<Model>, GeneralRetention<Model>,
          EarlyStopping, SigkillAt>
      trainer(model, t, AdamW({t.adam_beta1, t.adam_beta2, t.adam_epsilon, t.weight_decay}),
              NamedSchedule(t.lr_scheduler_type), IdentityAccuracy<Model>{&probe}, Repetition<Model>{&probe, 3},
              GeneralRetention<Model>{&model, &s.general, t.per_device_eval_batch_size},
              EarlyStopping{stop_metric, a.early_stop_patience, a.early_stop_min_delta, stop_greater},
              debug_fault(a.debug_sigkill_at_step, comm ? comm->rank() : 0));
  trainer.set_communicator(comm);
  trainer.set_run_dir(run_dir);
  trainer.set_base_model_name(s.base_name);
  trainer.set_quiet(quiet);
  if (!quiet)
    fmt::print("\n[train] {} samples, {} optimizer steps\n", s.data.train.size(), trainer.total_steps(s.data.train.size()));
  return trainer.train(s.data.train, s.data.val.empty() ? nullptr : &s.data.val);
}

// `comm`: data-parallel training (dist/); nullptr = one process. Only rank 0 writes the run folder
// and answers the questions; the other ranks train and keep quiet.
template <class Model>
int run_sft(SftArgs a, dist::Communicator* comm = nullptr) {
  using clock = std::chrono::steady_clock;
  const bool writer = !comm || comm->rank() == 0;
  const auto t_start = clock::now();
  SftSetup<Model> s = prepare_sft<Model>(a);
  Model& model = *s.model;
  const auto& cfg = model.config();
  const auto& lora = model.lora_config();

  // Run folder and args.json. A resumed run continues in the folder of its checkpoint.
  std::filesystem::path run_dir = a.add_version ? versioned_run_dir(a.train.output_dir) : a.train.output_dir;
  if (!a.train.resume_from_checkpoint.empty())
    run_dir = std::filesystem::absolute(peft::detail::without_trailing_separator(a.train.resume_from_checkpoint)).parent_path();
  if (writer) {
    std::filesystem::create_directories(run_dir);
    write_text_atomic(run_dir / (a.train.resume_from_checkpoint.empty() ? "args.json" : "args_resume.json"),
                      a.as_json.dump(2) + "\n");
    fmt::print("[run] writing to {}\n", run_dir.string());
  }
  if (comm)
    fmt::print("[dist] world size {}: global batch = {} per device x {} accumulation x {} ranks\n",
               comm->world_size(), a.train.per_device_train_batch_size, a.train.gradient_accumulation_steps,
               comm->world_size());
  fmt::print("[hparams] lr {} epochs {} batch {} grad_accum {} lora r={} alpha={} dropout={} targets {} scheduler {} "
             "warmup_ratio {} weight_decay {} max_grad_norm {}\n",
             a.train.learning_rate, a.train.num_train_epochs, a.train.per_device_train_batch_size,
             a.train.gradient_accumulation_steps, lora.r, lora.lora_alpha, lora.lora_dropout,
             fmt::join(lora.target_modules, ","), a.train.lr_scheduler_type, a.train.warmup_ratio,
             a.train.weight_decay, a.train.max_grad_norm);

  std::vector<std::string> questions;
  if (writer && s.tok && std::filesystem::exists(default_identity_questions())) questions = identity_questions(cfg.vocab_size, 4);
  if (!questions.empty()) answer_questions(model, *s.tok, questions, a.data.system, "[before training]");

  const TrainResult r = train_sft(model, s, a, writer ? run_dir : std::filesystem::path{}, !writer, comm);
  fmt::print("[train] done: {} steps in {:.1f} s, first loss {:.4f}, last loss {:.4f}, skipped steps {}{}\n",
             r.global_step, r.seconds, r.step_losses.front(), r.step_losses.back(), r.skipped_steps,
             r.stopped_early ? " (stopped early)" : "");
  fmt::print("[train] last checkpoint: {}\n", r.last_checkpoint.string());
  if (!r.best_model_checkpoint.empty())
    fmt::print("[train] best checkpoint: {} ({} = {})\n", r.best_model_checkpoint.string(),
               a.train.best_metric_name(), r.best_metric);
  fmt::print("[train] plot: {}\n", (run_dir / "loss.svg").string());

  if (!questions.empty()) answer_questions(model, *s.tok, questions, a.data.system, "[after training]");
  fmt::print("\n[done] {:.1f} s in all\n", std::chrono::duration<double>(clock::now() - t_start).count());
  return 0;
}

}  // namespace peft::examples
