# Exact resume, end to end: identity_finetune on the tiny fixture (LoRA with dropout, bf16, data
# reshuffled every epoch) is killed by SIGKILL mid-run (--debug_sigkill_at_step: the process
# raises SIGKILL itself after that step, so the kill point is deterministic; steps after the last
# checkpoint were logged and are lost), resumed from its last checkpoint, and must then match an
# uninterrupted run bit for bit: every logged loss, grad norm and learning rate, and the final
# adapter and optimizer files byte for byte. This file both registers the test (included from
# tests/CMakeLists.txt) and runs it (cmake -P, script mode).
if(NOT CMAKE_SCRIPT_MODE_FILE)
  add_test(NAME cli_resume_after_sigkill_is_bit_identical
    COMMAND ${CMAKE_COMMAND} -DFT=$<TARGET_FILE:identity_finetune>
            -DTINY=${CMAKE_CURRENT_SOURCE_DIR}/fixtures/tiny_public
            -DWORK=${CMAKE_CURRENT_BINARY_DIR}/cli_work/resume -P ${CMAKE_CURRENT_LIST_FILE})
  peft_cli_test(resume_missing_checkpoint FAIL ARGS ${PEFT_FT_BASE} --resume_from_checkpoint nowhere/checkpoint-5
    REGEX "nowhere/checkpoint-5: the folder does not exist")
  return()
endif()

file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(common --model ${TINY}/model --dataset ${TINY}/tokens.jsonl --add_version false --learning_rate 2e-3
    --num_train_epochs 4 --logging_steps 3 --save_steps 5 --save_total_limit 1 --lora_dropout 0.1
    --warmup_ratio 0.1 --gradient_accumulation_steps 1 --torch_dtype bfloat16)

function(run_ft expect_kill)
  execute_process(COMMAND ${FT} ${common} ${ARGN} WORKING_DIRECTORY ${WORK} RESULT_VARIABLE rc
                  OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(expect_kill AND rc MATCHES "^[0-9]+$")
    message(FATAL_ERROR "expected death by SIGKILL, got exit ${rc}:\n${out}${err}")
  elseif(NOT expect_kill AND NOT rc EQUAL 0)
    message(FATAL_ERROR "run failed (${rc}):\n${out}${err}")
  endif()
  set(last_output "${out}${err}" PARENT_SCOPE)
endfunction()

# logging.jsonl without the wall-clock fields.
function(log_numbers dir var)
  file(READ ${WORK}/${dir}/logging.jsonl text)
  string(REGEX REPLACE "\"(elapsed_s|tokens_per_second|elapsed_time|remaining_time|memory\\(GiB\\)|train_speed\\(iter/s\\)|train_runtime|train_samples_per_second|train_steps_per_second)\":[^,}]*,?" "" text "${text}")
  # ms-swift's summary line: its history is the lines above, its paths name the run's folder.
  string(REGEX REPLACE "[^\n]*\"log_history\"[^\n]*\n" "" text "${text}")
  set(${var} "${text}" PARENT_SCOPE)
endfunction()

run_ft(OFF --output_dir full)
# In line (--async_save false): a kill while a checkpoint's files are written beside the steps
# leaves the checkpoint before it (docs/training.md), so the kill point's checkpoint would depend
# on timing. The resumed run saves beside its steps, the default.
run_ft(ON --output_dir cut --debug_sigkill_at_step 13 --async_save false)
if(NOT EXISTS ${WORK}/cut/checkpoint-10/optimizer.safetensors OR EXISTS ${WORK}/cut/checkpoint-15)
  message(FATAL_ERROR "the killed run should have left checkpoint-10 and nothing later")
endif()
log_numbers(cut killed_log)
if(NOT killed_log MATCHES "\"step\":12")
  message(FATAL_ERROR "the killed run should have logged step 12 (after its last checkpoint):\n${killed_log}")
endif()
run_ft(OFF --output_dir cut --resume_from_checkpoint cut/checkpoint-10)
if(NOT last_output MATCHES "resume\\] from cut/checkpoint-10 at step 10")
  message(FATAL_ERROR "no resume message:\n${last_output}")
endif()

log_numbers(full full_log)
log_numbers(cut cut_log)
if(NOT full_log STREQUAL cut_log)
  message(FATAL_ERROR "logged numbers differ.\nuninterrupted:\n${full_log}\nresumed:\n${cut_log}")
endif()
file(GLOB finals RELATIVE ${WORK}/full ${WORK}/full/checkpoint-*)
list(LENGTH finals n)
if(NOT n EQUAL 1)
  message(FATAL_ERROR "expected one final checkpoint (save_total_limit 1), found: ${finals}")
endif()
foreach(f adapter_model.safetensors optimizer.safetensors)
  file(SHA256 ${WORK}/full/${finals}/${f} a)
  file(SHA256 ${WORK}/cut/${finals}/${f} b)
  if(NOT a STREQUAL b)
    message(FATAL_ERROR "${finals}/${f} differs between the uninterrupted and the resumed run")
  endif()
endforeach()
# save_total_limit 1 kept the checkpoint resumed from beside the final one.
if(NOT EXISTS ${WORK}/cut/checkpoint-10 OR NOT EXISTS ${WORK}/cut/loss.svg)
  message(FATAL_ERROR "checkpoint-10 (resumed from) or loss.svg missing")
endif()
string(REGEX MATCHALL "\n" lines "${full_log}")
list(LENGTH lines nlines)
message(STATUS "resumed run matches the uninterrupted one: ${nlines} log lines, ${finals} byte-identical")
