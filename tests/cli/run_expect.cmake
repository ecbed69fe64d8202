# ctest driver for program-level checks. Runs CMD (arguments joined by '|') in WORK_DIR and checks:
#   EXPECT_FAIL=ON   exit code non-zero (else zero), and never a crash (signal) either way
#   EXPECT_REGEX     the combined output matches
#   EXPECT_FILES     these paths ('|'-joined, relative to WORK_DIR) exist afterwards
#   SETUP            optional cmake script run first (with WORK_DIR set) to build inputs
#   STDIN            optional file fed to the program's standard input (else none)
string(REPLACE "|" ";" CMD "${CMD}")
string(REPLACE "|" ";" EXPECT_FILES "${EXPECT_FILES}")
file(REMOVE_RECURSE ${WORK_DIR})  # every run starts clean: a rerun must not see the last one's output
if(DEFINED SETUP)
  include(${SETUP})
endif()
file(MAKE_DIRECTORY ${WORK_DIR})
set(stdin_args)
if(DEFINED STDIN)
  set(stdin_args INPUT_FILE ${STDIN})
endif()
execute_process(COMMAND ${CMD} WORKING_DIRECTORY ${WORK_DIR} ${stdin_args}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(all "${out}${err}")
if(NOT rc MATCHES "^[0-9]+$")
  message(FATAL_ERROR "the program did not exit normally (${rc}):\n${all}")
endif()
if(EXPECT_FAIL AND rc EQUAL 0)
  message(FATAL_ERROR "expected a non-zero exit, got 0:\n${all}")
elseif(NOT EXPECT_FAIL AND NOT rc EQUAL 0)
  message(FATAL_ERROR "expected success, got exit ${rc}:\n${all}")
endif()
if(DEFINED EXPECT_REGEX AND NOT all MATCHES "${EXPECT_REGEX}")
  message(FATAL_ERROR "output does not match '${EXPECT_REGEX}':\n${all}")
endif()
foreach(f IN LISTS EXPECT_FILES)
  if(NOT EXISTS ${WORK_DIR}/${f})
    message(FATAL_ERROR "expected ${f} to exist after the run:\n${all}")
  endif()
endforeach()
message(STATUS "${all}")
