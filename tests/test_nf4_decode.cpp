// The CUDA dequantisation kernel's per-thread routine (nf4::decode_chunk, quant/nf4_decode.hpp),
// run on the CPU exactly as the kernel runs it (chunk c of a range starting at element `first`
// decodes elements first + 8c ..), against nf4::dequantize bit for bit: whole tensors and row
// ranges whose start is and is not a multiple of 8, on the weights of tests/support/nf4_cases.hpp.
// The GPU test (tests/cuda/test_nf4_dequant.cu) checks the kernel itself on the same weights.
#include <algorithm>
#include <bit>
#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <vector>

#include "peft/quant/nf4_decode.hpp"
#include "support/nf4_cases.hpp"

using namespace peft;

namespace {

// Elements [first, end) as bf16 bits, through decode_chunk chunk by chunk, as the kernel does.
std::vector<std::uint16_t> decode_like_kernel(const nf4::Nf4Tensor& q, std::int64_t first, std::int64_t end) {
  const nf4::Nf4Tables& tables = nf4::decode_tables();
  const nf4::Nf4Data data{q.packed.data(), q.absmax_code.data(), q.absmax_scale.data(), q.offset};
  std::vector<std::uint16_t> out(static_cast<std::size_t>(end - first));
  for (std::int64_t o = 0; o < end - first; o += nf4::kChunk) {
    std::uint16_t bits[nf4::kChunk];
    const int n = nf4::decode_chunk(data, tables.map, tables.code, first + o, end, bits);
    REQUIRE(n == std::min<std::int64_t>(nf4::kChunk, end - first - o));
    std::copy(bits, bits + n, out.begin() + o);
  }
  return out;
}

// How many of out's elements differ from the CPU dequantisation of [first, first + out.size()).
std::size_t differing(const std::vector<std::uint16_t>& out, const std::vector<float>& cpu, std::int64_t first) {
  std::size_t differ = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const float want = cpu[static_cast<std::size_t>(first) + i];
    if (std::bit_cast<std::uint32_t>(bf16_to_float(out[i])) != std::bit_cast<std::uint32_t>(want)) {
      if (differ == 0) UNSCOPED_INFO("first difference at element " << first + static_cast<std::int64_t>(i));
      ++differ;
    }
  }
  return differ;
}

}  // namespace

TEST_CASE("nf4 decode_chunk (the CUDA kernel's per-thread routine) equals nf4::dequantize bit for bit", "[nf4]") {
  std::mt19937 rng(15);
  for (const auto& c : test::nf4_cases(rng)) {
    INFO(c.name);
    const nf4::Nf4Tensor q = nf4::quantize(c.weight, c.name);
    std::vector<float> cpu(c.weight.size());
    nf4::dequantize(q, cpu.data());
    CHECK(differing(decode_like_kernel(q, 0, q.numel), cpu, 0) == 0);
    // The fp32 absmax too, where a fused multiply-add would show in the last bit.
    const nf4::Nf4Tables& tables = nf4::decode_tables();
    const nf4::Nf4Data data{q.packed.data(), q.absmax_code.data(), q.absmax_scale.data(), q.offset};
    const std::vector<float> absmax = nf4::block_absmax(q);
    std::size_t absmax_differ = 0;
    for (std::int64_t b = 0; b < q.blocks(); ++b)
      absmax_differ += std::bit_cast<std::uint32_t>(nf4::decode_absmax(data, tables.map, b)) !=
                       std::bit_cast<std::uint32_t>(absmax[static_cast<std::size_t>(b)]);
    CHECK(absmax_differ == 0);
  }
}

TEST_CASE("nf4 decode_chunk on a row range equals that slice of nf4::dequantize", "[nf4]") {
  std::mt19937 rng(16);
  for (const auto& c : test::nf4_cases(rng)) {
    INFO(c.name);
    const nf4::Nf4Tensor q = nf4::quantize(c.weight, c.name);
    std::vector<float> cpu(c.weight.size());
    nf4::dequantize(q, cpu.data());
    // A middle tile, a tile from row 1 (its start not a multiple of 8 where cols is odd), the last
    // rows (the odd tail), one row, and an empty range.
    const std::int64_t r = c.rows;
    const std::pair<std::int64_t, std::int64_t> ranges[] = {
      {r / 4, r / 4 + (r + 2) / 3}, {std::min<std::int64_t>(1, r), (r + 1) / 2}, {r / 2, r}, {r - 1, r}, {r, r}};
    for (auto [row0, row1] : ranges) {
      INFO("rows [" << row0 << ", " << row1 << "), first element " << row0 * c.cols);
      const auto out = decode_like_kernel(q, row0 * c.cols, row1 * c.cols);
      CHECK(out.size() == static_cast<std::size_t>((row1 - row0) * c.cols));
      CHECK(differing(out, cpu, row0 * c.cols) == 0);
    }
  }
}

TEST_CASE("nf4 decode_chunk starting anywhere in a block decodes the same bits", "[nf4]") {
  // Every start 0..63 and end, on a 3-block tensor: the element-by-element path against the fast one.
  std::mt19937 rng(17);
  const std::vector<float> w = test::nf4_normal(rng, 3 * 64 + 5, 1.0f);
  const nf4::Nf4Tensor q = nf4::quantize(w, "w");
  std::vector<float> cpu(w.size());
  nf4::dequantize(q, cpu.data());
  std::size_t differ = 0;
  for (std::int64_t first = 0; first < 64; ++first)
    for (std::int64_t end = first; end <= q.numel; end += 7) differ += differing(decode_like_kernel(q, first, end), cpu, first);
  CHECK(differ == 0);
}
