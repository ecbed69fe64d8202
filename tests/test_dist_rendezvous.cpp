// The rendezvous and the CPU communicator over loopback, ranks as threads: the blob reaches every
// rank, sums are right and in rank order, and every failure - a rank that never comes, rank 0
// missing, a peer that closes its connection, ranks out of step - is an error within the timeout,
// not a hang. Timeouts here are 0.5-1 s; each failure case asserts it returned within a bound.
#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <thread>

#include "peft/dist/rendezvous.hpp"
#include "peft/dist/tcp_communicator.hpp"

using namespace peft;
using namespace peft::dist;

namespace {

// A listener on a free port (port 0), and the env every rank of a world reads.
struct Loopback {
  Socket listener = listen_on(0);
  int port() const {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    ::getsockname(listener.fd(), reinterpret_cast<sockaddr*>(&a), &len);
    return ntohs(a.sin_port);
  }
  LaunchEnv env(int rank, int world, double timeout_s) const {
    LaunchEnv e;
    e.rank = rank;
    e.world_size = world;
    e.master_port = port();
    e.timeout_s = timeout_s;
    e.rank_given = true;
    return e;
  }
};

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("three ranks meet and sum in rank order", "[dist]") {
  Loopback lb;
  const int port = lb.port();
  constexpr int W = 3;
  std::vector<std::future<std::vector<double>>> out;
  for (int r = 1; r < W; ++r)
    out.push_back(std::async(std::launch::async, [&, r] {
      LaunchEnv e;
      e.rank = r, e.world_size = W, e.master_port = port, e.timeout_s = 5;
      Rendezvous rv = rendezvous(e);
      std::vector<double> got(rv.blob.begin(), rv.blob.end());
      TcpCommunicator c(std::move(rv), 5);
      std::vector<float> f = {1.0f * r, 2.0f, r == 1 ? 1e8f : -1e8f};
      c.all_reduce_sum(f.data(), f.size());
      double d = 0.5 * r;
      d = c.all_reduce_sum(d);
      c.barrier();
      got.insert(got.end(), {f[0], f[1], f[2], d});
      return got;
    }));
  Rendezvous rv = rendezvous(lb.env(0, W, 5), {7, 8, 9}, std::move(lb.listener));
  TcpCommunicator c(std::move(rv), 5);
  std::vector<float> f = {0.0f, 2.0f, 1.0f};
  c.all_reduce_sum(f.data(), f.size());
  const double d = c.all_reduce_sum(0.0);
  c.barrier();
  // The third value tells the order: (1 + 1e8) - 1e8 is 0 in fp32 (1e8's ulp is 8), while any other
  // order gives 1; every rank must hold rank 0's result.
  const std::vector<double> expect = {7, 8, 9, 3, 6, 0, 1.5};
  CHECK(f[0] == 3.0f);
  CHECK(f[1] == 6.0f);
  CHECK(f[2] == 0.0f);
  CHECK(d == 1.5);
  for (auto& o : out) CHECK(o.get() == expect);
}

TEST_CASE("a rank that never comes: rank 0 stops within the timeout", "[dist]") {
  Loopback lb;
  const auto t0 = Clock::now();
  const auto msg = error_of([&] { rendezvous(lb.env(0, 2, 0.5), {}, std::move(lb.listener)); });
  CHECK_THAT(msg, Catch::Contains("timed out") && Catch::Contains("not every rank connected"));
  CHECK(seconds_since(t0) < 3.0);
}

TEST_CASE("rank 0 missing: the others give up within the timeout", "[dist]") {
  int port = 0;
  {
    Loopback lb;
    port = lb.port();
  }  // closed: nothing listens there now
  LaunchEnv e;
  e.rank = 1, e.world_size = 2, e.master_port = port, e.timeout_s = 0.5;
  const auto t0 = Clock::now();
  CHECK_THAT(error_of([&] { rendezvous(e); }), Catch::Contains("could not connect to rank 0"));
  CHECK(seconds_since(t0) < 3.0);
}

TEST_CASE("a peer that exits: the next all-reduce names it at once", "[dist]") {
  Loopback lb;
  const int port = lb.port();
  auto peer = std::async(std::launch::async, [&] {
    LaunchEnv e;
    e.rank = 1, e.world_size = 2, e.master_port = port, e.timeout_s = 5;
    Rendezvous rv = rendezvous(e);
    rv.root.close();  // as the kernel does for a process that died
  });
  TcpCommunicator c(rendezvous(lb.env(0, 2, 30), {}, std::move(lb.listener)), 30);
  peer.get();
  const auto t0 = Clock::now();
  float x = 1;
  CHECK_THAT(error_of([&] { c.all_reduce_sum(&x, 1); }), Catch::Contains("rank 1 closed the connection"));
  CHECK(seconds_since(t0) < 3.0);  // well before the 30 s timeout
}

TEST_CASE("a peer that hangs: the all-reduce times out naming it", "[dist]") {
  Loopback lb;
  const int port = lb.port();
  std::promise<void> release;
  auto peer = std::async(std::launch::async, [&, f = release.get_future()]() mutable {
    LaunchEnv e;
    e.rank = 1, e.world_size = 2, e.master_port = port, e.timeout_s = 5;
    Rendezvous rv = rendezvous(e);
    f.wait();  // alive, connected, silent
  });
  TcpCommunicator c(rendezvous(lb.env(0, 2, 0.5), {}, std::move(lb.listener)), 0.5);
  const auto t0 = Clock::now();
  float x = 1;
  CHECK_THAT(error_of([&] { c.all_reduce_sum(&x, 1); }), Catch::Contains("timed out waiting for rank 1"));
  CHECK(seconds_since(t0) < 3.0);
  release.set_value();
}

TEST_CASE("ranks out of step: a length mismatch is an error, not mixed data", "[dist]") {
  Loopback lb;
  const int port = lb.port();
  auto peer = std::async(std::launch::async, [&] {
    LaunchEnv e;
    e.rank = 1, e.world_size = 2, e.master_port = port, e.timeout_s = 2;
    TcpCommunicator c(rendezvous(e), 2);
    float x[2] = {1, 2};
    error_of([&] { c.all_reduce_sum(x, 2); });  // rank 0 gives up; this side then sees it close
  });
  TcpCommunicator c(rendezvous(lb.env(0, 2, 2), {}, std::move(lb.listener)), 2);
  float x = 1;
  CHECK_THAT(error_of([&] { c.all_reduce_sum(&x, 1); }), Catch::Contains("out of step"));
  c = TcpCommunicator(Rendezvous{}, 1);  // close rank 0's side so the peer returns
  peer.get();
}
