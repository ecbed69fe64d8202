# QLoRA from the command line (docs/qlora.md): ms-swift's flags train LoRA on an NF4 base on the
# CPU, args.json records the quantisation, merge_lora says it merges into the bf16 base; every
# choice we do not implement is refused naming its flag.
set(PEFT_QLORA_FLAGS --quant_method bnb --quant_bits 4 --bnb_4bit_quant_type nf4 --bnb_4bit_use_double_quant true
    --bnb_4bit_compute_dtype bfloat16)

peft_cli_test(qlora_tiny_run
  ARGS ${PEFT_FT_BASE} ${PEFT_QLORA_FLAGS} --learning_rate 1e-3 --max_steps 4 --save_steps 4 --output_dir out
  REGEX "held in NF4.*quantised on load"
  FILES out/args.json out/checkpoint-4/adapter_model.safetensors out/checkpoint-4/adapter_config.json)
set_tests_properties(cli_qlora_tiny_run PROPERTIES FIXTURES_SETUP qlora_run)
peft_expect_file(qlora_args_json qlora_tiny_run out/args.json
  "\"quant_method\": \"bnb\"|\"quant_bits\": 4|\"bnb_4bit_quant_type\": \"nf4\"|\"bnb_4bit_use_double_quant\": true|\"bnb_4bit_compute_dtype\": \"bfloat16\"")
peft_program_test(merge_lora qlora_merge ARGS --model ${PEFT_TINY}/model --adapters ${PEFT_CLI_WORK}/qlora_tiny_run/out/checkpoint-4
  --output_dir merged REGEX "trained with QLoRA.*merged into the original bf16 base" FILES merged/model.safetensors)
set_tests_properties(cli_qlora_merge PROPERTIES FIXTURES_REQUIRED qlora_run)

peft_cli_test(qlora_fp4 FAIL ARGS ${PEFT_FT_BASE} --quant_method bnb --quant_bits 4 --bnb_4bit_quant_type fp4
  REGEX "--bnb_4bit_quant_type fp4: not supported")
peft_cli_test(qlora_8bit FAIL ARGS ${PEFT_FT_BASE} --quant_method bnb --quant_bits 8 REGEX "--quant_bits 8: .*not supported")
peft_cli_test(qlora_hqq FAIL ARGS ${PEFT_FT_BASE} --quant_method hqq --quant_bits 4 REGEX "--quant_method hqq: not supported")
peft_cli_test(qlora_no_double_quant FAIL ARGS ${PEFT_FT_BASE} --quant_method bnb --quant_bits 4 --bnb_4bit_use_double_quant false
  REGEX "--bnb_4bit_use_double_quant false: not supported")
peft_cli_test(qlora_fp16_compute FAIL ARGS ${PEFT_FT_BASE} --quant_method bnb --quant_bits 4 --bnb_4bit_compute_dtype float16
  REGEX "--bnb_4bit_compute_dtype float16: not supported")
peft_cli_test(qlora_bits_without_method FAIL ARGS ${PEFT_FT_BASE} --quant_bits 4 REGEX "--quant_method \\(none\\): not supported")
peft_cli_test(qlora_full FAIL ARGS ${PEFT_FT_BASE} --train_type full --quant_method bnb --quant_bits 4
  REGEX "--quant_bits 4 with --train_type full: a 4-bit base cannot be trained")
peft_cli_test(qlora_train_type FAIL ARGS ${PEFT_FT_BASE} --train_type qlora
  REGEX "--train_type qlora: ms-swift has no such train type; QLoRA is --train_type lora --quant_method bnb")
peft_cli_test(prequantised_checkpoint FAIL SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_prequantised_model.cmake
  ARGS --model gptq --dataset ${PEFT_TINY}/tokens.jsonl ${PEFT_QLORA_FLAGS}
  REGEX "gptq/config.json: this checkpoint is already quantised \\(quantization_config.quant_method = 'gptq'\\)")
peft_cli_test(qlora_sweep_refused FAIL PROGRAM lr_epoch_sweep ARGS ${PEFT_FT_BASE} --quant_method bnb --quant_bits 4
  REGEX "--quant_bits 4: lr_epoch_sweep does not sweep QLoRA yet")

peft_program_test(memory_plan memory_plan_table ARGS --lora_rank 8
  REGEX "Qwen2.5-7B \\| NF4 \\(QLoRA\\) \\| 3.14 \\| 2.03 \\| 0.301 \\| 5.47")
peft_program_test(memory_plan memory_plan_bad_rank FAIL ARGS --lora_rank 0 REGEX "--lora_rank must be positive")

# chat on a QLoRA adapter loads the base in NF4 (as ms-swift's infer does) unless --quant_bits 0.
include(${CMAKE_CURRENT_LIST_DIR}/program_test.cmake)
set(QLORA_CHAT_SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_qlora_chat_models.cmake)
peft_program_test(chat chat_qlora_nf4_base SETUP ${QLORA_CHAT_SETUP} ARGS --adapters qlora_ckpt --max_new_tokens 4
  INPUT "hello" JSONL_LINES 1 REGEX "projections are loaded in NF4 \\(the adapter was trained with --quant_bits 4")
peft_program_test(chat chat_qlora_bits_unknown FAIL ARGS --quant_bits 8 REGEX "--quant_bits 8: not supported \\(valid: 4")
peft_program_test(chat chat_qlora_bits_without_adapter FAIL ARGS --quant_bits 4 REGEX "--quant_bits 4 needs --adapters")
