// Reading JSON that a user handed us (config.json, adapter_config.json, index files, headers).
// Every error names the source and, for syntax errors, the line and column, and field access is
// typed: a config with "hidden_size": "64" fails with the file and the field, instead of a
// nlohmann type_error that names neither.
#pragma once
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

#include "peft/core/error.hpp"

namespace peft {

namespace detail {

inline std::string json_type_name(const nlohmann::json& v) {
  if (v.is_number_integer()) return "integer";
  if (v.is_number_float()) return "number";
  return v.type_name();
}

// nlohmann's messages start with "[json.exception.parse_error.101] "; the rest (with line and
// column) is what a user needs.
inline std::string strip_json_exception_prefix(const char* what) {
  std::string_view s(what);
  if (!s.empty() && s.front() == '[') {
    if (auto end = s.find("] "); end != std::string_view::npos) s.remove_prefix(end + 2);
  }
  return std::string(s);
}

}  // namespace detail

// Reads a whole file as bytes into a string; errors name the file and the OS reason.
inline std::string read_text_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail("{}: is a directory, expected a file", path.string());
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail("{}: read error", path.string());
  return std::move(buffer).str();
}

// Parses JSON text; `source` names where it came from ("config.json", "x.safetensors header").
inline nlohmann::json parse_json(std::string_view text, std::string_view source) {
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: invalid JSON: {}", source, detail::strip_json_exception_prefix(e.what()));
  } catch (const nlohmann::json::exception& e) {  // out_of_range: a number like 1e400 overflows a double
    fail("{}: invalid JSON: {}", source, detail::strip_json_exception_prefix(e.what()));
  }
}

inline nlohmann::json read_json_file(const std::filesystem::path& path) {
  return parse_json(read_text_file(path), path.string());
}

// ---------------------------------------------------------------------------------------------
// Typed field access. A field that is absent or null counts as missing, as HF treats null.

inline const nlohmann::json* find_field(const nlohmann::json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

// Converts one JSON value to T (std::int64_t, double, bool, std::string), naming source and
// field when the JSON type does not fit.
template <class T>
T json_value_as(const nlohmann::json& v, std::string_view source, std::string_view field) {
  if constexpr (std::is_same_v<T, bool>) {
    require(v.is_boolean(), "{}: field '{}' must be true or false, got {} {}", source, field,
            detail::json_type_name(v), v.dump());
    return v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    require(v.is_number_integer(), "{}: field '{}' must be an integer, got {} {}", source, field,
            detail::json_type_name(v), v.dump());
    if (v.is_number_unsigned()) {
      const auto u = v.get<std::uint64_t>();
      require(u <= static_cast<std::uint64_t>(std::numeric_limits<T>::max()),
              "{}: field '{}' is too large: {}", source, field, u);
      return static_cast<T>(u);
    }
    const auto i = v.get<std::int64_t>();
    require(i >= static_cast<std::int64_t>(std::numeric_limits<T>::min()) &&
                i <= static_cast<std::int64_t>(std::numeric_limits<T>::max()),
            "{}: field '{}' is out of range: {}", source, field, i);
    return static_cast<T>(i);
  } else if constexpr (std::is_floating_point_v<T>) {
    require(v.is_number(), "{}: field '{}' must be a number, got {} {}", source, field,
            detail::json_type_name(v), v.dump());
    return v.get<T>();
  } else {
    static_assert(std::is_same_v<T, std::string>, "json_value_as: unsupported type");
    require(v.is_string(), "{}: field '{}' must be a string, got {} {}", source, field,
            detail::json_type_name(v), v.dump());
    return v.get<std::string>();
  }
}

template <class T>
T required_field(const nlohmann::json& object, std::string_view key, std::string_view source) {
  const nlohmann::json* v = find_field(object, key);
  require(v != nullptr, "{}: missing required field '{}'", source, key);
  return json_value_as<T>(*v, source, key);
}

template <class T>
T optional_field(const nlohmann::json& object, std::string_view key, std::string_view source,
                 T fallback) {
  const nlohmann::json* v = find_field(object, key);
  return v ? json_value_as<T>(*v, source, key) : fallback;
}

}  // namespace peft
