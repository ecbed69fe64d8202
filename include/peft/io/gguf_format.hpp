// The GGUF v3 container as llama.cpp's ggml/docs/gguf.md defines it, written once for our writer
// and reader: the value and tensor type codes, the byte size of each tensor type, and the Q8_0
// block. A GGUF tensor lists its dimensions innermost first (ggml's ne[0] is the length of a row),
// the reverse of a PyTorch / safetensors shape; the helpers below take and give PyTorch order so
// callers never flip shapes by hand.
//
// Q8_0 (ggml's reference quantize_row_q8_0): a row is cut into blocks of 32 values; each block
// stores d = max|x| / 127 as an IEEE half, then 32 int8 q = round(x / d) (round half away from
// zero, as roundf), 34 bytes in all. Dequantized, x ~ q * d with d read back from the half.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "peft/core/dtype.hpp"
#include "peft/core/error.hpp"

namespace peft::gguf {

inline constexpr std::uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian uint32
inline constexpr std::uint32_t kVersion = 3;
inline constexpr std::uint64_t kDefaultAlignment = 32;  // general.alignment when absent

enum class ValueType : std::uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9, U64 = 10,
  I64 = 11, F64 = 12,
};

// The ggml tensor types we write (ggml.h's enum ggml_type numbering).
enum class TensorType : std::uint32_t { F32 = 0, F16 = 1, Q8_0 = 8, BF16 = 30 };

inline constexpr std::int64_t kQ8_0BlockValues = 32;
inline constexpr std::size_t kQ8_0BlockBytes = 2 + 32;

inline std::string_view tensor_type_name(TensorType t) {
  switch (t) {
    case TensorType::F32: return "f32";
    case TensorType::F16: return "f16";
    case TensorType::Q8_0: return "q8_0";
    case TensorType::BF16: return "bf16";
  }
  return "?";
}

inline bool parse_tensor_type(std::string_view s, TensorType& out) {
  for (TensorType t : {TensorType::F32, TensorType::F16, TensorType::Q8_0, TensorType::BF16})
    if (s == tensor_type_name(t)) { out = t; return true; }
  return false;
}

inline bool is_known_tensor_type(std::uint32_t code) {
  return code == 0 || code == 1 || code == 8 || code == 30;
}

// Bytes of a tensor of `numel` values (for Q8_0, whole blocks: callers check rows % 32 == 0).
inline std::size_t tensor_bytes(TensorType t, std::int64_t numel) {
  switch (t) {
    case TensorType::F32: return static_cast<std::size_t>(numel) * 4;
    case TensorType::F16:
    case TensorType::BF16: return static_cast<std::size_t>(numel) * 2;
    case TensorType::Q8_0: return static_cast<std::size_t>(numel / kQ8_0BlockValues) * kQ8_0BlockBytes;
  }
  return 0;
}

// One Q8_0 block of 32 values into 34 bytes.
inline void quantize_q8_0_block(const float* x, std::byte* out) {
  float amax = 0;
  for (int i = 0; i < kQ8_0BlockValues; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f;
  const float inv = d != 0 ? 1.0f / d : 0.0f;
  const std::uint16_t dh = float_to_f16(d);
  std::memcpy(out, &dh, 2);
  for (int i = 0; i < kQ8_0BlockValues; ++i) {
    const auto q = static_cast<std::int8_t>(std::round(x[i] * inv));
    std::memcpy(out + 2 + i, &q, 1);
  }
}

inline void dequantize_q8_0_block(const std::byte* in, float* x) {
  std::uint16_t dh;
  std::memcpy(&dh, in, 2);
  const float d = f16_to_float(dh);
  for (int i = 0; i < kQ8_0BlockValues; ++i) {
    std::int8_t q;
    std::memcpy(&q, in + 2 + i, 1);
    x[i] = static_cast<float>(q) * d;
  }
}

// `values` in `type`'s bytes; out holds tensor_bytes(type, values.size()).
inline void encode_values(TensorType type, std::span<const float> values, std::byte* out) {
  switch (type) {
    case TensorType::F32: std::memcpy(out, values.data(), values.size() * 4); return;
    case TensorType::F16:
    case TensorType::BF16:
      for (std::size_t i = 0; i < values.size(); ++i) {
        const std::uint16_t h = type == TensorType::F16 ? float_to_f16(values[i]) : float_to_bf16(values[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    case TensorType::Q8_0:
      require(values.size() % kQ8_0BlockValues == 0, "q8_0: {} values are not whole blocks of 32", values.size());
      for (std::size_t b = 0; b < values.size() / kQ8_0BlockValues; ++b)
        quantize_q8_0_block(values.data() + b * kQ8_0BlockValues, out + b * kQ8_0BlockBytes);
      return;
  }
}

inline void decode_values(TensorType type, const std::byte* in, std::span<float> values) {
  switch (type) {
    case TensorType::F32: std::memcpy(values.data(), in, values.size() * 4); return;
    case TensorType::F16:
    case TensorType::BF16:
      for (std::size_t i = 0; i < values.size(); ++i) {
        std::uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        values[i] = type == TensorType::F16 ? f16_to_float(h) : bf16_to_float(h);
      }
      return;
    case TensorType::Q8_0:
      for (std::size_t b = 0; b < values.size() / kQ8_0BlockValues; ++b)
        dequantize_q8_0_block(in + b * kQ8_0BlockBytes, values.data() + b * kQ8_0BlockValues);
      return;
  }
}

}  // namespace peft::gguf
