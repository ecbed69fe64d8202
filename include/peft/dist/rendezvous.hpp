// The rendezvous: how W processes that know only MASTER_ADDR:MASTER_PORT find each other. Rank 0
// listens there; every other rank connects (retrying until PEFT_DIST_TIMEOUT, since rank 0 may
// start later), says who it is, and receives a blob from rank 0 - for NCCL its ncclUniqueId, which
// NCCL needs on every rank before it can build its own (faster) transport. The connections stay
// open: the CPU communicator (dist/tcp_communicator.hpp) runs over them, and a closed one is how a
// dead peer shows up.
//
// When our launcher (dist/launcher.hpp) started the ranks it already bound the port (so MASTER_PORT=0
// can mean "any free port" and a busy port is reported before any worker starts) and hands rank 0
// the listening socket as file descriptor PEFT_DIST_LISTEN_FD.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "peft/dist/launch_env.hpp"
#include "peft/dist/socket.hpp"

namespace peft::dist {

inline constexpr std::uint32_t kRendezvousMagic = 0x70656674;  // "peft"

struct Rendezvous {
  int rank = 0, world = 1;
  std::vector<Socket> peers;  // rank 0: peers[r] is rank r's connection (peers[0] unused)
  Socket root;                // ranks > 0: the connection to rank 0
  std::vector<std::uint8_t> blob;
};

struct Hello {
  std::uint32_t magic;
  std::int32_t rank, world;
};

inline Socket rendezvous_listener(const LaunchEnv& env) {
  if (const char* fd = std::getenv("PEFT_DIST_LISTEN_FD"); fd && *fd) return Socket(std::atoi(fd), "listener");
  return listen_on(env.master_port);
}

// Rank 0 passes the blob every rank receives; the others pass nothing. `listener`: a socket rank 0
// already bound (tests: port 0), else PEFT_DIST_LISTEN_FD's or a new one on MASTER_PORT.
inline Rendezvous rendezvous(const LaunchEnv& env, const std::vector<std::uint8_t>& blob = {}, Socket listener = {}) {
  Rendezvous rv;
  rv.rank = env.rank;
  rv.world = env.world_size;
  const auto deadline = deadline_after(env.timeout_s);
  if (env.rank == 0) {
    if (!listener.valid()) listener = rendezvous_listener(env);
    rv.peers.resize(static_cast<std::size_t>(env.world_size));
    for (int i = 1; i < env.world_size; ++i) {
      Socket s = accept_one(listener, deadline, "rendezvous (rank 0 waiting for the other ranks)");
      Hello h{};
      s.recv_all(&h, sizeof h, deadline, "rendezvous hello");
      require(h.magic == kRendezvousMagic, "rendezvous on port {}: a connection that is not a peft rank",
              env.master_port);
      require(h.world == env.world_size, "rendezvous: rank {} has WORLD_SIZE {}, rank 0 has {}", h.rank, h.world,
              env.world_size);
      require(h.rank > 0 && h.rank < env.world_size, "rendezvous: a peer calls itself rank {}", h.rank);
      auto& slot = rv.peers[static_cast<std::size_t>(h.rank)];
      require(!slot.valid(), "rendezvous: two processes call themselves rank {}", h.rank);
      s.set_peer(fmt::format("rank {}", h.rank));
      slot = std::move(s);
    }
    rv.blob = blob;
    const auto n = static_cast<std::uint32_t>(blob.size());
    for (int i = 1; i < env.world_size; ++i) {
      auto& s = rv.peers[static_cast<std::size_t>(i)];
      s.send_all(&n, sizeof n, deadline, "rendezvous blob");
      if (n) s.send_all(blob.data(), n, deadline, "rendezvous blob");
    }
  } else {
    rv.root = connect_to(env.master_addr, env.master_port, deadline,
                         fmt::format("rendezvous (rank {})", env.rank).c_str());
    const Hello h{kRendezvousMagic, env.rank, env.world_size};
    rv.root.send_all(&h, sizeof h, deadline, "rendezvous hello");
    std::uint32_t n = 0;
    rv.root.recv_all(&n, sizeof n, deadline, "rendezvous (waiting for rank 0 to hear from every rank)");
    rv.blob.resize(n);
    if (n) rv.root.recv_all(rv.blob.data(), n, deadline, "rendezvous blob");
  }
  return rv;
}

}  // namespace peft::dist
