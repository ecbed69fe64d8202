# A drop-in for ms-swift users (issue 18), program by program: ms-swift's defaults (total batch
# 16, 3 epochs, max_length and dtype from config.json), models and datasets found in the local
# ModelScope / HF caches, --val_dataset, CSV, --system FILE.txt, near-miss flag names, one ordered
# output stream with a tqdm bar on a terminal, and a run folder whose args.json (run and every
# checkpoint) holds the arguments that ran. This file registers the tests (included from
# tests/CMakeLists.txt) and runs the multi-step ones itself (cmake -P, script mode, CASE=...).
if(NOT CMAKE_SCRIPT_MODE_FILE)
  set(tiny ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/tiny_public)
  set(base --model ${tiny}/model --dataset ${tiny}/tokens.jsonl --add_version false --output_dir out)
  peft_cli_test(unknown_flag_suggests FAIL ARGS ${base} --learnin_rate 1e-4
    REGEX "--learnin_rate: unknown flag; did you mean --learning_rate\\?")
  peft_program_test(chat chat_unknown_flag_suggests FAIL ARGS --temprature 0 REGEX "did you mean --temperature")
  peft_program_test(lr_epoch_sweep sweep_help_title ARGS --help REGEX "^lr_epoch_sweep \\(flags as ms-swift")
  # ms-swift's defaults: GA = ceil(16 / batch), 3 epochs, dtype and max_length from config.json
  # (the tiny model: float32, 256 positions).
  peft_cli_test(swift_defaults ARGS ${base} --max_steps 1
    REGEX "float32 on cpu.*max_length 256 .*epochs 3 batch 1 grad_accum 16 ")
  peft_cli_test(swift_default_accumulation ARGS ${base} --max_steps 1 --per_device_train_batch_size 3
    REGEX "batch 3 grad_accum 6 ")
  peft_cli_test(dataset_lines_each ARGS --model ${tiny}/model --add_version false --output_dir out --max_steps 1
       --dataset ${tiny}/tokens.jsonl "${tiny}/tokens.jsonl#4"
       --val_dataset "${tiny}/tokens.jsonl#3"
    REGEX "\\[data\\] dataset '[^']*tokens.jsonl': 16 rows[^\n]*\n\\[data\\] dataset '[^']*tokens.jsonl#4': 16 rows read from 1 file -> 4 train, 0 val\n\\[data\\] dataset '[^']*tokens.jsonl#3': 16 rows read from 1 file -> 0 train, 3 val\n\\[data\\] 20 train samples")
  # Hub ids from a fake HOME's caches (built by the SETUP script below, CASE=caches).
  set(home ${PEFT_CLI_WORK}/hub_model_from_hf_cache/home)
  peft_cli_test(hub_model_from_hf_cache SETUP ${CMAKE_CURRENT_LIST_FILE}
    ENV HOME=${home} MODELSCOPE_CACHE= HF_HOME= HF_HUB_CACHE= XDG_CACHE_HOME=
    ARGS --model Org/Tiny-0.5 --dataset ds/toks:part --add_version false --output_dir out --max_steps 1
    REGEX "\\[model\\] [^\n]*models--Org--Tiny-0.5/snapshots/abc: 2 layers.*\\[data\\] dataset 'ds/toks:part': 16 rows")
  set(home2 ${PEFT_CLI_WORK}/hub_model_from_modelscope_cache/home)
  peft_cli_test(hub_model_from_modelscope_cache SETUP ${CMAKE_CURRENT_LIST_FILE}
    ENV HOME=${home2} MODELSCOPE_CACHE= HF_HOME= HF_HUB_CACHE= XDG_CACHE_HOME=
    ARGS --model Org/Tiny-0.5 --dataset ${tiny}/tokens.jsonl --add_version false --output_dir out --max_steps 1
    REGEX "\\[model\\] [^\n]*modelscope/hub/models/Org/Tiny-0___5: 2 layers")
  set(home3 ${PEFT_CLI_WORK}/hub_model_missing/home)
  peft_cli_test(hub_model_missing FAIL ENV HOME=${home3} MODELSCOPE_CACHE= HF_HOME= HF_HUB_CACHE= XDG_CACHE_HOME=
    PEFT_DATA_HOME=${home3}/data
    ARGS --model Qwen/Qwen2.5-7B-Instruct --dataset ${tiny}/tokens.jsonl
    REGEX "no copy of this model id.*never downloads.*modelscope/hub/models/Qwen/Qwen2.5-7B-Instruct.*modelscope/hub/Qwen/Qwen2.5-7B-Instruct.*huggingface/hub/models--Qwen--Qwen2.5-7B-Instruct.*data/Qwen/Qwen2.5-7B-Instruct")
  peft_program_test(chat chat_model_from_hf_cache SETUP ${CMAKE_CURRENT_LIST_FILE}
    ENV HOME=${PEFT_CLI_WORK}/chat_model_from_hf_cache/home MODELSCOPE_CACHE= HF_HOME= HF_HUB_CACHE= XDG_CACHE_HOME=
    ARGS --model Org/Tiny-0.5 --max_new_tokens 4 INPUT "hello" JSONL_LINES 1
    REGEX "models--Org--Tiny-0.5/snapshots/abc")
  foreach(case run_record terminal trainer_state closing_lines)
    add_test(NAME cli_swift_${case}
      COMMAND ${CMAKE_COMMAND} -DCASE=${case} -DFT=$<TARGET_FILE:identity_finetune> -DCHAT=$<TARGET_FILE:chat>
              -DFIXTURES=${CMAKE_CURRENT_SOURCE_DIR}/fixtures -DWORK=${PEFT_CLI_WORK}/swift_${case}
              -P ${CMAKE_CURRENT_LIST_FILE})
  endforeach()
  return()
endif()

# --- script mode -------------------------------------------------------------------------------
if(NOT DEFINED CASE)  # SETUP of the cache tests: a fake HOME with the tiny model (and data) cached
  set(CASE caches)
endif()

function(tiny_model_into dir)
  file(COPY ${FIXTURES}/tiny_public/model/ DESTINATION ${dir})
  file(COPY ${FIXTURES}/generate/tiny_tokenizer/tokenizer.json DESTINATION ${dir})
endfunction()

include(${CMAKE_CURRENT_LIST_DIR}/run_checked.cmake)

function(expect text regex what)
  if(NOT text MATCHES "${regex}")
    message(FATAL_ERROR "${what}: '${regex}' not found in:\n${text}")
  endif()
endfunction()

if(CASE STREQUAL "caches")
  file(REMOVE_RECURSE ${WORK_DIR})
  set(hf ${WORK_DIR}/home/.cache/huggingface/hub)
  tiny_model_into(${hf}/models--Org--Tiny-0.5/snapshots/abc)
  tiny_model_into(${hf}/models--Org--Tiny-0.5/snapshots/old)  # refs/main picks abc
  file(WRITE ${hf}/models--Org--Tiny-0.5/refs/main "abc")
  file(COPY ${FIXTURES}/tiny_public/tokens.jsonl DESTINATION ${hf}/datasets--ds--toks/snapshots/r/part)
  file(WRITE ${hf}/datasets--ds--toks/snapshots/r/other/bad.jsonl "not json")  # another subset, not read
  if(WORK_DIR MATCHES "modelscope")
    file(REMOVE_RECURSE ${hf})
    tiny_model_into(${WORK_DIR}/home/.cache/modelscope/hub/models/Org/Tiny-0___5)
  endif()
  file(MAKE_DIRECTORY ${WORK_DIR})
  return()
endif()

file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK}/elsewhere)

if(CASE STREQUAL "run_record")
  # Trained with a RELATIVE model path and --system FILE.txt; the checkpoint must stand alone.
  tiny_model_into(${WORK}/tinymodel)
  file(WRITE ${WORK}/prompt.txt "You are Tiny, from a file.")
  run_checked(out ${CMAKE_COMMAND} -E chdir ${WORK} ${FT} --model tinymodel --dataset ${FIXTURES}/tiny_public/tokens.jsonl
              --add_version false --output_dir out --max_steps 2 --save_steps 1 --logging_steps 1
              --system prompt.txt --split_dataset_ratio 0.25)
  foreach(dir out out/checkpoint-1 out/checkpoint-2)
    file(READ ${WORK}/${dir}/args.json args)
    string(JSON model GET "${args}" model)
    string(JSON system GET "${args}" system)
    string(JSON dtype GET "${args}" torch_dtype)
    string(JSON ga GET "${args}" gradient_accumulation_steps)
    string(JSON epochs GET "${args}" num_train_epochs)
    string(JSON max_length GET "${args}" max_length)
    if(NOT model STREQUAL "${WORK}/tinymodel" OR NOT system STREQUAL "You are Tiny, from a file."
       OR NOT dtype STREQUAL "float32" OR NOT ga EQUAL 16 OR NOT epochs MATCHES "^3(\\.0)?$" OR NOT max_length EQUAL 256)
      message(FATAL_ERROR "${dir}/args.json does not hold the effective arguments:\n${args}")
    endif()
  endforeach()
  foreach(f additional_config.json adapter_config.json)
    if(NOT EXISTS ${WORK}/out/checkpoint-2/${f})
      message(FATAL_ERROR "checkpoint-2 has no ${f}")
    endif()
  endforeach()
  # logging.jsonl: ms-swift's keys beside ours.
  file(STRINGS ${WORK}/out/logging.jsonl lines)
  list(GET lines 0 first)
  foreach(key "global_step/max_steps" percentage elapsed_time remaining_time "memory(GiB)" "train_speed(iter/s)"
              token_acc loss grad_norm)
    string(JSON v ERROR_VARIABLE e GET "${first}" "${key}")
    if(e)
      message(FATAL_ERROR "logging.jsonl has no '${key}': ${first}")
    endif()
  endforeach()
  string(JSON v GET "${first}" "global_step/max_steps")
  string(JSON p GET "${first}" percentage)
  if(NOT v STREQUAL "1/2" OR NOT p STREQUAL "50.00%")
    message(FATAL_ERROR "global_step/max_steps '${v}', percentage '${p}': expected 1/2, 50.00%")
  endif()
  # The evaluation entries: HF's evaluate() metrics and ms-swift's token accuracy and progress keys.
  set(evals 0)
  foreach(line IN LISTS lines)
    string(JSON loss ERROR_VARIABLE e GET "${line}" eval_loss)
    if(e)
      continue()
    endif()
    math(EXPR evals "${evals} + 1")
    foreach(key eval_token_acc eval_runtime eval_samples_per_second eval_steps_per_second epoch
                "global_step/max_steps" percentage elapsed_time remaining_time)
      string(JSON v ERROR_VARIABLE e GET "${line}" "${key}")
      if(e)
        message(FATAL_ERROR "an evaluation entry has no '${key}': ${line}")
      endif()
    endforeach()
    string(JSON acc GET "${line}" eval_token_acc)
    string(JSON sps GET "${line}" eval_samples_per_second)
    if(acc LESS 0 OR acc GREATER 1 OR NOT sps GREATER 0)
      message(FATAL_ERROR "eval_token_acc ${acc} outside [0, 1] or eval_samples_per_second ${sps} not positive: ${line}")
    endif()
  endforeach()
  if(evals EQUAL 0)
    message(FATAL_ERROR "no evaluation entry in logging.jsonl (--split_dataset_ratio 0.25):\n${lines}")
  endif()
  # Copied away from its run folder and used from another folder: base, dtype and system come
  # from the checkpoint's own args.json.
  file(COPY ${WORK}/out/checkpoint-2/ DESTINATION ${WORK}/copied_ckpt)
  file(WRITE ${WORK}/q.txt "hello\n")
  execute_process(COMMAND ${CHAT} --adapters ${WORK}/copied_ckpt --max_new_tokens 4 WORKING_DIRECTORY ${WORK}/elsewhere
                  INPUT_FILE ${WORK}/q.txt RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "chat on the copied checkpoint failed:\n${out}${err}")
  endif()
  expect("${err}" "\\[model\\] ${WORK}/tinymodel \\+ adapter [^\n]*copied_ckpt [^\n]*float32" "chat")
  return()
endif()

if(CASE STREQUAL "trainer_state")
  # What ms-swift and HF's Trainer record for good input: data_seed stays 42 when only --seed is
  # given (ms-swift's DataArguments); with a validation set metric_for_best_model defaults to
  # 'loss', so the checkpoints record the best one; the logged epoch counts micro-batches (12
  # train rows, GA 5: steps of 5, 5 and 2 samples, so step 1 is epoch 5/12, not 1/3).
  run_checked(out ${CMAKE_COMMAND} -E chdir ${WORK} ${FT} --model ${FIXTURES}/tiny_public/model
              --dataset ${FIXTURES}/tiny_public/tokens.jsonl --add_version false --output_dir out --seed 7
              --split_dataset_ratio 0.25 --gradient_accumulation_steps 5 --num_train_epochs 1 --logging_steps 1
              --save_steps 1 --save_total_limit 1)
  file(READ ${WORK}/out/args.json args)
  string(JSON data_seed GET "${args}" data_seed)
  string(JSON metric GET "${args}" metric_for_best_model)
  if(NOT data_seed EQUAL 42 OR NOT metric STREQUAL "loss")
    message(FATAL_ERROR "args.json: data_seed ${data_seed} (expected 42), metric_for_best_model '${metric}' (expected loss)")
  endif()
  file(READ ${WORK}/out/checkpoint-3/trainer_state.json state)
  string(JSON best GET "${state}" best_model_checkpoint)
  string(JSON best_metric GET "${state}" best_metric)
  if(NOT best MATCHES "checkpoint-[123]$" OR NOT best_metric MATCHES "^[0-9]")
    message(FATAL_ERROR "trainer_state.json: best_model_checkpoint '${best}', best_metric '${best_metric}'")
  endif()
  file(STRINGS ${WORK}/out/logging.jsonl lines)
  list(GET lines 0 first)
  string(JSON epoch GET "${first}" epoch)
  if(NOT epoch MATCHES "^0\\.41666")
    message(FATAL_ERROR "step 1's epoch is ${epoch}, expected 5/12 = 0.41666...")
  endif()
  return()
endif()

if(CASE STREQUAL "closing_lines")
  # The end of logging.jsonl as HF and ms-swift leave it: HF's train-end entry (train_runtime,
  # train_loss, ...), then ms-swift's summary line (sft.py _save_trainer_state) with the absolute
  # last and best checkpoints, the step count, the whole history and the dataset statistics. A
  # resumed run rewrites the log from its checkpoint, so each closing line appears once.
  set(train ${FT} --model ${FIXTURES}/tiny_public/model --dataset ${FIXTURES}/tiny_public/tokens.jsonl
      --add_version false --output_dir out --split_dataset_ratio 0.25 --gradient_accumulation_steps 5
      --num_train_epochs 1 --logging_steps 1 --save_steps 1 --save_total_limit 0)
  function(check_closing_lines what)
    file(STRINGS ${WORK}/out/logging.jsonl lines ENCODING UTF-8)  # the statistics hold a "±"
    list(LENGTH lines n)
    math(EXPR last "${n} - 1")
    math(EXPR before "${n} - 2")
    list(GET lines ${last} summary)
    list(GET lines ${before} train_end)
    foreach(key train_runtime train_samples_per_second train_steps_per_second train_loss)
      string(JSON v ERROR_VARIABLE e GET "${train_end}" ${key})
      if(e OR NOT v MATCHES "^[0-9]")
        message(FATAL_ERROR "${what}: the line before the last has no numeric ${key}: ${train_end}")
      endif()
    endforeach()
    string(JSON step GET "${train_end}" step)
    string(JSON last_ckpt GET "${summary}" last_model_checkpoint)
    string(JSON best_ckpt GET "${summary}" best_model_checkpoint)
    string(JSON global_step GET "${summary}" global_step)
    string(JSON history_n LENGTH "${summary}" log_history)
    string(JSON train_stats GET "${summary}" train_dataset)
    string(JSON val_stats GET "${summary}" val_dataset)
    string(JSON params GET "${summary}" model_parameter_info)
    if(NOT step EQUAL 3 OR NOT global_step EQUAL 3 OR NOT last_ckpt STREQUAL "${WORK}/out/checkpoint-3"
       OR NOT IS_DIRECTORY "${best_ckpt}" OR NOT history_n EQUAL last)
      message(FATAL_ERROR "${what}: step ${step}, global_step ${global_step}, last ${last_ckpt}, best ${best_ckpt}, "
                          "${history_n} history entries for ${last} lines before the summary")
    endif()
    if(NOT train_stats MATCHES "size=12$" OR NOT val_stats MATCHES "size=4$"
       OR NOT params MATCHES "^PeftModelForCausalLM: [0-9.]+M Params \\([0-9.]+M Trainable \\[[0-9.]+%\\]\\)")
      message(FATAL_ERROR "${what}: train_dataset '${train_stats}', val_dataset '${val_stats}', '${params}'")
    endif()
    set(summaries 0)
    foreach(line IN LISTS lines)
      if(line MATCHES "\"log_history\"|\"train_runtime\"")
        math(EXPR summaries "${summaries} + 1")
      endif()
    endforeach()
    if(NOT summaries EQUAL 2)
      message(FATAL_ERROR "${what}: ${summaries} closing lines, expected 2 (train end, summary)")
    endif()
  endfunction()
  run_checked(out ${CMAKE_COMMAND} -E chdir ${WORK} ${train})
  check_closing_lines("first run")
  run_checked(out ${CMAKE_COMMAND} -E chdir ${WORK} ${train} --resume_from_checkpoint out/checkpoint-2)
  check_closing_lines("resumed from checkpoint-2")
  return()
endif()

if(CASE STREQUAL "terminal")
  set(args --model ${FIXTURES}/tiny_public/model --dataset ${FIXTURES}/tiny_public/tokens.jsonl --add_version false
      --max_steps 3 --logging_steps 1 --gradient_accumulation_steps 1)
  # Piped, stdout and stderr into one pipe: the lines in the order they happened, no bar.
  string(REPLACE ";" " " cmdline "${FT};${args};--output_dir;piped")
  run_checked(piped sh -c "cd ${WORK} && ${cmdline} 2>&1 | cat")
  expect("${piped}" "\\[data\\] 16 train[^\n]*\n.*\\[train\\] 16 samples, 3 optimizer steps\n\\[train\\] step 1/3 .*\\[train\\] step 3/3 .*\\[train\\] done"
         "piped output in order")
  if(piped MATCHES "Train: ")
    message(FATAL_ERROR "a pipe got the progress bar:\n${piped}")
  endif()
  # On a terminal (util-linux `script` gives it one): the tqdm bar.
  find_program(SCRIPT script)
  if(NOT SCRIPT)
    message(FATAL_ERROR "this test needs util-linux's `script` (a pseudo-terminal)")
  endif()
  string(REPLACE ";" " " cmdline "${FT};${args};--output_dir;tty")
  run_checked(tty ${SCRIPT} -qec "cd ${WORK} && ${cmdline}" /dev/null)
  expect("${tty}" "Train: 100%\\|████████████████████\\| 3/3 \\[[0-9:]+<00:00," "terminal progress bar")
  # chat streams on a terminal unless told not to, and not into a pipe.
  tiny_model_into(${WORK}/tinymodel)
  file(WRITE ${WORK}/exit.txt "exit\n")
  execute_process(COMMAND ${SCRIPT} -qec "${CHAT} --model ${WORK}/tinymodel" /dev/null INPUT_FILE ${WORK}/exit.txt
                  RESULT_VARIABLE rc OUTPUT_VARIABLE chat_tty ERROR_VARIABLE err)
  expect("${chat_tty}" "stream true" "chat on a terminal")
  run_checked(chat_pipe sh -c "echo hi | ${CHAT} --model ${WORK}/tinymodel --max_new_tokens 2 2>&1")
  expect("${chat_pipe}" "stream false" "chat in a pipe")
  return()
endif()
message(FATAL_ERROR "unknown CASE ${CASE}")
