# identity_finetune as a user runs it: a good run leaves the ms-swift layout; every bad input
# ends with a message naming the file (and line or tensor) and a non-zero exit, never a crash.
set(PEFT_CLI_WORK ${CMAKE_CURRENT_BINARY_DIR}/cli_work)
# One micro-batch a step (ms-swift's default would make 16 samples one step; ms_swift_compat_tests
# checks the defaults themselves).
set(PEFT_FT_BASE --model ${PEFT_TINY}/model --dataset ${PEFT_TINY}/tokens.jsonl --add_version false
    --gradient_accumulation_steps 1)


peft_cli_test(tiny_lora_run
  ARGS ${PEFT_FT_BASE} --learning_rate 1e-3 --num_train_epochs 2 --save_steps 10 --save_total_limit 2
       --output_dir out --dataloader_num_workers 2
  REGEX "accepted but not used by this program: --dataloader_num_workers"
  FILES out/args.json out/logging.jsonl out/checkpoint-32/adapter_model.safetensors
        out/checkpoint-32/adapter_config.json out/checkpoint-32/optimizer.safetensors out/checkpoint-30/trainer_state.json
        out/checkpoint-30/peft_state.json)
peft_cli_test(tiny_full_run
  ARGS ${PEFT_FT_BASE} --train_type full --torch_dtype float32 --max_steps 3 --output_dir out
  FILES out/checkpoint-3/model.safetensors out/checkpoint-3/config.json)
peft_cli_test(versioned_output_dir
  ARGS --model ${PEFT_TINY}/model --dataset ${PEFT_TINY}/tokens.jsonl --max_steps 1 --output_dir out
  REGEX "writing to out/v0-[0-9]+-[0-9]+")
peft_cli_test(help ARGS --help REGEX "--lora_rank")

peft_cli_test(unknown_flag FAIL ARGS ${PEFT_FT_BASE} --learning_rte 1e-4 REGEX "learning_rte")
peft_cli_test(bad_train_type FAIL ARGS ${PEFT_FT_BASE} --train_type adalora REGEX "valid: lora, full")
peft_cli_test(bad_target_module FAIL ARGS ${PEFT_FT_BASE} --target_modules qproj REGEX "unknown module 'qproj'")
peft_cli_test(bad_dtype FAIL ARGS ${PEFT_FT_BASE} --torch_dtype float16 REGEX "valid: float32, bfloat16")
peft_cli_test(missing_model_dir FAIL ARGS --model ${PEFT_CLI_WORK}/nowhere --dataset ${PEFT_TINY}/tokens.jsonl
  REGEX "nowhere: no such folder")
peft_cli_test(missing_dataset FAIL ARGS --model ${PEFT_TINY}/model --dataset ${PEFT_CLI_WORK}/none.jsonl
  REGEX "none.jsonl")
peft_cli_test(malformed_json_line FAIL ARGS --model ${PEFT_TINY}/model --dataset ${PEFT_BAD}/malformed_line.jsonl
  REGEX "malformed_line.jsonl:3")
peft_cli_test(out_of_vocab FAIL ARGS --model ${PEFT_TINY}/model --dataset ${PEFT_BAD}/out_of_vocab.jsonl
  REGEX "out_of_vocab.jsonl:2.*999")
peft_cli_test(labels_length_mismatch FAIL ARGS --model ${PEFT_TINY}/model --dataset ${PEFT_BAD}/labels_mismatch.jsonl
  REGEX "labels_mismatch.jsonl:1")
peft_cli_test(empty_dataset FAIL ARGS --model ${PEFT_TINY}/model --dataset ${PEFT_BAD}/empty.jsonl REGEX "empty.jsonl")
peft_cli_test(text_rows_without_tokenizer FAIL ARGS --model ${PEFT_TINY}/model --dataset ${PEFT_BAD}/missing_field.jsonl
  REGEX "missing_field.jsonl")
peft_cli_test(wrong_shape_weights FAIL SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_bad_models.cmake
  ARGS --model wrong_shape --dataset ${PEFT_TINY}/tokens.jsonl
  REGEX "mlp.gate_proj.weight")
peft_cli_test(truncated_safetensors FAIL SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_bad_models.cmake
  ARGS --model truncated --dataset ${PEFT_TINY}/tokens.jsonl
  REGEX "truncated/model.safetensors")
# Tensors config.json does not describe: a warning naming a few (as transformers'), then training.
peft_cli_test(unused_checkpoint_tensors_warned SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_bad_models.cmake
  ARGS --model one_layer --dataset ${PEFT_TINY}/tokens.jsonl --max_steps 1 --add_version false --output_dir out
  REGEX "warning: [^ ]*one_layer/model.safetensors: 12 tensors of the checkpoint are not used by the model [^ ]*one_layer/config.json describes \\(num_hidden_layers = 1\\).*model.layers.1.input_layernorm.weight.* and 7 more")
peft_cli_test(missing_weights FAIL SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_bad_models.cmake
  ARGS --model no_weights --dataset ${PEFT_TINY}/tokens.jsonl REGEX "no_weights")
peft_cli_test(adapter_wrong_model FAIL
  ARGS ${PEFT_FT_BASE} --adapters ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/batch2_ga2_linear/adapter --max_steps 1
  REGEX "adapter_model.safetensors.*(shape|missing)")
