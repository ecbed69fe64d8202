// A fixture's model (tests/fixtures/<name>/model) with its PEFT adapter loaded and dropout off: the
// starting point of every CPU parity test against the HF goldens, for any model composition.
#pragma once
#include <memory>
#include <string>

#include "peft/io/peft_adapter.hpp"
#include "fixture.hpp"

namespace peft::test {

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
