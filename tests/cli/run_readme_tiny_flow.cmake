# ctest driver for the README's walk after the quickstart, on a model folder on disk:
#   make_tiny_model tiny -> identity_finetune --model tiny -> chat --adapters <ckpt> -> merge_lora.
# Also: tiny/ holds the embedded default's own weights (step 1's loss on it equals the embedded
# default's), and make_tiny_model refuses to overwrite a folder.
# Arguments: -DWORK_DIR= -DBIN_DIR= -DASSETS=
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
function(step what)
  cmake_parse_arguments(S "FAIL" "INPUT" "" ${ARGN})
  set(input_args)
  if(S_INPUT)
    file(WRITE ${WORK_DIR}/stdin.txt "${S_INPUT}\n")
    set(input_args INPUT_FILE ${WORK_DIR}/stdin.txt)
  endif()
  execute_process(COMMAND ${S_UNPARSED_ARGUMENTS} WORKING_DIRECTORY ${WORK_DIR} ${input_args}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(out "${out}${err}" PARENT_SCOPE)
  if(NOT rc MATCHES "^[0-9]+$")
    message(FATAL_ERROR "${what}: did not exit normally (${rc}):\n${out}${err}")
  endif()
  if(S_FAIL AND rc EQUAL 0)
    message(FATAL_ERROR "${what}: expected a failure, got exit 0:\n${out}${err}")
  elseif(NOT S_FAIL AND NOT rc EQUAL 0)
    message(FATAL_ERROR "${what}: failed (${rc}):\n${out}${err}")
  endif()
endfunction()
function(first_logged_loss run var)
  file(STRINGS ${WORK_DIR}/${run}/logging.jsonl lines)
  list(GET lines 0 first)
  string(JSON loss GET "${first}" loss)
  set(${var} ${loss} PARENT_SCOPE)
endfunction()

step("make_tiny_model" ${BIN_DIR}/make_tiny_model tiny)
foreach(f config.json model.safetensors tokenizer.json)
  if(NOT EXISTS ${WORK_DIR}/tiny/${f})
    message(FATAL_ERROR "make_tiny_model left no tiny/${f}:\n${out}")
  endif()
endforeach()
step("make_tiny_model over an existing folder" FAIL ${BIN_DIR}/make_tiny_model tiny)
if(NOT out MATCHES "tiny already exists")
  message(FATAL_ERROR "make_tiny_model over an existing folder must say so:\n${out}")
endif()

# The same first step as the embedded default: same weights, data, names, seed.
set(common --max_steps 1 --logging_steps 1 --save_steps 1 --add_version false --gradient_accumulation_steps 1 --torch_dtype bfloat16)
step("identity_finetune on the embedded default" ${BIN_DIR}/identity_finetune ${common} --output_dir embedded)
step("identity_finetune --model tiny, one step" ${BIN_DIR}/identity_finetune ${common} --output_dir tiny_one --model tiny
     --dataset ${ASSETS}/data/self_cognition.jsonl --model_name 小派 "Xiao Pai" --model_author "peft 社区" "the peft community")
first_logged_loss(embedded a)
first_logged_loss(tiny_one b)
if(NOT a STREQUAL b)
  message(FATAL_ERROR "step 1 on tiny/ (${b}) differs from the embedded default's (${a}): not the same weights")
endif()

# The README's walk: train on the folder, chat with the adapter, merge it into the folder's weights.
step("identity_finetune --model tiny" ${BIN_DIR}/identity_finetune --model tiny --dataset ${ASSETS}/data/self_cognition.jsonl
     --model_name 小派 "Xiao Pai" --model_author "peft 社区" "the peft community" --max_steps 4 --save_steps 4
     --learning_rate 3e-3 --gradient_accumulation_steps 1 --torch_dtype bfloat16 --output_dir output --add_version false)
step("chat --adapters output/checkpoint-4" ${BIN_DIR}/chat --adapters output/checkpoint-4 --max_new_tokens 8 INPUT "你是谁?")
if(NOT out MATCHES "\"response\"")
  message(FATAL_ERROR "chat on the trained adapter gave no JSON response:\n${out}")
endif()
step("merge_lora --adapters output/checkpoint-4" ${BIN_DIR}/merge_lora --adapters output/checkpoint-4 --output_dir merged)
foreach(f config.json model.safetensors tokenizer.json)
  if(NOT EXISTS ${WORK_DIR}/merged/${f})
    message(FATAL_ERROR "merge_lora left no merged/${f}:\n${out}")
  endif()
endforeach()
step("chat --model merged" ${BIN_DIR}/chat --model merged --max_new_tokens 8 INPUT "你是谁?")
if(NOT out MATCHES "\"response\"")
  message(FATAL_ERROR "chat on the merged model gave no JSON response:\n${out}")
endif()
file(REMOVE_RECURSE ${WORK_DIR})
