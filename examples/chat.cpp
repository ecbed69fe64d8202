// chat: talk to a model, with or without a LoRA adapter, as ms-swift's `swift infer` does.
//   chat                                              # the embedded default model
//   chat --adapters output/v0-.../checkpoint-440 --stream true --temperature 0 --max_new_tokens 2048
//   echo "你是谁?" | chat --model Qwen2.5-7B-Instruct   # one JSON line {query, response} per line in
//   chat --model M --val_dataset questions.jsonl       # one JSON line per row, with its labels
// On a terminal it is a conversation (multi-turn history; `clear`, `reset-system`, `exit`);
// otherwise it is a filter for scripts: JSONL on stdout, everything else on stderr. The body is
// infer/run_chat.hpp, shared with chat_cuda (the CUDA backend).
#include "infer/run_chat.hpp"
#include "activity.hpp"

using namespace peft;

int main(int argc, char** argv) {
  try {
    const auto args = examples::parse_chat_args(argc, argv, false);
    if (!args) return 0;
    const examples::ModelSource src = examples::resolve_model_source(args->model, args->adapters);
    const bool bf16 = examples::choose_chat_dtype(*args, src) == "bfloat16";
    using examples::run_chat;
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
