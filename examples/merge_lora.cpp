// merge_lora: a LoRA adapter folded into its base model, written as a model folder that
// transformers, vLLM and our own programs load like the original (ms-swift's
// `swift export --adapters DIR --merge_lora true`).
//   merge_lora --adapters output/v0-.../checkpoint-440 --output_dir merged   # base from args.json
//   merge_lora --model Qwen2.5-7B-Instruct --adapters ckpt --output_dir Qwen2.5-7B-merged
// A `swift export --merge_lora true` command line runs as written: --merge_lora true (false is
// refused: this program only merges) and the other export flags export.cpp shares with it
// (infer/export_flags.hpp).
#include <chrono>
#include <fmt/format.h>

#include "infer/export_flags.hpp"
#include "infer/model_source.hpp"
#include "command_line.hpp"
#include "peft/io/merge_lora.hpp"
#include "activity.hpp"

using namespace peft;

int main(int argc, char** argv) {
  namespace po = boost::program_options;
  try {
    std::string model, adapters, output_dir, merge = "true";
    examples::SwiftExportFlags swift;
    po::options_description d("merge_lora (flags as ms-swift's `swift export --merge_lora true`)");
    d.add_options()("help,h", "show this help")
        ("model", po::value(&model), "base model folder; default: the one the adapter's training run used")
        ("adapters", po::value(&adapters), "PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors)")
        ("output_dir", po::value(&output_dir), "where the merged model goes; default: <adapters>-merged")
        ("merge_lora", examples::bool_flag(&merge), "true (as every `swift export` merge recipe passes it)");
    examples::add_swift_export_flags(d, swift, "replace an existing merged model in --output_dir (true|false; never a "
                                     "folder that holds other files, or the inputs)");
    po::variables_map vm;
    if (!examples::parse_command_line(argc, argv, d, vm)) return 0;
    const examples::ExportSettings settings = examples::check_swift_export_flags(vm, swift);
    require(examples::detail::parse_bool("merge_lora", merge), "--merge_lora false: merge_lora only merges; for the "
            "other outputs of `swift export` (a GGUF, an Ollama Modelfile) use export --to_gguf true / --to_ollama true");
    require(!adapters.empty(), "--adapters is required: the LoRA adapter folder to merge");
    const auto source = examples::resolve_model_source(model, adapters);
    require(!source.model.empty(),
            "the adapter {} was trained on the embedded default model, which has no folder to merge into; pass "
            "--model with a model folder", adapters);
    const std::optional<DType> store_as = examples::export_store_dtype(swift.torch_dtype, source.model, true);
    examples::report_accepted_unused(stdout, settings.ignored);
    if (output_dir.empty()) output_dir = std::filesystem::path(adapters).lexically_normal().string() + "-merged";
    while (output_dir.size() > 1 && output_dir.back() == '/') output_dir.pop_back();

    fmt::print("[merge] base {} (from {})\n[merge] adapter {}\n", source.model, source.found_in, adapters);
    if (source.qlora)  // as ms-swift's export: the adapter goes into the unquantised weights
      fmt::print("[merge] the adapter was trained with QLoRA (an NF4 base, per args.json); it is merged into the "
                 "original bf16 base weights, and the merged model is not quantised\n");
    const auto t0 = std::chrono::steady_clock::now();
    examples::now_doing(fmt::format("merging {} into {}", adapters, source.model));
    const MergeSummary s = merge_lora(source.model, adapters, output_dir,
                                      {.overwrite = settings.overwrite, .store_as = store_as,
                                       .max_shard_size = settings.max_shard_size});
    fmt::print("[merge] merged {} projections; wrote {} tensors{} in {} ({}) and copied {} in {:.1f} s\n",
               s.merged_modules, s.tensors, store_as ? fmt::format(" as {}", dtype_name(*store_as)) : "",
               fmt::join(s.shards, ", "), output_dir, fmt::join(s.copied_files, ", "),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return 0;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "merge_lora: error: {}\n", examples::out_of_memory_message());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "merge_lora: error: {}\n", e.what());
    return 1;
  }
}
