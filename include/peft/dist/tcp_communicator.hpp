// The CPU backend's transport (torch's gloo, for our purposes): all-reduce over the rendezvous's
// TCP connections, a star through rank 0. Rank 0 receives every rank's buffer in rank order, sums
// in that order (so the result does not depend on arrival times) and sends the sum back. That is
// 2(W-1) buffer transfers through one node - fine for LoRA's few MB on a CPU run and the few ranks
// a CPU run has; GPU runs use NCCL's rings instead. Every wait is bounded by PEFT_DIST_TIMEOUT and
// a peer that died shows up as a closed connection at once (dist/socket.hpp), so a dead or hung
// rank ends the run with an error naming it.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "peft/dist/communicator.hpp"
#include "peft/dist/rendezvous.hpp"

namespace peft::dist {

class TcpCommunicator final : public Communicator {
 public:
  TcpCommunicator(Rendezvous rv, double timeout_s) : rv_(std::move(rv)), timeout_s_(timeout_s) {}

  int rank() const override { return rv_.rank; }
  int world_size() const override { return rv_.world; }
  const char* name() const override { return "tcp"; }
  void all_reduce_sum(float* x, std::size_t n) override { reduce(x, n, 1); }
  void all_reduce_sum(double* x, std::size_t n) override { reduce(x, n, 2); }
  void barrier() override {
    double one = 1;
    reduce(&one, 1, 3);
  }
  using Communicator::all_reduce_sum;

 private:
  // A header before each message: what it is and how long, so ranks that disagree about the
  // sequence of collectives (a bug, or a rank that skipped a step) fail loudly instead of mixing data.
  struct Header {
    std::uint32_t kind;
    std::uint32_t seq;
    std::uint64_t n;
  };

  template <class T>
  void reduce(T* x, std::size_t n, std::uint32_t kind) {
    if (rv_.world == 1) return;
    const auto deadline = deadline_after(timeout_s_);
    const Header mine{kind, seq_++, n};
    if (rv_.rank == 0) {
      tmp_.resize(n * sizeof(T));
      for (int r = 1; r < rv_.world; ++r) {
        Socket& s = rv_.peers[static_cast<std::size_t>(r)];
        Header h{};
        s.recv_all(&h, sizeof h, deadline, "all-reduce");
        require(h.kind == mine.kind && h.seq == mine.seq && h.n == mine.n,
                "all-reduce #{}: rank {} sent collective #{} (kind {}, {} values), rank 0 expected kind {} with {} "
                "values: the ranks are out of step", mine.seq, r, h.seq, h.kind, h.n, mine.kind, n);
        s.recv_all(tmp_.data(), n * sizeof(T), deadline, "all-reduce");
        const T* y = reinterpret_cast<const T*>(tmp_.data());
        for (std::size_t i = 0; i < n; ++i) x[i] += y[i];
      }
      for (int r = 1; r < rv_.world; ++r) rv_.peers[static_cast<std::size_t>(r)].send_all(x, n * sizeof(T), deadline, "all-reduce");
    } else {
      rv_.root.send_all(&mine, sizeof mine, deadline, "all-reduce");
      rv_.root.send_all(x, n * sizeof(T), deadline, "all-reduce");
      rv_.root.recv_all(x, n * sizeof(T), deadline, "all-reduce (waiting for the sum from rank 0)");
    }
  }

  Rendezvous rv_;
  double timeout_s_;
  std::uint32_t seq_ = 0;
  std::vector<char> tmp_;
};

}  // namespace peft::dist
