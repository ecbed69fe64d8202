// The chat program's body (examples/chat.cpp, built for the CPU and by nvcc as chat_cuda),
// templated on the model type so both binaries share every flag, message and behaviour:
//   parse_chat_args -> ChatArgs; choose_chat_dtype; ResultFile; run_chat<Model>(args, source, results, where, options...)
// On a terminal it is a conversation (multi-turn history; `clear`, `reset-system`, `exit`);
// otherwise it is a filter for scripts: JSONL on stdout, everything else on stderr.
#pragma once
#include <unistd.h>

#include <cstdio>
#include <fmt/format.h>
#include <iostream>
#include <memory>
#include <optional>

#include "../activity.hpp"
#include "line_editor.hpp"
#include "model_source.hpp"
#include "result_file.hpp"
#include "stop_request.hpp"
#include "../command_line.hpp"
#include "peft/data/chat_template.hpp"
#include "peft/data/dataset_file.hpp"
#include "peft/data/dataset_loader.hpp"
#include "peft/generate/generator.hpp"
#include "peft/io/atomic_file.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/models/qwen2.hpp"
#include "peft/text/tokenizer.hpp"
#include "../sft/embedded_default.hpp"
#include "../sft/run_record.hpp"  // the run's recorded dataset options
#include "../sft/sft_args.hpp"  // parse_bool, as identity_finetune reads booleans
#include "../swift_flags.hpp"

namespace peft::examples {

using data::ChatMessage;
using data::Role;


struct ChatArgs {
  std::string model, adapters, device = "auto", torch_dtype, result_path;
  std::vector<std::string> val_dataset;  // dataset specs, as identity_finetune's --dataset (file#N, folders, ids)
  bool merge_lora = false;
  std::optional<std::string> system;
  bool stream = false, verbose = false;
  std::optional<std::int64_t> max_new_tokens;
  std::optional<std::int64_t> max_length;  // prompt + answer tokens; unset: the model's context
  SamplingOverrides sampling;
  std::uint64_t seed = 42;
  std::optional<int> quant_bits;  // 4: the base in NF4 (QLoRA), 0: bf16; unset: as the adapter was trained
  // --load_data_args: the training run's dataset options; without --val_dataset, chat answers the
  // rows the run held out for validation
  std::optional<data::DatasetOptions> held_out;
  std::vector<std::string> ignored;  // `swift infer` flags accepted but not acted on
};

// `swift infer` flags that change nothing here (--model_type / --template are checked to name
// Qwen2 / Qwen2.5: another family would be run as Qwen2).
inline const std::vector<std::string>& chat_accepted_unused_flags() {
  static const std::vector<std::string> flags = {"model_type", "template", "attn_impl", "use_hf"};
  return flags;
}

// Returns nullopt after printing --help. cuda_build: the program has the CUDA backend (chat_cuda).
inline std::optional<ChatArgs> parse_chat_args(int argc, char** argv, bool cuda_build) {
  namespace po = boost::program_options;
  ChatArgs a;
  std::string stream = "false", verbose = "false", system, infer_backend = "pt", merge_lora = "false",
              load_data_args = "false";
  std::int64_t max_batch_size = 1;
  int quant_bits = 0;
  double temperature = 0, top_p = 1, repetition_penalty = 1;
  std::int64_t top_k = 0, max_new_tokens = 0, max_length = 0;
  po::options_description d("chat (flags as ms-swift's `swift infer`)");
  d.add_options()("help,h", "show this help")
      ("model", po::value(&a.model), "model folder; default: the adapter's base, else the embedded tiny model")
      ("adapters", po::value(&a.adapters), "PEFT LoRA adapter folder (a checkpoint of identity_finetune)")
      ("stream", bool_flag(&stream), "print tokens as they come (true|false; default: true on a terminal)")
      ("temperature", po::value(&temperature), "0: greedy; default: generation_config.json, else greedy")
      ("top_k", po::value(&top_k), "keep the k most likely tokens (0: off); default: generation_config.json, else 50")
      ("top_p", po::value(&top_p), "nucleus sampling mass; default: generation_config.json, else 1")
      ("repetition_penalty", po::value(&repetition_penalty), "HF's; default: generation_config.json, else 1")
      ("max_new_tokens", po::value(&max_new_tokens), "default: generation_config.json, else 2048 (within the context)")
      ("max_length", po::value(&max_length), "prompt + answer tokens at most (a longer prompt is refused, the answer is "
       "capped); default: the model's context (max_position_embeddings)")
      ("system", po::value(&system), "system prompt; default: the training run's, else Qwen2.5's")
      ("seed", po::value(&a.seed)->default_value(42), "sampling seed")
      ("device", po::value(&a.device)->default_value("auto"), "cpu | cuda | auto")
      ("torch_dtype", po::value(&a.torch_dtype), "float32 | bfloat16; default: the training run's, else config.json's")
      ("quant_bits", po::value(&quant_bits), "4: load the base in NF4 for the adapter (QLoRA); 0: in bf16; default: "
       "4 when the adapter's args.json records --quant_bits 4, else 0")
      ("val_dataset", po::value(&a.val_dataset)->multitoken(), "answer every row of these datasets (JSONL out): files, "
       "folders or ids as identity_finetune's --dataset, each optionally #N (its first N rows)")
      ("verbose", bool_flag(&verbose), "per-reply token counts and speed on stderr")
      ("infer_backend", po::value(&infer_backend), "pt (the only engine here; ms-swift's default)")
      ("result_path", po::value(&a.result_path), "also append the {query, response} JSONL to this file (made if "
       "new; an existing file keeps its lines, this run's come after them, as ms-swift's)")
      ("merge_lora", bool_flag(&merge_lora), "merge the adapter into the base before decoding (true|false)")
      ("load_data_args", bool_flag(&load_data_args), "answer the training run's val_dataset (from its args.json)")
      ("max_batch_size", po::value(&max_batch_size), "accepted for ms-swift's scripts; queries are answered one at a "
       "time (one sequence's decode already streams every weight once a token; see docs/generation.md)");
  add_accepted_unused(d, chat_accepted_unused_flags());
  po::variables_map vm;
  if (!parse_command_line(argc, argv, d, vm)) return std::nullopt;
  a.ignored = given_flags(vm, chat_accepted_unused_flags());
  require_qwen2_family(vm);
  // ms-swift streams an interactive session; a pipe gets whole JSONL lines either way.
  a.stream = vm.count("stream") ? detail::parse_bool("stream", stream)
                                : ::isatty(STDIN_FILENO) == 1 && ::isatty(STDOUT_FILENO) == 1;
  a.verbose = detail::parse_bool("verbose", verbose);
  a.merge_lora = detail::parse_bool("merge_lora", merge_lora);
  if (infer_backend == "vllm" || infer_backend == "sglang" || infer_backend == "lmdeploy")
    fail("--infer_backend {}: not available here; this program is its own engine, ms-swift's `pt` (pass --infer_backend "
         "pt, or serve an `export --merge_lora true` folder with {})", infer_backend, infer_backend);
  require(infer_backend == "pt", "--infer_backend: '{}' is not supported (valid: pt)", infer_backend);
  require(max_batch_size > 0, "--max_batch_size must be positive (got {})", max_batch_size);
  if (detail::parse_bool("load_data_args", load_data_args)) {
    require(!a.adapters.empty(), "--load_data_args true needs --adapters (a checkpoint of the training run)");
    const auto args_json = detail::find_args_json(a.adapters);
    require(args_json.has_value(), "--load_data_args true: no args.json in {} or the folder above it", a.adapters);
    data::DatasetOptions o = recorded_dataset_options(read_json_file(*args_json), args_json->string());
    // As ms-swift's infer: a --val_dataset given on the command line is what is answered; the run's
    // options still fill the rows' self-cognition placeholders (its model_name, model_author).
    require(!a.val_dataset.empty() || !o.val_specs.empty() || (o.split_dataset_ratio > 0 && !o.specs.empty()),
            "--load_data_args true: {} records no validation data (no val_dataset, split_dataset_ratio 0); pass the "
            "questions with --val_dataset FILE", args_json->string());
    a.held_out = std::move(o);
  }
  require(!a.merge_lora || !a.adapters.empty(), "--merge_lora true needs --adapters: the adapter to merge");
  if (vm.count("quant_bits")) {
    require(quant_bits == 0 || quant_bits == 4, "--quant_bits {}: not supported (valid: 4, the NF4 base of a QLoRA "
            "adapter; 0, the bf16 base)", quant_bits);
    require(quant_bits == 0 || !a.adapters.empty(), "--quant_bits 4 needs --adapters: the NF4 base is loaded for a "
            "QLoRA adapter (a base model alone is chatted with in bf16)");
    a.quant_bits = quant_bits;
  }
  if (vm.count("system")) a.system = system;
  require_utf8_flag("system", system);
  if (vm.count("temperature")) a.sampling.temperature = temperature;
  if (vm.count("top_k")) a.sampling.top_k = top_k;
  if (vm.count("top_p")) a.sampling.top_p = top_p;
  if (vm.count("repetition_penalty")) a.sampling.repetition_penalty = repetition_penalty;
  if (vm.count("max_new_tokens")) {
    require(max_new_tokens > 0, "--max_new_tokens must be positive (got {})", max_new_tokens);
    a.max_new_tokens = max_new_tokens;
  }
  if (vm.count("max_length")) {
    require(max_length > 0, "--max_length must be positive (got {})", max_length);
    a.max_length = max_length;
  }
  if (a.device == "cuda" && !cuda_build)
    fail("--device cuda: chat was not built with CUDA (this build runs on the CPU only); use chat_cuda or --device cpu");
  require(a.device == "cpu" || a.device == "auto" || a.device == "cuda",
          "--device: '{}' is not supported (valid: cpu, cuda, auto)", a.device);
  return a;
}

// One model, tokenizer and generation setup; answers conversations.
template <class Model>
class ChatSession {
 public:
  ChatSession(std::unique_ptr<Model> model, text::Tokenizer tok, GenerationConfig gen, std::string system, bool verbose)
      : model_(std::move(model)), tok_(std::move(tok)), gen_(std::move(gen)), system_(std::move(system)),
        verbose_(verbose), generator_(*model_) {}

  // The reply to `history` (ending with a user message); on_text receives it as it is generated,
  // in pieces that never split a UTF-8 character.
  template <class OnText>
  std::string reply(const std::vector<ChatMessage>& history, OnText&& on_text) {
    const auto prompt = data::encode_prompt(tok_, history, system_);
    GenerationConfig g = gen_;
    // As ms-swift: generation stops where the model's context ends, or --max_length when it is
    // shorter. An explicit --max_new_tokens past it is capped with a warning; a prompt that leaves
    // no room is refused before any work.
    const std::int64_t context = model_->config().max_position_embeddings;
    const bool by_flag = max_length_ && *max_length_ < context;
    const std::int64_t limit = by_flag ? *max_length_ : context;
    const auto room = limit - static_cast<std::int64_t>(prompt.size());
    require(room > 0, "the prompt ({} tokens with the chat template and system prompt) does not fit {}{}", prompt.size(),
            by_flag ? fmt::format("--max_length {} (prompt and answer)", limit)
                    : fmt::format("the model's context of {} tokens (max_position_embeddings)", limit),
            history.size() > 1 ? "; type `clear` to forget the conversation" : "; shorten it");
    if (explicit_max_ && g.max_new_tokens > room)
      fmt::print(stderr, "[generate] warning: --max_new_tokens {} capped at {}: {} {} tokens and the prompt takes {}\n",
                 g.max_new_tokens, room, by_flag ? "--max_length is" : "the context is", limit, prompt.size());
    g.max_new_tokens = std::min(g.max_new_tokens, room);
    text::StreamDecoder stream(tok_);
    std::vector<std::int32_t> ids;
    last_ = generator_.generate(prompt, g, [&](std::int32_t id) {
      stop_if_signalled();  // Ctrl-C ends the reply here; it is not an answer, so it is not kept
      if (std::find(g.stop_ids.begin(), g.stop_ids.end(), id) != g.stop_ids.end()) return;
      ids.push_back(id);
      on_text(stream.push(id));
    });
    on_text(stream.flush());
    return tok_.decode(ids);
  }

  // With --verbose: the last reply's token counts and speed, on stderr.
  void print_stats() const {
    if (!verbose_) return;
    const Generation& r = last_;
    fmt::print(stderr, "[{} prompt tokens ({} cached), {} new, {}; prefill {:.0f} ms, decode {:.1f} tokens/s]\n",
               r.prompt_tokens, r.reused_tokens, r.tokens.size(), r.finish == FinishReason::Stop ? "stop" : "length",
               1e3 * r.prefill_seconds, r.decode_tokens_per_second());
  }

  void set_explicit_max(bool v) { explicit_max_ = v; }
  void set_max_length(std::optional<std::int64_t> v) { max_length_ = v; }
  void set_system(std::string s) { system_ = std::move(s); }
  std::int64_t vocab_size() const { return model_->config().vocab_size; }

 private:
  std::unique_ptr<Model> model_;
  text::Tokenizer tok_;
  GenerationConfig gen_;
  std::string system_;
  bool verbose_, explicit_max_ = false;
  std::optional<std::int64_t> max_length_;
  Generator<Model> generator_;
  Generation last_;
};

inline std::string jsonl(const std::string& query, const std::string& response,
                         const std::optional<std::string>& labels) {
  nlohmann::json j{{"query", query}, {"response", response}};
  if (labels) j["labels"] = *labels;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

// --val_dataset SPEC..., else (--load_data_args true) the rows the training run held out. Rows may
// be questions alone (as `swift infer --val_dataset` takes them); a reply, when present, is
// recorded as the row's labels. The specs are read as training reads --val_dataset (`#N`, folders,
// ids), in order and unshuffled, as ms-swift's infer (val_dataset_shuffle false): `#N` is the
// first N rows. With --load_data_args the run's model_name/model_author fill the rows'
// self-cognition placeholders, as they did in training.
inline std::vector<data::DatasetRow> rows_to_answer(const ChatArgs& a, std::int64_t vocab_size) {
  if (a.val_dataset.empty()) return data::validation_rows(*a.held_out, vocab_size);
  data::DatasetOptions given = a.held_out.value_or(data::DatasetOptions{});
  given.specs.clear();
  given.val_specs = a.val_dataset;
  given.split_dataset_ratio = 0;
  given.dataset_shuffle = false;
  return data::validation_rows(given, vocab_size);
}

template <class Session>
void answer_rows(Session& s, const std::vector<data::DatasetRow>& rows, ResultFile& results) {
  for (const auto& row : rows) {
    stop_if_signalled();
    require(row.is_text(), "{}: chat needs text rows (messages, query/response...), not token ids", row.where.str());
    std::vector<ChatMessage> history = row.messages;
    std::optional<std::string> labels;
    if (!history.empty() && history.back().role == Role::Assistant) {
      labels = history.back().content;
      history.pop_back();
    }
    require(!history.empty() && history.back().role == Role::User, "{}: the row has no user message to answer",
            row.where.str());
    const std::string response = s.reply(history, [](const std::string&) {});
    const std::string line = jsonl(history.back().content, response, labels);
    fmt::print("{}", line);
    results.add(line);
    std::fflush(stdout);
    s.print_stats();
  }
}

// One reply per stdin line. A line that cannot be answered (invalid UTF-8, too long for the
// context) is reported by its line number and skipped, so one bad line does not cost the rest;
// the exit status says whether every line was answered.
template <class Session>
int answer_lines(Session& s, ResultFile& results) {
  std::int64_t number = 0, failed = 0;
  for (std::string line; std::getline(std::cin, line);) {
    ++number;
    stop_if_signalled();
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    try {
      if (const auto bad = peft::detail::first_invalid_utf8(line))
        fail("invalid UTF-8 at byte {} of the line", *bad + 1);
      const std::string response = s.reply({{Role::User, line}}, [](const std::string&) {});
      const std::string out = jsonl(line, response, std::nullopt);
      fmt::print("{}", out);
      results.add(out);
    } catch (const Error& e) {
      ++failed;
      fmt::print(stderr, "chat: error: stdin line {}: {} (skipped)\n", number, e.what());
      continue;
    }
    std::fflush(stdout);
    s.print_stats();
  }
  if (failed == 0) return 0;
  fmt::print(stderr, "chat: error: {} of the input lines were not answered (see above)\n", failed);
  return 1;
}

// ms-swift's infer loop: `<<< ` prompt; exit/quit, clear (history), reset-system, and multi-line /
// single-line (a message then ends with '#' on a line, as ms-swift's).
template <class Session>
void converse(Session& s, bool stream, ResultFile& results) {
  fmt::print("Commands: `exit` or `quit` to leave, `clear` to forget the conversation, `reset-system` to set a new "
             "system prompt, `multi-line` to type messages of several lines (end with #), `single-line` to go back.\n");
  std::vector<ChatMessage> history;
  bool multi_line = false;
  for (;;) {
    const auto read = multi_line ? read_multi_line("<<<[M] ") : read_line("<<< ");
    stop_if_signalled();
    if (!read) {  // Ctrl-D
      fmt::print("\n");
      break;
    }
    const std::string line = *read;
    if (line == "exit" || line == "quit") break;
    if (line == "multi-line" || line == "single-line") {
      multi_line = line == "multi-line";
      fmt::print("[{} mode{}]\n", line, multi_line ? ": end a message with #" : "");
      continue;
    }
    if (line == "clear") {
      history.clear();
      fmt::print("[the conversation is cleared]\n");
      continue;
    }
    if (line == "reset-system") {
      const auto sys = read_line("<<<[system] ");
      if (!sys) break;
      s.set_system(*sys);
      history.clear();
      fmt::print("[new system prompt; the conversation is cleared]\n");
      continue;
    }
    if (line.empty()) continue;
    history.push_back({Role::User, line});
    std::string reply;
    try {
      reply = s.reply(history, [&](const std::string& piece) {
        if (!stream) return;
        fmt::print("{}", piece);
        std::fflush(stdout);
      });
    } catch (const Error& e) {  // e.g. text that is not UTF-8: report it and keep the conversation
      history.pop_back();
      fmt::print(stderr, "chat: {}\n", e.what());
      continue;
    }
    if (!stream) fmt::print("{}", reply);
    fmt::print("\n");
    std::fflush(stdout);
    s.print_stats();
    fmt::print("{}\n", std::string(50, '-'));
    history.push_back({Role::Assistant, reply});
    results.add(jsonl(line, reply, std::nullopt));
  }
}

// Loads the model (opt...: the backend's run-time options, e.g. CudaModelOptions) and answers.
// `where`: the device, for the "[model]" line.
template <class Model, class... Opt>
int run_chat(const ChatArgs& a, const ModelSource& src, ResultFile& results, const std::string& where,
             const Opt&... opt) {
  const bool embedded = src.model.empty();
  LoraConfig lora;
  if (!a.adapters.empty()) {
    lora = read_adapter_config(a.adapters);
    lora.lora_dropout = 0;
  }
  std::unique_ptr<Model> model;
  now_doing(embedded ? std::string("building the embedded default model") : "loading the model " + src.model);
  if (embedded) {
    RandomWeights weights(examples::kEmbeddedWeightSeed);
    model = Model::from_weights(embedded_default_config(), weights, lora, 0, opt...);
  } else {
    model = Model::from_pretrained(src.model, lora, 0, opt...);
  }
  if (!a.adapters.empty()) {
    if constexpr (requires { load_adapter_weights(std::filesystem::path(a.adapters), *model); })
      load_adapter_weights(a.adapters, *model);  // a device model's own overload
    else
      load_adapter_weights(a.adapters, model->trainable_parameters());
  }
  stop_if_signalled();

  const std::filesystem::path tok_path =
      embedded ? default_tokenizer() : std::filesystem::path(src.model) / "tokenizer.json";
  require(std::filesystem::exists(tok_path), "{}: no tokenizer.json; chat needs the model's tokenizer",
          tok_path.string());
  text::Tokenizer tok = text::Tokenizer::from_file(tok_path);

  const GenerationDefaults defaults = embedded ? GenerationDefaults{} : GenerationDefaults::from_model_dir(src.model);
  GenerationConfig gen;
  gen.sampling = resolve_sampling(defaults, a.sampling);
  gen.seed = a.seed;
  gen.max_new_tokens = a.max_new_tokens.value_or(defaults.max_new_tokens.value_or(2048));
  gen.stop_ids = defaults.eos_token_ids;
  for (const char* stop : {"<|im_end|>", "<|endoftext|>"})
    if (const auto id = tok.token_to_id(stop)) gen.stop_ids.push_back(*id);
  const std::string system = a.system ? *a.system : src.system.value_or(std::string(data::kQwen25DefaultSystem));

  const auto& cfg = model->config();
  fmt::print(stderr, "[model] {}{} ({} layers, hidden {}, vocab {}), {} on {}\n",
             embedded ? "the embedded default model (RANDOM weights: it shows the mechanics only)" : src.model,
             a.adapters.empty() ? "" : fmt::format(" + adapter {}", a.adapters), cfg.num_hidden_layers, cfg.hidden_size,
             cfg.vocab_size, Model::Precision::name, where);
  const SamplingConfig& sc = gen.sampling;
  const std::string max_length = a.max_length ? fmt::format(", max_length {}", *a.max_length) : "";
  if (sc.greedy())
    fmt::print(stderr, "[generate] greedy, repetition_penalty {}, max_new_tokens {}{}, stream {}\n",
               sc.repetition_penalty, gen.max_new_tokens, max_length, a.stream);
  else
    fmt::print(stderr, "[generate] temperature {} top_k {} top_p {} repetition_penalty {} seed {}, max_new_tokens {}{}, "
               "stream {}\n", sc.temperature, sc.top_k, sc.top_p, sc.repetition_penalty, gen.seed, gen.max_new_tokens,
               max_length, a.stream);

  now_doing("generating");
  ChatSession<Model> session(std::move(model), std::move(tok), gen, system, a.verbose);
  session.set_explicit_max(a.max_new_tokens.has_value());
  session.set_max_length(a.max_length);
  int status = 0;
  if (!a.val_dataset.empty() || a.held_out) answer_rows(session, rows_to_answer(a, session.vocab_size()), results);
  else if (::isatty(STDIN_FILENO)) converse(session, a.stream, results);
  else status = answer_lines(session, results);
  stop_if_signalled();  // a signal ends a read of stdin as end of input would: it was a stop, not the end
  results.commit();
  return status;
}

// float32 or bfloat16: the flag, else what the adapter was trained with, else config.json's.
inline std::string choose_chat_dtype(const ChatArgs& a, const ModelSource& src) {
  std::string dtype = a.torch_dtype;
  if (dtype.empty() && src.torch_dtype) dtype = *src.torch_dtype;
  if (dtype.empty() && !src.model.empty()) {
    dtype = ModelConfig::from_file(std::filesystem::path(src.model) / "config.json").torch_dtype;
    if (dtype == "float16") {
      fmt::print(stderr, "[model] config.json says float16, which the CPU backend does not store; using float32\n");
      dtype = "float32";
    }
  }
  if (dtype.empty()) dtype = "float32";
  if (dtype == "fp32") dtype = "float32";
  if (dtype == "bf16") dtype = "bfloat16";
  require(dtype == "float32" || dtype == "bfloat16", "--torch_dtype: '{}' is not supported on the CPU (valid: float32, "
          "bfloat16)", dtype);
  return dtype;
}

}  // namespace peft::examples
