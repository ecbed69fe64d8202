# peft_program_test(<program target> <name> [FAIL] [ARGS ...] [INPUT lines...] [REGEX re] [FILES ...]
#                   [JSONL_LINES n] [GOLDEN file] [SETUP script])
# One ctest per call, named cli_<name>, driven by run_jsonl.cmake in its own work folder.
include_guard(GLOBAL)
set(PEFT_CLI_WORK ${CMAKE_CURRENT_BINARY_DIR}/cli_work)

function(peft_program_test program name)
  cmake_parse_arguments(T "FAIL" "REGEX;SETUP;JSONL_LINES;GOLDEN" "ARGS;FILES;INPUT" ${ARGN})
  set(defs -DWORK_DIR=${PEFT_CLI_WORK}/${name} -DEXPECT_FAIL=${T_FAIL} -DFIXTURES=${CMAKE_CURRENT_SOURCE_DIR}/fixtures)
  # Flag -> the driver's variable; list values travel '|'-joined.
  foreach(pair REGEX:EXPECT_REGEX SETUP:SETUP JSONL_LINES:JSONL_LINES GOLDEN:GOLDEN FILES:EXPECT_FILES INPUT:INPUT)
    string(REPLACE ":" ";" pair "${pair}")
    list(GET pair 0 opt)
    list(GET pair 1 key)
    if(DEFINED T_${opt})
      string(REPLACE ";" "|" joined "${T_${opt}}")
      list(APPEND defs "-D${key}=${joined}")
    endif()
  endforeach()
  string(REPLACE ";" "|" cmd "$<TARGET_FILE:${program}>;${T_ARGS}")
  add_test(NAME cli_${name} COMMAND ${CMAKE_COMMAND} ${defs} "-DCMD=${cmd}" -P ${CMAKE_CURRENT_SOURCE_DIR}/cli/run_jsonl.cmake)
endfunction()
