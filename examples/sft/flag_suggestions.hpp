// "--learning_rat: unknown flag; did you mean --learning_rate?": a mistyped flag is answered with
// the closest real ones (edit distance), so a user fixes it without reading the whole --help.
// Every program's parser (examples/command_line.hpp) turns Boost's unknown_option into this.
#pragma once
#include <algorithm>
#include <boost/program_options.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace peft::examples {

// Levenshtein distance (insert, delete, substitute: 1 each).
inline std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The flags within a third of the typed name's length (at least 2 edits), nearest first, at
// most three; flags that start with what was typed count as near too (--lora → --lora_rank ...).
inline std::vector<std::string> nearest_flags(std::string_view typed, const std::vector<std::string>& flags) {
  while (!typed.empty() && typed.front() == '-') typed.remove_prefix(1);
  const std::size_t limit = std::max<std::size_t>(2, typed.size() / 3);
  std::vector<std::pair<std::size_t, std::string>> near;
  for (const auto& f : flags) {
    const std::size_t d = edit_distance(typed, f);
    if (d <= limit) near.emplace_back(d, f);
    else if (typed.size() >= 3 && f.starts_with(typed)) near.emplace_back(limit + 1, f);
  }
  std::stable_sort(near.begin(), near.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  std::vector<std::string> out;
  for (std::size_t i = 0; i < near.size() && i < 3; ++i) out.push_back("--" + near[i].second);
  return out;
}

// The message for an unknown flag of `d`.
inline std::string unknown_flag_message(const std::string& typed, const boost::program_options::options_description& d) {
  std::vector<std::string> names;
  for (const auto& o : d.options())
    if (!o->long_name().empty()) names.push_back(o->long_name());
  const auto near = nearest_flags(typed, names);
  std::string msg = typed + ": unknown flag";
  if (near.empty()) return msg + " (run with --help for the list of flags)";
  msg += "; did you mean " + near[0];
  for (std::size_t i = 1; i < near.size(); ++i) msg += (i + 1 == near.size() ? " or " : ", ") + near[i];
  return msg + "?";
}

}  // namespace peft::examples
