// ms-swift's flags as every program here (sft, infer, export, merge_lora) reads them, beyond its
// own: booleans as ms-swift's parser (HfArgumentParser) takes them, flags a recipe passes that
// change nothing here (accepted, reported), and flags ms-swift has that we do not implement
// (refused with what to do instead, rather than "unknown flag").
#pragma once
#include <algorithm>
#include <array>
#include <boost/program_options.hpp>
#include <cstdio>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "peft/core/error.hpp"

namespace peft::examples {

// A true/false flag: `--flag`, `--flag true`, `--flag false` (HfArgumentParser's bool: nargs='?',
// const=True). `--stream --max_new_tokens 5` used to read "--max_new_tokens" as the value.
inline boost::program_options::typed_value<std::string>* bool_flag(std::string* v) {
  return boost::program_options::value(v)->implicit_value("true");
}
inline boost::program_options::typed_value<std::string>* bool_flag(std::string* v, const char* default_value) {
  return bool_flag(v)->default_value(default_value);
}

// A flag that changes nothing here: any number of values, none too (a bare `--use_liger_kernel`
// took the next flag and its value as its own, and that flag was lost).
inline void add_accepted_unused(boost::program_options::options_description& d, const std::vector<std::string>& names) {
  for (const auto& f : names)
    d.add_options()(f.c_str(), boost::program_options::value<std::vector<std::string>>()->multitoken()->zero_tokens(),
                    "(accepted, not used)");
}
inline std::vector<std::string> given_flags(const boost::program_options::variables_map& vm,
                                            const std::vector<std::string>& names) {
  std::vector<std::string> out;
  for (const auto& f : names)
    if (vm.count(f)) out.push_back(f);
  return out;
}
// `out`: where the program's log goes (chat's stdout is its JSONL, so chat passes stderr).
inline void report_accepted_unused(std::FILE* out, const std::vector<std::string>& given) {
  if (!given.empty()) fmt::print(out, "[args] accepted but not used by this program: --{}\n", fmt::join(given, ", --"));
}

// ms-swift's other name for one of our flags (--tuner_type for --train_type, ...): one setting.
// Given, the alias sets it; the flag also given, with another value, is an error.
template <class T>
void take_alias(const boost::program_options::variables_map& vm, const char* alias, const T& alias_value,
                const char* flag, T& value) {
  require(!vm.count(flag) || vm[flag].defaulted() || value == alias_value,
          "--{} {} and --{} {} disagree (they are one setting)", alias, alias_value, flag, value);
  value = alias_value;
}

// An ms-swift flag this program knows and does not implement, and what to do instead. `ours`:
// values that ask for what this program does anyway (ms-swift's default: --use_dora false,
// --packing false, in every spelling parse_bool takes), accepted so a recipe that spells out a default runs; "" accepts the flag
// given with no value where that means an empty list (--modules_to_save alone).
struct UnsupportedFlag {
  const char* name;
  const char* hint;
  std::array<const char*, 4> ours = {};
};
inline void add_unsupported(boost::program_options::options_description& d, std::span<const UnsupportedFlag> flags) {
  for (const auto& f : flags)
    d.add_options()(f.name, boost::program_options::value<std::vector<std::string>>()->multitoken()->zero_tokens(),
                    "(ms-swift's; not implemented here)");
}
// Returns the flags given with one of their `ours` values, for the "[args] accepted" line.
inline std::vector<std::string> refuse_unsupported(const boost::program_options::variables_map& vm,
                                                   std::span<const UnsupportedFlag> flags) {
  std::vector<std::string> as_ours;
  for (const auto& f : flags) {
    if (!vm.count(f.name)) continue;
    const auto& values = vm[f.name].as<std::vector<std::string>>();
    const auto is_ours = [&](const std::string& v) {
      return std::any_of(f.ours.begin(), f.ours.end(), [&](const char* o) { return o && v == o; });
    };
    const bool accepted = values.empty() ? is_ours("") : values.size() == 1 && !values[0].empty() && is_ours(values[0]);
    const bool value_matters = f.ours[0] != nullptr;  // then the message names the value refused
    if (!accepted)
      fail("--{}{}: an ms-swift flag this program does not implement; {}", f.name,
           value_matters && !values.empty() ? fmt::format(" {}", fmt::join(values, " ")) : "", f.hint);
    as_ours.push_back(f.name);
  }
  return as_ours;
}

// --model_type / --template: ms-swift's names for Qwen2 and Qwen2.5 (qwen2, qwen2_5, qwen2_5_math,
// ...) are what this program runs; any other family is refused rather than run as Qwen2.
inline void require_qwen2_family(const boost::program_options::variables_map& vm) {
  for (const char* flag : {"model_type", "template"}) {
    if (!vm.count(flag)) continue;
    for (const auto& v : vm[flag].as<std::vector<std::string>>())
      require(std::string_view(v).starts_with("qwen2"),
              "--{} {}: this program runs Qwen2 / Qwen2.5 models only (ms-swift's qwen2, qwen2_5, ...)", flag, v);
  }
}

// --push_to_hub (an accepted flag, zero or more values): nothing here uploads, so anything but
// `false` is refused rather than silently not done. `folder`: what to upload by hand instead.
inline void refuse_push_to_hub(const boost::program_options::variables_map& vm, std::string_view folder) {
  if (!vm.count("push_to_hub")) return;
  const auto& values = vm["push_to_hub"].as<std::vector<std::string>>();
  for (const auto& v : values)
    require(v == "false" || v == "False", "--push_to_hub {}: this program uploads nothing; upload {} with "
            "`huggingface-cli upload` or `modelscope upload`", v, folder);
  if (values.empty())
    fail("--push_to_hub: this program uploads nothing; upload {} with `huggingface-cli upload` or `modelscope upload`",
         folder);
}

}  // namespace peft::examples
