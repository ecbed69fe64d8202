// export: a trained LoRA adapter made deployable, with ms-swift's `swift export` flags.
//   export --adapters ckpt --merge_lora true                    # merged HF folder (as merge_lora)
//   export --adapters ckpt --to_gguf true --gguf_type q8_0      # <ckpt>-gguf/model.gguf for llama.cpp
//   export --adapters ckpt --to_ollama true                     # ... plus an Ollama Modelfile
//   export --adapters ckpt --to_gguf true --check true          # and prove the three forms agree
// The base comes from --model, else from the training run (infer/model_source.hpp); an adapter
// trained on the embedded default model is merged into that model written out as a folder. Nothing
// that exists is replaced without --overwrite true (or ms-swift's --exist_ok true); every file
// and folder appears atomically. The other `swift export` flags a recipe passes are checked,
// accepted or refused with what to do instead (infer/export_flags.hpp).
// Everything that can be refused is refused before anything is written (the output, the Modelfile's
// quoting, the base's tensors), and a run that fails later removes what it created: a merged
// folder appears with its GGUF and Modelfile inside or not at all, and a GGUF-only run removes
// the output folder it made, or the files it added to an existing one (never the files it found).
// Ctrl-C or SIGTERM stops it between phases and --check's answers (infer/stop_request.hpp): the
// temporary folder (the embedded base, a merge made only for the GGUF or the check) is removed and
// it exits 130 / 143.
#include <chrono>
#include <fmt/format.h>

#include "infer/embedded_model_folder.hpp"
#include "infer/export_check.hpp"
#include "infer/export_flags.hpp"
#include "infer/model_source.hpp"
#include "infer/ollama_modelfile.hpp"
#include "infer/stop_request.hpp"
#include "command_line.hpp"
#include "infer/temp_dir.hpp"
#include "peft/io/gguf_qwen2.hpp"
#include "peft/io/gguf_reader.hpp"
#include "peft/io/merge_lora.hpp"

using namespace peft;
namespace fs = std::filesystem;

namespace {

void refuse_existing(const fs::path& p, bool overwrite, const char* what) {
  require(overwrite || !fs::exists(fs::symlink_status(p)),
          "{} exists (the {} would replace it); pass --overwrite true to replace it, or another --output_dir",
          p.string(), what);
}

// Writes `model_dir` as the GGUF `path` (checked by reading it back) and, with a Modelfile text,
// the Modelfile beside it. `shown`: the folder to name in messages (the final one, not a staging one);
// `base`: the model folder the tokenizer files come from, named in the warnings.
void write_gguf_outputs(const fs::path& model_dir, const fs::path& base, const fs::path& dir, const fs::path& shown,
                        gguf::TensorType type, const std::string& type_name, const std::string& name,
                        const std::string* modelfile_text) {
  const fs::path gguf_path = dir / "model.gguf";
  const auto g = gguf::write_qwen2_gguf(model_dir, gguf_path, type, name);
  if (g.placeholder_vocab)
    fmt::print(stderr, "[export] warning: {} has no tokenizer.json: the GGUF holds a placeholder vocabulary of the "
               "model's size (token ids are right, text is not)\n", base.string());
  // llama.cpp and Ollama read the stop token and the chat template from the GGUF alone.
  if (!g.eos)
    fmt::print(stderr, "[export] warning: the GGUF has no eos token (no tokenizer_config.json eos_token nor "
               "generation_config.json eos_token_id in {}): llama.cpp and Ollama will not know where a reply ends\n",
               base.string());
  if (!g.stops_left_out.empty())
    fmt::print(stderr, "[export] warning: generation_config.json's eos_token_id lists more stop ids than the GGUF has "
               "keys for (eos, eot): {} not written (llama.cpp still stops at a token whose text it knows as an end, "
               "such as <|im_end|> or <|endoftext|>)\n", fmt::join(g.stops_left_out, ", "));
  if (!g.chat_template)
    fmt::print(stderr, "[export] warning: the GGUF has no tokenizer.chat_template ({} has no chat_template.jinja and no "
               "chat_template in tokenizer_config.json): "
               "llama.cpp will not apply the chat format the model was trained with, and --check cannot run it there\n",
               base.string());
  if (!g.f16_fallbacks.empty())
    fmt::print("[export] {} matrices have rows that are not whole q8_0 blocks and are f16: {}\n",
               g.f16_fallbacks.size(), fmt::join(g.f16_fallbacks, ", "));
  const gguf::GgufFile back = gguf::GgufFile::open(gguf_path);  // what we wrote must read back
  require(back.tensors().size() == g.tensors && back.string("general.architecture") == "qwen2",
          "{}: the file read back does not hold what was written", (shown / "model.gguf").string());
  fmt::print("[export] wrote {} ({}, {} tensors, {:.1f} MB{})\n", (shown / "model.gguf").string(), type_name, g.tensors,
             static_cast<double>(fs::file_size(gguf_path)) / 1e6,
             g.eos ? fmt::format(", eos {}{}", *g.eos, g.eot ? fmt::format(", eot {}", *g.eot) : "") : "");
  if (modelfile_text) {
    write_text_atomic(dir / "Modelfile", *modelfile_text);
    fmt::print("[export] wrote {} (then: cd {} && ollama create NAME -f Modelfile)\n", (shown / "Modelfile").string(),
               shown.string());
  }
}

// The paths a GGUF-only run creates, removed again unless the run gets to keep them.
struct CreatedPaths {
  std::vector<fs::path> paths;
  bool keep = false;
  void note_if_new(const fs::path& p) {
    if (fs::path top = peft::detail::outermost_missing(p); !top.empty()) paths.push_back(std::move(top));
  }
  ~CreatedPaths() {
    std::error_code ignored;
    if (!keep)
      for (auto it = paths.rbegin(); it != paths.rend(); ++it) fs::remove_all(*it, ignored);
  }
};

}  // namespace

int main(int argc, char** argv) {
  namespace po = boost::program_options;
  try {
    std::string model, adapters, output_dir, gguf_type = "f16";
    std::string merge = "false", to_gguf = "false", to_ollama = "false", check = "false";
    examples::SwiftExportFlags swift;
    std::int64_t check_tokens = 32;
    po::options_description d("export (flags as ms-swift's `swift export`)");
    d.add_options()("help,h", "show this help")
        ("model", po::value(&model), "base model folder; default: the one the adapter's training run used")
        ("adapters", po::value(&adapters), "PEFT LoRA adapter folder to merge (without it, --model itself is exported)")
        ("merge_lora", examples::bool_flag(&merge), "write the merged model as an HF folder (true|false)")
        ("to_gguf", examples::bool_flag(&to_gguf), "write <output_dir>/model.gguf for llama.cpp (true|false)")
        ("gguf_type", po::value(&gguf_type), "f32 | bf16 | f16 | q8_0 (default f16); norms and biases stay f32")
        ("to_ollama", examples::bool_flag(&to_ollama), "also write <output_dir>/Modelfile for `ollama create` (implies --to_gguf)")
        ("output_dir", po::value(&output_dir), "default: <adapters>-merged with --merge_lora, else <adapters or model>-gguf")
        ("check", examples::bool_flag(&check), "answer the identity questions with every form and report differences")
        ("check_max_new_tokens", po::value(&check_tokens), "tokens per answer in --check (default 32)");
    examples::add_swift_export_flags(d, swift, "replace an existing output (true|false; default false): never files "
                                     "export did not write");
    po::variables_map vm;
    if (!examples::parse_command_line(argc, argv, d, vm)) return 0;
    examples::ExportSettings settings = examples::check_swift_export_flags(vm, swift);
    const bool do_merge = examples::detail::parse_bool("merge_lora", merge);
    const bool do_ollama = examples::detail::parse_bool("to_ollama", to_ollama);
    const bool do_gguf = examples::detail::parse_bool("to_gguf", to_gguf) || do_ollama;
    const bool overwrite = settings.overwrite;
    const bool do_check = examples::detail::parse_bool("check", check);
    gguf::TensorType type;
    require(gguf::parse_tensor_type(gguf_type, type), "--gguf_type: '{}' is not supported (valid: f32, bf16, f16, q8_0)",
            gguf_type);
    require(do_merge || do_gguf, "nothing to do: pass --merge_lora true and/or --to_gguf true (or --to_ollama true)");
    require(!adapters.empty() || !model.empty(), "--adapters (or --model, to convert a model as it is) is required");
    require(!do_merge || !adapters.empty(), "--merge_lora true needs --adapters: the LoRA adapter folder to merge");
    require(check_tokens > 0, "--check_max_new_tokens must be positive (got {})", check_tokens);

    const auto source = examples::resolve_model_source(model, adapters);
    const std::optional<DType> store_as = examples::export_store_dtype(swift.torch_dtype, source.model, do_merge);
    if (!do_merge && settings.max_shard_size) settings.ignored.push_back("max_shard_size");  // no folder to cut
    examples::report_accepted_unused(stdout, settings.ignored);
    const std::string from = adapters.empty() ? model : adapters;
    if (output_dir.empty())
      output_dir = fs::path(from).lexically_normal().string() + (do_merge ? "-merged" : "-gguf");
    while (output_dir.size() > 1 && output_dir.back() == '/') output_dir.pop_back();
    const fs::path out = output_dir, gguf_path = out / "model.gguf", modelfile = out / "Modelfile";
    if (do_merge) {
      check_merge_output(source.model, adapters, out, overwrite);  // the merged folder holds every output
    } else {
      if (do_gguf) refuse_existing(gguf_path, overwrite, "GGUF file");
      if (do_ollama) refuse_existing(modelfile, overwrite, "Modelfile");
    }
    std::string modelfile_text;  // made now: a system prompt a Modelfile cannot quote is refused before writing
    if (do_ollama)
      modelfile_text = examples::ollama_modelfile("./model.gguf", source.system.value_or(std::string(data::kQwen25DefaultSystem)));
    const std::string* modelfile_arg = do_ollama ? &modelfile_text : nullptr;
    const std::string gguf_name = fs::path(from).lexically_normal().filename().string();

    const auto t0 = std::chrono::steady_clock::now();
    install_stop_signal_handlers();
    examples::TempDir temp;
    fs::path base = source.model;
    if (base.empty()) {
      base = temp.path / "embedded-base";
      examples::write_embedded_model_folder(base);
      fmt::print("[export] base: the embedded default model (written out from its seed)\n");
    } else {
      fmt::print("[export] base {} (from {})\n", source.model, source.found_in);
    }
    fs::path merged = base;
    if (do_merge) {  // the GGUF and Modelfile go into the merged folder before it appears
      merged = out;
      const auto also_write = [&](const fs::path& staging) {
        if (do_gguf) write_gguf_outputs(staging, base, staging, out, type, gguf_type, gguf_name, modelfile_arg);
      };
      const MergeSummary s = merge_lora(base, adapters, out, {.overwrite = overwrite, .also_write = also_write,
                                                              .store_as = store_as,
                                                              .max_shard_size = settings.max_shard_size});
      fmt::print("[export] merged adapter {}: {} projections, {} modules_to_save tensors -> {}{}{}\n", adapters,
                 s.merged_modules, s.saved_tensors, out.string(),
                 store_as ? fmt::format(" (weights as {})", dtype_name(*store_as)) : "",
                 settings.max_shard_size ? fmt::format(" in {}", fmt::join(s.shards, ", ")) : "");
      examples::stop_if_signalled();
    } else {
      if (!adapters.empty()) {
        merged = temp.path / "merged";
        const MergeSummary s = merge_lora(base, adapters, merged);
        fmt::print("[export] merged adapter {}: {} projections, {} modules_to_save tensors\n", adapters,
                   s.merged_modules, s.saved_tensors);
      }
      examples::stop_if_signalled();
      CreatedPaths created;
      for (const auto& p : {out, gguf_path, modelfile}) created.note_if_new(p);
      fs::create_directories(out);
      write_gguf_outputs(merged, base, out, out, type, gguf_type, gguf_name, modelfile_arg);
      created.keep = true;
    }
    fmt::print("[export] done in {:.1f} s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    examples::stop_if_signalled();
    if (do_check) {
      examples::ExportForms forms{base, adapters, merged, do_gguf ? gguf_path : fs::path(), source};
      return examples::check_export_forms(forms, check_tokens, type) ? 0 : 2;
    }
    return 0;
  } catch (const examples::StopRequested& stop) {  // unwinding removed the temporary folder
    fmt::print(stderr, "export: stopped by {}; what was written before it is complete, the temporary folder is "
               "removed\n", stop_signal_name(stop.signal));
    return 128 + stop.signal;
  } catch (const std::exception& e) {
    fmt::print(stderr, "export: error: {}\n", e.what());
    return 1;
  }
}
