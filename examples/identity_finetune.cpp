// identity_finetune: the recipe's `swift sft` as a peft program. The model type is chosen from
// the flags among the compositions (sft/compositions.hpp); everything else is shared
// (sft/run_sft.hpp).
//   identity_finetune                                  # embedded default model + identity data
//   identity_finetune --model Qwen2.5-7B-Instruct --dataset self_cognition.json --num_train_epochs 10 ...
//   NPROC_PER_NODE=2 identity_finetune ...            # data-parallel on 2 CPU processes (docs/multi_gpu.md)
//   identity_finetune --quant_method bnb --quant_bits 4 ...   # QLoRA: an NF4 base (docs/qlora.md)
// identity_finetune_cuda is this source built by nvcc (-DPEFT_WITH_CUDA=ON): `--device cuda`
// trains the recipe's Qwen25_7B_Lora<Cuda> on GPU 0 (`--train_type full`: FullLm<Bf16Mixed, Cuda>,
// every weight with an fp32 master; saved as model.safetensors + config.json, as on the CPU;
// `--quant_bits 4`: QLoRA, LoraLm<Nf4Base, Cuda>, the NF4 base on the GPU); `--device auto` (the
// default) does so when a GPU is present and the run is bfloat16 LoRA, QLoRA or full, and says so;
// otherwise it runs the CPU compositions. --gradient_checkpointing true (ms-swift's default) |
// selective | false picks CudaRecompute, CudaSelective or Cuda after the planned peaks are held
// against the free memory, auto (ours) the fastest that fits; the chosen one is printed
// (sft/cuda_activations.cuh).
//   identity_finetune_cuda --device cuda --model Qwen2.5-7B-Instruct --dataset self_cognition.json ...
//   NPROC_PER_NODE=2 identity_finetune_cuda --device cuda ...   # data-parallel over NCCL (docs/multi_gpu.md)
#include <fmt/format.h>

#include <optional>

#include "activity.hpp"
#include "build_variant.hpp"
#include "peft/dist/launcher.hpp"
#include "peft/dist/worker.hpp"
#include "peft/qwen.hpp"
#include "sft/compositions.hpp"
#ifdef __CUDACC__
#include "cuda_device.cuh"
#include "peft/dist/nccl_communicator.cuh"
#include "peft/compositions_cuda.cuh"
#include "sft/cuda_activations.cuh"
#endif

namespace peft {

#ifdef __CUDACC__
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

// The GPU when the run is one the CUDA backend does, else nothing (std::nullopt).
static std::optional<int> run_on_gpu(examples::SftArgs& args, const dist::LaunchEnv& env) {
  const std::string cpu_only =
      args.torch_dtype != "bfloat16" ? fmt::format("--torch_dtype {} runs on the CPU only", args.torch_dtype)
                                     : std::string();
  if (!examples::choose_cuda(args.device, cpu_only)) return std::nullopt;
  const auto comm = env.distributed() ? join_gpus(args, env) : nullptr;
  // --gradient_checkpointing, the data's longest sample and the free memory pick the activation
  // policy (sft/cuda_activations.cuh) once the data is read.
  return examples::run_sft_choosing(args, comm.get(), [](examples::SftArgs& a, std::int64_t longest, auto&& run) {
    if (a.quant.nf4())  // QLoRA: the NF4 base (bnb_4bit_compute_dtype bfloat16, as --torch_dtype)
      return examples::with_cuda_activations<Lora<>, Nf4Base>(
          a, longest, [&]<class Device>() { return run.template operator()<LoraLm<Nf4Base, Device>>(); });
    if (a.train_type == "full")
      return examples::with_cuda_activations<Full>(
          a, longest, [&]<class Device>() { return run.template operator()<FullLm<Bf16Mixed, Device>>(); });
    return examples::with_cuda_activations<Lora<>>(
        a, longest, [&]<class Device>() { return run.template operator()<Qwen25_7B_Lora<Device>>(); });
  });
}
#else
static std::optional<int> run_on_gpu(examples::SftArgs&, const dist::LaunchEnv&) { return std::nullopt; }
#endif

static int run(examples::SftArgs& args, const dist::LaunchEnv& env) {
  if (const auto rc = run_on_gpu(args, env)) return *rc;
  const auto host = dist::connect_host(env);  // the CPU compositions: the TCP transport
  if (host) dist::announce(env, *host, "cpu");
  return examples::run_sft_cpu(args, host.get());
}

}  // namespace peft

int main(int argc, char** argv) {
  const std::string program = peft::examples::program_name("identity_finetune");
  try {
    peft::examples::SftArgs args = peft::examples::parse_sft_args(argc, argv);
    if (args.help) return 0;
    peft::require(peft::examples::kCudaBuild || args.device != "cuda", "--device cuda: this program is the CPU build; "
                  "configure with -DPEFT_WITH_CUDA=ON and run identity_finetune_cuda (README)");
    const peft::dist::LaunchEnv env = peft::dist::read_launch_env();
    if (env.needs_launch()) return peft::dist::launch_workers(env, argv);  // the flags parsed once, here, first
    peft::dist::quiet_stdout_unless_rank0(env);
    return peft::run(args, env);
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "{}: error: {}\n", program, peft::examples::out_of_memory_message());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: error: {}\n", program, e.what());
    return 1;
  }
}
