// safetensors reader and writer: round trips through each stored dtype, the transformers-saved
// tiny fixture, sharded models, and one test per malformed input, each checking the error names
// the file (and the tensor where there is one).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "peft/io/atomic_file.hpp"
#include "peft/io/safetensors.hpp"
#include "support/temp_dir.hpp"

namespace fs = std::filesystem;
using namespace peft;
using Catch::Contains;
using peft::test::TempDir;

namespace {

// Writes a hand-made file: u64 header length (the real one unless overridden), header, data.
fs::path write_raw(const fs::path& p, const std::string& header, std::size_t data_bytes,
                   std::uint64_t header_len = UINT64_MAX) {
  if (header_len == UINT64_MAX) header_len = header.size();
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&header_len), 8);
  out << header;
  out << std::string(data_bytes, '\0');
  return p;
}

std::vector<float> sample_values() { return {1.0f, -2.5f, 3.14159265f, 1e-3f, -65000.0f, 0.0f}; }

const fs::path kTinyModel = fs::path(PEFT_FIXTURES) / "tiny_public" / "model";

}  // namespace

TEST_CASE("safetensors round trip stores F32 exactly and BF16/F16 rounded to nearest even") {
  TempDir dir("roundtrip");
  const std::vector<float> v = sample_values();
  const std::vector<std::int64_t> ids = {7, -1, 1LL << 40};

  SafetensorsWriter w;
  w.add_f32("f32", {2, 3}, v, DType::F32);
  w.add_f32("bf16", {3, 2}, v, DType::BF16);
  w.add_f32("f16", {6}, v, DType::F16);
  w.add("ids", DType::I64, {3}, std::as_bytes(std::span<const std::int64_t>(ids)));
  w.set_metadata("format", "pt");
  const fs::path file = dir / "t.safetensors";
  w.write(file);

  auto f = SafetensorsFile::open(file);
  REQUIRE(f.names() == std::vector<std::string>{"bf16", "f16", "f32", "ids"});
  REQUIRE(f.metadata().at("format") == "pt");
  REQUIRE(f.tensor("bf16").dtype == DType::BF16);
  REQUIRE(f.tensor("bf16").shape == std::vector<std::int64_t>{3, 2});
  REQUIRE(f.tensor("f16").nbytes == 12);
  REQUIRE(f.tensor("f32").numel() == 6);

  REQUIRE(f.read_f32("f32", {2, 3}) == v);
  const std::vector<float> bf16 = f.read_f32("bf16", {3, 2});
  const std::vector<float> f16 = f.read_f32("f16", {6});
  for (std::size_t i = 0; i < v.size(); ++i) {
    CHECK(bf16[i] == round_to_bf16(v[i]));
    CHECK(f16[i] == f16_to_float(float_to_f16(v[i])));
  }
  CHECK(bf16[0] == 1.0f);
  CHECK(f16[1] == -2.5f);
  CHECK(f16[2] == Approx(3.140625f));  // 3.14159 in half precision
  CHECK(bf16[2] == 3.140625f);

  std::vector<std::int64_t> ids_back(3);
  std::memcpy(ids_back.data(), f.tensor("ids").data, 24);
  REQUIRE(ids_back == ids);

  SafetensorsModel m = SafetensorsModel::open(file);  // a file path works as a model too
  REQUIRE(m.contains("f32"));
  REQUIRE_FALSE(m.contains("nope"));
  std::array<std::int64_t, 2> shape{2, 3};
  std::vector<float> out(6);
  m.read_f32("f32", shape, out.data());
  REQUIRE(out == v);
}

TEST_CASE("safetensors file bytes match the reference implementation") {
  // The reference header below is what safetensors.torch.save_file wrote for
  // {"b": tensor([1., 2.]), "a": tensor([[1., 2.]], dtype=bfloat16)}, metadata={"format": "pt"}:
  // wider dtypes first, then by name; padded with spaces to a multiple of 8.
  SafetensorsWriter w;
  const std::vector<float> v = {1.0f, 2.0f};
  w.add_f32("b", {2}, v);
  w.add_f32("a", {1, 2}, v, DType::BF16);
  w.set_metadata("format", "pt");
  const std::string reference =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"BF16","shape":[1,2],"data_offsets":[8,12]}}  )";
  REQUIRE(w.header() == reference);

  TempDir dir("layout");
  const fs::path file = dir / "ref.safetensors";
  w.write(file);
  std::ifstream in(file, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(bytes.size() == 8 + reference.size() + 12);
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  REQUIRE(header_len == reference.size());
  const std::string data = bytes.substr(8 + reference.size());
  const unsigned char expected_data[12] = {0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0x80, 0x3f, 0, 0x40};
  REQUIRE(std::memcmp(data.data(), expected_data, 12) == 0);

  SafetensorsWriter no_meta;
  no_meta.add_f32("x", {1}, std::span<const float>(v.data(), 1));
  REQUIRE(no_meta.header().find("__metadata__") == std::string::npos);
}

TEST_CASE("safetensors reads the transformers-saved tiny model") {
  SafetensorsModel m = SafetensorsModel::open(kTinyModel);
  REQUIRE(m.names().size() == 3 + 2 * 12);
  REQUIRE(m.tensor("model.embed_tokens.weight").shape == std::vector<std::int64_t>{512, 64});
  REQUIRE(m.tensor("lm_head.weight").shape == std::vector<std::int64_t>{512, 64});
  REQUIRE(m.tensor("model.layers.0.self_attn.k_proj.weight").shape == std::vector<std::int64_t>{32, 64});
  REQUIRE(m.tensor("model.layers.1.mlp.down_proj.weight").shape == std::vector<std::int64_t>{64, 176});
  REQUIRE(m.tensor("model.layers.1.self_attn.q_proj.bias").shape == std::vector<std::int64_t>{64});
  REQUIRE(m.file_of("model.norm.weight").metadata().at("format") == "pt");

  // Values checked against Python's struct.unpack of the same bytes.
  const std::vector<float> norm = m.read_f32("model.norm.weight", {64});
  CHECK(norm[0] == 1.103398323059082f);
  CHECK(norm[63] == 1.0429826974868774f);
  const std::vector<float> bias = m.read_f32("model.layers.1.self_attn.k_proj.bias", {32});
  CHECK(bias[1] == -0.03974723443388939f);
  const std::vector<float> embed = m.read_f32("model.embed_tokens.weight", {512, 64});
  CHECK(embed[0] == -0.09067520499229431f);
  CHECK(embed.back() == -0.11497033387422562f);
}

TEST_CASE("read_f32 rejects a shape mismatch naming file / tensor and both shapes") {
  SafetensorsModel m = SafetensorsModel::open(kTinyModel);
  REQUIRE_THROWS_WITH(m.read_f32("model.embed_tokens.weight", {64, 512}),
                      Contains("model.safetensors") && Contains("model.embed_tokens.weight") &&
                          Contains("[512, 64]") && Contains("[64, 512]"));
  REQUIRE_THROWS_WITH(m.tensor("model.no_such.weight"), Contains("model.safetensors") && Contains("model.no_such.weight"));
}

TEST_CASE("sharded model: index + two shards") {
  TempDir dir("sharded");
  const std::vector<float> a = {1, 2, 3, 4}, b = {5, 6}, c = {7, 8, 9};
  SafetensorsWriter s1, s2;
  s1.add_f32("layer.a", {2, 2}, a);
  s1.add_f32("layer.b", {2}, b, DType::BF16);
  s2.add_f32("layer.c", {3}, c, DType::F16);
  s1.write(dir / "model-00001-of-00002.safetensors");
  s2.write(dir / "model-00002-of-00002.safetensors");
  write_text_atomic(dir / "model.safetensors.index.json",
                    R"({"metadata": {"total_size": 26}, "weight_map": {
                        "layer.a": "model-00001-of-00002.safetensors",
                        "layer.b": "model-00001-of-00002.safetensors",
                        "layer.c": "model-00002-of-00002.safetensors"}})");

  for (const fs::path& p : {dir.path, dir / "model.safetensors.index.json"}) {
    SafetensorsModel m = SafetensorsModel::open(p);
    REQUIRE(m.names() == std::vector<std::string>{"layer.a", "layer.b", "layer.c"});
    REQUIRE(m.read_f32("layer.a", {2, 2}) == a);
    REQUIRE(m.read_f32("layer.b", {2}) == b);
    REQUIRE(m.read_f32("layer.c", {3}) == c);
    REQUIRE(m.file_of("layer.c").path().filename() == "model-00002-of-00002.safetensors");
  }
}

TEST_CASE("sharded model: missing shard and tensor missing from its shard") {
  TempDir dir("sharded_bad");
  SafetensorsWriter s1;
  s1.add_f32("layer.a", {1}, std::vector<float>{1});
  s1.write(dir / "shard1.safetensors");
  const fs::path index = dir / "model.safetensors.index.json";

  write_text_atomic(index, R"({"weight_map": {"layer.a": "shard1.safetensors", "layer.z": "shard2.safetensors"}})");
  REQUIRE_THROWS_WITH(SafetensorsModel::open(dir.path),
                      Contains(index.string()) && Contains("shard2.safetensors") && Contains("does not exist"));

  write_text_atomic(index, R"({"weight_map": {"layer.a": "shard1.safetensors", "layer.q": "shard1.safetensors"}})");
  REQUIRE_THROWS_WITH(SafetensorsModel::open(dir.path), Contains(index.string()) && Contains("layer.q"));

  write_text_atomic(index, R"({"metadata": {}})");
  REQUIRE_THROWS_WITH(SafetensorsModel::open(dir.path), Contains(index.string()) && Contains("weight_map"));

  write_text_atomic(index, R"({"weight_map": {"layer.a": "shard1.safetensors",)");
  REQUIRE_THROWS_WITH(SafetensorsModel::open(dir.path), Contains(index.string()) && Contains("invalid JSON"));
}

TEST_CASE("missing files and folders are named") {
  TempDir dir("missing");
  const fs::path nothing = dir / "nothing.safetensors";
  REQUIRE_THROWS_WITH(SafetensorsFile::open(nothing), Contains(nothing.string()));
  REQUIRE_THROWS_WITH(SafetensorsModel::open(nothing), Contains(nothing.string()));
  REQUIRE_THROWS_WITH(SafetensorsModel::open(dir.path),
                      Contains(dir.path.string()) && Contains("no model.safetensors"));
  REQUIRE_THROWS_WITH(SafetensorsFile::open(dir.path), Contains(dir.path.string()));
}

TEST_CASE("bad safetensors: file too small / header length too large or past the end") {
  TempDir dir("bad_sizes");
  const fs::path tiny = dir / "tiny.safetensors";
  std::ofstream(tiny, std::ios::binary) << "abc";
  REQUIRE_THROWS_WITH(SafetensorsFile::open(tiny), Contains(tiny.string()) && Contains("too small"));

  const fs::path empty = dir / "empty.safetensors";
  std::ofstream(empty, std::ios::binary).flush();
  REQUIRE_THROWS_WITH(SafetensorsFile::open(empty), Contains(empty.string()) && Contains("too small"));

  const fs::path huge = write_raw(dir / "huge.safetensors", "{}", 0, 1ULL << 40);
  REQUIRE_THROWS_WITH(SafetensorsFile::open(huge), Contains(huge.string()) && Contains("exceeds the limit"));

  const fs::path past = write_raw(dir / "past.safetensors", "{}", 16, 1000);
  REQUIRE_THROWS_WITH(SafetensorsFile::open(past), Contains(past.string()) && Contains("past the end"));
}

TEST_CASE("bad safetensors: header is not JSON or not an object") {
  TempDir dir("bad_json");
  const fs::path bad = write_raw(dir / "bad.safetensors", R"({"a": {"dtype": "F32",)", 0);
  REQUIRE_THROWS_WITH(SafetensorsFile::open(bad), Contains(bad.string()) && Contains("invalid JSON"));
  const fs::path arr = write_raw(dir / "arr.safetensors", "[1, 2]", 0);
  REQUIRE_THROWS_WITH(SafetensorsFile::open(arr), Contains(arr.string()) && Contains("JSON object"));
  const fs::path meta = write_raw(dir / "meta.safetensors", R"({"__metadata__": {"format": 1}})", 0);
  REQUIRE_THROWS_WITH(SafetensorsFile::open(meta), Contains(meta.string()) && Contains("__metadata__"));
}

TEST_CASE("bad safetensors: tensor entries") {
  TempDir dir("bad_entries");
  struct Case {
    const char* what;
    std::string header;
    std::size_t data_bytes;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"missing dtype", R"({"w": {"shape": [2], "data_offsets": [0, 8]}})", 8, "missing 'dtype'"},
      {"missing shape", R"({"w": {"dtype": "F32", "data_offsets": [0, 8]}})", 8, "missing 'shape'"},
      {"missing offsets", R"({"w": {"dtype": "F32", "shape": [2]}})", 8, "missing 'data_offsets'"},
      {"unknown dtype", R"({"w": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}})", 16, "unknown dtype 'F64'"},
      {"offsets past the data", R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8,
       "outside the data region"},
      {"begin > end", R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}})", 8, "begin > end"},
      {"negative offset", R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}})", 8, "non-negative"},
      {"size mismatch", R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8, "needs 12 bytes"},
      {"negative dim", R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8, "negative dimension"},
      {"non-integer dim", R"({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})", 8, "integers"},
      {"overflowing shape", R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})",
       8, "too large"},
      {"entry not an object", R"({"w": [1, 2]})", 8, "must be an object"},
  };
  for (const Case& c : cases) {
    SECTION(c.what) {
      const fs::path p = write_raw(dir / "bad.safetensors", c.header, c.data_bytes);
      REQUIRE_THROWS_WITH(SafetensorsFile::open(p), Contains(p.string()) && Contains("'w'") && Contains(c.message));
    }
  }
}

TEST_CASE("bad safetensors: overlapping tensors and a truncated data region") {
  TempDir dir("bad_overlap");
  const fs::path overlap = write_raw(
      dir / "overlap.safetensors",
      R"({"first": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
      R"( "second": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
      12);
  REQUIRE_THROWS_WITH(SafetensorsFile::open(overlap),
                      Contains(overlap.string()) && Contains("'first'") && Contains("'second'") && Contains("overlap"));

  // A real file cut short: the last tensor's bytes are gone.
  SafetensorsWriter w;
  w.add_f32("a", {4}, std::vector<float>{1, 2, 3, 4});
  w.add_f32("z", {4}, std::vector<float>{1, 2, 3, 4});
  const fs::path cut = dir / "cut.safetensors";
  w.write(cut);
  fs::resize_file(cut, fs::file_size(cut) - 4);
  REQUIRE_THROWS_WITH(SafetensorsFile::open(cut), Contains(cut.string()) && Contains("'z'") && Contains("outside"));
}

TEST_CASE("safetensors writer rejects inconsistent tensors") {
  SafetensorsWriter w;
  const std::vector<float> v = {1, 2, 3};
  REQUIRE_THROWS_WITH(w.add_f32("w", {2, 2}, v), Contains("'w'") && Contains("[2, 2]"));
  w.add_f32("w", {3}, v);
  REQUIRE_THROWS_WITH(w.add_f32("w", {3}, v), Contains("'w'") && Contains("twice"));
  REQUIRE_THROWS_WITH(w.add_f32("__metadata__", {3}, v), Contains("reserved"));
  REQUIRE_THROWS_WITH(w.add_f32("i", {3}, v, DType::I32), Contains("'i'"));
}

TEST_CASE("a borrowed F32 tensor writes the caller's values at write time, the same bytes as a copied one") {
  TempDir dir("borrowed");
  std::vector<float> v = sample_values();
  SafetensorsWriter copied, borrowed;
  copied.add_f32("a", {2, 3}, v);
  copied.add_f32("b", {6}, v, DType::BF16);
  borrowed.add_f32_borrowed("a", {2, 3}, v);
  borrowed.add_f32_borrowed("b", {6}, v, DType::BF16);  // rounded: converted now, into its own buffer
  copied.write(dir / "copied.safetensors");
  borrowed.write(dir / "borrowed.safetensors");
  auto bytes = [](const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  REQUIRE(bytes(dir / "copied.safetensors") == bytes(dir / "borrowed.safetensors"));

  // No copy: a change between add and write is what the file holds (F32 only).
  v[0] = 42.0f;
  borrowed.write(dir / "later.safetensors");
  const auto f = SafetensorsFile::open(dir / "later.safetensors");
  const std::vector<float> a = f.read_f32("a", {2, 3}), b = f.read_f32("b", {6});
  REQUIRE(a[0] == 42.0f);
  REQUIRE(b[0] == 1.0f);
  REQUIRE_THROWS_WITH(borrowed.add_f32_borrowed("c", {4}, v), Contains("'c'") && Contains("[4]"));
  REQUIRE_THROWS_WITH(borrowed.add_f32_borrowed("a", {6}, v), Contains("'a'") && Contains("twice"));
}

TEST_CASE("atomic writes replace files and directories whole") {
  TempDir dir("atomic");
  const fs::path file = dir / "sub" / "a.txt";
  write_text_atomic(file, "first");
  write_text_atomic(file, "second");
  std::ifstream in(file);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(text == "second");

  const fs::path ckpt = dir / "checkpoint-1";
  write_directory_atomic(ckpt, [](const fs::path& staging) { write_text_atomic(staging / "v1.txt", "1"); });
  write_directory_atomic(ckpt, [](const fs::path& staging) { write_text_atomic(staging / "v2.txt", "2"); });
  REQUIRE_FALSE(fs::exists(ckpt / "v1.txt"));
  REQUIRE(fs::exists(ckpt / "v2.txt"));

  // A failing fill leaves the previous directory and no staging leftovers.
  REQUIRE_THROWS_WITH(write_directory_atomic(ckpt, [](const fs::path&) { peft::fail("disk full"); }),
                      Contains("disk full"));
  REQUIRE(fs::exists(ckpt / "v2.txt"));
  std::size_t entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) entries += e.path().filename() != "sub";
  REQUIRE(entries == 1);  // only checkpoint-1: no .tmp- or .old- siblings left
}

// Issue 17, item 13: inputs other loaders read differently must be refused, not guessed at.
TEST_CASE("bad safetensors: a tensor name given twice in the header") {
  TempDir dir("dup_key");
  const fs::path p = write_raw(dir / "dup.safetensors",
                               R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                               R"( "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                               8);
  REQUIRE_THROWS_WITH(SafetensorsFile::open(p), Contains(p.string()) && Contains("'w' twice"));
  // The same name inside __metadata__ and as a nested key elsewhere is not a duplicate tensor.
  const fs::path ok = write_raw(dir / "ok.safetensors",
                                R"({"__metadata__": {"w": "x"}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
                                4);
  REQUIRE(SafetensorsFile::open(ok).names() == std::vector<std::string>{"w"});
  // A number past a double's range (found by tests/test_fuzz_inputs.cpp) is a named error too.
  const fs::path big = write_raw(dir / "big.safetensors", R"({"w": {"dtype": "F32", "shape": [1e400], "data_offsets": [0, 4]}})", 4);
  REQUIRE_THROWS_WITH(SafetensorsFile::open(big), Contains(big.string()) && Contains("number overflow"));
}

TEST_CASE("sharded model: a tensor stored in two shards is refused naming both") {
  TempDir dir("two_shards");
  SafetensorsWriter s1, s2;
  s1.add_f32("layer.a", {1}, std::vector<float>{1});
  s2.add_f32("layer.a", {1}, std::vector<float>{2});
  s2.add_f32("layer.b", {1}, std::vector<float>{3});
  s1.write(dir / "shard1.safetensors");
  s2.write(dir / "shard2.safetensors");
  write_text_atomic(dir / "model.safetensors.index.json",
                    R"({"weight_map": {"layer.a": "shard1.safetensors", "layer.b": "shard2.safetensors"}})");
  REQUIRE_THROWS_WITH(SafetensorsModel::open(dir.path), Contains("'layer.a'") && Contains("two shards") &&
                                                            Contains("shard1.safetensors") &&
                                                            Contains("shard2.safetensors"));
}

TEST_CASE("sharded model: shard paths outside the model folder are refused") {
  TempDir dir("escape");
  fs::create_directories(dir / "model");
  SafetensorsWriter s;
  s.add_f32("layer.a", {1}, std::vector<float>{1});
  s.write(dir / "outside.safetensors");
  const fs::path index = dir / "model" / "model.safetensors.index.json";
  for (const std::string& shard : std::vector<std::string>{"../outside.safetensors", (dir / "outside.safetensors").string(),
                                                            "sub/../../outside.safetensors"}) {
    write_text_atomic(index, nlohmann::json{{"weight_map", {{"layer.a", shard}}}}.dump());
    REQUIRE_THROWS_WITH(SafetensorsModel::open(dir / "model"),
                        Contains(index.string()) && Contains(shard) && Contains("inside the model folder"));
  }
}

TEST_CASE("a folder with both model.safetensors and an index loads model.safetensors, as transformers does") {
  TempDir dir("both");
  SafetensorsWriter single, shard;
  single.add_f32("layer.a", {1}, std::vector<float>{1});
  shard.add_f32("layer.a", {1}, std::vector<float>{2});
  single.write(dir / "model.safetensors");
  shard.write(dir / "shard1.safetensors");
  write_text_atomic(dir / "model.safetensors.index.json", R"({"weight_map": {"layer.a": "shard1.safetensors"}})");
  const SafetensorsModel m = SafetensorsModel::open(dir.path);
  REQUIRE(m.source() == dir / "model.safetensors");
  REQUIRE(m.read_f32("layer.a", {1}) == std::vector<float>{1});
}
