// chat_cuda: chat (infer/run_chat.hpp, the same flags and output) built by nvcc with the CUDA
// backend. `--device cuda` answers with Qwen2<Lora<> or Frozen, Bf16Mixed, CudaRecompute> on GPU 0:
// a device KV cache, prefill on the GPU and a CUDA-graph decode step per token (docs/generation.md,
// "GPU decode"). `--device auto` (the default) does so when a GPU is present and the run is
// bfloat16, and says so on stderr; otherwise it runs the CPU compositions as chat does.
// --device cuda without --torch_dtype (and no dtype recorded by the adapter's training run) uses
// bfloat16, the CUDA backend's only storage.
//   chat_cuda --device cuda --model Qwen2.5-7B-Instruct --adapters output/v0-.../checkpoint-440 --stream true
//   echo "你是谁?" | chat_cuda --device cuda --model tiny
#include <fmt/format.h>

#include "cuda_device.cuh"
#include "infer/run_chat.hpp"
#include "peft/qwen_cuda.cuh"

using namespace peft;

namespace {

int run(const examples::ChatArgs& a, const examples::ModelSource& src) {
  std::string dtype;
  if (a.device == "cuda" && a.torch_dtype.empty() && !src.torch_dtype) dtype = "bfloat16";
  else dtype = examples::choose_chat_dtype(a, src);
  const std::string cpu_only = dtype == "bfloat16" ? "" : fmt::format("--torch_dtype {} runs on the CPU only", dtype);
  using examples::run_chat;
  if (examples::choose_cuda(a.device, cpu_only, stderr)) {
    cudaDeviceProp p{};
    PEFT_CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
    CudaModelOptions opt;
    opt.max_tokens = 1024;  // the prefill chunk (longer prompts run in chunks over the cache)
    opt.logits_chunk_rows = 8;
    const std::string where = fmt::format("cuda:0 ({})", p.name);
    if (!a.adapters.empty()) return run_chat<Qwen2<Lora<>, Bf16Mixed, CudaRecompute>>(a, src, where, opt);
    return run_chat<Qwen2<Frozen, Bf16Mixed, CudaRecompute>>(a, src, where, opt);
  }
  const bool bf16 = dtype == "bfloat16";
  if (!a.adapters.empty())
    return bf16 ? run_chat<Qwen2<Lora<>, Bf16Mixed, Cpu>>(a, src, "cpu")
                : run_chat<Qwen2<Lora<>, Fp32, Cpu>>(a, src, "cpu");
  return bf16 ? run_chat<Qwen2<Frozen, Bf16Mixed, Cpu>>(a, src, "cpu")
              : run_chat<Qwen2<Frozen, Fp32, Cpu>>(a, src, "cpu");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const auto args = examples::parse_chat_args(argc, argv, true);
    if (!args) return 0;
    return run(*args, examples::resolve_model_source(args->model, args->adapters));
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "chat_cuda: error: {}\n", peft::examples::out_of_memory_message());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "chat_cuda: error: {}\n", e.what());
    return 1;
  }
}
