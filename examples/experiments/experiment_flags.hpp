// The experiment programs' flags (policy_experiments, policy_experiments_cuda): how many timed
// steps per row and how many tokens a step trains on, plus --help. Parsed once here so both
// programs answer the same way to a bad flag.
#pragma once
#include <boost/program_options.hpp>

#include <iostream>
#include <optional>
#include <string>

#include "peft/core/error.hpp"

namespace peft::examples {

struct ExperimentFlags {
  int steps = 5;
  int tokens = 256;
};

// Empty when --help was asked (the help has been printed).
inline std::optional<ExperimentFlags> parse_experiment_flags(int argc, char** argv, const std::string& title,
                                                             ExperimentFlags defaults, const char* tokens_help) {
  namespace po = boost::program_options;
  ExperimentFlags f = defaults;
  po::options_description d(title);
  d.add_options()("help,h", "show this help")("steps", po::value(&f.steps)->default_value(defaults.steps),
                                              "timed steps per row (median)")(
      "tokens", po::value(&f.tokens)->default_value(defaults.tokens), tokens_help);
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, d), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    fail("{} (run with --help for the list of flags)", e.what());
  }
  if (vm.count("help")) {
    std::cout << d << '\n';
    return std::nullopt;
  }
  require(f.steps > 0, "--steps must be positive (got {})", f.steps);
  require(f.tokens >= 8, "--tokens must be at least 8 (got {})", f.tokens);
  return f;
}

}  // namespace peft::examples
