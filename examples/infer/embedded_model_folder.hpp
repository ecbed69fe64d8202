// The embedded default model written out as an ordinary HF model folder (config.json,
// model.safetensors, the Qwen2.5 tokenizer files), so an adapter trained on it can be merged and
// exported like any other. The weights are the very ones every program builds from the fixed seed:
// a recording WeightSource wraps RandomWeights and keeps each tensor as the model asks for it, in
// the model's own order of reads (which is what the random stream depends on).
#pragma once
#include <filesystem>
#include <map>

#include "peft/io/atomic_file.hpp"
#include "peft/io/safetensors.hpp"
#include "peft/layers/weight_source.hpp"
#include "peft/models/qwen2.hpp"
#include "../sft/embedded_default.hpp"

namespace peft::examples {

class RecordingWeights final : public WeightSource {
 public:
  explicit RecordingWeights(WeightSource& inner) : inner_(inner) {}
  bool contains(const std::string& name) const override { return inner_.contains(name); }
  void read(const std::string& name, Matrix& into) override {
    inner_.read(name, into);
    recorded_[name] = into;
  }
  const std::map<std::string, Matrix>& recorded() const { return recorded_; }

 private:
  WeightSource& inner_;
  std::map<std::string, Matrix> recorded_;
};

inline void write_embedded_model_folder(const std::filesystem::path& dir) {
  const ModelConfig cfg = embedded_default_config();
  RandomWeights random(kEmbeddedWeightSeed);
  RecordingWeights rec(random);
  Qwen2<Frozen, Fp32, Cpu>::from_weights(cfg, rec, LoraConfig{}, 0);
  write_directory_atomic(dir, [&](const std::filesystem::path& staging) {
    SafetensorsWriter out;
    for (const auto& [name, m] : rec.recorded()) {
      std::vector<std::int64_t> shape = m.rows() == 1 ? std::vector<std::int64_t>{m.cols()}
                                                      : std::vector<std::int64_t>{m.rows(), m.cols()};
      out.add_f32(name, shape, std::span<const float>(m.data(), static_cast<std::size_t>(m.size())), DType::F32);
    }
    out.write(staging / "model.safetensors");
    write_text_atomic(staging / "config.json", cfg.to_json().dump(2) + "\n");
    const auto tok_dir = default_tokenizer().parent_path();
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
      require(std::filesystem::exists(tok_dir / f), "{}: missing; run tools/fetch_tokenizer.sh",
              (tok_dir / f).string());
      std::filesystem::copy_file(tok_dir / f, staging / f);
    }
  });
}

}  // namespace peft::examples
