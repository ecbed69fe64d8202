// identity_finetune_cuda: identity_finetune (sft/run_sft.hpp, the same flags and run folder) built
// by nvcc with the CUDA backend. `--device cuda` trains Qwen2<Lora<>, Bf16Mixed, Cuda> on GPU 0;
// `--device auto` (the default) does so when a GPU is present and the run is LoRA in bfloat16,
// and says so; otherwise it runs the CPU compositions as identity_finetune does.
// --gradient_checkpointing (default true, as ms-swift) picks Cuda or CudaRecompute after the
// planned peak is printed and held against the free memory (sft/cuda_activations.cuh). The CPU
// program stays a plain C++ build (no CUDA toolkit needed); this one is added under
// -DPEFT_WITH_CUDA=ON.
//   identity_finetune_cuda --device cuda --model Qwen2.5-7B-Instruct --dataset self_cognition.json ...
//   NPROC_PER_NODE=2 identity_finetune_cuda --device cuda ...   # data-parallel over NCCL (docs/multi_gpu.md)
#include <fmt/format.h>

#include "cuda_device.cuh"
#include "peft/qwen_cuda.cuh"
#include "peft/dist/nccl_communicator.cuh"
#include "peft/dist/launcher.hpp"
#include "peft/dist/worker.hpp"
#include "peft/qwen.hpp"
#include "sft/cuda_activations.cuh"
#include "sft/run_sft.hpp"
#include "sft/cpu_compositions.hpp"

namespace peft {

// A data-parallel rank trains on GPU LOCAL_RANK (a launcher that gives each process one visible GPU
// through CUDA_VISIBLE_DEVICES is served by GPU 0 of what it sees) and joins the others over NCCL.
static std::unique_ptr<cuda::NcclCommunicator> join_gpus(examples::SftArgs& args, const dist::LaunchEnv& env) {
  require(env.backend != "tcp", "PEFT_DIST_BACKEND=tcp: the CUDA model's gradients are summed on the GPUs, by NCCL "
          "(use auto or nccl)");
  int n = 0;
  PEFT_CUDA_CHECK(cudaGetDeviceCount(&n));
  require(env.local_rank < n || n == 1, "LOCAL_RANK={} but only {} GPUs are visible (CUDA_VISIBLE_DEVICES?)",
          env.local_rank, n);
  args.cuda_device = env.local_rank < n ? env.local_rank : 0;
  PEFT_CUDA_CHECK(cudaSetDevice(args.cuda_device));
  cudaDeviceProp p{};
  PEFT_CUDA_CHECK(cudaGetDeviceProperties(&p, args.cuda_device));
  auto comm = std::make_unique<cuda::NcclCommunicator>(env);
  dist::announce(env, *comm, fmt::format("cuda:{} ({}), {}", args.cuda_device, p.name, comm->library()));
  return comm;
}

static int run(examples::SftArgs& args, const dist::LaunchEnv& env) {
  const std::string cpu_only =
      args.quant.nf4()                 ? std::string("--quant_bits 4 (QLoRA) runs on the CPU only: no GPU NF4 kernels yet")
      : args.train_type != "lora"      ? fmt::format("--train_type {} runs on the CPU only", args.train_type)
      : args.torch_dtype != "bfloat16" ? fmt::format("--torch_dtype {} runs on the CPU only", args.torch_dtype)
                                       : std::string();
  if (examples::choose_cuda(args.device, cpu_only)) {
    const auto comm = env.distributed() ? join_gpus(args, env) : nullptr;
    if (examples::cuda_recompute_activations<Lora<>>(args))  // --gradient_checkpointing, and the free memory
      return examples::run_sft<Qwen2<Lora<>, Bf16Mixed, CudaRecompute>>(args, comm.get());
    return examples::run_sft<Qwen2<Lora<>, Bf16Mixed, Cuda>>(args, comm.get());
  }
  const auto host = dist::connect_host(env);  // the CPU compositions: the TCP transport
  if (host) dist::announce(env, *host, "cpu");
  return examples::run_sft_cpu(args, host.get());
}

}  // namespace peft

int main(int argc, char** argv) {
  try {
    peft::examples::SftArgs args = peft::examples::parse_sft_args(argc, argv);
    if (args.help) return 0;
    const peft::dist::LaunchEnv env = peft::dist::read_launch_env();
    if (env.needs_launch()) return peft::dist::launch_workers(env, argv);  // one worker per local GPU
    peft::dist::quiet_stdout_unless_rank0(env);
    return peft::run(args, env);
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "identity_finetune_cuda: error: {}\n", peft::examples::out_of_memory_message());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "identity_finetune_cuda: error: {}\n", e.what());
    return 1;
  }
}
