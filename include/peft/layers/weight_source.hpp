// Where a model's base weights come from: a checkpoint on disk (safetensors, single or sharded)
// or a seeded random initialisation (the embedded default model, and tests). Layers ask for a
// tensor by its HF name and the shape they expect; a mismatch is an error naming the tensor.
#pragma once
#include <cmath>
#include <filesystem>
#include <string>

#include "peft/core/error.hpp"
#include "peft/core/finite.hpp"
#include "peft/core/rng.hpp"
#include "peft/core/tensor.hpp"
#include "peft/io/quantised_checkpoint.hpp"
#include "peft/io/safetensors.hpp"

namespace peft {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool contains(const std::string& name) const = 0;
  // `into` arrives sized to the expected shape.
  virtual void read(const std::string& name, Matrix& into) = 0;
};

class SafetensorsWeights final : public WeightSource {
 public:
  explicit SafetensorsWeights(const std::filesystem::path& dir) : model_(SafetensorsModel::open(dir)) {
    reject_quantised_tensors(model_.names(), dir.string());
  }
  bool contains(const std::string& name) const override { return model_.contains(name); }
  void read(const std::string& name, Matrix& into) override {
    const std::int64_t rows = into.rows(), cols = into.cols();
    // Vectors (biases, norms) are stored 1-D in safetensors.
    if (rows == 1) {
      const std::int64_t shape[] = {cols};
      model_.read_f32(name, shape, into.data());
    } else {
      const std::int64_t shape[] = {rows, cols};
      model_.read_f32(name, shape, into.data());
    }
    // A NaN base weight would otherwise surface much later as a NaN loss, blamed on the lr.
    require_finite(std::span<const float>(into.data(), static_cast<std::size_t>(into.size())),
                   fmt::format("{}: tensor '{}'", model_.file_of(name).path().string(), name),
                   kBrokenBaseCheckpoint);
  }
  const SafetensorsModel& model() const { return model_; }

 private:
  SafetensorsModel model_;
};

// Deterministic random weights: norms 1, vectors small, matrices N(0, 1/in) so logits are not
// flat (the same recipe as the reference fixtures).
class RandomWeights final : public WeightSource {
 public:
  explicit RandomWeights(std::uint64_t seed) : rng_(seed) {}
  bool contains(const std::string&) const override { return true; }
  void read(const std::string& name, Matrix& into) override {
    if (name.find("norm") != std::string::npos) { into.setOnes(); return; }
    const float std = into.rows() == 1 ? 0.02f : 1.0f / std::sqrt(static_cast<float>(into.cols()));
    for (Eigen::Index i = 0; i < into.size(); ++i) into.data()[i] = std * rng_.normal();
  }

 private:
  Rng rng_;
};

}  // namespace peft
