// What a training process does once it knows its place (dist/launch_env.hpp): join the others
// over the host transport (the GPU one is dist/nccl_communicator.cuh), and say once who it
// is. Ranks other than 0 keep stderr (errors, the [dist] line) but drop stdout: W copies of the
// same "before/after training" answers help no one (PEFT_DIST_ALL_STDOUT=1 keeps them).
#pragma once
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <unistd.h>

#include "peft/dist/launch_env.hpp"
#include "peft/dist/tcp_communicator.hpp"

namespace peft::dist {

// The CPU run's communicator: nullptr when the run is not distributed (world 1, nothing forced).
inline std::unique_ptr<Communicator> connect_host(const LaunchEnv& env) {
  if (!env.distributed()) return nullptr;
  require(env.backend != "nccl", "PEFT_DIST_BACKEND=nccl: NCCL sums GPU buffers; this run trains on the CPU (tcp is "
          "the CPU transport; for GPUs run identity_finetune_cuda --device cuda)");
  return std::make_unique<TcpCommunicator>(rendezvous(env), env.timeout_s);
}

// First thing a worker does (before any "[device]" or "[model]" line).
inline void quiet_stdout_unless_rank0(const LaunchEnv& env) {
  if (env.rank > 0 && !std::getenv("PEFT_DIST_ALL_STDOUT")) {
    std::fflush(stdout);
    if (!std::freopen("/dev/null", "w", stdout)) fmt::print(stderr, "[dist] rank {}: stdout stays open\n", env.rank);
  }
}

inline void announce(const LaunchEnv& env, const Communicator& c, const std::string& device) {
  fmt::print(stderr, "[dist] rank {}/{} (local rank {}, node {}/{}) pid {} on {}, {} transport, timeout {} s\n",
             c.rank(), c.world_size(), env.local_rank, env.node_rank, env.nnodes, static_cast<long>(::getpid()),
             device, c.name(), env.timeout_s);
}

}  // namespace peft::dist
