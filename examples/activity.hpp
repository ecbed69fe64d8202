// What a program is doing right now, for the one error that carries no context of its own:
// std::bad_alloc. Every size that comes from input is checked before it is allocated, but should
// memory still run out (a model too large for this machine), main() says during what, and which
// knobs make it smaller, instead of a bare "std::bad_alloc".
#pragma once
#include <fmt/format.h>

#include <new>
#include <string>

namespace peft::examples {

inline std::string& current_activity() {
  static std::string what = "starting";
  return what;
}

// Not restored on scope exit: the message is wanted after the stack has unwound to main().
inline void now_doing(std::string what) { current_activity() = std::move(what); }

inline std::string out_of_memory_message() {
  return fmt::format("out of memory (std::bad_alloc) while {}: the model, --max_length, the batch size or the "
                     "dataset is too large for this machine's memory", current_activity());
}

}  // namespace peft::examples
