// Where this process stands in a data-parallel run, read from the environment the way ms-swift
// (and torchrun under it) is driven: NPROC_PER_NODE, NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT,
// and RANK / WORLD_SIZE / LOCAL_RANK when a launcher (ours, torchrun, a cluster's) already set them.
// Read once, validated here, so every later step can trust it; a wrong value is a message naming
// the variable, never a hang at the rendezvous.
//
// Also read: PEFT_DIST_TIMEOUT (seconds a blocking step - rendezvous, all-reduce - may wait for a
// peer before the run stops with an error; default 600, torch's NCCL default is 10-30 min) and
// PEFT_DIST_BACKEND (auto | tcp | nccl | none; auto = none at world 1, else NCCL for CUDA
// training and TCP for CPU training; naming one at world 1 forces that path, for tests).
#pragma once
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <algorithm>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "peft/core/error.hpp"

namespace peft::dist {

struct LaunchEnv {
  int nproc_per_node = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  int rank = 0;
  int local_rank = 0;
  int world_size = 1;
  bool rank_given = false;  // RANK was set: this process is a worker (ours or another launcher's)
  double timeout_s = 600;
  std::string backend = "auto";

  // NPROC_PER_NODE > 1 without RANK: this process starts the node's workers (dist/launcher.hpp).
  bool needs_launch() const { return !rank_given && nproc_per_node > 1; }
  bool distributed() const { return world_size > 1 || (backend != "auto" && backend != "none"); }

  // The variables a worker started for local GPU `local` gets on top of ours.
  std::vector<std::pair<std::string, std::string>> worker_env(int local) const {
    return {{"RANK", std::to_string(node_rank * nproc_per_node + local)},
            {"LOCAL_RANK", std::to_string(local)},
            {"WORLD_SIZE", std::to_string(world_size)},
            {"LOCAL_WORLD_SIZE", std::to_string(nproc_per_node)},
            {"MASTER_ADDR", master_addr},
            {"MASTER_PORT", std::to_string(master_port)}};
  }
};

using GetEnv = std::function<const char*(const char*)>;

namespace detail {
inline bool env_int(const GetEnv& get, const char* name, long lo, long hi, int* out) {
  const char* v = get(name);
  if (!v || !*v) return false;
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  require(errno == 0 && end && *end == '\0', "{}='{}': not an integer", name, v);
  require(x >= lo && x <= hi, "{}={}: must be in [{}, {}]", name, x, lo, hi);
  *out = static_cast<int>(x);
  return true;
}
}  // namespace detail

// `get` is std::getenv in programs; tests pass a map.
inline LaunchEnv read_launch_env(const GetEnv& get) {
  LaunchEnv e;
  constexpr long kMaxProcs = 1 << 16;
  const bool nproc_given = detail::env_int(get, "NPROC_PER_NODE", 1, kMaxProcs, &e.nproc_per_node);
  detail::env_int(get, "NNODES", 1, kMaxProcs, &e.nnodes);
  const bool node_rank_given = detail::env_int(get, "NODE_RANK", 0, kMaxProcs, &e.node_rank);
  require(e.node_rank < e.nnodes, "NODE_RANK={} with NNODES={}: node ranks run from 0 to NNODES-1", e.node_rank,
          e.nnodes);
  detail::env_int(get, "MASTER_PORT", 0, 65535, &e.master_port);
  const char* addr = get("MASTER_ADDR");
  if (addr && *addr) e.master_addr = addr;
  else require(e.nnodes == 1, "NNODES={}: MASTER_ADDR must name the node of rank 0 (reachable from every node)",
               e.nnodes);
  if (const char* t = get("PEFT_DIST_TIMEOUT"); t && *t) {
    char* end = nullptr;
    e.timeout_s = std::strtod(t, &end);
    require(end && *end == '\0' && e.timeout_s > 0, "PEFT_DIST_TIMEOUT='{}': a positive number of seconds", t);
  }
  if (const char* b = get("PEFT_DIST_BACKEND"); b && *b) {
    e.backend = b;
    require(e.backend == "auto" || e.backend == "tcp" || e.backend == "nccl" || e.backend == "none",
            "PEFT_DIST_BACKEND='{}': valid: auto, tcp, nccl, none", b);
  }

  const int launched_world = e.nproc_per_node * e.nnodes;
  e.rank_given = detail::env_int(get, "RANK", 0, kMaxProcs, &e.rank);
  const bool world_given = detail::env_int(get, "WORLD_SIZE", 1, kMaxProcs, &e.world_size);
  if (e.rank_given) {
    if (!world_given) e.world_size = launched_world;
    require(e.rank < e.world_size, "RANK={} with WORLD_SIZE={}: ranks run from 0 to WORLD_SIZE-1", e.rank,
            e.world_size);
    if (nproc_given)
      require(e.world_size == launched_world, "WORLD_SIZE={} but NPROC_PER_NODE x NNODES = {} x {} = {}", e.world_size,
              e.nproc_per_node, e.nnodes, launched_world);
    if (!nproc_given) e.nproc_per_node = std::max(1, e.world_size / e.nnodes);  // RANK/WORLD_SIZE only: even split
    if (!detail::env_int(get, "LOCAL_RANK", 0, kMaxProcs, &e.local_rank)) e.local_rank = e.rank % e.nproc_per_node;
    require(!nproc_given || e.local_rank < e.nproc_per_node, "LOCAL_RANK={} with NPROC_PER_NODE={}", e.local_rank,
            e.nproc_per_node);
    if (!node_rank_given) e.node_rank = e.rank / e.nproc_per_node;
  } else {
    require(!world_given || e.world_size == launched_world,
            "WORLD_SIZE={} without RANK, but NPROC_PER_NODE x NNODES = {}: set RANK too, or drop WORLD_SIZE",
            e.world_size, launched_world);
    e.world_size = launched_world;
    e.rank = e.node_rank * e.nproc_per_node;  // one process per node: it is rank NODE_RANK
    e.local_rank = 0;
  }
  require(e.master_port != 0 || (e.needs_launch() && e.nnodes == 1),
          "MASTER_PORT=0 (any free port) works only where this program starts every rank itself (NNODES=1, "
          "NPROC_PER_NODE>1): other nodes could not know the port");
  return e;
}

inline LaunchEnv read_launch_env() {
  return read_launch_env([](const char* n) -> const char* { return std::getenv(n); });
}

}  // namespace peft::dist
