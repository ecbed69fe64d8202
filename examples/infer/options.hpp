// Command-line parsing the inference programs (chat, merge_lora) share: Boost.Program_Options with
// errors turned into peft::Error (so main prints one line and exits 1) and --help handled.
#pragma once
#include <boost/program_options.hpp>
#include <iostream>

#include "peft/core/error.hpp"
#include "../sft/flag_suggestions.hpp"

namespace peft::examples {

// Fills vm from argv; returns false when --help was asked for (and printed).
inline bool parse_command_line(int argc, char** argv, const boost::program_options::options_description& d,
                               boost::program_options::variables_map& vm) {
  namespace po = boost::program_options;
  try {
    po::store(po::parse_command_line(argc, argv, d), vm);
    po::notify(vm);
  } catch (const po::unknown_option& e) {
    fail("{}", unknown_flag_message(e.get_option_name(), d));
  } catch (const po::error& e) {
    fail("{} (run with --help for the list of flags)", e.what());
  }
  if (!vm.count("help")) return true;
  std::cout << d << '\n';
  return false;
}

}  // namespace peft::examples
