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

#include "embedded_default.hpp"
#include "peft/data/dataset_file.hpp"
#include "peft/data/dataset_loader.hpp"
#include "peft/generate/greedy.hpp"
#include "peft/io/atomic_file.hpp"
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

template <class Model>
int run_sft(SftArgs a) {
  using clock = std::chrono::steady_clock;
  const auto t_start = clock::now();
  const bool embedded = a.model.empty();
  if (!a.ignored.empty())
    fmt::print("[args] accepted but not used by this program: --{}\n", fmt::join(a.ignored, ", --"));

  // Model.
  LoraConfig lora = a.lora;
  if (!a.adapters.empty()) {
    const double dropout = lora.lora_dropout;
    lora = read_adapter_config(a.adapters);
    lora.lora_dropout = dropout;
  }
  std::unique_ptr<Model> model;
  std::string base_name = a.model;
  if (embedded) {
    apply_embedded_defaults(a);
    fmt::print("[model] no --model given: the embedded default, a tiny Qwen2.5 architecture (hidden 64, 2 layers)\n"
               "        with the real Qwen2.5 tokenizer and RANDOM weights (seed {}). It shows the mechanics only;\n"
               "        for the real thing pass --model /path/to/Qwen2.5-7B-Instruct.\n", kEmbeddedWeightSeed);
    RandomWeights weights(kEmbeddedWeightSeed);
    model = Model::from_weights(embedded_default_config(), weights, lora, a.train.seed);
    base_name = "peft-embedded-default";
  } else {
    model = Model::from_pretrained(a.model, lora, a.train.seed);
  }
  if (!a.adapters.empty()) load_adapter_weights(a.adapters, model->trainable_parameters());
  const auto& cfg = model->config();
  const ParameterList params = model->trainable_parameters();
  std::int64_t trainable = 0;
  for (const auto& p : params) trainable += p.value->size();
  fmt::print("[model] {} layers, hidden {}, vocab {}; train_type {}, {} on cpu; trainable parameters: {}\n",
             cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size, a.train_type, Model::Precision::name, trainable);

  // Tokenizer: the model folder's, or the embedded Qwen2.5 one.
  const auto tok_path = embedded ? default_tokenizer() : std::filesystem::path(a.model) / "tokenizer.json";
  std::optional<text::Tokenizer> tok;
  if (std::filesystem::exists(tok_path)) tok = text::Tokenizer::from_file(tok_path);
  else if (embedded) fail("{} is missing: run tools/fetch_tokenizer.sh (part of the set-up) first", tok_path.string());

  // Data.
  if (a.data.specs.empty()) {
    require(embedded, "--dataset is required with --model");
    a.data.specs = {default_identity_dataset().string()};
    if (a.data.model_name.empty()) a.data.model_name = {"小派", "Xiao Pai"};
    if (a.data.model_author.empty()) a.data.model_author = {"peft 社区", "the peft community"};
  }
  const data::LoadedData d =
      tok ? data::load_datasets(a.data, &*tok, cfg.vocab_size) : data::load_datasets(a.data, nullptr, cfg.vocab_size);
  fmt::print("[data] {}\n", d.stats.summary());

  // Run folder and args.json.
  const std::filesystem::path run_dir = a.add_version ? versioned_run_dir(a.train.output_dir) : a.train.output_dir;
  std::filesystem::create_directories(run_dir);
  write_text_atomic(run_dir / "args.json", a.as_json.dump(2) + "\n");
  fmt::print("[run] writing to {}\n", run_dir.string());
  fmt::print("[hparams] lr {} epochs {} batch {} grad_accum {} lora r={} alpha={} dropout={} targets {} scheduler {} "
             "warmup_ratio {} weight_decay {} max_grad_norm {}\n",
             a.train.learning_rate, a.train.num_train_epochs, a.train.per_device_train_batch_size,
             a.train.gradient_accumulation_steps, lora.r, lora.lora_alpha, lora.lora_dropout,
             fmt::join(lora.target_modules, ","), a.train.lr_scheduler_type, a.train.warmup_ratio,
             a.train.weight_decay, a.train.max_grad_norm);

  std::vector<std::string> questions;
  if (tok && std::filesystem::exists(default_identity_questions())) questions = identity_questions(cfg.vocab_size, 4);
  if (!questions.empty()) answer_questions(*model, *tok, questions, a.data.system, "[before training]");

  Trainer<Model> trainer(*model, a.train,
                         AdamW({a.train.adam_beta1, a.train.adam_beta2, a.train.adam_epsilon, a.train.weight_decay}),
                         NamedSchedule(a.train.lr_scheduler_type));
  trainer.set_run_dir(run_dir);
  trainer.set_base_model_name(base_name);
  fmt::print("\n[train] {} samples, {} optimizer steps\n", d.train.size(), trainer.total_steps(d.train.size()));
  const TrainResult r = trainer.train(d.train, d.val.empty() ? nullptr : &d.val);
  fmt::print("[train] done: {} steps in {:.1f} s, first loss {:.4f}, last loss {:.4f}\n", r.global_step, r.seconds,
             r.step_losses.front(), r.step_losses.back());
  fmt::print("[train] last checkpoint: {}\n", r.last_checkpoint.string());

  if (!questions.empty()) answer_questions(*model, *tok, questions, a.data.system, "[after training]");
  fmt::print("\n[done] {:.1f} s in all\n", std::chrono::duration<double>(clock::now() - t_start).count());
  return 0;
}

}  // namespace peft::examples
