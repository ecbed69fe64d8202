// chat: talk to a model, with or without a LoRA adapter, as ms-swift's `swift infer` does.
//   chat                                              # the embedded default model
//   chat --adapters output/v0-.../checkpoint-440 --stream true --temperature 0 --max_new_tokens 2048
//   echo "你是谁?" | chat --model Qwen2.5-7B-Instruct   # one JSON line {query, response} per line in
//   chat --model M --val_dataset questions.jsonl       # one JSON line per row, with its labels
//   chat --adapters ckpt --merge_lora true --result_path answers.jsonl   # merged before decoding
// On a terminal it is a conversation (multi-turn history; `clear`, `reset-system`, `exit`);
// otherwise it is a filter for scripts: JSONL on stdout, everything else on stderr. The body is
// infer/run_chat.hpp. Ctrl-C or SIGTERM stops it (infer/stop_request.hpp): the answers so far are
// published to --result_path, the temporary merged model is removed, and it exits 130 / 143.
// chat_cuda is this source built by nvcc (-DPEFT_WITH_CUDA=ON): `--device cuda` answers with
// LoraLm or FrozenLm<Bf16Mixed, CudaRecompute> on GPU 0: a device KV cache, prefill on the GPU and
// a CUDA-graph decode step per token (docs/generation.md, "GPU decode"). `--device auto` (the
// default) does so when a GPU is present and the run is bfloat16, and says so on stderr;
// otherwise it runs the CPU compositions. --device cuda without --torch_dtype (and no dtype
// recorded by the adapter's training run) uses bfloat16, the CUDA backend's only storage.
// A QLoRA adapter (its args.json records --quant_bits 4) is answered on a base loaded in NF4, as
// ms-swift's infer loads it; --quant_bits 0 loads the bf16 base instead (--merge_lora true merges
// into the bf16 base).
//   chat_cuda --device cuda --model Qwen2.5-7B-Instruct --adapters output/v0-.../checkpoint-440 --stream true
#include <fmt/format.h>

#include <optional>

#include "activity.hpp"
#include "build_variant.hpp"
#include "infer/embedded_model_folder.hpp"
#include "infer/run_chat.hpp"
#include "infer/stop_request.hpp"
#include "infer/temp_dir.hpp"
#include "peft/io/merge_lora.hpp"
#include "peft/compositions.hpp"
#ifdef __CUDACC__
#include "cuda_device.cuh"
#include "peft/compositions_cuda.cuh"
#endif

using namespace peft;

namespace {

// The answer from the GPU when the run is one the CUDA backend does, else nothing.
std::optional<int> chat_on_gpu([[maybe_unused]] const examples::ChatArgs& a,
                               [[maybe_unused]] const examples::ModelSource& src,
                               [[maybe_unused]] examples::ResultFile& results,
                               [[maybe_unused]] const std::string& dtype, [[maybe_unused]] bool nf4) {
#ifdef __CUDACC__
  const std::string cpu_only = dtype == "bfloat16" ? "" : fmt::format("--torch_dtype {} runs on the CPU only", dtype);
  if (!examples::choose_cuda(a.device, cpu_only, stderr)) return std::nullopt;
  cudaDeviceProp p{};
  PEFT_CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
  CudaModelOptions opt;
  opt.max_tokens = 1024;  // the prefill chunk (longer prompts run in chunks over the cache)
  opt.logits_chunk_rows = 8;
  const std::string where = fmt::format("cuda:0 ({})", p.name);
  if (nf4) return examples::run_chat<LoraLm<Nf4Base, CudaRecompute>>(a, src, results, where, opt);
  if (!a.adapters.empty()) return examples::run_chat<LoraLm<Bf16Mixed, CudaRecompute>>(a, src, results, where, opt);
  return examples::run_chat<FrozenLm<Bf16Mixed, CudaRecompute>>(a, src, results, where, opt);
#else
  return std::nullopt;
#endif
}

// --merge_lora true: as ms-swift, the adapter is folded into the weights first and the plain
// merged model decodes (export's merge, into a folder removed at exit; a copy of the base's size:
// 15 GB at 7B in the temporary directory). On the GPU the merged model also decodes faster: the
// step has no adapter terms.
void merge_first(examples::ChatArgs& a, examples::ModelSource& src, const examples::TempDir& temp) {
  std::filesystem::path base = src.model;
  if (base.empty()) {
    base = temp.path / "embedded-base";
    examples::write_embedded_model_folder(base);
  }
  const auto merged = temp.path / "merged";
  const MergeSummary s = merge_lora(base, a.adapters, merged);
  fmt::print(stderr, "[merge] {} merged into {} before decoding ({} projections)\n", a.adapters,
             src.model.empty() ? "the embedded default model" : src.model, s.merged_modules);
  src.model = merged.string();
  a.adapters.clear();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string program = examples::program_name("chat");
  examples::ResultFile results;
  try {
    auto args = examples::parse_chat_args(argc, argv, examples::kCudaBuild);
    if (!args) return 0;
    examples::report_accepted_unused(stderr, args->ignored);
    install_stop_signal_handlers(/*interrupt_reads=*/true);  // a pipe that waits for lines does not hold a stop
    results = examples::ResultFile(args->result_path);      // refused here, before any work, if it cannot be written
    examples::ModelSource src = examples::resolve_model_source(args->model, args->adapters);
    std::string dtype;
    if (examples::kCudaBuild && args->device == "cuda" && args->torch_dtype.empty() && !src.torch_dtype)
      dtype = "bfloat16";
    else
      dtype = examples::choose_chat_dtype(*args, src);
    examples::TempDir temp;
    if (args->merge_lora) merge_first(*args, src, temp);  // chat_cuda then decodes the merged bf16 base
    examples::stop_if_signalled();
    const bool nf4 = !args->adapters.empty() && args->quant_bits.value_or(src.qlora ? 4 : 0) == 4;
    if (nf4)
      fmt::print(stderr, "[model] the base's projections are loaded in NF4 ({}; --quant_bits 0 loads them in bf16)\n",
                 args->quant_bits ? "--quant_bits 4" : "the adapter was trained with --quant_bits 4");
    if (const auto rc = chat_on_gpu(*args, src, results, dtype, nf4)) return *rc;
    using examples::run_chat;
    const bool bf16 = dtype == "bfloat16";
    if (nf4)
      return bf16 ? run_chat<LoraLm<Nf4Base>>(*args, src, results, "cpu")
                  : run_chat<LoraLm<Nf4Fp32>>(*args, src, results, "cpu");
    if (!args->adapters.empty())
      return bf16 ? run_chat<LoraLm<Bf16Mixed>>(*args, src, results, "cpu")
                  : run_chat<LoraLm<Fp32>>(*args, src, results, "cpu");
    return bf16 ? run_chat<FrozenLm<Bf16Mixed>>(*args, src, results, "cpu")
                : run_chat<FrozenLm<Fp32>>(*args, src, results, "cpu");
  } catch (const examples::StopRequested& stop) {  // the temporary folder is gone: unwinding removed it
    try {
      results.commit();
    } catch (const std::exception& e) {
      fmt::print(stderr, "{}: error: {}\n", program, e.what());
      return 1;
    }
    const std::string kept = results.path().empty() ? "" : fmt::format("; the answers so far are in {}", results.path());
    fmt::print(stderr, "{}: stopped by {}{}\n", program, stop_signal_name(stop.signal), kept);
    return 128 + stop.signal;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "{}: error: {}\n", program, examples::out_of_memory_message());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: error: {}\n", program, e.what());
    return 1;
  }
}
