// The device weight loader's host half (io/safetensors_plan.hpp): resolving requested tensors in a
// sharded checkpoint (shard, file order, byte counts), splitting them into staging-buffer chunks,
// the conversion to bf16 (bit-equal to the WeightSource path: read_f32 then float_to_bf16), and
// one test per bad input, each checking the error names the file or index and the tensor.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "peft/io/atomic_file.hpp"
#include "peft/io/safetensors.hpp"
#include "peft/io/safetensors_plan.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using namespace peft;
using Catch::Contains;
using peft::test::TempDir;

namespace {

std::vector<float> ramp(std::size_t n, float scale) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = scale * std::sin(0.37f * static_cast<float>(i) + 0.1f) * (1.0f + i);
  return v;
}

// Two shards: shard 1 holds "b.big" (BF16, 40 elements) and "a.f32" (F32 [3, 5]); shard 2 holds
// "c.f16" (F16 [7]) and "d.i32" (I32 [2]).
struct Sharded {
  TempDir dir{"sharded"};
  std::vector<float> big = ramp(40, 0.5f), f32 = ramp(15, 1.3f), f16 = ramp(7, 0.01f);
  Sharded() {
    SafetensorsWriter s1, s2;
    s1.add_f32("b.big", {40}, big, DType::BF16);
    s1.add_f32("a.f32", {3, 5}, f32);
    s2.add_f32("c.f16", {7}, f16, DType::F16);
    const std::int32_t ints[2] = {1, 2};
    s2.add("d.i32", DType::I32, {2}, std::as_bytes(std::span<const std::int32_t>(ints)));
    s1.write(dir / "model-00001-of-00002.safetensors");
    s2.write(dir / "model-00002-of-00002.safetensors");
    write_index(R"("a.f32": "model-00001-of-00002.safetensors", "b.big": "model-00001-of-00002.safetensors",
                   "c.f16": "model-00002-of-00002.safetensors", "d.i32": "model-00002-of-00002.safetensors")");
  }
  void write_index(const std::string& weight_map) const {
    write_text_atomic(dir / "model.safetensors.index.json", "{\"metadata\": {}, \"weight_map\": {" + weight_map + "}}");
  }
};

}  // namespace

TEST_CASE("plan resolves tensors across shards in file order") {
  Sharded s;
  const SafetensorsModel m = SafetensorsModel::open(s.dir.path);
  const std::vector<TensorRequest> req = {{"c.f16", {7}}, {"b.big", {40}}, {"a.f32", {3, 5}}};
  const TensorReadPlan plan = plan_bf16_reads(m, req);
  REQUIRE(plan.reads.size() == 3);
  // Shard 1 first, and within it by offset: the writer puts F32 before BF16.
  REQUIRE(plan.reads[0].request == 2);
  REQUIRE(plan.reads[1].request == 1);
  REQUIRE(plan.reads[2].request == 0);
  REQUIRE(plan.reads[0].file->path().filename() == "model-00001-of-00002.safetensors");
  REQUIRE(plan.reads[2].file->path().filename() == "model-00002-of-00002.safetensors");
  REQUIRE(plan.reads[0].stored->data < plan.reads[1].stored->data);
  REQUIRE(plan.file_bytes == 15 * 4 + 40 * 2 + 7 * 2);
  REQUIRE(plan.bf16_bytes == (15 + 40 + 7) * 2);
}

TEST_CASE("split_reads cuts tensors larger than a staging buffer") {
  Sharded s;
  const SafetensorsModel m = SafetensorsModel::open(s.dir.path);
  const std::vector<TensorRequest> req = {{"b.big", {40}}, {"c.f16", {7}}};
  const TensorReadPlan plan = plan_bf16_reads(m, req);
  const auto chunks = split_reads(plan, 32);  // 16 elements a chunk; 33 bytes would give the same
  REQUIRE(chunks.size() == 4);                // 16 + 16 + 8 of b.big, then c.f16 whole
  std::size_t covered = 0;
  for (std::size_t i = 0; i < 3; ++i) {
    REQUIRE(chunks[i].read == 0);
    REQUIRE(chunks[i].begin == covered);
    covered += chunks[i].count;
  }
  REQUIRE(covered == 40);
  REQUIRE(chunks[3].read == 1);
  REQUIRE(chunks[3].count == 7);
  REQUIRE(split_reads(plan, 1 << 20).size() == 2);
  REQUIRE_THROWS_WITH(split_reads(plan, 1), Contains("staging buffer"));
}

TEST_CASE("convert_to_bf16 gives the WeightSource path bits for F32 BF16 and F16 chunks") {
  Sharded s;
  const SafetensorsModel m = SafetensorsModel::open(s.dir.path);
  struct Case {
    std::string name;
    std::vector<std::int64_t> shape;
  };
  for (const Case& c : {Case{"a.f32", {3, 5}}, Case{"b.big", {40}}, Case{"c.f16", {7}}}) {
    const std::vector<float> ref = m.read_f32(c.name, c.shape);
    const StoredTensor& t = m.tensor(c.name);
    // In pieces of 4 (odd offsets included), as a staging buffer would see them.
    std::vector<std::uint16_t> got(ref.size());
    for (std::size_t b = 0; b < ref.size(); b += 4) convert_to_bf16(t, b, std::min<std::size_t>(4, ref.size() - b), &got[b]);
    for (std::size_t i = 0; i < ref.size(); ++i) REQUIRE(got[i] == float_to_bf16(ref[i]));
  }
  // Rounding is to nearest even, not truncation: the ties 1 + 2^-8 and 1 + 3 * 2^-8 go to the even
  // neighbour (down, up); 1 + 3 * 2^-9 (0.75 ulp) goes up.
  SafetensorsWriter w;
  const std::vector<float> ties = {1.0f + 1.0f / 256, 1.0f + 3.0f / 256, -1.0f - 3.0f / 512,
                                   std::numeric_limits<float>::infinity()};
  w.add_f32("t", {4}, ties);
  w.write(s.dir / "ties.safetensors");
  const auto f = SafetensorsFile::open(s.dir / "ties.safetensors");
  std::uint16_t out[4];
  convert_to_bf16(f.tensor("t"), 0, 4, out);
  REQUIRE(out[0] == 0x3f80);
  REQUIRE(out[1] == 0x3f82);
  REQUIRE(out[2] == 0xbf81);
  REQUIRE(out[3] == 0x7f80);
  REQUIRE_THROWS_WITH(convert_to_bf16(f.tensor("t"), 2, 3, out), Contains("'t'"));
}

TEST_CASE("plan errors: missing tensor wrong shape unsupported dtype duplicate") {
  Sharded s;
  const SafetensorsModel m = SafetensorsModel::open(s.dir.path);
  const std::string index = (s.dir / "model.safetensors.index.json").string();
  auto plan = [&](std::vector<TensorRequest> req) { return plan_bf16_reads(m, req); };
  REQUIRE_THROWS_WITH(plan({{"a.f32", {3, 5}}, {"lm_head.weight", {4, 4}}}),
                      Contains(index) && Contains("'lm_head.weight'") && Contains("no tensor"));
  REQUIRE_THROWS_WITH(plan({{"a.f32", {5, 3}}}), Contains("model-00001-of-00002.safetensors") && Contains("'a.f32'") &&
                                                     Contains("[3, 5]") && Contains("[5, 3]"));
  REQUIRE_THROWS_WITH(plan({{"b.big", {40, 1}}}), Contains("'b.big'") && Contains("[40, 1]"));
  REQUIRE_THROWS_WITH(plan({{"d.i32", {2}}}),
                      Contains("model-00002-of-00002.safetensors") && Contains("'d.i32'") && Contains("I32"));
  REQUIRE_THROWS_WITH(plan({{"a.f32", {3, 5}}, {"a.f32", {3, 5}}}), Contains("'a.f32'") && Contains("twice"));
}

TEST_CASE("plan inputs refused at open: truncated shard missing shard bad index") {
  Sharded s;
  const std::string index = (s.dir / "model.safetensors.index.json").string();
  // A shard named by the index that is not there.
  s.write_index(R"("a.f32": "model-00001-of-00002.safetensors", "c.f16": "model-00003-of-00003.safetensors")");
  REQUIRE_THROWS_WITH(SafetensorsModel::open(s.dir.path), Contains(index) && Contains("model-00003-of-00003.safetensors") &&
                                                              Contains("'c.f16'") && Contains("does not exist"));
  // An index that is not JSON, and one without a weight map.
  write_text_atomic(s.dir / "model.safetensors.index.json", "{\"weight_map\": {\"a.f32\": ");
  REQUIRE_THROWS_WITH(SafetensorsModel::open(s.dir.path), Contains(index));
  write_text_atomic(s.dir / "model.safetensors.index.json", "{\"weight_map\": [\"a.f32\"]}");
  REQUIRE_THROWS_WITH(SafetensorsModel::open(s.dir.path), Contains(index) && Contains("weight_map"));
  // A shard cut short: its last tensor's data offsets run past the end of the file.
  s.write_index(R"("a.f32": "model-00001-of-00002.safetensors", "b.big": "model-00001-of-00002.safetensors")");
  const fs::path shard = s.dir / "model-00001-of-00002.safetensors";
  fs::resize_file(shard, fs::file_size(shard) - 10);
  REQUIRE_THROWS_WITH(SafetensorsModel::open(s.dir.path),
                      Contains(shard.string()) && Contains("'b.big'") && Contains("outside the data region"));
}
