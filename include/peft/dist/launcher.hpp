// `NPROC_PER_NODE=2 identity_finetune ...` without a torchrun in front: the program becomes its own
// launcher. It re-executes itself (/proc/self/exe, same argv) once per local GPU with RANK,
// LOCAL_RANK, WORLD_SIZE (and the rest, LaunchEnv::worker_env) set, forwards SIGINT/SIGTERM/SIGHUP
// to them, and waits. The first worker that exits non-zero or dies by a signal stops the run: the
// launcher says which rank and how, sends the others SIGTERM (SIGKILL after a grace period, a rank
// stuck in a collective may not react), and exits non-zero - the behaviour of torchrun's elastic
// agent, without the restarts. Workers die with the launcher (PR_SET_PDEATHSIG), so a killed
// launcher leaves no orphans holding GPUs.
//
// Node 0's launcher binds MASTER_PORT before starting anyone and hands the socket to rank 0
// (dist/rendezvous.hpp): a busy port is one clear error, and MASTER_PORT=0 takes any free port.
#pragma once
#include <fcntl.h>
#include <fmt/ranges.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "peft/dist/launch_env.hpp"
#include "peft/dist/socket.hpp"

namespace peft::dist {

namespace detail {
inline volatile sig_atomic_t g_forwarded_signal = 0;
inline pid_t g_workers[256];
inline volatile sig_atomic_t g_worker_count = 0;
inline void forward_signal(int sig) {
  g_forwarded_signal = sig;
  for (int i = 0; i < g_worker_count; ++i)
    if (g_workers[i] > 0) ::kill(g_workers[i], sig);
}

inline std::string describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int s = WTERMSIG(status);
    return fmt::format("died by signal {} ({})", s, ::strsignal(s) ? ::strsignal(s) : "?");
  }
  return "stopped";
}
}  // namespace detail

// Grace period between SIGTERM and SIGKILL for the surviving workers of a failed run.
inline constexpr double kStopGraceSeconds = 10;

// Starts env.nproc_per_node workers running `argv` and returns the launcher's exit status.
inline int launch_workers(const LaunchEnv& env, char** argv) {
  require(env.nproc_per_node <= 256, "NPROC_PER_NODE={}: at most 256 local workers", env.nproc_per_node);
  LaunchEnv w = env;
  Socket listener;
  if (env.node_rank == 0) {
    listener = listen_on(env.master_port);
    sockaddr_in a{};
    socklen_t len = sizeof a;
    require(::getsockname(listener.fd(), reinterpret_cast<sockaddr*>(&a), &len) == 0, "getsockname: {}",
            std::strerror(errno));
    w.master_port = ntohs(a.sin_port);
  }
  std::fflush(stdout);
  std::fflush(stderr);
  fmt::print(stderr, "[dist] launching {} workers on node {}/{} (world size {}, rendezvous {}:{})\n",
             env.nproc_per_node, env.node_rank, env.nnodes, env.world_size, w.master_addr, w.master_port);

  struct sigaction sa{};
  sa.sa_handler = detail::forward_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);

  const pid_t launcher = ::getpid();
  std::vector<pid_t> pids(static_cast<std::size_t>(env.nproc_per_node), -1);
  for (int i = 0; i < env.nproc_per_node; ++i) {
    const pid_t pid = ::fork();
    require(pid >= 0, "fork: {}", std::strerror(errno));
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != launcher) ::_exit(1);  // the launcher died before prctl took effect
      struct sigaction dfl{};
      dfl.sa_handler = SIG_DFL;
      for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &dfl, nullptr);
      for (const auto& [k, v] : w.worker_env(i)) ::setenv(k.c_str(), v.c_str(), 1);
      if (i == 0 && listener.valid()) {
        ::fcntl(listener.fd(), F_SETFD, 0);  // rank 0 inherits the bound socket
        ::setenv("PEFT_DIST_LISTEN_FD", std::to_string(listener.fd()).c_str(), 1);
      } else {
        ::unsetenv("PEFT_DIST_LISTEN_FD");
      }
      ::execv("/proc/self/exe", argv);
      std::fprintf(stderr, "[dist] exec /proc/self/exe failed: %s\n", std::strerror(errno));
      ::_exit(127);
    }
    pids[static_cast<std::size_t>(i)] = pid;
    detail::g_workers[i] = pid;
    detail::g_worker_count = i + 1;
  }
  listener.close();

  auto rank_of = [&](pid_t pid) {
    for (int i = 0; i < env.nproc_per_node; ++i)
      if (pids[static_cast<std::size_t>(i)] == pid) return env.node_rank * env.nproc_per_node + i;
    return -1;
  };
  auto forget = [&](pid_t pid) {
    for (int i = 0; i < env.nproc_per_node; ++i)
      if (pids[static_cast<std::size_t>(i)] == pid) pids[static_cast<std::size_t>(i)] = detail::g_workers[i] = -1;
  };
  // Failed ranks in the order they were reaped, plus how. A rank that died (a signal) is more
  // likely the cause than one that exited with an error because its peer vanished, so the summary
  // names the signalled ones first; ranks stopped by our own SIGTERM are not failures.
  std::vector<std::pair<int, int>> failed;  // rank, wait status
  int running = env.nproc_per_node;
  bool stopping = false;
  auto reap = [&](int flags) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, flags);
    if (pid <= 0 || rank_of(pid) < 0) return pid;
    const int rank = rank_of(pid);
    forget(pid);
    --running;
    const bool stopped_by_us = stopping && WIFSIGNALED(status) && (WTERMSIG(status) == SIGTERM || WTERMSIG(status) == SIGKILL);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0) && !stopped_by_us) {
      failed.emplace_back(rank, status);
      fmt::print(stderr, "[dist] rank {} (pid {}) {}\n", rank, pid, detail::describe(status));
    }
    return pid;
  };
  while (running > 0 && failed.empty()) {
    if (reap(0) < 0 && errno != EINTR) break;
  }
  if (running > 0) {
    // Let a failure's consequences show (the peer that noticed exits within moments), then stop
    // the rest: SIGTERM, SIGKILL after the grace period.
    const auto settle = deadline_after(0.5);
    while (running > 0 && Clock::now() < settle)
      if (reap(WNOHANG) <= 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    stopping = true;
    for (pid_t p : pids)
      if (p > 0) ::kill(p, SIGTERM);
    const auto deadline = deadline_after(kStopGraceSeconds);
    while (running > 0) {
      const pid_t pid = reap(WNOHANG);
      if (pid < 0 && errno != EINTR) break;
      if (pid > 0) continue;
      if (Clock::now() > deadline)
        for (pid_t p : pids)
          if (p > 0) ::kill(p, SIGKILL);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  if (detail::g_forwarded_signal != 0) {
    fmt::print(stderr, "[dist] stopped by signal {}\n", static_cast<int>(detail::g_forwarded_signal));
    return 128 + detail::g_forwarded_signal;
  }
  if (failed.empty()) return 0;
  std::stable_sort(failed.begin(), failed.end(),
                   [](const auto& a, const auto& b) { return WIFSIGNALED(a.second) && !WIFSIGNALED(b.second); });
  std::vector<std::string> what;
  for (const auto& [rank, status] : failed) what.push_back(fmt::format("rank {} {}", rank, detail::describe(status)));
  fmt::print(stderr, "[dist] the run failed: {}{}\n", fmt::join(what, "; "), stopping ? "; the other ranks were stopped" : "");
  return 1;
}

}  // namespace peft::dist
