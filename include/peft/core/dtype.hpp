// Element types as safetensors names them, and the bf16/f16 <-> f32 conversions every backend
// shares. bf16 rounding is round-to-nearest-even, the same as torch's `.to(torch.bfloat16)`,
// so bf16 weights written by us and by torch are bit-identical.
#pragma once
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "peft/core/error.hpp"

namespace peft {

enum class DType { F32, BF16, F16, I64, I32 };

inline std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::BF16: case DType::F16: return 2;
    case DType::I64: return 8;
  }
  return 0;
}

inline std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
  }
  return "?";
}

// Returns false for names we do not handle (the caller names the file and tensor).
inline bool parse_dtype(std::string_view s, DType& out) {
  for (DType t : {DType::F32, DType::BF16, DType::F16, DType::I64, DType::I32})
    if (s == dtype_name(t)) { out = t; return true; }
  return false;
}

// torch's name of a floating dtype, as config.json's torch_dtype and --torch_dtype spell it ("" for
// the integer types).
inline const char* torch_dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    default: return "";
  }
}

inline float bf16_to_float(std::uint16_t h) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16);
}

inline std::uint16_t float_to_bf16(float f) {
  std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}

inline float round_to_bf16(float f) { return bf16_to_float(float_to_bf16(f)); }

inline float f16_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t man = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: value = man * 2^-24
    float v = std::ldexp(static_cast<float>(man), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (man << 13));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (man << 13));
}

inline std::uint16_t float_to_f16(float f) {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7e00u;
  if (a >= 65520.0f) return sign | 0x7c00u;  // overflow rounds to inf
  if (a < 6.103515625e-05f) {                // subnormal half: multiples of 2^-24
    return sign | static_cast<std::uint16_t>(std::nearbyint(a * 16777216.0f));
  }
  std::uint32_t v = std::bit_cast<std::uint32_t>(a);
  v += 0xfffu + ((v >> 13) & 1u);  // round to nearest even at bit 13
  return sign | static_cast<std::uint16_t>(((v >> 23) - 112) << 10 | ((v >> 13) & 0x3ffu));
}

}  // namespace peft
