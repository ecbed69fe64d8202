# `swift infer` / `swift export` command lines on chat, export and merge_lora, read as ms-swift's
# parser reads them (examples/swift_flags.hpp, infer/export_flags.hpp): a true/false flag alone
# means true and leaves the next flag alone; flags that change nothing here are accepted and named
# on an "[args]" line; --template / --model_type other than Qwen2 are refused; export's
# --torch_dtype converts the merged weights, --max_shard_size cuts them into save_pretrained's
# shards, --safe_serialization is checked; --exist_ok is
# --overwrite; quantised export and hub upload are refused with what to do. chat's --val_dataset
# takes several specs and `#N`; --max_length caps prompt + answer; --result_path appends.
include(${CMAKE_CURRENT_LIST_DIR}/program_test.cmake)
set(CHAT_SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_chat_models.cmake)
set(OUT_EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_existing_output.cmake)
set(TINY_FIXTURE ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/tiny_public)
set(DATASETS ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/datasets)
set(TINY_MERGE --model ${TINY_FIXTURE}/model --adapters ${TINY_FIXTURE}/adapter_trained)

# chat: bare booleans, each followed by another flag that must still count (max_new_tokens 4).
peft_program_test(chat chat_bare_bools SETUP ${CHAT_SETUP}
  ARGS --adapters ckpt --merge_lora --stream --verbose --max_new_tokens 4 INPUT "hello" JSONL_LINES 1
  REGEX "merged into .*tiny before decoding.*max_new_tokens 4, stream true.*prompt tokens \\(0 cached\\), [1-4] new")
peft_program_test(chat chat_load_data_args_bare SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_run_with_val.cmake
  ARGS --adapters ckpt --load_data_args --max_new_tokens 4 JSONL_LINES 3 REGEX "\"labels\":\"16\"")
peft_program_test(chat chat_swift_infer_flags_accepted SETUP ${CHAT_SETUP}
  ARGS --model tiny --model_type qwen2_5 --template qwen2_5 --attn_impl flash_attn --use_hf --max_new_tokens 2
  INPUT "hello" JSONL_LINES 1
  REGEX "accepted but not used by this program: --model_type, --template, --attn_impl, --use_hf\n.*max_new_tokens 2,")
peft_program_test(chat chat_template_other_family FAIL ARGS --template llama3 --max_new_tokens 2 INPUT "hello"
  REGEX "--template llama3: this program runs Qwen2 / Qwen2.5 models only")
# --max_length: prompt and answer together; a prompt past it is refused (that line only).
peft_program_test(chat chat_max_length_caps_answer SETUP ${CHAT_SETUP}
  ARGS --model tiny --max_length 70 --max_new_tokens 100 --verbose INPUT "hello" JSONL_LINES 1
  REGEX "max_new_tokens 100, max_length 70,.*--max_new_tokens 100 capped at 4: --max_length is 70 tokens and the prompt takes 66.*66 prompt tokens \\(0 cached\\), [1-4] new")
peft_program_test(chat chat_max_length_prompt_past_it FAIL SETUP ${CHAT_SETUP}
  ARGS --model tiny --max_length 5 --max_new_tokens 4 INPUT "hello"
  REGEX "stdin line 1: the prompt \\([0-9]+ tokens.*does not fit --max_length 5 \\(prompt and answer\\)")
# --val_dataset as --dataset reads it: `#N` is the first N rows (ms-swift's infer does not
# shuffle them); several specs are answered in order.
peft_program_test(chat chat_val_dataset_sample SETUP ${CHAT_SETUP}
  ARGS --model tiny --val_dataset "${DATASETS}/query_response.jsonl#1" --max_new_tokens 4
  JSONL_LINES 1 REGEX "^\\{\"labels\":\"9\",\"query\":\"What is 3\\*3\\?\"")
peft_program_test(chat chat_val_dataset_several SETUP ${CHAT_SETUP}
  ARGS --model tiny --val_dataset "${DATASETS}/query_response.jsonl#1" ${DATASETS}/questions_only.jsonl --max_new_tokens 4
  JSONL_LINES 6 REGEX "\"query\":\"What is 3\\*3\\?\".*\n\\{\"query\":\"hi\"")
# --result_path appends, as ms-swift's: the earlier line stays (its missing newline added), ours follow.
peft_program_test(chat chat_result_path_appends SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_existing_results.cmake
  ARGS --max_new_tokens 8 --result_path answers.jsonl INPUT "hello" JSONL_LINES 1)
peft_expect_file(chat_result_path_appends_kept chat_result_path_appends answers.jsonl
  "^\\{\"query\":\"earlier\",\"response\":\"kept\"\\}\n\\{\"query\":\"hello\",\"response\":\"[^\n]+\"\\}\n$")
peft_program_test(chat chat_result_path_is_a_folder FAIL SETUP ${OUT_EXISTS} ARGS --model nowhere --result_path out
  INPUT "hello" REGEX "--result_path out: is a folder; give the path of a JSONL file")

# export: bare booleans followed by flags.
peft_program_test(export export_bare_merge_lora ARGS --merge_lora ${TINY_MERGE} --output_dir m
  REGEX "14 projections, 0 modules_to_save tensors -> m" FILES m/model.safetensors)
peft_program_test(export export_bare_to_gguf_overwrite SETUP ${OUT_EXISTS}
  ARGS --to_gguf --overwrite --gguf_type q8_0 --model ${TINY_FIXTURE}/model --output_dir out
  REGEX "wrote out/model.gguf \\(q8_0")
peft_program_test(export export_bare_to_ollama_check SETUP ${CHAT_SETUP}
  ARGS --to_ollama --check --check_max_new_tokens 4 --adapters ckpt --output_dir g
  REGEX "wrote g/Modelfile.*\\[check\\]" FILES g/model.gguf g/Modelfile)
# export: ms-swift's flags that change nothing here, and --torch_dtype / --max_shard_size /
# --safe_serialization as written (5GB holds the tiny model: one model.safetensors).
peft_program_test(export export_swift_flags_accepted
  ARGS --merge_lora true ${TINY_MERGE} --model_type qwen2_5 --template qwen2_5 --attn_impl sdpa --use_hf
       --max_shard_size 5GB --safe_serialization --torch_dtype fp32 --push_to_hub false --output_dir m
  REGEX "accepted but not used by this program: --model_type, --template, --attn_impl, --use_hf\n.*-> m in model.safetensors\n"
  FILES m/model.safetensors)
# --max_shard_size: save_pretrained's shards (test_merge checks the split, sizes and values); the
# GGUF and --check read the merged folder in that layout. 64KiB cuts tiny_public's 633088 bytes
# (f32) into 10 files, lm_head and embed_tokens (131072 each) alone in the first two.
peft_program_test(export export_max_shard_size SETUP ${CHAT_SETUP}
  ARGS --merge_lora true --adapters ckpt --max_shard_size 64KiB --to_gguf true --check true --check_max_new_tokens 4
       --output_dir m
  REGEX "-> m in model-00001-of-00010.safetensors, model-00002-of-00010.safetensors, .*model-00010-of-00010.safetensors\n.*\[check\]"
  FILES m/model-00001-of-00010.safetensors m/model-00010-of-00010.safetensors m/model.safetensors.index.json
        m/model.gguf m/tokenizer.json)
peft_expect_file(export_max_shard_size_index export_max_shard_size m/model.safetensors.index.json
  "\"total_size\": 633088|\"lm_head.weight\": \"model-00001-of-00010.safetensors\"|\"model.embed_tokens.weight\": \"model-00002-of-00010.safetensors\"|\"model.norm.weight\": \"model-00010-of-00010.safetensors\"")
peft_program_test(export export_max_shard_size_refused FAIL ARGS --merge_lora true ${TINY_MERGE} --max_shard_size 1.5GB
  --output_dir m REGEX "--max_shard_size '1.5GB': not a size; give a positive whole number followed by GB, MB or KB")
# --torch_dtype other than the base's converts the merged folder (test_merge checks the values);
# a GGUF-only export has no folder to convert: its type is --gguf_type.
peft_program_test(export export_torch_dtype_converts ARGS --merge_lora true ${TINY_MERGE} --torch_dtype fp16 --output_dir m
  REGEX "14 projections, 0 modules_to_save tensors -> m \\(weights as F16\\)" FILES m/model.safetensors)
peft_program_test(merge_lora merge_torch_dtype_converts ARGS ${TINY_MERGE} --torch_dtype bfloat16 --output_dir m
  REGEX "wrote [0-9]+ tensors as BF16 in model.safetensors" FILES m/model.safetensors)
# What was written, not what was printed: the safetensors header's dtypes and config.json's.
foreach(run export_torch_dtype_converts:F16:float16 merge_torch_dtype_converts:BF16:bfloat16)
  string(REPLACE ":" ";" parts ${run})
  list(GET parts 0 test)
  list(GET parts 1 stored)
  list(GET parts 2 named)
  add_test(NAME cli_${test}_written COMMAND ${CMAKE_COMMAND} -DFOLDER=${PEFT_CLI_WORK}/${test}/m -DSTORED=${stored}
           -DNAMED=${named} -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/expect_model_dtype.cmake)
  set_tests_properties(cli_${test} PROPERTIES FIXTURES_SETUP ${test})
  set_tests_properties(cli_${test}_written PROPERTIES FIXTURES_REQUIRED ${test})
endforeach()
peft_program_test(export export_torch_dtype_gguf_only FAIL ARGS ${TINY_MERGE} --to_gguf true --torch_dtype bf16
  REGEX "--torch_dtype bfloat16: the weights of .*model are float32; a conversion applies to the merged folder \\(--merge_lora true\\), and the GGUF's type is --gguf_type")
peft_program_test(export export_safe_serialization_false FAIL ARGS --merge_lora true ${TINY_MERGE} --safe_serialization false
  REGEX "--safe_serialization false: the weights are always written as safetensors")
peft_program_test(export export_model_type_other_family FAIL ARGS --merge_lora true ${TINY_MERGE} --model_type llama
  REGEX "--model_type llama: this program runs Qwen2 / Qwen2.5 models only")
# --exist_ok is --overwrite, with its rules: a merged folder holding the user's notes is kept.
peft_program_test(export export_exist_ok_replaces SETUP ${OUT_EXISTS}
  ARGS --model ${TINY_FIXTURE}/model --to_gguf true --output_dir out --exist_ok true REGEX "wrote out/model.gguf")
peft_program_test(export export_exist_ok_keeps_foreign_files FAIL SETUP ${OUT_EXISTS}
  ARGS --merge_lora true ${TINY_MERGE} --output_dir out --exist_ok
  REGEX "--output_dir out: holds an entry that a merge does not write \\(notes.txt\\)")
peft_program_test(export export_exist_ok_overwrite_disagree FAIL
  ARGS --merge_lora true ${TINY_MERGE} --exist_ok true --overwrite false REGEX "--exist_ok true and --overwrite false disagree")
# Quantised export and upload: refused with what to do instead.
peft_program_test(export export_quant_refused FAIL
  ARGS --adapters ${TINY_FIXTURE}/adapter_trained --quant_method awq --quant_bits 4 --quant_n_samples 64
  REGEX "--quant_method: an ms-swift flag this program does not implement; .*--to_gguf true --gguf_type q8_0")
peft_program_test(export export_quant_dataset_refused FAIL ARGS --adapters ${TINY_FIXTURE}/adapter_trained --dataset d.jsonl
  REGEX "--dataset: .*calibration data.*--to_gguf true --gguf_type q8_0")
peft_program_test(export export_push_to_hub_refused FAIL ARGS --merge_lora true ${TINY_MERGE} --push_to_hub
  REGEX "--push_to_hub: this program uploads nothing; upload the output folder with `huggingface-cli upload`")
peft_program_test(export export_hub_model_id_refused FAIL ARGS --merge_lora true ${TINY_MERGE} --hub_model_id me/m
  REGEX "--hub_model_id: .*huggingface-cli upload")

# merge_lora runs `swift export --merge_lora true` recipes: the flag (bare too) and export's others.
peft_program_test(merge_lora merge_swift_export_recipe SETUP ${CHAT_SETUP}
  ARGS --adapters ckpt --merge_lora --overwrite --output_dir m --model_type qwen2_5 --torch_dtype float32
  REGEX "accepted but not used by this program: --model_type.*merged 14 projections" FILES m/model.safetensors)
peft_program_test(merge_lora merge_exist_ok_keeps_foreign_files FAIL SETUP ${OUT_EXISTS}
  ARGS ${TINY_MERGE} --merge_lora true --output_dir out --exist_ok
  REGEX "--output_dir out: holds an entry that a merge does not write")
peft_program_test(merge_lora merge_merge_lora_false FAIL ARGS ${TINY_MERGE} --merge_lora false
  REGEX "--merge_lora false: merge_lora only merges")
peft_program_test(merge_lora merge_quant_refused FAIL ARGS ${TINY_MERGE} --quant_bits 4
  REGEX "--quant_bits: an ms-swift flag this program does not implement")
