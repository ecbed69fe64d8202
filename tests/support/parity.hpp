// What the CPU parity tests against the HF goldens share, for any model composition: a fixture's
// model (tests/fixtures/<name>/model) with its PEFT adapter loaded and dropout off, and the
// relative comparison of a number with its golden value.
#pragma once
#include <catch2/catch.hpp>
#include <cmath>
#include <memory>
#include <string>

#include "peft/io/peft_adapter.hpp"
#include "fixture.hpp"

namespace peft::test {

// |a - b| <= rel * |b| (+ a tiny absolute floor for values near zero).
inline void check_close(double a, double b, double rel, const std::string& what) {
  INFO(what << ": got " << a << " expected " << b);
  CHECK(std::abs(a - b) <= rel * std::abs(b) + 1e-7);
}

template <class Model>
std::unique_ptr<Model> load_fixture_model(const std::string& name) {
  const auto dir = fixture(name);
  LoraConfig lora = read_adapter_config(dir / "adapter");
  lora.lora_dropout = 0;
  auto model = Model::from_pretrained(dir / "model", lora, 0);
  load_adapter_weights(dir / "adapter", model->trainable_parameters());
  return model;
}

}  // namespace peft::test
