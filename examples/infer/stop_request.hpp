// Ctrl-C and SIGTERM in chat and export: the handler only records the signal
// (peft/train/stop_signal.hpp); the program looks at safe points (between tokens, questions and
// phases) and unwinds with StopRequested. Unwinding runs the destructors, so a TempDir removes the
// merged model it holds and chat's --result_path publishes the answers it has, before the program
// exits 128 + the signal (130, 143) as a shell expects. A second signal ends the process at once.
#pragma once
#include "peft/train/stop_signal.hpp"

namespace peft::examples {

// Not a std::exception: the handlers on the way that report errors and carry on (a stdin line
// that cannot be answered) must not take a stop for one.
struct StopRequested {
  int signal;
};

inline void stop_if_signalled() {
  if (const int sig = stop_signal()) throw StopRequested{sig};
}

}  // namespace peft::examples
