// The layer-wise layout LastLayers<N, Tail, Rest> ("full fine-tune of the last N layers, LoRA
// elsewhere"): its backward against finite differences, the exact parameter list, that one
// optimizer step moves the tail's base weights and no other base weight, the PEFT adapter it saves
// (LoRA + modules_to_save + layers_to_transform) round-tripping bit for bit, merge_lora producing
// the trained model, KV-cache generation agreeing with the full forward, and N > layers failing.
#include <catch2/catch.hpp>

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "peft/io/merge_lora.hpp"
#include "peft/optim/adamw.hpp"
#include "peft/qwen.hpp"
#include "support/fixture.hpp"
#include "support/gradcheck.hpp"

using namespace peft;
namespace fs = std::filesystem;
using test::random_matrix;

namespace {

ModelConfig three_layers() {
  ModelConfig c;
  c.hidden_size = 16; c.intermediate_size = 24; c.num_hidden_layers = 3; c.num_attention_heads = 4;
  c.num_key_value_heads = 2; c.head_dim = 4; c.vocab_size = 32; c.rope_theta = 100.0; c.rms_norm_eps = 1e-6;
  c.tie_word_embeddings = false;
  return c;
}

LoraConfig lora2() {
  LoraConfig l;
  l.r = 2;
  l.lora_alpha = 4;
  l.lora_dropout = 0.0;
  return l;
}

// Last 2 of 3 layers fully trained (seven projections, q/k/v biases), layer 0 LoRA on all seven.
using Mixed = Qwen2<LastLayers<2, Full, Lora<>>, Fp32, Cpu>;

// lora_B set non-zero, so the adapter path contributes (PEFT's B = 0 would hide it).
std::unique_ptr<Mixed> make_mixed(const ModelConfig& c, std::uint64_t seed) {
  RandomWeights src(seed);
  auto m = Mixed::from_weights(c, src, lora2(), seed + 1);
  Rng rng(seed + 2);
  for (auto& p : m->trainable_parameters())
    if (p.name.ends_with("lora_B.weight")) *p.value = random_matrix(p.value->rows(), p.value->cols(), rng, 0.3f);
  return m;
}

const Sample kA{{5, 17, 3, 29, 8, 1}, {-100, -100, 3, 29, 8, 1}};
const Sample kB{{12, 4, 4, 30, 0}, {12, 4, -100, 30, 0}};
PackedBatch batch_ab() {
  const std::vector<const Sample*> both = {&kA, &kB};
  return PackedBatch::of(both);
}

fs::path scratch(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("peft_test_layer_layout_" + name);
  fs::remove_all(p);
  return p;
}

// Every base weight of every projection, in module order.
template <class Model>
std::vector<Matrix> base_weights(Model& m) {
  std::vector<Matrix> out;
  m.for_each_linear([&](auto& lin) { out.push_back(lin.weight()); });
  return out;
}

}  // namespace

TEST_CASE("LastLayers trains LoRA on the first layers and every projection of the last ones") {
  auto m = make_mixed(three_layers(), 3);
  std::set<std::string> names;
  std::int64_t numel = 0;
  for (const auto& p : m->trainable_parameters()) {
    names.insert(p.name);
    numel += p.value->size();
  }
  const char* projections[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                               "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  std::set<std::string> want;
  for (const char* p : projections) {
    want.insert(fmt::format("model.layers.0.{}.lora_A.weight", p));
    want.insert(fmt::format("model.layers.0.{}.lora_B.weight", p));
    for (int i : {1, 2}) want.insert(fmt::format("model.layers.{}.{}.weight", i, p));
  }
  for (int i : {1, 2})
    for (const char* b : {"q_proj", "k_proj", "v_proj"})
      want.insert(fmt::format("model.layers.{}.self_attn.{}.bias", i, b));
  CHECK(names == want);

  const ModelConfig c = three_layers();
  const std::int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim,
                     f = c.intermediate_size, r = 2;
  const std::int64_t lora_layer = r * (h + q) + 2 * r * (h + kv) + r * (q + h) + 2 * r * (h + f) + r * (f + h);
  const std::int64_t full_layer = (h * q + q) + 2 * (h * kv + kv) + q * h + 3 * h * f;
  CHECK(numel == lora_layer + 2 * full_layer);
}

TEST_CASE("LastLayers gradients match finite differences", "[gradcheck][model]") {
  auto model = make_mixed(three_layers(), 71);
  const PackedBatch batch = batch_ab();
  ParameterList ps = model->trainable_parameters();
  model->zero_grad();
  model->forward_backward(batch, 1.0f, nullptr);
  std::vector<Matrix> grads;
  for (const auto& p : ps) grads.push_back(*p.grad);
  // As test_gradcheck_model: fourth-order differences, h = 1e-2, tol 2e-3 of each tensor's
  // gradient scale, 8 entries per tensor (4 largest, 4 random).
  auto objective = [&] { return model->evaluate(batch).sum; };
  for (std::size_t i = 0; i < ps.size(); ++i)
    test::check_gradient(ps[i].name, *ps[i].value, grads[i], objective,
                         {.step = 1e-2, .tol = 2e-3, .entries = 8, .seed = 200 + i});
}

TEST_CASE("one step changes the tail layers' base weights and no other base weight") {
  auto m = make_mixed(three_layers(), 5);
  const std::vector<Matrix> before = base_weights(*m);
  const ParameterList ps = m->trainable_parameters();
  AdamW opt({0.9, 0.999, 1e-8, 0.0});
  opt.init(ps);
  const PackedBatch b = batch_ab();
  m->forward_backward(b, 1.0f / static_cast<float>(b.label_tokens), nullptr);
  opt.step(ps, 1e-2);
  const std::vector<Matrix> after = base_weights(*m);
  REQUIRE(before.size() == 21);  // 3 layers x 7 projections, module order
  for (std::size_t i = 0; i < before.size(); ++i) {
    INFO("projection " << i % 7 << " of layer " << i / 7);
    if (i < 7) CHECK(after[i] == before[i]);  // layer 0: LoRA, the base is frozen
    else CHECK((after[i] - before[i]).cwiseAbs().maxCoeff() > 1e-4);  // AdamW moves every entry ~lr
  }
}

TEST_CASE("LastLayers with more tail layers than the model has is a clear error") {
  ModelConfig c = three_layers();
  c.num_hidden_layers = 1;
  RandomWeights src(1);
  CHECK_THROWS_WITH(Mixed::from_weights(c, src, lora2(), 2),
                    Catch::Contains("LastLayers<2") && Catch::Contains("num_hidden_layers = 1"));
  c.num_hidden_layers = 2;  // N = layers: every layer is a tail layer, no LoRA layer
  RandomWeights src2(1);
  auto m = Mixed::from_weights(c, src2, lora2(), 2);
  for (const auto& p : m->trainable_parameters()) CHECK(p.name.find("lora_") == std::string::npos);
}

TEST_CASE("LastLayers saves one PEFT adapter with modules_to_save and loads it back bit for bit") {
  auto m = make_mixed(three_layers(), 9);
  const ParameterList ps = m->trainable_parameters();
  Rng rng(4);  // stand-in for training: every trained tensor moves
  for (auto& p : ps) *p.value += random_matrix(p.value->rows(), p.value->cols(), rng, 0.05f);
  const fs::path dir = scratch("save");
  save_trained_weights(dir, *m, "base");

  CHECK(!fs::exists(dir / "trainable_weights.safetensors"));
  const nlohmann::json cfg = read_json_file(dir / "adapter_config.json");
  CHECK(cfg["layers_to_transform"] == nlohmann::json({0}));
  const auto saved = cfg["modules_to_save"].get<std::vector<std::string>>();
  CHECK(saved.size() == 14);  // 7 projections x layers 1 and 2
  CHECK(std::count(saved.begin(), saved.end(), "model.layers.2.mlp.down_proj") == 1);
  CHECK(std::count(saved.begin(), saved.end(), "model.layers.1.self_attn.q_proj") == 1);
  const auto st = SafetensorsFile::open(dir / "adapter_model.safetensors");
  CHECK(st.names().size() == ps.size());
  CHECK(st.contains("base_model.model.model.layers.1.self_attn.q_proj.bias"));
  CHECK(st.tensor("base_model.model.model.layers.1.self_attn.q_proj.bias").shape.size() == 1);
  CHECK(st.contains("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight"));

  RandomWeights same_base(9);
  auto fresh = Mixed::from_weights(three_layers(), same_base, lora2(), 77);
  load_trained_weights(dir, *fresh);
  const ParameterList qs = fresh->trainable_parameters();
  REQUIRE(qs.size() == ps.size());
  for (std::size_t i = 0; i < ps.size(); ++i) {
    INFO(ps[i].name);
    CHECK(*qs[i].value == *ps[i].value);
  }
  CHECK(fresh->evaluate(batch_ab()).sum == m->evaluate(batch_ab()).sum);

  // Saving it warns that vLLM refuses modules_to_save and names the way out.
  const auto warning = modules_to_save_warning(dir);
  REQUIRE(warning);
  CHECK_THAT(*warning, Catch::Contains("vLLM refuses") && Catch::Contains("export --adapters") &&
                           Catch::Contains("--merge_lora true") && Catch::Contains("modules_to_save (14 modules"));
  CHECK(!modules_to_save_warning(test::fixture("tiny_public") / "adapter_trained"));  // plain LoRA: no warning

  // A uniform LoRA model cannot take this adapter silently: it names the missing LoRA tensor.
  RandomWeights base2(9);
  auto lora_only = Qwen2<Lora<>, Fp32, Cpu>::from_weights(three_layers(), base2, lora2(), 1);
  CHECK_THROWS_WITH(load_adapter_weights(dir, lora_only->trainable_parameters()),
                    Catch::Contains("model.layers.1.self_attn.q_proj.lora_A.weight"));
}

TEST_CASE("merge_lora of a LastLayers adapter gives the trained model's logits") {
  const auto tiny = test::fixture("tiny_public") / "model";  // 2 layers, fp32
  LoraConfig l = lora2();
  auto m = Qwen2<LastLayers<1, Full, Lora<>>, Fp32, Cpu>::from_pretrained(tiny, l, 3);
  Rng rng(6);
  for (auto& p : m->trainable_parameters()) *p.value += random_matrix(p.value->rows(), p.value->cols(), rng, 0.05f);
  const fs::path adapter = scratch("merge_adapter"), out = scratch("merge_out");
  save_trained_weights(adapter, *m, tiny.string());
  const MergeSummary s = merge_lora(tiny, adapter, out);
  CHECK(s.merged_modules == 7);   // layer 0's projections
  CHECK(s.saved_tensors == 10);   // layer 1's seven weights and three biases

  auto merged = Qwen2<Frozen, Fp32, Cpu>::from_pretrained(out, l, 0);
  const std::vector<std::int32_t> ids = {3, 14, 15, 9, 26, 5};
  const PackedBatch b = PackedBatch::of(Sample{ids, std::vector<std::int32_t>(ids.size(), kIgnoreIndex)});
  const Matrix want = m->logits(b), got = merged->logits(b);
  // W + (B A) s once in fp32 vs x W^T + s (x A^T) B^T: float rounding only, 1e-4 of the logit scale.
  const double scale = want.cwiseAbs().maxCoeff();
  INFO("max |merged - unmerged| " << (got - want).cwiseAbs().maxCoeff() << " of " << scale);
  CHECK((got - want).cwiseAbs().maxCoeff() <= 1e-4 * scale);
  auto untrained = Qwen2<Frozen, Fp32, Cpu>::from_pretrained(tiny, l, 0);  // the merge did change something
  CHECK((untrained->logits(b) - want).cwiseAbs().maxCoeff() > 1e-2 * scale);
}

TEST_CASE("LastLayers generation through the KV cache matches the full forward") {
  auto m = make_mixed(three_layers(), 13);
  const std::vector<std::int32_t> ids = {7, 1, 22, 9, 30, 2};
  const Matrix full = m->logits(PackedBatch::of(Sample{ids, std::vector<std::int32_t>(ids.size(), kIgnoreIndex)}));
  KvCache cache = m->make_kv_cache();
  const std::span<const std::int32_t> all(ids);
  Matrix step = m->forward_cached(all.first(4), cache, true);  // prefill 4, then decode 2 one by one
  Matrix rows(6, full.cols());
  rows.topRows(4) = step;
  rows.row(4) = m->forward_cached(all.subspan(4, 1), cache).row(0);
  rows.row(5) = m->forward_cached(all.subspan(5, 1), cache).row(0);
  // Same arithmetic in another grouping: 1e-5 of the logit scale.
  CHECK((rows - full).cwiseAbs().maxCoeff() <= 1e-5 * full.cwiseAbs().maxCoeff());
}

namespace {

struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted") {}
};
struct CrashAfter {  // throws in the step after `at`, as if the process died there
  std::int64_t at = -1;
  void on_step_end(const TrainResult& r) {
    if (at >= 0 && r.global_step > at) throw Interrupted();
  }
};

using TinyMixed = Qwen2<LastLayers<1, Full, Lora<>>, Fp32, Cpu>;

TrainResult train_tiny(const fs::path& out, std::int64_t crash_at, const fs::path& resume = {}) {
  LoraConfig lora = read_adapter_config(test::fixture("tiny_public") / "adapter");
  lora.lora_dropout = 0.1;
  auto model = TinyMixed::from_pretrained(test::fixture("tiny_public") / "model", lora, 7);
  TrainingArguments a;
  a.learning_rate = 2e-3;
  a.num_train_epochs = 2;
  a.save_steps = 5;
  a.output_dir = out;
  a.resume_from_checkpoint = resume;
  Trainer<TinyMixed, AdamW, NamedSchedule, CrashAfter> t(*model, a, AdamW({0.9, 0.95, 1e-8, 0.1}),
                                                         NamedSchedule("cosine"), CrashAfter{crash_at});
  t.set_run_dir(out);
  t.set_quiet(true);
  return t.train(test::fixture_samples("tiny_public"));
}

// What f() writes to stderr (file descriptor 2, where the trainer's warnings go), through a file.
template <class F>
std::string stderr_of(const fs::path& file, F&& f) {
  std::fflush(stderr);
  const int saved = ::dup(2);
  std::FILE* out = std::fopen(file.c_str(), "w");
  REQUIRE((saved >= 0 && out));
  ::dup2(::fileno(out), 2);
  auto restore = [&] {
    std::fflush(stderr);
    ::dup2(saved, 2);
    ::close(saved);
    std::fclose(out);
  };
  try {
    f();
  } catch (...) {
    restore();
    throw;
  }
  restore();
  std::ifstream in(file);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("a resumed LastLayers run equals the uninterrupted one bit for bit", "[resume]") {
  // As test_resume for uniform layouts, here through the adapter's modules_to_save tensors.
  const fs::path root = scratch("resume");
  const TrainResult full = train_tiny(root / "full", -1);
  REQUIRE(full.global_step > 7);
  REQUIRE_THROWS_AS(train_tiny(root / "cut", 7), Interrupted);
  const TrainResult resumed = train_tiny(root / "cut", -1, root / "cut" / "checkpoint-5");
  REQUIRE(resumed.step_losses.size() == full.step_losses.size());
  for (std::size_t s = 0; s < full.step_losses.size(); ++s) {
    INFO("step " << s + 1);
    CHECK(resumed.step_losses[s] == full.step_losses[s]);
  }
  const fs::path last = fmt::format("checkpoint-{}", full.global_step);
  const auto a = SafetensorsFile::open(root / "full" / last / "adapter_model.safetensors");
  const auto b = SafetensorsFile::open(root / "cut" / last / "adapter_model.safetensors");
  REQUIRE(a.names() == b.names());
  CHECK(a.contains("base_model.model.model.layers.1.mlp.down_proj.weight"));  // the tail, fully trained
  for (const auto& n : a.names()) {
    INFO(n);
    CHECK(a.read_f32(n, a.tensor(n).shape) == b.read_f32(n, b.tensor(n).shape));
  }
  fs::remove_all(root);
}

TEST_CASE("a LastLayers run warns once, at its first save, that vLLM refuses its adapter", "[resume]") {
  // Issue 16: an adapter with modules_to_save is named at save time, with the way out (a merge).
  const fs::path root = scratch("warn");
  fs::create_directories(root);
  TrainResult r;
  const std::string err = stderr_of(root / "stderr.txt", [&] { r = train_tiny(root / "run", -1); });
  REQUIRE(r.global_step >= 10);  // two saves at least (save_steps 5) and the final one
  INFO(err);
  std::size_t warnings = 0;
  for (std::size_t at = err.find("vLLM refuses"); at != std::string::npos; at = err.find("vLLM refuses", at + 1))
    ++warnings;
  CHECK(warnings == 1);
  CHECK_THAT(err, Catch::Contains("[warning] ") && Catch::Contains("checkpoint-5 has modules_to_save") &&
                      Catch::Contains("--merge_lora true"));
  fs::remove_all(root);
}
