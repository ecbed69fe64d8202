# export's GGUF in a real client, llama.cpp (node-llama-cpp 3.21.1, tools/llama_check), and its
# bad input. The golden checks: llama.cpp's greedy ids for the tiny fixtures (merged adapter, GGUF
# with a placeholder vocabulary since they have no tokenizer.json) equal HF generate's with the
# adapter unmerged, untied (tiny_public) and tied (tied_1kv_ga4_cosine: no output tensor) and in
# f16. The check: a briefly trained adapter on the embedded default model (real Qwen2.5 tokenizer,
# chat template from the GGUF) answers the identity questions the same unmerged, merged and in
# llama.cpp: token for token in f32; in f16, bf16 (against our bf16 model) and q8_0 token for token
# up to near-ties, which rounded weights flip in the random model: where answers part, ours scored
# in llama.cpp token by token stays within the type's tolerance of llama.cpp's best everywhere.
include(${CMAKE_CURRENT_LIST_DIR}/program_test.cmake)
set(TINY_FIXTURE ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/tiny_public)
set(LLAMA_DIR ${PROJECT_SOURCE_DIR}/tools/llama_check)

function(peft_llama_test name)
  add_test(NAME cli_${name} COMMAND ${CMAKE_COMMAND} -DWORK_DIR=${PEFT_CLI_WORK}/${name}
           -DEXPORT=$<TARGET_FILE:export> -DTRAIN=$<TARGET_FILE:identity_finetune> -DLLAMA_DIR=${LLAMA_DIR} ${ARGN}
           -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/run_llama_check.cmake)
endfunction()
set(golden -DMODE=golden -DGOLDEN=${CMAKE_CURRENT_SOURCE_DIR}/fixtures/generate/greedy_golden.jsonl -DADAPTER_NAME=adapter_trained)
foreach(fixture tiny_public tied_1kv_ga4_cosine)
  peft_llama_test(gguf_llama_${fixture}_f32_equals_hf ${golden} -DFIXTURE=${fixture} -DGGUF_TYPE=f32
    -DMODEL=${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fixture}/model
    -DADAPTER=${CMAKE_CURRENT_SOURCE_DIR}/fixtures/${fixture}/adapter_trained)
endforeach()
peft_llama_test(gguf_llama_tiny_public_untrained_adapter_f32_equals_hf -DMODE=golden -DGGUF_TYPE=f32
  -DGOLDEN=${TINY_FIXTURE}/generate_golden.json -DMODEL=${TINY_FIXTURE}/model -DADAPTER=${TINY_FIXTURE}/adapter)
peft_llama_test(gguf_llama_tiny_public_f16_equals_hf ${golden} -DFIXTURE=tiny_public -DGGUF_TYPE=f16
  -DMODEL=${TINY_FIXTURE}/model -DADAPTER=${TINY_FIXTURE}/adapter_trained)
foreach(type f32 f16 bf16 q8_0)
  peft_llama_test(gguf_llama_embedded_check_${type} -DMODE=check -DSTEPS=3 -DGGUF_TYPE=${type})
endforeach()
# The embedded default trained as the quickstart trains it (880 steps) answers and stops: llama.cpp
# must end an answer at <|im_end|> where ours ends (a briefly trained model runs on to the limit).
peft_llama_test(gguf_llama_embedded_trained_stops_f32 -DMODE=check -DSTEPS=880 -DGGUF_TYPE=f32 -DCHECK_TOKENS=48
  -DSTOP_SEEN=ON)
peft_llama_test(gguf_llama_forced_scoring -DMODE=forced -DMODEL=${TINY_FIXTURE}/model
  -DADAPTER=${TINY_FIXTURE}/adapter_trained)

# The Modelfile and the files a GGUF export writes; q8_0 keeps the rows that are not whole blocks
# (tiny_public's intermediate size 176) in f16.
peft_program_test(export gguf_ollama_q8_0
  ARGS --model ${TINY_FIXTURE}/model --adapters ${TINY_FIXTURE}/adapter_trained --to_ollama true --gguf_type q8_0
       --output_dir out
  REGEX "2 matrices have rows that are not whole q8_0 blocks and are f16: blk.0.ffn_down.weight, blk.1.ffn_down.weight.*placeholder vocabulary"
  FILES out/model.gguf out/Modelfile)
peft_program_test(export gguf_merge_and_gguf
  ARGS --model ${TINY_FIXTURE}/model --adapters ${TINY_FIXTURE}/adapter_trained --merge_lora true --to_gguf true
       --output_dir both
  REGEX "wrote both/model.gguf \\(f16, 27 tensors.*14 projections, 0 modules_to_save tensors -> both"
  FILES both/model.safetensors both/config.json both/model.gguf)

# Bad input.
set(OUT_EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_existing_output.cmake)
peft_program_test(export gguf_existing_target_kept FAIL SETUP ${OUT_EXISTS}
  ARGS --model ${TINY_FIXTURE}/model --to_gguf true --output_dir out
  REGEX "out/model.gguf exists.*--overwrite true")
peft_program_test(export gguf_existing_merged_folder_kept FAIL SETUP ${OUT_EXISTS}
  ARGS --model ${TINY_FIXTURE}/model --adapters ${TINY_FIXTURE}/adapter_trained --merge_lora true --output_dir out
  REGEX "--output_dir out: the folder exists and is not empty; pass --overwrite true")
peft_program_test(export gguf_overwrite_keeps_foreign_files FAIL SETUP ${OUT_EXISTS}
  ARGS --model ${TINY_FIXTURE}/model --adapters ${TINY_FIXTURE}/adapter_trained --merge_lora true --output_dir out
       --overwrite true
  REGEX "--output_dir out: holds an entry that a merge does not write \\(notes.txt\\)")
peft_program_test(export gguf_overwrite_true_replaces SETUP ${OUT_EXISTS}
  ARGS --model ${TINY_FIXTURE}/model --to_gguf true --output_dir out --overwrite true REGEX "wrote out/model.gguf")
peft_program_test(export export_base_missing FAIL SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_orphan_adapter.cmake
  ARGS --adapters orphan --to_gguf true REGEX "base model '.*/nowhere' \\(from orphan/args.json\\) is not a folder here")
peft_program_test(export export_bad_gguf_type FAIL ARGS --model ${TINY_FIXTURE}/model --to_gguf true --gguf_type q4_k
  REGEX "--gguf_type: 'q4_k' is not supported \\(valid: f32, bf16, f16, q8_0\\)")
peft_program_test(export export_nothing_to_do FAIL ARGS --model ${TINY_FIXTURE}/model REGEX "nothing to do")
peft_program_test(export export_help ARGS --help REGEX "--gguf_type.*--to_ollama")

# The base is checked as training and chat check it: config.json against the weights' shapes (an
# error naming the tensor); tensors config.json does not describe are warned about and left out.
set(BAD_MODELS ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_bad_models.cmake)
peft_program_test(export export_base_wrong_shape FAIL SETUP ${BAD_MODELS}
  ARGS --model wrong_shape --to_gguf true --output_dir out
  REGEX "wrong_shape/model.safetensors: tensor 'model.layers.0.mlp.gate_proj.weight' has shape \\[176, 64\\].*describe different models")
peft_program_test(export export_base_unused_tensors_warned SETUP ${BAD_MODELS}
  ARGS --model one_layer --to_gguf true --output_dir out
  REGEX "wrote out/model.gguf \\(f16, 15 tensors.*12 tensors of the checkpoint are not used.*left out"
  FILES out/model.gguf)
# A model folder without tokenizer_config.json: export warns that the GGUF has no eos and no chat
# template, and --check says in one line that llama.cpp was not checked (no stack trace); the
# unmerged and merged forms are still compared.
peft_program_test(export export_check_without_chat_template SETUP ${CMAKE_CURRENT_SOURCE_DIR}/cli/make_chat_models.cmake
  ARGS --adapters ckpt --to_gguf true --check true --check_max_new_tokens 4 --output_dir g
  REGEX "\\[check\\] gguf: not checked in llama.cpp: g/model.gguf holds no tokenizer.chat_template.*warning: the GGUF has no eos token.*warning: the GGUF has no tokenizer.chat_template"
  FILES g/model.gguf)

# The Modelfile's template rendered as Ollama renders it (Go's text/template and the server's
# system-message handling, tools/ollama_check/render_prompt.go): the ChatML prompts training saw,
# the system block once. The second test holds the harness to catching the old doubled block.
set(OLLAMA_CHECK -DRENDER=${PROJECT_SOURCE_DIR}/tools/ollama_check/render_prompt.go
    -DCASES=${CMAKE_CURRENT_SOURCE_DIR}/fixtures/ollama/chatml_cases.json -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/run_ollama_check.cmake)
add_test(NAME cli_ollama_template_renders_chatml COMMAND ${CMAKE_COMMAND} -DWORK_DIR=${PEFT_CLI_WORK}/ollama_template
         -DEXPORT=$<TARGET_FILE:export> -DMODEL=${TINY_FIXTURE}/model -DADAPTER=${TINY_FIXTURE}/adapter_trained ${OLLAMA_CHECK})
add_test(NAME cli_ollama_template_catches_system_twice COMMAND ${CMAKE_COMMAND}
         -DWORK_DIR=${PEFT_CLI_WORK}/ollama_system_twice -DEXPECT_DIFFERS=ON
         -DMODELFILE=${CMAKE_CURRENT_SOURCE_DIR}/fixtures/ollama/Modelfile.system_twice ${OLLAMA_CHECK})
