// The GGUF writer and reader (include/peft/io/gguf_*.hpp): a written file reads back with the same
// metadata and tensors, tensor data sits at aligned offsets, a Q8_0 block has the layout ggml
// defines (checked against a block computed by hand), and a damaged file is refused by name.
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "peft/io/gguf_reader.hpp"
#include "peft/io/gguf_writer.hpp"

using namespace peft;
using namespace peft::gguf;
namespace fs = std::filesystem;

namespace {

fs::path temp_path(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("peft_test_gguf_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir / name;
}

std::vector<float> ramp(std::size_t n, float scale) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = scale * (static_cast<float>(i % 17) - 8.0f);
  return v;
}

}  // namespace

TEST_CASE("gguf round trip: metadata and tensors of every type read back") {
  GgufWriter w;
  w.set_string("general.architecture", "qwen2");
  w.set_u32("qwen2.block_count", 2);
  w.set_f32("qwen2.rope.freq_base", 1e6f);
  w.set_bool("tokenizer.ggml.add_bos_token", false);
  w.set_strings("tokenizer.ggml.tokens", {"a", "bc", "<|im_end|>"});
  w.set_i32s("tokenizer.ggml.token_type", {1, 1, 3});
  const auto m = ramp(3 * 64, 0.25f);
  const auto bias = ramp(5, 0.5f);
  for (TensorType t : {TensorType::F32, TensorType::F16, TensorType::BF16, TensorType::Q8_0})
    w.add_tensor(std::string("m_") + std::string(tensor_type_name(t)), {3, 64}, t,
                 [&](std::span<float> out) { std::copy(m.begin(), m.end(), out.begin()); });
  w.add_tensor("bias", {5}, TensorType::F32, [&](std::span<float> out) { std::copy(bias.begin(), bias.end(), out.begin()); });
  const fs::path p = temp_path("round_trip.gguf");
  w.write(p);

  const GgufFile f = GgufFile::open(p);
  CHECK(f.version() == 3);
  CHECK(f.string("general.architecture") == "qwen2");
  CHECK(f.integer("qwen2.block_count") == 2);
  CHECK(f.number("qwen2.rope.freq_base") == 1e6);
  CHECK(std::get<bool>(f.value("tokenizer.ggml.add_bos_token").scalar) == false);
  CHECK(f.value("tokenizer.ggml.tokens").strings == std::vector<std::string>{"a", "bc", "<|im_end|>"});
  CHECK(f.value("tokenizer.ggml.token_type").numbers == std::vector<double>{1, 1, 3});
  REQUIRE(f.tensors().size() == 5);
  CHECK(f.tensor("m_f32").shape == std::vector<std::int64_t>{3, 64});
  CHECK(f.read_f32("m_f32") == m);
  CHECK(f.read_f32("bias") == bias);
  // The ramp's values (multiples of 0.25 up to 2) are exact in f16 and bf16, and q8_0 with a block
  // maximum of 2 has a step of 2/127: each value within half a step.
  CHECK(f.read_f32("m_f16") == m);
  CHECK(f.read_f32("m_bf16") == m);
  const auto q = f.read_f32("m_q8_0");
  for (std::size_t i = 0; i < m.size(); ++i) CHECK(std::fabs(q[i] - m[i]) <= 0.5f * 2.0f / 127.0f + 1e-6f);
}

TEST_CASE("gguf alignment: every tensor starts on a 32-byte boundary, the data section too") {
  GgufWriter w;
  w.set_string("general.name", "odd");  // an odd-length header
  for (int i = 0; i < 3; ++i)
    w.add_tensor("t" + std::to_string(i), {static_cast<std::int64_t>(3 + i)}, TensorType::F32,
                 [](std::span<float> out) { std::fill(out.begin(), out.end(), 1.0f); });
  const fs::path p = temp_path("align.gguf");
  w.write(p);
  const GgufFile f = GgufFile::open(p);
  CHECK(f.data_offset() % 32 == 0);
  for (const auto& t : f.tensors()) CHECK(t.offset % 32 == 0);
  CHECK(fs::file_size(p) % 32 == 0);
}

TEST_CASE("gguf q8_0 block layout: a half scale, then 32 int8 values, against a hand-computed block") {
  // x = -31..0: max |x| = 31, d = 31/127, q_i = round(x_i * 127/31); x = -31 gives -127, x = -1
  // gives round(-4.0968) = -4, x = -16 gives round(-65.548) = -66.
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i - 31);
  std::byte block[kQ8_0BlockBytes];
  encode_values(TensorType::Q8_0, x, block);
  std::uint16_t dh;
  std::memcpy(&dh, block, 2);
  CHECK(dh == float_to_f16(31.0f / 127.0f));
  auto q = [&](int i) { return static_cast<int>(static_cast<std::int8_t>(block[2 + i])); };
  CHECK(q(0) == -127);
  CHECK(q(15) == -66);
  CHECK(q(30) == -4);
  CHECK(q(31) == 0);
  // An all-zero block has d = 0 and q = 0 (no division by zero).
  std::vector<float> zeros(32, 0.0f);
  encode_values(TensorType::Q8_0, zeros, block);
  for (auto b : block) CHECK(b == std::byte{0});
}

TEST_CASE("gguf writer refuses a q8_0 tensor whose rows are not whole blocks") {
  GgufWriter w;
  CHECK_THROWS_WITH(w.add_tensor("w", {2, 48}, TensorType::Q8_0, [](std::span<float>) {}),
                    Catch::Contains("'w'") && Catch::Contains("blocks of 32"));
}

TEST_CASE("gguf reader refuses a truncated file and a wrong magic, naming the file") {
  GgufWriter w;
  w.add_tensor("t", {64}, TensorType::F32, [](std::span<float> out) { std::fill(out.begin(), out.end(), 2.0f); });
  const fs::path p = temp_path("cut.gguf");
  w.write(p);
  fs::resize_file(p, fs::file_size(p) - 8);
  CHECK_THROWS_WITH(GgufFile::open(p), Catch::Contains("cut.gguf") && Catch::Contains("runs past the end"));
  const fs::path bad = temp_path("bad.gguf");
  std::ofstream(bad) << "GGML this is not a gguf file";
  CHECK_THROWS_WITH(GgufFile::open(bad), Catch::Contains("bad.gguf") && Catch::Contains("not a GGUF file"));
}

TEST_CASE("gguf writer: a failed write leaves neither the target nor a temporary file") {
  const fs::path dir = temp_path("failed_write");
  fs::create_directories(dir);
  GgufWriter w;
  w.add_tensor("t", {4}, TensorType::F32, [](std::span<float>) { throw Error("the source tensor is unreadable"); });
  CHECK_THROWS_WITH(w.write(dir / "model.gguf"), Catch::Contains("unreadable"));
  CHECK(fs::is_empty(dir));
}
