# merge_lora as a user runs it: the merged folder holds the weights, config.json,
# generation_config.json and tokenizer; chat on it gives HF's replies for the unmerged adapter
# (the same golden as chat_tiny_equals_hf). Bad input: a message naming the file or tensor.
include(${CMAKE_CURRENT_LIST_DIR}/program_test.cmake)
set(CHAT_SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_chat_models.cmake)
set(TINY_FIXTURE ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/tiny_public)

peft_program_test(merge_lora merge_tiny SETUP ${CHAT_SETUP}
  ARGS --model tiny --adapters ${TINY_FIXTURE}/adapter_trained --output_dir merged
  REGEX "merged 14 projections"
  FILES merged/model.safetensors merged/config.json merged/generation_config.json merged/tokenizer.json)
set_tests_properties(cli_merge_tiny PROPERTIES FIXTURES_SETUP merged_tiny)
peft_program_test(chat chat_on_merged_equals_hf
  ARGS --model ${PEFT_CLI_WORK}/merge_tiny/merged --max_new_tokens 16
  INPUT "hello" "who are you?" "你是谁?" "Tell me a story about a cat." JSONL_LINES 4
  GOLDEN ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/generate/chat_golden.jsonl)
set_tests_properties(cli_chat_on_merged_equals_hf PROPERTIES FIXTURES_REQUIRED merged_tiny)
peft_program_test(merge_lora merge_base_from_args_json SETUP ${CHAT_SETUP} ARGS --adapters ckpt
  FILES ckpt-merged/model.safetensors ckpt-merged/tokenizer.json)
peft_program_test(merge_lora merge_help ARGS --help REGEX "--output_dir")

peft_program_test(merge_lora merge_adapter_for_another_model FAIL
  ARGS --model ${TINY_FIXTURE}/model --adapters ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/batch2_ga2_linear/adapter --output_dir out
  REGEX "adapter_model.safetensors: tensors 'base_model.model.model.layers.0.*do not fit the base weight.*another model")
peft_program_test(merge_lora merge_missing_adapter FAIL ARGS --model ${TINY_FIXTURE}/model --adapters nowhere
  REGEX "--adapters nowhere: no such folder")
peft_program_test(merge_lora merge_no_adapter_weights FAIL SETUP ${CHAT_SETUP}
  ARGS --model tiny --adapters no_weights --output_dir out REGEX "no_weights/adapter_model.safetensors")
peft_program_test(merge_lora merge_embedded_base FAIL SETUP ${CHAT_SETUP} ARGS --adapters ckpt_embedded
  REGEX "embedded default model")
peft_program_test(merge_lora merge_output_is_input FAIL SETUP ${CHAT_SETUP}
  ARGS --model tiny --adapters ckpt --output_dir tiny REGEX "is an input folder")
peft_program_test(merge_lora merge_no_adapters_flag FAIL ARGS --model ${TINY_FIXTURE}/model REGEX "--adapters is required")
