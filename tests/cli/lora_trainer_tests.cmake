# The README's trainer example runs as printed: it trains the tiny fixture (token ids, since its
# vocabulary is 512) and leaves a PEFT adapter.
peft_cli_test(readme_lora_trainer PROGRAM lora_trainer SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_tokenized_model.cmake
  ARGS model ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/tiny_public/tokens.jsonl adapter
  REGEX "[0-9]+ steps, loss [0-9.]+ -> [0-9.]+, adapter in adapter"
  FILES adapter/adapter_model.safetensors adapter/adapter_config.json)
peft_cli_test(readme_lora_trainer_usage FAIL PROGRAM lora_trainer ARGS only-one-arg REGEX "usage: lora_trainer")
