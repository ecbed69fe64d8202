// lr_epoch_sweep_cuda: lr_epoch_sweep (sft/lr_epoch_sweep.hpp, the same flags, grid and tables)
// built by nvcc with the CUDA backend: `--device auto` (the default) sweeps on GPU 0 when one is
// present, `--device cpu` on the CPU compositions. On the GPU the base model is loaded once and
// stays in device memory; each cell re-draws the adapters and re-takes the optimizer state.
//   lr_epoch_sweep_cuda --model Qwen2.5-7B-Instruct --dataset self_cognition.json \
//     --learning_rates 1e-3 1e-4 5e-5 --epochs 3 5 10 15 20
#include <fmt/format.h>

#include "cuda_device.cuh"
#include "peft/qwen_cuda.cuh"
#include "sft/lr_epoch_sweep.hpp"

using namespace peft;

int main(int argc, char** argv) {
  try {
    auto s = examples::sweep::parse_sweep_args(argc, argv);
    if (!s) return 0;
    const std::string cpu_only = s->sft.torch_dtype != "bfloat16"
                                     ? fmt::format("--torch_dtype {} runs on the CPU only", s->sft.torch_dtype)
                                     : std::string();
    if (examples::choose_cuda(s->sft.device, cpu_only))
      return examples::sweep::run_sweep<Qwen2<Lora<>, Bf16Mixed, Cuda>>(*s);
    return s->sft.torch_dtype == "bfloat16" ? examples::sweep::run_sweep<Qwen2<Lora<>, Bf16Mixed, Cpu>>(*s)
                                            : examples::sweep::run_sweep<Qwen2<Lora<>, Fp32, Cpu>>(*s);
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "lr_epoch_sweep_cuda: error: {}\n", peft::examples::out_of_memory_message());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "lr_epoch_sweep_cuda: error: {}\n", e.what());
    return 1;
  }
}
