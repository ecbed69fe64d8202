// export: a trained LoRA adapter made deployable, with ms-swift's `swift export` flags.
//   export --adapters ckpt --merge_lora true                    # merged HF folder (as merge_lora)
//   export --adapters ckpt --to_gguf true --gguf_type q8_0      # <ckpt>-gguf/model.gguf for llama.cpp
//   export --adapters ckpt --to_ollama true                     # ... plus an Ollama Modelfile
//   export --adapters ckpt --to_gguf true --check true          # and prove the three forms agree
// The base comes from --model, else from the training run (infer/model_source.hpp); an adapter
// trained on the embedded default model is merged into that model written out as a folder. Nothing
// that exists is replaced without --overwrite true; every file and folder appears atomically.
// Ctrl-C or SIGTERM stops it between phases and --check's answers (infer/stop_request.hpp): the
// temporary folder (the embedded base, a merge made only for the GGUF or the check) is removed and
// it exits 130 / 143.
#include <chrono>
#include <fmt/format.h>

#include "infer/embedded_model_folder.hpp"
#include "infer/export_check.hpp"
#include "infer/model_source.hpp"
#include "infer/ollama_modelfile.hpp"
#include "infer/stop_request.hpp"
#include "command_line.hpp"
#include "infer/temp_dir.hpp"
#include "peft/io/gguf_qwen2.hpp"
#include "peft/io/gguf_reader.hpp"
#include "peft/io/merge_lora.hpp"
#include "sft/sft_args.hpp"  // parse_bool

using namespace peft;
namespace fs = std::filesystem;

namespace {

void refuse_existing(const fs::path& p, bool overwrite, const char* what) {
  require(overwrite || !fs::exists(fs::symlink_status(p)),
          "{} exists (the {} would replace it); pass --overwrite true to replace it, or another --output_dir",
          p.string(), what);
}

}  // namespace

int main(int argc, char** argv) {
  namespace po = boost::program_options;
  try {
    std::string model, adapters, output_dir, gguf_type = "f16";
    std::string merge = "false", to_gguf = "false", to_ollama = "false", overwrite_flag = "false", check = "false";
    std::int64_t check_tokens = 32;
    po::options_description d("export (flags as ms-swift's `swift export`)");
    d.add_options()("help,h", "show this help")
        ("model", po::value(&model), "base model folder; default: the one the adapter's training run used")
        ("adapters", po::value(&adapters), "PEFT LoRA adapter folder to merge (without it, --model itself is exported)")
        ("merge_lora", po::value(&merge), "write the merged model as an HF folder (true|false)")
        ("to_gguf", po::value(&to_gguf), "write <output_dir>/model.gguf for llama.cpp (true|false)")
        ("gguf_type", po::value(&gguf_type), "f32 | bf16 | f16 | q8_0 (default f16); norms and biases stay f32")
        ("to_ollama", po::value(&to_ollama), "also write <output_dir>/Modelfile for `ollama create` (implies --to_gguf)")
        ("output_dir", po::value(&output_dir), "default: <adapters>-merged with --merge_lora, else <adapters or model>-gguf")
        ("overwrite", po::value(&overwrite_flag), "replace an existing output (true|false; default false)")
        ("check", po::value(&check), "answer the identity questions with every form and report differences")
        ("check_max_new_tokens", po::value(&check_tokens), "tokens per answer in --check (default 32)");
    po::variables_map vm;
    if (!examples::parse_command_line(argc, argv, d, vm)) return 0;
    const bool do_merge = examples::detail::parse_bool("merge_lora", merge);
    const bool do_ollama = examples::detail::parse_bool("to_ollama", to_ollama);
    const bool do_gguf = examples::detail::parse_bool("to_gguf", to_gguf) || do_ollama;
    const bool overwrite = examples::detail::parse_bool("overwrite", overwrite_flag);
    const bool do_check = examples::detail::parse_bool("check", check);
    gguf::TensorType type;
    require(gguf::parse_tensor_type(gguf_type, type), "--gguf_type: '{}' is not supported (valid: f32, bf16, f16, q8_0)",
            gguf_type);
    require(do_merge || do_gguf, "nothing to do: pass --merge_lora true and/or --to_gguf true (or --to_ollama true)");
    require(!adapters.empty() || !model.empty(), "--adapters (or --model, to convert a model as it is) is required");
    require(!do_merge || !adapters.empty(), "--merge_lora true needs --adapters: the LoRA adapter folder to merge");
    require(check_tokens > 0, "--check_max_new_tokens must be positive (got {})", check_tokens);

    const auto source = examples::resolve_model_source(model, adapters);
    const std::string from = adapters.empty() ? model : adapters;
    if (output_dir.empty())
      output_dir = fs::path(from).lexically_normal().string() + (do_merge ? "-merged" : "-gguf");
    while (output_dir.size() > 1 && output_dir.back() == '/') output_dir.pop_back();
    const fs::path out = output_dir, gguf_path = out / "model.gguf", modelfile = out / "Modelfile";
    if (do_merge) refuse_existing(out, overwrite, "merged model folder");
    if (do_gguf) refuse_existing(gguf_path, overwrite, "GGUF file");
    if (do_ollama) refuse_existing(modelfile, overwrite, "Modelfile");

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
    if (!adapters.empty()) {
      merged = do_merge ? out : temp.path / "merged";
      const MergeSummary s = merge_lora(base, adapters, merged);
      fmt::print("[export] merged adapter {}: {} projections, {} modules_to_save tensors{}\n", adapters,
                 s.merged_modules, s.saved_tensors, do_merge ? fmt::format(" -> {}", out.string()) : "");
    }
    examples::stop_if_signalled();
    if (do_gguf) {
      fs::create_directories(out);
      const auto g = gguf::write_qwen2_gguf(merged, gguf_path, type, fs::path(from).lexically_normal().filename().string());
      if (g.placeholder_vocab)
        fmt::print(stderr, "[export] warning: {} has no tokenizer.json: the GGUF holds a placeholder vocabulary of the "
                   "model's size (token ids are right, text is not)\n", merged.string());
      if (!g.f16_fallbacks.empty())
        fmt::print("[export] {} matrices have rows that are not whole q8_0 blocks and are f16: {}\n",
                   g.f16_fallbacks.size(), fmt::join(g.f16_fallbacks, ", "));
      const gguf::GgufFile back = gguf::GgufFile::open(gguf_path);  // what we wrote must read back
      require(back.tensors().size() == g.tensors && back.string("general.architecture") == "qwen2",
              "{}: the file read back does not hold what was written", gguf_path.string());
      fmt::print("[export] wrote {} ({}, {} tensors, {:.1f} MB{})\n", gguf_path.string(), gguf_type, g.tensors,
                 static_cast<double>(fs::file_size(gguf_path)) / 1e6,
                 g.eos ? fmt::format(", eos {}{}", *g.eos, g.eot ? fmt::format(", eot {}", *g.eot) : "") : "");
    }
    if (do_ollama) {
      const std::string system = source.system.value_or(std::string(data::kQwen25DefaultSystem));
      write_text_atomic(modelfile, examples::ollama_modelfile("./model.gguf", system));
      fmt::print("[export] wrote {} (then: cd {} && ollama create NAME -f Modelfile)\n", modelfile.string(), out.string());
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
