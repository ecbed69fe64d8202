// lr_epoch_sweep: the learning-rate x epochs study behind the identity recipe as one command.
// Every cell of the grid is an identity fine-tune from the same base weights: the base model is
// loaded once and each cell re-draws its LoRA adapters from the same seed (sft/lr_epoch_sweep.hpp),
// so cells differ only in lr and epochs. Each cell has its own run folder (logging.jsonl,
// loss.svg, checkpoints); the sweep writes sweep.md and sweep.csv (final train loss, eval loss,
// identity accuracy, repetition, retention, seconds) and sweep.svg (every train-loss curve
// against the epoch). Re-running skips finished cells (result.json) and resumes a cell that was
// interrupted from its last checkpoint.
//   lr_epoch_sweep                                   # embedded default, lr 3e-3 1e-3 1e-4
//   lr_epoch_sweep --model Qwen2.5-7B-Instruct --dataset self_cognition.json --learning_rates 1e-3 1e-4 5e-5
// lr_epoch_sweep_cuda is this source built by nvcc (-DPEFT_WITH_CUDA=ON): `--device auto` (the
// default) sweeps on GPU 0 when one is present, `--device cpu` on the CPU compositions. On the GPU
// the base model is loaded once and stays in device memory; each cell re-draws the adapters and
// re-takes the optimizer state.
//   lr_epoch_sweep_cuda --model Qwen2.5-7B-Instruct --dataset self_cognition.json \
//     --learning_rates 1e-3 1e-4 5e-5 --epochs 3 5 10 15 20
#include <fmt/format.h>

#include "activity.hpp"
#include "build_variant.hpp"
#include "sft/lr_epoch_sweep.hpp"
#ifdef __CUDACC__
#include "cuda_device.cuh"
#include "peft/compositions_cuda.cuh"
#endif

using namespace peft;

int main(int argc, char** argv) {
  const std::string program = examples::program_name("lr_epoch_sweep");
  try {
    auto s = examples::sweep::parse_sweep_args(argc, argv);
    if (!s) return 0;
    const bool bf16 = s->sft.torch_dtype == "bfloat16";
#ifdef __CUDACC__
    const std::string cpu_only = bf16 ? "" : fmt::format("--torch_dtype {} runs on the CPU only", s->sft.torch_dtype);
    if (examples::choose_cuda(s->sft.device, cpu_only)) return examples::sweep::run_sweep<Qwen25_7B_Lora_Cuda>(*s);
#else
    require(s->sft.device != "cuda", "--device cuda: this build has no CUDA backend (build lr_epoch_sweep_cuda; see README)");
#endif
    return bf16 ? examples::sweep::run_sweep<Qwen25_7B_Lora_Cpu>(*s) : examples::sweep::run_sweep<LoraLm<Fp32>>(*s);
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "{}: error: {}\n", program, examples::out_of_memory_message());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: error: {}\n", program, e.what());
    return 1;
  }
}
