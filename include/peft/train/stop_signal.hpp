// Ctrl-C (SIGINT) and SIGTERM (a scheduler's preemption) end a run at a step boundary instead of
// mid-step: the handler only records the signal; the trainer finishes the optimizer step it is
// in, saves a checkpoint, and the program exits 128 + the signal (130, 143), as a shell expects
// of a process the signal ended. The handler restores the default action, so a second Ctrl-C
// stops the process at once (the last published checkpoint stays whole: saves are atomic).
#pragma once
#include <signal.h>

#include <csignal>

namespace peft {

namespace detail {
inline volatile std::sig_atomic_t stop_signal_received = 0;
inline void record_stop_signal(int sig) {
  stop_signal_received = sig;
  std::signal(sig, SIG_DFL);
}
}  // namespace detail

// Programs call this once; the library never installs handlers by itself. interrupt_reads: a
// read blocked on a pipe or terminal returns (EINTR) instead of resuming, for programs that wait
// on stdin between pieces of work (chat) and must notice the signal there too.
inline void install_stop_signal_handlers(bool interrupt_reads = false) {
  struct sigaction action{};
  action.sa_handler = detail::record_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = interrupt_reads ? 0 : SA_RESTART;  // SA_RESTART: what std::signal gives on glibc
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
}

// The signal that asked the run to stop (SIGINT, SIGTERM), or 0.
inline int stop_signal() { return detail::stop_signal_received; }

inline const char* stop_signal_name(int sig) { return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal"; }

}  // namespace peft
