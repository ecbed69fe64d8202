// identity_finetune: the recipe's `swift sft` as a peft program. The model type is chosen from
// the flags among a few compile-time compositions; everything else is shared (sft/run_sft.hpp).
//   identity_finetune                                  # embedded default model + identity data
//   identity_finetune --model Qwen2.5-7B-Instruct --dataset self_cognition.json --num_train_epochs 10 ...
//   NPROC_PER_NODE=2 identity_finetune ...            # data-parallel on 2 CPU processes (docs/multi_gpu.md)
//   identity_finetune --quant_method bnb --quant_bits 4 ...   # QLoRA: an NF4 base (docs/qlora.md)
#include <fmt/format.h>

#include "peft/dist/launcher.hpp"
#include "peft/dist/worker.hpp"
#include "peft/qwen.hpp"
#include "sft/cpu_compositions.hpp"
#include "activity.hpp"

using namespace peft;

int main(int argc, char** argv) {
  try {
    examples::SftArgs args = examples::parse_sft_args(argc, argv);
    if (args.help) return 0;
    require(args.device != "cuda", "--device cuda: this program is the CPU build; configure with -DPEFT_WITH_CUDA=ON and run "
            "identity_finetune_cuda (README)");
    const dist::LaunchEnv env = dist::read_launch_env();
    if (env.needs_launch()) return dist::launch_workers(env, argv);  // the flags parsed once, here, first
    dist::quiet_stdout_unless_rank0(env);
    const auto comm = dist::connect_host(env);
    if (comm) dist::announce(env, *comm, "cpu");
    return examples::run_sft_cpu(args, comm.get());
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "identity_finetune: error: {}\n", examples::out_of_memory_message());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "identity_finetune: error: {}\n", e.what());
    return 1;
  }
}
