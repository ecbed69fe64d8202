// identity_finetune_cuda: identity_finetune (sft/run_sft.hpp, the same flags and run folder) built
// by nvcc with the CUDA backend. `--device cuda` trains Qwen2<Lora<>, Bf16Mixed, Cuda> on GPU 0;
// `--device auto` (the default) does so when a GPU is present and the run is LoRA in bfloat16,
// and says so; otherwise it runs the CPU compositions as identity_finetune does. The CPU
// program stays a plain C++ build (no CUDA toolkit needed); this one is added under
// -DPEFT_WITH_CUDA=ON.
//   identity_finetune_cuda --device cuda --model Qwen2.5-7B-Instruct --dataset self_cognition.json ...
#include <cuda_runtime.h>
#include <fmt/format.h>

#include "peft/backend/cuda/device.cuh"
#include "peft/qwen.hpp"
#include "sft/run_sft.hpp"

namespace peft {

static bool cuda_present(std::string* name) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, 0) == cudaSuccess) *name = p.name;
  return true;
}

static int run(examples::SftArgs& args) {
  std::string gpu;
  const bool has_gpu = cuda_present(&gpu);
  // auto takes the GPU for what the CUDA backend trains (LoRA, bfloat16); the rest stays on the CPU.
  const bool cuda_kind = args.train_type == "lora" && args.torch_dtype == "bfloat16";
  const bool use_cuda = args.device == "cuda" || (args.device == "auto" && has_gpu && cuda_kind);
  if (use_cuda) {
    require(args.train_type == "lora", "--device cuda trains LoRA only: --train_type {} is CPU-only (use --device cpu)",
            args.train_type);
    require(args.torch_dtype == "bfloat16",
            "--device cuda computes in bfloat16: --torch_dtype {} is CPU-only (use --device cpu)", args.torch_dtype);
    require(has_gpu, "--device cuda: no CUDA device is visible (cudaGetDeviceCount found none)");
    fmt::print("[device] cuda:0 ({}){}\n", gpu, args.device == "auto" ? ", chosen by --device auto" : "");
    return examples::run_sft<Qwen2<Lora<>, Bf16Mixed, Cuda>>(args);
  }
  if (args.device == "auto")
    fmt::print("[device] cpu ({})\n", has_gpu ? fmt::format("--train_type {} --torch_dtype {} run on the CPU only",
                                                             args.train_type, args.torch_dtype)
                                               : std::string("no CUDA device visible"));
  const bool bf16 = args.torch_dtype == "bfloat16";
  if (args.train_type == "lora")
    return bf16 ? examples::run_sft<Qwen2<Lora<>, Bf16Mixed, Cpu>>(args) : examples::run_sft<Qwen2<Lora<>, Fp32, Cpu>>(args);
  return bf16 ? examples::run_sft<Qwen2<Full, Bf16Mixed, Cpu>>(args) : examples::run_sft<Qwen2<Full, Fp32, Cpu>>(args);
}

}  // namespace peft

int main(int argc, char** argv) {
  try {
    peft::examples::SftArgs args = peft::examples::parse_sft_args(argc, argv);
    if (args.help) return 0;
    return peft::run(args);
  } catch (const std::exception& e) {
    fmt::print(stderr, "identity_finetune_cuda: error: {}\n", e.what());
    return 1;
  }
}
