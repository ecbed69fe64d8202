# ctest driver: SIG (TERM or INT) sent to PROGRAM (MODE chat or export) while it holds a temporary
# folder, at a moment the test controls, not at a race:
#   chat    --merge_lora true on a pipe: one line answered, then the signal while chat waits for the
#           next line. It must publish that answer to --result_path and exit 128 + the signal.
#   export  --to_gguf true --check true, with a stand-in `node` (tools/llama_check's runner) that
#           sends the signal from inside the llama.cpp step and fails as a killed node would.
# Both must leave $TMPDIR empty (the merged model removed) and say that they stopped.
include(${CMAKE_CURRENT_LIST_DIR}/make_chat_models.cmake)  # WORK_DIR/tiny, WORK_DIR/ckpt
file(MAKE_DIRECTORY ${WORK_DIR}/tmp)
if(SIG STREQUAL "TERM")
  set(expected_rc 143)
else()
  set(expected_rc 130)
endif()
if(MODE STREQUAL "chat")
  set(script [=[
mkfifo in
TMPDIR="$PWD/tmp" "$PROGRAM" --adapters ckpt --merge_lora true --max_new_tokens 8 --result_path answers.jsonl \
  < in > out.jsonl 2> err.txt &
pid=$!
exec 3> in
echo hello >&3
i=0
while [ "$(wc -l < out.jsonl)" -lt 1 ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.5  # chat is back in its read of stdin
( sleep 60; kill -KILL $pid ) > /dev/null 2>&1 &  # a program that ignores the signal fails, not hangs
watchdog=$!
kill -$SIG $pid
wait $pid
echo "rc=$?"
kill $watchdog 2>/dev/null
exec 3>&-
]=])
else()
  # A chat template, so --check gets as far as llama.cpp (without one it is skipped, not run).
  file(WRITE ${WORK_DIR}/tiny/tokenizer_config.json
       "{\"chat_template\": \"{% for m in messages %}{{ m['content'] }}{% endfor %}\"}\n")
  file(MAKE_DIRECTORY ${WORK_DIR}/llama_check/node_modules/node-llama-cpp ${WORK_DIR}/bin)
  file(WRITE ${WORK_DIR}/bin/node "#!/bin/sh\n[ \"$1\" = --version ] && exit 0\nkill -$SIG \"$(cat \"$WORK/program.pid\")\"\nexit 1\n")
  file(CHMOD ${WORK_DIR}/bin/node PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE)
  set(script [=[
TMPDIR="$PWD/tmp" PEFT_LLAMA_CHECK="$PWD/llama_check" PATH="$PWD/bin:$PATH" WORK="$PWD" \
  "$PROGRAM" --adapters ckpt --to_gguf true --check true --check_max_new_tokens 4 > out.txt 2> err.txt &
pid=$!
echo $pid > program.pid
( sleep 120; kill -KILL $pid ) > /dev/null 2>&1 &
watchdog=$!
wait $pid
echo "rc=$?"
kill $watchdog 2>/dev/null
]=])
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -E env PROGRAM=${PROGRAM} SIG=${SIG} sh -c "${script}"
                WORKING_DIRECTORY ${WORK_DIR} OUTPUT_VARIABLE shell_out ERROR_VARIABLE shell_err)
set(log_file ${WORK_DIR}/out.jsonl)
if(MODE STREQUAL "export")
  set(log_file ${WORK_DIR}/out.txt)
endif()
file(READ ${log_file} out)
file(READ ${WORK_DIR}/err.txt err)
set(all "${shell_out}${shell_err}\nstdout:\n${out}\nstderr:\n${err}")
if(NOT shell_out MATCHES "rc=${expected_rc}")
  message(FATAL_ERROR "expected exit ${expected_rc} after SIG${SIG}:\n${all}")
endif()
if(NOT err MATCHES "stopped by SIG${SIG}")
  message(FATAL_ERROR "expected 'stopped by SIG${SIG}' on stderr:\n${all}")
endif()
file(GLOB left ${WORK_DIR}/tmp/*)
if(left)
  message(FATAL_ERROR "the temporary folder was left behind: ${left}\n${all}")
endif()
if(MODE STREQUAL "chat")
  # The answer given before the signal, published as stdout showed it; no temporary file beside it.
  if(NOT EXISTS ${WORK_DIR}/answers.jsonl)
    message(FATAL_ERROR "--result_path answers.jsonl was not written:\n${all}")
  endif()
  file(READ ${WORK_DIR}/answers.jsonl answers)
  if(NOT answers STREQUAL out OR NOT answers MATCHES "^{\"query\":\"hello\",\"response\":\"[^\n]+\n$")
    message(FATAL_ERROR "answers.jsonl is not the one answer on stdout:\n${answers}\n${all}")
  endif()
  file(GLOB temp_results ${WORK_DIR}/answers.jsonl.tmp-*)
  if(temp_results)
    message(FATAL_ERROR "a temporary results file was left: ${temp_results}")
  endif()
else()
  file(GLOB requests ${WORK_DIR}/ckpt-gguf/.check-requests-*)
  if(requests)
    message(FATAL_ERROR "llama.cpp's request files were left: ${requests}")
  endif()
endif()
message(STATUS "${all}")
