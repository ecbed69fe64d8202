// One GPU thread's share of NF4 dequantisation (kernels/cuda/nf4_dequant.cuh), written once for
// both compilers: the CUDA kernel runs decode_chunk on the device, and tests/test_nf4_decode.cpp
// runs the very same code on the CPU against nf4::dequantize (itself pinned to bitsandbytes by
// the golden file), so the index arithmetic (nibble order, each element's block and double-quant
// group, an unaligned start, the tail) and the float operations are checked bit for bit without
// a GPU. The operations are quant/nf4.hpp's: absmax = map[code] * scale + offset in two
// roundings (__fmul_rn / __fadd_rn forbid nvcc's fused multiply-add; on the host the product
// goes through a volatile, as nf4::block_absmax does), then w = bf16(kNf4Code[nibble] * absmax),
// round to nearest even. nvcc's default -ftz=false keeps subnormal products exact, as the CPU does.
#pragma once
#include <bit>
#include <cstdint>
#include <cstring>

#include "peft/core/dtype.hpp"
#include "peft/core/host_device.hpp"
#include "peft/quant/nf4.hpp"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#endif

#if defined(__CUDA_ARCH__)
#define PEFT_NF4_UNROLL _Pragma("unroll")
#else
#define PEFT_NF4_UNROLL
#endif

namespace peft::nf4 {

// A quantised tensor's arrays, laid out as quant/nf4.hpp documents (device pointers in a kernel,
// host pointers in a test).
struct Nf4Data {
  const std::uint8_t* packed = nullptr;
  const std::uint8_t* absmax_code = nullptr;
  const float* absmax_scale = nullptr;
  float offset = 0.0f;
};

// The 8-bit dynamic map and the 16 NF4 values, passed to the kernel by value (1088 bytes of
// kernel arguments); each block copies them into shared memory, where a warp's lookups of
// different entries do not serialise as they would in constant memory.
struct Nf4Tables {
  float map[256];
  float code[16];
};

inline const Nf4Tables& decode_tables() {
  static const Nf4Tables tables = [] {
    Nf4Tables t{};
    const auto& map = dynamic_map();
    for (std::size_t i = 0; i < 256; ++i) t.map[i] = map[i];
    for (std::size_t i = 0; i < 16; ++i) t.code[i] = kNf4Code[i];
    return t;
  }();
  return tables;
}

// Elements per thread: 4 packed bytes in (one 32-bit load), 8 bf16 out (one 16-byte store).
// A multiple of 8 never straddles a 64-element block, so an aligned chunk needs one absmax.
inline constexpr int kChunk = 8;
static_assert(kBlock % kChunk == 0);

namespace decode_detail {

PEFT_HOST_DEVICE inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  volatile float product = a * b;  // never contracted into the addition that follows
  return product;
#endif
}

PEFT_HOST_DEVICE inline float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

// bf16 bits, round to nearest even (the values here are always finite).
PEFT_HOST_DEVICE inline std::uint16_t bf16_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __bfloat16_as_ushort(__float2bfloat16_rn(x));
#else
  return float_to_bf16(x);
#endif
}

// Bytes p[0..3], p[k] in bits 8k..8k+7 (p is 4-byte aligned: an aligned chunk starts at byte
// 4i of the packed array, which the arena aligns to 256).
PEFT_HOST_DEVICE inline std::uint32_t load_u32(const std::uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(reinterpret_cast<const unsigned int*>(p));
#else
  static_assert(std::endian::native == std::endian::little, "the packed word is read little-endian, as the GPU does");
  std::uint32_t word;
  std::memcpy(&word, p, 4);
  return word;
#endif
}

}  // namespace decode_detail

// absmax = map[code] * scale + offset, from the block's mapped code and its group's scale (for a
// caller that loaded them itself, ahead of their use: nf4_gemm.cuh).
PEFT_HOST_DEVICE inline float absmax_value(float mapped, float scale, float offset) {
  using namespace decode_detail;
  return add_rn(mul_rn(mapped, scale), offset);
}

// The double-dequantised absmax of 64-element block `block`.
PEFT_HOST_DEVICE inline float decode_absmax(const Nf4Data& t, const float* map, std::int64_t block) {
  return absmax_value(map[t.absmax_code[block]], t.absmax_scale[block / kAbsmaxBlock], t.offset);
}

// The 8 weights of one 32-bit word of packed codes (4 bytes, byte k in bits 8k..8k+7) whose block
// has this absmax, as bf16 bits: decode_chunk's fast path, and the fused GEMM's (nf4_gemm.cuh)
// decoding of its weight tiles.
PEFT_HOST_DEVICE inline void decode_word(std::uint32_t word, float absmax, const float* code, std::uint16_t* out) {
  using namespace decode_detail;
  PEFT_NF4_UNROLL
  for (int k = 0; k < kChunk / 2; ++k) {
    const std::uint32_t byte = (word >> (8 * k)) & 0xffu;  // elements 2k (high nibble), 2k + 1 (low)
    out[2 * k] = bf16_bits(mul_rn(code[byte >> 4], absmax));
    out[2 * k + 1] = bf16_bits(mul_rn(code[byte & 0x0fu], absmax));
  }
}

// Dequantises elements [first, min(first + kChunk, end)) of the flattened tensor into out[0, n)
// as bf16 bits and returns n (first < end). A whole chunk starting at a multiple of 8 (every chunk
// of a whole tensor or of a row range whose start is a multiple of 8, but the tail) takes the
// fast path: one 32-bit load, one absmax; any other goes element by element. Every loop is over
// a constant count so that nvcc unrolls it and `out` stays in registers.
PEFT_HOST_DEVICE inline int decode_chunk(const Nf4Data& t, const float* map, const float* code, std::int64_t first,
                                         std::int64_t end, std::uint16_t* out) {
  using namespace decode_detail;
  if (first % kChunk == 0 && end - first >= kChunk) {
    decode_word(load_u32(t.packed + first / 2), decode_absmax(t, map, first / kBlock), code, out);
    return kChunk;
  }
  const int n = end - first < kChunk ? static_cast<int>(end - first) : kChunk;
  PEFT_NF4_UNROLL
  for (int j = 0; j < kChunk; ++j) {
    if (j >= n) break;
    const std::int64_t e = first + j;
    const std::uint32_t byte = t.packed[e / 2];
    const std::uint32_t q = e % 2 == 0 ? byte >> 4 : byte & 0x0fu;
    out[j] = bf16_bits(mul_rn(code[q], decode_absmax(t, map, e / kBlock)));
  }
  return n;
}

}  // namespace peft::nf4

#undef PEFT_NF4_UNROLL
