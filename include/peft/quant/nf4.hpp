// NF4 with double quantisation, bit for bit as bitsandbytes stores a QLoRA base weight
// (quantize_4bit(quant_type="nf4", blocksize=64, compress_statistics=True)), so a weight we
// quantise dequantises to exactly the bf16 values PEFT's QLoRA computes with. Written from
// bitsandbytes' published algorithm (functional.py, csrc/kernels.cu); the golden file
// tests/fixtures/nf4/golden.safetensors, made by tools/reference/nf4_reference.py, pins it.
//
// Layout of one quantised tensor of n elements (the weight flattened row-major, as torch does):
//   packed       ceil(n / 2) bytes; element 2i in the HIGH nibble of byte i, 2i+1 in the low one
//                (an odd tail's low nibble codes a 0, as the kernel pads its last block with
//                zeros). A nibble indexes kNf4Code.
//   absmax_code  one byte per block of 64 elements: the block's absmax (max |x|, fp32), less
//                `offset`, quantised 8-bit blockwise with the signed dynamic map
//   absmax_scale one fp32 per 256 absmax values: that group's max |absmax - offset|
//   offset       one fp32: the mean of all the block absmax values
// So n elements cost n/2 + n/64 + 4 n/16384 + 4 bytes (~0.5157 bytes per weight).
//
// The float operations follow the CUDA kernels, since bit-exactness depends on them:
//   quantise   scaled = x * (1.0f / absmax), then the NF4 decision tree (strict >, thresholds
//              as float literals); an all-zero block gives 1/0 = inf, 0 * inf = NaN and, as on
//              the GPU, code 0 (dequantising to -0.0)
//   8-bit      the same scaling, then dQuantize's 7-step binary search over the 256-entry map
//              and its midpoint rounding
//   dequantise absmax = map[code] * scale + offset (two roundings: no fused multiply-add),
//              w = bf16(kNf4Code[nibble] * absmax), round to nearest even
// One deliberate difference: bitsandbytes takes `offset` as torch's fp32 mean, whose last bit
// depends on the device's reduction order; we take the mean in double, rounded once to fp32
// (the reference does the same, and records torch's fp32 mean beside it).
#pragma once
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "peft/core/dtype.hpp"
#include "peft/core/error.hpp"

namespace peft::nf4 {

inline constexpr std::int64_t kBlock = 64;         // elements per absmax
inline constexpr std::int64_t kAbsmaxBlock = 256;  // absmax values per double-quant scale

// The 16 NF4 values (bitsandbytes' dDequantizeNF4), index = 4-bit code.
inline constexpr std::array<float, 16> kNf4Code = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

// dQuantizeNF4's decision tree is a binary search over these 15 ascending thresholds with a
// strict `>` at every node, so its result is the number of thresholds x exceeds (0 for NaN).
inline constexpr std::array<float, 15> kNf4Thresholds = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
    0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f};

inline std::uint8_t quantize_nf4_value(float scaled) {
  std::uint8_t code = 0;
  for (float t : kNf4Thresholds) code += scaled > t ? 1 : 0;
  return code;
}

// bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for each
// exponent e in 0..6 the midpoints of torch.linspace(0.1, 1, 2^e + 1) times 10^(e-6), both
// signs, plus 0 and 1, sorted. bitsandbytes builds it at run time with torch, and the last bit
// of torch.linspace's fp32 values depends on the torch build (vector width, fused multiply-add),
// so the map is pinned here as fp32 bit patterns, exactly as tools/reference/nf4_reference.py
// writes it (dynamic_map.inc; the run that made the golden file, see docs/qlora.md).
inline const std::array<float, 256>& dynamic_map() {
  static constexpr std::uint32_t kBits[256] = {
    0xbf7e3333u, 0xbf7a999au, 0xbf770000u, 0xbf736666u, 0xbf6fcccdu, 0xbf6c3333u, 0xbf68999au, 0xbf650000u,
    0xbf616666u, 0xbf5dcccdu, 0xbf5a3333u, 0xbf56999au, 0xbf530000u, 0xbf4f6666u, 0xbf4bcccdu, 0xbf483333u,
    0xbf44999au, 0xbf410000u, 0xbf3d6666u, 0xbf39cccdu, 0xbf363334u, 0xbf32999au, 0xbf2f0000u, 0xbf2b6666u,
    0xbf27cccdu, 0xbf243334u, 0xbf20999au, 0xbf1d0000u, 0xbf196666u, 0xbf15cccdu, 0xbf123334u, 0xbf0e999au,
    0xbf0b0000u, 0xbf076666u, 0xbf03ccccu, 0xbf003333u, 0xbef93332u, 0xbef20000u, 0xbeeaccccu, 0xbee3999au,
    0xbedc6666u, 0xbed53333u, 0xbece0000u, 0xbec6ccccu, 0xbebf999au, 0xbeb86666u, 0xbeb13333u, 0xbeaa0000u,
    0xbea2ccccu, 0xbe9b999au, 0xbe946666u, 0xbe8d3334u, 0xbe860000u, 0xbe7d9999u, 0xbe6f3333u, 0xbe60cccdu,
    0xbe526666u, 0xbe440000u, 0xbe35999au, 0xbe273333u, 0xbe18cccdu, 0xbe0a6666u, 0xbdf80000u, 0xbddb3334u,
    0xbdc9eb85u, 0xbdc428f7u, 0xbdbe6667u, 0xbdb8a3d7u, 0xbdb2e148u, 0xbdad1eb8u, 0xbda75c2au, 0xbda1999au,
    0xbd9bd70au, 0xbd96147bu, 0xbd9051ebu, 0xbd8a8f5du, 0xbd84cccdu, 0xbd7e147bu, 0xbd728f5du, 0xbd670a3du,
    0xbd5b851fu, 0xbd500000u, 0xbd447ae1u, 0xbd38f5c3u, 0xbd2d70a3u, 0xbd21eb85u, 0xbd166667u, 0xbd0ae148u,
    0xbcfeb852u, 0xbce7ae15u, 0xbcd0a3d7u, 0xbcb9999au, 0xbca28f5du, 0xbc8b851fu, 0xbc68f5c3u, 0xbc3ae148u,
    0xbc1f3b64u, 0xbc160418u, 0xbc0ccccdu, 0xbc039581u, 0xbbf4bc6au, 0xbbe24dd3u, 0xbbcfdf3bu, 0xbbbd70a4u,
    0xbbab020du, 0xbb989374u, 0xbb8624ddu, 0xbb676c8au, 0xbb428f5cu, 0xbb1db22du, 0xbaf1a9fcu, 0xbaa7ef9du,
    0xba7765ffu, 0xba59e83eu, 0xba3c6a80u, 0xba1eecc1u, 0xba016f01u, 0xb9c7e283u, 0xb98ce705u, 0xb923d70bu,
    0xb8ba1f4bu, 0xb88aefb3u, 0xb8378034u, 0xb7b24206u, 0xb70205ffu, 0xb65a1a94u, 0xb513a3b7u, 0x00000000u,
    0x3513a3b7u, 0x365a1a94u, 0x370205ffu, 0x37b24206u, 0x38378034u, 0x388aefb3u, 0x38ba1f4bu, 0x3923d70bu,
    0x398ce705u, 0x39c7e283u, 0x3a016f01u, 0x3a1eecc1u, 0x3a3c6a80u, 0x3a59e83eu, 0x3a7765ffu, 0x3aa7ef9du,
    0x3af1a9fcu, 0x3b1db22du, 0x3b428f5cu, 0x3b676c8au, 0x3b8624ddu, 0x3b989374u, 0x3bab020du, 0x3bbd70a4u,
    0x3bcfdf3bu, 0x3be24dd3u, 0x3bf4bc6au, 0x3c039581u, 0x3c0ccccdu, 0x3c160418u, 0x3c1f3b64u, 0x3c3ae148u,
    0x3c68f5c3u, 0x3c8b851fu, 0x3ca28f5du, 0x3cb9999au, 0x3cd0a3d7u, 0x3ce7ae15u, 0x3cfeb852u, 0x3d0ae148u,
    0x3d166667u, 0x3d21eb85u, 0x3d2d70a3u, 0x3d38f5c3u, 0x3d447ae1u, 0x3d500000u, 0x3d5b851fu, 0x3d670a3du,
    0x3d728f5du, 0x3d7e147bu, 0x3d84cccdu, 0x3d8a8f5du, 0x3d9051ebu, 0x3d96147bu, 0x3d9bd70au, 0x3da1999au,
    0x3da75c2au, 0x3dad1eb8u, 0x3db2e148u, 0x3db8a3d7u, 0x3dbe6667u, 0x3dc428f7u, 0x3dc9eb85u, 0x3ddb3334u,
    0x3df80000u, 0x3e0a6666u, 0x3e18cccdu, 0x3e273333u, 0x3e35999au, 0x3e440000u, 0x3e526666u, 0x3e60cccdu,
    0x3e6f3333u, 0x3e7d9999u, 0x3e860000u, 0x3e8d3334u, 0x3e946666u, 0x3e9b999au, 0x3ea2ccccu, 0x3eaa0000u,
    0x3eb13333u, 0x3eb86666u, 0x3ebf999au, 0x3ec6ccccu, 0x3ece0000u, 0x3ed53333u, 0x3edc6666u, 0x3ee3999au,
    0x3eeaccccu, 0x3ef20000u, 0x3ef93332u, 0x3f003333u, 0x3f03ccccu, 0x3f076666u, 0x3f0b0000u, 0x3f0e999au,
    0x3f123334u, 0x3f15cccdu, 0x3f196666u, 0x3f1d0000u, 0x3f20999au, 0x3f243334u, 0x3f27cccdu, 0x3f2b6666u,
    0x3f2f0000u, 0x3f32999au, 0x3f363334u, 0x3f39cccdu, 0x3f3d6666u, 0x3f410000u, 0x3f44999au, 0x3f483333u,
    0x3f4bcccdu, 0x3f4f6666u, 0x3f530000u, 0x3f56999au, 0x3f5a3333u, 0x3f5dcccdu, 0x3f616666u, 0x3f650000u,
    0x3f68999au, 0x3f6c3333u, 0x3f6fcccdu, 0x3f736666u, 0x3f770000u, 0x3f7a999au, 0x3f7e3333u, 0x3f800000u,
  };
  static const std::array<float, 256> map = [] {
    std::array<float, 256> out{};
    for (std::size_t i = 0; i < 256; ++i) out[i] = std::bit_cast<float>(kBits[i]);
    return out;
  }();
  return map;
}

// dQuantize<STOCHASTIC=0>: a 7-step binary search from the middle of the map, then the nearer
// of the two neighbours by their float midpoint.
inline std::uint8_t quantize_dynamic_value(const std::array<float, 256>& code, float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = code[127];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) { lower_pivot = pivot; lower = val; pivot += i; }
    else { upper_pivot = pivot; upper = val; pivot -= i; }
    val = code[static_cast<std::size_t>(pivot)];
  }
  if (upper_pivot == 255) upper = code[255];
  if (lower_pivot == 0) lower = code[0];
  if (x > val) return static_cast<std::uint8_t>(x > (upper + val) * 0.5f ? upper_pivot : pivot);
  return static_cast<std::uint8_t>(x < (lower + val) * 0.5f ? lower_pivot : pivot);
}

struct Nf4Tensor {
  std::int64_t numel = 0;
  std::vector<std::uint8_t> packed;        // ceil(numel / 2)
  std::vector<std::uint8_t> absmax_code;   // ceil(numel / kBlock)
  std::vector<float> absmax_scale;         // ceil(blocks / kAbsmaxBlock)
  float offset = 0.0f;

  std::int64_t blocks() const { return static_cast<std::int64_t>(absmax_code.size()); }
  std::size_t bytes() const { return packed.size() + absmax_code.size() + 4 * absmax_scale.size() + 4; }
};

// Bytes of an NF4 tensor of n elements (what Nf4Tensor::bytes() reports once it is filled).
constexpr std::int64_t storage_bytes(std::int64_t n) {
  const std::int64_t blocks = (n + kBlock - 1) / kBlock;
  return (n + 1) / 2 + blocks + 4 * ((blocks + kAbsmaxBlock - 1) / kAbsmaxBlock) + 4;
}

// The 64-element absmax values, double-dequantised (fp32), as dequantize_4bit uses them.
inline std::vector<float> block_absmax(const Nf4Tensor& t) {
  const auto& map = dynamic_map();
  std::vector<float> out(t.absmax_code.size());
  for (std::size_t b = 0; b < out.size(); ++b) {
    // volatile: bitsandbytes rounds the product before adding the offset; a fused multiply-add
    // (which -march=native may contract this into) would round once and differ in the last bit.
    volatile float product = map[t.absmax_code[b]] * t.absmax_scale[b / static_cast<std::size_t>(kAbsmaxBlock)];
    out[b] = product + t.offset;
  }
  return out;
}

// Quantises `values` (the weight flattened row-major; its bf16 values, held as floats). `what`
// names the tensor for the error on a non-finite value, which NF4 cannot represent.
inline Nf4Tensor quantize(std::span<const float> values, std::string_view what) {
  Nf4Tensor t;
  const auto n = static_cast<std::int64_t>(values.size());
  t.numel = n;
  const std::int64_t blocks = (n + kBlock - 1) / kBlock;
  t.packed.assign(static_cast<std::size_t>((n + 1) / 2), 0);
  t.absmax_code.resize(static_cast<std::size_t>(blocks));
  std::vector<float> absmax(static_cast<std::size_t>(blocks));
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::int64_t begin = b * kBlock, end = std::min(n, begin + kBlock);
    float m = 0.0f;
    for (std::int64_t i = begin; i < end; ++i) {
      const float x = values[static_cast<std::size_t>(i)];
      require(std::isfinite(x), "{}: element {} is {}; NF4 quantisation needs finite weights", what, i, x);
      m = std::fmax(m, std::fabs(x));
    }
    absmax[static_cast<std::size_t>(b)] = m;
    const float inv = 1.0f / m;
    for (std::int64_t i = begin; i < end; ++i) {
      const std::uint8_t q = quantize_nf4_value(values[static_cast<std::size_t>(i)] * inv);
      auto& byte = t.packed[static_cast<std::size_t>(i / 2)];
      byte = static_cast<std::uint8_t>(byte | (i % 2 == 0 ? q << 4 : q));
    }
    if (end == n && n % 2 == 1) t.packed.back() |= quantize_nf4_value(0.0f * inv);
  }
  // Double quantisation of the absmax values.
  double sum = 0.0;
  for (float a : absmax) sum += a;
  t.offset = blocks ? static_cast<float>(sum / static_cast<double>(blocks)) : 0.0f;
  for (float& a : absmax) a = a - t.offset;
  const auto& map = dynamic_map();
  const std::int64_t groups = (blocks + kAbsmaxBlock - 1) / kAbsmaxBlock;
  t.absmax_scale.resize(static_cast<std::size_t>(groups));
  for (std::int64_t g = 0; g < groups; ++g) {
    const std::int64_t begin = g * kAbsmaxBlock, end = std::min(blocks, begin + kAbsmaxBlock);
    float m = 0.0f;
    for (std::int64_t i = begin; i < end; ++i) m = std::fmax(m, std::fabs(absmax[static_cast<std::size_t>(i)]));
    t.absmax_scale[static_cast<std::size_t>(g)] = m;
    const float inv = 1.0f / m;
    for (std::int64_t i = begin; i < end; ++i)
      t.absmax_code[static_cast<std::size_t>(i)] = quantize_dynamic_value(map, absmax[static_cast<std::size_t>(i)] * inv);
  }
  return t;
}

// Dequantises into out[0, numel): bf16 values held as floats, as dequantize_4bit returns them
// for a bf16 weight.
inline void dequantize(const Nf4Tensor& t, float* out) {
  const std::vector<float> absmax = block_absmax(t);
  for (std::int64_t i = 0; i < t.numel; ++i) {
    const std::uint8_t byte = t.packed[static_cast<std::size_t>(i / 2)];
    const std::uint8_t q = i % 2 == 0 ? byte >> 4 : byte & 0x0f;
    out[i] = round_to_bf16(kNf4Code[q] * absmax[static_cast<std::size_t>(i / kBlock)]);
  }
}

}  // namespace peft::nf4
