// Blocking TCP with deadlines, what the rendezvous and the CPU communicator stand on. Every wait
// (accept, connect, send, recv) is a poll() bounded by a deadline, so a peer that died or hangs
// becomes an error naming the peer and the wait, never a process stuck in recv(). A peer that
// died is seen at once (the kernel closes its socket: recv returns 0 / ECONNRESET).
#pragma once
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <utility>

#include "peft/core/error.hpp"

namespace peft::dist {

using Clock = std::chrono::steady_clock;

inline Clock::time_point deadline_after(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd, std::string peer = {}) : fd_(fd), peer_(std::move(peer)) {}
  Socket(Socket&& o) noexcept : fd_(std::exchange(o.fd_, -1)), peer_(std::move(o.peer_)) {}
  Socket& operator=(Socket&& o) noexcept {
    if (this != &o) {
      close();
      fd_ = std::exchange(o.fd_, -1);
      peer_ = std::move(o.peer_);
    }
    return *this;
  }
  ~Socket() { close(); }
  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  const std::string& peer() const { return peer_; }
  void set_peer(std::string p) { peer_ = std::move(p); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  void send_all(const void* data, std::size_t n, Clock::time_point deadline, const char* what) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      wait(POLLOUT, deadline, what);
      const ssize_t k = ::send(fd_, p, n, MSG_NOSIGNAL);
      if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      require(k > 0, "{}: sending to {} failed: {} (did it exit?)", what, peer_, std::strerror(errno));
      p += k;
      n -= static_cast<std::size_t>(k);
    }
  }
  void recv_all(void* data, std::size_t n, Clock::time_point deadline, const char* what) {
    char* p = static_cast<char*>(data);
    while (n > 0) {
      wait(POLLIN, deadline, what);
      const ssize_t k = ::recv(fd_, p, n, 0);
      if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      require(k != 0, "{}: {} closed the connection (the process exited or died)", what, peer_);
      require(k > 0, "{}: receiving from {} failed: {}", what, peer_, std::strerror(errno));
      p += k;
      n -= static_cast<std::size_t>(k);
    }
  }

 private:
  void wait(short events, Clock::time_point deadline, const char* what) const {
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      require(left > 0, "{}: timed out waiting for {} (PEFT_DIST_TIMEOUT; is it alive?)", what, peer_);
      pollfd p{fd_, events, 0};
      const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
      if (r < 0 && errno == EINTR) continue;
      require(r >= 0, "{}: poll failed: {}", what, std::strerror(errno));
      if (r > 0) return;  // ready, or an error/hang-up the next send/recv reports
    }
  }

  int fd_ = -1;
  std::string peer_;
};

// IPv4 address of `host` (a dotted quad or a name).
inline sockaddr_in resolve(const std::string& host, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) == 1) return a;
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
  require(rc == 0 && res, "MASTER_ADDR={}: cannot resolve: {}", host, ::gai_strerror(rc));
  a.sin_addr = reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr;
  ::freeaddrinfo(res);
  return a;
}

inline void tune(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// A listening socket on all interfaces at `port` (rank 0 of the rendezvous).
inline Socket listen_on(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  require(fd >= 0, "socket(): {}", std::strerror(errno));
  Socket s(fd, "listener");
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  require(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0,
          "MASTER_PORT={}: cannot listen there: {} (another run on that port? pick a free MASTER_PORT)", port,
          std::strerror(errno));
  require(::listen(fd, 128) == 0, "listen on port {}: {}", port, std::strerror(errno));
  return s;
}

inline Socket accept_one(Socket& listener, Clock::time_point deadline, const char* what) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    require(left > 0, "{}: timed out (PEFT_DIST_TIMEOUT): not every rank connected", what);
    pollfd p{listener.fd(), POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (r <= 0) continue;
    const int fd = ::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    tune(fd);
    return Socket(fd, "a peer");
  }
}

// Connects to host:port, retrying (rank 0 may not listen yet) until the deadline.
inline Socket connect_to(const std::string& host, int port, Clock::time_point deadline, const char* what) {
  const sockaddr_in a = resolve(host, port);
  std::string last = "no attempt";
  while (Clock::now() < deadline) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    require(fd >= 0, "socket(): {}", std::strerror(errno));
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0) {
      tune(fd);
      return Socket(fd, fmt::format("rank 0 ({}:{})", host, port));
    }
    last = std::strerror(errno);
    ::close(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  fail("{}: could not connect to rank 0 at {}:{} before the timeout (PEFT_DIST_TIMEOUT): {}", what, host, port, last);
}

}  // namespace peft::dist
