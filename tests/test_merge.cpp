// merge_lora round trips: the merged model's logits equal the base + unmerged adapter's, each
// merged weight is exactly W + (B @ A) * alpha / r rounded once to the base dtype, sharding and
// the other files come through unchanged (or, with max_shard_size, are cut as save_pretrained
// cuts them), and bad inputs fail with the file and tensor named, leaving no output behind.
// (transformers loading the result is checked by tools/reference/make_generate_golden.py:
// tests/fixtures/generate/merge_check.json.)
#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <optional>

#include "peft/io/gguf_qwen2.hpp"
#include "peft/io/gguf_reader.hpp"
#include "peft/io/merge_lora.hpp"
#include "peft/io/peft_adapter.hpp"
#include "peft/models/qwen2.hpp"
#include "support/fixture.hpp"

using namespace peft;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("peft_test_merge_" + name);
  fs::remove_all(p);
  return p;
}

Matrix logits_of(auto& model, const std::vector<std::int32_t>& ids) {
  return model.logits(PackedBatch::of(Sample{ids, std::vector<std::int32_t>(ids.size(), kIgnoreIndex)}));
}

// tiny_public's weights re-saved in `dtype`, split over two shards with an index, plus a
// tokenizer-like file, as a sharded bf16 checkpoint from the Hub is laid out.
void write_sharded_copy(const fs::path& out, DType dtype) {
  const auto src = SafetensorsFile::open(test::fixture("tiny_public") / "model" / "model.safetensors");
  fs::create_directories(out);
  SafetensorsWriter shard[2];
  nlohmann::json map;
  for (const auto& name : src.names()) {
    const auto& t = src.tensor(name);
    Matrix m(1, t.numel());
    src.read_f32(name, t.shape, m.data());
    const int s = name.find("layers.1.") != std::string::npos || name.starts_with("lm_head") ? 1 : 0;
    const auto file = fmt::format("model-0000{}-of-00002.safetensors", s + 1);
    shard[s].add_f32(name, t.shape, std::span<const float>(m.data(), static_cast<std::size_t>(m.size())), dtype);
    map[name] = file;
  }
  for (int s = 0; s < 2; ++s) {
    shard[s].set_metadata("format", "pt");
    shard[s].write(out / fmt::format("model-0000{}-of-00002.safetensors", s + 1));
  }
  const nlohmann::json index{{"metadata", {{"total_size", 1}}}, {"weight_map", map}};
  write_text_atomic(out / "model.safetensors.index.json", index.dump(1));
  fs::copy_file(test::fixture("tiny_public") / "model" / "config.json", out / "config.json");
  write_text_atomic(out / "tokenizer_config.json", "{\"model_max_length\": 256}\n");
}

// A re-sharded merged folder against the same merge written in the base's layout (`ref`): `files`
// hold every tensor once with the same dtype and bytes and the base shards' metadata, each within
// `max` bytes unless it holds one tensor over it; the index (several files) names each tensor's
// file and the total, and one file has no index. Returns the total bytes.
std::int64_t check_resharded(const fs::path& out, const fs::path& ref, std::int64_t max,
                             const std::vector<std::string>& files) {
  const auto want = SafetensorsModel::open(ref);
  std::map<std::string, std::string> holder;  // tensor -> file
  std::int64_t total = 0;
  for (const auto& file : files) {
    INFO(file);
    const auto f = SafetensorsFile::open(out / file);
    CHECK(f.metadata() == std::map<std::string, std::string>{{"format", "pt"}});
    std::int64_t bytes = 0;
    for (const auto& name : f.names()) {
      const auto &t = f.tensor(name), &w = want.tensor(name);
      bytes += static_cast<std::int64_t>(t.nbytes);
      CHECK(holder.emplace(name, file).second);
      CHECK(t.dtype == w.dtype);
      CHECK((t.nbytes == w.nbytes && std::memcmp(t.data, w.data, t.nbytes) == 0));
    }
    CHECK((bytes <= max || f.names().size() == 1));
    total += bytes;
  }
  CHECK(holder.size() == want.names().size());
  if (files.size() > 1) {
    const auto index = read_json_file(out / "model.safetensors.index.json");
    CHECK(index["metadata"]["total_size"] == total);
    CHECK(index["weight_map"] == nlohmann::json(holder));
  } else {
    CHECK(!fs::exists(out / "model.safetensors.index.json"));
  }
  for (const auto& entry : fs::directory_iterator(out))  // no other weights file beside them
    if (entry.path().extension() == ".safetensors")
      CHECK(std::find(files.begin(), files.end(), entry.path().filename().string()) != files.end());
  return total;
}

// PEFT's delta (B @ A) * scaling as merge_lora defines its bits: each element summed over the rank
// in double (exact products), scaled, then rounded to float.
Matrix lora_delta(const Matrix& b, const Matrix& a, float scaling) {
  Matrix d(b.rows(), a.cols());
  for (Eigen::Index i = 0; i < b.rows(); ++i)
    for (Eigen::Index j = 0; j < a.cols(); ++j) {
      double sum = 0.0;
      for (Eigen::Index k = 0; k < a.rows(); ++k) sum += static_cast<double>(b(i, k)) * static_cast<double>(a(k, j));
      d(i, j) = static_cast<float>(sum * static_cast<double>(scaling));
    }
  return d;
}

std::int64_t stored_bytes(const fs::path& model_dir) {
  const auto m = SafetensorsModel::open(model_dir);
  std::int64_t bytes = 0;
  for (const auto& name : m.names()) bytes += static_cast<std::int64_t>(m.tensor(name).nbytes);
  return bytes;
}

std::size_t gguf_tensors(const fs::path& model_dir, const fs::path& gguf) {
  gguf::write_qwen2_gguf(model_dir, gguf, gguf::TensorType::F32, "t");
  return gguf::GgufFile::open(gguf).tensors().size();
}

std::unique_ptr<Qwen2<Lora<>, Fp32, Cpu>> with_adapter(const fs::path& model, const fs::path& adapter) {
  LoraConfig lora = read_adapter_config(adapter);
  lora.lora_dropout = 0;
  auto m = Qwen2<Lora<>, Fp32, Cpu>::from_pretrained(model, lora, 0);
  load_adapter_weights(adapter, m->trainable_parameters());
  return m;
}

}  // namespace

TEST_CASE("merged logits equal the unmerged adapter's (fp32)", "[merge]") {
  const auto tiny = test::fixture("tiny_public");
  const auto out = scratch("fp32");
  const MergeSummary s = merge_lora(tiny / "model", tiny / "adapter_trained", out);
  CHECK(s.merged_modules == 14);
  CHECK(s.shards == std::vector<std::string>{"model.safetensors"});
  for (const char* f : {"config.json", "generation_config.json"})
    CHECK(read_text_file(out / f) == read_text_file(tiny / "model" / f));

  auto merged = Qwen2<Frozen, Fp32, Cpu>::from_pretrained(out, LoraConfig{}, 0);
  auto unmerged = with_adapter(tiny / "model", tiny / "adapter_trained");
  // x (W + BA s) vs x W + (x A^T) B^T s: fp32 in a different association, ~1e-6 of the logit
  // scale (HF measured 4.6e-6 on the same pair, merge_check.json); 1e-4 absolute is the bound.
  for (const auto& sample : test::fixture_samples("tiny_public")) {
    const Matrix a = logits_of(*merged, sample.input_ids), b = logits_of(*unmerged, sample.input_ids);
    CHECK((a - b).cwiseAbs().maxCoeff() <= 1e-4);
  }
  // And the adapter matters: the base alone is far from both.
  auto base = Qwen2<Frozen, Fp32, Cpu>::from_pretrained(tiny / "model", LoraConfig{}, 0);
  const auto ids = test::fixture_samples("tiny_public")[0].input_ids;
  CHECK((logits_of(*base, ids) - logits_of(*merged, ids)).cwiseAbs().maxCoeff() > 0.1);
  fs::remove_all(out);
}

TEST_CASE("bf16 sharded base: same shards / same dtype / each weight rounded once", "[merge]") {
  const auto tiny = test::fixture("tiny_public");
  const auto base_dir = scratch("bf16_base"), out = scratch("bf16_out");
  write_sharded_copy(base_dir, DType::BF16);
  const MergeSummary s = merge_lora(base_dir, tiny / "adapter_trained", out);
  CHECK(s.shards == std::vector<std::string>{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"});
  for (const char* f : {"model.safetensors.index.json", "tokenizer_config.json"})
    CHECK(read_text_file(out / f) == read_text_file(base_dir / f));

  const auto in_model = SafetensorsModel::open(base_dir), out_model = SafetensorsModel::open(out);
  REQUIRE(out_model.names() == in_model.names());
  const auto adapter = SafetensorsFile::open(tiny / "adapter_trained" / "adapter_model.safetensors");
  const float scaling = 32.0f / 8.0f;
  for (const auto& name : in_model.names()) {
    const auto& t = out_model.tensor(name);
    CHECK(t.dtype == DType::BF16);
    CHECK(out_model.file_of(name).path().filename() == in_model.file_of(name).path().filename());
    const auto got = out_model.read_f32(name, t.shape);
    auto want = in_model.read_f32(name, t.shape);
    const std::string module = name.substr(0, name.size() - 7);
    const std::string a_key = std::string(kPeftKeyPrefix) + module + ".lora_A.weight";
    if (name.ends_with(".weight") && adapter.contains(a_key)) {
      const auto& at = adapter.tensor(a_key);
      const std::string b_key = std::string(kPeftKeyPrefix) + module + ".lora_B.weight";
      const auto& bt = adapter.tensor(b_key);
      Matrix a(at.shape[0], at.shape[1]), b(bt.shape[0], bt.shape[1]);
      adapter.read_f32(a_key, at.shape, a.data());
      adapter.read_f32(b_key, bt.shape, b.data());
      const Matrix delta = lora_delta(b, a, scaling);
      for (std::size_t i = 0; i < want.size(); ++i) want[i] = round_to_bf16(want[i] + delta.data()[i]);
    }
    INFO(name);
    CHECK(got == want);  // bit-exact: one fp32 sum, one rounding, as PEFT's in-place add
  }
  fs::remove_all(base_dir);
  fs::remove_all(out);
}

TEST_CASE("merge rejects an adapter that does not fit / naming the file and tensor", "[merge]") {
  const auto tiny = test::fixture("tiny_public");
  const auto out = scratch("bad");
  CHECK_THROWS_WITH(merge_lora(tiny / "model", test::fixture("batch2_ga2_linear") / "adapter", out),
                    Catch::Contains("batch2_ga2_linear/adapter/adapter_model.safetensors") &&
                        Catch::Contains("base_model.model.model.layers.0.") && Catch::Contains("another model"));
  CHECK_FALSE(fs::exists(out));

  // A tensor that is not LoRA A/B, a lone A, a rank that disagrees with adapter_config.json.
  const auto bad = scratch("bad_adapter");
  fs::create_directories(bad);
  fs::copy_file(tiny / "adapter_trained" / "adapter_config.json", bad / "adapter_config.json");
  const std::vector<float> a(8 * 64, 0.0f), wrong_rank(4 * 64, 0.0f);
  auto write_adapter = [&](const std::string& name, std::vector<std::int64_t> shape, const std::vector<float>& v) {
    SafetensorsWriter w;
    w.add_f32(name, shape, v);
    w.write(bad / "adapter_model.safetensors");
  };
  write_adapter("base_model.model.model.embed_tokens.weight", {8, 64}, a);
  CHECK_THROWS_WITH(merge_lora(tiny / "model", bad, out),
                    Catch::Contains("'base_model.model.model.embed_tokens.weight' is not a LoRA A or B weight"));
  write_adapter("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {8, 64}, a);
  CHECK_THROWS_WITH(merge_lora(tiny / "model", bad, out),
                    Catch::Contains("module 'model.layers.0.self_attn.q_proj' has a lora_A but no lora_B"));
  write_adapter("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {4, 64}, wrong_rank);
  CHECK_THROWS_WITH(merge_lora(tiny / "model", bad, out), Catch::Contains("has shape [4, 64], but r = 8"));
  write_adapter("base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight", {8, 64}, a);
  CHECK_THROWS_WITH(merge_lora(tiny / "model", bad, out), Catch::Contains("lora_B"));

  fs::remove(bad / "adapter_model.safetensors");
  CHECK_THROWS_WITH(merge_lora(tiny / "model", bad, out), Catch::Contains("bad_adapter/adapter_model.safetensors"));
  CHECK_THROWS_WITH(merge_lora(tiny / "nowhere", tiny / "adapter_trained", out), Catch::Contains("nowhere"));
  CHECK_THROWS_WITH(merge_lora(tiny / "model", tiny / "adapter_trained", tiny / "model"),
                    Catch::Contains("is an input folder"));
  CHECK_FALSE(fs::exists(out));
  fs::remove_all(bad);
}

TEST_CASE("merge names a base module the adapter targets but the model lacks", "[merge]") {
  const auto tiny = test::fixture("tiny_public");
  const auto bad = scratch("extra_layer"), out = scratch("extra_layer_out");
  fs::create_directories(bad);
  fs::copy_file(tiny / "adapter_trained" / "adapter_config.json", bad / "adapter_config.json");
  SafetensorsWriter w;
  w.add_f32("base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight", {8, 64}, std::vector<float>(8 * 64));
  w.add_f32("base_model.model.model.layers.9.self_attn.q_proj.lora_B.weight", {64, 8}, std::vector<float>(64 * 8));
  w.write(bad / "adapter_model.safetensors");
  CHECK_THROWS_WITH(merge_lora(tiny / "model", bad, out),
                    Catch::Contains("no tensor 'model.layers.9.self_attn.q_proj.weight'"));
  CHECK_FALSE(fs::exists(out));
  fs::remove_all(bad);
}

TEST_CASE("an rsLoRA adapter (use_rslora) runs and merges with alpha / sqrt(r)", "[merge]") {
  const auto tiny = test::fixture("tiny_public");
  const auto rs = scratch("rslora_adapter"), same = scratch("rslora_same"), out = scratch("rslora_out");
  // The trained adapter's tensors under three configs: use_rslora, and plain with alpha x sqrt(r).
  auto config = read_json_file(tiny / "adapter_trained" / "adapter_config.json");
  for (const auto& [dir, rslora, alpha] : {std::tuple{rs, true, 32.0}, std::tuple{same, false, 32.0 * std::sqrt(8.0)}}) {
    fs::create_directories(dir);
    fs::copy_file(tiny / "adapter_trained" / "adapter_model.safetensors", dir / "adapter_model.safetensors");
    config["use_rslora"] = rslora;
    config["lora_alpha"] = alpha;
    write_text_atomic(dir / "adapter_config.json", config.dump(2));
  }
  const LoraConfig read = read_adapter_config(rs);
  CHECK(read.use_rslora);
  CHECK(read.scaling() == Approx(32.0 / std::sqrt(8.0)).epsilon(1e-15));
  CHECK(adapter_config_json(read, "base")["use_rslora"] == true);  // and written back as read

  // The same update as plain LoRA with alpha x sqrt(r) (bit for bit: the same float scaling), not
  // as plain LoRA with alpha.
  auto with_rs = with_adapter(tiny / "model", rs), with_same = with_adapter(tiny / "model", same);
  auto plain = with_adapter(tiny / "model", tiny / "adapter_trained");
  const auto ids = test::fixture_samples("tiny_public")[0].input_ids;
  const Matrix l_rs = logits_of(*with_rs, ids);
  CHECK((l_rs - logits_of(*with_same, ids)).cwiseAbs().maxCoeff() == 0.0f);
  CHECK((l_rs - logits_of(*plain, ids)).cwiseAbs().maxCoeff() > 1e-3);

  // Merged: the logits of the unmerged rsLoRA adapter (bound as in the fp32 case above).
  merge_lora(tiny / "model", rs, out);
  auto merged = Qwen2<Frozen, Fp32, Cpu>::from_pretrained(out, LoraConfig{}, 0);
  for (const auto& sample : test::fixture_samples("tiny_public"))
    CHECK((logits_of(*merged, sample.input_ids) - logits_of(*with_rs, sample.input_ids)).cwiseAbs().maxCoeff() <= 1e-4);

  config["use_rslora"] = "yes";  // not a boolean: named, with the file
  write_text_atomic(rs / "adapter_config.json", config.dump(2));
  CHECK_THROWS_WITH(read_adapter_config(rs), Catch::Contains("adapter_config.json: field 'use_rslora' must be true or "
                                                              "false, got \"yes\""));
  for (const auto& d : {rs, same, out}) fs::remove_all(d);
}

TEST_CASE("store_as (--torch_dtype): every floating tensor in that dtype and rounded once - config and index agree",
          "[merge]") {
  const auto tiny = test::fixture("tiny_public");
  const auto base_dir = scratch("dtype_base"), out = scratch("dtype_out");
  write_sharded_copy(base_dir, DType::BF16);
  const auto in_model = SafetensorsModel::open(base_dir);
  const auto adapter = SafetensorsFile::open(tiny / "adapter_trained" / "adapter_model.safetensors");
  for (const DType to : {DType::F16, DType::F32}) {
    fs::remove_all(out);
    merge_lora(base_dir, tiny / "adapter_trained", out, {.store_as = to});
    const auto out_model = SafetensorsModel::open(out);
    REQUIRE(out_model.names() == in_model.names());
    std::int64_t bytes = 0;
    for (const auto& name : in_model.names()) {
      const auto& t = out_model.tensor(name);
      INFO(name << " as " << dtype_name(to));
      CHECK(t.dtype == to);
      CHECK(out_model.file_of(name).path().filename() == in_model.file_of(name).path().filename());
      bytes += static_cast<std::int64_t>(t.nbytes);
      auto want = in_model.read_f32(name, t.shape);  // bf16 values, exact in f32
      const std::string module = name.substr(0, name.size() - 7);
      const std::string a_key = std::string(kPeftKeyPrefix) + module + ".lora_A.weight";
      if (name.ends_with(".weight") && adapter.contains(a_key)) {
        const std::string b_key = std::string(kPeftKeyPrefix) + module + ".lora_B.weight";
        const auto &at = adapter.tensor(a_key), &bt = adapter.tensor(b_key);
        Matrix a(at.shape[0], at.shape[1]), b(bt.shape[0], bt.shape[1]);
        adapter.read_f32(a_key, at.shape, a.data());
        adapter.read_f32(b_key, bt.shape, b.data());
        const Matrix delta = lora_delta(b, a, 32.0f / 8.0f);
        for (std::size_t i = 0; i < want.size(); ++i) want[i] += delta.data()[i];
      }
      if (to == DType::F16)
        for (auto& v : want) v = f16_to_float(float_to_f16(v));  // one rounding from the fp32 value
      CHECK(out_model.read_f32(name, t.shape) == want);
    }
    const auto config = read_json_file(out / "config.json");
    CHECK(config["dtype"] == (to == DType::F16 ? "float16" : "float32"));  // the fixture's transformers-5 field
    CHECK(!config.contains("torch_dtype"));
    const auto index = read_json_file(out / "model.safetensors.index.json");
    CHECK(index["metadata"]["total_size"] == bytes);
    CHECK(index["weight_map"] == read_json_file(base_dir / "model.safetensors.index.json")["weight_map"]);
    CHECK(read_text_file(out / "tokenizer_config.json") == read_text_file(base_dir / "tokenizer_config.json"));
  }

  // A value f16 cannot hold is refused with the tensor named, and nothing is written.
  const auto big = scratch("dtype_big");
  fs::create_directories(big);
  for (const auto& f : fs::directory_iterator(tiny / "model")) fs::copy_file(f.path(), big / f.path().filename());
  {
    const auto src = SafetensorsFile::open(tiny / "model" / "model.safetensors");
    SafetensorsWriter w;
    for (const auto& name : src.names()) {
      auto v = src.read_f32(name, src.tensor(name).shape);
      if (name == "model.norm.weight") v[3] = 1e6f;
      w.add_f32(name, src.tensor(name).shape, std::span<const float>(v));
    }
    w.write(big / "model.safetensors");
  }
  fs::remove_all(out);
  CHECK_THROWS_WITH(merge_lora(big, tiny / "adapter_trained", out, {.store_as = DType::F16}),
                    Catch::Contains("tensor 'model.norm.weight': value 1000000 at index 3 does not fit F16"));
  CHECK(!fs::exists(out));
  for (const auto& d : {base_dir, out, big}) fs::remove_all(d);
}

TEST_CASE("require_representable: the first value each dtype rounds to inf, and the last it keeps", "[merge]") {
  const auto fits = [](float x, DType t) {
    const float v[] = {0.5f, x};
    try {
      detail::require_representable(v, t, "t");
      return true;
    } catch (const Error&) {
      return false;
    }
  };
  const float bf16_last = std::bit_cast<float>(0x7f7f7fffu), bf16_first = std::bit_cast<float>(0x7f7f8000u);
  CHECK(std::isfinite(round_to_bf16(bf16_last)));  // the thresholds agree with the conversions
  CHECK(std::isinf(round_to_bf16(bf16_first)));
  CHECK(std::isfinite(f16_to_float(float_to_f16(std::nextafter(65520.0f, 0.0f)))));
  CHECK(std::isinf(f16_to_float(float_to_f16(65520.0f))));
  CHECK(fits(bf16_last, DType::BF16));
  CHECK(!fits(-bf16_first, DType::BF16));
  CHECK(fits(std::nextafter(65520.0f, 0.0f), DType::F16));
  CHECK(!fits(-65520.0f, DType::F16));
  CHECK(fits(bf16_first, DType::F32));
}

TEST_CASE("max_shard_size: the sizes transformers reads, and the hub's split", "[merge][shards]") {
  CHECK(parse_max_shard_size("5GB") == 5'000'000'000);
  CHECK(parse_max_shard_size("2GiB") == std::int64_t{2} << 30);
  CHECK(parse_max_shard_size("2gib") == std::int64_t{2} << 30);
  CHECK(parse_max_shard_size("500MiB") == 500 << 20);
  CHECK(parse_max_shard_size("3KiB") == 3 << 10);
  CHECK(parse_max_shard_size("10MB") == 10'000'000);
  CHECK(parse_max_shard_size("3KB") == 3000);
  CHECK(parse_max_shard_size("4096") == 4096);  // bytes
  // A final lowercase b is bits, as convert_file_size_to_int reads it: an eighth, rounded down.
  CHECK(parse_max_shard_size("5Gb") == 625'000'000);
  CHECK(parse_max_shard_size("5gb") == 625'000'000);
  CHECK(parse_max_shard_size("7Kb") == 875);
  CHECK(parse_max_shard_size("1mb") == 125'000);
  for (const char* bad : {"", "0", "0GB", "-5GB", "5TB", "abc", "1.5GB", "GB", " 5GB", "5 GB", "+5GB", "5e9",
                          "99999999999GB", "99999999999999999999"}) {
    INFO("'" << bad << "'");
    CHECK_THROWS_WITH(parse_max_shard_size(bad), Catch::Contains(fmt::format("--max_shard_size '{}'", bad)) &&
                                                     Catch::Contains("e.g. 5GB"));
  }

  // huggingface_hub's own example (tests/test_serialization.py): sizes 6, 10, 30, 2, 2 under 10.
  // The one over 10 is shard 2, numbered before the shard still being filled when it came.
  const std::vector<std::pair<std::string, std::int64_t>> tensors = {
      {"layer_1", 6}, {"layer_2", 10}, {"layer_3", 30}, {"layer_4", 2}, {"layer_5", 2}};
  const ShardPlan plan = plan_shards(tensors, 10);
  CHECK(plan.shards == std::vector<std::vector<std::string>>{{"layer_1"}, {"layer_3"}, {"layer_2"},
                                                             {"layer_4", "layer_5"}});
  CHECK(plan.total_size == 50);
  CHECK(plan.file_name(0) == "model-00001-of-00004.safetensors");
  CHECK(plan.file_name(3) == "model-00004-of-00004.safetensors");
  const ShardPlan one = plan_shards(tensors, 50);
  CHECK(one.shards.size() == 1);
  CHECK(one.file_name(0) == "model.safetensors");

  for (const char* ours : {"model.safetensors", "model.safetensors.index.json", "model-00003-of-00012.safetensors"})
    CHECK(is_shard_output_name(ours));
  for (const char* other : {"model-1-of-2.safetensors", "model-00001-of-00002.safetensors.tmp", "notes.txt",
                            "adapter_model.safetensors", "model-00001-of-00002.bin", "model-00001-00002.safetensors"})
    CHECK_FALSE(is_shard_output_name(other));
}

TEST_CASE("max_shard_size: the merged model cut as save_pretrained cuts it, the loaders read it, --overwrite "
          "replaces it", "[merge][shards]") {
  const auto tiny = test::fixture("tiny_public");
  const auto adapter = tiny / "adapter_trained";
  const auto base_dir = scratch("shard_base"), ref = scratch("shard_ref"), out = scratch("shard_out");
  write_sharded_copy(base_dir, DType::BF16);
  auto base_index = read_json_file(base_dir / "model.safetensors.index.json");
  base_index["metadata"]["total_parameters"] = 12345;  // transformers' newer field: kept
  write_text_atomic(base_dir / "model.safetensors.index.json", base_index.dump(2));
  merge_lora(base_dir, adapter, ref);

  // Walked by hand in the base's order (shard 1's tensors by name, then shard 2's), bf16 bytes:
  // embed_tokens and lm_head 65536 (over 40000: alone), MLP matrices 22528, attention 8192 / 4096.
  // lm_head, met while the shard holding layer 0's last tensors was open, is numbered 5, before
  // that shard (6, which goes on into layer 1 from the base's second file), as the hub does.
  const std::int64_t max = 40000;
  const MergeSummary s = merge_lora(base_dir, adapter, out, {.max_shard_size = max});
  REQUIRE(s.shards.size() == 9);
  for (std::size_t i = 0; i < 9; ++i) CHECK(s.shards[i] == fmt::format("model-{:05d}-of-00009.safetensors", i + 1));
  CHECK(s.merged_modules == 14);
  const std::int64_t total = check_resharded(out, ref, max, s.shards);
  CHECK(total == stored_bytes(base_dir));  // bf16 as stored
  const auto index = read_json_file(out / "model.safetensors.index.json");
  CHECK(index["metadata"]["total_parameters"] == 12345);
  CHECK(SafetensorsFile::open(out / s.shards[0]).names() == std::vector<std::string>{"model.embed_tokens.weight"});
  CHECK(SafetensorsFile::open(out / s.shards[4]).names() == std::vector<std::string>{"lm_head.weight"});
  CHECK(index["weight_map"]["model.norm.weight"] == s.shards[5]);
  CHECK(index["weight_map"]["model.layers.1.input_layernorm.weight"] == s.shards[5]);
  CHECK(SafetensorsFile::open(out / s.shards[1]).names() ==
        std::vector<std::string>{"model.layers.0.input_layernorm.weight", "model.layers.0.mlp.down_proj.weight"});
  CHECK(read_text_file(out / "tokenizer_config.json") == read_text_file(base_dir / "tokenizer_config.json"));
  CHECK(read_text_file(out / "config.json") == read_text_file(base_dir / "config.json"));

  // What export --check and the GGUF read: the same model from either layout.
  auto merged = Qwen2<Frozen, Fp32, Cpu>::from_pretrained(out, LoraConfig{}, 0);
  auto merged_ref = Qwen2<Frozen, Fp32, Cpu>::from_pretrained(ref, LoraConfig{}, 0);
  const auto ids = test::fixture_samples("tiny_public")[0].input_ids;
  CHECK((logits_of(*merged, ids) - logits_of(*merged_ref, ids)).cwiseAbs().maxCoeff() == 0.0f);
  const std::size_t gguf_ref = gguf_tensors(ref, scratch("shard_ref.gguf"));
  CHECK(gguf_tensors(out, scratch("shard_out.gguf")) == gguf_ref);

  // Larger than the model: one model.safetensors, no index (the base's would be stale), over the
  // sharded folder a previous merge wrote (its file names are not the base's: --overwrite takes them).
  const MergeSummary one = merge_lora(base_dir, adapter, out, {.overwrite = true, .max_shard_size = 1'000'000'000});
  CHECK(one.shards == std::vector<std::string>{"model.safetensors"});
  CHECK(check_resharded(out, ref, 1'000'000'000, one.shards) == total);
  CHECK(std::find(one.copied_files.begin(), one.copied_files.end(), "model.safetensors.index.json") ==
        one.copied_files.end());
  CHECK(gguf_tensors(out, scratch("shard_one.gguf")) == gguf_ref);
  auto single = Qwen2<Frozen, Fp32, Cpu>::from_pretrained(out, LoraConfig{}, 0);
  CHECK((logits_of(*single, ids) - logits_of(*merged_ref, ids)).cwiseAbs().maxCoeff() == 0.0f);

  // And back to shards over model.safetensors; a file a merge never writes is still refused.
  CHECK(merge_lora(base_dir, adapter, out, {.overwrite = true, .max_shard_size = max}).shards.size() == 9);
  CHECK_FALSE(fs::exists(out / "model.safetensors"));
  for (const char* foreign : {"notes.txt", "model-1-of-2.safetensors"}) {
    write_text_atomic(out / foreign, "the user's\n");
    CHECK_THROWS_WITH(merge_lora(base_dir, adapter, out, {.overwrite = true, .max_shard_size = max}),
                      Catch::Contains(fmt::format("holds an entry that a merge does not write ({})", foreign)));
    CHECK(fs::exists(out / foreign));
    fs::remove(out / foreign);
  }
  for (const auto& p : {base_dir, ref, out, scratch("shard_ref.gguf"), scratch("shard_out.gguf"),
                        scratch("shard_one.gguf")})
    fs::remove_all(p);
}

TEST_CASE("max_shard_size with store_as (--torch_dtype): sizes counted in the dtype written", "[merge][shards]") {
  const auto tiny = test::fixture("tiny_public");
  const auto adapter = tiny / "adapter_trained";
  const auto base_dir = scratch("shard_dtype_base"), ref = scratch("shard_dtype_ref"), out = scratch("shard_dtype_out");
  write_sharded_copy(base_dir, DType::BF16);
  merge_lora(base_dir, adapter, ref, {.store_as = DType::F32});
  // As F32 every MLP matrix (45056 bytes) is over 40000 and alone; as the base's bf16 (22528) it
  // was not (the previous test: layer 0's down_proj shares a file with a norm).
  const std::int64_t max = 40000;
  const MergeSummary s = merge_lora(base_dir, adapter, out, {.store_as = DType::F32, .max_shard_size = max});
  CHECK(s.shards.size() > 9);
  const std::int64_t total = check_resharded(out, ref, max, s.shards);
  const auto index = read_json_file(out / "model.safetensors.index.json");
  CHECK(total == read_json_file(ref / "model.safetensors.index.json")["metadata"]["total_size"]);
  CHECK(total == 2 * stored_bytes(base_dir));
  for (const auto& [name, file] : index["weight_map"].items())
    if (name.find(".mlp.") != std::string::npos) {
      INFO(name);
      CHECK(SafetensorsFile::open(out / file.get<std::string>()).names() == std::vector<std::string>{name});
    }
  CHECK(read_json_file(out / "config.json")["dtype"] == "float32");
  for (const auto& p : {base_dir, ref, out}) fs::remove_all(p);
}

TEST_CASE("the GGUF's chat template: chat_template.jinja first, else tokenizer_config.json's", "[merge][gguf]") {
  // transformers >= 4.50 saves the template as chat_template.jinja, with no "chat_template" key in
  // tokenizer_config.json; older folders hold it there, as a string or a list of named templates.
  const auto tiny = test::fixture("tiny_public");
  const auto dir = scratch("chat_template");
  fs::create_directories(dir);
  fs::copy(tiny / "model", dir / "model");
  const fs::path model = dir / "model", gguf = dir / "t.gguf";
  auto write = [](const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; };
  auto template_in_gguf = [&]() -> std::optional<std::string> {
    gguf::write_qwen2_gguf(model, gguf, gguf::TensorType::F32, "t");
    const auto f = gguf::GgufFile::open(gguf);
    if (!f.contains("tokenizer.chat_template")) return std::nullopt;
    return f.string("tokenizer.chat_template");
  };
  CHECK(!template_in_gguf());  // neither file: no template, and export warns
  write(model / "tokenizer_config.json", R"({"chat_template": "from the config {{ messages }}"})");
  CHECK(template_in_gguf() == "from the config {{ messages }}");
  write(model / "tokenizer_config.json",
        R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})");
  CHECK(template_in_gguf() == "D");
  const std::string jinja = "{%- for message in messages %}<|im_start|>{{ message.role }}\n{% endfor %}\n";
  write(model / "chat_template.jinja", jinja);  // beside a config that has one too: the file wins, as in transformers
  CHECK(template_in_gguf() == jinja);
  write(model / "tokenizer_config.json", R"({"model_max_length": 32768})");
  CHECK(template_in_gguf() == jinja);
  fs::remove_all(dir);
}

TEST_CASE("the GGUF's stop ids: eos and eot from generation_config.json's list, the rest named", "[merge][gguf]") {
  // GGUF has two keys for stop tokens (eos, eot); a longer eos_token_id list is reported, not dropped silently.
  const auto dir = scratch("stops");
  fs::create_directories(dir);
  fs::copy(test::fixture("tiny_public") / "model", dir / "model");
  std::ofstream(dir / "model" / "generation_config.json") << R"({"eos_token_id": [7, 9, 7, 11, 12]})";
  const auto s = gguf::write_qwen2_gguf(dir / "model", dir / "t.gguf", gguf::TensorType::F32, "t");
  CHECK(s.eos == 7);
  CHECK(s.eot == 9);
  CHECK(s.stops_left_out == std::vector<std::int32_t>{11, 12});
  const auto f = gguf::GgufFile::open(dir / "t.gguf");
  CHECK(f.integer("tokenizer.ggml.eos_token_id") == 7);
  CHECK(f.integer("tokenizer.ggml.eot_token_id") == 9);
  fs::remove_all(dir);
}
