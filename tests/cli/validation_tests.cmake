# Issue 17's checks before the work starts: flags, numbers, sizes and inputs that used to be
# accepted silently (or end in std::bad_alloc, or fail only after training) give a message naming
# the flag, file, tensor or line, and a non-zero exit; harmless ones a warning.
include(${CMAKE_CURRENT_LIST_DIR}/peft_cli_test.cmake)
set(V_BASE --model ${PEFT_TINY}/model --dataset ${PEFT_TINY}/tokens.jsonl --add_version false --output_dir out)
set(V_SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_invalid_inputs.cmake)

# Numerics (item 5).
peft_cli_test(adam_beta2_one FAIL ARGS ${V_BASE} --adam_beta2 1.0 REGEX "--adam_beta2 1 must be in \\[0, 1\\)")
peft_cli_test(adam_beta1_above_one FAIL ARGS ${V_BASE} --adam_beta1 1.5 REGEX "--adam_beta1 1.5 must be in \\[0, 1\\)")
peft_cli_test(adam_epsilon_zero FAIL ARGS ${V_BASE} --adam_epsilon 0 REGEX "--adam_epsilon 0 must be positive")
peft_cli_test(num_train_epochs_inf FAIL ARGS ${V_BASE} --num_train_epochs inf
  REGEX "--num_train_epochs must be positive and finite \\(got inf\\)")
peft_cli_test(num_train_epochs_huge FAIL ARGS ${V_BASE} --num_train_epochs 2e17
  REGEX "--num_train_epochs 2e\\+17: 2e\\+17 optimizer steps of [0-9]+ samples is more than any run can take")
peft_cli_test(lora_alpha_inf FAIL ARGS ${V_BASE} --lora_alpha inf REGEX "--lora_alpha must be positive and finite \\(got inf\\)")

# Sizes before allocation (item 6).
peft_cli_test(config_size_vs_weights FAIL SETUP ${V_SETUP} ARGS --model huge_intermediate --dataset ${PEFT_TINY}/tokens.jsonl
  REGEX "model.layers.0.mlp.gate_proj.weight' has shape \\[176, 64\\], but .*huge_intermediate/config.json implies \\[5000000, 64\\]")
peft_cli_test(dataset_count_bounded FAIL ARGS --model ${PEFT_TINY}/model --dataset "${PEFT_TINY}/tokens.jsonl#1000000000"
  REGEX "tokens.jsonl#1000000000': at most 10000000 samples")
peft_cli_test(max_length_over_context FAIL ARGS ${V_BASE} --max_length 100000000
  REGEX "--max_length 100000000 exceeds the model's context: max_position_embeddings is 256 in .*config.json; pass --max_length 256 or less")
peft_cli_test(max_length_default_follows_context ARGS ${V_BASE} --max_steps 1
  REGEX "max_length 256 \\(truncation_strategy")

# Stray and conflicting arguments (item 8).
peft_cli_test(single_value_flag_twice FAIL ARGS ${V_BASE} --lora_rank 8 16
  REGEX "--lora_rank takes one value, but '16' follows '8'")
peft_cli_test(stray_word FAIL ARGS stray ${V_BASE} REGEX "unexpected argument 'stray': every value follows its --flag")
peft_cli_test(lora_rank_vs_adapter FAIL ARGS ${V_BASE} --adapters ${PEFT_TINY}/adapter --lora_rank 16
  REGEX "--lora_rank 16 conflicts with --adapters: .*adapter_config.json has r = 8")
peft_cli_test(target_modules_vs_adapter FAIL ARGS ${V_BASE} --adapters ${PEFT_TINY}/adapter --target_modules q_proj
  REGEX "--target_modules q_proj conflicts with --adapters")
peft_cli_test(lora_rank_same_as_adapter ARGS ${V_BASE} --adapters ${PEFT_TINY}/adapter --lora_rank 8 --max_steps 1
  FILES out/checkpoint-1/adapter_model.safetensors)
peft_cli_test(lora_rank_with_full_train ARGS ${V_BASE} --train_type full --torch_dtype float32 --max_steps 1 --lora_rank 16
  REGEX "warning: --lora_rank is ignored with --train_type full")
peft_cli_test(adapters_with_full_train FAIL ARGS ${V_BASE} --train_type full --adapters ${PEFT_TINY}/adapter
  REGEX "--adapters .* with --train_type full")
peft_program_test(chat chat_stray_word FAIL ARGS --max_new_tokens 4 8 REGEX "--max_new_tokens takes one value, but '8'")

# Metric names (item 9): refused before the model is loaded, with the valid names.
peft_cli_test(bogus_best_metric FAIL ARGS ${V_BASE} --metric_for_best_model bogus
  REGEX "--metric_for_best_model bogus: no evaluation produces 'eval_bogus' \\(valid: loss .*identity_accuracy")
peft_cli_test(best_metric_not_evaluated FAIL ARGS ${V_BASE} --metric_for_best_model identity_accuracy
  REGEX "this run makes no evaluation that produces 'eval_identity_accuracy'; it needs --eval_identity_dataset")
peft_cli_test(bogus_early_stop_metric FAIL ARGS ${V_BASE} --early_stop_metric los REGEX "--early_stop_metric los")

# chat (item 10).
peft_program_test(chat chat_max_new_tokens_capped SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_chat_models.cmake
  ARGS --model tiny --max_new_tokens 100000 INPUT "hello" JSONL_LINES 1
  REGEX "--max_new_tokens 100000 capped at [0-9]+: the context is 256 tokens")
string(REPEAT "count one two three four five six seven eight nine ten " 30 V_LONG_PROMPT)
peft_program_test(chat chat_prompt_past_context FAIL SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_chat_models.cmake
  ARGS --model tiny --max_new_tokens 4 INPUT "${V_LONG_PROMPT}" "hello"
  REGEX "\"query\":\"hello\".*stdin line 1: the prompt \\([0-9]+ tokens.*does not fit the model's context of 256")
peft_program_test(chat chat_invalid_utf8_line FAIL SETUP ${V_SETUP} ARGS --model tiny --max_new_tokens 4
  REGEX "\"query\":\"hello\".*\"query\":\"who are you\\?\".*stdin line 2: invalid UTF-8 at byte 3 of the line.*1 of the input lines were not answered")

# Messages (item 12).
peft_cli_test(resume_missing_folder FAIL ARGS ${V_BASE} --resume_from_checkpoint nowhere/checkpoint-5
  REGEX "--resume_from_checkpoint nowhere/checkpoint-5: the folder does not exist")
peft_cli_test(resume_not_a_checkpoint FAIL ARGS ${V_BASE} --resume_from_checkpoint ${PEFT_TINY}
  REGEX "tiny_public: no trainer_state.json there")
string(ASCII 255 V_BAD_BYTE)
peft_cli_test(system_invalid_utf8 FAIL ARGS ${V_BASE} --system "be brief${V_BAD_BYTE}"
  REGEX "--system: the value is not valid UTF-8 \\(byte 9 of 9\\)")
peft_cli_test(model_name_invalid_utf8 FAIL ARGS ${V_BASE} --model_name "Pai${V_BAD_BYTE}" "Pai"
  REGEX "--model_name: the value is not valid UTF-8")
peft_cli_test(text_dataset_names_missing_tokenizer FAIL
  ARGS --model ${PEFT_TINY}/model --dataset ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/datasets/query_response.jsonl
  REGEX "no tokenizer: .*tiny_public/model/tokenizer.json does not exist")

# Loading (item 13).
peft_cli_test(model_type_llama FAIL SETUP ${V_SETUP} ARGS --model llama --dataset ${PEFT_TINY}/tokens.jsonl
  REGEX "llama/config.json: model_type 'llama' is not supported")
