# ctest driver for the GGUF exports in a real client: llama.cpp through node-llama-cpp
# (tools/llama_check). Fails, never skips, when node or node-llama-cpp is missing: CI installs it
# (tools/install_deps.sh).
#   MODE=golden  export MODEL (+ ADAPTER) as GGUF_TYPE, then llama.cpp's greedy continuation of the
#                GOLDEN cases (HF generate, adapter unmerged: greedy_golden.jsonl's lines for
#                FIXTURE/ADAPTER_NAME, or every case of a generate_golden.json) must equal them
#                token for token.
#   MODE=check   train the embedded default model with TRAIN (identity_finetune, --max_steps STEPS),
#                then `export --to_gguf true --check true` (answers of up to CHECK_TOKENS, default 16,
#                tokens): unmerged, merged and llama.cpp agree
#                token for token, or (rounded GGUF types) up to near-ties: where answers part,
#                every token of ours is llama.cpp's greedy choice within the type's tolerance.
#                With STOP_SEEN=ON at least one answer must end at <|im_end|> in every form (an
#                answer that agrees token for token also agrees in where it ends).
#   MODE=forced  greedy.mjs's teacher-forced scoring, which the near-tie verdict rests on: MODEL +
#                ADAPTER's own greedy answer scores 0 everywhere; one token of it replaced scores
#                below llama.cpp's best there.
# Inputs: EXPORT, TRAIN, LLAMA_DIR, WORK_DIR, GGUF_TYPE, and the MODE's own.
if(NOT CHECK_TOKENS)
  set(CHECK_TOKENS 16)
endif()
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
find_program(NODE node)
if(NOT NODE OR NOT EXISTS ${LLAMA_DIR}/node_modules/node-llama-cpp/package.json)
  message(FATAL_ERROR "node or node-llama-cpp is missing (${LLAMA_DIR}/node_modules): run tools/install_deps.sh")
endif()

function(run)
  execute_process(COMMAND ${ARGN} WORKING_DIRECTORY ${WORK_DIR} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err)
  set(out "${out}" PARENT_SCOPE)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "exit ${rc}: ${ARGN}\n${out}${err}")
  endif()
  message("${out}${err}")
endfunction()

if(MODE STREQUAL "golden")
  run(${EXPORT} --model ${MODEL} --adapters ${ADAPTER} --to_gguf true --gguf_type ${GGUF_TYPE} --output_dir out)
  set(cases "")
  set(wants "")
  if(GOLDEN MATCHES "\\.json$")  # tiny_public/generate_golden.json: {"cases": [{"prompt", "greedy"}]}
    file(READ ${GOLDEN} golden)
    string(JSON count LENGTH "${golden}" cases)
    math(EXPR last "${count} - 1")
    foreach(i RANGE ${last})
      string(JSON prompt GET "${golden}" cases ${i} prompt)
      string(JSON want GET "${golden}" cases ${i} greedy)
      string(JSON n LENGTH "${golden}" cases ${i} greedy)
      list(APPEND cases "{\"tokens\": ${prompt}}")
      list(APPEND wants "${want}")
    endforeach()
    set(lines "")
  else()  # generate/greedy_golden.jsonl: one case a line, for FIXTURE / ADAPTER_NAME
    file(STRINGS ${GOLDEN} lines)
  endif()
  foreach(line IN LISTS lines)
    string(JSON fixture GET "${line}" fixture)
    string(JSON adapter GET "${line}" adapter)
    string(JSON rp GET "${line}" repetition_penalty)
    if(fixture STREQUAL FIXTURE AND adapter STREQUAL ADAPTER_NAME AND rp EQUAL 1)
      string(JSON prompt GET "${line}" prompt)
      string(JSON want GET "${line}" output)
      string(JSON n LENGTH "${line}" output)
      list(APPEND cases "{\"tokens\": ${prompt}}")
      list(APPEND wants "${want}")
    endif()
  endforeach()
  list(LENGTH cases count)
  if(count EQUAL 0)
    message(FATAL_ERROR "${GOLDEN} has no cases for ${FIXTURE}/${ADAPTER_NAME}")
  endif()
  string(JOIN ", " joined ${cases})
  file(WRITE ${WORK_DIR}/requests.json "{\"max_tokens\": ${n}, \"top_logprobs\": 0, \"cases\": [${joined}]}")
  run(${NODE} ${LLAMA_DIR}/greedy.mjs out/model.gguf requests.json)
  math(EXPR last "${count} - 1")
  foreach(i RANGE ${last})
    list(GET wants ${i} want)
    string(JSON got GET "${out}" cases ${i} tokens)
    string(REGEX REPLACE "[ \n]" "" got "${got}")
    string(REGEX REPLACE "[ \n]" "" want "${want}")
    if(NOT got STREQUAL want)
      message(FATAL_ERROR "case ${i}: llama.cpp's greedy ids ${got}\n  differ from HF generate's ${want}")
    endif()
    message("case ${i}: llama.cpp (${GGUF_TYPE}) = HF generate, ${n} tokens")
  endforeach()
elseif(MODE STREQUAL "forced")
  run(${EXPORT} --model ${MODEL} --adapters ${ADAPTER} --to_gguf true --gguf_type f32 --output_dir out)
  set(prompt "[3, 17, 29, 101, 7]")
  file(WRITE ${WORK_DIR}/greedy.json "{\"max_tokens\": 12, \"top_logprobs\": 0, \"cases\": [{\"tokens\": ${prompt}}]}")
  run(${NODE} ${LLAMA_DIR}/greedy.mjs out/model.gguf greedy.json)
  string(JSON answer GET "${out}" cases 0 tokens)
  string(JSON n LENGTH "${answer}")
  if(n LESS 6)
    message(FATAL_ERROR "llama.cpp answered ${n} tokens (${answer}); the check replaces the 6th")
  endif()
  string(JSON swapped GET "${answer}" 5)
  math(EXPR swapped "(${swapped} + 1) % 512")  # tiny_public's vocabulary
  string(JSON altered SET "${answer}" 5 ${swapped})
  file(WRITE ${WORK_DIR}/forced.json "{\"max_tokens\": 0, \"top_logprobs\": 0, \"cases\": [
    {\"tokens\": ${prompt}, \"forced\": ${answer}}, {\"tokens\": ${prompt}, \"forced\": ${altered}}]}")
  run(${NODE} ${LLAMA_DIR}/greedy.mjs out/model.gguf forced.json)
  math(EXPR last "${n} - 1")
  foreach(p RANGE ${last})
    string(JSON best GET "${out}" cases 0 scores ${p} 0)
    string(JSON best_lp GET "${out}" cases 0 scores ${p} 1)
    string(JSON forced_lp GET "${out}" cases 0 scores ${p} 2)
    string(JSON want GET "${answer}" ${p})
    if(NOT best EQUAL want OR NOT best_lp STREQUAL forced_lp)
      message(FATAL_ERROR "position ${p}: llama.cpp's own greedy token ${want} scored ${forced_lp}, its best is ${best} at ${best_lp}")
    endif()
  endforeach()
  string(JSON best GET "${out}" cases 1 scores 5 0)
  string(JSON best_lp GET "${out}" cases 1 scores 5 1)
  string(JSON forced_lp GET "${out}" cases 1 scores 5 2)
  if(NOT best EQUAL ${swapped} AND best_lp GREATER forced_lp)
    message("forced scoring: ${n} greedy tokens score as llama.cpp's best; token ${swapped} at position 5 scores "
            "${forced_lp} against the best ${best_lp}")
  else()
    message(FATAL_ERROR "the replaced token ${swapped} at position 5 scored ${forced_lp}, the best ${best} ${best_lp}")
  endif()
elseif(MODE STREQUAL "check")
  run(${TRAIN} --add_version false --output_dir run --max_steps ${STEPS} --save_steps ${STEPS} --logging_steps 1)
  execute_process(COMMAND ${EXPORT} --adapters run/checkpoint-${STEPS} --to_gguf true --gguf_type ${GGUF_TYPE}
                  --check true --check_max_new_tokens ${CHECK_TOKENS} --output_dir out
                  WORKING_DIRECTORY ${WORK_DIR} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message("${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "export --check exited ${rc}")
  endif()
  if(NOT out MATCHES "within the tolerance" OR out MATCHES "prompt tokens differ"
     OR NOT out MATCHES "llama.cpp ends generation at every token we stop at \\(151645, 151643\\)")
    message(FATAL_ERROR "llama.cpp and our model differ beyond the answers' tokens")
  endif()
  if(NOT out MATCHES "unmerged, merged, gguf agree" OR NOT out MATCHES "all forms agree")
    message(FATAL_ERROR "export --check did not find the three forms equal")
  endif()
  # STOP_SEEN: a model trained long enough ends its answers; llama.cpp must end one where we do.
  if(STOP_SEEN AND NOT out MATCHES "agree \\([0-9]+ tokens, then stop token 151645 in each\\)")
    message(FATAL_ERROR "no answer ended at <|im_end|> (151645) in all three forms")
  endif()
else()
  message(FATAL_ERROR "MODE must be golden or check")
endif()
