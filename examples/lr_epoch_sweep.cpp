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
#include <fmt/format.h>

#include "sft/lr_epoch_sweep.hpp"
#include "activity.hpp"

using namespace peft;

int main(int argc, char** argv) {
  try {
    auto s = examples::sweep::parse_sweep_args(argc, argv);
    if (!s) return 0;
    require(s->sft.device != "cuda", "--device cuda: this build has no CUDA backend (build lr_epoch_sweep_cuda; see README)");
    return s->sft.torch_dtype == "bfloat16" ? examples::sweep::run_sweep<Qwen2<Lora<>, Bf16Mixed, Cpu>>(*s)
                                            : examples::sweep::run_sweep<Qwen2<Lora<>, Fp32, Cpu>>(*s);
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "lr_epoch_sweep: error: {}\n", examples::out_of_memory_message());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "lr_epoch_sweep: error: {}\n", e.what());
    return 1;
  }
}
