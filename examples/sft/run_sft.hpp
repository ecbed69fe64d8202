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
#include <limits>
#include <memory>
#include <optional>
#include <regex>
#include <csignal>
#include <cstdlib>
#include <unistd.h>

#include "../activity.hpp"
#include "embedded_default.hpp"
#include "peft/data/dataset_file.hpp"
#include "peft/data/dataset_loader.hpp"
#include "peft/dist/communicator.hpp"
#include "peft/generate/greedy.hpp"
#include "peft/io/atomic_file.hpp"
#include "peft/models/memory_plan.hpp"
#include "peft/qwen.hpp"
#include "peft/text/tokenizer.hpp"
#include "output_folder.hpp"
#include "run_record.hpp"
#include "run_summary.hpp"
#include "sft_args.hpp"

namespace peft::examples {

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
  if (unset("gradient_accumulation_steps")) a.train.gradient_accumulation_steps = 1;  // ~880 small steps, ~20 s
  if (unset("warmup_ratio")) a.train.warmup_ratio = 0.05;
  if (unset("logging_steps")) a.train.logging_steps = 44;
  if (unset("save_steps")) a.train.save_steps = 440;
  if (unset("save_total_limit")) a.train.save_total_limit = 2;
  fmt::print("[model] embedded-default hyperparameters (flags you set win): lr {} epochs {} warmup_ratio {} "
             "gradient_accumulation_steps {}\n",
             a.train.learning_rate, a.train.num_train_epochs, a.train.warmup_ratio, a.train.gradient_accumulation_steps);
}

// Test-only (--debug_sigkill_at_step): the process dies by SIGKILL after step N, as from kill -9:
// no destructor runs, no buffer is flushed; the resume test restarts from what is on disk.
// Data-parallel fault tests narrow it to one rank (PEFT_DEBUG_FAULT_RANK=r) and can make that rank
// hang instead of dying (PEFT_DEBUG_FAULT=hang). PEFT_DEBUG_FAULT=sigint / sigterm sends that
// signal instead, as Ctrl-C or a scheduler would, at a known step.
struct SigkillAt {
  std::int64_t step = -1;
  bool hang = false;
  int signal = SIGKILL;
  void on_step_end(const TrainResult& r) const {
    if (r.global_step != step) return;
    if (hang)
      for (;;) ::pause();
    ::raise(signal);
  }
};

inline SigkillAt debug_fault(std::int64_t step, int rank) {
  const char* only = std::getenv("PEFT_DEBUG_FAULT_RANK");
  if (only && *only && std::atoi(only) != rank) return {};
  const std::string mode = std::getenv("PEFT_DEBUG_FAULT") ? std::getenv("PEFT_DEBUG_FAULT") : "";
  return {step, mode == "hang", mode == "sigint" ? SIGINT : mode == "sigterm" ? SIGTERM : SIGKILL};
}

// What a run reads before its model: the tokenizer, the training data and the general evaluation
// set. Read first, so a device model is sized (and its activation policy chosen) for the data.
struct SftInputs {
  std::optional<text::Tokenizer> tok;
  data::LoadedData data;
  std::vector<Sample> general;  // --eval_general_dataset, for retention
  std::string base_name;
  bool embedded = false;
  std::int64_t longest = 0;  // the longest sample, in tokens, of the three sets
};

// What a run loads once: the inputs, the model and the identity questions. lr_epoch_sweep builds
// it once and trains copies of the model.
template <class Model>
struct SftSetup : SftInputs {
  std::unique_ptr<Model> model;
  std::vector<IdentityQuestion> identity;  // --eval_identity_dataset, for identity accuracy
  std::int64_t trainable = 0;              // trainable parameters
};

// A backend with run-time construction options (the CUDA model: `Model::Options` =
// CudaModelOptions) sizes its buffers for the largest call the run feeds it: a micro-batch of
// the longest samples the data has (--max_length defaults to the model's whole context, far more
// than a run's samples need), or a step's micro-batches packed into one (packed_call_tokens).
template <class Model>
auto model_options(const SftArgs& a, std::int64_t longest_sample = std::numeric_limits<std::int64_t>::max()) {
  typename Model::Options o;
  const auto batch = std::max<std::int64_t>({a.train.per_device_train_batch_size, a.train.per_device_eval_batch_size, 1});
  o.max_tokens = static_cast<int>(packed_call_tokens(a.data.max_length, longest_sample, batch,
                                                     a.train.gradient_accumulation_steps,
                                                     a.train.accumulation_pack_tokens));
  if constexpr (requires { o.device; }) o.device = a.cuda_device;
  if constexpr (requires { o.recompute_num_layers; }) o.recompute_num_layers = a.recompute_num_layers;
  return o;
}

// --max_length against the model's context, before anything is sized from it (the CUDA model's
// buffers, the longest row kept): a longer sample than max_position_embeddings has no positions
// the model was trained on. An explicit larger value is an error; the default follows the model.
inline void fit_max_length(SftArgs& a, std::int64_t max_position_embeddings, const std::string& config_source) {
  if (a.data.max_length <= max_position_embeddings) return;
  const bool given = std::find(a.given.begin(), a.given.end(), "max_length") != a.given.end();
  require(!given, "--max_length {} exceeds the model's context: max_position_embeddings is {} in {}; pass "
          "--max_length {} or less", a.data.max_length, max_position_embeddings, config_source, max_position_embeddings);
  fmt::print("[data] max_length {} (the model's max_position_embeddings; the default {} is longer)\n",
             max_position_embeddings, a.data.max_length);
  a.data.max_length = max_position_embeddings;
}

// --metric_for_best_model / --early_stop_metric against the evaluations this run will make (the
// names were checked when parsing): a metric nothing produces would fail after the training.
// --save_strategy best saves only where an evaluation improves its metric: refused here too, before
// the run folder exists, when nothing would produce it.
template <class Setup>
void check_eval_metrics_available(const SftArgs& a, const Setup& s) {
  // What the metric `name` needs that this run lacks (nullptr: nothing, or not a metric of ours).
  auto unmet = [&](const std::string& name) -> const char* {
    const bool produced = name == "eval_loss" ? !s.data.val.empty()
                          : name.starts_with("eval_general_") ? !s.general.empty()
                                                              : !s.identity.empty();
    for (const auto& m : detail::kEvalMetrics)
      if (name == m.name && !produced) return m.needs;
    return nullptr;
  };
  for (const auto& [flag, metric] : {std::pair{"metric_for_best_model", a.train.metric_for_best_model},
                                     {"early_stop_metric", a.early_stop_metric}}) {
    if (metric.empty()) continue;
    const std::string name = TrainingArguments::eval_metric_name(metric);
    if (const char* needs = unmet(name))
      fail("--{} {}: this run makes no evaluation that produces '{}'; it needs {}", flag, metric, name, needs);
  }
  if (a.train.save_strategy != "best") return;
  const std::string best = a.train.best_metric_name();
  if (const char* needs = unmet(best))
    fail("--save_strategy best saves a checkpoint when an evaluation improves {}, and this run evaluates nothing "
         "that produces it: it needs {}", best, needs);
}

inline SftInputs read_sft_inputs(SftArgs& a) {
  SftInputs s;
  s.embedded = a.model.empty();
  report_accepted_unused(stdout, a.ignored);
  s.base_name = s.embedded ? std::string(kEmbeddedModelName) : a.model;
  if (s.embedded) apply_embedded_defaults(a);
  // The config first: tokenizer and data come before the weights, so a device model can size
  // its buffers for the data (model_options).
  const std::string config_source =
      s.embedded ? std::string("the embedded default model") : (std::filesystem::path(a.model) / "config.json").string();
  const ModelConfig file_cfg =
      s.embedded ? embedded_default_config() : ModelConfig::from_file(std::filesystem::path(a.model) / "config.json");
  fit_max_length(a, file_cfg.max_position_embeddings, config_source);

  // Tokenizer: the model folder's, or the embedded Qwen2.5 one.
  const auto tok_path = s.embedded ? default_tokenizer() : std::filesystem::path(a.model) / "tokenizer.json";
  if (std::filesystem::exists(tok_path)) s.tok = text::Tokenizer::from_file(tok_path);
  else if (s.embedded) fail("{} is missing: run tools/fetch_tokenizer.sh (part of the set-up) first", tok_path.string());

  // Data.
  now_doing("reading the datasets");
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
  try {
    s.data = data::load_datasets(a.data, tok, file_cfg.vocab_size);
  } catch (const Error& e) {
    if (tok) throw;
    fail("{} (no tokenizer: {} does not exist)", e.what(), tok_path.string());
  }
  if (!a.eval_general_dataset.empty()) {
    data::DatasetOptions g = a.data;
    g.specs = {a.eval_general_dataset};
    g.val_specs.clear();
    g.dataset_shuffle = false;
    g.split_dataset_ratio = 0;
    s.general = data::load_datasets(g, tok, file_cfg.vocab_size).train;
  }
  for (const auto* set : {&s.data.train, &s.data.val, &s.general})
    for (const auto& x : *set) s.longest = std::max<std::int64_t>(s.longest, static_cast<std::int64_t>(x.size()));
  return s;
}

template <class Model>
SftSetup<Model> prepare_sft(SftArgs& a, SftInputs inputs) {
  SftSetup<Model> s;
  static_cast<SftInputs&>(s) = std::move(inputs);
  const std::int64_t longest = s.longest;
  if constexpr (!requires { typename Model::Options; })
    for (const char* flag : {"gradient_checkpointing", "recompute_num_layers"})
      if (std::find(a.given.begin(), a.given.end(), flag) != a.given.end())
        fmt::print("[args] --{} chooses the GPU's activation policy; the CPU backend keeps every activation\n", flag);
  const text::Tokenizer* tok = s.tok ? &*s.tok : nullptr;

  // Model.
  now_doing(s.embedded ? std::string("building the embedded default model") : "loading the model " + a.model);
  LoraConfig lora = a.lora;
  if (!a.adapters.empty()) {
    const double dropout = lora.lora_dropout;
    lora = read_adapter_config(a.adapters);
    lora.lora_dropout = dropout;
  }
  if (s.embedded) {
    fmt::print("[model] no --model given: the embedded default, a tiny Qwen2.5 architecture (hidden 64, 2 layers)\n"
               "        with the real Qwen2.5 tokenizer and RANDOM weights (seed {}). It shows the mechanics only;\n"
               "        for the real thing pass --model /path/to/Qwen2.5-7B-Instruct.\n", kEmbeddedWeightSeed);
    RandomWeights weights(kEmbeddedWeightSeed);
    if constexpr (requires { typename Model::Options; })
      s.model = Model::from_weights(embedded_default_config(), weights, lora, a.train.seed, model_options<Model>(a, longest));
    else
      s.model = Model::from_weights(embedded_default_config(), weights, lora, a.train.seed);
  } else if constexpr (requires { typename Model::Options; }) {
    s.model = Model::from_pretrained(a.model, lora, a.train.seed, model_options<Model>(a, longest));
  } else {
    s.model = Model::from_pretrained(a.model, lora, a.train.seed);
  }
  if (!a.adapters.empty()) {
    if constexpr (requires { s.model->trainable_parameters().numel(); })  // device-resident parameters
      load_adapter_weights(a.adapters, *s.model);
    else
      load_adapter_weights(a.adapters, s.model->trainable_parameters());
  }
  s.trainable = trainable_numel(s.model->trainable_parameters());
  const auto& cfg = s.model->config();
  fmt::print("[model] {}{} layers, hidden {}, vocab {}; train_type {}, {} on {}; trainable parameters: {}\n",
             s.embedded ? "" : a.model + ": ", cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size, a.train_type,
             Model::Precision::name, Model::Device::name, s.trainable);
  if constexpr (QuantisedBase<typename Model::Precision>) {
    const auto nf4 = plan_lora_memory(cfg, lora.r, true), bf16 = plan_lora_memory(cfg, lora.r, false);
    fmt::print("[model] QLoRA: the q,k,v,o,gate,up,down weights are held in NF4 (blocks of 64, double-quantised), "
               "quantised on load: {:.2f} MiB instead of {:.2f} MiB in bf16; computed in {}\n",
               static_cast<double>(nf4.projection_bytes) / (1 << 20), static_cast<double>(bf16.projection_bytes) / (1 << 20),
               Model::Precision::name);
  }
  // One line per dataset, then the totals, each marked.
  const std::string summary = s.data.stats.summary();
  for (std::size_t from = 0; from < summary.size();) {
    const std::size_t nl = std::min(summary.find('\n', from), summary.size());
    fmt::print("[data] {}\n", summary.substr(from, nl - from));
    from = nl + 1;
  }

  // Evaluation sets.
  if (!a.eval_identity_dataset.empty()) {
    require(tok, "--eval_identity_dataset needs a tokenizer (tokenizer.json in the model folder)");
    s.identity = read_identity_questions(a.eval_identity_dataset, *tok, cfg.vocab_size, a.data.model_name,
                                         a.data.model_author, a.data.system);
    fmt::print("[eval] identity accuracy and repetition on {} questions from {}\n", s.identity.size(),
               a.eval_identity_dataset);
  }
  if (!a.eval_general_dataset.empty())
    fmt::print("[eval] general retention on {} samples from {}\n", s.general.size(), a.eval_general_dataset);
  // ms-swift's _init_metric: metric_for_best_model defaults to 'loss', so HF's Trainer records
  // best_metric / best_model_checkpoint at each save after an evaluation and --save_total_limit
  // keeps that checkpoint. Only a validation set makes eval_loss here (else nothing is tracked).
  if (a.train.metric_for_best_model.empty() && !s.data.val.empty()) a.train.metric_for_best_model = "loss";
  check_eval_metrics_available(a, s);
  return s;
}
template <class Model>
SftSetup<Model> prepare_sft(SftArgs& a) {
  return prepare_sft<Model>(a, read_sft_inputs(a));
}

// One training run of `model` into `run_dir`, with the evaluation hooks the setup enables.
template <class Model>
TrainResult train_sft(Model& model, const SftSetup<Model>& s, const SftArgs& a, const std::filesystem::path& run_dir,
                      bool quiet = false, dist::Communicator* comm = nullptr) {
  // An untrained model can pick the embedding's padded rows past the tokenizer's vocabulary; the
  // tokenizer's decode drops them, as HF's does.
  auto decode = [&](const std::vector<std::int32_t>& ids) { return s.tok->decode(ids); };
  IdentityProbe<Model> probe{&model, s.identity, GreedyConfig{a.eval_generation_max_new_tokens, {}}, decode};
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
  // --optim picks the optimizer policy (train/optimizer_choice.hpp): one Trainer type per choice.
  return with_optimizer(t, [&]<class Opt>(Opt opt) {
    Trainer<Model, Opt, NamedSchedule, IdentityAccuracy<Model>, Repetition<Model>, GeneralRetention<Model>,
            EarlyStopping, SigkillAt>
        trainer(model, t, std::move(opt), NamedSchedule(t.lr_scheduler_type), IdentityAccuracy<Model>{&probe},
                Repetition<Model>{&probe, 3}, GeneralRetention<Model>{&model, &s.general, t.per_device_eval_batch_size},
                EarlyStopping{stop_metric, a.early_stop_patience, a.early_stop_min_delta, stop_greater},
                debug_fault(a.debug_sigkill_at_step, comm ? comm->rank() : 0));
    trainer.set_communicator(comm);
    trainer.set_run_dir(run_dir);
    trainer.set_base_model_name(s.base_name);
    if (!run_dir.empty()) {
      auto files = checkpoint_record_files(effective_args_json(a, model.lora_config(), s.base_name, run_dir),
                                           a.train_type == "lora");
      if (a.train_type == "full")
        add_tokenizer_files(files, s.embedded ? default_tokenizer().parent_path() : std::filesystem::path(a.model));
      trainer.set_checkpoint_files(std::move(files));
    }
    trainer.set_quiet(quiet);
    now_doing(fmt::format("training (--max_length {}, --per_device_train_batch_size {})", a.data.max_length,
                          t.per_device_train_batch_size));
    if (!quiet)
      fmt::print("\n[train] {} samples, {} optimizer steps\n", s.data.train.size(),
                 trainer.total_steps(s.data.train.size()));
    return trainer.train(s.data.train, s.data.val.empty() ? nullptr : &s.data.val);
  });
}

// The run once its model is built (run_sft_choosing, below).
template <class Model>
int run_prepared_sft(SftArgs& a, dist::Communicator* comm, const RunFolder& folder, SftSetup<Model> s,
                     std::chrono::steady_clock::time_point t_start) {
  using clock = std::chrono::steady_clock;
  const bool writer = !comm || comm->rank() == 0;
  const std::filesystem::path& run_dir = folder.dir;
  Model& model = *s.model;
  const auto& cfg = model.config();
  const auto& lora = model.lora_config();

  // A resume is checked before anything is written for it (the trainer checks again as it loads).
  if (writer && !a.train.resume_from_checkpoint.empty()) {
    const int world = comm ? comm->world_size() : 1;
    check_resume(a.train, result_settings(a.train, s.data.train, Model::uses_lora() ? &lora : nullptr, world),
                 total_steps(a.train, s.data.train.size(), world), false);
  }
  // args.json (args_resume.json when continuing a run in its own folder).
  if (writer) {
    write_resume_source(folder);
    write_text_atomic(run_dir / (folder.continues_checkpoint_run ? "args_resume.json" : "args.json"),
                      effective_args_json(a, lora, s.base_name, run_dir).dump(2) + "\n");
    fmt::print("[run] writing to {}\n", run_dir.string());
  }
  if (comm)
    fmt::print("[dist] world size {}: global batch = {} per device x {} accumulation x {} ranks\n",
               comm->world_size(), a.train.per_device_train_batch_size, a.train.gradient_accumulation_steps,
               comm->world_size());
  fmt::print("[hparams] lr {} epochs {} batch {} grad_accum {} lora r={} alpha={}{} dropout={} targets {} scheduler {} "
             "warmup_ratio {} weight_decay {} max_grad_norm {} optim {}\n",
             a.train.learning_rate, a.train.num_train_epochs, a.train.per_device_train_batch_size,
             a.train.gradient_accumulation_steps, lora.r, lora.lora_alpha,
             lora.use_rslora ? fmt::format(" rslora (scaling {:.6g})", lora.scaling()) : "", lora.lora_dropout,
             fmt::join(lora.target_modules, ","), a.train.lr_scheduler_type, a.train.warmup_ratio,
             a.train.weight_decay, a.train.max_grad_norm, a.train.optim);

  std::vector<std::string> questions;
  if (writer && s.tok && std::filesystem::exists(default_identity_questions())) questions = identity_questions(cfg.vocab_size, 4);
  if (!questions.empty()) answer_questions(model, *s.tok, questions, a.data.system, "[before training]");

  const TrainResult r = train_sft(model, s, a, writer ? run_dir : std::filesystem::path{}, !writer, comm);
  fmt::print("[train] done: {} steps in {:.1f} s, first loss {:.4f}, last loss {:.4f}, skipped steps {}{}\n",
             r.global_step, r.seconds, r.step_losses.front(), r.step_losses.back(), r.skipped_steps,
             r.stopped_early ? " (stopped early)" : "");
  if constexpr (requires { model.memory_report(); }) fmt::print("{}\n", model.memory_report());  // the GPU's peak
  if (r.last_checkpoint.empty())
    fmt::print("[train] no checkpoint written (--save_strategy {}): the trained weights were not saved\n",
               a.train.save_strategy);
  else
    fmt::print("[train] last checkpoint: {}\n", r.last_checkpoint.string());
  if (writer && !r.stop_signal)  // a stopped run is not finished: its log ends as a killed ms-swift run's
    append_swift_run_summary(run_dir,
                             {swift_parameter_info(cfg, s.trainable, Model::uses_lora()), swift_length_stats(s.data.train),
                              s.data.val.empty() ? std::string() : swift_length_stats(s.data.val)},
                             r);
  if (r.stop_signal) {
    if (!r.last_checkpoint.empty())
      fmt::print("[train] stopped by {}; continue with --resume_from_checkpoint {}\n", stop_signal_name(r.stop_signal),
                 r.last_checkpoint.string());
    return 128 + r.stop_signal;
  }
  if (!r.best_model_checkpoint.empty())
    fmt::print("[train] best checkpoint: {} ({} = {})\n", r.best_model_checkpoint.string(),
               a.train.best_metric_name(), r.best_metric);
  fmt::print("[train] plot: {}{}\n", (run_dir / "loss.svg").string(),
             std::filesystem::is_directory(run_dir / "images") ? ", " + (run_dir / "images").string() + "/*.png" : "");
  if (a.train.reports_tensorboard()) {
    const auto events = a.train.logging_dir.empty() ? run_dir / "runs" : a.train.logging_dir;
    fmt::print("[train] tensorboard events: {} (tensorboard --logdir {})\n", events.string(),
               (a.train.logging_dir.empty() ? run_dir : a.train.logging_dir).string());
  }

  if (!questions.empty()) answer_questions(model, *s.tok, questions, a.data.system, "[after training]");
  fmt::print("\n[done] {:.1f} s in all\n", std::chrono::duration<double>(clock::now() - t_start).count());
  return 0;
}

// `comm`: data-parallel training (dist/); nullptr = one process. Only rank 0 writes the run folder
// and answers the questions; the other ranks train and keep quiet. `choose(a, longest, run)` picks
// the model type once the data is read (the CUDA programs: the activation policy that fits,
// cuda_activations.cuh) and calls run.template operator()<Model>().
template <class Choose>
int run_sft_choosing(SftArgs a, dist::Communicator* comm, Choose&& choose) {
  const auto t_start = std::chrono::steady_clock::now();
  // The run folder is chosen and locked before the model loads: a refused folder costs nothing.
  RunFolder folder = open_run_folder(a, !comm || comm->rank() == 0);
  install_stop_signal_handlers();
  SftInputs inputs = read_sft_inputs(a);
  const std::int64_t longest = inputs.longest;
  return choose(a, longest, [&]<class Model>() {
    return run_prepared_sft<Model>(a, comm, folder, prepare_sft<Model>(a, std::move(inputs)), t_start);
  });
}
template <class Model>
int run_sft(SftArgs a, dist::Communicator* comm = nullptr) {
  return run_sft_choosing(std::move(a), comm, [](SftArgs&, std::int64_t, auto&& run) {
    return run.template operator()<Model>();
  });
}

}  // namespace peft::examples
