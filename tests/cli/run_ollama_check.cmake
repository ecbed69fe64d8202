# ctest driver: an exported Modelfile's TEMPLATE rendered as Ollama renders it (Go's text/template,
# the server's system-message handling: tools/ollama_check/render_prompt.go) must give the ChatML
# prompts of CASES. Fails, never skips, when go is missing: CI installs it (tools/install_deps.sh).
#   EXPORT + MODEL + ADAPTER: export --to_ollama true, then render its Modelfile; every case must match.
#   MODELFILE (instead): render that file; with EXPECT_DIFFERS=ON the renderer must report a difference
#   (the harness's own check: a template that shows the system block twice is caught).
# Inputs: WORK_DIR, RENDER, CASES, and EXPORT/MODEL/ADAPTER or MODELFILE [EXPECT_DIFFERS].
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
find_program(GO go)
if(NOT GO)
  message(FATAL_ERROR "go is missing (Go's text/template renders the Modelfile as Ollama does): run tools/install_deps.sh")
endif()
if(NOT MODELFILE)
  execute_process(COMMAND ${EXPORT} --model ${MODEL} --adapters ${ADAPTER} --to_ollama true --output_dir out
                  WORKING_DIRECTORY ${WORK_DIR} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "export exit ${rc}\n${out}${err}")
  endif()
  set(MODELFILE ${WORK_DIR}/out/Modelfile)
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -E env GOCACHE=${WORK_DIR}/gocache GOPATH=${WORK_DIR}/gopath GOFLAGS=
                        ${GO} run ${RENDER} ${MODELFILE} ${CASES}
                WORKING_DIRECTORY ${WORK_DIR} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")
if(EXPECT_DIFFERS)
  if(NOT rc EQUAL 1 OR NOT out MATCHES "DIFFERS")
    message(FATAL_ERROR "expected the renderer to report a difference (exit 1), got exit ${rc}")
  endif()
elseif(NOT rc EQUAL 0)
  message(FATAL_ERROR "the Modelfile does not render the expected prompts (exit ${rc})")
endif()
