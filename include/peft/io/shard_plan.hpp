// How a merged model is cut into safetensors files when ms-swift's --max_shard_size is given, so
// the folder is laid out as transformers' save_pretrained lays it out (huggingface_hub's
// split_state_dict_into_shards_factory): the file names, index and size limit loaders and servers
// expect. The walk order is the caller's (a merge walks the base's files, transformers the model's
// parameters), so the cut points can differ from ms-swift's own files.
//   - The tensors are walked once, in the order given; a tensor's size is numel x the size of the
//     dtype written. One larger than the maximum goes alone into a shard of its own, which is
//     appended to the list at once, so it is numbered before the shard still being filled (the
//     hub does this; its shards are not in walk order). Otherwise the shard being filled is closed
//     when the tensor would take it past the maximum. No packing: sizes [6, 6, 2, 6, 2, 2] under 10
//     are [6], [6, 2], [6, 2, 2], as the hub splits them, not the tightest split.
//   - One shard is `model.safetensors` with no index; N are `model-00001-of-0000N.safetensors`
//     (5 digits, 1-based) with `model.safetensors.index.json`.
// The size is read as transformers' convert_file_size_to_int reads it ("5GB", "500MiB"), or as a
// bare byte count; anything else, or zero, is refused here before anything is written.
#pragma once
#include <cctype>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "peft/core/error.hpp"

namespace peft {

// transformers' convert_file_size_to_int, plus a bare positive integer (bytes). The unit is matched
// case-insensitively: GiB / MiB / KiB are powers of 2, GB / MB / KB powers of 10, and for those
// three a final lowercase "b" (5Gb, 5gb) means bits, a byte count an eighth of the size (rounded
// down), as transformers reads it.
inline std::int64_t parse_max_shard_size(std::string_view text) {
  const auto refuse = [&](std::string_view why) -> std::int64_t {
    fail("--max_shard_size '{}': {}; give a positive whole number followed by GB, MB or KB (powers of 10), GiB, MiB "
         "or KiB (powers of 2), or nothing (bytes), e.g. 5GB, as transformers' save_pretrained reads it",
         text, why);
  };
  const auto ends_with_unit = [&](std::string_view unit) {
    if (text.size() < unit.size()) return false;
    const std::string_view tail = text.substr(text.size() - unit.size());
    for (std::size_t i = 0; i < unit.size(); ++i)
      if (std::toupper(static_cast<unsigned char>(tail[i])) != unit[i]) return false;
    return true;
  };
  struct Unit {
    std::string_view name;
    std::int64_t bytes;
    bool bits_when_lowercase_b;
  };
  static constexpr Unit kUnits[] = {{"GIB", std::int64_t{1} << 30, false}, {"MIB", std::int64_t{1} << 20, false},
                                    {"KIB", std::int64_t{1} << 10, false}, {"GB", 1'000'000'000, true},
                                    {"MB", 1'000'000, true},                {"KB", 1'000, true}};
  Unit unit{"", 1, false};
  for (const Unit& u : kUnits)
    if (ends_with_unit(u.name)) {
      unit = u;
      break;
    }
  const std::string_view digits = text.substr(0, text.size() - unit.name.size());
  if (digits.empty()) return refuse(text.empty() ? "empty" : "not a size");
  std::int64_t n = 0;
  for (const char c : digits) {
    if (c < '0' || c > '9') return refuse("not a size");
    if (n > (std::numeric_limits<std::int64_t>::max() - (c - '0')) / 10) return refuse("too large");
    n = n * 10 + (c - '0');
  }
  if (n > std::numeric_limits<std::int64_t>::max() / unit.bytes) return refuse("too large");
  n *= unit.bytes;
  if (unit.bits_when_lowercase_b && text.back() == 'b') n /= 8;
  if (n <= 0) return refuse("zero bytes");
  return n;
}

// The file name of shard `i` (0-based) of `count`, as save_pretrained names it.
inline std::string shard_file_name(std::size_t i, std::size_t count) {
  if (count == 1) return "model.safetensors";
  return fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, count);
}

// Does a file of this name belong to a merge's own output (any --max_shard_size)? Such a file in an
// --output_dir is one a previous merge wrote, so --overwrite may replace it.
inline bool is_shard_output_name(std::string_view name) {
  if (name == "model.safetensors" || name == "model.safetensors.index.json") return true;
  const auto number = [&](std::string_view& rest) {  // save_pretrained's {:05d}: 5 digits or more
    std::size_t n = 0;
    while (n < rest.size() && rest[n] >= '0' && rest[n] <= '9') ++n;
    rest.remove_prefix(n);
    return n >= 5;
  };
  const auto take = [&](std::string_view& rest, std::string_view word) {
    if (!rest.starts_with(word)) return false;
    rest.remove_prefix(word.size());
    return true;
  };
  std::string_view rest = name;
  return take(rest, "model-") && number(rest) && take(rest, "-of-") && number(rest) && rest == ".safetensors";
}

struct ShardPlan {
  std::vector<std::vector<std::string>> shards;  // the tensors of each file, in file-number order
  std::int64_t total_size = 0;                   // the index's total_size: every tensor's bytes
  std::string file_name(std::size_t i) const { return shard_file_name(i, shards.size()); }
};

// `tensors`: (name, bytes as written) in walk order. See the top of this file.
inline ShardPlan plan_shards(std::span<const std::pair<std::string, std::int64_t>> tensors, std::int64_t max_size) {
  require(max_size > 0, "plan_shards: the maximum shard size must be positive, not {}", max_size);
  ShardPlan plan;
  std::vector<std::string> current;
  std::int64_t current_size = 0;
  for (const auto& [name, size] : tensors) {
    plan.total_size += size;
    if (size > max_size) {
      plan.shards.push_back({name});
      continue;
    }
    if (current_size + size > max_size) {
      plan.shards.push_back(std::move(current));
      current.clear();
      current_size = 0;
    }
    current.push_back(name);
    current_size += size;
  }
  if (!current.empty()) plan.shards.push_back(std::move(current));
  return plan;
}

}  // namespace peft
