// Command-line parsing every ms-swift-style program shares (sft, infer, export, merge_lora):
// Boost.Program_Options with errors turned into peft::Error (so main prints one line and exits 1),
// stray words refused, unknown flags answered with the nearest known one, and --help handled.
#pragma once
#include <boost/program_options.hpp>
#include <iostream>
#include <string>

#include "peft/core/error.hpp"
#include "peft/text/utf8.hpp"
#include "sft/flag_suggestions.hpp"

namespace peft::examples {

// Boost.Program_Options keeps a word that follows no flag as a positional value and store()
// drops it, so `--lora_rank 8 16` trained r=8 and a stray word vanished. Every such word is an
// error here, naming it and, when it follows a single-value flag, that flag.
inline void reject_stray_words(const boost::program_options::parsed_options& parsed) {
  const auto& opts = parsed.options;
  for (std::size_t i = 0; i < opts.size(); ++i) {
    if (opts[i].position_key < 0 || opts[i].value.empty()) continue;
    const std::string& word = opts[i].value.front();
    if (i > 0 && !opts[i - 1].string_key.empty() && opts[i - 1].position_key < 0 && !opts[i - 1].value.empty())
      fail("--{} takes one value, but '{}' follows '{}' (a single-value flag given several values; run with --help "
           "for the list of flags)", opts[i - 1].string_key, word, opts[i - 1].value.back());
    fail("unexpected argument '{}': every value follows its --flag (run with --help for the list of flags)", word);
  }
}

// A flag's text goes into prompts and training rows; invalid UTF-8 there used to be reported
// against the first dataset row or an offset in the templated prompt, not the flag.
inline void require_utf8_flag(const char* flag, const std::string& value) {
  if (const auto bad = peft::detail::first_invalid_utf8(value))
    fail("--{}: the value is not valid UTF-8 (byte {} of {})", flag, *bad + 1, value.size());
}

// Fills vm from argv; returns false when --help was asked for (and printed to help_out).
inline bool parse_command_line(int argc, const char* const* argv, const boost::program_options::options_description& d,
                               boost::program_options::variables_map& vm, std::ostream& help_out = std::cout) {
  namespace po = boost::program_options;
  try {
    const po::parsed_options parsed = po::parse_command_line(argc, argv, d);
    reject_stray_words(parsed);
    po::store(parsed, vm);
    po::notify(vm);
  } catch (const po::unknown_option& e) {
    fail("{}", unknown_flag_message(e.get_option_name(), d));
  } catch (const po::error& e) {
    fail("{} (run with --help for the list of flags)", e.what());
  }
  if (!vm.count("help")) return true;
  help_out << d << '\n';
  return false;
}

}  // namespace peft::examples
