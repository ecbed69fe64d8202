// How chat reads a line on a terminal: through libedit's readline (arrow keys, editing, history
// within the session) where the program was built with it (PEFT_HAVE_LIBEDIT: chat, and chat_cuda
// with libedit linked static), else plain std::getline. Pipes never come here: chat reads
// them with std::getline, so scripts see no prompt or terminal control codes.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>

#include <fmt/format.h>

#ifdef PEFT_HAVE_LIBEDIT
#include <editline/readline.h>
#endif

namespace peft::examples {

// The next line typed after `prompt`; nullopt at end of input (Ctrl-D). Non-empty lines enter the
// history, so the up arrow brings them back.
inline std::optional<std::string> read_line(const std::string& prompt) {
#ifdef PEFT_HAVE_LIBEDIT
  char* raw = ::readline(prompt.c_str());
  if (raw == nullptr) return std::nullopt;
  std::string line(raw);
  std::free(raw);
  if (!line.empty()) ::add_history(line.c_str());
  return line;
#else
  fmt::print("{}", prompt);
  std::fflush(stdout);
  std::string line;
  if (!std::getline(std::cin, line)) return std::nullopt;
  return line;
#endif
}

// ms-swift's multi-line mode: lines are joined with newlines until one ends with '#', which ends
// the message (the '#' itself dropped). nullopt at end of input.
inline std::optional<std::string> read_multi_line(const std::string& prompt) {
  std::string text;
  for (std::string p = prompt;; p = "") {
    const auto line = read_line(p);
    if (!line) return std::nullopt;
    if (!line->empty() && line->back() == '#') return text + line->substr(0, line->size() - 1);
    text += *line + "\n";
  }
}

}  // namespace peft::examples
