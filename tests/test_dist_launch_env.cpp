// The launch environment (dist/launch_env.hpp): what ms-swift's and torchrun's variables mean to
// a process, and that every inconsistent combination is an error naming the variable - before any
// process is started or any port is touched.
#include <catch2/catch.hpp>
#include <map>
#include <string>

#include "peft/dist/launch_env.hpp"

using namespace peft;
using Env = std::map<std::string, std::string>;

namespace {

dist::LaunchEnv read(const Env& e) {
  return dist::read_launch_env([&](const char* k) -> const char* {
    const auto it = e.find(k);
    return it == e.end() ? nullptr : it->second.c_str();
  });
}

std::string error_of(const Env& e) {
  try {
    read(e);
  } catch (const Error& x) {
    return x.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("no variables: one process at world size 1 and no communicator", "[dist]") {
  const auto e = read({});
  CHECK(e.world_size == 1);
  CHECK(e.rank == 0);
  CHECK_FALSE(e.needs_launch());
  CHECK_FALSE(e.distributed());
  CHECK(e.master_port == 29500);
}

TEST_CASE("NPROC_PER_NODE without RANK makes this process the launcher", "[dist]") {
  const auto e = read({{"NPROC_PER_NODE", "4"}, {"MASTER_PORT", "0"}});
  CHECK(e.needs_launch());
  CHECK(e.world_size == 4);
  const auto w = e.worker_env(3);
  CHECK(w[0] == std::pair<std::string, std::string>{"RANK", "3"});
  CHECK(w[1] == std::pair<std::string, std::string>{"LOCAL_RANK", "3"});
  CHECK(w[2] == std::pair<std::string, std::string>{"WORLD_SIZE", "4"});
}

TEST_CASE("two nodes: global ranks continue on node 1", "[dist]") {
  const auto e = read({{"NPROC_PER_NODE", "2"}, {"NNODES", "2"}, {"NODE_RANK", "1"}, {"MASTER_ADDR", "10.0.0.1"}});
  CHECK(e.world_size == 4);
  CHECK(e.worker_env(0)[0].second == "2");
  CHECK(e.worker_env(1)[0].second == "3");
  CHECK(e.master_addr == "10.0.0.1");
}

TEST_CASE("a worker started by torchrun-style variables", "[dist]") {
  const auto e = read({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"NPROC_PER_NODE", "2"},
                       {"NNODES", "2"}, {"MASTER_ADDR", "h0"}});
  CHECK_FALSE(e.needs_launch());
  CHECK(e.distributed());
  CHECK(e.rank == 3);
  CHECK(e.local_rank == 1);
  CHECK(e.node_rank == 1);
  // LOCAL_RANK defaults from RANK when only the world is given.
  CHECK(read({{"RANK", "1"}, {"WORLD_SIZE", "2"}}).local_rank == 1);
}

TEST_CASE("PEFT_DIST_BACKEND forces the distributed path at world size 1", "[dist]") {
  const auto e = read({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"PEFT_DIST_BACKEND", "nccl"}});
  CHECK(e.world_size == 1);
  CHECK(e.distributed());
  CHECK_FALSE(read({{"RANK", "0"}, {"WORLD_SIZE", "1"}}).distributed());
}

TEST_CASE("inconsistent launch variables are errors naming the variable", "[dist]") {
  CHECK_THAT(error_of({{"NNODES", "2"}, {"NODE_RANK", "2"}, {"MASTER_ADDR", "h"}}),
             Catch::Contains("NODE_RANK=2 with NNODES=2"));
  CHECK_THAT(error_of({{"NNODES", "2"}}), Catch::Contains("MASTER_ADDR"));
  CHECK_THAT(error_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}}), Catch::Contains("RANK=2 with WORLD_SIZE=2"));
  CHECK_THAT(error_of({{"RANK", "0"}, {"WORLD_SIZE", "3"}, {"NPROC_PER_NODE", "2"}}),
             Catch::Contains("WORLD_SIZE=3 but NPROC_PER_NODE x NNODES"));
  CHECK_THAT(error_of({{"WORLD_SIZE", "4"}, {"NPROC_PER_NODE", "2"}}), Catch::Contains("WORLD_SIZE=4 without RANK"));
  CHECK_THAT(error_of({{"MASTER_PORT", "70000"}}), Catch::Contains("MASTER_PORT=70000"));
  CHECK_THAT(error_of({{"MASTER_PORT", "29x"}}), Catch::Contains("MASTER_PORT='29x': not an integer"));
  CHECK_THAT(error_of({{"NPROC_PER_NODE", "0"}}), Catch::Contains("NPROC_PER_NODE=0"));
  CHECK_THAT(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "0"}}), Catch::Contains("MASTER_PORT=0"));
  CHECK_THAT(error_of({{"PEFT_DIST_TIMEOUT", "-1"}}), Catch::Contains("PEFT_DIST_TIMEOUT"));
  CHECK_THAT(error_of({{"PEFT_DIST_BACKEND", "gloo"}}), Catch::Contains("valid: auto, tcp, nccl, none"));
  CHECK_THAT(error_of({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "2"}, {"NPROC_PER_NODE", "2"}}),
             Catch::Contains("LOCAL_RANK=2"));
}
