// chat: talk to a model, with or without a LoRA adapter, as ms-swift's `swift infer` does.
//   chat                                              # the embedded default model
//   chat --adapters output/v0-.../checkpoint-440 --stream true --temperature 0 --max_new_tokens 2048
//   echo "你是谁?" | chat --model Qwen2.5-7B-Instruct   # one JSON line {query, response} per line in
//   chat --model M --val_dataset questions.jsonl       # one JSON line per row, with its labels
//   chat --adapters ckpt --merge_lora true --result_path answers.jsonl   # merged before decoding
// On a terminal it is a conversation (multi-turn history; `clear`, `reset-system`, `exit`);
// otherwise it is a filter for scripts: JSONL on stdout, everything else on stderr. The body is
// infer/run_chat.hpp, shared with chat_cuda (the CUDA backend).
#include "infer/embedded_model_folder.hpp"
#include "infer/run_chat.hpp"
#include "activity.hpp"
#include "infer/temp_dir.hpp"
#include "peft/io/merge_lora.hpp"

using namespace peft;

int main(int argc, char** argv) {
  try {
    auto args = examples::parse_chat_args(argc, argv, false);
    if (!args) return 0;
    examples::ModelSource src = examples::resolve_model_source(args->model, args->adapters);
    const bool bf16 = examples::choose_chat_dtype(*args, src) == "bfloat16";
    using examples::run_chat;
    // --merge_lora true: as ms-swift, the adapter is folded into the weights first and the plain
    // merged model decodes (export's merge, into a folder removed at exit).
    examples::TempDir temp;
    if (args->merge_lora) {
      std::filesystem::path base = src.model;
      if (base.empty()) {
        base = temp.path / "embedded-base";
        examples::write_embedded_model_folder(base);
      }
      const auto merged = temp.path / "merged";
      const MergeSummary s = merge_lora(base, args->adapters, merged);
      fmt::print(stderr, "[merge] {} merged into {} before decoding ({} projections)\n", args->adapters,
                 src.model.empty() ? "the embedded default model" : src.model, s.merged_modules);
      src.model = merged.string();
      args->adapters.clear();
    }
    if (!args->adapters.empty())
      return bf16 ? run_chat<Qwen2<Lora<>, Bf16Mixed, Cpu>>(*args, src, "cpu")
                  : run_chat<Qwen2<Lora<>, Fp32, Cpu>>(*args, src, "cpu");
    return bf16 ? run_chat<Qwen2<Frozen, Bf16Mixed, Cpu>>(*args, src, "cpu")
                : run_chat<Qwen2<Frozen, Fp32, Cpu>>(*args, src, "cpu");
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "chat: error: {}\n", examples::out_of_memory_message());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "chat: error: {}\n", e.what());
    return 1;
  }
}
