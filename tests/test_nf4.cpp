// NF4 + double quantisation (peft/quant/nf4.hpp) against the torch reference written from
// bitsandbytes' algorithm (tools/reference/nf4_reference.py -> tests/fixtures/nf4/golden.json):
// the dynamic map, the packed codes, the absmax codes, scales and offset, and the dequantised
// weights must all be identical bit for bit.
#include <algorithm>
#include <bit>
#include <cmath>
#include <catch2/catch.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "peft/quant/nf4.hpp"
#include "support/fixture.hpp"

using namespace peft;

namespace {

std::vector<std::uint64_t> hex_words(const std::string& s, std::size_t digits) {
  REQUIRE(s.size() % digits == 0);
  std::vector<std::uint64_t> out;
  for (std::size_t i = 0; i < s.size(); i += digits) out.push_back(std::stoull(s.substr(i, digits), nullptr, 16));
  return out;
}
std::vector<std::uint8_t> hex_bytes(const std::string& s) {
  std::vector<std::uint8_t> out;
  for (auto v : hex_words(s, 2)) out.push_back(static_cast<std::uint8_t>(v));
  return out;
}
std::uint32_t f32_bits(const nlohmann::json& hex) { return static_cast<std::uint32_t>(std::stoul(hex.get<std::string>(), nullptr, 16)); }
std::vector<std::uint32_t> f32_list(const nlohmann::json& a) {
  std::vector<std::uint32_t> out;
  for (const auto& h : a) out.push_back(f32_bits(h));
  return out;
}
std::vector<std::uint32_t> bits_of(const std::vector<float>& v) {
  std::vector<std::uint32_t> out;
  for (float x : v) out.push_back(std::bit_cast<std::uint32_t>(x));
  return out;
}
std::vector<float> bf16_values(const std::string& hex) {
  std::vector<float> out;
  for (auto v : hex_words(hex, 4)) out.push_back(bf16_to_float(static_cast<std::uint16_t>(v)));
  return out;
}

const nlohmann::json& golden() {
  static const nlohmann::json g = read_json_file(test::fixture("nf4") / "golden.json");
  return g;
}

}  // namespace

TEST_CASE("the 8-bit dynamic map equals bitsandbytes' create_dynamic_map(signed=True)", "[nf4]") {
  const auto& map = nf4::dynamic_map();
  const auto want = f32_list(golden()["dynamic_map_f32"]);
  REQUIRE(want.size() == 256);
  for (std::size_t i = 0; i < 256; ++i) {
    INFO("entry " << i << ": ours " << map[i]);
    CHECK(std::bit_cast<std::uint32_t>(map[i]) == want[i]);
  }
}

TEST_CASE("NF4 quantisation equals the reference bit for bit", "[nf4]") {
  for (const auto& [name, c] : golden()["cases"].items()) {
    SECTION(name) {
      const std::vector<float> w = bf16_values(c["input_bf16"].get<std::string>());
      const nf4::Nf4Tensor t = nf4::quantize(w, name);
      CHECK(t.numel == static_cast<std::int64_t>(w.size()));
      CHECK(t.packed == hex_bytes(c["packed"].get<std::string>()));
      CHECK(t.absmax_code == hex_bytes(c["absmax_code"].get<std::string>()));
      CHECK(bits_of(t.absmax_scale) == f32_list(c["absmax_scale_f32"]));
      CHECK(std::bit_cast<std::uint32_t>(t.offset) == f32_bits(c["offset_f32"]));
      CHECK(static_cast<std::int64_t>(t.bytes()) == nf4::storage_bytes(t.numel));
    }
  }
}

TEST_CASE("NF4 dequantisation equals the reference bit for bit", "[nf4]") {
  for (const auto& [name, c] : golden()["cases"].items()) {
    SECTION(name) {
      const nf4::Nf4Tensor t = nf4::quantize(bf16_values(c["input_bf16"].get<std::string>()), name);
      CHECK(bits_of(nf4::block_absmax(t)) == f32_list(c["absmax_dequantized_f32"]));
      std::vector<float> out(static_cast<std::size_t>(t.numel));
      nf4::dequantize(t, out.data());
      const std::vector<float> want = bf16_values(c["dequantized_bf16"].get<std::string>());
      REQUIRE(out.size() == want.size());
      std::size_t differ = 0;
      for (std::size_t i = 0; i < out.size(); ++i)
        differ += std::bit_cast<std::uint32_t>(out[i]) != std::bit_cast<std::uint32_t>(want[i]) ? 1 : 0;
      CHECK(differ == 0);
    }
  }
}

TEST_CASE("NF4 storage costs n/2 + n/64 + 4 n/16384 + 4 bytes", "[nf4]") {
  CHECK(nf4::storage_bytes(64) == 32 + 1 + 4 + 4);
  CHECK(nf4::storage_bytes(65) == 33 + 2 + 4 + 4);
  CHECK(nf4::storage_bytes(16384) == 8192 + 256 + 4 + 4);
  CHECK(nf4::storage_bytes(16385) == 8193 + 257 + 8 + 4);
}

TEST_CASE("NF4 refuses a non-finite weight, naming the tensor", "[nf4]") {
  std::vector<float> w(128, 0.5f);
  w[70] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(nf4::quantize(w, "model.layers.0.mlp.up_proj.weight"),
                    Catch::Contains("model.layers.0.mlp.up_proj.weight") && Catch::Contains("element 70"));
}

TEST_CASE("the pinned dynamic map is create_dynamic_map's formula to fp32 rounding", "[nf4]") {
  // The exact values: +-(0.1 + 0.9 (i + 1/2) / 2^e) 10^(e-6) for e in 0..6, i < 2^e, then 0 and 1.
  std::vector<double> exact = {0.0, 1.0};
  for (int e = 0; e < 7; ++e)
    for (int i = 0; i < (1 << e); ++i) {
      const double v = (0.1 + 0.9 * (i + 0.5) / (1 << e)) * std::pow(10.0, e - 6);
      exact.push_back(v);
      exact.push_back(-v);
    }
  std::sort(exact.begin(), exact.end());
  const auto& map = nf4::dynamic_map();
  REQUIRE(exact.size() == 256);
  for (std::size_t i = 0; i < 256; ++i) {
    INFO("entry " << i << ": pinned " << map[i] << ", formula " << exact[i]);
    CHECK(std::abs(map[i] - exact[i]) <= 1e-6 * std::abs(exact[i]));
  }
}
